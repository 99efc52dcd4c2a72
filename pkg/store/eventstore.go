package store

import (
	"context"
	"fmt"

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

// Items maps events to sequenced items.
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
	items, err := s.Items(evs)
	if err != nil {
		return nil, err
	}
	return s.Recorder.InsertEvents(ctx, items)
}

// Get returns the events of one sequence selected by q.
func (s *EventStore) Get(ctx context.Context, id uuid.UUID, q Query) ([]events.Event, error) {
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
