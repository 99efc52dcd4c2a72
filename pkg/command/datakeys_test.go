package command_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// watchedKeys is a KeyRecorder that fails t on a call made while a handler
// runs or under another context than the batch's.
type watchedKeys struct {
	store.KeyRecorder
	t        *testing.T
	deciding *atomic.Bool
	mu       sync.Mutex
	creates  int
}

type batchCtxKey struct{}

func (k *watchedKeys) check(ctx context.Context, what string) {
	if k.deciding.Load() {
		k.t.Errorf("%s while a handler runs: the codec did I/O", what)
	}
	if ctx.Value(batchCtxKey{}) == nil {
		k.t.Errorf("%s without the batch's context", what)
	}
}

func (k *watchedKeys) DataKey(ctx context.Context, seq uuid.UUID) (store.WrappedKey, error) {
	k.check(ctx, "read of a data key")
	return k.KeyRecorder.DataKey(ctx, seq)
}

func (k *watchedKeys) CreateDataKey(ctx context.Context, w store.WrappedKey) (store.WrappedKey, error) {
	k.check(ctx, "creation of a data key")
	k.mu.Lock()
	k.creates++
	k.mu.Unlock()
	return k.KeyRecorder.CreateDataKey(ctx, w)
}

// With per-entity keys, the writer reads and creates the data keys a batch
// needs under the batch's context, before it decides the batch: no handler,
// no encoding, does any I/O for keys, even without a key cache.
func TestDataKeysPreparedBeforeDeciding(t *testing.T) {
	rec := memory.New()
	var deciding atomic.Bool
	keys := &watchedKeys{KeyRecorder: rec, t: t, deciding: &deciding}
	master, err := events.NewKeyring(map[string][]byte{"m1": bytes.Repeat([]byte{7}, 32)}, "m1", "")
	if err != nil {
		t.Fatal(err)
	}
	dk, err := store.NewDataKeys(keys, master, store.DataKeysConfig{CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	reg := command.NewRegistry(events.NewRegistry())
	if err := command.RegisterEntity(reg, "example"); err != nil {
		t.Fatal(err)
	}
	registerAccountEvents(reg.Events())
	watched := map[string]command.Handler[*Account]{}
	for name, h := range accountCommands {
		watched[name] = func(ctx context.Context, a *Account, c wire.Command) error {
			deciding.Store(true)
			defer deciding.Store(false)
			return h(ctx, a, c)
		}
	}
	if err := command.Register(reg, "account", newAccount, watched); err != nil {
		t.Fatal(err)
	}
	mapper := events.NewMapper(reg.Events(), events.WithCipher(events.NewEntityCipher(dk, nil)))
	e := &env{t: t, rec: &hookRecorder{Recorder: rec}, offset: map[int32]int64{}}

	for _, cfg := range []command.WriterConfig{{}, {CacheSize: -1}} {
		w, err := command.NewWriter(rec, reg, mapper, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.WithValue(t.Context(), batchCtxKey{}, true)
		a, b, ex := uuid.New(), uuid.New(), uuid.New()
		batches := [][]wire.Command{
			{cmd("open", "account", a, `{"owner": "ann"}`), cmd("deposit", "account", a, `{"amount": 5}`),
				cmd("open", "account", b, `{"owner": "bob"}`), cmd("create", "example", ex, `{"email": "x@example.com"}`)},
			{cmd("deposit", "account", a, `{"amount": 7}`), cmd("withdraw", "account", b, `{"amount": 1}`),
				cmd("update", "example", ex, `{"email": "y@example.com"}`)},
		}
		var all []wire.Command
		for _, batch := range batches {
			var recs []wire.Record
			for _, c := range batch {
				recs = append(recs, e.record(0, c))
			}
			if err := w.HandleBatch(ctx, recs); err != nil {
				t.Fatal(err)
			}
			all = append(all, batch...)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		want := []wire.Status{wire.StatusAccepted, wire.StatusAccepted, wire.StatusAccepted, wire.StatusAccepted,
			wire.StatusAccepted, wire.StatusRejected, wire.StatusAccepted}
		for i, c := range all {
			if r := e.result(c.CommandID); r.Status != want[i] {
				t.Fatalf("%+v: command %d %s: %s %q, want %s", cfg, i, c.Type, r.Status, r.Error, want[i])
			}
		}
		// Every event is encrypted with its entity's key, and reads back.
		for _, id := range []uuid.UUID{a, b, ex} {
			items, _ := rec.SelectEvents(ctx, id, store.Query{})
			for _, it := range items {
				if !strings.HasSuffix(it.Codec, events.EntityCodec) {
					t.Fatalf("%s at %d: codec %q", it.Topic, it.Position, it.Codec)
				}
			}
		}
		acc, err := store.NewRepository(store.NewEventStore(mapper, rec), newAccount, store.RepositoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := acc.Get(ctx, a); err != nil || got.Balance != 12 {
			t.Fatalf("account a = %+v, %v", got, err)
		}
		ents, _ := store.NewRepository(store.NewEventStore(mapper, rec), func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
		if got, err := ents.Get(ctx, ex); err != nil || got.String("email") != "y@example.com" {
			t.Fatalf("entity = %+v, %v", got, err)
		}
	}
	if keys.creates != 6 { // three entities per writer
		t.Fatalf("%d data keys created, want 6", keys.creates)
	}
}
