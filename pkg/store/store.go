package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// SequencedItem is the stored form of an event; see events.SequencedItem.
type SequencedItem = events.SequencedItem

// A Notification is a sequenced item with its place in the store's notification
// log. IDs only grow in log order, but they are not contiguous: a reader must never
// assume that ID+1 exists.
type Notification struct {
	ID int64
	SequencedItem
}

// Limits a backend enforces before an item reaches the database.
const (
	MaxTopicLen  = 255
	MaxCodecLen  = 64
	MaxStateSize = 16 << 20 // 16 MiB
	// MaxItemsPerAppend bounds the items of one InsertEvents call (and of one
	// transaction): a backend may encode an item's ordinal in its notification id.
	MaxItemsPerAppend = 1 << 20
)

var (
	// ErrConflict reports that an item's (sequence id, position) is already taken.
	// Errors wrapping it are *ConflictError values naming the item.
	ErrConflict = errors.New("store: position already taken")
	// ErrNotFound reports that an aggregate, result or other record does not exist.
	// A repository returns it for discarded aggregates too.
	ErrNotFound = errors.New("store: not found")
	// ErrTrackingConflict reports that a tracking record would not move forward:
	// another consumer (a zombie, or a duplicate delivery) already recorded this
	// position or a later one. The transaction that tried it is rolled back whole.
	ErrTrackingConflict = errors.New("store: tracking position would not move forward")
	// ErrInvalidItem reports an item rejected before it reached the database.
	ErrInvalidItem = errors.New("store: invalid item")
	// ErrClosed reports use of a closed recorder.
	ErrClosed = errors.New("store: closed")
)

// A ConflictError names the item whose position was taken.
type ConflictError struct {
	SequenceID uuid.UUID
	Position   int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("store: position %d of sequence %s already taken", e.Position, e.SequenceID)
}

// Is reports ErrConflict, so errors.Is(err, ErrConflict) holds.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// A TrackingConflictError names the tracking record that would not move forward.
type TrackingConflictError struct {
	Tracking Tracking
	// Stored is the position already recorded (-1 if unknown).
	Stored int64
}

func (e *TrackingConflictError) Error() string {
	return fmt.Sprintf("store: tracking %s/%s/%d: position %d does not move past stored %d",
		e.Tracking.Name, e.Tracking.Topic, e.Tracking.Partition, e.Tracking.Position, e.Stored)
}

// Is reports ErrTrackingConflict.
func (e *TrackingConflictError) Is(target error) bool { return target == ErrTrackingConflict }

// Query selects items of one sequence. The zero Query selects every item in
// ascending position order.
type Query struct {
	// After, if set, selects only positions greater than *After.
	After *int64
	// UpTo, if set, selects only positions less than or equal to *UpTo.
	UpTo *int64
	// Desc returns items in descending position order.
	Desc bool
	// Limit, if positive, returns at most Limit items.
	Limit int
}

// Tracking records how far a named consumer has got in one source: a Kafka topic
// and partition and the offset it consumed, or (Topic "", Partition 0) a position in
// a notification log. Positions only move forward.
type Tracking struct {
	Name      string
	Topic     string
	Partition int32
	Position  int64
}

// AggregateRecorder stores and selects sequenced items.
type AggregateRecorder interface {
	// InsertEvents appends items atomically: all of them or, on any error, none.
	// A taken position fails with a *ConflictError. It returns each item's
	// notification id (nil from recorders that keep no notification log).
	InsertEvents(ctx context.Context, items []SequencedItem) ([]int64, error)
	// SelectEvents returns items of one sequence; an unknown sequence gives an
	// empty slice and no error.
	SelectEvents(ctx context.Context, sequenceID uuid.UUID, q Query) ([]SequencedItem, error)
}

// A SequencesReader selects items of many sequences in one call: on a database
// server, one round trip instead of one per sequence. It is optional. Recorders
// implement it where they can, and so may their transactions (the Tx that InTx
// passes); a caller that finds it missing calls SelectEvents once per sequence.
type SequencesReader interface {
	// SelectSequences returns, under each sequence id of queries, the items
	// that SelectEvents with queries[id] would return. A sequence with no item
	// selected has no key in the result. Inside a transaction it sees the
	// transaction's own writes.
	SelectSequences(ctx context.Context, queries map[uuid.UUID]Query) (map[uuid.UUID][]SequencedItem, error)
}

// ApplicationRecorder also keeps the notification log: every item in one global
// order that a reader can follow without ever skipping an item that commits later.
type ApplicationRecorder interface {
	AggregateRecorder
	// SelectNotifications returns up to limit notifications with ids greater than
	// after, in id order. It returns only items that no transaction still open can
	// precede, so a reader that continues from the last id it got never skips one.
	SelectNotifications(ctx context.Context, after int64, limit int) ([]Notification, error)
	// MaxNotificationID returns the greatest id SelectNotifications would return
	// now (0 for an empty log).
	MaxNotificationID(ctx context.Context) (int64, error)
}

// Tx is one store transaction. Everything done through it commits together or not
// at all. A Tx is not safe for concurrent use.
type Tx interface {
	// InsertEvents is AggregateRecorder.InsertEvents inside the transaction.
	InsertEvents(ctx context.Context, items []SequencedItem) ([]int64, error)
	// SelectEvents reads inside the transaction.
	SelectEvents(ctx context.Context, sequenceID uuid.UUID, q Query) ([]SequencedItem, error)
	// SetTracking records t. It fails with a *TrackingConflictError, and the
	// transaction must then be rolled back, if the stored position for t's key is
	// greater than or equal to t.Position.
	SetTracking(ctx context.Context, t Tracking) error
}

// A TrackingsSetter is a Tx that records several tracking records in one call:
// on a database server, one round trip instead of one per record. It is
// optional; a caller that finds it missing calls SetTracking for each.
type TrackingsSetter interface {
	// SetTrackings records each of ts in order, as SetTracking would, and
	// returns the first *TrackingConflictError. Records after the one that
	// failed may or may not have been recorded: the transaction must be
	// rolled back either way.
	SetTrackings(ctx context.Context, ts []Tracking) error
}

// ProcessRecorder is an ApplicationRecorder with tracking and transactions, for
// consumers that must apply what they consume exactly once.
type ProcessRecorder interface {
	ApplicationRecorder
	// InTx runs fn in one transaction and commits if fn returns nil. If fn returns
	// an error, or the commit fails, nothing fn did is kept.
	InTx(ctx context.Context, fn func(Tx) error) error
	// Tracking returns the stored position for (name, topic, partition), or -1 and
	// no error if there is none.
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
}

// ValidateItems checks items before they reach a database: non-nil sequence id,
// non-negative position, topic and codec within limits, state within limits, no
// duplicate (sequence id, position) within the batch. Every backend calls it.
func ValidateItems(items []SequencedItem) error {
	if len(items) > MaxItemsPerAppend {
		return fmt.Errorf("%w: %d items in one append (at most %d)", ErrInvalidItem, len(items), MaxItemsPerAppend)
	}
	type key struct {
		id  uuid.UUID
		pos int64
	}
	var seen map[key]struct{}
	if len(items) > 1 {
		seen = make(map[key]struct{}, len(items))
	}
	for i := range items {
		it := &items[i]
		switch {
		case it.SequenceID == uuid.Nil:
			return fmt.Errorf("%w: item %d has a nil sequence id", ErrInvalidItem, i)
		case it.Position < 0:
			return fmt.Errorf("%w: item %d has negative position %d", ErrInvalidItem, i, it.Position)
		case it.Topic == "" || len(it.Topic) > MaxTopicLen:
			return fmt.Errorf("%w: item %d topic must be 1 to %d bytes, got %d", ErrInvalidItem, i, MaxTopicLen, len(it.Topic))
		case len(it.Codec) > MaxCodecLen:
			return fmt.Errorf("%w: item %d codec is longer than %d bytes", ErrInvalidItem, i, MaxCodecLen)
		case len(it.State) > MaxStateSize:
			return fmt.Errorf("%w: item %d state is %d bytes (at most %d)", ErrInvalidItem, i, len(it.State), MaxStateSize)
		}
		if seen != nil {
			k := key{it.SequenceID, it.Position}
			if _, dup := seen[k]; dup {
				return &ConflictError{SequenceID: it.SequenceID, Position: it.Position}
			}
			seen[k] = struct{}{}
		}
	}
	return nil
}

// A SnapshotRecorder stores snapshots: sequenced items in a sequence space of their
// own, where Position is the position of the last event the snapshot includes.
// Inserting a snapshot at a position that already has one succeeds and keeps the
// stored one.
type SnapshotRecorder interface {
	InsertSnapshot(ctx context.Context, item SequencedItem) error
	// LatestSnapshot returns the snapshot with the greatest position that is less
	// than or equal to upTo (any position if upTo is negative), or ErrNotFound.
	LatestSnapshot(ctx context.Context, sequenceID uuid.UUID, upTo int64) (SequencedItem, error)
}

// A Notifier wakes tailers of the notification log. The channel receives a value
// (sends are coalesced) after items may have committed, and is closed when ctx
// ends. A tailer must still poll now and then: a wake-up may be lost (a dropped
// connection, for example); it only shortens the wait.
type Notifier interface {
	Notify(ctx context.Context) <-chan struct{}
}
