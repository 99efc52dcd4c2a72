package projection

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// A Replay is what a rebuild needs of a projection's parked sequences: a
// rebuild replays the store's log into a policy's tables without a Runner,
// and must leave out what the runner would: the events of a parked sequence
// from its first parked position on, the positions an operator skipped, and,
// when an event fails again, that event and the later ones of its sequence,
// which the rebuild then parks (so a rebuild parks again what fails again).
//
// Use: NewReplay before reading the log; Keep for each event, Fail for each
// that does not apply; then, in the transaction that puts the rebuilt
// tables in place and after it locked them against the live runner, Refresh
// (which says which sequences' parking changed meanwhile, to be rebuilt
// again from their events with Keep) and Park (which records the new parks
// in the same transaction). A Replay is not safe for concurrent use.
type Replay struct {
	name string
	rec  store.ParkRecorder
	// initial is what the projection had parked or skipped, by sequence,
	// at NewReplay; current what it had at the last Refresh (nil before).
	initial, current map[uuid.UUID]hold
	// failed: the position from which the rebuild parks a sequence, and why.
	failed map[uuid.UUID]failure
}

type hold struct {
	first   int64 // -1: nothing parked
	skipped []store.PositionRange
}

func (h hold) keeps(pos int64) bool {
	if h.first >= 0 && pos >= h.first {
		return false
	}
	for _, r := range h.skipped {
		if r.Contains(pos) {
			return false
		}
	}
	return true
}

type failure struct {
	pos    int64
	reason string
	topic  string
}

// NewReplay reads the parked sequences of projection name from rec.
func NewReplay(ctx context.Context, rec store.ParkRecorder, name string) (*Replay, error) {
	p := &Replay{name: name, rec: rec, failed: map[uuid.UUID]failure{}}
	held, err := p.load(ctx)
	if err != nil {
		return nil, err
	}
	p.initial = held
	return p, nil
}

func (p *Replay) load(ctx context.Context) (map[uuid.UUID]hold, error) {
	out := map[uuid.UUID]hold{}
	q := store.ParkedQuery{Name: p.name, WithSkipped: true, Limit: 1000}
	for {
		page, err := p.rec.ListParked(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("projection %q: read the parked sequences: %w", p.name, err)
		}
		for _, s := range page {
			h := hold{first: -1, skipped: s.Skipped}
			if s.Parked() {
				h.first = s.First
			}
			out[s.SequenceID] = h
		}
		if len(page) < q.Limit {
			return out, nil
		}
		q.AfterName, q.After = p.name, page[len(page)-1].SequenceID
	}
}

// Keep reports whether the rebuild applies position pos of sequence id.
func (p *Replay) Keep(id uuid.UUID, pos int64) bool {
	if f, ok := p.failed[id]; ok && pos >= f.pos {
		return false
	}
	held := p.current
	if held == nil {
		held = p.initial
	}
	h, ok := held[id]
	return !ok || h.keeps(pos)
}

// Fail records that it, kept so far, does not apply: the rebuild leaves it
// and the later events of its sequence out, and Park parks them.
func (p *Replay) Fail(it store.SequencedItem, err error) {
	if f, ok := p.failed[it.SequenceID]; ok && f.pos <= it.Position {
		return
	}
	p.failed[it.SequenceID] = failure{pos: it.Position, reason: "rebuild: " + err.Error(), topic: it.Topic}
}

// Refresh reads the parked sequences again and returns those whose parking
// changed since NewReplay (retried, skipped or parked by the live runner
// meanwhile), sorted: the rebuild must apply them again, whole, with Keep,
// which from now on follows what Refresh read. Their failures are forgotten
// (the rebuild meets them again). Call it once the live runner can no longer
// change the rebuilt tables, in the transaction that swaps them in; if that
// transaction rolls back, calling it again in the next one returns the same
// sequences and more.
func (p *Replay) Refresh(ctx context.Context) ([]uuid.UUID, error) {
	now, err := p.load(ctx)
	if err != nil {
		return nil, err
	}
	var changed []uuid.UUID
	for id, h := range now {
		if old, ok := p.initial[id]; !ok || old.first != h.first || !slices.Equal(old.skipped, h.skipped) {
			changed = append(changed, id)
		}
	}
	for id := range p.initial {
		if _, ok := now[id]; !ok {
			changed = append(changed, id)
		}
	}
	p.current = now
	for _, id := range changed {
		delete(p.failed, id)
	}
	slices.SortFunc(changed, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return changed, nil
}

// Park records in tx (a transaction of the store the projection parks in)
// the sequences whose events failed in the rebuild: each is parked from its
// failing event, with the events from there to the last one src holds. A
// sequence parked already keeps its row, gaining the events before its
// first parked one. It returns how many sequences it parked.
func (p *Replay) Park(ctx context.Context, tx store.Tx, src Source) (int, error) {
	if len(p.failed) == 0 {
		return 0, nil
	}
	ptx, err := store.ParkTxOf(tx)
	if err != nil {
		return 0, fmt.Errorf("projection %q: %w", p.name, err)
	}
	ids := make([]uuid.UUID, 0, len(p.failed))
	for id := range p.failed {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	now := time.Now().UTC()
	parked := 0
	for _, id := range ids {
		f := p.failed[id]
		// Read without a lock: a retry of the sequence may hold its row
		// while it waits for the tables the caller locked.
		rows, err := p.rec.ListParked(ctx, store.ParkedQuery{Name: p.name, SequenceID: id, WithSkipped: true})
		if err != nil {
			return parked, fmt.Errorf("projection %q: parked sequences: %w", p.name, err)
		}
		row := store.ParkedSequence{Name: p.name, SequenceID: id, First: -1, Last: -1}
		if len(rows) == 1 {
			row = rows[0]
		}
		upTo := int64(-1)
		if row.Parked() {
			if row.First <= f.pos {
				continue
			}
			upTo = row.First - 1
		}
		after := f.pos - 1
		q := store.Query{After: &after}
		if upTo >= 0 {
			q.UpTo = &upTo
		}
		items, err := src.SelectEvents(ctx, id, q)
		if err != nil {
			return parked, fmt.Errorf("projection %q: read %s from the source: %w", p.name, id, err)
		}
		var evs []store.ParkedEvent
		for _, it := range items {
			if row.SkippedAt(it.Position) {
				continue
			}
			evs = append(evs, store.ParkedEvent{Name: p.name, SequencedItem: it, RecordPartition: -1, RecordOffset: it.Position, ParkedAt: now})
		}
		if len(evs) == 0 {
			continue
		}
		if !row.Parked() {
			row.ParkedAt, row.Last = now, evs[len(evs)-1].Position
		}
		row.First, row.Reason, row.UpdatedAt = evs[0].Position, f.reason, now
		row.Count += int64(len(evs))
		if row.Entity == "" {
			row.Entity = events.EntityOf(f.topic)
		}
		if err := ptx.PutParkedSequence(ctx, row); err != nil {
			return parked, fmt.Errorf("projection %q: park %s: %w", p.name, id, err)
		}
		if err := ptx.ParkEvents(ctx, evs); err != nil {
			return parked, fmt.Errorf("projection %q: park the events of %s: %w", p.name, id, err)
		}
		parked++
	}
	return parked, nil
}
