package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// Tx is the store.Tx that Recorder.InTx passes to its function. It is valid
// only until that function returns, and not safe for concurrent use.
//
// Besides store.Tx, it runs SQL of the caller's own in the same transaction
// (ExecContext, QueryContext), so that a projection can
// commit a read model kept in the same database together with its tracking.
type Tx struct {
	conn *sql.Conn
	// failed is the tracking conflict that dooms the transaction.
	failed error
	// inserted reports that events were appended, so tailers are woken.
	inserted bool
	done     bool
}

var _ store.Tx = (*Tx)(nil)

func (t *Tx) usable() error {
	if t.done {
		return errTxDone
	}
	return t.failed
}

// InsertEvents implements store.Tx. The items are appended all or none: on
// error nothing of this call is kept (a savepoint is rolled back) and the
// transaction may go on, so one conflicting append need not fail others that
// share the transaction.
func (t *Tx) InsertEvents(ctx context.Context, items []store.SequencedItem) (ids []int64, err error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []int64{}, nil
	}
	if len(items) == 1 {
		// One statement is atomic by itself.
		ids, err = insertEvents(ctx, t.conn, items)
	} else {
		err = t.savepoint(ctx, func() error {
			var err error
			ids, err = insertEvents(ctx, t.conn, items)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	t.inserted = true
	return ids, nil
}

// savepoint runs fn so that, if it fails, nothing it did is kept.
func (t *Tx) savepoint(ctx context.Context, fn func() error) error {
	if _, err := t.conn.ExecContext(ctx, "SAVEPOINT insert_events"); err != nil {
		return fmt.Errorf("sqlite: savepoint: %w", describe(ctx, err))
	}
	if err := fn(); err != nil {
		bg := context.WithoutCancel(ctx)
		if _, rerr := t.conn.ExecContext(bg, "ROLLBACK TO insert_events"); rerr != nil {
			// The transaction is in an unknown state: doom it.
			t.failed = fmt.Errorf("sqlite: rollback to savepoint: %w", rerr)
			return err
		}
		if _, rerr := t.conn.ExecContext(bg, "RELEASE insert_events"); rerr != nil {
			t.failed = fmt.Errorf("sqlite: release savepoint: %w", rerr)
		}
		return err
	}
	if _, err := t.conn.ExecContext(ctx, "RELEASE insert_events"); err != nil {
		err = fmt.Errorf("sqlite: release savepoint: %w", describe(ctx, err))
		t.failed = err
		return err
	}
	return nil
}

// SelectEvents implements store.Tx: it sees what the transaction wrote.
func (t *Tx) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	items, err := selectEvents(ctx, t.conn, sequenceID, q)
	if err != nil {
		return nil, fmt.Errorf("sqlite: select events: %w", describe(ctx, err))
	}
	return items, nil
}

// SelectSequences implements store.SequencesReader: it sees what the
// transaction wrote.
func (t *Tx) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	out, err := selectSequences(ctx, t.conn, queries)
	if err != nil {
		return nil, fmt.Errorf("sqlite: select sequences: %w", describe(ctx, err))
	}
	return out, nil
}

// SetTracking implements store.Tx. A conflict dooms the transaction: every
// later call on t fails with it, and InTx rolls back and returns it.
func (t *Tx) SetTracking(ctx context.Context, tr store.Tracking) error {
	if err := t.usable(); err != nil {
		return err
	}
	res, err := t.conn.ExecContext(ctx,
		`INSERT INTO tracking (name, topic, partition, position) VALUES (?, ?, ?, ?)
		 ON CONFLICT (name, topic, partition) DO UPDATE SET position = excluded.position
		 WHERE excluded.position > tracking.position`,
		tr.Name, tr.Topic, tr.Partition, tr.Position)
	if err != nil {
		return fmt.Errorf("sqlite: set tracking: %w", describe(ctx, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: set tracking: %w", err)
	}
	if n > 0 {
		return nil
	}
	stored := int64(-1)
	if err := tracking(ctx, t.conn, tr.Name, tr.Topic, tr.Partition, &stored); err != nil {
		return fmt.Errorf("sqlite: set tracking: %w", describe(ctx, err))
	}
	t.failed = &store.TrackingConflictError{Tracking: tr, Stored: stored}
	return t.failed
}

// SetTrackings implements store.TrackingsSetter: SetTracking for each, in
// order, up to the first that fails.
func (t *Tx) SetTrackings(ctx context.Context, ts []store.Tracking) error {
	for _, tr := range ts {
		if err := t.SetTracking(ctx, tr); err != nil {
			return err
		}
	}
	return nil
}

// ExecContext runs a statement of the caller's own in the transaction.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	return t.conn.ExecContext(ctx, query, args...)
}

// QueryContext runs a query of the caller's own in the transaction.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	return t.conn.QueryContext(ctx, query, args...)
}
