package storetest_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// refRecorder is the simplest recorder that can pass the suite: one mutex,
// transactions applied to a copy. It checks the suite, not a backend.
type refRecorder struct {
	mu       sync.Mutex
	events   map[uuid.UUID][]store.SequencedItem // in position order
	log      []store.Notification
	tracking map[[3]string]int64
	snaps    map[uuid.UUID][]store.SequencedItem
	subs     map[chan struct{}]struct{}

	// breakage, for the tests that check the suite fails
	skipValidate bool
	batchOrder   bool // log order = batch order, even within a sequence
	ignoreFailed bool // commit although SetTracking failed
	sloppyMulti  bool // SelectSequences ignores Desc and Limit
	lastTracking bool // SetTrackings sets only the last record of each key
	dropTrace    bool // SelectNotifications loses the items' trace contexts
}

func newRef() *refRecorder {
	return &refRecorder{
		events:   map[uuid.UUID][]store.SequencedItem{},
		tracking: map[[3]string]int64{},
		snaps:    map[uuid.UUID][]store.SequencedItem{},
		subs:     map[chan struct{}]struct{}{},
	}
}

type refTx struct {
	r        *refRecorder
	events   map[uuid.UUID][]store.SequencedItem
	log      []store.Notification
	tracking map[[3]string]int64
	failed   error
}

func (r *refRecorder) begin() *refTx {
	tx := &refTx{r: r, events: map[uuid.UUID][]store.SequencedItem{}, tracking: map[[3]string]int64{}}
	for k, v := range r.events {
		tx.events[k] = slices.Clone(v)
	}
	for k, v := range r.tracking {
		tx.tracking[k] = v
	}
	tx.log = slices.Clone(r.log)
	return tx
}

func (tx *refTx) commit() {
	tx.r.events, tx.r.log, tx.r.tracking = tx.events, tx.log, tx.tracking
	for ch := range tx.r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (tx *refTx) InsertEvents(_ context.Context, items []store.SequencedItem) ([]int64, error) {
	if !tx.r.skipValidate {
		if err := store.ValidateItems(items); err != nil {
			return nil, err
		}
	}
	for _, it := range items {
		for _, have := range tx.events[it.SequenceID] {
			if have.Position == it.Position {
				return nil, &store.ConflictError{SequenceID: it.SequenceID, Position: it.Position}
			}
		}
	}
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	// Within a sequence, log order is position order: hand the batch's slots
	// of each sequence to its items in position order.
	if !tx.r.batchOrder {
		bySeq := map[uuid.UUID][]int{}
		for i, it := range items {
			bySeq[it.SequenceID] = append(bySeq[it.SequenceID], i)
		}
		for _, idx := range bySeq {
			sorted := slices.Clone(idx)
			slices.SortFunc(sorted, func(a, b int) int { return int(items[a].Position - items[b].Position) })
			for k, slot := range idx {
				order[slot] = sorted[k]
			}
		}
	}
	ids := make([]int64, len(items))
	for _, i := range order {
		it := items[i]
		it.State = bytes.Clone(it.State)
		seq := append(tx.events[it.SequenceID], it)
		slices.SortFunc(seq, func(a, b store.SequencedItem) int { return int(a.Position - b.Position) })
		tx.events[it.SequenceID] = seq
		ids[i] = int64(len(tx.log) + 1)
		tx.log = append(tx.log, store.Notification{ID: ids[i], SequencedItem: it})
	}
	return ids, nil
}

func selectFrom(seq []store.SequencedItem, q store.Query) []store.SequencedItem {
	var out []store.SequencedItem
	for _, it := range seq {
		if (q.After == nil || it.Position > *q.After) && (q.UpTo == nil || it.Position <= *q.UpTo) {
			it.State = bytes.Clone(it.State)
			out = append(out, it)
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

func (tx *refTx) SelectEvents(_ context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	return selectFrom(tx.events[id], q), nil
}

func (tx *refTx) SelectSequences(_ context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	return tx.r.selectSequences(tx.events, queries), nil
}

func (r *refRecorder) selectSequences(events map[uuid.UUID][]store.SequencedItem, queries map[uuid.UUID]store.Query) map[uuid.UUID][]store.SequencedItem {
	out := map[uuid.UUID][]store.SequencedItem{}
	for id, q := range queries {
		if r.sloppyMulti {
			q.Desc, q.Limit = false, 0
		}
		if items := selectFrom(events[id], q); len(items) > 0 {
			out[id] = items
		}
	}
	return out
}

func (tx *refTx) SetTrackings(ctx context.Context, ts []store.Tracking) error {
	for i, t := range ts {
		if tx.r.lastTracking && slices.ContainsFunc(ts[i+1:], func(u store.Tracking) bool {
			return u.Name == t.Name && u.Topic == t.Topic && u.Partition == t.Partition
		}) {
			continue
		}
		if err := tx.SetTracking(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

func (tx *refTx) SetTracking(_ context.Context, t store.Tracking) error {
	k := [3]string{t.Name, t.Topic, string(rune(t.Partition))}
	if stored, ok := tx.tracking[k]; ok && stored >= t.Position {
		err := &store.TrackingConflictError{Tracking: t, Stored: stored}
		tx.failed = err
		return err
	}
	tx.tracking[k] = t.Position
	return nil
}

func (r *refRecorder) InTx(ctx context.Context, fn func(store.Tx) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	tx := r.begin()
	if err := fn(tx); err != nil {
		return err
	}
	if tx.failed != nil && !r.ignoreFailed {
		return tx.failed
	}
	tx.commit()
	return nil
}

func (r *refRecorder) InsertEvents(ctx context.Context, items []store.SequencedItem) (ids []int64, err error) {
	err = r.InTx(ctx, func(tx store.Tx) error {
		ids, err = tx.InsertEvents(ctx, items)
		return err
	})
	return ids, err
}

func (r *refRecorder) SelectEvents(_ context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return selectFrom(r.events[id], q), nil
}

func (r *refRecorder) SelectSequences(_ context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.selectSequences(r.events, queries), nil
}

func (r *refRecorder) SelectNotifications(_ context.Context, after int64, limit int) ([]store.Notification, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []store.Notification
	for _, n := range r.log {
		if n.ID > after && len(out) < limit {
			n.State = bytes.Clone(n.State)
			if r.dropTrace {
				n.TraceParent = ""
			}
			out = append(out, n)
		}
	}
	return out, nil
}

func (r *refRecorder) MaxNotificationID(context.Context) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(len(r.log)), nil
}

func (r *refRecorder) Tracking(_ context.Context, name, topic string, partition int32) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.tracking[[3]string{name, topic, string(rune(partition))}]; ok {
		return p, nil
	}
	return -1, nil
}

func (r *refRecorder) InsertSnapshot(_ context.Context, it store.SequencedItem) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.snaps[it.SequenceID] {
		if s.Position == it.Position {
			return nil
		}
	}
	r.snaps[it.SequenceID] = append(r.snaps[it.SequenceID], it)
	return nil
}

func (r *refRecorder) LatestSnapshot(_ context.Context, id uuid.UUID, upTo int64) (store.SequencedItem, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, ok := store.SequencedItem{}, false
	for _, s := range r.snaps[id] {
		if (upTo < 0 || s.Position <= upTo) && (!ok || s.Position > best.Position) {
			best, ok = s, true
		}
	}
	if !ok {
		return best, store.ErrNotFound
	}
	return best, nil
}

func (r *refRecorder) Notify(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		delete(r.subs, ch)
		close(ch)
		r.mu.Unlock()
	})
	return ch
}

func TestReference(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.ProcessRecorder { return newRef() })
}

// TestSuiteCatchesBreakage runs the suite, in a child process, against
// recorders broken on purpose, and checks that the expected subtests fail: the
// suite can catch what it claims to.
func TestSuiteCatchesBreakage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite in child processes")
	}
	for _, tc := range []struct {
		broken   string
		failures []string
	}{
		{"validate", []string{"TestBroken/InvalidItems"}},
		{"partial", []string{"TestBroken/ConflictAtomic", "TestBroken/DuplicateInBatch"}},
		{"logorder", []string{"TestBroken/UnorderedBatchLogOrder"}},
		{"tracking", []string{"TestBroken/TrackingConflictSwallowed"}},
		{"sequences", []string{"TestBroken/SequencesReader"}},
		{"trackings", []string{"TestBroken/TrackingsSetter"}},
		{"trace", []string{"TestBroken/TraceParent"}},
	} {
		t.Run(tc.broken, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBroken$", "-test.v")
			cmd.Env = append(os.Environ(), "STORETEST_BROKEN="+tc.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a recorder broken by %q:\n%s", tc.broken, out)
			}
			for _, f := range tc.failures {
				if !strings.Contains(string(out), "--- FAIL: "+f+" ") {
					t.Errorf("broken by %q: %s did not fail:\n%s", tc.broken, f, out)
				}
			}
		})
	}
}

// TestBroken is run by TestSuiteCatchesBreakage only.
func TestBroken(t *testing.T) {
	broken := os.Getenv("STORETEST_BROKEN")
	if broken == "" {
		t.Skip("run by TestSuiteCatchesBreakage")
	}
	storetest.Run(t, func(t *testing.T) store.ProcessRecorder {
		r := newRef()
		switch broken {
		case "validate":
			r.skipValidate = true
		case "logorder":
			r.batchOrder = true
		case "tracking":
			r.ignoreFailed = true
		case "sequences":
			r.sloppyMulti = true
		case "trackings":
			r.lastTracking = true
		case "trace":
			r.dropTrace = true
		case "partial":
			return &partialRecorder{r}
		}
		return r
	}, storetest.Goroutines(20), storetest.Wait(time.Second))
}

// partialRecorder writes items one by one, outside of any transaction.
type partialRecorder struct{ *refRecorder }

func (p *partialRecorder) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	var ids []int64
	for _, it := range items {
		id, err := p.refRecorder.InsertEvents(ctx, []store.SequencedItem{it})
		if err != nil {
			return ids, err
		}
		ids = append(ids, id...)
	}
	return ids, nil
}
