package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchmarkProjectorLatency runs a writer and a projector service (four
// consumers) on PostgreSQL and an in-process kfake broker, produces create
// commands at a fixed rate (2,000 a second, one event each;
// EVENTLOG_BENCH_RATE overrides) for five seconds, and reports the p50 and p99
// latency from each event's timestamp (set by the writer when it decides) to
// the commit of the read-model batch that applied it: append, relay, Kafka
// and projection. Run it with -benchtime 1x.
func BenchmarkProjectorLatency(b *testing.B) {
	rate := 2000
	if v, err := strconv.Atoi(os.Getenv("EVENTLOG_BENCH_RATE")); err == nil && v > 0 {
		rate = v
	}
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	pool := pgtest.Pool(b)
	schema := pgtest.Schema(b)
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, Migrate: true})
	if err != nil {
		b.Fatal(err)
	}
	defer rec.Close()
	backend := service.Backend{Recorder: rec, Snapshots: rec, Locker: kafka.NewLocalLock(), Name: "postgres"}
	k := service.Kafka{ClientOptions: startBroker(b), Topics: wire.Topics{Prefix: "eventlog"}, Partitions: 4, ReplicationFactor: -1}
	rm, err := pgreadmodel.New(pool, pgreadmodel.Options{Schema: schema, Types: []string{"example"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := rm.Migrate(ctx); err != nil {
		b.Fatal(err)
	}

	var (
		mu      sync.Mutex
		samples []time.Duration
		applied int
		// When a plain consumer saw each event on Kafka, by key and
		// timestamp, to split the latency into event→Kafka (append,
		// relay) and Kafka→read model.
		seenMu  sync.Mutex
		seen    = map[string]time.Time{}
		toKafka []time.Duration
	)
	w, err := service.NewWriter(ctx, service.WriterConfig{Backend: backend, Kafka: k, Entities: []string{"example"}, Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	p, err := service.NewProjector(ctx, service.ProjectorConfig{
		Backend: backend, Kafka: k, Entities: []string{"example"}, ReadModel: rm, Consumers: 4, Log: quietLog(),
		Committed: func(_ string, recs []wire.Record, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			seenMu.Lock()
			for _, r := range recs {
				samples = append(samples, at.Sub(r.Timestamp))
				if t, ok := seen[string(r.Key)+"/"+r.Timestamp.String()]; ok {
					toKafka = append(toKafka, t.Sub(r.Timestamp))
				}
			}
			seenMu.Unlock()
			applied += len(recs)
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	watch, err := kgo.NewClient(append(k.ClientOptions, kgo.ConsumeTopics(k.Topics.Events("example")), kgo.FetchMaxWait(time.Second))...)
	if err != nil {
		b.Fatal(err)
	}
	defer watch.Close()
	go func() {
		for ctx.Err() == nil {
			fs := watch.PollFetches(ctx)
			now := time.Now()
			seenMu.Lock()
			fs.EachRecord(func(r *kgo.Record) { seen[string(r.Key)+"/"+r.Timestamp.String()] = now })
			seenMu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{w.Run, p.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				b.Error(err)
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	prod, err := kgo.NewClient(append(k.ClientOptions, kgo.ProducerLinger(0))...)
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	create := func() *kgo.Record {
		id := uuid.New()
		v, _ := json.Marshal(wire.Command{CommandID: uuid.New(), Type: "create", Entity: "example", EntityID: id, Data: json.RawMessage(`{"n":1}`)})
		return &kgo.Record{Topic: k.Topics.Commands(), Key: []byte(id.String()), Value: v}
	}
	waitApplied := func(n int) {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := applied
			mu.Unlock()
			if got >= n {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.Fatalf("the read model did not get %d events within 2 minutes", n)
	}
	// Warm up: the groups are formed (each consumer's join makes the group
	// rebalance, in two rounds for the cooperative hand-over) and the tables
	// are hot.
	for round := range 3 {
		for range 200 {
			prod.Produce(ctx, create(), nil)
		}
		waitApplied(200 * (round + 1))
		time.Sleep(2 * time.Second)
	}

	const phase = 5 * time.Second
	for b.Loop() {
		mu.Lock()
		samples, applied, toKafka = samples[:0], 0, toKafka[:0]
		mu.Unlock()
		n := int(phase.Seconds() * float64(rate))
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
			prod.Produce(ctx, create(), nil)
		}
		waitApplied(n)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(samples)
	q := func(f float64) float64 { return float64(samples[int(f*float64(len(samples)-1))]) / 1e6 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(rate), "events/s")
	slices.Sort(toKafka)
	if len(toKafka) > 0 {
		qk := func(f float64) float64 { return float64(toKafka[int(f*float64(len(toKafka)-1))]) / 1e6 }
		fmt.Fprintf(os.Stderr, "of which event to Kafka (append, relay): p50 %.1f ms, p99 %.1f ms over %d events\n", qk(0.5), qk(0.99), len(toKafka))
	}
	fmt.Fprintf(os.Stderr, "projector latency at %d events/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d events\n",
		rate, q(0.5), q(0.99), q(1), len(samples))
}
