package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// DataKeysConfig configures DataKeys. The zero value takes the defaults.
type DataKeysConfig struct {
	// CacheSize is how many unwrapped data keys are kept in memory (default
	// 10,000; negative: none).
	CacheSize int
	// CacheTTL bounds how long a cached data key is used without asking the
	// store again (default one minute): a Forget done by another process
	// takes effect here within it. A Forget done through this DataKeys takes
	// effect at once.
	CacheTTL time.Duration
	// Timeout bounds each store call made for the cipher, whose interface has
	// no context (default 10 s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *DataKeysConfig) setDefaults() {
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DataKeys keeps the data keys of sequences in a KeyRecorder, each wrapped by
// the active key of a master events.Keyring, and gives them to an
// events.EntityCipher (it implements events.DataKeys). A sequence's key is
// created, and committed, the first time one of its items is encrypted: before
// the transaction that appends it. Keys are unwrapped with whichever master key
// wrapped them, so master keys rotate like any keyring's: add a key, make it
// active, keep the old ones for as long as the data keys they wrapped live.
//
// Unwrapped keys are cached (DataKeysConfig). Forget through the same
// DataKeys drops the key from the cache before it returns, and the cache
// never hands out a key of a sequence it saw forgotten; other processes see a
// Forget when their cached copy expires (CacheTTL). Appends cannot outlive a
// Forget anywhere: the tombstone takes the sequence's next position, so an
// append that raced it fails with a conflict and the writer's reload finds the
// entity forgotten.
//
// A DataKeys is safe for concurrent use.
type DataKeys struct {
	rec    KeyRecorder
	master *events.Keyring
	cfg    DataKeysConfig

	cache *lru[keyEntry] // nil without a cache
}

type keyEntry struct {
	key       []byte // nil if forgotten
	forgotten bool
	expires   time.Time
}

// replaces is the cache's rule: a forgotten entry is never replaced by a
// key, so that a load that raced a Forget cannot bring the key back.
func (e keyEntry) replaces(old keyEntry) bool { return !old.forgotten }

var _ events.DataKeys = (*DataKeys)(nil)

// NewDataKeys returns the data keys of rec, wrapped with master.
func NewDataKeys(rec KeyRecorder, master *events.Keyring, cfg DataKeysConfig) (*DataKeys, error) {
	if rec == nil || master == nil {
		return nil, errors.New("store: data keys need a key recorder and a master keyring")
	}
	cfg.setDefaults()
	k := &DataKeys{rec: rec, master: master, cfg: cfg}
	if cfg.CacheSize > 0 {
		k.cache = newLRU[keyEntry](cfg.CacheSize)
	}
	return k, nil
}

// Master returns the master keyring.
func (k *DataKeys) Master() *events.Keyring { return k.master }

// DataKey implements events.DataKeys: Load with a context bounded by
// DataKeysConfig.Timeout, for the cipher, which has none.
func (k *DataKeys) DataKey(seq uuid.UUID, create bool) ([]byte, error) {
	if key, ok, err := k.cached(seq); ok {
		return key, err
	}
	// The events.Cipher interface carries no context; this bounded one
	// stands in for it.
	ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Timeout)
	defer cancel()
	return k.Load(ctx, seq, create)
}

// Load returns seq's unwrapped data key, creating (and storing) one if create
// is set and seq has none. A forgotten sequence is a *events.ForgottenError; a
// sequence with no key and create unset is ErrNotFound.
func (k *DataKeys) Load(ctx context.Context, seq uuid.UUID, create bool) ([]byte, error) {
	if key, ok, err := k.cached(seq); ok {
		return key, err
	}
	wk, err := k.rec.DataKey(ctx, seq)
	if errors.Is(err, ErrNotFound) && create {
		wk, err = k.create(ctx, seq)
	}
	if errors.Is(err, ErrForgotten) {
		k.put(seq, nil, true)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	key, err := events.UnwrapDataKey(k.master, seq, wk.MasterID, wk.Wrapped)
	if err != nil {
		return nil, err
	}
	k.put(seq, key, false)
	return key, nil
}

func (k *DataKeys) create(ctx context.Context, seq uuid.UUID) (WrappedKey, error) {
	key, err := events.NewDataKey()
	if err != nil {
		return WrappedKey{}, err
	}
	id, wrapped, err := events.WrapDataKey(k.master, seq, key)
	if err != nil {
		return WrappedKey{}, err
	}
	return k.rec.CreateDataKey(ctx, WrappedKey{SequenceID: seq, MasterID: id, Wrapped: wrapped})
}

// Forget forgets seq (KeyRecorder.Forget) and drops its key from the cache.
// It returns the tombstone's position.
func (k *DataKeys) Forget(ctx context.Context, seq uuid.UUID) (int64, error) {
	pos, err := k.rec.Forget(ctx, seq)
	if err != nil {
		return 0, err
	}
	k.put(seq, nil, true)
	return pos, nil
}

// cached returns seq's cached key or forgotten error; ok is false on a miss.
func (k *DataKeys) cached(seq uuid.UUID) (key []byte, ok bool, err error) {
	if k.cache == nil {
		return nil, false, nil
	}
	e, found := k.cache.get(seq)
	switch {
	case !found:
		return nil, false, nil
	case e.forgotten:
		return nil, true, &events.ForgottenError{SequenceID: seq}
	case !k.cfg.Now().Before(e.expires):
		k.cache.remove(seq)
		return nil, false, nil
	}
	return e.key, true, nil
}

// put caches seq's key, or that seq is forgotten.
func (k *DataKeys) put(seq uuid.UUID, key []byte, forgotten bool) {
	if k.cache == nil {
		return
	}
	e := keyEntry{key: key, forgotten: forgotten, expires: k.cfg.Now().Add(k.cfg.CacheTTL)}
	k.cache.put(seq, e, e.replaces)
}

// String says what it is without key material.
func (k *DataKeys) String() string {
	return fmt.Sprintf("store.DataKeys(master %s)", k.master.Active())
}
