package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

var _ store.KeyRecorder = (*Recorder)(nil)

// DataKey implements store.KeyRecorder.
func (r *Recorder) DataKey(ctx context.Context, seq uuid.UUID) (store.WrappedKey, error) {
	var k store.WrappedKey
	err := r.read(ctx, "data key", func(db queryer) error {
		var err error
		k, err = dataKey(ctx, db, seq)
		return err
	})
	return k, err
}

// dataKey reads seq's key row through db.
func dataKey(ctx context.Context, db queryer, seq uuid.UUID) (store.WrappedKey, error) {
	k := store.WrappedKey{SequenceID: seq}
	var forgotten bool
	err := queryRow(ctx, db, `SELECT master_id, wrapped, forgotten_at IS NOT NULL FROM entity_keys WHERE seq_id = ?`,
		[]any{seq[:]}, &k.MasterID, &k.Wrapped, &forgotten)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.WrappedKey{}, fmt.Errorf("data key of %s: %w", seq, store.ErrNotFound)
	case err != nil:
		return store.WrappedKey{}, err
	case forgotten:
		return store.WrappedKey{}, &events.ForgottenError{SequenceID: seq}
	}
	return k, nil
}

// CreateDataKey implements store.KeyRecorder.
func (r *Recorder) CreateDataKey(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error) {
	if err := r.usable(); err != nil {
		return store.WrappedKey{}, err
	}
	if k.SequenceID == uuid.Nil || k.MasterID == "" || len(k.Wrapped) == 0 {
		return store.WrappedKey{}, fmt.Errorf("%w: data key needs a sequence id, a master key id and the wrapped key", store.ErrInvalidItem)
	}
	var stored store.WrappedKey
	err := r.writeTx(ctx, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, `INSERT INTO entity_keys (seq_id, master_id, wrapped, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (seq_id) DO NOTHING`, k.SequenceID[:], k.MasterID, k.Wrapped, time.Now().UTC().Format(time.RFC3339Nano))
		if err != nil {
			return fmt.Errorf("sqlite: create data key of %s: %w", k.SequenceID, describe(ctx, err))
		}
		stored, err = dataKey(ctx, conn, k.SequenceID)
		return err
	})
	if err != nil {
		return store.WrappedKey{}, err
	}
	return stored, nil
}

// Forget implements store.KeyRecorder in one transaction. The emptied key
// row's old bytes may stay in the file's free pages and the WAL until they
// are reused, checkpointed and VACUUMed (or secure_delete is on).
func (r *Recorder) Forget(ctx context.Context, seq uuid.UUID) (int64, error) {
	return store.ForgetIn(ctx, r, seq, func(t store.Tx) error {
		tx := t.(*Tx)
		now := time.Now().UTC().Format(time.RFC3339Nano)
		_, err := tx.ExecContext(ctx, `INSERT INTO entity_keys (seq_id, master_id, wrapped, created_at, forgotten_at) VALUES (?, '', NULL, ?, ?)
			ON CONFLICT (seq_id) DO UPDATE SET master_id = '', wrapped = NULL, forgotten_at = coalesce(forgotten_at, excluded.forgotten_at)`,
			seq[:], now, now)
		if err != nil {
			return fmt.Errorf("sqlite: forget %s: delete data key: %w", seq, describe(ctx, err))
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE sequence_id = ?`, seq[:]); err != nil {
			return fmt.Errorf("sqlite: forget %s: delete snapshots: %w", seq, describe(ctx, err))
		}
		return nil
	})
}
