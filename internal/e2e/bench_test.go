package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/store"
)

// BenchmarkEndToEnd measures one writer service end to end: an in-process
// broker (kfake) and the local PostgreSQL (EVENTLOG_TEST_POSTGRES_DSN). Each
// sub-benchmark runs its scenario once per iteration; run it with
// -benchtime 1x:
//
//	GOEXPERIMENT=jsonv2 EVENTLOG_TEST_POSTGRES_DSN=... go test -run '^$' -bench . -benchtime 1x ./internal/e2e/
//
// Figures (b.ReportMetric):
//
//   - throughput: commands/s from the first produce to the last result
//     consumed on eventlog.command-results, for 20,000 commands produced as
//     fast as possible (EVENTLOG_E2E_BENCH_COMMANDS), 4,000 entities each
//     created and updated 4 times; also the events/s this made on the events
//     topic.
//   - relay: events/s reaching the events topic when the relay starts with
//     100,000 events in the store (EVENTLOG_E2E_BENCH_EVENTS), from the first
//     record consumed to the last.
//   - latency: p50 and p99 in ms from a command's produce acknowledgement to
//     its result consumed, producing at a fixed 2,000 commands/s for 10s
//     (EVENTLOG_E2E_BENCH_RATE, EVENTLOG_E2E_BENCH_SECONDS).
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("throughput", func(b *testing.B) {
		n := envInt("EVENTLOG_E2E_BENCH_COMMANDS", 20000)
		for range b.N {
			benchThroughput(b, n)
		}
	})
	b.Run("relay", func(b *testing.B) {
		n := envInt("EVENTLOG_E2E_BENCH_EVENTS", 100000)
		for range b.N {
			benchRelay(b, n)
		}
	})
	b.Run("latency", func(b *testing.B) {
		rate := envInt("EVENTLOG_E2E_BENCH_RATE", 2000)
		secs := envInt("EVENTLOG_E2E_BENCH_SECONDS", 10)
		for range b.N {
			benchLatency(b, rate, secs)
		}
	})
}

func benchThroughput(b *testing.B, n int) {
	b.StopTimer()
	st := pgStore(b)
	br := newBroker(b)
	br.createTopics(b)
	wl := newWorkload(n/5, 5)
	recs := wl.records(b)
	results := watchResults(b, br)
	events := countRecords(b, br, eventsTopic)
	w := startWriter(b, br, st.backend(b), quietLog())
	prod := br.client(b, kgo.MaxBufferedRecords(n+1))
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	b.StartTimer()

	t0 := time.Now()
	var failed atomic.Value
	for _, r := range recs {
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	produced := time.Since(t0)
	results.waitDistinct(b, len(recs), 4*time.Minute)
	took := time.Since(t0)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	evN, evFirst, evLast := events.snapshot()
	stats := w.w.Stats()
	b.ReportMetric(float64(len(recs))/took.Seconds(), "commands/s")
	if evN > 1 {
		b.ReportMetric(float64(evN-1)/evLast.Sub(evFirst).Seconds(), "events/s")
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%d commands: produced in %s, all results in %s; %d batches (%.0f records each, mean append %s); %d events on Kafka",
		len(recs), produced.Round(time.Millisecond), took.Round(time.Millisecond), stats.Batches,
		float64(stats.Records)/float64(max(stats.Batches, 1)), (stats.AppendTime / time.Duration(max(stats.Batches, 1))).Round(time.Microsecond), evN)
}

func benchRelay(b *testing.B, n int) {
	b.StopTimer()
	st := pgStore(b)
	br := newBroker(b)
	br.createTopics(b)
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	// n events: 1,000 per append, 10 per sequence.
	const perSeq = 10
	for i := 0; i < n; i += 1000 {
		items := make([]store.SequencedItem, 0, 1000)
		var seq uuid.UUID
		for k := i; k < min(i+1000, n); k++ {
			if k%perSeq == 0 {
				seq = uuid.New()
			}
			items = append(items, item(seq, int64(k%perSeq), k))
		}
		if _, err := st.rec.InsertEvents(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	events := countRecords(b, br, eventsTopic)
	b.StartTimer()
	startWriter(b, br, st.backend(b), quietLog())
	deadline := time.Now().Add(4 * time.Minute)
	for {
		got, first, last := events.snapshot()
		if got >= n {
			b.StopTimer()
			b.ReportMetric(float64(got-1)/last.Sub(first).Seconds(), "events/s")
			b.ReportMetric(0, "ns/op")
			b.Logf("%d events relayed in %s", got, last.Sub(first).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events relayed", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func benchLatency(b *testing.B, rate, secs int) {
	b.StopTimer()
	st := pgStore(b)
	br := newBroker(b)
	br.createTopics(b)
	n := rate * secs
	wl := newWorkload(n/5, 5)
	recs := wl.records(b)
	results := watchResults(b, br)
	startWriter(b, br, st.backend(b), quietLog())
	prod := br.client(b)
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	// Warm up: the first commands pay for connections and metadata.
	warm := newWorkload(50, 1)
	produce(b, ctx, prod, warm.records(b)...)
	results.waitDistinct(b, warm.total(), time.Minute)
	b.StartTimer()

	var (
		mu    sync.Mutex
		acked = make(map[uuid.UUID]time.Time, n)
		fail  error
	)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i, r := range recs {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		id := commandID(r)
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail = err
			}
			acked[id] = now
		})
	}
	sendTook := time.Since(start)
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	results.waitDistinct(b, warm.total()+len(recs), 2*time.Minute)
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if fail != nil {
		b.Fatal(fail)
	}
	lat := make([]time.Duration, 0, len(recs))
	for id, at := range acked {
		got, ok := results.firstAt(id)
		if !ok {
			b.Fatalf("no result time for %s", id)
		}
		lat = append(lat, got.Sub(at))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(recs))/sendTook.Seconds(), "sent/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d commands at %d/s: p50 %s, p90 %s, p99 %s, max %s", len(recs), rate, pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1])
}

// commandID returns the command id of a command record of the workload.
func commandID(r *kgo.Record) uuid.UUID {
	var c struct {
		ID uuid.UUID `json:"command_id"`
	}
	_ = json.Unmarshal(r.Value, &c)
	return c.ID
}

// recordCounter counts the records of a topic as they are consumed.
type recordCounter struct {
	mu          sync.Mutex
	n           int
	first, last time.Time
}

func (c *recordCounter) snapshot() (int, time.Time, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.first, c.last
}

// countRecords consumes topic from its start and counts its records.
func countRecords(t testing.TB, b *broker, topic string) *recordCounter {
	c := &recordCounter{}
	cl := b.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			k := fs.NumRecords()
			if k == 0 {
				continue
			}
			now := time.Now()
			c.mu.Lock()
			if c.n == 0 {
				c.first = now
			}
			c.n += k
			c.last = now
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}
