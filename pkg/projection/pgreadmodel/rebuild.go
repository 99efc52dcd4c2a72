package pgreadmodel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// A Log is the notification log a rebuild replays: the store the events were
// written to, not Kafka. Every store.ApplicationRecorder is one.
type Log interface {
	SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error)
	MaxNotificationID(ctx context.Context) (int64, error)
}

// RebuildOptions configures Rebuild.
type RebuildOptions struct {
	// PageSize is the number of notifications read, and folded into one
	// statement per type, at a time (default 1000).
	PageSize int
	// Progress, if set, is called on Rebuild's goroutine after each page:
	// done is the notification id reached, total the greatest id of the log
	// when the rebuild started (or done, if the log has grown past it). Ids
	// are not contiguous, so done/total is an estimate of the fraction done.
	Progress func(done, total int64)
	// LockTimeout bounds the wait for the tables at the swap (default 30s):
	// queries and the live projection are held for at most this long.
	LockTimeout time.Duration
	// Parked is where the live projection parks sequences (its runner's
	// target): the rebuild leaves out what the projection parked or an
	// operator skipped, and parks, in the swap's transaction, the sequences
	// whose events fail again (see projection.Replay). Default: log, if it is
	// a store.ParkRecorder. It must be a *postgres.Recorder on the read
	// model's database.
	Parked store.ParkRecorder
	// Projection is the live projection's name (default "readmodel").
	Projection string
	// IgnoreParked rebuilds as if nothing were parked, and parks nothing:
	// what does not apply is skipped.
	IgnoreParked bool
}

// RebuildStats says what a rebuild did.
type RebuildStats struct {
	Notifications int64 // notifications read
	Applied       int64 // entity events folded into the new tables
	Skipped       int64 // entity events that did not decode or fold (parked, unless IgnoreParked)
	Held          int64 // entity events left out: their sequence is parked, or they were skipped
	Parked        int64 // sequences the rebuild parked
	Last          int64 // the notification id the new tables are complete up to
}

// ErrRebuildRunning reports a rebuild of the same read model (schema and
// prefix) running elsewhere.
var ErrRebuildRunning = errors.New("pgreadmodel: a rebuild of this read model is already running")

// Rebuild replays the read model from log into shadow tables, one per type,
// and swaps them in for the live tables in one transaction, so that Get,
// List and the live projection keep working while it runs.
//
// It reads the log page by page into the shadow tables (indexed once
// filled), catching up until the log's end. Then, in one transaction, it
// locks the live tables, reads what the log gained meanwhile, drops the live
// tables and renames the shadow ones in their place. Queries and the live
// runner wait during that transaction only. Everything the live runner
// applied came through Kafka from the log, so the new tables hold all of it;
// they may be ahead of the runner, whose position guard then skips what they
// have.
//
// Parked sequences survive it: the events the live projection parked
// (opts.Projection, in opts.Parked: by default the log's store) are left out
// and stay parked, skipped positions stay skipped, and an event that does
// not decode or fold parks its sequence from there, as the live runner
// would, in the swap's transaction (so a rebuild parks again what fails
// again). The parking is read again in the swap's transaction, once the
// live tables are locked, and a sequence retried, skipped or parked
// meanwhile is rebuilt again from its events.
//
// With opts.IgnoreParked, events that do not decode or fold are skipped.
//
// Only one rebuild of a read model runs at a time (a session advisory lock); another fails with ErrRebuildRunning. If Rebuild
// fails or ctx ends, the live tables are untouched and the shadow ones are
// left for the next rebuild to replace.
func (m *ReadModel) Rebuild(ctx context.Context, log Log, mapper *events.Mapper, opts RebuildOptions) (RebuildStats, error) {
	var st RebuildStats
	if opts.PageSize <= 0 {
		opts.PageSize = 1000
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 30 * time.Second
	}
	if err := m.Migrate(ctx); err != nil {
		return st, err
	}
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return st, fmt.Errorf("pgreadmodel: rebuild: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", m.rebuildKey).Scan(&locked); err != nil {
		return st, fmt.Errorf("pgreadmodel: rebuild: lock: %w", err)
	}
	if !locked {
		return st, ErrRebuildRunning
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", m.rebuildKey); err != nil {
			// The lock would outlive the rebuild on this pooled connection.
			_ = conn.Conn().Close(uctx)
		}
	}()

	rp, err := m.replay(ctx, log, &opts)
	if err != nil {
		return st, err
	}
	for _, typ := range m.types {
		t := m.tables[typ]
		for _, s := range []string{t.dropShadow, t.createShadow} {
			if _, err := conn.Exec(ctx, s); err != nil {
				return st, fmt.Errorf("pgreadmodel: rebuild: create %s: %w", t.shadow, err)
			}
		}
	}
	total, err := log.MaxNotificationID(ctx)
	if err != nil {
		return st, fmt.Errorf("pgreadmodel: rebuild: %w", err)
	}
	var reported int64 // progress never steps back, even when a swap is retried
	progress := func() {
		reported = max(reported, st.Last)
		if opts.Progress != nil {
			opts.Progress(reported, max(total, reported))
		}
	}
	progress()
	// catchUp copies the log after st.Last into the shadow tables until it
	// reads an empty page.
	catchUp := func(ctx context.Context, q batcher) error {
		for {
			ns, err := log.SelectNotifications(ctx, st.Last, opts.PageSize)
			if err != nil {
				return fmt.Errorf("pgreadmodel: rebuild: read the log after %d: %w", st.Last, err)
			}
			if len(ns) == 0 {
				return nil
			}
			changes, held, skipped := m.fold(ns, mapper, rp)
			if err := m.upsert(ctx, q, changes, true); err != nil {
				return fmt.Errorf("pgreadmodel: rebuild: %w", err)
			}
			st.Notifications += int64(len(ns))
			st.Skipped += int64(skipped)
			st.Held += int64(held)
			for _, n := range ns {
				if m.keeps(events.EntityOf(n.Topic)) {
					st.Applied++
				}
			}
			st.Last = ns[len(ns)-1].ID
			progress()
		}
	}
	if err := catchUp(ctx, conn); err != nil {
		return st, err
	}
	for _, typ := range m.types {
		t := m.tables[typ]
		if t.indexShadow == "" {
			continue
		}
		if _, err := conn.Exec(ctx, t.indexShadow); err != nil {
			return st, fmt.Errorf("pgreadmodel: rebuild: index %s: %w", t.shadow, err)
		}
	}
	if err := catchUp(ctx, conn); err != nil { // what came while indexing
		return st, err
	}
	// The swap. Under EXCLUSIVE mode the live runner cannot write but
	// queries go on, so reading the rest of the log there holds up no query;
	// ACCESS EXCLUSIVE is taken only for the renames. If the swap cannot
	// finish within LockTimeout (the tables are busy, or the log's pool is
	// exhausted), it is rolled back, which releases everything, and tried
	// again after another catch-up.
	var swapErr error
	for attempt := range 3 {
		if attempt > 0 {
			if err := catchUp(ctx, conn); err != nil {
				return st, err
			}
		}
		saved := st
		swapErr = m.swap(ctx, conn, opts.LockTimeout, catchUp, func(ctx context.Context, tx pgx.Tx) error {
			n, err := m.refoldAndPark(ctx, tx, rp, log, mapper, opts.Parked)
			st.Parked += int64(n)
			return err
		})
		if swapErr == nil {
			break
		}
		st = saved // what the rolled-back catch-up read is read again
		if ctx.Err() != nil || conn.Conn().IsClosed() {
			// A closed connection also lost the advisory lock.
			return st, fmt.Errorf("pgreadmodel: rebuild: %w", swapErr)
		}
	}
	if swapErr != nil {
		return st, fmt.Errorf("pgreadmodel: rebuild: %w", swapErr)
	}
	st.Applied -= st.Skipped + st.Held
	progress()
	return st, nil
}

// swap locks the live tables, copies the rest of the log into the shadow
// ones and puts them in the live ones' place, in one transaction bounded by
// timeout.
func (m *ReadModel) swap(ctx context.Context, conn *pgxpool.Conn, timeout time.Duration, catchUp func(context.Context, batcher) error,
	parked func(context.Context, pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", timeout.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, m.lockSwap); err != nil {
			return fmt.Errorf("lock the live tables: %w", err)
		}
		if err := catchUp(ctx, tx); err != nil {
			return err
		}
		if err := parked(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, m.lockDDL); err != nil {
			return fmt.Errorf("lock the live tables for the swap: %w", err)
		}
		for _, typ := range m.types {
			for _, s := range m.tables[typ].swap {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("swap %s: %w", m.tables[typ].live, err)
				}
			}
		}
		return nil
	})
}

func decodeAttributes(b []byte) (map[string]json.RawMessage, error) {
	attrs := map[string]json.RawMessage{}
	if err := json.Unmarshal(b, &attrs); err != nil {
		return nil, fmt.Errorf("attributes: %w", err)
	}
	return attrs, nil
}
