package events

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// A Keyring is a Cipher holding several AES-256-GCM keys by id, one of them
// active. It encrypts with the active key and records its id in the codec
// component ("aes256gcm:<id>"); it decrypts with the key the item names. Keys
// therefore rotate without rewriting history: add a new key, make it active,
// and keep the old one for as long as items encrypted with it must stay
// readable. Removing (retiring) a key makes exactly its items unreadable, with
// a *MissingKeyError.
//
// Items written by AESCipher (the component "aes256gcm", with no id) are read
// with the keyring's legacy key, if it has one.
//
// A Keyring is immutable and safe for concurrent use.
type Keyring struct {
	keys   map[string]*AESCipher
	active string
	legacy string
}

// keyIDRE is what a key id may be: it is stored in every item's codec, where
// "+" separates steps and ":" the id.
var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// NewKeyring returns a keyring of keys (32 bytes each) by id. active names the
// key that encrypts; legacy, if not empty, names the key that reads items
// encrypted by AESCipher before the keyring (codec component "aes256gcm").
// Errors never contain key material.
func NewKeyring(keys map[string][]byte, active, legacy string) (*Keyring, error) {
	k := &Keyring{keys: make(map[string]*AESCipher, len(keys)), active: active, legacy: legacy}
	for id, key := range keys {
		if !keyIDRE.MatchString(id) {
			return nil, fmt.Errorf("events: key id %q: want 1 to 64 letters, digits, '.', '_' or '-'", id)
		}
		c, err := NewAESCipher(key)
		if err != nil {
			return nil, fmt.Errorf("events: key %s: AES-256 key must be 32 bytes, got %d", id, len(key))
		}
		k.keys[id] = c
	}
	if _, ok := k.keys[active]; !ok {
		return nil, fmt.Errorf("events: the active key %q is not in the keyring (ids: %s)", active, k.ids())
	}
	if _, ok := k.keys[legacy]; legacy != "" && !ok {
		return nil, fmt.Errorf("events: the legacy key %q is not in the keyring (ids: %s)", legacy, k.ids())
	}
	return k, nil
}

// Active returns the id of the key that encrypts.
func (k *Keyring) Active() string { return k.active }

// IDs returns the ids of the keys, sorted.
func (k *Keyring) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (k *Keyring) ids() string { return strings.Join(k.IDs(), ", ") }

// KeyID returns the key id recorded in a cipher codec component: "k2" for
// "aes256gcm:k2", "" for the single-key "aes256gcm". ok is false for other
// components.
func KeyID(component string) (id string, ok bool) {
	if component == AESCodec {
		return "", true
	}
	id, found := strings.CutPrefix(component, AESCodec+":")
	if !found || id == "" {
		return "", false
	}
	return id, true
}

// Encrypt implements Cipher with the active key.
func (k *Keyring) Encrypt(plaintext, ad []byte) (string, []byte, error) {
	_, out, err := k.keys[k.active].Encrypt(plaintext, ad)
	if err != nil {
		return "", nil, err
	}
	return AESCodec + ":" + k.active, out, nil
}

// Decrypt implements Cipher with the key codec names.
func (k *Keyring) Decrypt(codec string, ciphertext, ad []byte) ([]byte, error) {
	id, ok := KeyID(codec)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: cipher %q is not %s:<key id>", ErrDecode, codec, AESCodec)
	case id == "" && k.legacy == "":
		return nil, &MissingKeyError{Legacy: true}
	case id == "":
		id = k.legacy
	}
	c, ok := k.keys[id]
	if !ok {
		return nil, &MissingKeyError{KeyID: id}
	}
	return c.Decrypt(AESCodec, ciphertext, ad)
}

// A MissingKeyError says an item is encrypted with a key the cipher does not
// hold: retired, or not configured. It is an ErrDecode.
type MissingKeyError struct {
	// KeyID is the id the item records.
	KeyID string
	// Legacy is true for an item of the single-key cipher (no id) read by a
	// keyring without a legacy key.
	Legacy bool
}

func (e *MissingKeyError) Error() string {
	if e.Legacy {
		return "events: cannot decode item: no key for state encrypted with the single-key cipher (aes256gcm, no key id): configure the keyring's legacy key"
	}
	return fmt.Sprintf("events: cannot decode item: no key %s (the key that encrypted it was retired or is not configured)", e.KeyID)
}

// Unwrap makes a MissingKeyError an ErrDecode.
func (e *MissingKeyError) Unwrap() error { return ErrDecode }
