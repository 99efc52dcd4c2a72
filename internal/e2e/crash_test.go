package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
)

// TestWriterSIGKILL runs the writer program as a child process and SIGKILLs
// it at random instants while commands flow, restarting it each time, then
// lets a last one finish the work and stops it with SIGTERM. Afterwards every
// command must have had exactly one effect, every stored event must be on
// Kafka, and Kafka must hold nothing the store does not.
//
// Bugs it catches: anything that breaks "a writer killed at any instant and
// restarted applies every command exactly once" (DESIGN, Delivery
// guarantees): a batch's events, results and tracking not committed together
// (a kill between them loses or repeats commands), a restarted writer that
// handles again records its tracking covers (a second result item; the
// command-id dedup would hide it otherwise), a relay checkpointing what the
// broker did not
// acknowledge (events missing from Kafka), a relay publishing before the
// commit (events on Kafka the store does not hold), a relay that republishes
// out of order after a restart, or a writer that does not start again on a
// store a killed one left behind (a stale lock, a half-applied migration).
//
// Each life of the writer uses a consumer group of its own (-group): a
// SIGKILLed member stays in its group until its session times out (45s),
// which would hold up every restart's rebalance. The writer resumes from the
// store's tracking, never from the group's offsets, so the group name does not
// matter to what the test checks.
func TestWriterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a writer process 20 times; skipped with -short")
	}
	// PostgreSQL: 500 entities, each created and updated 19 times (10,000
	// commands), 20 kills. SQLite, whose pure-Go driver is slow under the
	// race detector: half the commands and kills, to keep the package's run
	// time down; EVENTLOG_E2E_CRASH_ENTITIES and EVENTLOG_E2E_CRASH_KILLS
	// set both.
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		crashTest(t, pgStore(t), envInt("EVENTLOG_E2E_CRASH_ENTITIES", 500), envInt("EVENTLOG_E2E_CRASH_KILLS", 20))
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		crashTest(t, sqliteStore(t), envInt("EVENTLOG_E2E_CRASH_ENTITIES", 250), envInt("EVENTLOG_E2E_CRASH_KILLS", 10))
	})
}

func crashTest(t *testing.T, st *testStore, entities, kills int) {
	var (
		steps = 20                                      // one create and 19 updates each
		rate  = envInt("EVENTLOG_E2E_CRASH_RATE", 1000) // commands a second
	)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	wl := newWorkload(entities, steps)
	dir := t.TempDir()
	args := func(life int) []string {
		return append([]string{
			"-kafka-brokers", b.addrs[0], "-partitions", "4", "-http-addr", "127.0.0.1:0",
			"-group", fmt.Sprintf("writer-life-%d", life), "-log-level", "info",
		}, st.flags...)
	}

	// The commands flow while the writer is killed and restarted: each life
	// starts with another share of them being produced (in order, behind the
	// shares before), so that every life has work and the last one finishes it.
	prod := b.client(t)
	recs := wl.records(t)
	shares := make(chan []*kgo.Record, kills)
	produced := make(chan error, 1)
	go func() {
		for share := range shares {
			if err := produceAt(ctx, prod, share, rate); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()

	rng := testutil.Rand(t, 7)
	var (
		procs         []*proc
		progressLives int // lives in which the writer applied something
		killedBusy    int // kills while commands were still unapplied
		last          int
	)
	for life := range kills {
		shares <- recs[life*len(recs)/kills : (life+1)*len(recs)/kills]
		before := logHead(ctx, st)
		p := startProc(t, dir, fmt.Sprintf("life-%02d", life), args(life))
		procs = append(procs, p)
		// One life in five is killed during start-up; the others once they
		// have committed something, after a random further delay, so that
		// most kills land in the middle of batches and of relaying.
		var d time.Duration
		if rng.IntN(5) == 0 {
			d = time.Duration(rng.IntN(300)) * time.Millisecond
		} else {
			for logHead(ctx, st) == before && time.Since(p.started) < 30*time.Second && !p.exited() {
				time.Sleep(5 * time.Millisecond)
			}
			if logHead(ctx, st) == before && !p.exited() {
				t.Fatalf("writer life %d committed nothing visible in 30s (on PostgreSQL, a transaction left open anywhere in the cluster holds "+
					"back the notification log: see pg_stat_activity)\n%s", life, p.tail(30))
			}
			d = time.Since(p.started) + time.Duration(rng.IntN(700))*time.Millisecond
		}
		select {
		case <-time.After(time.Until(p.started.Add(d))):
		case <-p.done:
			t.Fatalf("writer life %d exited by itself: %v\n%s", life, p.waitErr, p.tail(30))
		}
		p.kill()
		n := countResults(ctx, st)
		if n > last {
			progressLives++
		}
		if n < wl.total() {
			killedBusy++
		}
		t.Logf("life %2d: killed %v after start; %d of %d commands applied", life, d.Round(time.Millisecond), n, wl.total())
		last = n
	}
	close(shares)
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}

	// The last life runs to completion and stops gracefully.
	final := startProc(t, dir, "final", args(kills))
	procs = append(procs, final)
	// Its signal handler is in place once it says it started: a SIGTERM
	// before that kills it (the earlier lives may have left it nothing to do).
	final.waitLog(t, "writer started", time.Minute)
	deadline := time.Now().Add(2 * time.Minute)
	for countResults(ctx, st) < wl.total() {
		if time.Now().After(deadline) || final.exited() {
			t.Fatalf("%d of %d commands applied; writer exited: %v\n%s", countResults(ctx, st), wl.total(), final.exited(), final.tail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitRelayed(t, st.rec, time.Minute)
	took, code, err := final.term(15 * time.Second)
	if err != nil || code != 0 {
		t.Errorf("final writer after SIGTERM: exit code %d, %v (after %s)\n%s", code, err, took, final.tail(30))
	}
	for _, p := range procs {
		if pr := p.problems(); len(pr) > 0 {
			t.Errorf("writer %s: %q\n%s", p.logPath, pr, p.tail(40))
		}
	}

	v := readStore(t, ctx, st.rec)
	checkExactlyOnce(t, v, wl, false)
	kv := checkKafka(t, ctx, b, v)
	if len(kv.dead) != 0 {
		t.Errorf("%d dead letters, want none", len(kv.dead))
	}
	t.Logf("%s: %d kills (%d while commands were unapplied, progress in %d lives); %d events, %d event records (%d repeats), %d result records (%d repeats)",
		st.name, kills, killedBusy, progressLives, v.eventCount(), len(kv.events), kv.eventDuplicates, len(kv.results), kv.resultDuplicates)
	// The test proves something only if kills hit a writer that was busy
	// and making progress.
	if killedBusy < kills*3/4 || progressLives < kills/2 {
		t.Errorf("%d of %d kills hit a busy writer, and %d lives made progress: the kills did not exercise the writer", killedBusy, kills, progressLives)
	}
}

// countResults counts the commands with a stored result (-1 on error).
func countResults(ctx context.Context, st *testStore) int {
	v, err := resultCount(ctx, st)
	if err != nil {
		return -1
	}
	return v
}

// logHead returns the store's greatest notification id (-1 on error): it moves
// whenever a writer commits.
func logHead(ctx context.Context, st *testStore) int64 {
	id, err := st.rec.MaxNotificationID(ctx)
	if err != nil {
		return -1
	}
	return id
}
