package cli

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// lateDataKeys are the per-entity data keys of a command's store: the cipher
// is built with the flags, before the store is open, and bound to the store
// by bindStore once it is.
type lateDataKeys struct {
	keys atomic.Pointer[store.DataKeys]
}

var _ events.DataKeyPreparer = (*lateDataKeys)(nil)

var errUnbound = errors.New("per-entity keys: the store is not open")

// DataKey implements events.DataKeys.
func (l *lateDataKeys) DataKey(seq uuid.UUID, create bool) ([]byte, error) {
	k := l.keys.Load()
	if k == nil {
		return nil, errUnbound
	}
	return k.DataKey(seq, create)
}

// PrepareDataKeys implements events.DataKeyPreparer.
func (l *lateDataKeys) PrepareDataKeys(ctx context.Context, seqs []uuid.UUID, create bool) (func(), error) {
	k := l.keys.Load()
	if k == nil {
		return func() {}, errUnbound
	}
	return k.PrepareDataKeys(ctx, seqs, create)
}

// bindStore gives the per-entity cipher, if -cipher-per-entity is on, the
// store's data keys. Call it once the store is open and before events are
// encoded; without -cipher-per-entity it does nothing.
func (c *codecFlags) bindStore(rec any) error {
	k := &c.keyring
	if !k.perEntity || k.keys == nil {
		return nil
	}
	kr, ok := rec.(store.KeyRecorder)
	if !ok {
		return fmt.Errorf("-cipher-per-entity: the store (%T) keeps no data keys", rec)
	}
	ring, err := k.master()
	if err != nil {
		return err
	}
	dk, err := store.NewDataKeys(kr, ring, store.DataKeysConfig{})
	if err != nil {
		return err
	}
	k.keys.keys.Store(dk)
	return nil
}

// master returns the master keyring the per-entity cipher was built over.
func (k *keyringFlags) master() (*events.Keyring, error) {
	if k.ring == nil {
		return nil, errors.New("-cipher-per-entity: the cipher was not built")
	}
	return k.ring, nil
}
