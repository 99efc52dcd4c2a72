package command_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchmarkHandleBatchTracing is BenchmarkHandleBatch (batches of 1,000,
// read concurrency 8) with tracing off, with every record carrying a
// traceparent and tracing off (the header is read and stored), and with
// tracing on: the SDK, every span sampled, a batch span processor and an
// exporter that drops what it gets; and on with 1% of new traces sampled
// (parentbased_traceidratio 0.01), for records without a traceparent. It reports the process's CPU time per
// command, which other load disturbs less than commands/s.
//
//	go test -run '^$' -bench HandleBatchTracing ./pkg/command/
func BenchmarkHandleBatchTracing(b *testing.B) {
	for _, mode := range []string{"off", "off-with-traceparent", "on", "on-sampled-1%"} {
		b.Run("tracing="+mode, func(b *testing.B) {
			cfg := command.WriterConfig{}
			sampler := sdktrace.AlwaysSample()
			if mode == "on-sampled-1%" {
				sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))
			}
			if mode == "on" || mode == "on-sampled-1%" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sampler))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				cfg.TracerProvider = tp
			}
			benchmarkTraced(b, cfg, mode == "off-with-traceparent" || mode == "on")
		})
	}
}

func benchmarkTraced(b *testing.B, cfg command.WriterConfig, header bool) {
	const size = 1000
	ctx := context.Background()
	e := newEnv(b, command.WriterConfig{})
	w, err := command.NewWriter(memory.New(), e.reg, e.mapper, cfg)
	if err != nil {
		b.Fatal(err)
	}
	var created []uuid.UUID
	k := 0
	next := func() []wire.Record {
		batch := make([]wire.Record, 0, size)
		for i := range size {
			var c wire.Command
			if i%2 == 0 || len(created) < size {
				id := uuid.New()
				created = append(created, id)
				c = cmd("create", "example", id, `{"foo": "bar", "n": 1}`)
			} else {
				k++
				c = cmd("update", "example", created[(k*7919)%len(created)], `{"foo": "baz"}`)
			}
			r := e.record(0, c)
			if header {
				r = withTraceParent(r, fmt.Sprintf("00-%032x-%016x-01", k+i+1, i+1))
			}
			batch = append(batch, r)
		}
		return batch
	}
	if err := w.HandleBatch(ctx, next()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	for range b.N {
		b.StopTimer()
		batch := next()
		b.StartTimer()
		c0 := processCPU()
		if err := w.HandleBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		cpu += processCPU() - c0
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "commands/s")
	// CPU time, which other processes on the machine disturb less than
	// commands/s (it includes the batch span processor's goroutine, and
	// the garbage collector's).
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*size), "cpu-ns/command")
}
