package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// keyRecorder returns a recorder that keeps data keys, or skips.
func (s *suite) keyRecorder(t *testing.T) (store.ProcessRecorder, store.KeyRecorder) {
	rec := s.newRecorder(t)
	kr, ok := rec.(store.KeyRecorder)
	if !ok {
		t.Skipf("%T does not implement store.KeyRecorder", rec)
	}
	return rec, kr
}

func wrappedKey(id uuid.UUID, master string, b byte) store.WrappedKey {
	return store.WrappedKey{SequenceID: id, MasterID: master, Wrapped: bytes.Repeat([]byte{b}, 60)}
}

func sameKey(a, b store.WrappedKey) bool {
	return a.SequenceID == b.SequenceID && a.MasterID == b.MasterID && bytes.Equal(a.Wrapped, b.Wrapped)
}

func checkForgotten(t testing.TB, what string, err error, id uuid.UUID) {
	t.Helper()
	var fe *events.ForgottenError
	if !errors.Is(err, store.ErrForgotten) || !errors.As(err, &fe) || fe.SequenceID != id {
		t.Fatalf("%s = %v, want a *events.ForgottenError for %s", what, err, id)
	}
}

func (s *suite) testDataKeys(t *testing.T) {
	_, kr := s.keyRecorder(t)
	ctx := t.Context()
	id := uuid.New()
	if _, err := kr.DataKey(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DataKey of a sequence without a key = %v, want store.ErrNotFound", err)
	}
	for _, bad := range []store.WrappedKey{{MasterID: "m", Wrapped: []byte{1}}, {SequenceID: id, Wrapped: []byte{1}}, {SequenceID: id, MasterID: "m"}} {
		if _, err := kr.CreateDataKey(ctx, bad); !errors.Is(err, store.ErrInvalidItem) {
			t.Fatalf("CreateDataKey(%+v) = %v, want store.ErrInvalidItem", bad, err)
		}
	}
	first := wrappedKey(id, "m1", 1)
	got, err := kr.CreateDataKey(ctx, first)
	if err != nil || !sameKey(got, first) {
		t.Fatalf("CreateDataKey = %+v, %v; want the key given", got, err)
	}
	// A second key for the sequence is not stored: the first is returned.
	got, err = kr.CreateDataKey(ctx, wrappedKey(id, "m2", 2))
	if err != nil || !sameKey(got, first) {
		t.Fatalf("second CreateDataKey = %+v, %v; want the first key", got, err)
	}
	got, err = kr.DataKey(ctx, id)
	if err != nil || !sameKey(got, first) {
		t.Fatalf("DataKey = %+v, %v; want the first key", got, err)
	}
	if _, err := kr.DataKey(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DataKey of another sequence = %v, want store.ErrNotFound", err)
	}
}

// testDataKeyRace: callers racing to create one sequence's key all get the
// same one.
func (s *suite) testDataKeyRace(t *testing.T) {
	_, kr := s.keyRecorder(t)
	ctx := t.Context()
	id := uuid.New()
	const n = 16
	got := make([]store.WrappedKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = kr.CreateDataKey(ctx, wrappedKey(id, "m", byte(i+1))) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("CreateDataKey %d: %v", i, errs[i])
		}
		if !sameKey(got[i], got[0]) {
			t.Fatalf("racing CreateDataKey calls got different keys: %x and %x", got[0].Wrapped[:1], got[i].Wrapped[:1])
		}
	}
}

func (s *suite) testForget(t *testing.T) {
	rec, kr := s.keyRecorder(t)
	ctx := t.Context()
	id, other := uuid.New(), uuid.New()
	mustInsert(t, rec, Items(id, 0, 3))
	mustInsert(t, rec, Items(other, 0, 2))
	for _, seq := range []uuid.UUID{id, other} {
		if _, err := kr.CreateDataKey(ctx, wrappedKey(seq, "m", 7)); err != nil {
			t.Fatal(err)
		}
	}
	snap, hasSnaps := rec.(store.SnapshotRecorder)
	if hasSnaps {
		for _, seq := range []uuid.UUID{id, other} {
			it := store.SequencedItem{SequenceID: seq, Position: 1, Topic: "storetest.Snapshot", State: []byte(`{}`), Codec: "json"}
			if err := snap.InsertSnapshot(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
	}
	pre := s.waitNotifications(t, rec, 0, 5) // the 5 events, visible
	before := pre[len(pre)-1].ID

	pos, err := kr.Forget(ctx, id)
	if err != nil || pos != 3 {
		t.Fatalf("Forget = %d, %v; want the tombstone at position 3", pos, err)
	}
	items := selectAll(t, rec, id)
	if len(items) != 4 {
		t.Fatalf("after Forget the sequence has %s, want 3 items and the tombstone", describe(items))
	}
	tomb := items[3]
	if tomb.Topic != "storetest.Forgotten" || !events.IsForgottenTopic(tomb.Topic) || tomb.Codec != events.CodecJSON {
		t.Fatalf("tombstone = %s (codec %q), want topic storetest.Forgotten, plain JSON", tomb.Topic, tomb.Codec)
	}
	var f events.Forgotten
	if err := json.Unmarshal(tomb.State, &f); err != nil || f.Entity != "storetest" || f.Timestamp.IsZero() {
		t.Fatalf("tombstone state %s: %+v, %v", tomb.State, f, err)
	}
	// The tombstone is in the notification log, after everything before it.
	log := s.waitNotifications(t, rec, before, 1)
	if len(log) != 1 || !sameItem(log[0].SequencedItem, tomb) {
		t.Fatalf("notification log after Forget: %d items, want the tombstone", len(log))
	}
	if all := allNotifications(t, rec, 0); len(all) != 6 {
		t.Fatalf("notification log has %d items, want all 6 (5 events and the tombstone)", len(all))
	}
	_, err = kr.DataKey(ctx, id)
	checkForgotten(t, "DataKey of a forgotten sequence", err, id)
	_, err = kr.CreateDataKey(ctx, wrappedKey(id, "m", 9))
	checkForgotten(t, "CreateDataKey of a forgotten sequence", err, id)
	if got, err := kr.DataKey(ctx, other); err != nil || !sameKey(got, wrappedKey(other, "m", 7)) {
		t.Fatalf("DataKey of another sequence after Forget = %+v, %v; want it intact", got, err)
	}
	if got := selectAll(t, rec, other); len(got) != 2 {
		t.Fatalf("another sequence after Forget: %s", describe(got))
	}
	if hasSnaps {
		if _, err := snap.LatestSnapshot(ctx, id, -1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("snapshot of a forgotten sequence = %v, want store.ErrNotFound", err)
		}
		if _, err := snap.LatestSnapshot(ctx, other, -1); err != nil {
			t.Fatalf("snapshot of another sequence after Forget: %v", err)
		}
	}

	// Forgetting again changes nothing.
	if pos, err := kr.Forget(ctx, id); err != nil || pos != 3 {
		t.Fatalf("second Forget = %d, %v; want 3, nil", pos, err)
	}
	if got := selectAll(t, rec, id); len(got) != 4 {
		t.Fatalf("second Forget appended: %s", describe(got))
	}
	// No item follows the tombstone by accident: the next position is taken
	// by it.
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{Item(id, 3)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("append at the tombstone's position = %v, want store.ErrConflict", err)
	}
	// An unknown sequence cannot be forgotten.
	if _, err := kr.Forget(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Forget of an unknown sequence = %v, want store.ErrNotFound", err)
	}
	// A sequence with no key (stored in the clear) can be forgotten, and
	// never gets a key afterwards.
	plain := uuid.New()
	mustInsert(t, rec, Items(plain, 0, 1))
	if pos, err := kr.Forget(ctx, plain); err != nil || pos != 1 {
		t.Fatalf("Forget of a sequence without a key = %d, %v; want 1, nil", pos, err)
	}
	_, err = kr.CreateDataKey(ctx, wrappedKey(plain, "m", 3))
	checkForgotten(t, "CreateDataKey after Forget of a sequence without a key", err, plain)
}
