package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// An EventStore stores domain events through a mapper (event <-> sequenced item)
// and a recorder (sequenced items <-> a database): the stand-alone example's event
// store. It is safe for concurrent use if its recorder is.
type EventStore struct {
	Mapper   *events.Mapper
	Recorder AggregateRecorder
}

// NewEventStore returns an event store.
func NewEventStore(m *events.Mapper, r AggregateRecorder) *EventStore {
	return &EventStore{Mapper: m, Recorder: r}
}

// Items maps events to sequenced items. It does no I/O: with a per-entity
// cipher, prepare the keys of the events' sequences first
// (events.Mapper.PrepareKeys), as Put does.
func (s *EventStore) Items(evs []events.Event) ([]SequencedItem, error) {
	items := make([]SequencedItem, len(evs))
	for i, e := range evs {
		it, err := s.Mapper.ToItem(e)
		if err != nil {
			return nil, err
		}
		items[i] = it
	}
	return items, nil
}

// Put stores events atomically and returns their notification ids.
func (s *EventStore) Put(ctx context.Context, evs ...events.Event) ([]int64, error) {
	release, err := s.Mapper.PrepareKeys(ctx, sequencesOf(evs), true)
	defer release()
	if err != nil {
		return nil, err
	}
	items, err := s.Items(evs)
	if err != nil {
		return nil, err
	}
	return s.Recorder.InsertEvents(ctx, items)
}

// Replay applies items, events of sequence id in position order (as
// SelectEvents returns them), to agg: decoding each through the mapper, then
// events.Apply. It stops at the first item that does not decode (an error
// "store: sequence <id>: ..." wrapping events.ErrDecode, ErrUnknownTopic or
// ErrForgotten) or does not apply ("store: replay <id>: ...", wrapping
// events.ErrVersion, ErrDiscarded or ErrForgotten, or the mutator's error).
// It is the replay of Repository, for callers that read the items
// themselves (many sequences in one store.SequencesReader call, say).
func (s *EventStore) Replay(agg events.Root, id uuid.UUID, items []SequencedItem) error {
	for _, it := range items {
		e, err := s.Mapper.FromItem(it)
		if err != nil {
			return fmt.Errorf("store: sequence %s: %w", id, err)
		}
		if err := events.Apply(agg, e); err != nil {
			return fmt.Errorf("store: replay %s: %w", id, err)
		}
	}
	return nil
}

// sequencesOf returns the distinct originator ids of evs.
func sequencesOf(evs []events.Event) []uuid.UUID {
	var ids []uuid.UUID
	for _, e := range evs {
		if id := e.EventMeta().OriginatorID; !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Get returns the events of one sequence selected by q.
func (s *EventStore) Get(ctx context.Context, id uuid.UUID, q Query) ([]events.Event, error) {
	release, err := s.Mapper.PrepareKeys(ctx, []uuid.UUID{id}, false)
	defer release()
	if err != nil {
		return nil, err
	}
	items, err := s.Recorder.SelectEvents(ctx, id, q)
	if err != nil {
		return nil, err
	}
	out := make([]events.Event, len(items))
	for i, it := range items {
		if out[i], err = s.Mapper.FromItem(it); err != nil {
			return nil, fmt.Errorf("store: sequence %s: %w", id, err)
		}
	}
	return out, nil
}
