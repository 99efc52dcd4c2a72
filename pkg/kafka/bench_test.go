package kafka_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchmarkRelay measures the relay from the memory recorder to an in-process
// kfake broker: b.N events of 1,000 entities, ~100-byte JSON states, stored
// beforehand; the clock runs from Run until the broker has acknowledged them
// all (RelayStats.LastPublishedID; the checkpoint follows within
// CheckpointInterval). It runs once for each producer compression codec
// (kafka.ProducerCompression), and reports the bytes the broker was sent and
// the process's CPU time (relay, client and broker) per event, which other
// processes on the machine disturb less than events/s.
//
//	go test -run '^$' -bench '^BenchmarkRelay$' -benchtime 200000x ./pkg/kafka/
func BenchmarkRelay(b *testing.B) {
	for _, codec := range kafka.CompressionNames() {
		b.Run("compression="+codec, func(b *testing.B) { benchmarkRelay(b, codec) })
	}
}

func benchmarkRelay(b *testing.B, codec string) {
	var sent batchBytes
	c := newCluster(b, 6, "example")
	rec := memory.New()
	items := exampleItems("example", 1000, b.N)
	for i := 0; i < len(items); i += 1000 {
		if _, err := rec.InsertEvents(context.Background(), items[i:min(i+1000, len(items))]); err != nil {
			b.Fatal(err)
		}
	}
	r := newRelay(b, newRelayClient(b, c, compression(b, codec), kgo.WithHooks(&sent)), rec, kafka.RelayConfig{})
	b.ResetTimer()
	start, cpu := time.Now(), processCPU()
	stop := runRelay(b, r)
	for r.Stats().LastPublishedID < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	elapsed, cpu := time.Since(start), processCPU()-cpu
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
	}
	time.Sleep(50 * time.Millisecond) // franz-go calls the hook from a goroutine of its own
	b.ReportMetric(float64(sent.bytes.Load())/float64(b.N), "wire-B/event")
}

// batchBytes adds up the bytes of the record batches a client wrote, after
// compression.
type batchBytes struct{ bytes atomic.Int64 }

func (h *batchBytes) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.bytes.Add(int64(m.CompressedBytes))
}

// BenchmarkRelayLatency measures one event at a time: from its commit until
// the broker has acknowledged it (RelayStats.LastPublishedID; in
// transactional mode, committed it).
//
//	go test -run '^$' -bench RelayLatency -benchtime 500x ./pkg/kafka/
func BenchmarkRelayLatency(b *testing.B) {
	for _, transactional := range []bool{false, true} {
		name := "at-least-once"
		if transactional {
			name = "transactional"
		}
		b.Run(name, func(b *testing.B) {
			c := newCluster(b, 6, "example")
			rec := memory.New()
			cfg := kafka.RelayConfig{Transactional: transactional}
			if transactional {
				cfg = txConfig(b, c, cfg)
			}
			r := newRelay(b, newRelayClient(b, c), rec, cfg)
			runRelay(b, r)
			waitFor(b, 10*time.Second, "relay active", func() bool { return r.Stats().Active })
			items := exampleItems("example", 100, b.N)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range items {
				start := time.Now()
				if _, err := rec.InsertEvents(context.Background(), items[i:i+1]); err != nil {
					b.Fatal(err)
				}
				for r.Stats().LastPublishedID < int64(i+1) {
					time.Sleep(50 * time.Microsecond)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// ResultCommandID reads the leading command_id of the values the writer
// stores, and decodes any other JSON.
func TestResultCommandID(t *testing.T) {
	id := uuid.New()
	it, err := wire.ResultItem(wire.Result{CommandID: id, Entity: "example", EntityID: uuid.New(), Status: wire.StatusAccepted})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		value string
		want  uuid.UUID
		fails bool
	}{
		{value: string(it.State), want: id},
		{value: `{"status":"accepted","command_id":"` + id.String() + `"}`, want: id},
		{value: `{"command_id":"` + id.String() + `x"}`, fails: true},
		{value: `{"command_id":"not-a-uuid-but-thirty-six-characters!"}`, fails: true},
		{value: `{}`, want: uuid.Nil},
		{value: `not json`, fails: true},
	} {
		got, err := kafka.ResultCommandID([]byte(c.value))
		if (err != nil) != c.fails || got != c.want {
			t.Errorf("ResultCommandID(%s) = %s, %v; want %s (fails %v)", c.value, got, err, c.want, c.fails)
		}
	}
}

// BenchmarkResultCommandID: the command id of a result, as the Commander
// reads every record of the results topic.
func BenchmarkResultCommandID(b *testing.B) {
	it, err := wire.ResultItem(wire.Result{CommandID: uuid.New(), Entity: "example", EntityID: uuid.New(), Status: wire.StatusAccepted, Version: 3, Positions: []int64{2}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := kafka.ResultCommandID(it.State); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayPostgres measures the relay from the PostgreSQL recorder to an
// in-process kfake broker in both modes, over one store: b.N events of 1,000
// entities, ~100-byte JSON states, stored beforehand; then, in turn, an
// at-least-once relay and a transactional one (each with a checkpoint of its
// own and a broker of its own) publish the whole log, twice each,
// alternating, and the best run of each counts. The clock runs from Run
// until the relay reports every event published (acknowledged, or
// committed). It reports both rates and their ratio (transactional over
// at-least-once). It needs EVENTLOG_TEST_POSTGRES_DSN.
//
//	go test -run '^$' -bench RelayPostgres -benchtime 200000x ./pkg/kafka/
func BenchmarkRelayPostgres(b *testing.B) {
	ctx := context.Background()
	rec, err := postgres.New(ctx, pgtest.Pool(b), postgres.Options{Schema: pgtest.Schema(b), Migrate: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rec.Close() })
	items := exampleItems("example", 1000, b.N)
	for i := 0; i < len(items); i += 1000 {
		if _, err := rec.InsertEvents(ctx, items[i:min(i+1000, len(items))]); err != nil {
			b.Fatal(err)
		}
	}
	last, err := rec.MaxNotificationID(ctx)
	if err != nil {
		b.Fatal(err)
	}
	run := func(name string, transactional bool) float64 {
		c := newCluster(b, 6, "example")
		cfg := kafka.RelayConfig{Name: name, Transactional: transactional}
		if transactional {
			cfg = txConfig(b, c, cfg)
		}
		r := newRelay(b, newRelayClient(b, c), rec, cfg)
		start := time.Now()
		stop := runRelay(b, r)
		for r.Stats().LastPublishedID < last {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		stop()
		return float64(b.N) / elapsed.Seconds()
	}
	b.ResetTimer()
	var alo, tx float64
	for round := range 2 {
		alo = max(alo, run(fmt.Sprintf("alo%d", round), false))
		tx = max(tx, run(fmt.Sprintf("tx%d", round), true))
	}
	b.StopTimer()
	b.ReportMetric(alo, "at-least-once-events/s")
	b.ReportMetric(tx, "transactional-events/s")
	b.ReportMetric(tx/alo, "ratio")
}

// BenchmarkRelayStores measures the relay from each store backend to an
// in-process kfake broker, in transactions (the services' default): b.N
// events of 1,000 entities, ~100-byte JSON states, stored beforehand in the
// memory recorder and in the backend's; then the memory relay and the
// backend's publish the whole log twice each, alternating (each run with a
// checkpoint and a broker of its own), and the best run of each counts. The
// clock runs from Run until the relay reports every event committed. It
// reports the backend's events/s, the memory recorder's in the same run, and
// their ratio. The PostgreSQL case needs EVENTLOG_TEST_POSTGRES_DSN (it
// skips without, and fails with EVENTLOG_REQUIRE_POSTGRES=1); SQLite is a
// file in a temporary directory (WAL, synchronous NORMAL).
//
//	go test -run '^$' -bench RelayStores -benchtime 200000x ./pkg/kafka/
func BenchmarkRelayStores(b *testing.B) {
	ctx := context.Background()
	b.Run("store=sqlite", func(b *testing.B) {
		rec, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "relay.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { rec.Close() })
		benchmarkRelayStore(b, rec)
	})
	b.Run("store=postgres", func(b *testing.B) {
		rec, err := postgres.New(ctx, pgtest.Pool(b), postgres.Options{Schema: pgtest.Schema(b), Migrate: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { rec.Close() })
		benchmarkRelayStore(b, rec)
	})
}

// relayStore is a store the relay reads that a benchmark fills.
type relayStore interface {
	kafka.RelaySource
	InsertEvents(context.Context, []store.SequencedItem) ([]int64, error)
	MaxNotificationID(context.Context) (int64, error)
}

func benchmarkRelayStore(b *testing.B, rec relayStore) {
	ctx := context.Background()
	mem := memory.New()
	items := exampleItems("example", 1000, b.N)
	for _, r := range []relayStore{mem, rec} {
		for i := 0; i < len(items); i += 1000 {
			if _, err := r.InsertEvents(ctx, items[i:min(i+1000, len(items))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	run := func(r relayStore, name string) float64 {
		last, err := r.MaxNotificationID(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c := newCluster(b, 6, "example")
		relay := newRelay(b, newRelayClient(b, c), r, txConfig(b, c, kafka.RelayConfig{Name: name}))
		start := time.Now()
		stop := runRelay(b, relay)
		for relay.Stats().LastPublishedID < last {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		stop()
		return float64(b.N) / elapsed.Seconds()
	}
	b.ResetTimer()
	var memRate, rate float64
	for round := range 2 {
		memRate = max(memRate, run(mem, fmt.Sprintf("mem%d", round)))
		rate = max(rate, run(rec, fmt.Sprintf("store%d", round)))
	}
	b.StopTimer()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(memRate, "memory-events/s")
	b.ReportMetric(rate/memRate, "ratio")
}

// BenchmarkRelayTracing is BenchmarkRelay, uncompressed, with tracing off,
// with every item carrying a trace context and tracing off (the relay sends
// it on as a header), and with tracing on: the SDK, every span sampled, a
// batch span processor and an exporter that drops what it gets; one span
// per page of 1,000, linked to the items' trace contexts (one per 10 items,
// as if commands of 10 events).
//
//	go test -run '^$' -bench RelayTracing -benchtime 200000x ./pkg/kafka/
func BenchmarkRelayTracing(b *testing.B) {
	for _, mode := range []string{"off", "off-with-traceparent", "on"} {
		b.Run("tracing="+mode, func(b *testing.B) {
			c := newCluster(b, 6, "example")
			rec := memory.New()
			items := exampleItems("example", 1000, b.N)
			if mode != "off" {
				for i := range items {
					items[i].TraceParent = fmt.Sprintf("00-%032x-%016x-01", i/10+1, i/10+1)
				}
			}
			for i := 0; i < len(items); i += 1000 {
				if _, err := rec.InsertEvents(context.Background(), items[i:min(i+1000, len(items))]); err != nil {
					b.Fatal(err)
				}
			}
			cfg := kafka.RelayConfig{}
			if mode == "on" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				cfg.TracerProvider = tp
			}
			r := newRelay(b, newRelayClient(b, c), rec, cfg)
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu := time.Now(), processCPU()
			stop := runRelay(b, r)
			for r.Stats().LastPublishedID < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			elapsed, cpu := time.Since(start), processCPU()-cpu
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			if cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
			}
		})
	}
}
