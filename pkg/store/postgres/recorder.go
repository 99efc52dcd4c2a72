package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/pkg/store"
)

// Log keys.
const (
	logKeySchema    = "schema"
	logKeyMigration = "migration"
	logKeyError     = "error"
	logKeyLock      = "lock"
	logKeyChannel   = "channel"
)

const (
	ordBits = 20 // notification id = xid<<ordBits + ordinal; 1<<ordBits == store.MaxItemsPerAppend

	unlockTimeout = 5 * time.Second
)

// The recorder's interfaces.
var (
	_ store.ProcessRecorder  = (*Recorder)(nil)
	_ store.SequencesReader  = (*Recorder)(nil)
	_ store.SnapshotRecorder = (*Recorder)(nil)
	_ store.Notifier         = (*Recorder)(nil)
	_ store.SequencesReader  = (*tx)(nil)
	_ store.TrackingsSetter  = (*tx)(nil)
)

// ErrLogOrder reports an append that would put a sequence's items out of
// position order in the notification log; see LogOrderError.
var ErrLogOrder = errors.New("postgres: append would break the log's order")

// A LogOrderError reports that position Position of sequence SequenceID was
// committed by a transaction that took its transaction id after the
// transaction trying to append Position+1. Appending there would give the later
// position a smaller notification id. Nothing of the call was written and the
// transaction is still usable, but retrying in the same transaction fails again:
// retry in a new one. The error matches ErrLogOrder and store.ErrConflict.
type LogOrderError struct {
	SequenceID uuid.UUID
	Position   int64
}

func (e *LogOrderError) Error() string {
	return fmt.Sprintf("postgres: position %d of sequence %s was committed by a transaction younger than this one; retry the append in a new transaction",
		e.Position, e.SequenceID)
}

// Is reports ErrLogOrder and store.ErrConflict.
func (e *LogOrderError) Is(target error) bool {
	return target == ErrLogOrder || target == store.ErrConflict
}

// A Recorder is a store.ProcessRecorder, store.SnapshotRecorder and
// store.Notifier on PostgreSQL. It is safe for concurrent use. Close stops its
// goroutines; the pool remains the caller's.
type Recorder struct {
	pool       *pgxpool.Pool
	opts       Options
	n          names
	migrations []migration
	q          queries
	pq         parkQueries

	bg     context.Context // background goroutines; done at Close
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	// mu orders spawn and Close: no goroutine starts once Close waits.
	mu  sync.Mutex
	lis listener
}

type queries struct {
	insert, insertTx, selectAsc, selectDesc, notifications, maxID string
	selectMany, tracking, setTracking, deleteRange, findTaken     string
	insertSnapshot, latestSnapshot                                string
}

// New returns a Recorder on pool. It does no I/O unless opts.Migrate is set.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Recorder, error) {
	if pool == nil {
		return nil, errors.New("postgres: nil pool")
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	n := newNames(opts)
	ms, err := migrations(n)
	if err != nil {
		return nil, err
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	r := &Recorder{pool: pool, opts: opts, n: n, migrations: ms, q: buildQueries(n), pq: buildParkQueries(n), bg: bg, stop: stop}
	r.lis.subs = map[chan struct{}]struct{}{}
	if opts.Migrate {
		if err := r.Migrate(ctx); err != nil {
			stop()
			return nil, err
		}
	}
	return r, nil
}

// Close stops the recorder's goroutines (the LISTEN connection, lock monitors,
// releasing every lock TryLock holds), closes every Notify channel and waits.
// Later calls fail with store.ErrClosed. It does not close the pool.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed.Swap(true) {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	r.stop()
	r.wg.Wait()
	r.lis.closeAll()
	return nil
}

// spawn runs f on a goroutine that Close waits for, unless the recorder is
// closed: then it returns false and f does not run.
func (r *Recorder) spawn(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// Options returns the options in effect, defaults filled in.
func (r *Recorder) Options() Options { return r.opts }

// Pool returns the pool the recorder uses.
func (r *Recorder) Pool() *pgxpool.Pool { return r.pool }

// Channel returns the LISTEN/NOTIFY channel an append notifies.
func (r *Recorder) Channel() string { return r.n.channel }

// horizon is the smallest notification id a transaction still open, or one
// not yet begun, could write: everything below it has committed or never will.
const horizon = `(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)`

func buildQueries(n names) queries {
	r := strings.NewReplacer("EVENTS", n.Events, "SNAPSHOTS", n.Snapshots, "TRACKING", n.Tracking, "HORIZON", horizon)
	// insert: $1..$5 the items' columns, $6 their ordinals in the transaction
	// (sorted by sequence id and position, so concurrent appends lock index
	// entries in one order and cannot deadlock each other), $7 the NOTIFY
	// channel, $8 the number of items, $9 their trace contexts ('' for none;
	// a NULL array when no item has one, which unnest pads with NULLs). One
	// statement: the insert, the log-order guard (bad) and the wake-up.
	const insert = `WITH input AS (
	SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::bigint[], $9::text[])
		AS i (sequence_id, position, topic, state, codec, ord, trace_parent)
), base AS (
	SELECT pg_current_xact_id()::text::bigint << 20 AS b
), bad AS (
	-- one primary-key probe per sequence (a correlated subquery, so that no
	-- plan can turn it into a scan of the table)
	SELECT f.sequence_id, f.p - 1 AS position
	FROM (SELECT sequence_id, min(position) AS p, min(ord) AS o FROM input GROUP BY sequence_id) f
	CROSS JOIN base
	WHERE f.p > 0 AND (SELECT e.notification_id FROM EVENTS e
		WHERE e.sequence_id = f.sequence_id AND e.position = f.p - 1) > base.b + f.o
	LIMIT 1
), ins AS (
	INSERT INTO EVENTS (sequence_id, position, topic, state, codec, notification_id, trace_parent)
	SELECT i.sequence_id, i.position, i.topic, i.state, i.codec, base.b + i.ord, nullif(i.trace_parent, '')
	FROM input i CROSS JOIN base
	WHERE NOT EXISTS (SELECT FROM bad)
	ONCONFLICT
	RETURNING sequence_id, position
)
SELECT base.b, c.n, (SELECT sequence_id FROM bad), (SELECT position FROM bad), m.sequence_id, m.position,
	CASE WHEN c.n > 0 THEN pg_notify($7, '') END
FROM base
CROSS JOIN (SELECT count(*) AS n FROM ins) c
LEFT JOIN LATERAL (
	SELECT i.sequence_id, i.position FROM input i
	WHERE c.n < $8 AND NOT EXISTS (SELECT FROM ins WHERE ins.sequence_id = i.sequence_id AND ins.position = i.position)
	ORDER BY i.sequence_id, i.position LIMIT 1
) m ON true`
	return queries{
		// A taken position fails the statement whole (SQLSTATE 23505):
		// alone, its own transaction; in a Tx, its savepoint (see
		// tx.InsertEvents).
		insert: r.Replace(strings.Replace(insert, "ONCONFLICT", "", 1)),
		// In a Tx past its savepoints, an error would abort the whole
		// transaction, so a taken position is skipped, reported in m, and
		// the call's other rows are deleted: the call writes nothing and the
		// Tx stays usable.
		insertTx:    r.Replace(strings.Replace(insert, "ONCONFLICT", "ON CONFLICT (sequence_id, position) DO NOTHING", 1)),
		deleteRange: r.Replace(`DELETE FROM EVENTS WHERE notification_id BETWEEN $1 AND $2`),
		findTaken: r.Replace(`SELECT i.sequence_id, i.position
FROM unnest($1::uuid[], $2::bigint[]) AS i (sequence_id, position)
WHERE (SELECT true FROM EVENTS e WHERE e.sequence_id = i.sequence_id AND e.position = i.position)
LIMIT 1`),
		selectAsc: r.Replace(`SELECT position, topic, state, codec FROM EVENTS
WHERE sequence_id = $1 AND position > $2 AND position <= $3 ORDER BY position LIMIT $4`),
		selectDesc: r.Replace(`SELECT position, topic, state, codec FROM EVENTS
WHERE sequence_id = $1 AND position > $2 AND position <= $3 ORDER BY position DESC LIMIT $4`),
		// One index scan per sequence, in either direction: LATERAL keeps the
		// plan a nested loop over the input (never a scan of the table), and
		// of the two branches the one-time filter runs only one per sequence.
		selectMany: r.Replace(`SELECT q.sequence_id, s.position, s.topic, s.state, s.codec
FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[])
	AS q (sequence_id, after, up_to, descending, lim)
CROSS JOIN LATERAL (
	(SELECT e.position, e.topic, e.state, e.codec FROM EVENTS e
	WHERE NOT q.descending AND e.sequence_id = q.sequence_id AND e.position > q.after AND e.position <= q.up_to
	ORDER BY e.position LIMIT q.lim)
	UNION ALL
	(SELECT e.position, e.topic, e.state, e.codec FROM EVENTS e
	WHERE q.descending AND e.sequence_id = q.sequence_id AND e.position > q.after AND e.position <= q.up_to
	ORDER BY e.position DESC LIMIT q.lim)
) s`),
		// The first $2 items after $1, then only those below the horizon: the
		// same rows as applying both bounds first (items above the horizon sort
		// after all those below it), but the plan is always an ordered index
		// scan that stops after $2 rows, never a sort of the whole backlog.
		notifications: r.Replace(`SELECT notification_id, sequence_id, position, topic, state, codec, coalesce(trace_parent, '') FROM (
	SELECT notification_id, sequence_id, position, topic, state, codec, trace_parent FROM EVENTS
	WHERE notification_id > $1 ORDER BY notification_id LIMIT $2
) page
WHERE notification_id < HORIZON ORDER BY notification_id`),
		maxID:    r.Replace(`SELECT coalesce(max(notification_id), 0) FROM EVENTS WHERE notification_id < HORIZON`),
		tracking: r.Replace(`SELECT position FROM TRACKING WHERE name = $1 AND topic = $2 AND partition = $3`),
		setTracking: r.Replace(`WITH up AS (
	INSERT INTO TRACKING AS t (name, topic, partition, position) VALUES ($1, $2, $3, $4)
	ON CONFLICT (name, topic, partition) DO UPDATE SET position = EXCLUDED.position
	WHERE t.position < EXCLUDED.position
	RETURNING 1
)
SELECT (SELECT count(*) FROM up), coalesce((SELECT position FROM TRACKING WHERE name = $1 AND topic = $2 AND partition = $3), -1)`),
		insertSnapshot: r.Replace(`INSERT INTO SNAPSHOTS (sequence_id, position, topic, state, codec) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (sequence_id, position) DO NOTHING`),
		latestSnapshot: r.Replace(`SELECT position, topic, state, codec FROM SNAPSHOTS
WHERE sequence_id = $1 AND position <= $2 ORDER BY position DESC LIMIT 1`),
	}
}

// querier is what the recorder needs from a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// batch is an append's items as column arrays, sorted by sequence id and
// position, with each item's ordinal.
type batch struct {
	ids    []pgtype.UUID
	pos    []int64
	topics []string
	states [][]byte
	codecs []string
	ords   []int64
	// traces holds the items' trace contexts; nil (a NULL array) if none
	// has one.
	traces []string
	// perm[k] is the index in the caller's slice of the k-th sorted item.
	perm []int
}

// newBatch sorts items and assigns ordinals first, first+1, ...: within each
// sequence in position order (invariant 3), otherwise in the caller's order.
func newBatch(items []store.SequencedItem, first int64) *batch {
	n := len(items)
	ord := make([]int64, n) // by caller's index
	inOrder := true
	if n > 1 {
		one := true
		for i := 1; i < n && one; i++ {
			one = items[i].SequenceID == items[0].SequenceID
			inOrder = inOrder && items[i].Position > items[i-1].Position
		}
		if !one {
			inOrder = true
			last := make(map[uuid.UUID]int64, n)
			for i := range items {
				if p, ok := last[items[i].SequenceID]; ok && p > items[i].Position {
					inOrder = false
					break
				}
				last[items[i].SequenceID] = items[i].Position
			}
		}
	}
	if inOrder {
		for i := range ord {
			ord[i] = first + int64(i)
		}
	} else {
		// Hand each sequence's slots (its items' indexes) to its items in
		// position order.
		bySeq := map[uuid.UUID][]int{}
		for i := range items {
			bySeq[items[i].SequenceID] = append(bySeq[items[i].SequenceID], i)
		}
		for _, slots := range bySeq {
			byPos := slices.Clone(slots)
			slices.SortFunc(byPos, func(a, b int) int { return cmpInt64(items[a].Position, items[b].Position) })
			for k, slot := range slots {
				ord[byPos[k]] = first + int64(slot)
			}
		}
	}
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	slices.SortFunc(perm, func(a, b int) int {
		if c := bytes.Compare(items[a].SequenceID[:], items[b].SequenceID[:]); c != 0 {
			return c
		}
		return cmpInt64(items[a].Position, items[b].Position)
	})
	b := &batch{
		ids: make([]pgtype.UUID, n), pos: make([]int64, n), topics: make([]string, n),
		states: make([][]byte, n), codecs: make([]string, n), ords: make([]int64, n), perm: perm,
	}
	for k, i := range perm {
		it := &items[i]
		b.ids[k] = pgtype.UUID{Bytes: it.SequenceID, Valid: true}
		b.pos[k] = it.Position
		b.topics[k] = it.Topic
		b.states[k] = it.State
		if b.states[k] == nil {
			b.states[k] = []byte{} // state is NOT NULL; nil would be NULL
		}
		b.codecs[k] = it.Codec
		b.ords[k] = ord[i]
		if it.TraceParent != "" {
			if b.traces == nil {
				b.traces = make([]string, n)
			}
			b.traces[k] = it.TraceParent
		}
	}
	return b
}

func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// notificationIDs returns the ids of the batch's items in the caller's order.
func (b *batch) notificationIDs(base int64) []int64 {
	ids := make([]int64, len(b.ords))
	for k, i := range b.perm {
		ids[i] = base + b.ords[k]
	}
	return ids
}

// insertResult is what the insert statement reports.
type insertResult struct {
	base, inserted int64
	bad, missing   struct {
		id  pgtype.UUID
		pos *int64
	}
}

func (r *Recorder) execInsert(ctx context.Context, q querier, sql string, b *batch) (insertResult, error) {
	var res insertResult
	err := res.scan(q.QueryRow(ctx, sql, b.args(r.n.channel)...))
	return res, err
}

// args are the arguments of the insert statements.
func (b *batch) args(channel string) []any {
	return []any{b.ids, b.pos, b.topics, b.states, b.codecs, b.ords, channel, len(b.ords), b.traces}
}

// scan reads the row of an insert statement.
func (res *insertResult) scan(row pgx.Row) error {
	return row.Scan(&res.base, &res.inserted, &res.bad.id, &res.bad.pos, &res.missing.id, &res.missing.pos, nil)
}

func (res *insertResult) logOrderError() error {
	if !res.bad.id.Valid || res.bad.pos == nil {
		return nil
	}
	return &LogOrderError{SequenceID: res.bad.id.Bytes, Position: *res.bad.pos}
}

// InsertEvents appends items in one statement (one transaction) and returns
// their notification ids. See store.AggregateRecorder.
func (r *Recorder) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []int64{}, nil
	}
	b := newBatch(items, 0)
	res, err := r.execInsert(ctx, r.pool, r.q.insert, b)
	if err != nil {
		return nil, r.insertError(ctx, err, b)
	}
	if err := res.logOrderError(); err != nil {
		return nil, err
	}
	if res.inserted != int64(len(items)) {
		return nil, fmt.Errorf("postgres: insert events: %d of %d rows inserted", res.inserted, len(items))
	}
	return b.notificationIDs(res.base), nil
}

// insertError translates the error of a stand-alone insert statement.
func (r *Recorder) insertError(ctx context.Context, err error, b *batch) error {
	pe, taken := r.taken(err)
	if !taken {
		return fmt.Errorf("postgres: insert events: %w", err)
	}
	return r.conflict(ctx, r.pool, pe, b)
}

// taken reports whether err is the unique violation of a taken (sequence,
// position).
func (r *Recorder) taken(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" || pe.ConstraintName != r.n.prefix+"events_pkey" {
		return nil, false
	}
	return pe, true
}

// conflict returns the *store.ConflictError of pe, a taken position of b:
// from pe's detail, or else by asking q (whose transaction, if any, must be
// usable) which item of b is taken.
func (r *Recorder) conflict(ctx context.Context, q querier, pe *pgconn.PgError, b *batch) error {
	if ce := parseKeyDetail(pe.Detail); ce != nil {
		return ce
	}
	// The detail is missing (it can be hidden from roles without SELECT on
	// the table) or unreadable: ask which item is taken.
	var ce store.ConflictError
	var id pgtype.UUID
	qerr := q.QueryRow(ctx, r.q.findTaken, b.ids, b.pos).Scan(&id, &ce.Position)
	if qerr != nil {
		// Cannot name it better: the first item of the batch stands in.
		return &store.ConflictError{SequenceID: b.ids[0].Bytes, Position: b.pos[0]}
	}
	ce.SequenceID = id.Bytes
	return &ce
}

// keyDetailRE matches a unique violation's detail:
// Key (sequence_id, "position")=(9a7c...-..., 12) already exists.
var keyDetailRE = regexp.MustCompile(`\)=\(([0-9a-fA-F-]{36}), (\d+)\)`)

func parseKeyDetail(detail string) *store.ConflictError {
	m := keyDetailRE.FindStringSubmatch(detail)
	if m == nil {
		return nil
	}
	id, err := uuid.Parse(m[1])
	if err != nil {
		return nil
	}
	pos, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return nil
	}
	return &store.ConflictError{SequenceID: id, Position: pos}
}

// SelectEvents returns items of one sequence. See store.AggregateRecorder.
func (r *Recorder) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	return r.selectEvents(ctx, r.pool, sequenceID, q)
}

// bounds returns q's range of positions, (after, upTo].
func bounds(q store.Query) (after, upTo int64) {
	after, upTo = -1, math.MaxInt64
	if q.After != nil {
		after = *q.After
	}
	if q.UpTo != nil {
		upTo = *q.UpTo
	}
	return after, upTo
}

func (r *Recorder) selectEvents(ctx context.Context, qr querier, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	after, upTo := bounds(q)
	var limit *int64
	if q.Limit > 0 {
		l := int64(q.Limit)
		limit = &l
	}
	sql := r.q.selectAsc
	if q.Desc {
		sql = r.q.selectDesc
	}
	rows, err := qr.Query(ctx, sql, pgUUID(sequenceID), after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: select events: %w", err)
	}
	defer rows.Close()
	items := make([]store.SequencedItem, 0, min(max(q.Limit, 0), 1024))
	if q.Limit <= 0 {
		items = make([]store.SequencedItem, 0, 64)
	}
	d := newRowDecoder(rows.FieldDescriptions(), 0, 2) // position, state
	for rows.Next() {
		it := store.SequencedItem{SequenceID: sequenceID}
		ok := false
		if d.fast {
			raw := rows.RawValues()
			it.Position, ok = int8At(raw[0])
			if ok && raw[1] != nil && raw[2] != nil && raw[3] != nil {
				it.Topic, it.State, it.Codec = str(raw[1], &d.topic), d.bytes(raw[2]), str(raw[3], &d.codec)
			} else {
				ok = false
			}
		}
		if !ok {
			if err := rows.Scan(&it.Position, &it.Topic, &it.State, &it.Codec); err != nil {
				return nil, fmt.Errorf("postgres: select events: %w", err)
			}
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: select events: %w", err)
	}
	return items, nil
}

// SelectSequences returns items of many sequences in one statement (one round
// trip), each sequence read with an index scan. See store.SequencesReader.
func (r *Recorder) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	return r.selectSequences(ctx, r.pool, queries)
}

func (r *Recorder) selectSequences(ctx context.Context, qr querier, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	out := make(map[uuid.UUID][]store.SequencedItem, len(queries))
	if len(queries) == 0 {
		return out, nil
	}
	rows, err := qr.Query(ctx, r.q.selectMany, selectManyArgs(queries)...)
	if err != nil {
		return nil, fmt.Errorf("postgres: select sequences: %w", err)
	}
	defer rows.Close()
	d := newRowDecoder(rows.FieldDescriptions(), 0, 1, 3) // sequence id, position, state
	for rows.Next() {
		var it store.SequencedItem
		ok := false
		if d.fast {
			raw := rows.RawValues()
			it.Position, ok = int8At(raw[1])
			if ok && len(raw[0]) == 16 && raw[2] != nil && raw[3] != nil && raw[4] != nil {
				it.SequenceID = [16]byte(raw[0])
				it.Topic, it.State, it.Codec = str(raw[2], &d.topic), d.bytes(raw[3]), str(raw[4], &d.codec)
			} else {
				ok = false
			}
		}
		if !ok {
			var id pgtype.UUID
			if err := rows.Scan(&id, &it.Position, &it.Topic, &it.State, &it.Codec); err != nil {
				return nil, fmt.Errorf("postgres: select sequences: %w", err)
			}
			it.SequenceID = id.Bytes
		}
		out[it.SequenceID] = append(out[it.SequenceID], it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: select sequences: %w", err)
	}
	// SQL promises no order across the branches of the join: put each
	// sequence in its query's order (it almost always is already).
	for id, items := range out {
		cmp := func(a, b store.SequencedItem) int { return cmpInt64(a.Position, b.Position) }
		if queries[id].Desc {
			cmp = func(a, b store.SequencedItem) int { return cmpInt64(b.Position, a.Position) }
		}
		if !slices.IsSortedFunc(items, cmp) {
			slices.SortFunc(items, cmp)
		}
	}
	return out, nil
}

// selectManyArgs returns the arguments of the selectMany statement: the
// queries as column arrays.
func selectManyArgs(queries map[uuid.UUID]store.Query) []any {
	n := len(queries)
	ids, afters, upTos := make([]pgtype.UUID, 0, n), make([]int64, 0, n), make([]int64, 0, n)
	descs, limits := make([]bool, 0, n), make([]int64, 0, n)
	for id, q := range queries {
		after, upTo := bounds(q)
		limit := int64(math.MaxInt64)
		if q.Limit > 0 {
			limit = int64(q.Limit)
		}
		ids, afters, upTos = append(ids, pgUUID(id)), append(afters, after), append(upTos, upTo)
		descs, limits = append(descs, q.Desc), append(limits, limit)
	}
	return []any{ids, afters, upTos, descs, limits}
}

// SelectNotifications returns up to limit notifications after the given id,
// only from below the horizon no open transaction can write under. See
// store.ApplicationRecorder and the package documentation.
func (r *Recorder) SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	if limit <= 0 {
		return []store.Notification{}, nil
	}
	rows, err := r.pool.Query(ctx, r.q.notifications, after, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: select notifications: %w", err)
	}
	defer rows.Close()
	out := make([]store.Notification, 0, min(limit, 1024))
	d := newRowDecoder(rows.FieldDescriptions(), 0, 1, 2, 4) // id, sequence id, position, state
	for rows.Next() {
		var n store.Notification
		ok := false
		if d.fast {
			raw := rows.RawValues()
			var okID, okPos bool
			n.ID, okID = int8At(raw[0])
			n.Position, okPos = int8At(raw[2])
			if okID && okPos && len(raw[1]) == 16 && raw[3] != nil && raw[4] != nil && raw[5] != nil && raw[6] != nil {
				n.SequenceID = [16]byte(raw[1])
				n.Topic, n.State, n.Codec = str(raw[3], &d.topic), d.bytes(raw[4]), str(raw[5], &d.codec)
				if len(raw[6]) > 0 {
					n.TraceParent = string(raw[6])
				}
				ok = true
			}
		}
		if !ok {
			var id pgtype.UUID
			if err := rows.Scan(&n.ID, &id, &n.Position, &n.Topic, &n.State, &n.Codec, &n.TraceParent); err != nil {
				return nil, fmt.Errorf("postgres: select notifications: %w", err)
			}
			n.SequenceID = id.Bytes
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: select notifications: %w", err)
	}
	return out, nil
}

// MaxNotificationID returns the greatest id below the horizon (0 if none).
func (r *Recorder) MaxNotificationID(ctx context.Context) (int64, error) {
	if r.closed.Load() {
		return 0, store.ErrClosed
	}
	var id int64
	if err := r.pool.QueryRow(ctx, r.q.maxID).Scan(&id); err != nil {
		return 0, fmt.Errorf("postgres: max notification id: %w", err)
	}
	return id, nil
}

// Tracking returns the stored position for (name, topic, partition), or -1.
func (r *Recorder) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	if r.closed.Load() {
		return 0, store.ErrClosed
	}
	var pos int64
	err := r.pool.QueryRow(ctx, r.q.tracking, name, topic, partition).Scan(&pos)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return -1, nil
	case err != nil:
		return 0, fmt.Errorf("postgres: tracking: %w", err)
	}
	return pos, nil
}

// InsertSnapshot stores a snapshot; one already at its position is kept.
func (r *Recorder) InsertSnapshot(ctx context.Context, item store.SequencedItem) error {
	if r.closed.Load() {
		return store.ErrClosed
	}
	if err := store.ValidateItems([]store.SequencedItem{item}); err != nil {
		return err
	}
	state := item.State
	if state == nil {
		state = []byte{}
	}
	_, err := r.pool.Exec(ctx, r.q.insertSnapshot, pgUUID(item.SequenceID), item.Position, item.Topic, state, item.Codec)
	if err != nil {
		return fmt.Errorf("postgres: insert snapshot: %w", err)
	}
	return nil
}

// LatestSnapshot returns the snapshot with the greatest position ≤ upTo (any
// if upTo is negative), or store.ErrNotFound.
func (r *Recorder) LatestSnapshot(ctx context.Context, sequenceID uuid.UUID, upTo int64) (store.SequencedItem, error) {
	if r.closed.Load() {
		return store.SequencedItem{}, store.ErrClosed
	}
	if upTo < 0 {
		upTo = math.MaxInt64
	}
	it := store.SequencedItem{SequenceID: sequenceID}
	err := r.pool.QueryRow(ctx, r.q.latestSnapshot, pgUUID(sequenceID), upTo).Scan(&it.Position, &it.Topic, &it.State, &it.Codec)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.SequencedItem{}, fmt.Errorf("postgres: snapshot of %s up to %d: %w", sequenceID, upTo, store.ErrNotFound)
	case err != nil:
		return store.SequencedItem{}, fmt.Errorf("postgres: latest snapshot: %w", err)
	}
	return it, nil
}
