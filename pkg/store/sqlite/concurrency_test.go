package sqlite_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// raceSamePosition makes n goroutines, spread over recs, append position 1
// of one sequence at once, half of them inside InTx; exactly one must win and
// every other one must get a *store.ConflictError naming the position.
func raceSamePosition(t *testing.T, recs []*sqlite.Recorder, n int) {
	t.Helper()
	ctx := t.Context()
	id := uuid.New()
	if _, err := recs[0].InsertEvents(ctx, storetest.Items(id, 0, 1)); err != nil {
		t.Fatal(err)
	}
	var (
		start    = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		winners  []int
		conflict int
		wrong    []error
	)
	for g := range n {
		wg.Go(func() {
			r := recs[g%len(recs)]
			it := storetest.Item(id, 1)
			it.State = fmt.Appendf(nil, `{"g":%d}`, g)
			<-start
			var err error
			if g%2 == 0 {
				_, err = r.InsertEvents(ctx, []store.SequencedItem{it})
			} else {
				err = r.InTx(ctx, func(tx store.Tx) error {
					_, err := tx.InsertEvents(ctx, []store.SequencedItem{storetest.Item(uuid.New(), 0), it})
					return err
				})
			}
			mu.Lock()
			defer mu.Unlock()
			var ce *store.ConflictError
			switch {
			case err == nil:
				winners = append(winners, g)
			case errors.As(err, &ce) && ce.SequenceID == id && ce.Position == 1:
				conflict++
			default:
				wrong = append(wrong, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d of %d appends failed with something else than the conflict, e.g. %v", len(wrong), n, wrong[0])
	}
	if len(winners) != 1 || conflict != n-1 {
		t.Fatalf("%d appends of one position: %d won, %d conflicts; want 1 winner", n, len(winners), conflict)
	}
	got, err := recs[len(recs)-1].SelectEvents(ctx, id, store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[1].State) != fmt.Sprintf(`{"g":%d}`, winners[0]) {
		t.Fatalf("sequence after the race = %+v; want the winner's item at 1", got)
	}
}

func TestRaceSamePosition(t *testing.T) {
	raceSamePosition(t, []*sqlite.Recorder{open(t, sqlite.Options{})}, 200)
}

// TestRaceSamePositionTwoRecorders stands for two processes sharing the file:
// each Recorder has its own connections, so they meet at SQLite's file locks
// and busy handling, not at the Recorder's own semaphore.
func TestRaceSamePositionTwoRecorders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	var recs []*sqlite.Recorder
	for range 2 {
		r, err := sqlite.Open(t.Context(), path, sqlite.Options{BusyTimeout: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		recs = append(recs, r)
	}
	raceSamePosition(t, recs, 200)
}

// TestCommitOrder: a transaction that starts later cannot commit earlier, so
// a tailer that continues from the last id it read never skips an item. With
// SQLite the second writer waits for the first one's write lock; this shows
// that the tailer sees nothing of either until each commits, and the two in
// commit order.
func TestCommitOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	ctx := t.Context()
	var recs [2]*sqlite.Recorder
	for i := range recs {
		r, err := sqlite.Open(ctx, path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		recs[i] = r
	}
	a, b := uuid.New(), uuid.New()
	tailer := recs[1]
	visible := func() []store.Notification {
		t.Helper()
		ns, err := tailer.SelectNotifications(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}

	inA, releaseA := make(chan struct{}), make(chan struct{})
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	var idsA, idsB []int64
	go func() {
		doneA <- recs[0].InTx(ctx, func(tx store.Tx) error {
			var err error
			idsA, err = tx.InsertEvents(ctx, storetest.Items(a, 0, 2))
			close(inA)
			<-releaseA
			return err
		})
	}()
	<-inA
	go func() {
		var err error
		idsB, err = recs[1].InsertEvents(ctx, storetest.Items(b, 0, 1))
		doneB <- err
	}()
	time.Sleep(50 * time.Millisecond) // B is waiting for the write lock now
	select {
	case err := <-doneB:
		t.Fatalf("B committed while A held the write lock: %v", err)
	default:
	}
	if ns := visible(); len(ns) != 0 {
		t.Fatalf("tailer sees %d items of open transactions", len(ns))
	}
	close(releaseA)
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	if idsB[0] <= idsA[1] {
		t.Fatalf("B committed after A but got id %d, not past A's %v", idsB[0], idsA)
	}
	ns := visible()
	if len(ns) != 3 || ns[0].ID != idsA[0] || ns[1].ID != idsA[1] || ns[2].ID != idsB[0] {
		t.Fatalf("tailer sees %+v, want A's two items then B's", ns)
	}
}

// TestTailWhileWriting: a tailer continuing from the last id it got receives
// every item exactly once while writers in two Recorders append.
func TestTailWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	ctx := t.Context()
	var recs [2]*sqlite.Recorder
	for i := range recs {
		r, err := sqlite.Open(ctx, path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		recs[i] = r
	}
	const writers, batches, per = 8, 20, 3
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			id := uuid.New()
			for b := range batches {
				if _, err := recs[w%2].InsertEvents(ctx, storetest.Items(id, int64(b*per), per)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	seen := map[int64]bool{}
	next := map[uuid.UUID]int64{}
	after := int64(0)
	deadline := time.Now().Add(20 * time.Second)
	wake := recs[0].Notify(ctx)
	for len(seen) < writers*batches*per {
		if time.Now().After(deadline) {
			t.Fatalf("tailer got %d of %d items", len(seen), writers*batches*per)
		}
		page, err := recs[1].SelectNotifications(ctx, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range page {
			if n.ID <= after || seen[n.ID] {
				t.Fatalf("id %d after %d, or seen twice", n.ID, after)
			}
			if n.Position != next[n.SequenceID] {
				t.Fatalf("%s/%d where %d is due", n.SequenceID, n.Position, next[n.SequenceID])
			}
			next[n.SequenceID]++
			seen[n.ID] = true
			after = n.ID
		}
		if len(page) == 0 {
			select {
			case <-wake:
			case <-time.After(5 * time.Millisecond): // the other Recorder's commits do not wake us
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
