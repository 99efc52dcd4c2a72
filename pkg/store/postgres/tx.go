package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/pkg/store"
)

// tx is the store.Tx of InTx.
type tx struct {
	r  *Recorder
	tx pgx.Tx
	// next is the ordinal of the next item this transaction inserts; an item's
	// notification id is (xid << 20) + its ordinal.
	next int64
	// savepoints counts the InsertEvents calls that ran under a savepoint.
	savepoints int
	// failed, once set, makes InTx roll back and return it whatever fn returns:
	// a tracking conflict, or an error that left the transaction unusable.
	failed error
}

// PgxTx returns the pgx transaction under a store.Tx that InTx passed, for
// PostgreSQL-specific work (read models, for example) that must commit with it.
// A statement that fails through it aborts the whole transaction. Code that
// should not import this package can ask t for the same through a
// one-method interface: interface{ PgxTx() pgx.Tx }.
func PgxTx(t store.Tx) (pgx.Tx, bool) {
	if t, ok := t.(interface{ PgxTx() pgx.Tx }); ok {
		return t.PgxTx(), true
	}
	return nil, false
}

// PgxTx returns the pgx transaction under t: see the function PgxTx.
func (t *tx) PgxTx() pgx.Tx { return t.tx }

// InTx runs fn in one transaction (READ COMMITTED) and commits if fn returns
// nil. If fn returns an error it is returned as is, after rolling back. If a
// SetTracking call inside failed, or a call left the transaction unusable, InTx
// rolls back and returns that error even if fn ignored it. A commit that fails
// is returned wrapped; if the connection broke during the commit the outcome is
// unknown.
func (r *Recorder) InTx(ctx context.Context, fn func(store.Tx) error) (err error) {
	if r.closed.Load() {
		return store.ErrClosed
	}
	ptx, err := r.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	t := &tx{r: r, tx: ptx}
	committed := false
	defer func() {
		if !committed {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
			defer cancel()
			_ = ptx.Rollback(rctx) // a broken connection is discarded by the pool
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	if t.failed != nil {
		return t.failed
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	committed = true
	return nil
}

// InsertEvents appends items inside the transaction. A taken position fails
// the call with a *store.ConflictError and writes none of its items, but the
// transaction stays usable (one conflicting command of a group commit does not
// fail the others).
//
// The first maxSavepoints calls of a transaction (the writer's one call per
// batch, say) run a plain INSERT under a savepoint, sent with the savepoint
// and its release in one round trip: the server inserts each row once,
// where ON CONFLICT DO NOTHING inserts it speculatively. A unique violation
// rolls back to the savepoint, which undoes the call alone. Later calls use
// ON CONFLICT DO NOTHING and delete what they inserted if a position was
// taken, so that no transaction holds more than maxSavepoints
// subtransactions (past 64, every snapshot on the server gets slower).
func (t *tx) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []int64{}, nil
	}
	if t.next+int64(len(items)) > store.MaxItemsPerAppend {
		return nil, fmt.Errorf("%w: a transaction appends at most %d items", store.ErrInvalidItem, store.MaxItemsPerAppend)
	}
	if t.savepoints >= maxSavepoints {
		return t.insertOnConflict(ctx, items)
	}
	t.savepoints++
	b := newBatch(items, t.next)
	q := &pgx.Batch{}
	q.Queue(savepoint)
	q.Queue(t.r.q.insert, b.args(t.r.n.channel)...)
	q.Queue(releaseSavepoint)
	br := t.tx.SendBatch(ctx, q)
	_, err := br.Exec()
	var res insertResult
	if err == nil {
		err = res.scan(br.QueryRow())
		if err == nil {
			_, err = br.Exec()
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		pe, taken := t.r.taken(err)
		if !taken {
			return nil, t.fail(fmt.Errorf("postgres: insert events: %w", err))
		}
		if _, err := t.tx.Exec(ctx, rollbackToSavepoint); err != nil {
			return nil, t.fail(fmt.Errorf("postgres: undo a conflicting insert: %w", err))
		}
		return nil, t.r.conflict(ctx, t.tx, pe, b)
	}
	if err := res.logOrderError(); err != nil {
		return nil, err // nothing was inserted; the transaction is fine
	}
	if res.inserted != int64(len(items)) {
		return nil, t.fail(fmt.Errorf("postgres: insert events: %d of %d rows inserted", res.inserted, len(items)))
	}
	t.next += int64(len(items))
	return b.notificationIDs(res.base), nil
}

// insertOnConflict is InsertEvents without a savepoint.
func (t *tx) insertOnConflict(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	b := newBatch(items, t.next)
	first := t.next
	t.next += int64(len(items))
	res, err := t.r.execInsert(ctx, t.tx, t.r.q.insertTx, b)
	if err != nil {
		return nil, t.fail(fmt.Errorf("postgres: insert events: %w", err))
	}
	if err := res.logOrderError(); err != nil {
		return nil, err // nothing was inserted; the transaction is fine
	}
	if res.inserted == int64(len(items)) {
		return b.notificationIDs(res.base), nil
	}
	// Some position was taken: undo the rows this call did insert.
	if _, err := t.tx.Exec(ctx, t.r.q.deleteRange, res.base+first, res.base+t.next-1); err != nil {
		return nil, t.fail(fmt.Errorf("postgres: undo a partial insert: %w", err))
	}
	if !res.missing.id.Valid || res.missing.pos == nil {
		return nil, t.fail(fmt.Errorf("postgres: insert events: %d of %d rows inserted", res.inserted, len(items)))
	}
	return nil, &store.ConflictError{SequenceID: res.missing.id.Bytes, Position: *res.missing.pos}
}

// maxSavepoints bounds the InsertEvents calls of a transaction that run
// under a savepoint, below the server's 64 cached subtransactions.
const maxSavepoints = 16

// The savepoint of an InsertEvents call in a transaction.
const (
	savepoint           = "SAVEPOINT eventlog_insert"
	releaseSavepoint    = "RELEASE SAVEPOINT eventlog_insert"
	rollbackToSavepoint = "ROLLBACK TO SAVEPOINT eventlog_insert"
)

func (t *tx) fail(err error) error {
	if t.failed == nil {
		t.failed = err
	}
	return err
}

// SelectEvents reads inside the transaction, seeing its own writes.
func (t *tx) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	items, err := t.r.selectEvents(ctx, t.tx, sequenceID, q)
	if err != nil {
		return nil, t.fail(err)
	}
	return items, nil
}

// SelectSequences reads many sequences in one statement inside the
// transaction, seeing its own writes.
func (t *tx) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	out, err := t.r.selectSequences(ctx, t.tx, queries)
	if err != nil {
		return nil, t.fail(err)
	}
	return out, nil
}

// SetTracking moves a tracking record forward with one upsert that updates
// only if the stored position is lower. Otherwise it returns a
// *store.TrackingConflictError and the transaction is rolled back whole, even
// if fn ignores the error.
func (t *tx) SetTracking(ctx context.Context, tr store.Tracking) error {
	if t.failed != nil {
		return t.failed
	}
	var changed, stored int64
	if err := t.tx.QueryRow(ctx, t.r.q.setTracking, tr.Name, tr.Topic, tr.Partition, tr.Position).Scan(&changed, &stored); err != nil {
		return t.fail(fmt.Errorf("postgres: set tracking: %w", err))
	}
	if changed == 0 {
		return t.fail(t.trackingConflict(ctx, tr, stored))
	}
	return nil
}

// trackingConflict reports that tr did not move forward. The upsert saw the
// stored position with the snapshot it took before it waited for the row
// lock, so the position that made it fail (committed by the transaction it
// waited for) is read again by a statement of its own.
func (t *tx) trackingConflict(ctx context.Context, tr store.Tracking, seen int64) error {
	stored := seen
	if err := t.tx.QueryRow(ctx, t.r.q.tracking, tr.Name, tr.Topic, tr.Partition).Scan(&stored); err != nil {
		stored = seen
	}
	return &store.TrackingConflictError{Tracking: tr, Stored: stored}
}

// SetTrackings sends the upsert of each record in one pipelined batch (one
// round trip); the server runs them in order. The first that changes nothing
// fails the call, and the transaction, with a *store.TrackingConflictError.
func (t *tx) SetTrackings(ctx context.Context, ts []store.Tracking) error {
	if t.failed != nil {
		return t.failed
	}
	switch len(ts) {
	case 0:
		return nil
	case 1:
		return t.SetTracking(ctx, ts[0])
	}
	b := &pgx.Batch{}
	for _, tr := range ts {
		b.Queue(t.r.q.setTracking, tr.Name, tr.Topic, tr.Partition, tr.Position)
	}
	res := t.tx.SendBatch(ctx, b)
	conflicted, seen := -1, int64(0)
	for i := range ts {
		var changed, stored int64
		if err := res.QueryRow().Scan(&changed, &stored); err != nil {
			_ = res.Close()
			return t.fail(fmt.Errorf("postgres: set tracking: %w", err))
		}
		if changed == 0 && conflicted < 0 {
			conflicted, seen = i, stored
		}
	}
	if err := res.Close(); err != nil {
		return t.fail(fmt.Errorf("postgres: set tracking: %w", err))
	}
	if conflicted < 0 {
		return nil
	}
	tr := ts[conflicted]
	for _, later := range ts[conflicted+1:] {
		if later.Name == tr.Name && later.Topic == tr.Topic && later.Partition == tr.Partition {
			// A later record of the batch wrote this key in the
			// transaction: a read now would see that, not what failed.
			return t.fail(&store.TrackingConflictError{Tracking: tr, Stored: seen})
		}
	}
	return t.fail(t.trackingConflict(ctx, tr, seen))
}
