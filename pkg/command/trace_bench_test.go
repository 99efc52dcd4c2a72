package command_test

import (
	"context"
	"fmt"
	"testing"

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
// exporter that drops what it gets.
//
//	go test -run '^$' -bench HandleBatchTracing ./pkg/command/
func BenchmarkHandleBatchTracing(b *testing.B) {
	for _, mode := range []string{"off", "off-with-traceparent", "on"} {
		b.Run("tracing="+mode, func(b *testing.B) {
			cfg := command.WriterConfig{}
			if mode == "on" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				cfg.TracerProvider = tp
			}
			benchmarkTraced(b, cfg, mode != "off")
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
	for range b.N {
		b.StopTimer()
		batch := next()
		b.StartTimer()
		if err := w.HandleBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "commands/s")
}
