package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	// Timeout bounds each read made for DataKey of a key not prepared
	// (PrepareDataKeys) and not cached, a call whose interface has no context
	// (default 10 s).
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
// events.EntityCipher (it implements events.DataKeys and
// events.DataKeyPreparer). A sequence's key is created, and committed, by
// PrepareDataKeys with create, under its caller's context, before the
// transaction that appends the first item it encrypts: the writer prepares
// the keys of a batch's entities before it decides the batch, EventStore.Put
// those of its events. DataKey never creates a key: for a sequence not
// prepared and not cached it reads one (bounded by DataKeysConfig.Timeout),
// and asked to create one it fails, naming PrepareDataKeys. Keys are
// unwrapped with whichever master key wrapped them, so master keys rotate
// like any keyring's: add a key, make it active, keep the old ones for as
// long as the data keys they wrapped live.
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

	mu   sync.Mutex
	held map[uuid.UUID]*heldKey // prepared keys, until released
}

// heldKey is a prepared key and the number of preparations holding it.
type heldKey struct {
	key       []byte // nil if forgotten or absent
	forgotten bool
	refs      int
}

// ErrNotPrepared reports a data key DataKey was asked to create: keys are
// created only by PrepareDataKeys, under a context.
var ErrNotPrepared = errors.New("store: data key not prepared")

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
	k := &DataKeys{rec: rec, master: master, cfg: cfg, held: make(map[uuid.UUID]*heldKey)}
	if cfg.CacheSize > 0 {
		k.cache = newLRU[keyEntry](cfg.CacheSize)
	}
	return k, nil
}

// Master returns the master keyring.
func (k *DataKeys) Master() *events.Keyring { return k.master }

// DataKey implements events.DataKeys: the key PrepareDataKeys holds for seq,
// else the cached one. Without either, it fails with ErrNotPrepared if create
// is set (it never creates a key), and otherwise reads the key (Load) with a
// context bounded by DataKeysConfig.Timeout, for decoders that did not
// prepare: the cipher's interface has no context.
func (k *DataKeys) DataKey(seq uuid.UUID, create bool) ([]byte, error) {
	if key, ok, err := k.prepared(seq, create); ok {
		return key, err
	}
	if key, ok, err := k.cached(seq); ok {
		return key, err
	}
	if create {
		return nil, fmt.Errorf("%w: sequence %s has no data key in memory; create it with PrepareDataKeys (events.Mapper.PrepareKeys) before encoding", ErrNotPrepared, seq)
	}
	// The events.Cipher interface carries no context; this bounded one
	// stands in for it.
	ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Timeout)
	defer cancel()
	return k.Load(ctx, seq, false)
}

// PrepareDataKeys implements events.DataKeyPreparer: it loads the keys of
// seqs (Load: from the cache, else from the store) under ctx, creating with
// create those that have none, and holds them until release is called. A
// forgotten sequence is held as forgotten, one without a key (create unset)
// as absent. It returns the first store error, holding nothing.
func (k *DataKeys) PrepareDataKeys(ctx context.Context, seqs []uuid.UUID, create bool) (release func(), err error) {
	var taken []uuid.UUID
	releaseAll := func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		for _, seq := range taken {
			if h := k.held[seq]; h != nil {
				if h.refs--; h.refs == 0 {
					delete(k.held, seq)
				}
			}
		}
	}
	var once sync.Once
	release = func() { once.Do(releaseAll) }
	for _, seq := range seqs {
		if k.hold(seq, create) {
			taken = append(taken, seq)
			continue
		}
		key, err := k.Load(ctx, seq, create)
		h := &heldKey{key: key}
		switch {
		case err == nil:
		case errors.Is(err, ErrForgotten):
			h.forgotten = true
		case errors.Is(err, ErrNotFound) && !create:
		default:
			release()
			return noRelease, fmt.Errorf("store: prepare the data key of %s: %w", seq, err)
		}
		k.mu.Lock()
		if old := k.held[seq]; old != nil {
			h.refs = old.refs // another preparation holds it: keep what was learnt last
		}
		h.refs++
		k.held[seq] = h
		k.mu.Unlock()
		taken = append(taken, seq)
	}
	return release, nil
}

func noRelease() {}

// hold takes one more hold of seq's held key, if it is held and enough for
// create (a key, or forgotten), and reports whether it did.
func (k *DataKeys) hold(seq uuid.UUID, create bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := k.held[seq]
	if h == nil || (create && h.key == nil && !h.forgotten) {
		return false
	}
	h.refs++
	return true
}

// prepared returns seq's held key; ok is false if it is not held, or held
// as absent and create is set.
func (k *DataKeys) prepared(seq uuid.UUID, create bool) (key []byte, ok bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := k.held[seq]
	switch {
	case h == nil:
		return nil, false, nil
	case h.forgotten:
		return nil, true, &events.ForgottenError{SequenceID: seq}
	case h.key != nil:
		return h.key, true, nil
	case create:
		return nil, false, nil
	}
	return nil, true, fmt.Errorf("%w: data key of %s", ErrNotFound, seq)
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

// Forget forgets seq (KeyRecorder.Forget) and drops its key from the cache
// and from the keys held by preparations. It returns the tombstone's
// position.
func (k *DataKeys) Forget(ctx context.Context, seq uuid.UUID) (int64, error) {
	pos, err := k.rec.Forget(ctx, seq)
	if err != nil {
		return 0, err
	}
	k.put(seq, nil, true)
	k.mu.Lock()
	if h := k.held[seq]; h != nil {
		h.key, h.forgotten = nil, true
	}
	k.mu.Unlock()
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
