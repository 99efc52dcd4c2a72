// Package app is the application object of the stand-alone example: it saves the
// pending events of aggregates atomically through an event store, then tells
// in-process subscribers what was saved, and can be closed.
//
// Guarantees: Save stores the pending events of all the aggregates it is given in
// one atomic append, or none of them. Subscribers hear of events only after they
// are stored, in the order they were stored by that Save, and never of events
// that failed to store. Subscribers are called synchronously, in the order they
// subscribed, on the goroutine that called Save; a failing subscriber does not
// undo the save (the events are stored) and does not stop the others.
//
// In-process subscribers are for one process. Across processes, the events table
// is the outbox: the relay publishes it to Kafka and projections consume it there.
package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// ErrNotify reports that events were stored but a subscriber failed to receive
// them. Errors wrapping it are *NotifyError values.
var ErrNotify = errors.New("app: events stored, but a subscriber failed")

// A NotifyError carries the failures of subscribers after a successful save.
type NotifyError struct {
	Err error // the subscribers' errors, joined
}

func (e *NotifyError) Error() string { return fmt.Sprintf("%v: %v", ErrNotify, e.Err) }

// Is reports ErrNotify.
func (e *NotifyError) Is(target error) bool { return target == ErrNotify }

// Unwrap returns the subscribers' errors.
func (e *NotifyError) Unwrap() error { return e.Err }

// A Subscriber receives events after they are stored.
type Subscriber interface {
	Receive(ctx context.Context, evs []events.Event) error
}

// SubscriberFunc adapts a function to a Subscriber.
type SubscriberFunc func(ctx context.Context, evs []events.Event) error

// Receive calls f.
func (f SubscriberFunc) Receive(ctx context.Context, evs []events.Event) error { return f(ctx, evs) }

// Application saves aggregates and publishes their events to subscribers.
type Application struct {
	Store *store.EventStore

	mu     sync.RWMutex
	subs   map[int]Subscriber
	nextID int
	closed bool
}

// New returns an application that stores events in s.
func New(s *store.EventStore) *Application {
	return &Application{Store: s, subs: make(map[int]Subscriber)}
}

// Subscribe adds sub and returns a function that removes it.
func (a *Application) Subscribe(sub Subscriber) (unsubscribe func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.nextID
	a.nextID++
	a.subs[id] = sub
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.subs, id)
	}
}

// Save stores the pending events of roots in one atomic append, forgets them on
// the roots, and then passes them to every subscriber. If the append fails, the
// events stay pending and nothing is published. If the append succeeds but a
// subscriber fails, Save returns a *NotifyError.
func (a *Application) Save(ctx context.Context, roots ...events.Root) error {
	a.mu.RLock()
	closed := a.closed
	a.mu.RUnlock()
	if closed {
		return store.ErrClosed
	}
	var pending []events.Event
	for _, r := range roots {
		pending = append(pending, r.Base().PendingEvents()...)
	}
	if len(pending) == 0 {
		return nil
	}
	if _, err := a.Store.Put(ctx, pending...); err != nil {
		return err
	}
	for _, r := range roots {
		r.Base().CollectEvents()
	}
	return a.publish(ctx, pending)
}

func (a *Application) publish(ctx context.Context, evs []events.Event) error {
	a.mu.RLock()
	ids := make([]int, 0, len(a.subs))
	for id := range a.subs {
		ids = append(ids, id)
	}
	subs := make([]Subscriber, 0, len(ids))
	for _, id := range sortInts(ids) {
		subs = append(subs, a.subs[id])
	}
	a.mu.RUnlock()
	var errs []error
	for _, s := range subs {
		if err := s.Receive(ctx, evs); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return &NotifyError{Err: errors.Join(errs...)}
	}
	return nil
}

// Close removes every subscriber; later Saves fail with store.ErrClosed. It does
// not close the store, which the caller built and owns.
func (a *Application) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	clear(a.subs)
	return nil
}

// PersistencePolicy is a subscriber that stores every event it receives in another
// event store: the stand-alone example's persistence policy. An event already
// there (same sequence and position) is not stored again, so receiving an event
// twice has no further effect.
type PersistencePolicy struct {
	Store *store.EventStore
}

// Receive stores evs atomically; if any is already stored, it stores those that
// are not, one at a time.
func (p *PersistencePolicy) Receive(ctx context.Context, evs []events.Event) error {
	_, err := p.Store.Put(ctx, evs...)
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	for _, e := range evs {
		if _, err := p.Store.Put(ctx, e); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return nil
}

func sortInts(s []int) []int {
	slices.Sort(s)
	return s
}
