package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

var _ store.KeyRecorder = (*Recorder)(nil)

// DataKey implements store.KeyRecorder.
func (r *Recorder) DataKey(ctx context.Context, seq uuid.UUID) (store.WrappedKey, error) {
	if r.closed.Load() {
		return store.WrappedKey{}, store.ErrClosed
	}
	return r.dataKey(ctx, r.pool, seq)
}

func (r *Recorder) dataKey(ctx context.Context, q querier, seq uuid.UUID) (store.WrappedKey, error) {
	k := store.WrappedKey{SequenceID: seq}
	var forgotten bool
	err := q.QueryRow(ctx, "SELECT master_id, wrapped, forgotten_at IS NOT NULL FROM "+r.n.Keys+" WHERE seq_id = $1", pgUUID(seq)).
		Scan(&k.MasterID, &k.Wrapped, &forgotten)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.WrappedKey{}, fmt.Errorf("postgres: data key of %s: %w", seq, store.ErrNotFound)
	case err != nil:
		return store.WrappedKey{}, fmt.Errorf("postgres: data key of %s: %w", seq, err)
	case forgotten:
		return store.WrappedKey{}, &events.ForgottenError{SequenceID: seq}
	}
	return k, nil
}

// CreateDataKey implements store.KeyRecorder: an insert that does nothing if
// the sequence has a row, then a read of the row, in two statements so that
// the read sees a row a concurrent caller committed while the insert waited.
func (r *Recorder) CreateDataKey(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error) {
	if r.closed.Load() {
		return store.WrappedKey{}, store.ErrClosed
	}
	if k.SequenceID == uuid.Nil || k.MasterID == "" || len(k.Wrapped) == 0 {
		return store.WrappedKey{}, fmt.Errorf("%w: data key needs a sequence id, a master key id and the wrapped key", store.ErrInvalidItem)
	}
	_, err := r.pool.Exec(ctx, "INSERT INTO "+r.n.Keys+" (seq_id, master_id, wrapped) VALUES ($1, $2, $3) ON CONFLICT (seq_id) DO NOTHING",
		pgUUID(k.SequenceID), k.MasterID, k.Wrapped)
	if err != nil {
		return store.WrappedKey{}, fmt.Errorf("postgres: create data key of %s: %w", k.SequenceID, err)
	}
	return r.dataKey(ctx, r.pool, k.SequenceID)
}

// Forget implements store.KeyRecorder in one transaction: the tombstone, the
// key row emptied (or a forgotten row made, for a sequence that had no key),
// the snapshots deleted. The old row version keeps the wrapped key on disk
// until VACUUM reclaims it.
func (r *Recorder) Forget(ctx context.Context, seq uuid.UUID) (int64, error) {
	return store.ForgetIn(ctx, r, seq, func(t store.Tx) error {
		ptx, _ := PgxTx(t)
		_, err := ptx.Exec(ctx, "INSERT INTO "+r.n.Keys+" AS k (seq_id, master_id, wrapped, forgotten_at) VALUES ($1, '', NULL, now())"+
			" ON CONFLICT (seq_id) DO UPDATE SET master_id = '', wrapped = NULL, forgotten_at = coalesce(k.forgotten_at, now())", pgUUID(seq))
		if err != nil {
			return fmt.Errorf("postgres: forget %s: delete data key: %w", seq, err)
		}
		if _, err := ptx.Exec(ctx, "DELETE FROM "+r.n.Snapshots+" WHERE sequence_id = $1", pgUUID(seq)); err != nil {
			return fmt.Errorf("postgres: forget %s: delete snapshots: %w", seq, err)
		}
		return nil
	})
}
