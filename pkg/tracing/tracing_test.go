package tracing_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/eventlog/eventlog/pkg/tracing"
)

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTraceParentRoundTrip(t *testing.T) {
	sc := tracing.SpanContext(tp)
	if !sc.IsValid() || !sc.IsRemote() || !sc.IsSampled() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("SpanContext(%s) = %+v", tp, sc)
	}
	if got := tracing.TraceParent(sc); got != tp {
		t.Fatalf("TraceParent = %s, want %s", got, tp)
	}
	for _, bad := range []string{"", "nonsense", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if tracing.SpanContext(bad).IsValid() || tracing.TraceParent(tracing.SpanContext(bad)) != "" {
			t.Fatalf("%q gives a valid span context", bad)
		}
	}
	unsampled := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	if sc := tracing.SpanContext(unsampled); sc.IsSampled() || tracing.TraceParent(sc) != unsampled {
		t.Fatalf("the sampled flag is not kept: %+v", sc)
	}
}

// A span started under WithParent continues the traceparent's trace, or,
// with none, starts a trace of its own even where ctx had a span.
func TestWithParent(t *testing.T) {
	tr := sdktrace.NewTracerProvider().Tracer("test")
	ctx, outer := tr.Start(context.Background(), "outer")
	defer outer.End()
	_, s := tr.Start(tracing.WithParent(ctx, tp), "child")
	if s.SpanContext().TraceID() != tracing.SpanContext(tp).TraceID() {
		t.Fatal("the span does not continue the traceparent's trace")
	}
	_, s = tr.Start(tracing.WithParent(ctx, ""), "root")
	if s.SpanContext().TraceID() == outer.SpanContext().TraceID() {
		t.Fatal("with no traceparent the span continued ctx's trace")
	}
}

func TestLinks(t *testing.T) {
	var l tracing.Links
	l.Add(tp)
	l.Add(tp)                                                        // the same span: once
	l.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00") // not sampled: left out
	l.Add("garbage")
	if l.Len() != 1 {
		t.Fatalf("%d links, want 1", l.Len())
	}
	small := tracing.Links{Max: 2}
	for _, id := range []string{"0000000000000001", "0000000000000002", "0000000000000003"} {
		small.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-" + id + "-01")
	}
	if small.Len() != 2 || small.Dropped != 1 {
		t.Fatalf("bounded links: %d kept, %d dropped", small.Len(), small.Dropped)
	}
}
