package postgres_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

func TestCheckShard(t *testing.T) {
	ctx := t.Context()
	rec := newRecorder(t)
	// A store of one database records nothing.
	if err := rec.CheckShard(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := rec.ShardLayout(ctx); err != nil || ok {
		t.Fatalf("one database: layout recorded %v, %v", ok, err)
	}
	if err := rec.CheckShard(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := rec.CheckShard(ctx, 1, 2); err != nil {
		t.Fatalf("opened again as the same shard: %v", err)
	}
	if i, n, ok, err := rec.ShardLayout(ctx); err != nil || !ok || i != 1 || n != 2 {
		t.Fatalf("layout %d of %d (%v), %v; want 1 of 2", i, n, ok, err)
	}
	for _, c := range []struct {
		index, count int
		want         string
	}{
		{0, 2, "is shard 1 of 2, not shard 0 of 2"},
		{1, 3, "is shard 1 of 2, not shard 1 of 3"},
		{0, 1, "is shard 1 of a store of 2 shards, not a store of its own"},
	} {
		err := rec.CheckShard(ctx, c.index, c.count)
		if !errors.Is(err, postgres.ErrShardLayout) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckShard(%d, %d) of shard 1 of 2: %v, want ErrShardLayout saying %q", c.index, c.count, err, c.want)
		}
	}
	if err := rec.CheckShard(ctx, 2, 2); err == nil {
		t.Error("CheckShard(2, 2) accepted")
	}
}

// TestCheckShardRefusesAStoreOfOneDatabase checks that a database that holds
// the events of a store of one database is not made a shard: its entities of
// other shards would no longer be found, and commands would create them again
// on their shards.
func TestCheckShardRefusesAStoreOfOneDatabase(t *testing.T) {
	ctx := t.Context()
	rec := newRecorder(t)
	if err := rec.CheckShard(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{{SequenceID: uuid.New(), Position: 0, Topic: "example.Created", State: []byte(`{}`), Codec: "json"}}); err != nil {
		t.Fatal(err)
	}
	err := rec.CheckShard(ctx, 0, 2)
	if !errors.Is(err, postgres.ErrShardLayout) || !strings.Contains(err.Error(), "holds the events of a store of one database") {
		t.Fatalf("CheckShard(0, 2) of a store of one database with events: %v, want ErrShardLayout", err)
	}
	if _, _, ok, err := rec.ShardLayout(ctx); err != nil || ok {
		t.Fatalf("layout recorded (%v, %v) for a refused shard", ok, err)
	}
	// It is still a store of its own.
	if err := rec.CheckShard(ctx, 0, 1); err != nil {
		t.Fatalf("opened again alone: %v", err)
	}
}
