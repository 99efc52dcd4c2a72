package httpapi_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
)

// streamStores are the stores the stream benchmarks run on.
func streamStores(b *testing.B) map[string]func(b *testing.B) store.ApplicationRecorder {
	return map[string]func(b *testing.B) store.ApplicationRecorder{
		"memory": func(*testing.B) store.ApplicationRecorder { return memory.New() },
		"sqlite": func(b *testing.B) store.ApplicationRecorder {
			rec, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "s.db"), sqlite.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { rec.Close() })
			return rec
		},
		"postgres": func(b *testing.B) store.ApplicationRecorder {
			rec, err := postgres.New(b.Context(), pgtest.Pool(b), postgres.Options{Schema: pgtest.Schema(b), Migrate: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { rec.Close() })
			return rec
		},
	}
}

// BenchmarkStreamCatchUp: how fast a client reads the notification log
// from the start over SSE (events/s), 10,000 small events a run.
func BenchmarkStreamCatchUp(b *testing.B) {
	for _, name := range []string{"memory", "sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			a := newStreamAPIOn(b, streamStores(b)[name](b), httpapi.StreamConfig{})
			const n = 10_000
			for i := 0; i < n; i += 1000 {
				a.appendEvents(b, "example", uuid.New(), 0, 1000, "v")
			}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				s := a.open(b, "/v1/notifications/stream", "")
				got := s.take(b, n)
				if last := got[n-1].decode(b); last.Position != 999 {
					b.Fatalf("the last event is %+v", last)
				}
				s.resp.Body.Close()
			}
			b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkStreamLive: from an append's commit to its event at a client
// following the log (after=end) and at one following the entity, one
// event at a time; p50 and p99 of each. "idle" appends the next event 60 ms
// after the last arrived (a stream reads the store at most once per
// MinReadInterval, 50 ms, on wake-ups), "busy" at once.
func BenchmarkStreamLive(b *testing.B) {
	for _, run := range []string{"memory/idle", "memory/busy", "sqlite/idle", "sqlite/busy", "postgres/idle", "postgres/busy"} {
		name, mode, _ := strings.Cut(run, "/")
		b.Run(run, func(b *testing.B) {
			a := newStreamAPIOn(b, streamStores(b)[name](b), httpapi.StreamConfig{})
			id := uuid.New()
			a.appendEvents(b, "example", id, 0, 1, "v")
			follow := func(s *sseReader, n int) <-chan time.Time {
				arrived := make(chan time.Time, n)
				go func() {
					for range n {
						if _, err := s.next(b); err != nil {
							return
						}
						arrived <- time.Now()
					}
				}()
				return arrived
			}
			log := follow(a.open(b, "/v1/notifications/stream?after=end", ""), b.N)
			one := follow(a.open(b, "/v1/entities/example/"+id.String()+"/stream", "0"), b.N)
			var toLog, toOne []time.Duration
			b.ResetTimer()
			for i := range b.N {
				if mode == "idle" {
					time.Sleep(60 * time.Millisecond)
				}
				start := time.Now()
				a.appendEvents(b, "example", id, i+1, 1, "v")
				for _, c := range []struct {
					arrived <-chan time.Time
					into    *[]time.Duration
				}{{log, &toLog}, {one, &toOne}} {
					select {
					case at := <-c.arrived:
						*c.into = append(*c.into, at.Sub(start))
					case <-time.After(10 * time.Second):
						b.Fatalf("event %d did not arrive within 10s", i+1)
					}
				}
			}
			b.StopTimer()
			pct := func(d []time.Duration, p float64) float64 {
				slices.Sort(d)
				return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
			}
			b.ReportMetric(pct(toLog, .5), "log-p50-ms")
			b.ReportMetric(pct(toLog, .99), "log-p99-ms")
			b.ReportMetric(pct(toOne, .5), "entity-p50-ms")
			b.ReportMetric(pct(toOne, .99), "entity-p99-ms")
		})
	}
}
