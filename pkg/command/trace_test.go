package command_test

import (
	"testing"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

const parentTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func withTraceParent(r wire.Record, tp string) wire.Record {
	r.Headers = append(r.Headers, wire.Header{Key: wire.HeaderTraceParent, Value: []byte(tp)})
	return r
}

// traceOf returns the trace context of every item in the log, by sequence id.
func traceOf(e *env) map[uuid.UUID][]string {
	out := map[uuid.UUID][]string{}
	for _, n := range e.log() {
		out[n.SequenceID] = append(out[n.SequenceID], n.TraceParent)
	}
	return out
}

// Without tracing the writer carries a command's traceparent, as it came,
// to its events and its result, and makes none up.
func TestTraceParentPassesThrough(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	a, b := uuid.New(), uuid.New()
	ca, cb := cmd("create", "example", a, `{"foo":"bar"}`), cmd("create", "example", b, `{"foo":"bar"}`)
	e.handle(e.w,
		withTraceParent(e.record(0, ca), parentTP),
		e.record(0, cb),
		withTraceParent(e.record(0, "not json"), parentTP),
		withTraceParent(e.record(0, cmd("create", "example", uuid.New(), `{"x":1}`)), "garbage"))
	got := traceOf(e)
	for _, id := range []uuid.UUID{a, ca.CommandID} {
		if tps := got[id]; len(tps) != 1 || tps[0] != parentTP {
			t.Fatalf("items of %s carry %q, want the command's traceparent", id, tps)
		}
	}
	for _, id := range []uuid.UUID{b, cb.CommandID} {
		if tps := got[id]; len(tps) != 1 || tps[0] != "" {
			t.Fatalf("items of %s carry %q, want none", id, tps)
		}
	}
	var dead, malformed int
	for _, n := range e.log() {
		switch {
		case n.Topic == wire.DeadLetterItemTopic && n.TraceParent == parentTP:
			dead++
		case n.TraceParent != "" && n.TraceParent != parentTP:
			malformed++
		}
	}
	if dead != 1 || malformed != 0 {
		t.Fatalf("%d dead letters carry the record's traceparent (want 1), %d items carry another (want 0)", dead, malformed)
	}
}

// With a tracer, each command gets a span that continues its record's
// trace (or starts one), its events and result carry that span's context,
// and the batch's decide and commit spans sit under a batch span that the
// command spans link to.
func TestWriterSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e := newEnv(t, command.WriterConfig{TracerProvider: tp})
	a, b := uuid.New(), uuid.New()
	ca, cb := cmd("create", "example", a, `{"foo":"bar"}`), cmd("create", "example", b, `{"foo":"bar"}`)
	e.handle(e.w, withTraceParent(e.record(0, ca), parentTP), e.record(0, cb))
	spans := exp.GetSpans()
	byName := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = append(byName[s.Name], s)
	}
	if n := len(byName[tracing.SpanWriterBatch]); n != 1 {
		t.Fatalf("%d batch spans, want 1: %v", n, names(spans))
	}
	batch := byName[tracing.SpanWriterBatch][0]
	for _, name := range []string{tracing.SpanWriterDecide, tracing.SpanWriterCommit} {
		if len(byName[name]) != 1 || byName[name][0].Parent.SpanID() != batch.SpanContext.SpanID() {
			t.Fatalf("%s: want one, child of the batch span: %v", name, names(spans))
		}
	}
	cmds := byName[tracing.SpanWriterCommand]
	if len(cmds) != 2 {
		t.Fatalf("%d command spans, want 2", len(cmds))
	}
	got := traceOf(e)
	parent := tracing.SpanContext(parentTP)
	for _, s := range cmds {
		id := attr(s, tracing.KeyEntityID)
		if s.SpanKind != trace.SpanKindConsumer || attr(s, tracing.KeyCommandStatus) != "accepted" || attr(s, tracing.KeyMessagingDestination) != commandsTopic {
			t.Fatalf("command span %s: kind %v, attributes %v", id, s.SpanKind, s.Attributes)
		}
		if len(s.Links) != 1 || s.Links[0].SpanContext.SpanID() != batch.SpanContext.SpanID() {
			t.Fatalf("command span %s does not link to the batch: %v", id, s.Links)
		}
		mine := tracing.TraceParent(s.SpanContext)
		entity, command := a, ca.CommandID
		if id == b.String() {
			entity, command = b, cb.CommandID
			// No traceparent came: a trace of its own.
			if s.Parent.IsValid() || s.SpanContext.TraceID() == parent.TraceID() {
				t.Fatalf("command without a traceparent: parent %v, trace %v", s.Parent, s.SpanContext.TraceID())
			}
		} else if s.Parent.SpanID() != parent.SpanID() || s.SpanContext.TraceID() != parent.TraceID() || !s.Parent.IsRemote() {
			t.Fatalf("command span does not continue its record's trace: parent %v", s.Parent)
		}
		for _, seq := range []uuid.UUID{entity, command} {
			if tps := got[seq]; len(tps) != 1 || tps[0] != mine {
				t.Fatalf("items of %s carry %q, want the command span's %s", seq, tps, mine)
			}
		}
	}
	if len(batch.Links) != 2 {
		t.Fatalf("batch span links %d command spans, want 2", len(batch.Links))
	}
}

// A record the writer dead-letters gets a span too, and its dead letter
// carries its context.
func TestWriterSpanDeadLetter(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	e := newEnv(t, command.WriterConfig{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))})
	e.handle(e.w, withTraceParent(e.record(0, "not json"), parentTP))
	var span tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == tracing.SpanWriterCommand {
			span = s
		}
	}
	if attr(span, tracing.KeyCommandStatus) != "dead-letter" || span.Parent.SpanID() != tracing.SpanContext(parentTP).SpanID() {
		t.Fatalf("span of a dead-lettered record: %v, parent %v", span.Attributes, span.Parent)
	}
	var items []store.Notification
	for _, n := range e.log() {
		if n.Topic == wire.DeadLetterItemTopic {
			items = append(items, n)
		}
	}
	if len(items) != 1 || items[0].TraceParent != tracing.TraceParent(span.SpanContext) {
		t.Fatalf("dead letters %v", items)
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

func attr(s tracetest.SpanStub, k attribute.Key) string {
	for _, kv := range s.Attributes {
		if kv.Key == k {
			return kv.Value.String()
		}
	}
	return ""
}

// A trace that is not sampled still goes on: the items carry a context of
// the writer's (flags 00) in the record's trace, and nothing is exported.
func TestWriterSpanNotSampled(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	e := newEnv(t, command.WriterConfig{TracerProvider: tp})
	const unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	id := uuid.New()
	e.handle(e.w, withTraceParent(e.record(0, cmd("create", "example", id, `{"foo":"bar"}`)), unsampled))
	tps := traceOf(e)[id]
	if len(tps) != 1 {
		t.Fatalf("items of %s: %q", id, tps)
	}
	sc := tracing.SpanContext(tps[0])
	if sc.TraceID() != tracing.SpanContext(unsampled).TraceID() || sc.SpanID() == tracing.SpanContext(unsampled).SpanID() || sc.IsSampled() {
		t.Fatalf("items carry %s, want a span of the writer's in trace %s, not sampled", tps[0], unsampled)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans exported of a trace not sampled", n)
	}
}
