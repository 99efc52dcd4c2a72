package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

func ring(t *testing.T) *events.Keyring {
	t.Helper()
	r, err := events.NewKeyring(map[string][]byte{"m1": bytes.Repeat([]byte{1}, 32)}, "m1", "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A forget through one DataKeys takes effect at once there, even for a
// cached key; another process's cache drops the key within CacheTTL.
func TestDataKeysForgetAndCache(t *testing.T) {
	ctx := t.Context()
	rec := memory.New()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	here, err := store.NewDataKeys(rec, ring(t), store.DataKeysConfig{CacheTTL: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	there, _ := store.NewDataKeys(rec, ring(t), store.DataKeysConfig{CacheTTL: time.Minute, Now: clock})
	id := uuid.New()
	if _, err := here.DataKey(id, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DataKey without create of a new sequence = %v, want ErrNotFound", err)
	}
	k1, err := here.Load(ctx, id, true)
	if err != nil || len(k1) != events.DataKeySize {
		t.Fatalf("Load(create) = %d bytes, %v", len(k1), err)
	}
	k2, err := there.Load(ctx, id, true)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("another process got a different key for the same sequence (%v)", err)
	}
	wk, _ := rec.DataKey(ctx, id)
	if bytes.Contains(wk.Wrapped, k1) || wk.MasterID != "m1" {
		t.Fatalf("stored key: master %q, in the clear: %v", wk.MasterID, bytes.Contains(wk.Wrapped, k1))
	}
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{{SequenceID: id, Topic: "example.Created", State: []byte("x"), Codec: "json"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := here.Forget(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := here.DataKey(id, true); !errors.Is(err, store.ErrForgotten) {
		t.Fatalf("DataKey right after Forget here = %v, want ErrForgotten", err)
	}
	if _, err := here.Load(ctx, id, true); !errors.Is(err, store.ErrForgotten) {
		t.Fatalf("Load(create) right after Forget here = %v, want ErrForgotten", err)
	}
	// There, the cached key lives until CacheTTL.
	if _, err := there.DataKey(id, false); err != nil {
		t.Fatalf("DataKey from another process's cache before the TTL: %v", err)
	}
	now.Add(int64(time.Minute))
	if _, err := there.DataKey(id, false); !errors.Is(err, store.ErrForgotten) {
		t.Fatalf("DataKey in another process after the TTL = %v, want ErrForgotten", err)
	}
	if _, err := store.NewDataKeys(nil, ring(t), store.DataKeysConfig{}); err == nil {
		t.Fatal("NewDataKeys without a recorder succeeded")
	}
}

// keyCalls is a KeyRecorder that records the contexts of its calls.
type keyCalls struct {
	store.KeyRecorder
	mu    sync.Mutex
	calls []context.Context
}

func (k *keyCalls) DataKey(ctx context.Context, seq uuid.UUID) (store.WrappedKey, error) {
	k.note(ctx)
	return k.KeyRecorder.DataKey(ctx, seq)
}

func (k *keyCalls) CreateDataKey(ctx context.Context, w store.WrappedKey) (store.WrappedKey, error) {
	k.note(ctx)
	return k.KeyRecorder.CreateDataKey(ctx, w)
}

func (k *keyCalls) note(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, ctx)
}

func (k *keyCalls) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.calls)
}

type ctxKey struct{}

// Keys are created only by PrepareDataKeys, under its caller's context; the
// cipher's DataKey then answers from memory, without a cache, until the
// preparation is released. DataKey never creates a key.
func TestDataKeysPrepare(t *testing.T) {
	rec := memory.New()
	calls := &keyCalls{KeyRecorder: rec}
	dk, err := store.NewDataKeys(calls, ring(t), store.DataKeysConfig{CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	a, b, gone := uuid.New(), uuid.New(), uuid.New()
	if _, err := dk.DataKey(a, true); !errors.Is(err, store.ErrNotPrepared) || calls.count() != 0 {
		t.Fatalf("DataKey(create) of a sequence not prepared = %v after %d store calls, want ErrNotPrepared and none", err, calls.count())
	}
	if _, err := rec.InsertEvents(t.Context(), []store.SequencedItem{{SequenceID: gone, Topic: "example.Created", State: []byte("{}"), Codec: "json"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Forget(t.Context(), gone); err != nil {
		t.Fatal(err)
	}

	ctx := context.WithValue(t.Context(), ctxKey{}, "batch")
	release, err := dk.PrepareDataKeys(ctx, []uuid.UUID{a, gone}, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range calls.calls {
		if c.Value(ctxKey{}) != "batch" {
			t.Fatalf("store call %d did not run under the caller's context", i)
		}
	}
	if _, err := rec.DataKey(t.Context(), a); err != nil {
		t.Fatalf("the prepared key of a is not stored: %v", err)
	}
	n := calls.count()
	ka, err := dk.DataKey(a, true)
	if err != nil || len(ka) != events.DataKeySize {
		t.Fatalf("DataKey of a prepared sequence = %v", err)
	}
	if _, err := dk.DataKey(gone, true); !errors.Is(err, store.ErrForgotten) {
		t.Fatalf("DataKey of a forgotten sequence prepared = %v, want ErrForgotten", err)
	}
	// Prepared without create, a sequence without a key is held as such.
	releaseB, err := dk.PrepareDataKeys(ctx, []uuid.UUID{b, a}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dk.DataKey(b, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DataKey of a sequence prepared without a key = %v, want ErrNotFound", err)
	}
	if _, err := dk.DataKey(b, true); !errors.Is(err, store.ErrNotPrepared) {
		t.Fatalf("DataKey(create) of a sequence prepared without create = %v, want ErrNotPrepared", err)
	}
	if got := calls.count() - n; got != 1 {
		t.Fatalf("%d store calls while prepared keys were used, want 1 (the read of b)", got)
	}
	// Holds are counted: a stays held until both preparations release.
	release()
	release() // a second call changes nothing
	if k, err := dk.DataKey(a, true); err != nil || !bytes.Equal(k, ka) {
		t.Fatalf("a, still held by the second preparation: %v", err)
	}
	releaseB()
	if _, err := dk.DataKey(a, true); !errors.Is(err, store.ErrNotPrepared) {
		t.Fatalf("DataKey(create) after release = %v, want ErrNotPrepared", err)
	}
	// A store failure holds nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := dk.PrepareDataKeys(cctx, []uuid.UUID{uuid.New()}, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("PrepareDataKeys with a cancelled context = %v", err)
	}
}

// Through events.Mapper.PrepareKeys and EventStore, a per-entity cipher
// encrypts with the key prepared for the events' sequence.
func TestEventStorePreparesKeys(t *testing.T) {
	rec := memory.New()
	calls := &keyCalls{KeyRecorder: rec}
	dk, err := store.NewDataKeys(calls, ring(t), store.DataKeysConfig{CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	es := store.NewEventStore(events.NewMapper(reg, events.WithCipher(events.NewEntityCipher(dk, nil))), rec)
	e, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{"email": json.RawMessage(`"a@example.com"`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.Items(e.PendingEvents()); !errors.Is(err, store.ErrNotPrepared) {
		t.Fatalf("Items without prepared keys = %v, want ErrNotPrepared", err)
	}
	ctx := context.WithValue(t.Context(), ctxKey{}, "put")
	if _, err := es.Put(ctx, e.CollectEvents()...); err != nil {
		t.Fatal(err)
	}
	for i, c := range calls.calls {
		if c.Value(ctxKey{}) != "put" {
			t.Fatalf("store call %d did not run under Put's context", i)
		}
	}
	items, _ := rec.SelectEvents(ctx, e.ID(), store.Query{})
	if len(items) != 1 || !strings.HasSuffix(items[0].Codec, events.EntityCodec) {
		t.Fatalf("stored %+v", items)
	}
	got, err := store.NewRepository(es, func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if back, err := got.Get(ctx, e.ID()); err != nil || back.String("email") != "a@example.com" {
		t.Fatalf("Get = %v, %v", back, err)
	}
}
