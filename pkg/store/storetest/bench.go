package storetest

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// Bench measures rec's hot paths as sub-benchmarks:
//
//   - Append/items=N: one InsertEvents of N items (one transaction), reported
//     as events/s;
//   - AppendParallel/items=10: the same from GOMAXPROCS*4 goroutines at once;
//   - Replay/events=1000: SelectEvents of a whole 1,000-event sequence, with
//     latency percentiles p50-ms and p99-ms;
//   - NotificationPage/limit=1000: one SelectNotifications page of 1,000 items.
//
// rec should be empty; Bench appends to it.
func Bench(b *testing.B, rec store.ProcessRecorder) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("Append/items=%d", n), func(b *testing.B) { BenchAppend(b, rec, n) })
	}
	b.Run("AppendParallel/items=10", func(b *testing.B) {
		b.SetParallelism(4)
		var events atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			var local int64
			for pb.Next() {
				if _, err := rec.InsertEvents(b.Context(), Items(uuid.New(), 0, 10)); err != nil {
					b.Error(err)
					return
				}
				local += 10
			}
			events.Add(local)
		})
		b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("Replay/events=1000", func(b *testing.B) { BenchReplay(b, rec, 1000) })
	b.Run("NotificationPage/limit=1000", func(b *testing.B) { BenchNotificationPage(b, rec, 1000) })
}

// BenchAppend measures appends of n items per InsertEvents call.
func BenchAppend(b *testing.B, rec store.AggregateRecorder, n int) {
	ctx := b.Context()
	id, pos := uuid.New(), int64(0)
	b.ReportAllocs()
	for b.Loop() {
		if pos+int64(n) > 10_000 {
			id, pos = uuid.New(), 0
		}
		if _, err := rec.InsertEvents(ctx, Items(id, pos, n)); err != nil {
			b.Fatal(err)
		}
		pos += int64(n)
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchReplay measures reading a whole sequence of n events, reporting the
// median and 99th percentile latency.
func BenchReplay(b *testing.B, rec store.AggregateRecorder, n int) {
	ctx := b.Context()
	id := uuid.New()
	for pos := 0; pos < n; pos += 100 {
		if _, err := rec.InsertEvents(ctx, Items(id, int64(pos), min(100, n-pos))); err != nil {
			b.Fatal(err)
		}
	}
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		got, err := rec.SelectEvents(ctx, id, store.Query{})
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != n {
			b.Fatalf("replay read %d events, want %d", len(got), n)
		}
	}
	p50, p99 := percentiles(lat)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchNotificationPage measures reading one page of limit notifications,
// appending first so that the log holds at least limit items.
func BenchNotificationPage(b *testing.B, rec store.ApplicationRecorder, limit int) {
	ctx := b.Context()
	deadline := time.Now().Add(time.Minute)
	for {
		if time.Now().After(deadline) {
			b.Fatalf("the log shows fewer than %d items after a minute of appends (held back by a transaction open elsewhere?)", limit)
		}
		page, err := rec.SelectNotifications(ctx, 0, limit)
		if err != nil {
			b.Fatal(err)
		}
		if len(page) == limit {
			break
		}
		if _, err := rec.InsertEvents(ctx, Items(uuid.New(), 0, min(100, limit-len(page)))); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let the log's horizon pass what was just committed
	}
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		page, err := rec.SelectNotifications(ctx, 0, limit)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		if len(page) != limit {
			b.Fatalf("page holds %d items, want %d", len(page), limit)
		}
	}
	p50, p99 := percentiles(lat)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(limit*b.N)/b.Elapsed().Seconds(), "items/s")
}

func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)]
}
