package shard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/shard"
)

// idOn returns a new entity id on shard i of n.
func idOn(i, n int) uuid.UUID {
	for {
		if id := uuid.New(); shard.ShardOf(id, n) == i {
			return id
		}
	}
}

func item(id uuid.UUID, pos int64) store.SequencedItem {
	return store.SequencedItem{SequenceID: id, Position: pos, Topic: "example.Created", State: []byte("{}"), Codec: "json"}
}

func TestStoreRoutes(t *testing.T) {
	ctx := t.Context()
	shards := []shard.Recorder{memory.New(), memory.New(), memory.New()}
	s, err := shard.New(shards...)
	if err != nil {
		t.Fatal(err)
	}
	ids := []uuid.UUID{idOn(0, 3), idOn(1, 3), idOn(2, 3)}
	for i, id := range ids {
		if _, err := s.InsertEvents(ctx, []store.SequencedItem{item(id, 0), item(id, 1)}); err != nil {
			t.Fatal(err)
		}
		for j, r := range shards {
			got, err := r.SelectEvents(ctx, id, store.Query{})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 2, false: 0}[i == j]; len(got) != want {
				t.Fatalf("entity of shard %d: shard %d holds %d items, want %d", i, j, len(got), want)
			}
		}
		if got, err := s.SelectEvents(ctx, id, store.Query{}); err != nil || len(got) != 2 {
			t.Fatalf("SelectEvents of shard %d's entity: %d items, %v", i, len(got), err)
		}
		if err := s.InsertSnapshot(ctx, item(id, 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := shards[i].LatestSnapshot(ctx, id, -1); err != nil {
			t.Fatalf("snapshot not on shard %d: %v", i, err)
		}
	}
	got, err := s.SelectSequences(ctx, map[uuid.UUID]store.Query{ids[0]: {}, ids[1]: {}, ids[2]: {}, uuid.New(): {}})
	if err != nil || len(got) != 3 {
		t.Fatalf("SelectSequences: %d sequences, %v", len(got), err)
	}
	if _, err := s.InsertEvents(ctx, []store.SequencedItem{item(ids[0], 2), item(ids[1], 2)}); !errors.Is(err, shard.ErrCrossShard) {
		t.Fatalf("append over two shards: %v, want ErrCrossShard", err)
	}
	if items, _ := shards[0].SelectEvents(ctx, ids[0], store.Query{}); len(items) != 2 {
		t.Fatalf("a refused append wrote: %d items", len(items))
	}
	if _, err := s.SelectNotifications(ctx, 0, 10); !errors.Is(err, shard.ErrCrossShard) {
		t.Fatalf("SelectNotifications over 3 shards: %v, want ErrCrossShard", err)
	}
	err = s.InTx(ctx, func(tx store.Tx) error {
		if err := tx.SetTracking(ctx, store.Tracking{Name: "p", Topic: "t", Position: 3}); err != nil {
			return err
		}
		_, err := tx.InsertEvents(ctx, []store.SequencedItem{item(ids[1], 2)})
		return err
	})
	if !errors.Is(err, shard.ErrCrossShard) {
		t.Fatalf("InTx appending another shard's entity: %v, want ErrCrossShard", err)
	}
	if err := s.InTx(ctx, func(tx store.Tx) error {
		return tx.SetTracking(ctx, store.Tracking{Name: "p", Topic: "t", Position: 3})
	}); err != nil {
		t.Fatal(err)
	}
	if pos, err := shards[0].Tracking(ctx, "p", "t", 0); err != nil || pos != 3 {
		t.Fatalf("tracking on the home shard: %d, %v", pos, err)
	}

	one, _ := shard.New(memory.New())
	if _, err := one.InsertEvents(ctx, []store.SequencedItem{item(ids[0], 0), item(ids[1], 0)}); err != nil {
		t.Fatal(err)
	}
	if ns, err := one.SelectNotifications(ctx, 0, 10); err != nil || len(ns) != 2 {
		t.Fatalf("one shard's log: %d, %v", len(ns), err)
	}
}

func TestStoreNotify(t *testing.T) {
	s, _ := shard.New(memory.New(), memory.New())
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Notify(ctx)
	id := idOn(1, 2)
	if _, err := s.InsertEvents(ctx, []store.SequencedItem{item(id, 0)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up for a commit on shard 1")
	}
	cancel()
	for range ch { // drains, then closes
	}
}
