package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Aggregate is the base of an event-sourced aggregate: its id, its version (the
// number of events applied), whether it is discarded, and the events it has
// triggered but not yet saved. Aggregate types embed it and implement Mutate:
//
//	type Account struct {
//		events.Aggregate
//		Balance int64
//	}
//
//	func (a *Account) Mutate(e events.Event) error {
//		switch e := e.(type) {
//		case *Opened:
//		case *Deposited:
//			a.Balance += e.Amount
//		default:
//			return fmt.Errorf("account: unexpected event %T", e)
//		}
//		return nil
//	}
type Aggregate struct {
	id        uuid.UUID
	version   int64
	discarded bool
	pending   []Event
}

// Base returns a. Through embedding it gives every aggregate type its base.
func (a *Aggregate) Base() *Aggregate { return a }

// ID returns the aggregate's id (the nil UUID before its first event).
func (a *Aggregate) ID() uuid.UUID { return a.id }

// Version returns the number of events applied: 1 right after creation.
func (a *Aggregate) Version() int64 { return a.version }

// Discarded reports whether a discarding event has been applied.
func (a *Aggregate) Discarded() bool { return a.discarded }

// MarkDiscarded is called by Mutate when it applies a discarding event. Afterwards
// no further event applies to the aggregate.
func (a *Aggregate) MarkDiscarded() { a.discarded = true }

// PendingEvents returns the events triggered since the last CollectEvents.
func (a *Aggregate) PendingEvents() []Event { return a.pending }

// CollectEvents returns the pending events and forgets them. An application calls
// it after it saved them.
func (a *Aggregate) CollectEvents() []Event {
	p := a.pending
	a.pending = nil
	return p
}

// Restore sets the base state from a snapshot: the aggregate has applied version
// events and is not discarded.
func (a *Aggregate) Restore(id uuid.UUID, version int64) {
	*a = Aggregate{id: id, version: version}
}

// Root is what Apply and Trigger need of an aggregate: its base (from embedding
// Aggregate) and its mutator, a plain method that changes the aggregate's state
// for each kind of event it knows and returns an error for any other.
type Root interface {
	Base() *Aggregate
	Mutate(Event) error
}

// Apply applies e to r: it checks that e is the next event of r, lets r mutate, and
// counts the version up. It is used both to replay stored events and, by Trigger,
// to apply new ones. The tombstone of a forgotten sequence (*Forgotten) is never
// applied: Apply returns a *ForgottenError for it.
func Apply(r Root, e Event) error {
	a := r.Base()
	m := e.EventMeta()
	if _, ok := e.(*Forgotten); ok {
		// The tombstone of a forgotten sequence: no aggregate survives it.
		return &ForgottenError{SequenceID: m.OriginatorID}
	}
	switch {
	case m.OriginatorID == uuid.Nil:
		return errors.New("events: event has no originator id")
	case a.discarded:
		return fmt.Errorf("%w: %s", ErrDiscarded, a.id)
	case m.OriginatorVersion != a.version:
		return &VersionError{ID: m.OriginatorID, Expected: a.version, Got: m.OriginatorVersion}
	case a.version > 0 && m.OriginatorID != a.id:
		return fmt.Errorf("events: event of %s applied to aggregate %s", m.OriginatorID, a.id)
	}
	id, discarded := a.id, a.discarded
	a.id = m.OriginatorID
	if err := r.Mutate(e); err != nil {
		a.id, a.discarded = id, discarded
		return err
	}
	a.version++
	return nil
}

// Trigger records a new event on r: it stamps e with r's id (for r's first event,
// e must already carry the new id), r's version and the time, applies it, and
// keeps it pending until the application saves it.
func Trigger(r Root, e Event) error {
	a := r.Base()
	m := e.EventMeta()
	if a.version > 0 {
		m.OriginatorID = a.id
	}
	m.OriginatorVersion = a.version
	if m.Timestamp.IsZero() {
		m.Timestamp = time.Now().UTC()
	}
	if err := Apply(r, e); err != nil {
		return err
	}
	a.pending = append(a.pending, e)
	return nil
}
