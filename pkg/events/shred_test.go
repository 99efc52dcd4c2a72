package events_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// mapKeys is an in-memory events.DataKeys.
type mapKeys struct {
	mu        sync.Mutex
	keys      map[uuid.UUID][]byte
	forgotten map[uuid.UUID]bool
}

func newMapKeys() *mapKeys {
	return &mapKeys{keys: map[uuid.UUID][]byte{}, forgotten: map[uuid.UUID]bool{}}
}

func (m *mapKeys) DataKey(seq uuid.UUID, create bool) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.forgotten[seq] {
		return nil, &events.ForgottenError{SequenceID: seq}
	}
	k, ok := m.keys[seq]
	if !ok && !create {
		return nil, errors.New("no key")
	}
	if !ok {
		var err error
		if k, err = events.NewDataKey(); err != nil {
			return nil, err
		}
		m.keys[seq] = k
	}
	return k, nil
}

func (m *mapKeys) forget(seq uuid.UUID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, seq)
	m.forgotten[seq] = true
}

func TestEntityCipher(t *testing.T) {
	reg := registry(t)
	ring := keyring(t, "k1", "", "k1")
	keys := newMapKeys()
	m := events.NewMapper(reg, events.WithCipher(events.NewEntityCipher(keys, ring)), events.WithCompression(1))
	a, b := uuid.New(), uuid.New()
	ia, err := m.ToItem(deposit(a, 1, 10))
	if err != nil {
		t.Fatal(err)
	}
	ib, err := m.ToItem(deposit(b, 1, 20))
	if err != nil {
		t.Fatal(err)
	}
	if ia.Codec != "json+zstd+"+events.EntityCodec {
		t.Fatalf("codec = %q", ia.Codec)
	}
	if bytes.Equal(keys.keys[a], keys.keys[b]) {
		t.Fatal("two entities share a data key")
	}
	// State encrypted under a's key does not decrypt as b's.
	moved := ia
	moved.SequenceID = b
	if _, err := m.FromItem(moved); !errors.Is(err, events.ErrDecode) {
		t.Fatalf("state moved to another entity = %v, want ErrDecode", err)
	}
	// History encrypted with the master keyring stays readable.
	old, err := events.NewMapper(reg, events.WithCipher(ring)).ToItem(deposit(a, 0, 5))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := m.FromItem(old); err != nil || e.(*Deposited).Amount != 5 {
		t.Fatalf("keyring item through the per-entity cipher: %v, %v", e, err)
	}

	keys.forget(a)
	_, err = m.FromItem(ia)
	var fe *events.ForgottenError
	if !errors.Is(err, events.ErrForgotten) || !errors.As(err, &fe) || fe.SequenceID != a || !errors.Is(err, events.ErrDecode) {
		t.Fatalf("item of a forgotten entity = %v, want a *ForgottenError for %s", err, a)
	}
	var mk *events.MissingKeyError
	if errors.As(err, &mk) {
		t.Fatalf("a forgotten entity is not a missing key: %v", err)
	}
	if _, err := m.ToItem(deposit(a, 2, 1)); !errors.Is(err, events.ErrForgotten) {
		t.Fatalf("encrypting for a forgotten entity = %v, want ErrForgotten", err)
	}
	if e, err := m.FromItem(ib); err != nil || e.(*Deposited).Amount != 20 {
		t.Fatalf("another entity after a forget: %v, %v", e, err)
	}
	// A mapper without per-entity keys says what is missing.
	if _, err := events.NewMapper(reg).FromItem(ib); !errors.Is(err, events.ErrDecode) {
		t.Fatalf("per-entity item without the cipher = %v, want ErrDecode", err)
	}
}

func TestWrapDataKeyRotation(t *testing.T) {
	seq := uuid.New()
	key, err := events.NewDataKey()
	if err != nil {
		t.Fatal(err)
	}
	ring1 := keyring(t, "k1", "", "k1")
	id, wrapped, err := events.WrapDataKey(ring1, seq, key)
	if err != nil || id != "k1" || bytes.Contains(wrapped, key) {
		t.Fatalf("WrapDataKey = %q, %v", id, err)
	}
	// Rotated: k2 is active, k1 still unwraps what it wrapped.
	ring2 := keyring(t, "k2", "", "k1", "k2")
	got, err := events.UnwrapDataKey(ring2, seq, id, wrapped)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unwrap after rotation: %v", err)
	}
	if id2, _, _ := events.WrapDataKey(ring2, seq, key); id2 != "k2" {
		t.Fatalf("new keys are wrapped by %q, want the active k2", id2)
	}
	// Bound to its sequence.
	if _, err := events.UnwrapDataKey(ring2, uuid.New(), id, wrapped); !errors.Is(err, events.ErrDecode) {
		t.Fatalf("unwrap for another sequence = %v, want ErrDecode", err)
	}
	// Retiring k1 makes its data keys unreadable, as a missing key.
	ring3 := keyring(t, "k2", "", "k2")
	var mk *events.MissingKeyError
	if _, err := events.UnwrapDataKey(ring3, seq, id, wrapped); !errors.As(err, &mk) || mk.KeyID != "k1" {
		t.Fatalf("unwrap with k1 retired = %v, want a *MissingKeyError for k1", err)
	}
}

func TestForgottenTombstone(t *testing.T) {
	reg := registry(t)
	if err := reg.Register("account.Forgotten", func() events.Event { return &Closed{} }); err == nil {
		t.Fatal("registering the reserved tombstone topic succeeded")
	}
	id := uuid.New()
	it := events.ForgottenItem(id, 3, "account", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
	if it.Topic != "account.Forgotten" || it.Codec != events.CodecJSON || it.Position != 3 || !events.IsForgottenTopic(it.Topic) {
		t.Fatalf("tombstone item %+v", it)
	}
	for _, topic := range []string{"account.Opened", "Forgotten", ".Forgotten", "a.b.Forgotten"} {
		if events.IsForgottenTopic(topic) {
			t.Errorf("IsForgottenTopic(%q) = true", topic)
		}
	}
	// Any mapper reads it, even with no cipher and no registration.
	e, err := events.NewMapper(reg).FromItem(it)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := e.(*events.Forgotten)
	if !ok || f.Entity != "account" || f.OriginatorID != id || f.OriginatorVersion != 3 || f.Timestamp.IsZero() {
		t.Fatalf("decoded tombstone %#v", e)
	}
	// No aggregate survives it.
	a := &Account{}
	a.Base().Restore(id, 3)
	if err := events.Apply(a, f); !errors.Is(err, events.ErrForgotten) {
		t.Fatalf("Apply(tombstone) = %v, want ErrForgotten", err)
	}
}
