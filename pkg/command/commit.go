package command

import (
	"context"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// commit stores the batch: tracking first (so a zombie fails fast with
// ErrTrackingConflict; see skipApplied), then checks that the aggregates whose
// unchanged state decided an outcome are still unchanged, then appends every
// item.
//
// This is what makes a stale aggregate safe, such as a cached one that another
// writer appended to (after a rebalance, say): an accepted command's first
// event takes the position at the aggregate's stale version, which the store
// holds already, so the append fails with a conflict and the batch is decided
// again from the store; a rejection or conflict decided on unchanged state
// fails the check.
func (w *Writer) commit(ctx context.Context, b *batch) error {
	return w.rec.InTx(ctx, func(tx store.Tx) error {
		if err := setTracking(ctx, tx, b.tracking); err != nil {
			return err
		}
		if err := unchanged(ctx, tx, b.validate); err != nil {
			return err
		}
		if len(b.items) == 0 {
			return nil
		}
		_, err := tx.InsertEvents(ctx, b.items)
		return err
	})
}

// setTracking records ts in order: in one call if tx is a
// store.TrackingsSetter.
func setTracking(ctx context.Context, tx store.Tx, ts []store.Tracking) error {
	if s, ok := tx.(store.TrackingsSetter); ok {
		return s.SetTrackings(ctx, ts)
	}
	for _, t := range ts {
		if err := tx.SetTracking(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// unchanged returns a conflict if the store holds an item at or after the
// version of any of ws: in one read if tx is a store.SequencesReader.
func unchanged(ctx context.Context, tx store.Tx, ws []*working) error {
	moved := func(wk *working, items []store.SequencedItem) error {
		if len(items) > 0 && items[0].Position >= wk.base {
			return &store.ConflictError{SequenceID: wk.key.id, Position: wk.base}
		}
		return nil
	}
	if sr, ok := tx.(store.SequencesReader); ok && len(ws) > 1 {
		queries := make(map[uuid.UUID]store.Query, len(ws))
		for _, wk := range ws {
			queries[wk.key.id] = lastQuery
		}
		got, err := sr.SelectSequences(ctx, queries)
		if err != nil {
			return err
		}
		for _, wk := range ws {
			if err := moved(wk, got[wk.key.id]); err != nil {
				return err
			}
		}
		return nil
	}
	for _, wk := range ws {
		items, err := tx.SelectEvents(ctx, wk.key.id, lastQuery)
		if err != nil {
			return err
		}
		if err := moved(wk, items); err != nil {
			return err
		}
	}
	return nil
}

// committed keeps the batch's aggregates, now stored, in the cache, remembers
// its tracking, and logs its dead letters.
func (w *Writer) committed(ctx context.Context, b *batch) {
	for _, t := range b.tracking {
		w.remember(partitionKey{t.Topic, t.Partition}, t.Position)
	}
	for _, d := range b.dead {
		w.log.WarnContext(ctx, "command: record sent to the dead-letter topic",
			logKeyTopic, d.rec.Topic, logKeyPartition, d.rec.Partition, logKeyOffset, d.rec.Offset, logKeyReason, d.reason)
	}
	for _, wk := range b.working {
		if wk.agg != nil && wk.reject == nil && wk.agg.Base().Version() > 0 {
			w.cache.put(wk.key, wk.agg)
		}
	}
}
