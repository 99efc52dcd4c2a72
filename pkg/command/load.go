package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// prefetch reads what deciding the batch needs: each aggregate a command
// addresses, into b.working, and, with readResults, the last item of each
// command's result sequence and of each dead letter's sequence (the
// lookups). A cached aggregate is used as it is, without a read (see commit
// for why a stale one is safe); the others are rebuilt from the store. With a
// store.SequencesReader all of it is one read, and with snapshots one more
// read per uncached aggregate that exists; without one, it is a read per
// sequence, ReadConcurrency at a time.
//
// Without readResults every lookup is "none": each command is decided as
// answered for the first time, and each dead letter as not stored. That
// holds unless the record is a duplicate (a command id answered before,
// under another offset, or a dead letter stored before its tracking was
// lost), or its command id names another sequence: then its result or dead
// letter takes position 0 of a sequence that has one, the append fails with
// a conflict, and the batch is decided again with readResults (see
// handleInputs). So a batch of new commands reads no result sequence.
func (w *Writer) prefetch(ctx context.Context, b *batch, live []*input, bypass map[uuid.UUID]bool, readResults bool) (map[uuid.UUID]lookup, error) {
	var seqs []uuid.UUID
	lookups := make(map[uuid.UUID]lookup, len(live))
	var loads []*working
	for _, x := range live {
		id := x.cmd.CommandID
		if x.err != nil {
			id = wire.DeadLetterID(x.rec.Topic, x.rec.Partition, x.rec.Offset)
		}
		if _, ok := lookups[id]; !ok && readResults {
			lookups[id] = lookup{}
			seqs = append(seqs, id)
		}
		if x.err != nil {
			continue
		}
		k, ok := w.kinds[x.cmd.Entity]
		if !ok {
			continue
		}
		if _, ok := k.commands[x.cmd.Type]; !ok {
			continue
		}
		key := aggKey{x.cmd.Entity, x.cmd.EntityID}
		if _, ok := b.working[key]; ok {
			continue
		}
		wk := &working{key: key, kind: k}
		b.working[key] = wk
		if bypass[key.id] || bypass[bypassAll] {
			w.cache.drop(key)
		} else if agg, ok := w.cache.take(key); ok {
			wk.setAgg(agg)
			continue
		}
		loads = append(loads, wk)
	}
	if len(loads) > 0 { // their history is decoded below: its keys, if any, first
		ids := make([]uuid.UUID, len(loads))
		for i, wk := range loads {
			ids[i] = wk.key.id
		}
		release, err := w.mapper.PrepareKeys(ctx, ids, false)
		b.keys = append(b.keys, release)
		if err != nil {
			return nil, fmt.Errorf("prepare the data keys of %d entities: %w", len(ids), err)
		}
	}
	if len(seqs) == 0 && len(loads) == 0 {
		return lookups, nil
	}
	if w.seqs != nil {
		return lookups, w.readBatch(ctx, seqs, loads, lookups)
	}
	found := make([]lookup, len(seqs))
	err := w.parallel(ctx, len(seqs)+len(loads), func(ctx context.Context, i int) error {
		if i < len(seqs) {
			var err error
			found[i], err = w.lastItem(ctx, seqs[i])
			return err
		}
		return w.loadStored(ctx, loads[i-len(seqs)])
	})
	if err != nil {
		return nil, err
	}
	for i, id := range seqs {
		lookups[id] = found[i]
	}
	return lookups, nil
}

// lastQuery selects the last item of a sequence.
var lastQuery = store.Query{Desc: true, Limit: 1}

// readBatch fills lookups (the last item of each of seqs) and loads the
// aggregates of loads with one store.SequencesReader call: the whole history
// of each aggregate to replay, or, with snapshots, its last item, and then one
// repository load for each that exists.
func (w *Writer) readBatch(ctx context.Context, seqs []uuid.UUID, loads []*working, lookups map[uuid.UUID]lookup) error {
	replay := w.cfg.SnapshotEvery <= 0
	queries := make(map[uuid.UUID]store.Query, len(seqs)+len(loads))
	for _, id := range seqs {
		queries[id] = lastQuery
	}
	for _, wk := range loads {
		if replay {
			queries[wk.key.id] = store.Query{} // a command id may be an entity id too: the history holds its last item
		} else {
			queries[wk.key.id] = lastQuery
		}
	}
	got, err := w.seqs.SelectSequences(ctx, queries)
	if err != nil {
		return fmt.Errorf("read %d sequences: %w", len(queries), err)
	}
	last := func(id uuid.UUID) lookup {
		items := got[id]
		switch {
		case len(items) == 0:
			return lookup{}
		case queries[id].Desc:
			return lookup{found: true, item: items[0]}
		default:
			return lookup{found: true, item: items[len(items)-1]}
		}
	}
	for _, id := range seqs {
		lookups[id] = last(id)
	}
	if replay {
		for _, wk := range loads {
			if err := w.replay(wk, got[wk.key.id]); err != nil {
				return err
			}
		}
		return nil
	}
	return w.parallel(ctx, len(loads), func(ctx context.Context, i int) error {
		return w.fromStore(ctx, loads[i], last(loads[i].key.id))
	})
}

// lastItem returns the last item of a sequence.
func (w *Writer) lastItem(ctx context.Context, id uuid.UUID) (lookup, error) {
	items, err := w.rec.SelectEvents(ctx, id, store.Query{Desc: true, Limit: 1})
	if err != nil {
		return lookup{}, fmt.Errorf("read sequence %s: %w", id, err)
	}
	if len(items) == 0 {
		return lookup{}, nil
	}
	return lookup{found: true, item: items[0]}, nil
}

// loadStored sets wk's aggregate, rebuilt from the store.
func (w *Writer) loadStored(ctx context.Context, wk *working) error {
	last, err := w.lastItem(ctx, wk.key.id)
	if err != nil {
		return err
	}
	return w.fromStore(ctx, wk, last)
}

// fromStore sets wk's aggregate, rebuilt through the repository (from a
// snapshot if configured) given the last item of its sequence. A sequence the
// aggregate cannot be rebuilt from (another entity type's, a result's, or one
// whose events do not replay) sets wk.reject; a store error is returned.
func (w *Writer) fromStore(ctx context.Context, wk *working, last lookup) error {
	if !last.found {
		wk.setAgg(wk.kind.newAgg())
		return nil
	}
	if taken(wk, last.item) {
		return nil
	}
	agg, err := wk.kind.get(ctx, wk.key.id)
	return adopt(wk, last.item, agg, err)
}

// replay sets wk's aggregate, rebuilt by the repository from items, the whole
// history of its sequence: what fromStore does without snapshots, once the
// items are read.
func (w *Writer) replay(wk *working, items []store.SequencedItem) error {
	if len(items) == 0 {
		wk.setAgg(wk.kind.newAgg())
		return nil
	}
	last := items[len(items)-1]
	if taken(wk, last) {
		return nil
	}
	agg, err := wk.kind.replay(wk.key.id, items)
	return adopt(wk, last, agg, err)
}

// taken sets wk.reject if last, the last item of wk's sequence, is not of wk's
// entity type.
func taken(wk *working, last store.SequencedItem) bool {
	if events.EntityOf(last.Topic) == wk.kind.name {
		return false
	}
	wk.reject = takenError(wk.key.id, last.Topic, wk.kind.name)
	return true
}

// adopt sets wk's aggregate from what its repository returned (agg, err),
// given the last item of its sequence: a discarded aggregate at its version
// for store.ErrNotFound, wk.reject for a history that does not replay. Any
// other error is returned.
func adopt(wk *working, last store.SequencedItem, agg events.Root, err error) error {
	k, id := wk.kind, wk.key.id
	switch {
	case err == nil:
		wk.setAgg(agg)
	case errors.Is(err, store.ErrNotFound):
		// The repository hides discarded aggregates; the writer needs their version.
		wk.setAgg(discarded(k, id, last.Position+1))
	case errors.Is(err, events.ErrUnknownTopic), errors.Is(err, events.ErrVersion), errors.Is(err, events.ErrDiscarded), errors.Is(err, events.ErrForgotten):
		wk.reject = replayError(k, id, err)
	default:
		return fmt.Errorf("load %s %s: %w", k.name, id, err)
	}
	return nil
}

func (wk *working) setAgg(agg events.Root) {
	wk.agg, wk.base = agg, agg.Base().Version()
}

// discarded returns a discarded aggregate of k at version.
func discarded(k *writerKind, id uuid.UUID, version int64) events.Root {
	agg := k.newAgg()
	agg.Base().Restore(id, version)
	agg.Base().MarkDiscarded()
	return agg
}

func takenError(id uuid.UUID, topic, kind string) error {
	return fmt.Errorf("command: id %s is taken by a sequence of topic %q, not a %s", id, topic, kind)
}

func replayError(k *writerKind, id uuid.UUID, err error) error {
	return fmt.Errorf("command: %s %s cannot be rebuilt from its events: %w", k.name, id, err)
}

// rebuild undoes a failed command's changes to wk's aggregate: it loads the
// aggregate again and applies the batch's accepted events. If the stored
// aggregate moved on meanwhile, it returns a conflict so the batch starts over.
func (w *Writer) rebuild(ctx context.Context, wk *working) error {
	stored := &working{key: wk.key, kind: wk.kind}
	if err := w.loadStored(ctx, stored); err != nil {
		return err
	}
	if stored.reject != nil || stored.base != wk.base {
		return &store.ConflictError{SequenceID: wk.key.id, Position: wk.base}
	}
	agg := stored.agg
	for _, e := range wk.applied {
		if err := events.Apply(agg, e); err != nil {
			return fmt.Errorf("rebuild %s %s: %w", wk.key.typ, wk.key.id, err)
		}
	}
	wk.agg = agg
	return nil
}

// parallel runs fn(ctx, i) for i in [0, n), ReadConcurrency at a time, and
// returns the first error; once one fails, the calls not started yet return
// without running.
func (w *Writer) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.cfg.ReadConcurrency)
	for i := range n {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			return fn(gctx, i)
		})
	}
	return g.Wait()
}
