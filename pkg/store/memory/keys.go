package memory

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// memKey is a stored data key, or the record that its sequence was forgotten.
type memKey struct {
	masterID  string
	wrapped   []byte
	forgotten bool
}

// DataKey implements store.KeyRecorder.
func (r *Recorder) DataKey(ctx context.Context, seq uuid.UUID) (store.WrappedKey, error) {
	if err := ctx.Err(); err != nil {
		return store.WrappedKey{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.dataKey(seq)
}

func (r *Recorder) dataKey(seq uuid.UUID) (store.WrappedKey, error) {
	k, ok := r.keys[seq]
	switch {
	case !ok:
		return store.WrappedKey{}, fmt.Errorf("memory: data key of %s: %w", seq, store.ErrNotFound)
	case k.forgotten:
		return store.WrappedKey{}, &events.ForgottenError{SequenceID: seq}
	}
	return store.WrappedKey{SequenceID: seq, MasterID: k.masterID, Wrapped: bytes.Clone(k.wrapped)}, nil
}

// CreateDataKey implements store.KeyRecorder.
func (r *Recorder) CreateDataKey(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error) {
	if err := ctx.Err(); err != nil {
		return store.WrappedKey{}, err
	}
	if k.SequenceID == uuid.Nil || k.MasterID == "" || len(k.Wrapped) == 0 {
		return store.WrappedKey{}, fmt.Errorf("%w: data key needs a sequence id, a master key id and the wrapped key", store.ErrInvalidItem)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.keys[k.SequenceID]; !ok {
		r.keys[k.SequenceID] = memKey{masterID: k.MasterID, wrapped: bytes.Clone(k.Wrapped)}
	}
	return r.dataKey(k.SequenceID)
}

// Forget implements store.KeyRecorder.
func (r *Recorder) Forget(ctx context.Context, seq uuid.UUID) (int64, error) {
	return store.ForgetIn(ctx, r, seq, func(t store.Tx) error {
		tx := t.(*memTx)
		tx.forgets = append(tx.forgets, seq)
		return nil
	})
}
