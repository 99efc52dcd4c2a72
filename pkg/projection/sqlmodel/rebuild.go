package sqlmodel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
)

// A Log is the notification log a rebuild replays: the store the events were
// written to. Every store.ApplicationRecorder is one.
type Log interface {
	SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error)
	MaxNotificationID(ctx context.Context) (int64, error)
}

// A Locker takes a lock across processes (the PostgreSQL recorder's TryLock):
// a nil held means another holder has it.
type Locker interface {
	TryLock(ctx context.Context, name string) (held context.Context, release func(), err error)
}

// RebuildOptions configures Rebuild.
type RebuildOptions struct {
	// PageSize is the number of notifications read, and applied in one
	// transaction, at a time (default 1000).
	PageSize int
	// Progress, if set, is called after each page with the notification id
	// reached and the log's greatest id when the rebuild started (ids are not
	// contiguous: done/total estimates the fraction done).
	Progress func(done, total int64)
	// LockTimeout bounds the wait for the live tables at the swap, on
	// PostgreSQL (default 30s).
	LockTimeout time.Duration
}

// RebuildStats says what a rebuild did.
type RebuildStats struct {
	Notifications int64 // notifications read
	Applied       int64 // events applied to the new tables
	// Skipped counts events left out: parked or skipped in the projection,
	// or that failed Apply with a permanent error or did not decode, and
	// the later events of their entities.
	Skipped int64
	// Parked counts the entities the rebuild parked: an event of theirs
	// failed, and the projection holds it and the later ones for a retry.
	Parked int64
	Last   int64 // the notification id the new tables are complete up to
}

// ErrRebuildRunning reports a rebuild of the same model running elsewhere.
var ErrRebuildRunning = errors.New("sqlmodel: a rebuild of this model is already running")

// Rebuild makes the model's tables anew from log: it creates new tables
// beside the live ones, applies every event of the model's entity types from
// the log to them, page by page, and then, in one transaction that holds
// the live projection back (queries go on, on PostgreSQL), applies what the
// log gained meanwhile, drops the live tables and renames the new ones in
// their place. The live projection goes on meanwhile: what it applied came
// from the log, so the new tables hold it too, and its position guard skips
// what they hold already. The schema recorded for the model becomes the
// current one, so Rebuild is also how a changed Schema is put in place.
//
// If Rebuild fails or ctx ends, the live tables are untouched; what it made
// is dropped by the next rebuild. Where target is a Locker, one rebuild of
// the model runs at a time; another fails with ErrRebuildRunning.
func (r *ReadModel) Rebuild(ctx context.Context, target Target, log Log, mapper *events.Mapper, opts RebuildOptions) (RebuildStats, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 1000
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 30 * time.Second
	}
	if mapper == nil {
		return RebuildStats{}, errors.New("sqlmodel: rebuild: nil mapper")
	}
	if l, ok := target.(Locker); ok {
		held, release, err := l.TryLock(ctx, "sqlmodel-rebuild:"+r.m.Name)
		if err != nil {
			return RebuildStats{}, fmt.Errorf("sqlmodel: rebuild %s: lock: %w", r.m.Name, err)
		}
		if held == nil {
			return RebuildStats{}, fmt.Errorf("%w: %s", ErrRebuildRunning, r.m.Name)
		}
		defer release()
		ctx = held
	}
	// An operator's retry or skip, or a park by the live projection, while
	// the rebuild runs leaves the new tables wrong for that entity (they
	// hold what is now parked, or lack what was retried): then the rebuild
	// starts again, from the parking as it is.
	for attempt := 1; ; attempt++ {
		st, err := r.rebuild(ctx, target, log, mapper, opts)
		if errors.Is(err, errParkingChanged) && attempt < 3 && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("sqlmodel: rebuild %s: %w", r.m.Name, err)
		}
		return st, nil
	}
}

// errParkingChanged reports a parked sequence retried, skipped or parked
// while a rebuild ran.
var errParkingChanged = errors.New("the parked entities changed while the rebuild ran; rebuild again")

// replay is what a rebuild needs of the projection's parking: see
// projection.Replay.
type replay interface {
	Keep(id uuid.UUID, pos int64) bool
	Fail(it store.SequencedItem, err error)
	Refresh(ctx context.Context) ([]uuid.UUID, error)
	Park(ctx context.Context, tx store.Tx, src projection.Source) (int, error)
}

// unparked is the replay of a target that parks nothing: an entity whose
// event fails is left out of the new tables from there on.
type unparked map[uuid.UUID]int64

func (u unparked) Keep(id uuid.UUID, pos int64) bool {
	first, ok := u[id]
	return !ok || pos < first
}

func (u unparked) Fail(it store.SequencedItem, _ error) {
	if first, ok := u[it.SequenceID]; !ok || it.Position < first {
		u[it.SequenceID] = it.Position
	}
}

func (u unparked) Refresh(context.Context) ([]uuid.UUID, error) { return nil, nil }

func (u unparked) Park(context.Context, store.Tx, projection.Source) (int, error) { return 0, nil }

func (r *ReadModel) rebuild(ctx context.Context, target Target, log Log, mapper *events.Mapper, opts RebuildOptions) (RebuildStats, error) {
	var st RebuildStats
	var rp replay = unparked{}
	if pr, ok := target.(store.ParkRecorder); ok {
		p, err := projection.NewReplay(ctx, pr, r.m.Name)
		if err != nil {
			return st, err
		}
		rp = p
	}
	src, _ := log.(projection.Source)
	if src == nil {
		src, _ = target.(projection.Source)
	}
	// The new tables: the model's statements under names no live table
	// has, made after dropping what an earlier rebuild left.
	var gen [4]byte
	_, _ = rand.Read(gen[:])
	var shadow Names
	err := target.InTx(ctx, func(tx store.Tx) error {
		c, d, err := connOf(tx)
		if err != nil {
			return err
		}
		shadow = r.names(d, "__r"+hex.EncodeToString(gen[:]))
		if _, err := r.begin(ctx, c, r.names(d, "")); err != nil {
			return err
		}
		if err := dropLeftovers(ctx, c, d, r.opts.Schema, r.m.OwnTables()); err != nil {
			return err
		}
		stmts, err := r.schema(shadow)
		if err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := c.Exec(ctx, s); err != nil {
				return fmt.Errorf("create the new tables: %s: %w", firstLine(s), err)
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	total, err := log.MaxNotificationID(ctx)
	if err != nil {
		return st, err
	}
	var pending []emission // commands of events the live projection has not applied
	var reported int64
	progress := func() {
		reported = max(reported, st.Last)
		if opts.Progress != nil {
			opts.Progress(reported, max(total, reported))
		}
	}
	progress()
	// page applies the next page of the log in tx; it reports whether the
	// page was empty.
	page := func(ctx context.Context, tx store.Tx) (bool, error) {
		ns, err := log.SelectNotifications(ctx, st.Last, opts.PageSize)
		if err != nil {
			return false, fmt.Errorf("read the log after %d: %w", st.Last, err)
		}
		if len(ns) == 0 {
			return true, nil
		}
		c, _, err := connOf(tx)
		if err != nil {
			return false, err
		}
		var items []projection.Item
		for _, n := range ns {
			if !r.entities[events.EntityOf(n.Topic)] {
				continue
			}
			if !rp.Keep(n.SequenceID, n.Position) {
				st.Skipped++
				continue
			}
			e, err := mapper.FromItem(n.SequencedItem)
			if err != nil {
				rp.Fail(n.SequencedItem, err)
				st.Skipped++
				continue
			}
			items = append(items, projection.Item{SequencedItem: n.SequencedItem, NotificationID: n.ID, Event: e})
		}
		applied, skipped, emitted, err := r.applyRebuild(ctx, c, tx, shadow, items, rp)
		if err != nil {
			return false, err
		}
		// Keep the commands of events the live projection has not applied
		// yet: it never will, once the new tables are in.
		beyond, err := r.beyondLive(ctx, c, shadow.dialect, emitted)
		if err != nil {
			return false, err
		}
		pending = append(pending, beyond...)
		st.Applied += applied
		st.Skipped += skipped
		st.Notifications += int64(len(ns))
		st.Last = ns[len(ns)-1].ID
		return false, nil
	}
	for {
		var empty bool
		if err := target.InTx(ctx, func(tx store.Tx) error {
			var err error
			empty, err = page(ctx, tx)
			return err
		}); err != nil {
			return st, err
		}
		progress()
		if empty {
			break
		}
	}
	// The swap.
	var swapErr error
	for attempt := range 3 {
		saved, savedPending := st, slices.Clone(pending)
		swapErr = target.InTx(ctx, func(tx store.Tx) error {
			return r.swap(ctx, tx, shadow, opts.LockTimeout, page, &pending, func(tx store.Tx) error {
				// The live projection is held back: what the parking is now
				// is what it will be when the tables are in.
				changed, err := rp.Refresh(ctx)
				if err != nil {
					return err
				}
				if len(changed) > 0 {
					return fmt.Errorf("%w (%d entities, %s first)", errParkingChanged, len(changed), changed[0])
				}
				n, err := rp.Park(ctx, tx, src)
				st.Parked = int64(n)
				return err
			})
		})
		if swapErr == nil || errors.Is(swapErr, errParkingChanged) {
			break
		}
		st, pending = saved, savedPending
		if ctx.Err() != nil || attempt == 2 {
			break
		}
	}
	if swapErr != nil {
		return st, swapErr
	}
	progress()
	return st, nil
}

// applyRebuild applies items to the new tables. If Apply fails with a
// permanent error, the items are applied again one at a time, and an entity
// whose event fails is left out from there on (and parked at the swap).
func (r *ReadModel) applyRebuild(ctx context.Context, c Conn, tx store.Tx, n Names, items []projection.Item, rp replay) (applied, skipped int64, emitted []emission, err error) {
	if len(items) == 0 {
		return 0, 0, nil, nil
	}
	sp := savepoint{c}
	if err := sp.begin(ctx); err != nil {
		return 0, 0, nil, err
	}
	emitted, err = r.apply(ctx, c, tx, n, true, items)
	if err == nil {
		return int64(len(items)), 0, emitted, sp.release(ctx)
	}
	if !projection.IsPermanent(err) {
		return 0, 0, nil, err
	}
	if err := sp.rollback(ctx); err != nil {
		return 0, 0, nil, err
	}
	// One event at a time, each in a savepoint of its own.
	emitted = nil
	for _, it := range items {
		if !rp.Keep(it.SequenceID, it.Position) {
			skipped++
			continue
		}
		if err := sp.begin(ctx); err != nil {
			return 0, 0, nil, err
		}
		e, err := r.apply(ctx, c, tx, n, true, []projection.Item{it})
		if err != nil {
			if !projection.IsPermanent(err) {
				return 0, 0, nil, err
			}
			if err := sp.rollback(ctx); err != nil {
				return 0, 0, nil, err
			}
			rp.Fail(it.SequencedItem, err)
			skipped++
			continue
		}
		if err := sp.release(ctx); err != nil {
			return 0, 0, nil, err
		}
		emitted = append(emitted, e...)
		applied++
	}
	return applied, skipped, emitted, nil
}

// beyondLive returns the emissions whose cause the live projection has not
// applied: their commands it will not send, as its position guard skips
// what the new tables hold.
func (r *ReadModel) beyondLive(ctx context.Context, c Conn, d Dialect, emitted []emission) ([]emission, error) {
	if len(emitted) == 0 {
		return nil, nil
	}
	var ids []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, e := range emitted {
		if !seen[e.cause.id] {
			seen[e.cause.id] = true
			ids = append(ids, e.cause.id)
		}
	}
	live, err := lastPositions(ctx, c, r.positions(r.names(d, "")), d, ids)
	if err != nil {
		return nil, err
	}
	var out []emission
	for _, e := range emitted {
		if p, ok := live[e.cause.id]; !ok || e.cause.pos > p {
			out = append(out, e)
		}
	}
	return out, nil
}

// savepoint wraps statements that may fail without aborting the
// transaction.
type savepoint struct{ c Conn }

func (s savepoint) begin(ctx context.Context) error {
	_, err := s.c.Exec(ctx, "SAVEPOINT sqlmodel_apply")
	return err
}

func (s savepoint) release(ctx context.Context) error {
	_, err := s.c.Exec(ctx, "RELEASE SAVEPOINT sqlmodel_apply")
	return err
}

func (s savepoint) rollback(ctx context.Context) error {
	if _, err := s.c.Exec(ctx, "ROLLBACK TO SAVEPOINT sqlmodel_apply"); err != nil {
		return err
	}
	return s.release(ctx)
}

// swap holds the live projection back, applies the rest of the log to the
// new tables and puts them in the live ones' place.
func (r *ReadModel) swap(ctx context.Context, tx store.Tx, shadow Names, timeout time.Duration, page func(context.Context, store.Tx) (bool, error), pending *[]emission, park func(store.Tx) error) error {
	c, d, err := connOf(tx)
	if err != nil {
		return err
	}
	live := r.names(d, "")
	tables := r.m.Tables
	if d == Postgres {
		if _, err := c.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", timeout.Milliseconds())); err != nil {
			return err
		}
		// EXCLUSIVE stops the live projection's writes but not queries. The
		// positions table first: a writer locks it before anything else.
		for _, t := range append([]string{r.positions(live)}, liveTables(live, tables)...) {
			if _, err := c.Exec(ctx, "LOCK TABLE "+t+" IN EXCLUSIVE MODE"); err != nil {
				return fmt.Errorf("lock the live tables: %w", err)
			}
		}
	}
	for {
		empty, err := page(ctx, tx)
		if err != nil {
			return err
		}
		if empty {
			break
		}
	}
	if err := park(tx); err != nil {
		return err
	}
	// The live projection is held back: what it has not applied of the
	// pending commands' causes it never will. Send those commands (the
	// outbox keeps each id once, should it have sent some).
	send, err := r.beyondLive(ctx, c, d, *pending)
	if err != nil {
		return err
	}
	if err := storeCommands(ctx, tx, send); err != nil {
		return err
	}
	if _, err := r.begin(ctx, c, live); err != nil {
		return err
	}
	pairs := [][2]string{{r.m.Name + "__positions", r.m.Name + "__positions" + shadow.suffix}}
	for _, t := range tables {
		pairs = append(pairs, [2]string{t, t + shadow.suffix})
	}
	for _, p := range pairs {
		if _, err := c.Exec(ctx, "DROP TABLE IF EXISTS "+live.qualify(p[0])); err != nil {
			return fmt.Errorf("drop %s: %w", p[0], err)
		}
		if _, err := c.Exec(ctx, "ALTER TABLE "+live.qualify(p[1])+" RENAME TO "+quote(p[0])); err != nil {
			return fmt.Errorf("rename %s to %s: %w", p[1], p[0], err)
		}
	}
	if _, err := c.Exec(ctx, "DELETE FROM "+r.meta(live)+" WHERE name = $1", r.m.Name); err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "INSERT INTO "+r.meta(live)+" (name, fingerprint) VALUES ($1, $2)", r.m.Name, r.fingerprint); err != nil {
		return err
	}
	return nil
}

func liveTables(n Names, tables []string) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = n.qualify(t)
	}
	return out
}

func quote(s string) string { return `"` + s + `"` }

// dropLeftovers drops the tables an unfinished rebuild of the model made:
// those named like one of tables with a "__r" suffix.
func dropLeftovers(ctx context.Context, c Conn, d Dialect, schema string, tables []string) error {
	var q string
	var args []any
	if d == Postgres {
		q = "SELECT tablename FROM pg_tables WHERE schemaname = $1"
		args = []any{schema}
	} else {
		q = "SELECT name FROM sqlite_master WHERE type = 'table'"
	}
	rows, err := c.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	var drop []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		for _, t := range tables {
			if len(name) == len(t)+11 && name[:len(t)+3] == t+"__r" {
				drop = append(drop, name)
			}
		}
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	n := Names{dialect: d, schema: schema}
	for _, name := range drop {
		if _, err := c.Exec(ctx, "DROP TABLE IF EXISTS "+n.qualify(name)); err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
	}
	return nil
}
