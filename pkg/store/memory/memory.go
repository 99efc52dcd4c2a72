// Package memory is an in-memory store.ProcessRecorder, store.SequencesReader,
// store.SnapshotRecorder, store.KeyRecorder, store.ParkRecorder and
// store.Notifier. It keeps
// nothing on disk: use it in tests and examples, and where the log may be
// lost with the process.
//
// Appends are serialised by one mutex, so notification ids are assigned in commit
// order and the notification log never skips an item. All methods are safe for
// concurrent use. Items passed in and returned are copied, so callers may reuse
// their slices.
package memory

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

type trackingKey struct {
	name      string
	topic     string
	partition int32
}

// Recorder is an in-memory recorder. The zero value is not usable; call New.
type Recorder struct {
	mu        sync.RWMutex
	sequences map[uuid.UUID][]store.SequencedItem // each in position order
	log       []store.Notification                // in id order
	snapshots map[uuid.UUID][]store.SequencedItem // each in position order
	tracking  map[trackingKey]int64
	keys      map[uuid.UUID]memKey // data keys (keys.go)
	park      parkState            // parked sequences (parked.go)
	wake      chan struct{}        // closed and replaced after each commit
}

var (
	_ store.ProcessRecorder  = (*Recorder)(nil)
	_ store.SequencesReader  = (*Recorder)(nil)
	_ store.SnapshotRecorder = (*Recorder)(nil)
	_ store.Notifier         = (*Recorder)(nil)
	_ store.SequencesReader  = (*memTx)(nil)
	_ store.TrackingsSetter  = (*memTx)(nil)
	_ store.KeyRecorder      = (*Recorder)(nil)
	_ store.ParkRecorder     = (*Recorder)(nil)
	_ store.ParkTx           = (*memTx)(nil)
)

// New returns an empty recorder.
func New() *Recorder {
	return &Recorder{
		sequences: make(map[uuid.UUID][]store.SequencedItem),
		snapshots: make(map[uuid.UUID][]store.SequencedItem),
		tracking:  make(map[trackingKey]int64),
		keys:      make(map[uuid.UUID]memKey),
		park:      newParkState(),
		wake:      make(chan struct{}),
	}
}

// InsertEvents implements store.AggregateRecorder.
func (r *Recorder) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	var ids []int64
	err := r.InTx(ctx, func(tx store.Tx) error {
		var err error
		ids, err = tx.InsertEvents(ctx, items)
		return err
	})
	return ids, err
}

// SelectEvents implements store.AggregateRecorder.
func (r *Recorder) SelectEvents(ctx context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return selectItems(r.sequences[id], nil, q), nil
}

// SelectSequences implements store.SequencesReader. It reads every sequence
// under one lock, so the result is one consistent view.
func (r *Recorder) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[uuid.UUID][]store.SequencedItem, len(queries))
	for id, q := range queries {
		if items := selectItems(r.sequences[id], nil, q); len(items) > 0 {
			out[id] = items
		}
	}
	return out, nil
}

// selectItems applies q to committed items (in position order) followed by pending
// ones (also in position order, all after the committed ones).
func selectItems(committed, pending []store.SequencedItem, q store.Query) []store.SequencedItem {
	out := make([]store.SequencedItem, 0, len(committed)+len(pending))
	for _, items := range [][]store.SequencedItem{committed, pending} {
		for _, it := range items {
			if q.After != nil && it.Position <= *q.After {
				continue
			}
			if q.UpTo != nil && it.Position > *q.UpTo {
				continue
			}
			out = append(out, copyItem(it))
		}
	}
	if q.Desc {
		slices.Reverse(out)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out
}

// SelectNotifications implements store.ApplicationRecorder.
func (r *Recorder) SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	// ids are 1..len(log) in order.
	start := int(max(after, 0))
	if start >= len(r.log) {
		return []store.Notification{}, nil
	}
	end := len(r.log)
	if limit > 0 && start+limit < end {
		end = start + limit
	}
	out := make([]store.Notification, 0, end-start)
	for _, n := range r.log[start:end] {
		out = append(out, store.Notification{ID: n.ID, SequencedItem: copyItem(n.SequencedItem)})
	}
	return out, nil
}

// MaxNotificationID implements store.ApplicationRecorder.
func (r *Recorder) MaxNotificationID(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return int64(len(r.log)), nil
}

// Tracking implements store.ProcessRecorder.
func (r *Recorder) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p, ok := r.tracking[trackingKey{name, topic, partition}]; ok {
		return p, nil
	}
	return -1, nil
}

// InTx implements store.ProcessRecorder. Transactions are serialised: fn runs with
// the recorder locked, so it must not call the recorder's own methods.
func (r *Recorder) InTx(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tx := &memTx{r: r, pending: make(map[uuid.UUID][]store.SequencedItem), tracking: make(map[trackingKey]int64)}
	if err := fn(tx); err != nil {
		return err
	}
	if tx.doomed != nil {
		return tx.doomed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Commit.
	for _, it := range tx.order {
		r.sequences[it.SequenceID] = append(r.sequences[it.SequenceID], it)
		r.log = append(r.log, store.Notification{ID: int64(len(r.log) + 1), SequencedItem: it})
	}
	for k, p := range tx.tracking {
		r.tracking[k] = p
	}
	for _, id := range tx.forgets {
		r.keys[id] = memKey{forgotten: true}
		delete(r.snapshots, id)
	}
	if tx.park != nil {
		r.park = *tx.park
	}
	if len(tx.order) > 0 {
		close(r.wake)
		r.wake = make(chan struct{})
	}
	return nil
}

type memTx struct {
	r        *Recorder
	order    []store.SequencedItem // inserted, in insertion order
	pending  map[uuid.UUID][]store.SequencedItem
	tracking map[trackingKey]int64
	doomed   error       // a tracking conflict: the transaction must not commit
	forgets  []uuid.UUID // sequences whose keys and snapshots go at commit
	park     *parkState  // the parked sequences as changed, copied at the first change
}

func (tx *memTx) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, err
	}
	if len(tx.order)+len(items) > store.MaxItemsPerAppend {
		return nil, store.ErrInvalidItem
	}
	for _, it := range items {
		if tx.taken(it.SequenceID, it.Position) {
			return nil, &store.ConflictError{SequenceID: it.SequenceID, Position: it.Position}
		}
	}
	// The items of one sequence enter the log in position order, whatever
	// order the batch gives them in, as in the other recorders: each sequence
	// keeps the places it has in the batch, and its items fill them sorted.
	slots := make(map[uuid.UUID][]int)
	for i, it := range items {
		slots[it.SequenceID] = append(slots[it.SequenceID], i)
	}
	ordered := make([]int, len(items)) // slot -> index in items
	for _, idx := range slots {
		byPos := slices.Clone(idx)
		slices.SortFunc(byPos, func(a, b int) int { return cmp.Compare(items[a].Position, items[b].Position) })
		for j, slot := range idx {
			ordered[slot] = byPos[j]
		}
	}
	first := int64(len(tx.r.log)+len(tx.order)) + 1
	ids := make([]int64, len(items)) // by index in items
	for slot, i := range ordered {
		c := copyItem(items[i])
		tx.order = append(tx.order, c)
		p := tx.pending[c.SequenceID]
		tx.pending[c.SequenceID] = slices.Insert(p, insertAt(p, c.Position), c)
		ids[i] = first + int64(slot)
	}
	return ids, nil
}

// search finds pos in p, which is in position order.
func search(p []store.SequencedItem, pos int64) (int, bool) {
	return slices.BinarySearchFunc(p, pos, func(a store.SequencedItem, pos int64) int {
		return cmp.Compare(a.Position, pos)
	})
}

// insertAt returns where an item at pos goes in p, which is in position order.
func insertAt(p []store.SequencedItem, pos int64) int {
	i, _ := search(p, pos)
	return i
}

func (tx *memTx) taken(id uuid.UUID, pos int64) bool {
	for _, items := range [][]store.SequencedItem{tx.r.sequences[id], tx.pending[id]} {
		if _, found := search(items, pos); found {
			return true
		}
	}
	return false
}

func (tx *memTx) SelectEvents(ctx context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	committed := tx.r.sequences[id]
	pending := tx.pending[id]
	if len(pending) == 0 {
		return selectItems(committed, nil, q), nil
	}
	merged := slices.Clone(committed)
	for _, p := range pending {
		merged = slices.Insert(merged, insertAt(merged, p.Position), p)
	}
	return selectItems(merged, nil, q), nil
}

func (tx *memTx) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	out := make(map[uuid.UUID][]store.SequencedItem, len(queries))
	for id, q := range queries {
		items, err := tx.SelectEvents(ctx, id, q)
		if err != nil {
			return nil, err
		}
		if len(items) > 0 {
			out[id] = items
		}
	}
	return out, nil
}

func (tx *memTx) SetTracking(ctx context.Context, t store.Tracking) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := trackingKey{t.Name, t.Topic, t.Partition}
	stored, ok := tx.tracking[k]
	if !ok {
		stored, ok = tx.r.tracking[k]
	}
	if ok && stored >= t.Position {
		err := &store.TrackingConflictError{Tracking: t, Stored: stored}
		tx.doomed = err // the transaction fails even if the caller ignores this
		return err
	}
	tx.tracking[k] = t.Position
	return nil
}

func (tx *memTx) SetTrackings(ctx context.Context, ts []store.Tracking) error {
	for _, t := range ts {
		if err := tx.SetTracking(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// InsertSnapshot implements store.SnapshotRecorder.
func (r *Recorder) InsertSnapshot(ctx context.Context, item store.SequencedItem) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateItems([]store.SequencedItem{item}); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.snapshots[item.SequenceID]
	i, found := search(s, item.Position)
	if found {
		return nil
	}
	r.snapshots[item.SequenceID] = slices.Insert(s, i, copyItem(item))
	return nil
}

// LatestSnapshot implements store.SnapshotRecorder.
func (r *Recorder) LatestSnapshot(ctx context.Context, id uuid.UUID, upTo int64) (store.SequencedItem, error) {
	if err := ctx.Err(); err != nil {
		return store.SequencedItem{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.snapshots[id]
	for i := len(s) - 1; i >= 0; i-- {
		if upTo < 0 || s[i].Position <= upTo {
			return copyItem(s[i]), nil
		}
	}
	return store.SequencedItem{}, store.ErrNotFound
}

// Notify implements store.Notifier.
func (r *Recorder) Notify(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	// Take the current wake-up channel now, so that a commit right after
	// Notify returns is not missed.
	r.mu.RLock()
	w := r.wake
	r.mu.RUnlock()
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case <-w:
				// Take the next channel before signalling: a commit after
				// this wakes the loop again, one before it is seen by
				// whoever reads after the signal.
				r.mu.RLock()
				w = r.wake
				r.mu.RUnlock()
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}

func copyItem(it store.SequencedItem) store.SequencedItem {
	it.State = slices.Clone(it.State)
	return it
}
