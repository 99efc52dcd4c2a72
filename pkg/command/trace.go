package command

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/tracing"
)

// Outcomes of a record that has no result of its own, as its command span
// reports them (tracing.KeyCommandStatus).
const (
	outcomeDuplicate  = "duplicate"
	outcomeDeadLetter = "dead-letter"
	outcomeSkipped    = "skipped"
)

// batchTrace traces one batch: a span for the batch, with a decide and a
// commit span for each attempt, and a span for each record, which continues
// the trace its traceparent header names (or starts one) and whose trace
// context the record's items carry. A nil *batchTrace, the writer's when it
// does not trace, does nothing.
type batchTrace struct {
	t     trace.Tracer
	batch trace.Span
	cmds  []cmdSpan // by input index; no span for repeated records
}

// cmdSpan is a record's span and what the last attempt decided for it.
type cmdSpan struct {
	span    trace.Span
	outcome string
	version int64
	events  int
}

// startTrace starts the spans of a batch and sets each input's trace
// context to its span's. Without a tracer it returns nil, and the inputs
// keep the trace context their records came with.
func (w *Writer) startTrace(ctx context.Context, in []input) *batchTrace {
	if w.tracer == nil || len(in) == 0 {
		return nil
	}
	tr := &batchTrace{t: w.tracer, cmds: make([]cmdSpan, len(in))}
	bctx, batch := w.tracer.Start(ctx, tracing.SpanWriterBatch,
		trace.WithAttributes(tracing.KeyMessagingBatchCount.Int(len(in))))
	tr.batch = batch
	batchLink := trace.LinkFromContext(bctx)
	var links tracing.Links
	for i := range in {
		x := &in[i]
		if x.dup {
			continue
		}
		_, span := w.tracer.Start(tracing.WithParent(ctx, x.trace), tracing.SpanWriterCommand,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(batchLink))
		if span.IsRecording() { // no attributes for a span not sampled
			r := x.rec
			attrs := append(tracing.Kafka(r.Topic, r.Partition, r.Offset),
				tracing.KeyMessagingOperationType.String(tracing.OperationProcess))
			if x.err == nil {
				attrs = append(attrs,
					tracing.KeyCommandID.String(x.cmd.CommandID.String()),
					tracing.KeyCommandType.String(x.cmd.Type),
					tracing.KeyEntity.String(x.cmd.Entity),
					tracing.KeyEntityID.String(x.cmd.EntityID.String()))
			}
			span.SetAttributes(attrs...)
		}
		tr.cmds[i].span = span
		x.span = &tr.cmds[i]
		x.trace = tracing.TraceParent(span.SpanContext())
		links.AddContext(span.SpanContext())
	}
	links.AddTo(tr.batch)
	return tr
}

// step starts a decide or commit span of attempt (from 1) under the batch.
func (tr *batchTrace) step(ctx context.Context, name string, attempt int) (context.Context, trace.Span) {
	if tr == nil {
		return ctx, nil
	}
	return tr.t.Start(trace.ContextWithSpan(ctx, tr.batch), name, trace.WithAttributes(tracing.KeyAttempt.Int(attempt)))
}

// endStep ends a span of step.
func endStep(span trace.Span, err error) {
	if span == nil {
		return
	}
	tracing.Fail(span, err)
	span.End()
}

// end ends the batch's spans: each record's with its outcome, all of them
// failed with err if the batch was not stored.
func (tr *batchTrace) end(st *BatchStats, err error) {
	if tr == nil {
		return
	}
	for i := range tr.cmds {
		c := &tr.cmds[i]
		if c.span == nil {
			continue
		}
		switch {
		case err != nil || !c.span.IsRecording():
		case c.outcome == "":
			c.span.SetAttributes(tracing.KeyCommandStatus.String(outcomeSkipped))
		case c.outcome == outcomeDeadLetter || c.outcome == outcomeDuplicate:
			c.span.SetAttributes(tracing.KeyCommandStatus.String(c.outcome))
		default:
			c.span.SetAttributes(tracing.KeyCommandStatus.String(c.outcome),
				tracing.KeyEntityVersion.Int64(c.version), tracing.KeyEvents.Int(c.events))
		}
		tracing.Fail(c.span, err)
		c.span.End()
	}
	if st != nil {
		tr.batch.SetAttributes(
			tracing.KeyCommands.Int(st.Accepted+st.Rejected+st.Conflict+st.Invalid),
			tracing.KeyEvents.Int(st.Events),
			tracing.KeyDuplicates.Int(st.Duplicates),
			tracing.KeyDeadLetters.Int(st.DeadLetters),
			tracing.KeyAttempts.Int(st.Attempts))
	}
	tracing.Fail(tr.batch, err)
	tr.batch.End()
}

// traced records the outcome of x for its span, if it has one.
func (x *input) traced(outcome string, version int64, events int) {
	if s := x.span; s != nil {
		s.outcome, s.version, s.events = outcome, version, events
	}
}
