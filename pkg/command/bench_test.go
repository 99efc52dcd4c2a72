package command_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchmarkHandleBatch measures commands/s through HandleBatch with the memory
// recorder: each batch creates size/2 new entities and updates size/2 entities
// spread over those created before (cached while there are fewer than
// DefaultCacheSize).
func BenchmarkHandleBatch(b *testing.B) {
	for _, size := range []int{100, 1000} {
		for _, conc := range []int{1, command.DefaultReadConcurrency} {
			b.Run(fmt.Sprintf("batch=%d/read_concurrency=%d", size, conc), func(b *testing.B) {
				benchmarkHandleBatch(b, size, conc)
			})
		}
	}
}

func benchmarkHandleBatch(b *testing.B, size, conc int) {
	ctx := context.Background()
	e := newEnv(b, command.WriterConfig{})
	// A plain memory recorder: the test recorder's bookkeeping would be measured too.
	rec := memory.New()
	w, err := command.NewWriter(rec, e.reg, e.mapper, command.WriterConfig{ReadConcurrency: conc})
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
			batch = append(batch, e.record(0, c))
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
	if s := w.Stats(); s.Accepted != int64((b.N+1)*size) {
		b.Fatalf("accepted %d of %d", s.Accepted, (b.N+1)*size)
	}
}
