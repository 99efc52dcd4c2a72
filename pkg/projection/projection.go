package projection

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// An Item is one event handed to a policy: the stored item as the relay
// published it and, for a policy that decodes, the domain event.
//
// State is the record's value, not a copy: a policy that keeps it beyond Apply
// must copy it. TraceParent is the trace context the item's effects
// continue: the record's traceparent header or, when the runner traces, the
// context of its apply span.
type Item struct {
	store.SequencedItem
	// NotificationID is the item's id in the source store's notification log,
	// from the record's notification-id header (0 for an item read from
	// Config.Source to fill a gap).
	NotificationID int64
	// Event is the decoded domain event if the policy is a DecodingPolicy, nil
	// otherwise.
	Event events.Event
	// Record is the Kafka record the item came in, or nil for an item read
	// from Config.Source to fill a gap.
	Record *wire.Record
}

// A Policy applies events to something: a read model, another store, a
// counter. Apply runs inside a transaction of the runner's Target and must do
// all its work through tx (or through the connection under it, such as
// postgres.PgxTx), so that its effect commits with the tracking of the Kafka
// offsets it consumed, or not at all.
//
// The items are those of one batch that passed the position guard, in the
// order of their records within each partition; the items of one sequence are
// consecutive positions in ascending order. Apply may be called again with the
// same items after a rollback (a retry, or a poison item taken out), so it
// must leave everything outside tx untouched.
//
// An error that retrying cannot cure (bad data) should be wrapped with
// Permanent, and, where the policy knows which item caused it, in an
// *ItemError; the runner then dead-letters or stops on that item as
// configured. Any other error is transient: the runner returns it and the
// consumer retries the batch.
type Policy interface {
	Apply(ctx context.Context, tx store.Tx, items []Item) error
}

// PolicyFunc adapts a function to Policy. A PolicyFunc has no position guard:
// run it with Config.Unguarded, or embed it in a type that implements
// Positions.
type PolicyFunc func(ctx context.Context, tx store.Tx, items []Item) error

// Apply calls f.
func (f PolicyFunc) Apply(ctx context.Context, tx store.Tx, items []Item) error {
	return f(ctx, tx, items)
}

// Positions is the per-sequence position guard of a policy: it says how far
// the policy's effect has got in each sequence. Where that is kept is the
// policy's business: a read model's version column, the target store's own
// copy of the sequence.
//
// The runner calls LastPositions once per transaction, before Apply, with the
// distinct sequence ids of the batch in ascending byte order, and caches the
// answer for the batch. It skips an item whose position is at most the last
// one (a duplicate the relay published again at a new offset) and repairs a
// gap before an item whose position is more than one past it.
type Positions interface {
	// LastPositions returns, for each of ids, the position of the last event
	// of that sequence whose effect is in tx's store. A sequence of which
	// nothing was applied may be left out, or given -1.
	LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error)
}

// A DecodingPolicy applies domain events rather than stored items: the runner
// decodes every item with Config.Mapper before Apply and sets Item.Event. An
// item that does not decode is a poison event.
type DecodingPolicy interface {
	Policy
	// DecodesEvents reports whether the runner should decode items.
	DecodesEvents() bool
}

// A Target is the store a runner commits to: the policy's effect, the
// tracking of the consumed offsets and the dead letters share its
// transactions. Every store.ProcessRecorder is one.
type Target interface {
	InTx(ctx context.Context, fn func(store.Tx) error) error
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
}

// A Source is the store the events came from, read to fill gaps. Every
// store.AggregateRecorder is one.
type Source interface {
	SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error)
}

var (
	// ErrHeaders reports an event record whose headers are missing or
	// malformed. Such a record is a poison event.
	ErrHeaders = wire.ErrHeaders
	// ErrGap reports an item whose position is more than one past the last
	// position applied of its sequence, that could not be repaired: no
	// Config.Source is configured, or the source does not have the missing
	// items (yet). Errors wrapping it are *GapError values. It is not
	// permanent: the batch is retried, never skipped.
	ErrGap = errors.New("projection: gap in a sequence")
	// ErrPoison reports a poison event under PoisonStop. Errors wrapping it
	// are *PoisonError values.
	ErrPoison = errors.New("projection: poison event")
)

// A GapError names the missing positions of a sequence.
type GapError struct {
	SequenceID uuid.UUID
	// Last is the last position applied (-1 for none); Position the position
	// that arrived.
	Last, Position int64
	// Reason says why it was not repaired.
	Reason string
}

func (e *GapError) Error() string {
	return fmt.Sprintf("projection: gap in sequence %s: last applied position %d, received %d: %s",
		e.SequenceID, e.Last, e.Position, e.Reason)
}

// Is reports ErrGap.
func (e *GapError) Is(target error) bool { return target == ErrGap }

// A PoisonError names the poison event that stopped a runner configured with
// PoisonStop.
type PoisonError struct {
	// Topic, Partition and Offset locate the record; Partition is -1 for an
	// item read from Config.Source to fill a gap.
	Topic     string
	Partition int32
	Offset    int64
	// SequenceID and Position are the item's, if its headers parsed.
	SequenceID uuid.UUID
	Position   int64
	Err        error
}

func (e *PoisonError) Error() string {
	if e.Partition < 0 {
		return fmt.Sprintf("projection: poison event at position %d of %s (read from the source): %v", e.Position, e.SequenceID, e.Err)
	}
	return fmt.Sprintf("projection: poison event %s/%d/%d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

// Is reports ErrPoison.
func (e *PoisonError) Is(target error) bool { return target == ErrPoison }

// Unwrap returns the reason.
func (e *PoisonError) Unwrap() error { return e.Err }

// An ItemError attributes an error of Apply to one of the items it was given.
type ItemError struct {
	Index int // into the items passed to Apply
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("item %d: %v", e.Index, e.Err) }

// Unwrap returns Err.
func (e *ItemError) Unwrap() error { return e.Err }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: applying the same item again can never
// succeed (malformed data, a value the model refuses). The runner dead-letters
// or stops on the item, as configured, rather than retrying. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err is permanent: marked with Permanent, or a
// decode error of package events (events.ErrDecode, events.ErrUnknownTopic),
// ErrHeaders, or store.ErrInvalidItem. A context error is never permanent,
// however it is wrapped: it says nothing about the item.
func IsPermanent(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var p *permanentError
	return errors.As(err, &p) ||
		errors.Is(err, events.ErrDecode) || errors.Is(err, events.ErrUnknownTopic) ||
		errors.Is(err, ErrHeaders) || errors.Is(err, store.ErrInvalidItem)
}
