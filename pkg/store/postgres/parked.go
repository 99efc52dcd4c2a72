package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/eventlog/eventlog/pkg/store"
)

var (
	_ store.ParkRecorder   = (*Recorder)(nil)
	_ store.ParkTx         = (*tx)(nil)
	_ store.TrackingParkTx = (*tx)(nil)
)

const parkedColumns = `sequence_id, entity, first_pos, last_pos, event_count, reason, parked_at, updated_at, retries, skipped::text`

const parkedEventColumns = `sequence_id, position, topic, state, codec, notification_id, record_topic, record_partition, record_offset, parked_at`

// parkQueries are the statements of this file, with the store's names.
type parkQueries struct {
	lock, remove, put, insertEvents, undoEvent, take, action string
	list, events, actions, count                             string
}

func buildParkQueries(n names) parkQueries {
	r := strings.NewReplacer("PARKED_EVENTS", n.ParkedEvents, "PARK_ACTIONS", n.ParkActions, "PARKED", n.Parked)
	return parkQueries{
		lock: r.Replace(`SELECT p.` + strings.ReplaceAll(parkedColumns, ", ", ", p.") + `
FROM unnest($2::uuid[]) WITH ORDINALITY AS u(id, n) JOIN PARKED p ON p.name = $1 AND p.sequence_id = u.id
ORDER BY u.n FOR UPDATE OF p`),
		remove: r.Replace(`DELETE FROM PARKED WHERE name = $1 AND sequence_id = $2`),
		put: r.Replace(`INSERT INTO PARKED AS p (name, sequence_id, entity, first_pos, last_pos, event_count, reason, parked_at, updated_at, retries, skipped)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb)
ON CONFLICT (name, sequence_id) DO UPDATE SET entity = excluded.entity, first_pos = excluded.first_pos, last_pos = excluded.last_pos,
	event_count = excluded.event_count, reason = excluded.reason, parked_at = excluded.parked_at, updated_at = excluded.updated_at,
	retries = excluded.retries, skipped = excluded.skipped`),
		insertEvents: r.Replace(`INSERT INTO PARKED_EVENTS (name, ` + parkedEventColumns + `)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::text[], $5::bytea[], $6::text[], $7::bigint[], $8::text[], $9::integer[], $10::bigint[], $11::timestamptz[])
ON CONFLICT (name, sequence_id, position) DO NOTHING
RETURNING name, sequence_id, position`),
		undoEvent: r.Replace(`DELETE FROM PARKED_EVENTS WHERE name = $1 AND sequence_id = $2 AND position = $3`),
		take:      r.Replace(`DELETE FROM PARKED_EVENTS WHERE name = $1 AND sequence_id = $2 RETURNING ` + parkedEventColumns),
		action: r.Replace(`INSERT INTO PARK_ACTIONS (name, sequence_id, entity, action, from_pos, to_pos, event_count, reason, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`),
		list: r.Replace(`SELECT name, ` + parkedColumns + ` FROM PARKED
WHERE ($1::text = '' OR name = $1::text) AND ($2::uuid IS NULL OR sequence_id = $2::uuid) AND ($3::boolean OR event_count > 0)
	AND (name, sequence_id) > ($4::text, $5::uuid)
ORDER BY name, sequence_id LIMIT $6`),
		events: r.Replace(`SELECT ` + parkedEventColumns + ` FROM PARKED_EVENTS
WHERE name = $1 AND sequence_id = $2 AND position > $3 ORDER BY position LIMIT $4`),
		actions: r.Replace(`SELECT sequence_id, entity, action, from_pos, to_pos, event_count, reason, at FROM PARK_ACTIONS
WHERE name = $1::text AND ($2::uuid IS NULL OR sequence_id = $2::uuid) ORDER BY id LIMIT $3`),
		count: r.Replace(`SELECT name, count(*), sum(event_count)::bigint FROM PARKED WHERE event_count > 0 GROUP BY name ORDER BY name`),
	}
}

// nullUUID is id, or NULL for uuid.Nil.
func nullUUID(id uuid.UUID) pgtype.UUID {
	return pgtype.UUID{Bytes: id, Valid: id != uuid.Nil}
}

// limitArg is a LIMIT argument: NULL (no limit) unless n is positive.
func limitArg(n int) *int64 {
	if n <= 0 {
		return nil
	}
	l := int64(n)
	return &l
}

func scanParked(rows pgx.Rows, name string) ([]store.ParkedSequence, error) {
	defer rows.Close()
	out := []store.ParkedSequence{}
	for rows.Next() {
		s := store.ParkedSequence{Name: name}
		var id pgtype.UUID
		var skipped string
		var rowName *string
		dest := []any{&id, &s.Entity, &s.First, &s.Last, &s.Count, &s.Reason, &s.ParkedAt, &s.UpdatedAt, &s.Retries, &skipped}
		if name == "" {
			dest = append([]any{&rowName}, dest...)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		if rowName != nil {
			s.Name = *rowName
		}
		s.SequenceID = id.Bytes
		if err := json.Unmarshal([]byte(skipped), &s.Skipped); err != nil {
			return nil, fmt.Errorf("skipped positions of %s: %w", s.SequenceID, err)
		}
		if len(s.Skipped) == 0 {
			s.Skipped = nil
		}
		s.ParkedAt, s.UpdatedAt = s.ParkedAt.UTC(), s.UpdatedAt.UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}

func scanParkedEvents(rows pgx.Rows, name string) ([]store.ParkedEvent, error) {
	defer rows.Close()
	out := []store.ParkedEvent{}
	for rows.Next() {
		e := store.ParkedEvent{Name: name}
		var id pgtype.UUID
		if err := rows.Scan(&id, &e.Position, &e.Topic, &e.State, &e.Codec, &e.NotificationID,
			&e.RecordTopic, &e.RecordPartition, &e.RecordOffset, &e.ParkedAt); err != nil {
			return nil, err
		}
		e.SequenceID, e.ParkedAt = id.Bytes, e.ParkedAt.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// ParkedSequences implements store.ParkTx: one statement, the rows locked
// FOR UPDATE in sequence id order (ids are joined in the order given, and
// the runner gives them sorted), so that two transactions cannot deadlock
// on them.
func (t *tx) ParkedSequences(ctx context.Context, name string, ids []uuid.UUID) (map[uuid.UUID]store.ParkedSequence, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	out := map[uuid.UUID]store.ParkedSequence{}
	if len(ids) == 0 {
		return out, nil
	}
	arg := make([]pgtype.UUID, len(ids))
	for i, id := range ids {
		arg[i] = pgUUID(id)
	}
	rows, err := t.tx.Query(ctx, t.r.pq.lock, name, arg)
	if err != nil {
		return nil, t.fail(fmt.Errorf("postgres: parked sequences: %w", err))
	}
	got, err := scanParked(rows, name)
	if err != nil {
		return nil, t.fail(fmt.Errorf("postgres: parked sequences: %w", err))
	}
	for _, s := range got {
		out[s.SequenceID] = s
	}
	return out, nil
}

// SetTrackingsParked implements store.TrackingParkTx: the tracking upserts
// and the locking read of the parked rows in one pipelined batch, which the
// server runs in order.
func (t *tx) SetTrackingsParked(ctx context.Context, ts []store.Tracking, name string, ids []uuid.UUID) (map[uuid.UUID]store.ParkedSequence, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	if len(ids) == 0 {
		return map[uuid.UUID]store.ParkedSequence{}, t.SetTrackings(ctx, ts)
	}
	arg := make([]pgtype.UUID, len(ids))
	for i, id := range ids {
		arg[i] = pgUUID(id)
	}
	b := &pgx.Batch{}
	for _, tr := range ts {
		b.Queue(t.r.q.setTracking, tr.Name, tr.Topic, tr.Partition, tr.Position)
	}
	b.Queue(t.r.pq.lock, name, arg)
	res := t.tx.SendBatch(ctx, b)
	conflicted, seen := -1, int64(0)
	for i := range ts {
		var changed, stored int64
		if err := res.QueryRow().Scan(&changed, &stored); err != nil {
			_ = res.Close()
			return nil, t.fail(fmt.Errorf("postgres: set tracking: %w", err))
		}
		if changed == 0 && conflicted < 0 {
			conflicted, seen = i, stored
		}
	}
	rows, err := res.Query()
	var got []store.ParkedSequence
	if err == nil {
		got, err = scanParked(rows, name)
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, t.fail(fmt.Errorf("postgres: parked sequences: %w", err))
	}
	if conflicted >= 0 {
		tr := ts[conflicted]
		for _, later := range ts[conflicted+1:] {
			if later.Name == tr.Name && later.Topic == tr.Topic && later.Partition == tr.Partition {
				return nil, t.fail(&store.TrackingConflictError{Tracking: tr, Stored: seen})
			}
		}
		return nil, t.fail(t.trackingConflict(ctx, tr, seen))
	}
	out := make(map[uuid.UUID]store.ParkedSequence, len(got))
	for _, s := range got {
		out[s.SequenceID] = s
	}
	return out, nil
}

// PutParkedSequence implements store.ParkTx.
func (t *tx) PutParkedSequence(ctx context.Context, s store.ParkedSequence) error {
	if t.failed != nil {
		return t.failed
	}
	if err := store.ValidateParkedSequence(s); err != nil {
		return err
	}
	if s.Count == 0 && len(s.Skipped) == 0 {
		if _, err := t.tx.Exec(ctx, t.r.pq.remove, s.Name, pgUUID(s.SequenceID)); err != nil {
			return t.fail(fmt.Errorf("postgres: delete parked sequence: %w", err))
		}
		return nil
	}
	skipped, err := json.Marshal(nonNil(s.Skipped))
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(ctx, t.r.pq.put,
		s.Name, pgUUID(s.SequenceID), s.Entity, s.First, s.Last, s.Count, s.Reason, s.ParkedAt, s.UpdatedAt, s.Retries, string(skipped))
	if err != nil {
		return t.fail(fmt.Errorf("postgres: put parked sequence: %w", err))
	}
	return nil
}

func nonNil(r []store.PositionRange) []store.PositionRange {
	if r == nil {
		return []store.PositionRange{}
	}
	return r
}

// ParkEvents implements store.ParkTx in one statement. Rows already there
// are left alone; if any was, the rows this call inserted are deleted again
// and it fails with a *store.ConflictError, leaving the transaction usable.
func (t *tx) ParkEvents(ctx context.Context, evs []store.ParkedEvent) error {
	if t.failed != nil {
		return t.failed
	}
	if err := store.ValidateParkedEvents(evs); err != nil {
		return err
	}
	if len(evs) == 0 {
		return nil
	}
	n := len(evs)
	var (
		names, topics, codecs, rtopics = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		ids                            = make([]pgtype.UUID, n)
		pos, nids, roffs               = make([]int64, n), make([]int64, n), make([]int64, n)
		states                         = make([][]byte, n)
		rparts                         = make([]int32, n)
		ats                            = make([]pgtype.Timestamptz, n)
	)
	for i, e := range evs {
		names[i], ids[i], pos[i], topics[i], states[i], codecs[i] = e.Name, pgUUID(e.SequenceID), e.Position, e.Topic, e.State, e.Codec
		if states[i] == nil {
			states[i] = []byte{}
		}
		nids[i], rtopics[i], rparts[i], roffs[i] = e.NotificationID, e.RecordTopic, e.RecordPartition, e.RecordOffset
		ats[i] = pgtype.Timestamptz{Time: e.ParkedAt, Valid: true}
	}
	rows, err := t.tx.Query(ctx, t.r.pq.insertEvents, names, ids, pos, topics, states, codecs, nids, rtopics, rparts, roffs, ats)
	if err != nil {
		return t.fail(fmt.Errorf("postgres: park events: %w", err))
	}
	type key struct {
		name string
		id   uuid.UUID
		pos  int64
	}
	inserted := map[key]bool{}
	var (
		name string
		id   pgtype.UUID
		p    int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &id, &p}, func() error {
		inserted[key{name, id.Bytes, p}] = true
		return nil
	})
	if err != nil {
		return t.fail(fmt.Errorf("postgres: park events: %w", err))
	}
	if len(inserted) == n {
		return nil
	}
	var taken *store.ConflictError
	for _, e := range evs {
		if !inserted[key{e.Name, e.SequenceID, e.Position}] {
			taken = &store.ConflictError{SequenceID: e.SequenceID, Position: e.Position}
			break
		}
	}
	for k := range inserted {
		if _, err := t.tx.Exec(ctx, t.r.pq.undoEvent, k.name, pgUUID(k.id), k.pos); err != nil {
			return t.fail(fmt.Errorf("postgres: undo a partial park: %w", err))
		}
	}
	return taken
}

// TakeParkedEvents implements store.ParkTx.
func (t *tx) TakeParkedEvents(ctx context.Context, name string, seq uuid.UUID) ([]store.ParkedEvent, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	rows, err := t.tx.Query(ctx, t.r.pq.take, name, pgUUID(seq))
	if err != nil {
		return nil, t.fail(fmt.Errorf("postgres: take parked events: %w", err))
	}
	out, err := scanParkedEvents(rows, name)
	if err != nil {
		return nil, t.fail(fmt.Errorf("postgres: take parked events: %w", err))
	}
	slices.SortFunc(out, func(a, b store.ParkedEvent) int { return cmp.Compare(a.Position, b.Position) })
	return out, nil
}

// RecordParkAction implements store.ParkTx.
func (t *tx) RecordParkAction(ctx context.Context, a store.ParkAction) error {
	if t.failed != nil {
		return t.failed
	}
	if err := store.ValidateParkAction(a); err != nil {
		return err
	}
	_, err := t.tx.Exec(ctx, t.r.pq.action,
		a.Name, pgUUID(a.SequenceID), a.Entity, string(a.Action), a.Positions.From, a.Positions.To, a.Count, a.Reason, a.At)
	if err != nil {
		return t.fail(fmt.Errorf("postgres: record park action: %w", err))
	}
	return nil
}

// ListParked implements store.ParkRecorder.
func (r *Recorder) ListParked(ctx context.Context, q store.ParkedQuery) ([]store.ParkedSequence, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := r.pool.Query(ctx, r.pq.list, q.Name, nullUUID(q.SequenceID), q.WithSkipped, q.AfterName, pgUUID(q.After), limitArg(q.Limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list parked: %w", err)
	}
	out, err := scanParked(rows, "")
	if err != nil {
		return nil, fmt.Errorf("postgres: list parked: %w", err)
	}
	return out, nil
}

// ParkedEvents implements store.ParkRecorder.
func (r *Recorder) ParkedEvents(ctx context.Context, name string, seq uuid.UUID, after int64, limit int) ([]store.ParkedEvent, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := r.pool.Query(ctx, r.pq.events, name, pgUUID(seq), after, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: parked events: %w", err)
	}
	out, err := scanParkedEvents(rows, name)
	if err != nil {
		return nil, fmt.Errorf("postgres: parked events: %w", err)
	}
	return out, nil
}

// ParkActions implements store.ParkRecorder.
func (r *Recorder) ParkActions(ctx context.Context, name string, seq uuid.UUID, limit int) ([]store.ParkAction, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := r.pool.Query(ctx, r.pq.actions, name, nullUUID(seq), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: park actions: %w", err)
	}
	defer rows.Close()
	out := []store.ParkAction{}
	for rows.Next() {
		a := store.ParkAction{Name: name}
		var id pgtype.UUID
		var action string
		if err := rows.Scan(&id, &a.Entity, &action, &a.Positions.From, &a.Positions.To, &a.Count, &a.Reason, &a.At); err != nil {
			return nil, fmt.Errorf("postgres: park actions: %w", err)
		}
		a.SequenceID, a.Action, a.At = id.Bytes, store.ParkActionKind(action), a.At.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: park actions: %w", err)
	}
	return out, nil
}

// CountParked implements store.ParkRecorder.
func (r *Recorder) CountParked(ctx context.Context) ([]store.ParkedCount, error) {
	if r.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := r.pool.Query(ctx, r.pq.count)
	if err != nil {
		return nil, fmt.Errorf("postgres: count parked: %w", err)
	}
	out := []store.ParkedCount{}
	var c store.ParkedCount
	_, err = pgx.ForEachRow(rows, []any{&c.Name, &c.Sequences, &c.Events}, func() error {
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: count parked: %w", err)
	}
	return out, nil
}

// TxOf returns the store.Tx of ptx, a transaction the caller began on the
// recorder's database, for the store's own work (parked sequences, events,
// tracking) that must commit with the caller's: a read model's rebuild
// parks sequences in the transaction that swaps its tables in. The caller
// commits or rolls back ptx; after a call through the store.Tx fails, roll
// it back.
func (r *Recorder) TxOf(ptx pgx.Tx) store.Tx { return &tx{r: r, tx: ptx} }
