package postgres_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

type itemKey struct {
	id  uuid.UUID
	pos int64
}

// holdTx runs a transaction that appends items, then waits for release before
// committing. It returns when the items are inserted (not committed), with the
// items' notification ids and a channel that yields InTx's result.
func holdTx(t *testing.T, rec *postgres.Recorder, items []store.SequencedItem, release <-chan struct{}) ([]int64, <-chan error) {
	t.Helper()
	inserted := make(chan []int64, 1)
	done := make(chan error, 1)
	go func() {
		done <- rec.InTx(t.Context(), func(tx store.Tx) error {
			ids, err := tx.InsertEvents(t.Context(), items)
			if err != nil {
				close(inserted)
				return err
			}
			inserted <- ids
			select {
			case <-release:
				return nil
			case <-t.Context().Done(): // the test failed: do not hold up its cleanup
				return t.Context().Err()
			}
		})
	}()
	ids, ok := <-inserted
	if !ok {
		t.Fatalf("held transaction: %v", <-done)
	}
	return ids, done
}

// TestOutOfOrderCommits checks invariant 2: transactions commit in another
// order than they took their ids, while a tailer follows the log; the tailer
// gets every committed item exactly once. A naive tailer of a bigserial column
// in the same table, the negative control, must miss at least one.
func TestOutOfOrderCommits(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	ctx := t.Context()
	events := pgx.Identifier{schemaOf(t, rec), "eventlog_events"}.Sanitize()
	// The negative control: a serial taken at insert time, as a naive log would.
	if _, err := rec.Pool().Exec(ctx, "ALTER TABLE "+events+" ADD COLUMN naive_serial bigserial"); err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		committed = map[itemKey]int64{}
		good      = map[itemKey]int{} // times the recorder's tailer got each item
		naive     = map[itemKey]int{}
	)
	commit := func(items []store.SequencedItem, ids []int64) {
		mu.Lock()
		defer mu.Unlock()
		for i, it := range items {
			committed[itemKey{it.SequenceID, it.Position}] = ids[i]
		}
	}
	seen := func(m map[itemKey]int, k itemKey) int {
		mu.Lock()
		defer mu.Unlock()
		return m[k]
	}

	stop := make(chan struct{})
	var tailers sync.WaitGroup
	errs := make(chan error, 2)
	tailers.Go(func() { // the recorder's tailer
		after := int64(0)
		for {
			page, err := rec.SelectNotifications(ctx, after, 50)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			for _, n := range page {
				good[itemKey{n.SequenceID, n.Position}]++
				after = n.ID
			}
			mu.Unlock()
			if len(page) == 0 {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	})
	tailers.Go(func() { // the naive tailer
		last := int64(0)
		for {
			rows, err := rec.Pool().Query(ctx, "SELECT naive_serial, sequence_id, position FROM "+events+
				" WHERE naive_serial > $1 ORDER BY naive_serial LIMIT 50", last)
			if err != nil {
				errs <- err
				return
			}
			n := 0
			for rows.Next() {
				var k itemKey
				if err := rows.Scan(&last, &k.id, &k.pos); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				naive[k]++
				mu.Unlock()
				n++
			}
			if rows.Err() != nil {
				errs <- rows.Err()
				return
			}
			if n == 0 {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	})

	// Phase 1, deterministic: A takes the lower serial and xid and stays open
	// while B commits; the naive tailer reads B; then A commits.
	a, b := storetest.Item(uuid.New(), 0), storetest.Item(uuid.New(), 0)
	releaseA := make(chan struct{})
	idsA, doneA := holdTx(t, rec, []store.SequencedItem{a}, releaseA)
	idsB, err := rec.InsertEvents(ctx, []store.SequencedItem{b})
	if err != nil {
		t.Fatal(err)
	}
	commit([]store.SequencedItem{b}, idsB)
	kA, kB := itemKey{a.SequenceID, 0}, itemKey{b.SequenceID, 0}
	waitFor(t, "the naive tailer to read B", func() bool { return seen(naive, kB) > 0 })
	time.Sleep(20 * time.Millisecond) // the recorder's tailer polls meanwhile
	if seen(good, kB) > 0 {
		t.Fatal("the recorder's tailer returned B while A, with a smaller id, was still open")
	}
	close(releaseA)
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	commit([]store.SequencedItem{a}, idsA)
	if idsA[0] >= idsB[0] {
		t.Fatalf("A's id %d is not below B's %d: the setup is wrong", idsA[0], idsB[0])
	}

	// Phase 2: writers with random delays inside their open transactions.
	var writers sync.WaitGroup
	for w := range 8 {
		writers.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			id := uuid.New()
			for pos := int64(0); pos < 12; {
				n := 1 + rnd.IntN(3)
				items := storetest.Items(id, pos, n)
				var ids []int64
				err := rec.InTx(ctx, func(tx store.Tx) error {
					time.Sleep(time.Duration(rnd.IntN(3)) * time.Millisecond)
					var err error
					ids, err = tx.InsertEvents(ctx, items)
					time.Sleep(time.Duration(rnd.IntN(15)) * time.Millisecond)
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				commit(items, ids)
				pos += int64(n)
			}
		})
	}
	writers.Wait()
	waitFor(t, "the recorder's tailer to get every committed item", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(good) >= len(committed)
	})
	time.Sleep(20 * time.Millisecond) // let the naive tailer finish too
	close(stop)
	tailers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	for k := range committed {
		if good[k] != 1 {
			t.Errorf("%s/%d: the recorder's tailer got it %d times, want once", k.id, k.pos, good[k])
		}
	}
	if len(good) != len(committed) {
		t.Errorf("the recorder's tailer got %d distinct items, %d were committed", len(good), len(committed))
	}
	missed := 0
	for k := range committed {
		if naive[k] == 0 {
			missed++
		}
	}
	if naive[kA] != 0 {
		t.Errorf("negative control: the naive tailer got A, though it read B before A committed")
	}
	if missed == 0 {
		t.Errorf("negative control: the naive tailer missed nothing; the test cannot tell a broken log from a good one")
	}
	t.Logf("%d items committed; the recorder's tailer got all once, the naive tailer missed %d", len(committed), missed)
}

// TestLongRunningTransaction: while a transaction with the oldest id is open,
// the tailer gets nothing past it; once it commits, it gets everything, the
// held transaction's items first.
func TestLongRunningTransaction(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	ctx := t.Context()
	release := make(chan struct{})
	held := storetest.Items(uuid.New(), 0, 3)
	heldIDs, done := holdTx(t, rec, held, release)
	var later []int64
	for range 10 {
		ids, err := rec.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 2))
		if err != nil {
			t.Fatal(err)
		}
		later = append(later, ids...)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		page, err := rec.SelectNotifications(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 0 {
			t.Fatalf("while the oldest transaction is open the tailer got %d items (first id %d)", len(page), page[0].ID)
		}
		if id, err := rec.MaxNotificationID(ctx); err != nil || id != 0 {
			t.Fatalf("MaxNotificationID while the oldest transaction is open = %d, %v; want 0", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := append(append([]int64{}, heldIDs...), later...)
	var got []int64
	after := int64(0)
	waitFor(t, "the tailer to catch up", func() bool {
		page, err := rec.SelectNotifications(ctx, after, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range page {
			got = append(got, n.ID)
			after = n.ID
		}
		return len(got) >= len(want)
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tailer got ids %v, want %v", got, want)
	}
}

// TestLogOrderGuard checks invariant 3 where ids alone would break it: a
// transaction that took its id before another committed position 0 of a
// sequence must not append position 1 (its id would sort before position 0's).
func TestLogOrderGuard(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	ctx := t.Context()
	x, s := uuid.New(), uuid.New()
	older := make(chan error, 1)
	step := make(chan struct{})
	var xIDs []int64
	go func() {
		older <- rec.InTx(ctx, func(tx store.Tx) error {
			var err error
			if xIDs, err = tx.InsertEvents(ctx, storetest.Items(x, 0, 1)); err != nil { // takes the xid
				return err
			}
			select { // meanwhile a younger transaction commits s/0
			case step <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case <-step:
			case <-ctx.Done():
				return ctx.Err()
			}
			got, err := tx.SelectEvents(ctx, s, store.Query{})
			if err != nil {
				return err
			}
			if len(got) != 1 {
				return fmt.Errorf("the older tx sees %d items of s, want 1 (read committed)", len(got))
			}
			_, err = tx.InsertEvents(ctx, []store.SequencedItem{storetest.Item(s, 1), storetest.Item(x, 1)})
			var le *postgres.LogOrderError
			if !errors.Is(err, store.ErrConflict) || !errors.Is(err, postgres.ErrLogOrder) || !errors.As(err, &le) ||
				le.SequenceID != s || le.Position != 0 {
				return fmt.Errorf("appending s/1 after a younger tx's s/0 = %v; want a LogOrderError naming %s/0", err, s)
			}
			// Nothing of the call was written, and the tx is still usable.
			if _, err := tx.InsertEvents(ctx, storetest.Items(x, 1, 1)); err != nil {
				return fmt.Errorf("append after the refused one: %w", err)
			}
			return nil
		})
	}()
	<-step
	sIDs, err := rec.InsertEvents(ctx, storetest.Items(s, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	step <- struct{}{}
	if err := <-older; err != nil {
		t.Fatal(err)
	}
	if xIDs[0] >= sIDs[0] {
		t.Fatalf("the older tx's id %d is not below s/0's %d: without the guard nothing would break; the setup is wrong", xIDs[0], sIDs[0])
	}
	if got, _ := rec.SelectEvents(ctx, s, store.Query{}); len(got) != 1 {
		t.Fatalf("sequence s holds %d items after the refused append, want 1", len(got))
	}
	if got, _ := rec.SelectEvents(ctx, x, store.Query{}); len(got) != 2 {
		t.Fatalf("sequence x holds %d items, want 2", len(got))
	}
	// A retry in a new transaction succeeds, and the log keeps s in order.
	s1, err := rec.InsertEvents(ctx, storetest.Items(s, 1, 1))
	if err != nil {
		t.Fatalf("retry in a new transaction: %v", err)
	}
	if s1[0] <= sIDs[0] {
		t.Fatalf("s/1 got id %d, not after s/0's %d", s1[0], sIDs[0])
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, wait, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}

// schemaOf returns the recorder's schema.
func schemaOf(t *testing.T, rec *postgres.Recorder) string {
	t.Helper()
	return rec.Options().Schema
}
