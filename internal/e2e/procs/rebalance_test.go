package procs

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
)

// TestProjectorKeepsApplyingDuringRebalance: a projector process is
// SIGKILLed and started again at once (what an orchestrator does with a
// crashed pod), while events flow. The new process's join starts a
// rebalance, which the group coordinator holds open until the dead member's
// session expires (45s; the programs have no flag for it). With the
// cooperative-sticky balancer franz-go uses by default, the surviving
// projector keeps its partitions during that rebalance and should go on
// applying their events: the longest time it goes without committing a
// batch, while its partitions have records, must stay short.
//
// Bug it catches, present at the time of writing: after every successful
// batch, kafka.Consumer.process commits the batch's offsets to Kafka with
// the synchronous kgo.Client.CommitRecords, which waits for any join and
// sync of the group in progress (franz-go blocks commits during join&sync)
// up to ConsumerConfig.CommitTimeout (10s). So while a rebalance waits for
// a dead member, every surviving projector handles one batch per 10s (the
// writer uses the same consumer): here it commits nothing for about 10s at
// a time.
// The commit is only there for lag tooling (the position is the tracking,
// committed with the effect), so the fix is to take it off the batch path,
// in pkg/kafka/consumer.go: process records the batch's offsets as the
// latest to commit and signals a committer goroutine owned by Run, which
// commits the latest offsets (CommitOffsetsSync under CommitTimeout, a
// failure logged) while batches go on; Run stops it and commits once more
// before it leaves the group. (kgo.Client.CommitOffsets is no way out on its
// own: it too waits for join&sync before it returns.) A member that does not
// commit keeps getting its partitions' records through such a rebalance
// (checked with a plain franz-go member in the same scenario).
func TestProjectorKeepsApplyingDuringRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("needs half a minute of steady load; skipped with -short")
	}
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t, 0) // franz-go's session timeout: 45s
	startWriter(t, b, pg, e2etest.Log(t, slog.LevelError))
	ps := newProcSet(t)
	start := func(name string) (*proc, string) {
		addr := freeAddr(t)
		// One consumer a process, so that each process owns partitions
		// (with four each, the group could give all four to one process).
		p := ps.start(name, append(projectorArgs(b.addr, addr, pg.flags(appName(name))), "-consumers", "1")...)
		waitReady(t, p, addr, time.Minute)
		return p, addr
	}
	_, addr1 := start("projector-1")
	p2, _ := start("projector-2")

	wl := newWorkload(500, 30)
	prod := b.client(t)
	produced := make(chan error, 1)
	go func() { produced <- produceAt(ctx, prod, wl.records(), 400) }()

	batches := func() float64 {
		v, err := metric(ctx, addr1, "eventlog_consumer_batches_total")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Steady state: projector-1 commits batches.
	time.Sleep(5 * time.Second)
	if n := batches(); n == 0 {
		t.Fatal("projector-1 has committed no batch in 5s")
	}
	p2.kill()
	start("projector-3")
	tRestart := time.Now()

	// Watch projector-1 for 20s: the longest stretch without a committed
	// batch.
	last, lastAt := batches(), time.Now()
	var longest time.Duration
	for time.Since(tRestart) < 20*time.Second {
		time.Sleep(250 * time.Millisecond)
		if n := batches(); n != last {
			last, lastAt = n, time.Now()
		}
		longest = max(longest, time.Since(lastAt))
	}
	select {
	case err := <-produced:
		if err != nil {
			t.Fatal(err)
		}
		t.Fatal("production ended before the watch did: the test needs records flowing throughout")
	default:
	}
	ok, msg, err := pg.caughtUp(ctx, kadm.NewClient(b.client(t)))
	t.Logf("after a projector was SIGKILLed and restarted: projector-1's longest stretch without a committed batch in 20s: %s; read model %v %s %v",
		longest.Round(time.Millisecond), ok, msg, err)
	if longest > 4*time.Second {
		t.Errorf("projector-1 committed no batch for %s while a rebalance waited for a dead member (records were flowing)", longest.Round(time.Millisecond))
	}
}
