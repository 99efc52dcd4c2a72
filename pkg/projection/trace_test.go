package projection_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// seenPolicy is the persistence policy, remembering the trace context of
// each item it was given.
type seenPolicy struct {
	projection.PersistencePolicy
	seen map[int64]string // by position
}

func (p *seenPolicy) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	for _, it := range items {
		p.seen[it.Position] = it.TraceParent
	}
	return p.PersistencePolicy.Apply(ctx, tx, items)
}

// Each record with a traceparent gets an apply span that continues its
// trace; the policy sees that span's context; a record the guard skips
// says so; a record without one gets no span. Without a tracer the policy
// sees the records' traceparent as it came.
func TestRunnerSpans(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	id := uuid.New()
	var ns []store.Notification
	for pos := range int64(3) {
		n := store.Notification{ID: pos + 1, SequencedItem: store.SequencedItem{SequenceID: id, Position: pos, Topic: "example.AttributeChanged", Codec: "json", State: []byte(`{}`)}}
		if pos < 2 {
			n.TraceParent = tp
		}
		ns = append(ns, n)
	}
	topic := topics.Events("example")
	var records []wire.Record
	for i, n := range ns {
		records = append(records, projection.RecordOf(n, topic, 0, int64(i)))
	}
	records = append(records, projection.RecordOf(ns[1], topic, 0, 3)) // position 1 again: a duplicate

	for _, traced := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[traced], func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			cfg := projection.Config{Name: "copy", Policy: &seenPolicy{seen: map[int64]string{}}}
			if traced {
				cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			}
			r, err := projection.NewRunner(memory.New(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.HandleBatch(t.Context(), records); err != nil {
				t.Fatal(err)
			}
			seen := cfg.Policy.(*seenPolicy).seen
			if !traced {
				if seen[0] != tp || seen[1] != tp || seen[2] != "" || len(exp.GetSpans()) != 0 {
					t.Fatalf("untraced: the policy saw %v, %d spans", seen, len(exp.GetSpans()))
				}
				return
			}
			var apply []tracetest.SpanStub
			var batchSpan, txSpan tracetest.SpanStub
			for _, s := range exp.GetSpans() {
				switch s.Name {
				case tracing.SpanProjectionApply:
					apply = append(apply, s)
				case tracing.SpanProjectionBatch:
					batchSpan = s
				case tracing.SpanProjectionTx:
					txSpan = s
				}
			}
			if !batchSpan.SpanContext.IsValid() || txSpan.Parent.SpanID() != batchSpan.SpanContext.SpanID() {
				t.Fatalf("batch %v, transaction span's parent %v", batchSpan.SpanContext, txSpan.Parent)
			}
			if len(apply) != 3 { // positions 0, 1 and 1 again; 2 has no trace context
				t.Fatalf("%d apply spans, want 3", len(apply))
			}
			parent := tracing.SpanContext(tp)
			outcomes := map[string]int{}
			for _, s := range apply {
				if s.Parent.SpanID() != parent.SpanID() || s.SpanContext.TraceID() != parent.TraceID() || s.SpanKind != trace.SpanKindConsumer {
					t.Fatalf("apply span does not continue the record's trace: parent %v", s.Parent)
				}
				outcomes[value(s, tracing.KeyOutcome)]++
				if value(s, tracing.KeyOutcome) == "applied" {
					pos := value(s, tracing.KeyPosition)
					if got := seen[map[string]int64{"0": 0, "1": 1}[pos]]; got != tracing.TraceParent(s.SpanContext) {
						t.Fatalf("the policy saw %q for position %s, want its apply span's context", got, pos)
					}
				}
			}
			if outcomes["applied"] != 2 || outcomes["duplicate"] != 1 {
				t.Fatalf("outcomes %v", outcomes)
			}
		})
	}
}

func value(s tracetest.SpanStub, k attribute.Key) string {
	for _, kv := range s.Attributes {
		if kv.Key == k {
			return kv.Value.String()
		}
	}
	return ""
}
