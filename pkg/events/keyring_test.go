package events_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

func deposit(id uuid.UUID, version, amount int64) *Deposited {
	e := &Deposited{Amount: amount}
	e.OriginatorID, e.OriginatorVersion = id, version
	return e
}

func keyring(t *testing.T, active, legacy string, ids ...string) *events.Keyring {
	t.Helper()
	keys := map[string][]byte{}
	for _, id := range ids {
		keys[id] = testKey(id[len(id)-1]) // the same key under the same id in every keyring
	}
	k, err := events.NewKeyring(keys, active, legacy)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Rotation: items under key 1 and key 2 are both readable; retiring key 1
// makes exactly its items unreadable, with an error that names key 1.
func TestKeyringRotation(t *testing.T) {
	reg := registry(t)
	id := uuid.New()
	var under1, under2 []events.SequencedItem
	for _, compress := range []bool{false, true} {
		opts := func(k *events.Keyring) []events.MapperOption {
			o := []events.MapperOption{events.WithCipher(k)}
			if compress {
				o = append(o, events.WithCompression(1))
			}
			return o
		}
		// Key k1 active, then k2 added and made active: the old items stay.
		m1 := events.NewMapper(reg, opts(keyring(t, "k1", "", "k1"))...)
		m12 := events.NewMapper(reg, opts(keyring(t, "k2", "", "k1", "k2"))...)
		for v := range int64(3) {
			it, err := m1.ToItem(deposit(id, v, 100+v))
			if err != nil {
				t.Fatal(err)
			}
			under1 = append(under1, it)
		}
		for v := int64(3); v < 6; v++ {
			it, err := m12.ToItem(deposit(id, v, 100+v))
			if err != nil {
				t.Fatal(err)
			}
			under2 = append(under2, it)
		}
		// Retired: k1 removed from the keyring.
		m2 := events.NewMapper(reg, opts(keyring(t, "k2", "", "k2"))...)

		for _, it := range under1 {
			if !strings.HasSuffix(it.Codec, "+aes256gcm:k1") {
				t.Fatalf("codec %q does not record key k1", it.Codec)
			}
			if _, err := m12.FromItem(it); err != nil {
				t.Fatalf("an item under k1 read with k1 and k2: %v", err)
			}
			_, err := m2.FromItem(it)
			var mk *events.MissingKeyError
			if !errors.Is(err, events.ErrDecode) || !errors.As(err, &mk) || mk.KeyID != "k1" || !strings.Contains(err.Error(), "no key k1") {
				t.Fatalf("an item under retired k1: %v; want an ErrDecode naming k1", err)
			}
			if !strings.Contains(err.Error(), id.String()) || !strings.Contains(err.Error(), fmt.Sprintf("position %d", it.Position)) {
				t.Errorf("error %q does not say which item", err)
			}
		}
		for _, it := range under2 {
			if !strings.HasSuffix(it.Codec, "+aes256gcm:k2") {
				t.Fatalf("codec %q does not record key k2", it.Codec)
			}
			for name, m := range map[string]*events.Mapper{"k1 and k2": m12, "k2 alone": m2} {
				e, err := m.FromItem(it)
				if err != nil {
					t.Fatalf("an item under k2 read with %s: %v", name, err)
				}
				if d := e.(*Deposited); d.Amount != 100+it.Position {
					t.Fatalf("decoded %+v", d)
				}
			}
			if _, err := m1.FromItem(it); !strings.Contains(fmt.Sprint(err), "no key k2") {
				t.Fatalf("an item under k2 read with k1 only: %v", err)
			}
		}
		under1, under2 = under1[:0], under2[:0]
	}
}

// A keyring reads history written by the single-key AESCipher through its
// legacy key; without one, the error says so. The single-key cipher, given an
// item of a keyring, names the key it lacks.
func TestKeyringReadsSingleKeyHistory(t *testing.T) {
	reg := registry(t)
	single, err := events.NewAESCipher(testKey('1')) // the bytes of k1 below
	if err != nil {
		t.Fatal(err)
	}
	old, err := events.NewMapper(reg, events.WithCipher(single)).ToItem(deposit(uuid.New(), 0, 7))
	if err != nil || old.Codec != "json+aes256gcm" {
		t.Fatalf("%+v, %v", old, err)
	}
	withLegacy := events.NewMapper(reg, events.WithCipher(keyring(t, "k2", "k1", "k1", "k2")))
	if e, err := withLegacy.FromItem(old); err != nil || e.(*Deposited).Amount != 7 {
		t.Fatalf("single-key history through the legacy key: %v, %v", e, err)
	}
	noLegacy := events.NewMapper(reg, events.WithCipher(keyring(t, "k2", "", "k1", "k2")))
	_, err = noLegacy.FromItem(old)
	var mk *events.MissingKeyError
	if !errors.As(err, &mk) || !mk.Legacy || !errors.Is(err, events.ErrDecode) || !strings.Contains(err.Error(), "legacy key") {
		t.Fatalf("single-key history without a legacy key: %v", err)
	}

	newer, err := withLegacy.ToItem(deposit(uuid.New(), 0, 8))
	if err != nil {
		t.Fatal(err)
	}
	_, err = events.NewMapper(reg, events.WithCipher(single)).FromItem(newer)
	if !errors.As(err, &mk) || mk.KeyID != "k2" || !strings.Contains(err.Error(), "no key k2") {
		t.Fatalf("a keyring's item read by the single-key cipher: %v", err)
	}
}

// A key under the wrong id fails authentication: the id is bound to the key,
// not trusted blindly.
func TestKeyringWrongKeyUnderID(t *testing.T) {
	reg := registry(t)
	it, err := events.NewMapper(reg, events.WithCipher(keyring(t, "k1", "", "k1"))).ToItem(deposit(uuid.New(), 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	other, err := events.NewKeyring(map[string][]byte{"k1": testKey(99)}, "k1", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.NewMapper(reg, events.WithCipher(other)).FromItem(it); !errors.Is(err, events.ErrDecode) || !strings.Contains(err.Error(), "wrong key") {
		t.Fatalf("another key under k1: %v", err)
	}
}

func TestNewKeyringErrors(t *testing.T) {
	key := testKey(0xab)
	cases := []struct {
		keys           map[string][]byte
		active, legacy string
		want           string
	}{
		{map[string][]byte{"k1": key}, "k2", "", `active key "k2" is not in the keyring`},
		{map[string][]byte{"k1": key}, "k1", "k0", `legacy key "k0" is not in the keyring`},
		{map[string][]byte{"k+1": key}, "k+1", "", "key id"},
		{map[string][]byte{"k:1": key}, "k:1", "", "key id"},
		{map[string][]byte{"": key}, "", "", "key id"},
		{map[string][]byte{"k1": key[:16]}, "k1", "", "key k1: AES-256 key must be 32 bytes, got 16"},
	}
	for _, c := range cases {
		_, err := events.NewKeyring(c.keys, c.active, c.legacy)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewKeyring(%v, %q, %q) = %v; want %q", c.keys, c.active, c.legacy, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), hex.EncodeToString(key[:8])) || bytes.Contains([]byte(err.Error()), key[:8])) {
			t.Errorf("error shows key material: %v", err)
		}
	}
}

func TestKeyID(t *testing.T) {
	for comp, want := range map[string]struct {
		id string
		ok bool
	}{
		"aes256gcm": {"", true}, "aes256gcm:k1": {"k1", true}, "aes256gcm:": {"", false}, "zstd": {"", false}, "aes128:k1": {"", false},
	} {
		if id, ok := events.KeyID(comp); id != want.id || ok != want.ok {
			t.Errorf("KeyID(%q) = %q, %v; want %q, %v", comp, id, ok, want.id, want.ok)
		}
	}
}
