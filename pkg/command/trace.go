package command

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
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
	cmds  []trace.Span // by input index; nil for repeated records
}

// startTrace starts the spans of a batch and sets each input's trace
// context to its span's. Without a tracer it returns nil, and the inputs
// keep the trace context their records came with.
func (w *Writer) startTrace(ctx context.Context, in []input) *batchTrace {
	if w.tracer == nil || len(in) == 0 {
		return nil
	}
	tr := &batchTrace{t: w.tracer, cmds: make([]trace.Span, len(in))}
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
		_, span := w.tracer.Start(tracing.WithParent(ctx, x.trace), tracing.SpanWriterCommand,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(batchLink), trace.WithAttributes(attrs...))
		tr.cmds[i] = span
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
func (tr *batchTrace) end(in []input, st *BatchStats, err error) {
	if tr == nil {
		return
	}
	for i, span := range tr.cmds {
		if span == nil {
			continue
		}
		x := &in[i]
		switch {
		case err != nil:
		case x.outcome == "":
			span.SetAttributes(tracing.KeyCommandStatus.String(outcomeSkipped))
		default:
			span.SetAttributes(tracing.KeyCommandStatus.String(x.outcome))
			if x.outcome != outcomeDeadLetter && x.outcome != outcomeDuplicate {
				span.SetAttributes(tracing.KeyEntityVersion.Int64(x.version), tracing.KeyEvents.Int(x.events))
			}
		}
		tracing.Fail(span, err)
		span.End()
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

// traced records the outcome of x for its span (with or without tracing:
// it is a few stores).
func (x *input) traced(status wire.Status, version int64, events int) {
	x.outcome, x.version, x.events = string(status), version, events
}
