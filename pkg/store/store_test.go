package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

type fixture struct {
	rec *memory.Recorder
	es  *store.EventStore
	reg *events.Registry
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	rec := memory.New()
	return fixture{rec: rec, es: store.NewEventStore(events.NewMapper(reg), rec), reg: reg}
}

func newEntity() *entity.Entity { return entity.New("example") }

func (f fixture) repo(t testing.TB, cfg store.RepositoryConfig) *store.Repository[*entity.Entity] {
	t.Helper()
	r, err := store.NewRepository(f.es, newEntity, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// create stores an entity with n updates of "n" after its creation.
func (f fixture) create(t testing.TB, updates int) *entity.Entity {
	t.Helper()
	e, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{"foo": json.RawMessage(`"bar"`)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range updates {
		if err := e.Set("n", i+1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.es.Put(context.Background(), e.CollectEvents()...); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestRepositoryGetAtEveryVersion(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, 5)
	r := f.repo(t, store.RepositoryConfig{})
	for v := int64(1); v <= 6; v++ {
		got, err := r.GetAt(ctx, e.ID(), v)
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		if got.Version() != v || (v > 1 && got.String("n") != "" && string(got.Attributes["n"]) != fmt.Sprint(v-1)) {
			t.Fatalf("version %d: got version %d attrs %s", v, got.Version(), got.Attributes)
		}
	}
	for _, v := range []int64{0, 7} {
		if _, err := r.GetAt(ctx, e.ID(), v); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	if _, err := r.Get(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestRepositoryDiscardedIsNotFound(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, 1)
	if err := e.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.es.Put(ctx, e.CollectEvents()...); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []store.RepositoryConfig{{}, {CacheSize: 10}} {
		r := f.repo(t, cfg)
		for range 2 { // the second Get comes from the cache, if any
			if _, err := r.Get(ctx, e.ID()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("discarded: %v", err)
			}
			if ok, err := r.Contains(ctx, e.ID()); ok || err != nil {
				t.Fatalf("Contains: %v %v", ok, err)
			}
		}
		// Time travel still reaches the live versions.
		if got, err := r.GetAt(ctx, e.ID(), 2); err != nil || got.Version() != 2 {
			t.Fatalf("GetAt 2: %v", err)
		}
	}
}

// The cache must never return an older version than the store holds, even when
// another process appends behind its back.
func TestRepositoryCacheNeverStale(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, 0)
	r := f.repo(t, store.RepositoryConfig{CacheSize: 2})
	for i := range 20 {
		got, err := r.Get(ctx, e.ID())
		if err != nil {
			t.Fatal(err)
		}
		if got.Version() != e.Version() {
			t.Fatalf("round %d: repository at %d, store at %d", i, got.Version(), e.Version())
		}
		// Changing the returned copy must not change the cache.
		got.Attributes["foo"] = json.RawMessage(`"scribbled"`)
		if err := e.Set("foo", i); err != nil {
			t.Fatal(err)
		}
		if _, err := f.es.Put(ctx, e.CollectEvents()...); err != nil {
			t.Fatal(err)
		}
		f.create(t, 0) // and evict now and then
	}
	got, _ := r.Get(ctx, e.ID())
	if string(got.Attributes["foo"]) != "19" {
		t.Fatalf("foo = %s", got.Attributes["foo"])
	}
}

func TestRepositorySnapshots(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, 24) // version 25
	r := f.repo(t, store.RepositoryConfig{Snapshots: f.rec, SnapshotEvery: 10, SnapshotTopic: "example.Snapshot"})
	got, err := r.Get(ctx, e.ID())
	if err != nil || got.Version() != 25 {
		t.Fatalf("get: %v", err)
	}
	snap, err := f.rec.LatestSnapshot(ctx, e.ID(), -1)
	if err != nil || snap.Position != 24 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	// Later Gets start from the snapshot: prove it by making the snapshot the only
	// source of an attribute.
	tampered := snap
	var state map[string]any
	_ = json.Unmarshal(snap.State, &state)
	state["attributes"].(map[string]any)["from"] = "snapshot"
	tampered.State, _ = json.Marshal(state)
	tampered.Position = 25
	if err := e.Set("n", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := f.es.Put(ctx, e.CollectEvents()...); err != nil {
		t.Fatal(err)
	}
	if err := f.rec.InsertSnapshot(ctx, tampered); err != nil {
		t.Fatal(err)
	}
	got, err = r.Get(ctx, e.ID())
	if err != nil || got.Version() != 26 || got.String("from") != "snapshot" {
		t.Fatalf("get from snapshot: version %d attrs %s err %v", got.Version(), got.Attributes, err)
	}
	// GetAt below the snapshot replays from the start.
	old, err := r.GetAt(ctx, e.ID(), 3)
	if err != nil || old.Version() != 3 || old.String("from") != "" {
		t.Fatalf("GetAt 3: %v", err)
	}
}

func TestRepositoryConfigValidate(t *testing.T) {
	f := newFixture(t)
	for _, cfg := range []store.RepositoryConfig{{SnapshotEvery: 5}, {SnapshotEvery: 5, Snapshots: f.rec}, {CacheSize: -1}} {
		if _, err := store.NewRepository(f.es, newEntity, cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

func TestValidateItems(t *testing.T) {
	id := uuid.New()
	ok := store.SequencedItem{SequenceID: id, Topic: "example.Created", State: []byte("{}")}
	bad := map[string]store.SequencedItem{
		"nil id":     {Topic: "t"},
		"negative":   {SequenceID: id, Position: -1, Topic: "t"},
		"no topic":   {SequenceID: id},
		"long topic": {SequenceID: id, Topic: string(make([]byte, 256))},
		"huge state": {SequenceID: id, Topic: "t", State: make([]byte, store.MaxStateSize+1)},
		"long codec": {SequenceID: id, Topic: "t", Codec: string(make([]byte, 65))},
	}
	for name, it := range bad {
		if err := store.ValidateItems([]store.SequencedItem{it}); !errors.Is(err, store.ErrInvalidItem) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := store.ValidateItems([]store.SequencedItem{ok, ok}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate in batch: %v", err)
	}
}

// BenchmarkReplay replays a 1,000-event entity from the memory recorder through
// the repository (no cache, no snapshot): the full decode-and-apply path.
func BenchmarkReplay(b *testing.B) {
	ctx := context.Background()
	f := newFixture(b)
	e := f.create(b, 999)
	r := f.repo(b, store.RepositoryConfig{})
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		got, err := r.Get(ctx, e.ID())
		if err != nil || got.Version() != 1000 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*1000/time.Since(start).Seconds(), "events/s")
}

// Replay rebuilds from items read elsewhere what Get rebuilds, with Get's
// errors.
func TestRepositoryReplay(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, 3)
	r := f.repo(t, store.RepositoryConfig{})
	items, err := f.rec.SelectEvents(ctx, e.ID(), store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Replay(e.ID(), items)
	want, gerr := r.Get(ctx, e.ID())
	if err != nil || gerr != nil || got.Version() != 4 || string(got.Attributes["n"]) != "3" || got.Version() != want.Version() {
		t.Fatalf("Replay = %+v, %v; Get = %+v, %v", got, err, want, gerr)
	}
	if _, err := r.Replay(e.ID(), items[1:]); !errors.Is(err, events.ErrVersion) || err.Error()[:13] != "store: replay" {
		t.Fatalf("Replay of a history without its first event = %v, want events.ErrVersion", err)
	}
	if _, err := r.Replay(e.ID(), nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Replay of no items = %v, want ErrNotFound", err)
	}
	bad := append([]store.SequencedItem(nil), items...)
	bad[1].Topic = "example.Nonsense"
	if _, err := r.Replay(e.ID(), bad); !errors.Is(err, events.ErrUnknownTopic) {
		t.Fatalf("Replay of an unknown topic = %v", err)
	}
	if err := e.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.es.Put(ctx, e.CollectEvents()...); err != nil {
		t.Fatal(err)
	}
	items, _ = f.rec.SelectEvents(ctx, e.ID(), store.Query{})
	if _, err := r.Replay(e.ID(), items); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Replay of a discarded aggregate = %v, want ErrNotFound", err)
	}
}
