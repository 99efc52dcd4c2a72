package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// TestRelayOutOfOrderCommits appends events through the PostgreSQL recorder
// from several goroutines, in transactions that stay open for random times
// after their insert (so they commit in another order than they took their
// notification ids), some of them rolled back, while a writer service's relay
// publishes the log. Every committed event must reach Kafka, none may be
// skipped, none of the rolled-back ones may appear, and each sequence's events
// must arrive in position order.
//
// Bugs it catches: a relay (or a notification log) that reads "id > last
// checkpoint" and so skips an item whose id was taken before, and that
// committed after, an item already published (DESIGN invariant 2); a
// checkpoint that moves past an item still in an open transaction; a relay
// that publishes uncommitted or rolled-back items.
func TestRelayOutOfOrderCommits(t *testing.T) {
	t.Parallel()
	st := pgStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	startWriter(t, b, st.backend(t), e2etest.Log(t, slog.LevelWarn))

	var (
		workers = 8
		txs     = scaled(40, 12) // per worker
		mu      sync.Mutex
		commits []txRecord
	)
	// A steady trickle of quick appends keeps the relay reading while the
	// slow transactions are open.
	trickleCtx, stopTrickle := context.WithCancel(ctx)
	trickled := make(chan int, 1)
	go func() {
		n := 0
		for trickleCtx.Err() == nil {
			id := uuid.New()
			if _, err := st.rec.InsertEvents(trickleCtx, []store.SequencedItem{item(id, 0, n)}); err == nil {
				n++
			}
			time.Sleep(5 * time.Millisecond)
		}
		trickled <- n
	}()

	var wg sync.WaitGroup
	errc := make(chan error, workers)
	seed := testutil.Seed(t)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			seqs := []uuid.UUID{uuid.New(), uuid.New()}
			next := map[uuid.UUID]int64{}
			for i := range txs {
				seq := seqs[rng.IntN(len(seqs))]
				n := 1 + rng.IntN(3)
				items := make([]store.SequencedItem, n)
				for k := range items {
					items[k] = item(seq, next[seq]+int64(k), w*1000+i)
				}
				hold := time.Duration(rng.IntN(150)) * time.Millisecond
				if rng.IntN(8) == 0 {
					hold = time.Duration(500+rng.IntN(700)) * time.Millisecond
				}
				rollback := rng.IntN(10) == 0
				var ids []int64
				err := st.rec.InTx(ctx, func(tx store.Tx) error {
					var err error
					if ids, err = tx.InsertEvents(ctx, items); err != nil {
						return err
					}
					time.Sleep(hold)
					if rollback {
						return errRollback
					}
					return nil
				})
				switch {
				case rollback && errors.Is(err, errRollback):
					continue
				case err != nil:
					errc <- fmt.Errorf("worker %d tx %d: %w", w, i, err)
					return
				}
				next[seq] += int64(n)
				mu.Lock()
				commits = append(commits, txRecord{minID: ids[0]})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stopTrickle()
	trickle := <-trickled
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// The test exercised the case only if transactions committed in another
	// order than their notification ids.
	outOfOrder := 0
	for i, a := range commits {
		for _, c := range commits[i+1:] { // c committed after a
			if c.minID < a.minID {
				outOfOrder++
			}
		}
	}
	if outOfOrder == 0 {
		t.Fatalf("no transaction committed after one with a greater notification id: the test did not exercise out-of-order commits")
	}
	waitRelayed(t, st.rec, time.Minute)
	v := readStore(t, ctx, st.rec)
	kv := checkKafka(t, ctx, b, v)
	t.Logf("%d transactions committed (%d pairs committed out of id order), %d quick appends; %d events stored, %d event records on Kafka",
		len(commits), outOfOrder, trickle, v.eventCount(), len(kv.events))
}

var errRollback = errors.New("roll back on purpose")

// txRecord is a committed transaction (kept in commit order): its smallest
// notification id.
type txRecord struct{ minID int64 }

// item is an event of the example entity type at position pos of seq.
func item(seq uuid.UUID, pos int64, n int) store.SequencedItem {
	topic := "example.AttributeChanged"
	if pos == 0 {
		topic = "example.Created"
	}
	return store.SequencedItem{SequenceID: seq, Position: pos, Topic: topic, Codec: events.CodecJSON,
		State: fmt.Appendf(nil, `{"n":%d,"position":%d}`, n, pos)}
}
