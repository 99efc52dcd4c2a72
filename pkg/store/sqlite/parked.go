package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

var (
	_ store.ParkRecorder = (*Recorder)(nil)
	_ store.ParkTx       = (*Tx)(nil)
)

const parkedColumns = `name, sequence_id, entity, first_pos, last_pos, event_count, reason, parked_at, updated_at, retries, skipped`

const parkedEventColumns = `name, sequence_id, position, topic, state, codec, notification_id, record_topic, record_partition, record_offset, parked_at`

// parkedChunk bounds the ids of one IN list (SQLite's limit on variables is
// far above it).
const parkedChunk = 500

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }

func scanParked(rows *sql.Rows) ([]store.ParkedSequence, error) {
	defer rows.Close()
	out := []store.ParkedSequence{}
	for rows.Next() {
		var (
			s                          store.ParkedSequence
			id                         []byte
			parked, updated, skippedJS string
		)
		if err := rows.Scan(&s.Name, &id, &s.Entity, &s.First, &s.Last, &s.Count, &s.Reason, &parked, &updated, &s.Retries, &skippedJS); err != nil {
			return nil, err
		}
		var err error
		if s.SequenceID, err = uuid.FromBytes(id); err != nil {
			return nil, err
		}
		if s.ParkedAt, err = parseTime(parked); err != nil {
			return nil, err
		}
		if s.UpdatedAt, err = parseTime(updated); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(skippedJS), &s.Skipped); err != nil {
			return nil, fmt.Errorf("skipped positions of %s: %w", s.SequenceID, err)
		}
		if len(s.Skipped) == 0 {
			s.Skipped = nil
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func scanParkedEvents(rows *sql.Rows) ([]store.ParkedEvent, error) {
	defer rows.Close()
	out := []store.ParkedEvent{}
	for rows.Next() {
		var (
			e  store.ParkedEvent
			id []byte
			at string
		)
		if err := rows.Scan(&e.Name, &id, &e.Position, &e.Topic, &e.State, &e.Codec, &e.NotificationID,
			&e.RecordTopic, &e.RecordPartition, &e.RecordOffset, &at); err != nil {
			return nil, err
		}
		var err error
		if e.SequenceID, err = uuid.FromBytes(id); err != nil {
			return nil, err
		}
		if e.ParkedAt, err = parseTime(at); err != nil {
			return nil, err
		}
		if len(e.State) == 0 {
			e.State = nil
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ParkedSequences implements store.ParkTx. The transaction holds the
// database's write lock, so the rows need no lock of their own. A
// projection with nothing parked costs one indexed probe.
func (t *Tx) ParkedSequences(ctx context.Context, name string, ids []uuid.UUID) (map[uuid.UUID]store.ParkedSequence, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	out := map[uuid.UUID]store.ParkedSequence{}
	if len(ids) == 0 {
		return out, nil
	}
	var exists int
	err := queryRow(ctx, t.conn, `SELECT EXISTS (SELECT 1 FROM parked_sequences WHERE name = ?)`, []any{name}, &exists)
	if err != nil {
		return nil, fmt.Errorf("sqlite: parked sequences: %w", describe(ctx, err))
	}
	if exists == 0 {
		return out, nil
	}
	for chunk := range slices.Chunk(ids, parkedChunk) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, name)
		for _, id := range chunk {
			args = append(args, id[:])
		}
		rows, err := t.conn.QueryContext(ctx, `SELECT `+parkedColumns+` FROM parked_sequences WHERE name = ? AND sequence_id IN (?`+
			strings.Repeat(", ?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("sqlite: parked sequences: %w", describe(ctx, err))
		}
		got, err := scanParked(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: parked sequences: %w", describe(ctx, err))
		}
		for _, s := range got {
			out[s.SequenceID] = s
		}
	}
	return out, nil
}

// PutParkedSequence implements store.ParkTx.
func (t *Tx) PutParkedSequence(ctx context.Context, s store.ParkedSequence) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := store.ValidateParkedSequence(s); err != nil {
		return err
	}
	if s.Count == 0 && len(s.Skipped) == 0 {
		if _, err := t.conn.ExecContext(ctx, `DELETE FROM parked_sequences WHERE name = ? AND sequence_id = ?`, s.Name, s.SequenceID[:]); err != nil {
			return fmt.Errorf("sqlite: delete parked sequence: %w", describe(ctx, err))
		}
		return nil
	}
	skipped := s.Skipped
	if skipped == nil {
		skipped = []store.PositionRange{}
	}
	js, err := json.Marshal(skipped)
	if err != nil {
		return err
	}
	_, err = t.conn.ExecContext(ctx, `INSERT OR REPLACE INTO parked_sequences (`+parkedColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.Name, s.SequenceID[:], s.Entity, s.First, s.Last, s.Count, s.Reason, formatTime(s.ParkedAt), formatTime(s.UpdatedAt), s.Retries, string(js))
	if err != nil {
		return fmt.Errorf("sqlite: put parked sequence: %w", describe(ctx, err))
	}
	return nil
}

// ParkEvents implements store.ParkTx: all of evs or, on a conflict, none
// (a savepoint is rolled back), the transaction still usable.
func (t *Tx) ParkEvents(ctx context.Context, evs []store.ParkedEvent) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := store.ValidateParkedEvents(evs); err != nil {
		return err
	}
	if len(evs) == 0 {
		return nil
	}
	return t.savepoint(ctx, func() error {
		stmt, err := t.conn.PrepareContext(ctx, `INSERT INTO parked_events (`+parkedEventColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("sqlite: park events: %w", describe(ctx, err))
		}
		defer stmt.Close()
		for _, e := range evs {
			_, err := stmt.ExecContext(ctx, e.Name, e.SequenceID[:], e.Position, e.Topic, blob(e.State), e.Codec, e.NotificationID,
				e.RecordTopic, e.RecordPartition, e.RecordOffset, formatTime(e.ParkedAt))
			if err != nil {
				if isUnique(err) {
					return &store.ConflictError{SequenceID: e.SequenceID, Position: e.Position}
				}
				return fmt.Errorf("sqlite: park events: %w", describe(ctx, err))
			}
		}
		return nil
	})
}

// TakeParkedEvents implements store.ParkTx.
func (t *Tx) TakeParkedEvents(ctx context.Context, name string, seq uuid.UUID) ([]store.ParkedEvent, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	rows, err := t.conn.QueryContext(ctx, `DELETE FROM parked_events WHERE name = ? AND sequence_id = ? RETURNING `+parkedEventColumns, name, seq[:])
	if err != nil {
		return nil, fmt.Errorf("sqlite: take parked events: %w", describe(ctx, err))
	}
	out, err := scanParkedEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: take parked events: %w", describe(ctx, err))
	}
	slices.SortFunc(out, func(a, b store.ParkedEvent) int { return cmp.Compare(a.Position, b.Position) })
	return out, nil
}

// RecordParkAction implements store.ParkTx.
func (t *Tx) RecordParkAction(ctx context.Context, a store.ParkAction) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := store.ValidateParkAction(a); err != nil {
		return err
	}
	_, err := t.conn.ExecContext(ctx, `INSERT INTO park_actions (name, sequence_id, entity, action, from_pos, to_pos, event_count, reason, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.Name, a.SequenceID[:], a.Entity, string(a.Action), a.Positions.From, a.Positions.To, a.Count, a.Reason, formatTime(a.At))
	if err != nil {
		return fmt.Errorf("sqlite: record park action: %w", describe(ctx, err))
	}
	return nil
}

// ListParked implements store.ParkRecorder.
func (r *Recorder) ListParked(ctx context.Context, q store.ParkedQuery) ([]store.ParkedSequence, error) {
	var b strings.Builder
	b.WriteString(`SELECT ` + parkedColumns + ` FROM parked_sequences WHERE (name, sequence_id) > (?, ?)`)
	args := []any{q.AfterName, q.After[:]}
	if q.Name != "" {
		b.WriteString(` AND name = ?`)
		args = append(args, q.Name)
	}
	if q.SequenceID != uuid.Nil {
		b.WriteString(` AND sequence_id = ?`)
		args = append(args, q.SequenceID[:])
	}
	if !q.WithSkipped {
		b.WriteString(` AND event_count > 0`)
	}
	b.WriteString(` ORDER BY name, sequence_id LIMIT ?`)
	args = append(args, limitArg(q.Limit))
	var out []store.ParkedSequence
	err := r.read(ctx, "list parked", func(db queryer) error {
		rows, err := db.QueryContext(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		out, err = scanParked(rows)
		return err
	})
	return out, err
}

// limitArg is a LIMIT argument: -1 (none, to SQLite) unless n is positive.
func limitArg(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// ParkedEvents implements store.ParkRecorder.
func (r *Recorder) ParkedEvents(ctx context.Context, name string, seq uuid.UUID, after int64, limit int) ([]store.ParkedEvent, error) {
	var out []store.ParkedEvent
	err := r.read(ctx, "parked events", func(db queryer) error {
		rows, err := db.QueryContext(ctx, `SELECT `+parkedEventColumns+` FROM parked_events
			WHERE name = ? AND sequence_id = ? AND position > ? ORDER BY position LIMIT ?`, name, seq[:], after, limitArg(limit))
		if err != nil {
			return err
		}
		out, err = scanParkedEvents(rows)
		return err
	})
	return out, err
}

// ParkActions implements store.ParkRecorder.
func (r *Recorder) ParkActions(ctx context.Context, name string, seq uuid.UUID, limit int) ([]store.ParkAction, error) {
	query := `SELECT sequence_id, entity, action, from_pos, to_pos, event_count, reason, at FROM park_actions WHERE name = ?`
	args := []any{name}
	if seq != uuid.Nil {
		query += ` AND sequence_id = ?`
		args = append(args, seq[:])
	}
	query += ` ORDER BY id LIMIT ?`
	args = append(args, limitArg(limit))
	var out []store.ParkAction
	err := r.read(ctx, "park actions", func(db queryer) error {
		rows, err := db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = []store.ParkAction{}
		for rows.Next() {
			a := store.ParkAction{Name: name}
			var (
				id         []byte
				action, at string
			)
			if err := rows.Scan(&id, &a.Entity, &action, &a.Positions.From, &a.Positions.To, &a.Count, &a.Reason, &at); err != nil {
				return err
			}
			if a.SequenceID, err = uuid.FromBytes(id); err != nil {
				return err
			}
			if a.At, err = parseTime(at); err != nil {
				return err
			}
			a.Action = store.ParkActionKind(action)
			out = append(out, a)
		}
		return rows.Err()
	})
	return out, err
}

// CountParked implements store.ParkRecorder.
func (r *Recorder) CountParked(ctx context.Context) ([]store.ParkedCount, error) {
	var out []store.ParkedCount
	err := r.read(ctx, "count parked", func(db queryer) error {
		rows, err := db.QueryContext(ctx, `SELECT name, count(*), sum(event_count) FROM parked_sequences WHERE event_count > 0 GROUP BY name ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = []store.ParkedCount{}
		for rows.Next() {
			var c store.ParkedCount
			if err := rows.Scan(&c.Name, &c.Sequences, &c.Events); err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	if errors.Is(err, sql.ErrNoRows) {
		return []store.ParkedCount{}, nil
	}
	return out, err
}
