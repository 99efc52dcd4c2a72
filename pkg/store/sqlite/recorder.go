package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// writeTx runs fn in a write transaction (BEGIN IMMEDIATE, so it holds the
// database's write lock from the start) and commits if fn returns nil. Errors
// from fn are returned as they are.
func (r *Recorder) writeTx(ctx context.Context, fn func(conn *sql.Conn) error) error {
	return r.writeConn(ctx, func(conn *sql.Conn) error { return r.inTx(ctx, conn, fn) })
}

// writeConn runs fn with a write connection, once no other write of this
// Recorder runs.
func (r *Recorder) writeConn(ctx context.Context, fn func(conn *sql.Conn) error) error {
	select {
	case r.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.wsem }()
	if r.closed.Load() {
		return store.ErrClosed
	}
	conn, err := r.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", describe(ctx, err))
	}
	defer conn.Close()
	return fn(conn)
}

func (r *Recorder) inTx(ctx context.Context, conn *sql.Conn, fn func(conn *sql.Conn) error) error {
	err := retryBusy(ctx, func() error {
		_, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE")
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", describe(ctx, err))
	}

	committed := false
	defer func() {
		if !committed {
			// Also on panic: the connection goes back to the pool clean.
			r.rollback(ctx, conn)
		}
	}()

	if err := fn(conn); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// Decide before COMMIT, so that an error always means "not
		// committed": an interrupted COMMIT would leave that unclear.
		return err
	}
	err = retryBusy(ctx, func() error {
		// Only a rollback-journal database, reached through New, can find
		// COMMIT busy (readers still hold the file); the transaction stays
		// open and COMMIT may be retried.
		_, err := conn.ExecContext(context.WithoutCancel(ctx), "COMMIT")
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: commit: %w", describe(ctx, err))
	}
	committed = true
	return nil
}

// rollback ends the transaction on conn. If that fails, the connection is
// discarded rather than returned to the pool with a transaction open.
func (r *Recorder) rollback(ctx context.Context, conn *sql.Conn) {
	_, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	if err == nil || strings.Contains(err.Error(), "no transaction is active") {
		// SQLite rolls a transaction back by itself after some errors, an
		// interrupted write among them.
		return
	}
	r.log.Error("sqlite: rollback failed; discarding the connection", slogErr, err)
	conn.Raw(func(any) error { return driver.ErrBadConn })
}

const slogErr = "err"

// InsertEvents implements store.AggregateRecorder. The items are appended in
// one transaction; the returned ids are their notification ids, in item order.
func (r *Recorder) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	if err := r.usable(); err != nil {
		return nil, err
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []int64{}, nil
	}
	var ids []int64
	err := r.writeTx(ctx, func(conn *sql.Conn) error {
		var err error
		ids, err = insertEvents(ctx, conn, items)
		return err
	})
	if err != nil {
		return nil, err
	}
	r.notifier.broadcast()
	return ids, nil
}

const insertEventSQL = `INSERT INTO events (sequence_id, position, topic, state, codec, trace_parent) VALUES (?, ?, ?, ?, ?, ?)`

// insertEvents inserts validated items on conn, inside a transaction, and
// returns their ids. On error some items may be inserted: the caller rolls back.
func insertEvents(ctx context.Context, conn *sql.Conn, items []store.SequencedItem) ([]int64, error) {
	stmt, err := conn.PrepareContext(ctx, insertEventSQL)
	if err != nil {
		return nil, fmt.Errorf("sqlite: insert events: %w", describe(ctx, err))
	}
	defer stmt.Close()
	ids := make([]int64, len(items))
	order := logOrder(items)
	for slot := range items {
		i := slot
		if order != nil {
			i = order[slot]
		}
		it := &items[i]
		res, err := stmt.ExecContext(ctx, it.SequenceID[:], it.Position, it.Topic, blob(it.State), it.Codec, nullable(it.TraceParent))
		if err != nil {
			if isUnique(err) {
				return nil, &store.ConflictError{SequenceID: it.SequenceID, Position: it.Position}
			}
			return nil, fmt.Errorf("sqlite: insert events: %w", describe(ctx, err))
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return nil, fmt.Errorf("sqlite: insert events: %w", err)
		}
	}
	return ids, nil
}

// logOrder returns the order in which to insert items so that the items of
// each sequence enter the log in position order (invariant 3), or nil if the
// batch order already does. Each sequence keeps the slots it has in the batch;
// its items are sorted over those slots.
func logOrder(items []store.SequencedItem) []int {
	if len(items) < 2 {
		return nil
	}
	last := make(map[uuid.UUID]int64, 1)
	sorted := true
	for i := range items {
		if p, ok := last[items[i].SequenceID]; ok && p > items[i].Position {
			sorted = false
			break
		}
		last[items[i].SequenceID] = items[i].Position
	}
	if sorted {
		return nil
	}
	slots := make(map[uuid.UUID][]int)
	for i := range items {
		slots[items[i].SequenceID] = append(slots[items[i].SequenceID], i)
	}
	order := make([]int, len(items))
	for _, s := range slots {
		byPos := slices.Clone(s)
		slices.SortFunc(byPos, func(a, b int) int { return cmp.Compare(items[a].Position, items[b].Position) })
		for k, slot := range s {
			order[slot] = byPos[k]
		}
	}
	return order
}

// blob returns b, or an empty slice if b is nil: state columns are NOT NULL.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// nullable returns s, or NULL for an empty s (a column that is NULL when
// there is nothing to keep, such as trace_parent).
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// queryer is what reads need: a pool, or the connection of a transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// read runs a query on the read pool, retrying while the database is busy.
func (r *Recorder) read(ctx context.Context, what string, fn func(q queryer) error) error {
	if err := r.usable(); err != nil {
		return err
	}
	err := retryBusy(ctx, func() error { return fn(r.reads) })
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, describe(ctx, err))
	}
	return nil
}

// SelectEvents implements store.AggregateRecorder.
func (r *Recorder) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	var items []store.SequencedItem
	err := r.read(ctx, "select events", func(db queryer) error {
		var err error
		items, err = selectEvents(ctx, db, sequenceID, q)
		return err
	})
	return items, err
}

// The optional interfaces of the recorder and its transactions.
var (
	_ store.SequencesReader = (*Recorder)(nil)
	_ store.SequencesReader = (*Tx)(nil)
	_ store.TrackingsSetter = (*Tx)(nil)
)

// SelectSequences implements store.SequencesReader with one query per
// sequence: SQLite runs in the process, so there are no round trips to save.
func (r *Recorder) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	var out map[uuid.UUID][]store.SequencedItem
	err := r.read(ctx, "select sequences", func(db queryer) error {
		var err error
		out, err = selectSequences(ctx, db, queries)
		return err
	})
	return out, err
}

func selectSequences(ctx context.Context, db queryer, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	out := make(map[uuid.UUID][]store.SequencedItem, len(queries))
	for id, q := range queries {
		items, err := selectEvents(ctx, db, id, q)
		if err != nil {
			return nil, err
		}
		if len(items) > 0 {
			out[id] = items
		}
	}
	return out, nil
}

func selectEvents(ctx context.Context, db queryer, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	var b strings.Builder
	b.WriteString(`SELECT position, topic, state, codec FROM events WHERE sequence_id = ?`)
	args := []any{sequenceID[:]}
	if q.After != nil {
		b.WriteString(` AND position > ?`)
		args = append(args, *q.After)
	}
	if q.UpTo != nil {
		b.WriteString(` AND position <= ?`)
		args = append(args, *q.UpTo)
	}
	if q.Desc {
		b.WriteString(` ORDER BY position DESC`)
	} else {
		b.WriteString(` ORDER BY position`)
	}
	if q.Limit > 0 {
		b.WriteString(` LIMIT ?`)
		args = append(args, q.Limit)
	}
	rows, err := db.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	items := []store.SequencedItem{}
	for rows.Next() {
		it := store.SequencedItem{SequenceID: sequenceID}
		if err := rows.Scan(&it.Position, &it.Topic, &it.State, &it.Codec); err != nil {
			return nil, err
		}
		if len(it.State) == 0 {
			it.State = nil
		}
		items = append(items, it)
	}
	return items, rows.Err()
}

// SelectNotifications implements store.ApplicationRecorder. SQLite admits
// one writer at a time and a transaction's ids are greater than every id
// committed before it, so ids become visible in order: every row a reader
// sees is preceded only by rows it can also see.
//
// A limit of zero or less means no limit, as with the memory recorder.
func (r *Recorder) SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	capacity := min(limit, 1024)
	if limit <= 0 {
		limit, capacity = -1, 1024 // SQLite: a negative LIMIT is none
	}
	var ns []store.Notification
	err := r.read(ctx, "select notifications", func(db queryer) error {
		rows, err := db.QueryContext(ctx,
			`SELECT id, sequence_id, position, topic, state, codec, COALESCE(trace_parent, '') FROM events WHERE id > ? ORDER BY id LIMIT ?`,
			after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		ns = make([]store.Notification, 0, capacity)
		var seq []byte
		for rows.Next() {
			var n store.Notification
			if err := rows.Scan(&n.ID, &seq, &n.Position, &n.Topic, &n.State, &n.Codec, &n.TraceParent); err != nil {
				return err
			}
			if n.SequenceID, err = uuid.FromBytes(seq); err != nil {
				return fmt.Errorf("notification %d: sequence id: %w", n.ID, err)
			}
			if len(n.State) == 0 {
				n.State = nil
			}
			ns = append(ns, n)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// MaxNotificationID implements store.ApplicationRecorder.
func (r *Recorder) MaxNotificationID(ctx context.Context) (int64, error) {
	var id int64
	err := r.read(ctx, "max notification id", func(db queryer) error {
		return queryRow(ctx, db, `SELECT COALESCE(MAX(id), 0) FROM events`, nil, &id)
	})
	return id, err
}

// Tracking implements store.ProcessRecorder.
func (r *Recorder) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	pos := int64(-1)
	err := r.read(ctx, "tracking", func(db queryer) error {
		return tracking(ctx, db, name, topic, partition, &pos)
	})
	return pos, err
}

// tracking stores in pos the position stored for the key, if there is one.
func tracking(ctx context.Context, db queryer, name, topic string, partition int32, pos *int64) error {
	err := queryRow(ctx, db,
		`SELECT position FROM tracking WHERE name = ? AND topic = ? AND partition = ?`,
		[]any{name, topic, partition}, pos)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	return err
}

// queryRow scans the one row of a query into dest; sql.ErrNoRows if none.
func queryRow(ctx context.Context, db queryer, query string, args []any, dest ...any) error {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// InTx implements store.ProcessRecorder. fn runs while the Recorder holds
// the database's write lock, so it should be short, and it must use the Tx it
// is given: a write through the Recorder itself waits for fn to end, which
// never happens. Reads through the Recorder see the state before the
// transaction (except on an in-memory database, where they wait too).
//
// If SetTracking reports a conflict, InTx rolls back and returns that
// conflict even if fn returns nil.
func (r *Recorder) InTx(ctx context.Context, fn func(store.Tx) error) error {
	if err := r.usable(); err != nil {
		return err
	}
	var tx *Tx
	err := r.writeTx(ctx, func(conn *sql.Conn) error {
		tx = &Tx{conn: conn}
		defer func() { tx.done = true }()
		if err := fn(tx); err != nil {
			return err
		}
		return tx.failed
	})
	if err != nil {
		return err
	}
	if tx.inserted {
		r.notifier.broadcast()
	}
	return nil
}

// InsertSnapshot implements store.SnapshotRecorder.
func (r *Recorder) InsertSnapshot(ctx context.Context, item store.SequencedItem) error {
	if err := r.usable(); err != nil {
		return err
	}
	if err := store.ValidateItems([]store.SequencedItem{item}); err != nil {
		return err
	}
	return r.writeTx(ctx, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx,
			`INSERT INTO snapshots (sequence_id, position, topic, state, codec) VALUES (?, ?, ?, ?, ?)
			 ON CONFLICT (sequence_id, position) DO NOTHING`,
			item.SequenceID[:], item.Position, item.Topic, blob(item.State), item.Codec)
		if err != nil {
			return fmt.Errorf("sqlite: insert snapshot: %w", describe(ctx, err))
		}
		return nil
	})
}

// LatestSnapshot implements store.SnapshotRecorder.
func (r *Recorder) LatestSnapshot(ctx context.Context, sequenceID uuid.UUID, upTo int64) (store.SequencedItem, error) {
	it := store.SequencedItem{SequenceID: sequenceID}
	err := r.read(ctx, "latest snapshot", func(db queryer) error {
		query := `SELECT position, topic, state, codec FROM snapshots WHERE sequence_id = ? ORDER BY position DESC LIMIT 1`
		args := []any{sequenceID[:]}
		if upTo >= 0 {
			query = `SELECT position, topic, state, codec FROM snapshots WHERE sequence_id = ? AND position <= ? ORDER BY position DESC LIMIT 1`
			args = append(args, upTo)
		}
		return queryRow(ctx, db, query, args, &it.Position, &it.Topic, &it.State, &it.Codec)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return store.SequencedItem{}, fmt.Errorf("%w: no snapshot of %s", store.ErrNotFound, sequenceID)
	}
	if err != nil {
		return store.SequencedItem{}, err
	}
	if len(it.State) == 0 {
		it.State = nil
	}
	return it, nil
}
