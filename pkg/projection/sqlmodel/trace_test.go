package sqlmodel_test

import (
	"math/rand/v2"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A command a process application emits carries the trace context of the
// event that caused it: the event record's traceparent, or, when the
// runner traces, that of the event's apply span.
func TestEmitCarriesTraceContext(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, b := range backends {
		for _, traced := range []bool{false, true} {
			t.Run(b.name+map[bool]string{false: "/off", true: "/on"}[traced], func(t *testing.T) {
				rec, _, opts := b.open(t)
				mapper := projtest.NewMapper(t)
				ents := projtest.History(t, rand.New(rand.NewPCG(1, 2)), mapper, rec, 1, 0)
				log := fullLog(t, rec, ents)
				rm, err := sqlmodel.New(counts(1), opts)
				if err != nil {
					t.Fatal(err)
				}
				if err := rm.Migrate(t.Context(), rec); err != nil {
					t.Fatal(err)
				}
				exp := tracetest.NewInMemoryExporter()
				cfg := projection.Config{Name: rm.Name(), Policy: rm, Mapper: mapper, Source: rec, Poison: projection.PoisonStop}
				if traced {
					cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
				}
				r, err := projection.NewRunner(rec, cfg)
				if err != nil {
					t.Fatal(err)
				}
				created := entityLog(log)[0]
				created.TraceParent = tp
				if err := r.HandleBatch(t.Context(), []wire.Record{projection.RecordOf(created, projtest.Topics.Events(events.EntityOf(created.Topic)), 0, 0)}); err != nil {
					t.Fatal(err)
				}
				want := tp
				if traced {
					spans := exp.GetSpans()
					for _, s := range spans {
						if s.Name == tracing.SpanProjectionApply {
							want = tracing.TraceParent(s.SpanContext)
						}
					}
					if want == tp {
						t.Fatalf("no apply span among %d", len(spans))
					}
				}
				// The log shows the command once no older transaction on the
				// server is open (PostgreSQL's horizon): wait for it.
				var got []store.Notification
				for deadline := time.Now().Add(30 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					for _, n := range projtest.Notifications(t, rec) {
						if n.Topic == wire.CommandItemTopic {
							got = append(got, n)
						}
					}
				}
				if len(got) != 1 || got[0].TraceParent != want {
					t.Fatalf("emitted commands %v, want one carrying %s", got, want)
				}
			})
		}
	}
}
