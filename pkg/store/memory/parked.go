package memory

import (
	"bytes"
	"cmp"
	"context"
	"maps"
	"slices"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

type parkKey struct {
	name string
	seq  uuid.UUID
}

// parkState is the recorder's parked sequences. A transaction that changes
// it works on a copy (the maps cloned, the slices copied on write), which
// replaces the recorder's at commit.
type parkState struct {
	seqs    map[parkKey]store.ParkedSequence
	events  map[parkKey][]store.ParkedEvent // each in position order
	actions []store.ParkAction
}

func newParkState() parkState {
	return parkState{seqs: map[parkKey]store.ParkedSequence{}, events: map[parkKey][]store.ParkedEvent{}}
}

func (p *parkState) clone() *parkState {
	return &parkState{seqs: maps.Clone(p.seqs), events: maps.Clone(p.events), actions: slices.Clip(p.actions)}
}

// view is the state a transaction reads: its own copy once it wrote.
func (tx *memTx) view() *parkState {
	if tx.park != nil {
		return tx.park
	}
	return &tx.r.park
}

// write returns the transaction's copy, made on the first write.
func (tx *memTx) write() *parkState {
	if tx.park == nil {
		tx.park = tx.r.park.clone()
	}
	return tx.park
}

func copySeq(s store.ParkedSequence) store.ParkedSequence {
	s.Skipped = slices.Clone(s.Skipped)
	return s
}

func copyEvent(e store.ParkedEvent) store.ParkedEvent {
	e.State = slices.Clone(e.State)
	return e
}

// ParkedSequences implements store.ParkTx. Transactions are serialised, so
// the rows need no lock of their own.
func (tx *memTx) ParkedSequences(ctx context.Context, name string, ids []uuid.UUID) (map[uuid.UUID]store.ParkedSequence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := tx.view()
	out := map[uuid.UUID]store.ParkedSequence{}
	if len(v.seqs) == 0 {
		return out, nil
	}
	for _, id := range ids {
		if s, ok := v.seqs[parkKey{name, id}]; ok {
			out[id] = copySeq(s)
		}
	}
	return out, nil
}

// PutParkedSequence implements store.ParkTx.
func (tx *memTx) PutParkedSequence(ctx context.Context, s store.ParkedSequence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateParkedSequence(s); err != nil {
		return err
	}
	w := tx.write()
	k := parkKey{s.Name, s.SequenceID}
	if s.Count == 0 && len(s.Skipped) == 0 {
		delete(w.seqs, k)
		return nil
	}
	w.seqs[k] = copySeq(s)
	return nil
}

// ParkEvents implements store.ParkTx: all of evs or, on a conflict, none.
func (tx *memTx) ParkEvents(ctx context.Context, evs []store.ParkedEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateParkedEvents(evs); err != nil {
		return err
	}
	v := tx.view()
	for _, e := range evs {
		if _, found := searchParked(v.events[parkKey{e.Name, e.SequenceID}], e.Position); found {
			return &store.ConflictError{SequenceID: e.SequenceID, Position: e.Position}
		}
	}
	w := tx.write()
	for _, e := range evs {
		k := parkKey{e.Name, e.SequenceID}
		list := slices.Clone(w.events[k])
		i, _ := searchParked(list, e.Position)
		w.events[k] = slices.Insert(list, i, copyEvent(e))
	}
	return nil
}

func searchParked(list []store.ParkedEvent, pos int64) (int, bool) {
	return slices.BinarySearchFunc(list, pos, func(e store.ParkedEvent, pos int64) int { return cmp.Compare(e.Position, pos) })
}

// TakeParkedEvents implements store.ParkTx.
func (tx *memTx) TakeParkedEvents(ctx context.Context, name string, seq uuid.UUID) ([]store.ParkedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := parkKey{name, seq}
	list := tx.view().events[k]
	if len(list) == 0 {
		return []store.ParkedEvent{}, nil
	}
	out := make([]store.ParkedEvent, len(list))
	for i, e := range list {
		out[i] = copyEvent(e)
	}
	delete(tx.write().events, k)
	return out, nil
}

// RecordParkAction implements store.ParkTx.
func (tx *memTx) RecordParkAction(ctx context.Context, a store.ParkAction) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateParkAction(a); err != nil {
		return err
	}
	w := tx.write()
	w.actions = append(w.actions, a)
	return nil
}

// ListParked implements store.ParkRecorder.
func (r *Recorder) ListParked(ctx context.Context, q store.ParkedQuery) ([]store.ParkedSequence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []store.ParkedSequence{}
	cursor := q.AfterName != "" || q.After != uuid.Nil
	for k, s := range r.park.seqs {
		switch {
		case q.Name != "" && k.name != q.Name,
			q.SequenceID != uuid.Nil && k.seq != q.SequenceID,
			!s.Parked() && !q.WithSkipped,
			cursor && cmp.Or(cmp.Compare(k.name, q.AfterName), bytes.Compare(k.seq[:], q.After[:])) <= 0:
			continue
		}
		out = append(out, copySeq(s))
	}
	slices.SortFunc(out, func(a, b store.ParkedSequence) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), bytes.Compare(a.SequenceID[:], b.SequenceID[:]))
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// ParkedEvents implements store.ParkRecorder.
func (r *Recorder) ParkedEvents(ctx context.Context, name string, seq uuid.UUID, after int64, limit int) ([]store.ParkedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []store.ParkedEvent{}
	for _, e := range r.park.events[parkKey{name, seq}] {
		if e.Position <= after {
			continue
		}
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, copyEvent(e))
	}
	return out, nil
}

// ParkActions implements store.ParkRecorder.
func (r *Recorder) ParkActions(ctx context.Context, name string, seq uuid.UUID, limit int) ([]store.ParkAction, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []store.ParkAction{}
	for _, a := range r.park.actions {
		if a.Name != name || (seq != uuid.Nil && a.SequenceID != seq) {
			continue
		}
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, a)
	}
	return out, nil
}

// CountParked implements store.ParkRecorder.
func (r *Recorder) CountParked(ctx context.Context) ([]store.ParkedCount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	by := map[string]*store.ParkedCount{}
	for k, s := range r.park.seqs {
		if !s.Parked() {
			continue
		}
		c := by[k.name]
		if c == nil {
			c = &store.ParkedCount{Name: k.name}
			by[k.name] = c
		}
		c.Sequences++
		c.Events += s.Count
	}
	out := make([]store.ParkedCount, 0, len(by))
	for _, c := range by {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b store.ParkedCount) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}
