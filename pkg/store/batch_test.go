package store_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// countingRecorder counts the calls that read events.
type countingRecorder struct {
	*memory.Recorder
	one, many atomic.Int64
}

func (c *countingRecorder) SelectEvents(ctx context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	c.one.Add(1)
	return c.Recorder.SelectEvents(ctx, id, q)
}

func (c *countingRecorder) SelectSequences(ctx context.Context, qs map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	c.many.Add(1)
	return c.Recorder.SelectSequences(ctx, qs)
}

// With BatchReads, concurrent Gets of cached entities share queries, and a
// Get that begins after an append committed returns it, for every entity,
// while other Gets and appends run.
func TestRepositoryBatchReadsNeverStale(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	rec := &countingRecorder{Recorder: f.rec}
	es := store.NewEventStore(f.es.Mapper, rec)
	r, err := store.NewRepository(es, newEntity, store.RepositoryConfig{CacheSize: 64, BatchReads: true})
	if err != nil {
		t.Fatal(err)
	}
	const entities, rounds, readers = 8, 40, 8
	es0 := make([]*entity.Entity, entities)
	ids := make([]uuid.UUID, entities)
	for i := range es0 {
		es0[i] = f.create(t, 0)
		ids[i] = es0[i].ID()
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, readers+entities)
	for k := range readers { // background readers, to batch with
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := r.Get(ctx, ids[i%entities]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var writers sync.WaitGroup
	for _, e := range es0 { // each entity: append, then read it back at once
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range rounds {
				if err := e.Set("n", i); err != nil {
					errs <- err
					return
				}
				if _, err := es.Put(ctx, e.CollectEvents()...); err != nil {
					errs <- err
					return
				}
				got, err := r.Get(ctx, e.ID())
				if err != nil {
					errs <- err
					return
				}
				if got.Version() != e.Version() || string(got.Attributes["n"]) != string(mustJSON(i)) {
					t.Errorf("round %d: read version %d (n=%s) after the append of version %d", i, got.Version(), got.Attributes["n"], e.Version())
					return
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rec.many.Load() == 0 {
		t.Fatal("no read went in a batch")
	}
	t.Logf("%d batched queries, %d single ones", rec.many.Load(), rec.one.Load())
}

func mustJSON(i int) []byte {
	b, _ := json.Marshal(i)
	return b
}
