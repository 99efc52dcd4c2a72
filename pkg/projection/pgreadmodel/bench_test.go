package pgreadmodel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// eventSource makes a stream of event records of many entities: each record
// creates an entity or sets an attribute of one, picked at random, as the
// relay would publish them on one partition.
type eventSource struct {
	rng       *rand.Rand
	mapper    *events.Mapper
	ids       []uuid.UUID
	next      []int64 // next position of each entity
	offset    int64
	clock     time.Time
	nextNID   int64
	partition int32
}

func newEventSource(mapper *events.Mapper, entities int) *eventSource {
	s := &eventSource{rng: rand.New(rand.NewPCG(1, 2)), mapper: mapper, ids: make([]uuid.UUID, entities), next: make([]int64, entities),
		clock: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range s.ids {
		s.ids[i] = uuid.New()
	}
	return s
}

// batch returns n records. With commands, the records come from commands as
// the writer stores them: a create, or an update of one to four attributes
// of one entity (one event each, consecutive). Without, every record is an
// event of a random entity: the worst case for the fold, which then merges
// almost nothing.
func (s *eventSource) batch(b *testing.B, n int, commands bool) []wire.Record {
	recs := make([]wire.Record, 0, n)
	for len(recs) < n {
		k := s.rng.IntN(len(s.ids))
		events := 1
		if commands && s.next[k] > 0 {
			events = 1 + s.rng.IntN(4)
		}
		for e := 0; e < events && len(recs) < n; e++ {
			recs = append(recs, s.event(b, k))
		}
	}
	return recs
}

func (s *eventSource) event(b *testing.B, k int) wire.Record {
	var ev events.Event
	if s.next[k] == 0 {
		ev = &entity.Created{Type: "example", Attributes: map[string]json.RawMessage{
			"foo": json.RawMessage(`"bar"`), "n": json.RawMessage(`0`), "tags": json.RawMessage(`["a","b"]`)}}
	} else {
		ev = &entity.AttributeChanged{Type: "example", Name: fmt.Sprintf("a%d", s.rng.IntN(8)), Value: json.RawMessage(fmt.Sprint(s.offset))}
	}
	m := ev.EventMeta()
	s.clock = s.clock.Add(time.Millisecond)
	m.OriginatorID, m.OriginatorVersion, m.Timestamp = s.ids[k], s.next[k], s.clock
	it, err := s.mapper.ToItem(ev)
	if err != nil {
		b.Fatal(err)
	}
	s.next[k]++
	s.nextNID++
	rec := projection.RecordOf(store.Notification{ID: s.nextNID, SequencedItem: it}, projtest.Topics.Events("example"), s.partition, s.offset)
	s.offset++
	return rec
}

// BenchmarkApply measures one runner applying batches of event records to
// the PostgreSQL read model: tracking, the position guard, decoding, the fold
// and the upsert, one transaction per batch. Workloads: "events" (each event
// of a random one of 20,000 entities) and "commands" (creates, and updates
// of one to four attributes, of random entities). events/s counts the time
// in HandleBatch only. Tunings: "default"; "async" (AsyncCommit);
// "async+noindex" (AsyncCommit and NoAttributeIndex).
func BenchmarkApply(b *testing.B) {
	for _, load := range []string{"events", "commands"} {
		for _, tune := range []string{"default", "async", "async+noindex"} {
			for _, size := range []int{100, 1000} {
				b.Run(fmt.Sprintf("load=%s/%s/batch=%d", load, tune, size), func(b *testing.B) {
					e := newEnv(b)
					rm, err := pgreadmodel.New(e.pool, pgreadmodel.Options{
						Schema: e.schema, TablePrefix: "bench_", Types: projtest.Types,
						AsyncCommit: tune != "default", NoAttributeIndex: tune == "async+noindex",
					})
					if err != nil {
						b.Fatal(err)
					}
					if err := rm.Migrate(ctx(b)); err != nil {
						b.Fatal(err)
					}
					r := e.runner(b, rm)
					src := newEventSource(e.mapper, 20_000)
					ctx := b.Context()
					var applied int
					var busy time.Duration
					for b.Loop() {
						b.StopTimer()
						recs := src.batch(b, size, load == "commands")
						b.StartTimer()
						start := time.Now()
						if err := r.HandleBatch(ctx, recs); err != nil {
							b.Fatal(err)
						}
						busy += time.Since(start)
						applied += len(recs)
					}
					b.ReportMetric(float64(applied)/busy.Seconds(), "events/s")
					if st := r.Stats(); st.Applied != int64(applied) {
						b.Fatalf("applied %d of %d", st.Applied, applied)
					}
				})
			}
		}
	}
}

// BenchmarkApplyParallel measures what BenchmarkApply does with two runners
// of one projection applying batches at once, on two partitions of
// different entities, as two consumers of one projector do: "commands"
// load, AsyncCommit, batches of 1,000. events/s counts both, over the wall
// time.
func BenchmarkApplyParallel(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("runners=%d", n), func(b *testing.B) {
			e := newEnv(b)
			rm, err := pgreadmodel.New(e.pool, pgreadmodel.Options{
				Schema: e.schema, TablePrefix: "bench_", Types: projtest.Types, AsyncCommit: true,
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := rm.Migrate(ctx(b)); err != nil {
				b.Fatal(err)
			}
			r := e.runner(b, rm)
			srcs := make([]*eventSource, n)
			for i := range srcs {
				srcs[i] = newEventSource(e.mapper, 20_000/n)
				srcs[i].partition = int32(i)
			}
			ctx := b.Context()
			var applied int
			var busy time.Duration
			for b.Loop() {
				b.StopTimer()
				batches := make([][]wire.Record, n)
				for i, src := range srcs {
					batches[i] = src.batch(b, 1000, true)
				}
				b.StartTimer()
				start := time.Now()
				errs := make(chan error, n)
				for _, recs := range batches {
					go func() { errs <- r.HandleBatch(ctx, recs) }()
				}
				for range n {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				busy += time.Since(start)
				applied += n * 1000
			}
			b.ReportMetric(float64(applied)/busy.Seconds(), "events/s")
		})
	}
}

func ctx(b *testing.B) context.Context { return b.Context() }
