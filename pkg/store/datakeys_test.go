package store_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

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
	k1, err := here.DataKey(id, true)
	if err != nil || len(k1) != events.DataKeySize {
		t.Fatalf("DataKey(create) = %d bytes, %v", len(k1), err)
	}
	k2, err := there.DataKey(id, true)
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
