package events

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Crypto-shredding: every aggregate's events encrypted with a data key of its
// own, so that deleting that one key makes exactly that aggregate unreadable.

// ErrForgotten reports an aggregate (a sequence) that was forgotten: its data
// key was deleted, so its events and snapshots can no longer be decrypted, and
// a tombstone item ends its sequence. Errors wrapping it are *ForgottenError
// values; they are ErrDecode errors too.
var ErrForgotten = errors.New("events: the entity was forgotten")

// A ForgottenError names the forgotten sequence.
type ForgottenError struct {
	SequenceID uuid.UUID
}

func (e *ForgottenError) Error() string {
	return fmt.Sprintf("events: entity %s was forgotten: its data key is deleted and its events cannot be read", e.SequenceID)
}

// Is reports ErrForgotten and ErrDecode.
func (e *ForgottenError) Is(target error) bool { return target == ErrForgotten || target == ErrDecode }

// EntityCodec is the codec component of state encrypted with a sequence's own
// data key (AES-256-GCM). The component names no key: the data key is the
// sequence's, and the store records which master key wraps it.
const EntityCodec = "aes256gcm-entity"

// DataKeySize is the size of a data key: AES-256.
const DataKeySize = 32

// DataKeys gives the data key of a sequence to an EntityCipher. It is the
// consumer-side view of a key store (store.DataKeys implements it).
//
// DataKey returns the 32-byte data key of seq. With create, a sequence that
// has no key yet gets one (stored before the state it encrypts); without it,
// such a sequence is an error. A forgotten sequence is a *ForgottenError in
// both cases, and a key is never created for it again.
//
// DataKey has no context: a key store that needs I/O for a key (reading it,
// creating it) does that I/O in PrepareDataKeys, which has one (see
// DataKeyPreparer), and DataKey answers from what was prepared.
type DataKeys interface {
	DataKey(seq uuid.UUID, create bool) ([]byte, error)
}

// A DataKeyPreparer is a DataKeys whose keys are made ready ahead of use,
// under the caller's context: the I/O a key needs happens there, not in the
// codec. store.DataKeys is one; Mapper.PrepareKeys reaches it.
type DataKeyPreparer interface {
	DataKeys
	// PrepareDataKeys loads the keys of seqs, and with create creates those
	// that have none (stored before the state they will encrypt), and holds
	// them until release is called: until then DataKey answers for them
	// without I/O. A forgotten sequence, or one without a key when create is
	// not set, is held as such (DataKey reports it); only a failure of the
	// key store is an error, and then nothing is held. release must be
	// called once, and may be called after an error.
	PrepareDataKeys(ctx context.Context, seqs []uuid.UUID, create bool) (release func(), err error)
}

// A SequenceCipher is a Cipher that needs the item's sequence id. The mapper
// calls EncryptSequence and DecryptSequence instead of Encrypt and Decrypt
// when its cipher is one.
type SequenceCipher interface {
	Cipher
	EncryptSequence(seq uuid.UUID, plaintext, additionalData []byte) (codec string, ciphertext []byte, err error)
	DecryptSequence(seq uuid.UUID, codec string, ciphertext, additionalData []byte) ([]byte, error)
}

// An EntityCipher encrypts each sequence's state with the sequence's own data
// key (codec component EntityCodec), from Keys. It reads state of other
// cipher components (the master keyring's "aes256gcm:<id>", the single-key
// "aes256gcm") with Fallback, so that history written before per-entity keys
// were turned on stays readable. Fallback may be nil.
//
// An EntityCipher is safe for concurrent use if Keys is.
type EntityCipher struct {
	Keys     DataKeys
	Fallback Cipher
}

var _ SequenceCipher = (*EntityCipher)(nil)

// NewEntityCipher returns a per-entity cipher over keys, reading older state
// with fallback (nil: none).
func NewEntityCipher(keys DataKeys, fallback Cipher) *EntityCipher {
	return &EntityCipher{Keys: keys, Fallback: fallback}
}

// PrepareKeys makes the data keys of seqs ready (creating them with create),
// if Keys is a DataKeyPreparer; otherwise it does nothing. See
// Mapper.PrepareKeys.
func (c *EntityCipher) PrepareKeys(ctx context.Context, seqs []uuid.UUID, create bool) (release func(), err error) {
	if p, ok := c.Keys.(DataKeyPreparer); ok {
		return p.PrepareDataKeys(ctx, seqs, create)
	}
	return noRelease, nil
}

func noRelease() {}

// Encrypt implements Cipher. Without a sequence id there is no data key to
// use, so it always fails: the mapper calls EncryptSequence.
func (c *EntityCipher) Encrypt(plaintext, ad []byte) (string, []byte, error) {
	return "", nil, errors.New("events: the per-entity cipher needs the item's sequence id")
}

// Decrypt implements Cipher for state of other ciphers, with Fallback.
func (c *EntityCipher) Decrypt(codec string, ciphertext, ad []byte) ([]byte, error) {
	if codec == EntityCodec {
		return nil, errors.New("events: the per-entity cipher needs the item's sequence id")
	}
	if c.Fallback == nil {
		return nil, fmt.Errorf("%w: state is encrypted (%s) but only per-entity keys are configured", ErrDecode, codec)
	}
	return c.Fallback.Decrypt(codec, ciphertext, ad)
}

// EncryptSequence implements SequenceCipher with seq's data key, created if
// seq has none.
func (c *EntityCipher) EncryptSequence(seq uuid.UUID, plaintext, ad []byte) (string, []byte, error) {
	aes, err := c.cipher(seq, true)
	if err != nil {
		return "", nil, err
	}
	_, out, err := aes.Encrypt(plaintext, ad)
	if err != nil {
		return "", nil, err
	}
	return EntityCodec, out, nil
}

// DecryptSequence implements SequenceCipher.
func (c *EntityCipher) DecryptSequence(seq uuid.UUID, codec string, ciphertext, ad []byte) ([]byte, error) {
	if codec != EntityCodec {
		return c.Decrypt(codec, ciphertext, ad)
	}
	aes, err := c.cipher(seq, false)
	if err != nil {
		return nil, err
	}
	return aes.Decrypt(AESCodec, ciphertext, ad)
}

func (c *EntityCipher) cipher(seq uuid.UUID, create bool) (*AESCipher, error) {
	key, err := c.Keys.DataKey(seq, create)
	if err != nil {
		switch {
		case errors.Is(err, ErrForgotten):
			return nil, err
		case create: // encrypting: nothing failed to decode
			return nil, fmt.Errorf("events: data key of %s: %w", seq, err)
		}
		return nil, fmt.Errorf("%w: data key of %s: %w", ErrDecode, seq, err)
	}
	aes, err := NewAESCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: data key of %s: %w", ErrDecode, seq, err)
	}
	return aes, nil
}

// NewDataKey returns a new random data key.
func NewDataKey() ([]byte, error) {
	k := make([]byte, DataKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("events: data key: %w", err)
	}
	return k, nil
}

// wrapAD binds a wrapped data key to its sequence, so that a wrapped key
// copied to another sequence does not unwrap.
func wrapAD(seq uuid.UUID) []byte {
	return append([]byte("eventlog.datakey:"), seq[:]...)
}

// WrapDataKey encrypts seq's data key with master's active key (AES-256-GCM,
// the sequence id as additional data) and returns that key's id with the
// wrapped key.
func WrapDataKey(master *Keyring, seq uuid.UUID, key []byte) (masterID string, wrapped []byte, err error) {
	if len(key) != DataKeySize {
		return "", nil, fmt.Errorf("events: data key must be %d bytes, got %d", DataKeySize, len(key))
	}
	codec, wrapped, err := master.Encrypt(key, wrapAD(seq))
	if err != nil {
		return "", nil, err
	}
	id, _ := KeyID(codec)
	return id, wrapped, nil
}

// UnwrapDataKey decrypts a data key WrapDataKey wrapped for seq with the
// master key masterID. A master key the keyring no longer holds is a
// *MissingKeyError: keep retired master keys for as long as data keys they
// wrap must stay readable.
func UnwrapDataKey(master *Keyring, seq uuid.UUID, masterID string, wrapped []byte) ([]byte, error) {
	key, err := master.Decrypt(AESCodec+":"+masterID, wrapped, wrapAD(seq))
	if err != nil {
		return nil, fmt.Errorf("events: data key of %s: %w", seq, err)
	}
	if len(key) != DataKeySize {
		return nil, fmt.Errorf("%w: data key of %s is %d bytes", ErrDecode, seq, len(key))
	}
	return key, nil
}

// ForgottenName is the event name of the tombstone that ends a forgotten
// sequence: its topic is "<entity type>.Forgotten". The name is reserved: a
// Registry refuses to register a topic with it, and decodes every such topic
// as a *Forgotten.
const ForgottenName = "Forgotten"

// ForgottenTopic returns the tombstone topic of an entity type.
func ForgottenTopic(entityType string) string { return entityType + "." + ForgottenName }

// IsForgottenTopic reports whether topic is a tombstone topic.
func IsForgottenTopic(topic string) bool {
	typ := EntityOf(topic)
	return typ != "" && topic == typ+"."+ForgottenName
}

// Forgotten is the tombstone event that ends a forgotten sequence. It holds
// no personal data: only the entity type and when it was forgotten. It is
// stored unencrypted, so that the notification log, the relay and every
// projection can read it after the data key is gone.
type Forgotten struct {
	Meta
	Entity string `json:"entity"`
}

// EventTopic implements Topicer.
func (e *Forgotten) EventTopic() string { return ForgottenTopic(e.Entity) }

// ForgottenItem returns the tombstone item of sequence seq, of entity type
// entityType, at position (one past the sequence's last item).
func ForgottenItem(seq uuid.UUID, position int64, entityType string, at time.Time) SequencedItem {
	state, _ := json.Marshal(&Forgotten{Meta: Meta{Timestamp: at.UTC()}, Entity: entityType}) // cannot fail
	return SequencedItem{SequenceID: seq, Position: position, Topic: ForgottenTopic(entityType), State: state, Codec: CodecJSON}
}

// forgottenLookup is the registry's fallback for tombstone topics.
func forgottenLookup(topic string) (func() Event, bool) {
	if !IsForgottenTopic(topic) {
		return nil, false
	}
	typ := strings.TrimSuffix(topic, "."+ForgottenName)
	return func() Event { return &Forgotten{Entity: typ} }, true
}
