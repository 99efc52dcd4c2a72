package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Parked sequences are a projection's sequenced dead letters. When a
// projection cannot apply an event, it parks the event's sequence: the event
// and every later event of the same sequence are stored, in order, and not
// applied, while other sequences go on. An operator then retries the parked
// events (applied in order, once) or skips them (recorded, with a reason).
// Package projection decides what is parked and when; a backend only stores
// it, in the same transactions as the projection's tracking. Every backend
// implements ParkRecorder and its transactions ParkTx, and passes the
// storetest conformance suite for them.

// A PositionRange is the positions From to To of a sequence, both included.
type PositionRange struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// Contains reports whether pos is in r.
func (r PositionRange) Contains(pos int64) bool { return pos >= r.From && pos <= r.To }

// A ParkedSequence is what one projection keeps about one sequence it
// parked: the parked events' span and why they wait, and the positions an
// operator skipped. A sequence with nothing parked keeps its row only while
// it has skipped positions (the projection must go on treating those as
// applied).
type ParkedSequence struct {
	// Name is the projection's name, SequenceID the sequence's.
	Name       string
	SequenceID uuid.UUID
	// Entity is the entity type of the parked events (events.EntityOf of
	// their topic), "" if their topic names none.
	Entity string
	// First and Last are the positions of the first and last events parked,
	// Count the number of events parked (0, with First and Last -1, when
	// nothing is parked).
	First, Last, Count int64
	// Reason says why the first parked event was not applied (or why the
	// last retry failed).
	Reason string
	// ParkedAt is when the sequence was parked, UpdatedAt when an event was
	// last parked or a retry last failed.
	ParkedAt, UpdatedAt time.Time
	// Retries counts the retries that failed.
	Retries int
	// Skipped are the ranges of positions an operator skipped, in position
	// order: the projection counts them as applied without applying them.
	Skipped []PositionRange
}

// Parked reports whether s has events parked.
func (s *ParkedSequence) Parked() bool { return s.Count > 0 }

// SkippedAt reports whether an operator skipped position pos of s.
func (s *ParkedSequence) SkippedAt(pos int64) bool {
	for _, r := range s.Skipped {
		if r.Contains(pos) {
			return true
		}
	}
	return false
}

// A ParkedEvent is one parked event: the item as the projection received
// it, and the Kafka record it came in.
type ParkedEvent struct {
	Name string
	SequencedItem
	// NotificationID is the item's id in the source store's notification
	// log (0 if unknown).
	NotificationID int64
	// RecordTopic, RecordPartition and RecordOffset locate the record the
	// event came in; RecordPartition is -1 for an item the projection read
	// from its source store to fill a gap.
	RecordTopic     string
	RecordPartition int32
	RecordOffset    int64
	ParkedAt        time.Time
}

// ParkActionKind is what an operator did to a parked sequence.
type ParkActionKind string

// Park action kinds.
const (
	// ParkRetried: the parked events were applied.
	ParkRetried ParkActionKind = "retried"
	// ParkRetryFailed: a retry failed; the events stay parked with the new
	// reason.
	ParkRetryFailed ParkActionKind = "retry_failed"
	// ParkSkipped: the parked events were skipped, never to be applied.
	ParkSkipped ParkActionKind = "skipped"
)

// A ParkAction records a retry or a skip of a parked sequence: the audit
// trail of what became of the events.
type ParkAction struct {
	Name       string
	SequenceID uuid.UUID
	Entity     string
	Action     ParkActionKind
	// Positions are the positions the action concerned, Count the number
	// of events.
	Positions PositionRange
	Count     int64
	// Reason is the operator's, for a skip, or the failure, for a failed
	// retry.
	Reason string
	At     time.Time
}

// A ParkedQuery selects parked sequences for ListParked: those with events
// parked, ordered by projection name and sequence id.
type ParkedQuery struct {
	// Name, if set, selects one projection.
	Name string
	// SequenceID, if not nil, selects one sequence.
	SequenceID uuid.UUID
	// After, if set, is the cursor: only sequences after (AfterName,
	// After) in the order above.
	AfterName string
	After     uuid.UUID
	// Limit, if positive, bounds the sequences returned.
	Limit int
	// WithSkipped also selects the rows with nothing parked that keep
	// skipped positions (a rebuild needs them).
	WithSkipped bool
}

// ParkedCount is how much one projection has parked.
type ParkedCount struct {
	Name      string
	Sequences int64
	Events    int64
}

// ParkTx is a Tx that keeps parked sequences. The transactions of every
// backend's InTx implement it. The rows ParkedSequences returns are locked
// until the transaction ends, so that two transactions handling the same
// parked sequence (a projection's batch and an operator's retry) take turns
// and the second sees what the first committed.
type ParkTx interface {
	// ParkedSequences returns the rows of projection name for those of ids
	// that have one (parked, or with skipped positions), and locks them.
	ParkedSequences(ctx context.Context, name string, ids []uuid.UUID) (map[uuid.UUID]ParkedSequence, error)
	// PutParkedSequence writes s over the row of (s.Name, s.SequenceID), or
	// inserts it. A row with nothing parked and nothing skipped is deleted.
	PutParkedSequence(ctx context.Context, s ParkedSequence) error
	// ParkEvents stores parked events. A (name, sequence id, position)
	// already parked fails with a *ConflictError.
	ParkEvents(ctx context.Context, evs []ParkedEvent) error
	// TakeParkedEvents deletes the parked events of seq for projection name
	// and returns them in position order.
	TakeParkedEvents(ctx context.Context, name string, seq uuid.UUID) ([]ParkedEvent, error)
	// RecordParkAction appends a to the trail of retries and skips.
	RecordParkAction(ctx context.Context, a ParkAction) error
}

// A TrackingParkTx is a ParkTx that records tracking and reads parked rows
// in one call: on a database server, one round trip for what a projection
// does first in every transaction. It is optional; a caller that finds it
// missing calls SetTracking (or SetTrackings) and then ParkedSequences.
type TrackingParkTx interface {
	// SetTrackingsParked records ts as TrackingsSetter.SetTrackings does and
	// then returns ParkedSequences(ctx, name, ids). On a tracking conflict it
	// returns the *TrackingConflictError, and the transaction must be rolled
	// back.
	SetTrackingsParked(ctx context.Context, ts []Tracking, name string, ids []uuid.UUID) (map[uuid.UUID]ParkedSequence, error)
}

// ParkRecorder reads parked sequences outside a transaction; writes go
// through the ParkTx of its InTx. Every backend implements it.
type ParkRecorder interface {
	InTx(ctx context.Context, fn func(Tx) error) error
	// ListParked returns the sequences with events parked that q selects.
	ListParked(ctx context.Context, q ParkedQuery) ([]ParkedSequence, error)
	// ParkedEvents returns up to limit (if positive) parked events of seq
	// for projection name with positions greater than after, in position
	// order.
	ParkedEvents(ctx context.Context, name string, seq uuid.UUID, after int64, limit int) ([]ParkedEvent, error)
	// ParkActions returns the retries and skips of seq (of every sequence,
	// if seq is uuid.Nil) for projection name, oldest first, up to limit
	// (if positive).
	ParkActions(ctx context.Context, name string, seq uuid.UUID, limit int) ([]ParkAction, error)
	// CountParked returns, for each projection with events parked, the
	// sequences and events parked, by name.
	CountParked(ctx context.Context) ([]ParkedCount, error)
}

// ErrInvalidPark reports a parked sequence, event or action a backend
// refuses before it reaches the database.
var ErrInvalidPark = fmt.Errorf("%w: parked sequence", ErrInvalidItem)

// ValidateParkedSequence checks s before a backend stores it.
func ValidateParkedSequence(s ParkedSequence) error {
	switch {
	case s.Name == "":
		return fmt.Errorf("%w: no projection name", ErrInvalidPark)
	case s.SequenceID == uuid.Nil:
		return fmt.Errorf("%w: nil sequence id", ErrInvalidPark)
	case s.Count < 0:
		return fmt.Errorf("%w: negative count %d", ErrInvalidPark, s.Count)
	case s.Count > 0 && (s.First < 0 || s.Last < s.First):
		return fmt.Errorf("%w: positions %d to %d of %d parked events", ErrInvalidPark, s.First, s.Last, s.Count)
	}
	for i, r := range s.Skipped {
		if r.From < 0 || r.To < r.From || (i > 0 && r.From <= s.Skipped[i-1].To) {
			return fmt.Errorf("%w: skipped ranges %v are not ascending and disjoint", ErrInvalidPark, s.Skipped)
		}
	}
	return nil
}

// ValidateParkedEvents checks evs before a backend stores them.
func ValidateParkedEvents(evs []ParkedEvent) error {
	items := make([]SequencedItem, len(evs))
	for i := range evs {
		if evs[i].Name == "" {
			return fmt.Errorf("%w: parked event %d has no projection name", ErrInvalidPark, i)
		}
		items[i] = evs[i].SequencedItem
	}
	// Positions may repeat across projections: check each projection alone.
	names := map[string][]SequencedItem{}
	for i := range evs {
		names[evs[i].Name] = append(names[evs[i].Name], items[i])
	}
	for _, its := range names {
		if err := ValidateItems(its); err != nil {
			return err
		}
	}
	return nil
}

// ValidateParkAction checks a before a backend stores it.
func ValidateParkAction(a ParkAction) error {
	switch {
	case a.Name == "" || a.SequenceID == uuid.Nil:
		return fmt.Errorf("%w: park action needs a projection name and a sequence id", ErrInvalidPark)
	case a.Action != ParkRetried && a.Action != ParkRetryFailed && a.Action != ParkSkipped:
		return fmt.Errorf("%w: unknown park action %q", ErrInvalidPark, a.Action)
	}
	return nil
}

// AddSkipped returns ranges with r merged in, ascending and disjoint
// (adjacent ranges join).
func AddSkipped(ranges []PositionRange, r PositionRange) []PositionRange {
	out := append(slices.Clone(ranges), r)
	slices.SortFunc(out, func(a, b PositionRange) int {
		switch {
		case a.From < b.From:
			return -1
		case a.From > b.From:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, x := range out {
		if n := len(merged); n > 0 && x.From <= merged[n-1].To+1 {
			merged[n-1].To = max(merged[n-1].To, x.To)
			continue
		}
		merged = append(merged, x)
	}
	return merged
}

// errNoPark is what a caller gets from a Tx that cannot park.
var errNoPark = errors.New("store: the transaction does not keep parked sequences (store.ParkTx)")

// ParkTxOf returns tx as a ParkTx, or an error saying it is not one.
func ParkTxOf(tx Tx) (ParkTx, error) {
	if p, ok := tx.(ParkTx); ok {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %T", errNoPark, tx)
}
