package command

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/eventlog/eventlog/pkg/store"
)

// Tracking returns the greatest offset of (topic, partition) that this writer's
// tracking name has applied, or -1 if none: a consumer resumes at the next one
// when it is assigned the partition. It answers for the writer's TrackingName
// whatever name is passed; the parameter gives Tracking the shape of
// store.ProcessRecorder.Tracking, so a consumer can be handed either.
func (w *Writer) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	ctx, done, err := w.begin(ctx)
	if err != nil {
		return -1, err
	}
	defer done()
	pos, err := w.rec.Tracking(ctx, w.cfg.TrackingName, topic, partition)
	if err != nil {
		return -1, w.closing(err)
	}
	w.remember(partitionKey{topic, partition}, pos)
	return pos, nil
}

// remember notes that the stored tracking of k is at least pos.
func (w *Writer) remember(k partitionKey, pos int64) {
	w.trackMu.Lock()
	defer w.trackMu.Unlock()
	if old, ok := w.tracked[k]; !ok || old < pos {
		w.tracked[k] = pos
	}
}

// remembered returns the tracking of k that this writer last read or
// committed. Tracking only moves forward, so the stored one is the same or,
// if another writer applied records of k since, greater.
func (w *Writer) remembered(k partitionKey) (int64, bool) {
	w.trackMu.Lock()
	defer w.trackMu.Unlock()
	pos, ok := w.tracked[k]
	return pos, ok
}

// skipApplied returns the records above the stored tracking of their partition,
// and sets the batch's tracking.
//
// The stored tracking is the one this writer remembers, unless readTracking is
// set or it remembers none: a writer that consumes its partitions alone (the
// usual case) then reads no tracking at all. If another writer applied records
// since, the remembered tracking is behind, and the commit fails on the first
// tracking it sets (see commit); handle then plans again with readTracking.
func (w *Writer) skipApplied(ctx context.Context, b *batch, in []input, readTracking bool) ([]*input, error) {
	stored := make(map[partitionKey]int64)
	for i := range in {
		k := partitionKey{in[i].rec.Topic, in[i].rec.Partition}
		if _, ok := stored[k]; ok {
			continue
		}
		if pos, ok := w.remembered(k); ok && !readTracking {
			stored[k] = pos
			b.remembered = true
			continue
		}
		pos, err := w.rec.Tracking(ctx, w.cfg.TrackingName, k.topic, k.partition)
		if err != nil {
			return nil, fmt.Errorf("read tracking of %s/%d: %w", k.topic, k.partition, err)
		}
		w.remember(k, pos)
		stored[k] = pos
	}
	live := make([]*input, 0, len(in))
	type span struct{ first, last int64 }
	spans := make(map[partitionKey]span)
	for i := range in {
		x := &in[i]
		k := partitionKey{x.rec.Topic, x.rec.Partition}
		if x.dup || x.rec.Offset <= stored[k] {
			b.stats.Skipped++
			continue
		}
		live = append(live, x)
		s, ok := spans[k]
		if !ok {
			s = span{x.rec.Offset, x.rec.Offset}
		}
		s.first, s.last = min(s.first, x.rec.Offset), max(s.last, x.rec.Offset)
		spans[k] = s
	}
	// Tracking moves to the first offset applied, then to the last: the first
	// step fails if another writer applied any record of the batch meanwhile.
	for _, k := range slices.SortedFunc(maps.Keys(spans), func(a, b partitionKey) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	}) {
		t := store.Tracking{Name: w.cfg.TrackingName, Topic: k.topic, Partition: k.partition, Position: spans[k].first}
		b.tracking = append(b.tracking, t)
		if last := spans[k].last; last != t.Position {
			t.Position = last
			b.tracking = append(b.tracking, t)
		}
	}
	return live, nil
}
