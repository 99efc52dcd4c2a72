package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// The relay sends each item's trace context on as the traceparent header of
// its record (events, results and commands a process sent), adds none to
// an item without one, and, with a tracer, starts a span per transaction or
// page linked to the items' contexts.
func TestRelayTraceParent(t *testing.T) {
	const (
		tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	)
	for _, transactional := range []bool{false, true} {
		t.Run(map[bool]string{false: "at-least-once", true: "transactional"}[transactional], func(t *testing.T) {
			c := newCluster(t, 2, "example")
			rec := memory.New()
			id, cid := uuid.New(), uuid.New()
			ev := exampleItems("example", 1, 2)
			ev[0].SequenceID, ev[1].SequenceID = id, id
			ev[0].TraceParent, ev[1].TraceParent = tp1, tp1
			res, err := wire.ResultItem(wire.Result{CommandID: cid, Entity: "example", EntityID: id, Status: wire.StatusAccepted, Version: 2})
			if err != nil {
				t.Fatal(err)
			}
			res.TraceParent = tp1
			sent, err := wire.CommandItem(wire.Command{CommandID: uuid.New(), Type: "update", Entity: "example", EntityID: uuid.New()})
			if err != nil {
				t.Fatal(err)
			}
			sent.TraceParent = tp2
			plain := exampleItems("example", 1, 1)
			insert(t, rec, append(ev, res, sent, plain[0]))

			exp := tracetest.NewInMemoryExporter()
			r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{
				Transactional: transactional, Admin: admin(t, c),
				TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)),
			})
			stop := runRelay(t, r)
			recs := consume(t, c, 5, 20*time.Second, 200*time.Millisecond,
				topics.Events("example"), topics.Results(), topics.Commands())
			stop()
			if len(recs) != 5 {
				t.Fatalf("%d records, want 5", len(recs))
			}
			for _, r := range recs {
				got, has := header(r, wire.HeaderTraceParent)
				want := tp1
				switch {
				case r.Topic == topics.Commands():
					want = tp2
				case string(r.Key) == plain[0].SequenceID.String():
					want = ""
				}
				if got != want || has != (want != "") {
					t.Fatalf("record of %s keyed %s: traceparent %q, want %q", r.Topic, r.Key, got, want)
				}
			}

			name := tracing.SpanRelayPage
			if transactional {
				name = tracing.SpanRelayTransaction
			}
			linked := map[trace.SpanID]bool{}
			for _, s := range exp.GetSpans() {
				if s.Name != name {
					t.Fatalf("unexpected span %s", s.Name)
				}
				if s.SpanKind != trace.SpanKindProducer || s.Parent.IsValid() {
					t.Fatalf("span %s: kind %v, parent %v", s.Name, s.SpanKind, s.Parent)
				}
				for _, l := range s.Links {
					linked[l.SpanContext.SpanID()] = true
				}
			}
			for _, tp := range []string{tp1, tp2} {
				if !linked[tracing.SpanContext(tp).SpanID()] {
					t.Fatalf("no %s span links %s: %d spans", name, tp, len(exp.GetSpans()))
				}
			}
		})
	}
}

// The commander puts the span context its context carries on the command
// record.
func TestCommanderTraceParent(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := newCluster(t, 1, "example")
	cm, err := kafka.NewCommander(newClient(t, c), kafka.CommanderConfig{Topics: topics, ClientOptions: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = cm.Run(ctx) }()
	cmd := wire.Command{CommandID: uuid.New(), Type: "create", Entity: "example", EntityID: uuid.New()}
	sctx, scancel := context.WithTimeout(tracing.WithParent(ctx, tp), 20*time.Second)
	defer scancel()
	if err := cm.Send(sctx, cmd); err != nil {
		t.Fatal(err)
	}
	recs := consume(t, c, 1, 20*time.Second, 0, topics.Commands())
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	if got, _ := header(recs[0], wire.HeaderTraceParent); got != tp {
		t.Fatalf("command record's traceparent %q, want %q", got, tp)
	}
}
