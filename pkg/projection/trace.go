package projection

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/tracing"
)

// Outcomes of an entry, as its apply span reports them (tracing.KeyOutcome).
const (
	outcomeApplied    = "applied"
	outcomeDuplicate  = "duplicate"
	outcomeParked     = "parked"
	outcomeDeadLetter = "dead-letter"
)

// batchTrace traces one HandleBatch: a span for the batch, one for each
// transaction tried, and an apply span for each record whose item has a
// trace context, which continues that trace and whose context the item
// then carries to the policy. A nil *batchTrace, a runner's that does not
// trace, does nothing.
type batchTrace struct {
	t     trace.Tracer
	ctx   context.Context // the batch span's
	batch trace.Span
	spans []trace.Span // by entry; nil where the item has no trace context
}

// startTrace starts the spans of b.
func (r *Runner) startTrace(ctx context.Context, b *batch) *batchTrace {
	if r.tracer == nil {
		return nil
	}
	tr := &batchTrace{t: r.tracer, spans: make([]trace.Span, len(b.entries))}
	tr.ctx, tr.batch = r.tracer.Start(ctx, tracing.SpanProjectionBatch, trace.WithAttributes(
		tracing.KeyProjection.String(r.cfg.Name), tracing.KeyMessagingBatchCount.Int(len(b.entries))))
	batchLink := trace.LinkFromContext(tr.ctx)
	var links tracing.Links
	for i := range b.entries {
		e := &b.entries[i]
		if !e.parsed || e.item.TraceParent == "" || e.rec == nil {
			continue
		}
		it := &e.item
		_, span := r.tracer.Start(tracing.WithParent(ctx, it.TraceParent), tracing.SpanProjectionApply,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(batchLink))
		if span.IsRecording() { // no attributes for a span not sampled
			span.SetAttributes(append(tracing.Kafka(e.rec.Topic, e.rec.Partition, e.rec.Offset),
				tracing.KeyMessagingOperationType.String(tracing.OperationProcess),
				tracing.KeyProjection.String(r.cfg.Name),
				tracing.KeySequenceID.String(it.SequenceID.String()),
				tracing.KeyPosition.Int64(it.Position),
				tracing.KeyEventTopic.String(it.Topic),
				tracing.KeyNotificationID.Int64(it.NotificationID))...)
		}
		tr.spans[i] = span
		it.TraceParent = tracing.TraceParent(span.SpanContext())
		links.AddContext(span.SpanContext())
	}
	links.AddTo(tr.batch)
	return tr
}

// attempt starts the span of the n-th transaction (from 1).
func (tr *batchTrace) attempt(ctx context.Context, n int) (context.Context, trace.Span) {
	if tr == nil {
		return ctx, nil
	}
	return tr.t.Start(trace.ContextWithSpan(ctx, tr.batch), tracing.SpanProjectionTx, trace.WithAttributes(tracing.KeyAttempt.Int(n)))
}

func endAttempt(span trace.Span, err error) {
	if span == nil {
		return
	}
	tracing.Fail(span, err)
	span.End()
}

// end ends the spans of b: each record's with its outcome, every one failed
// with err if the batch did not commit.
func (tr *batchTrace) end(b *batch, out *outcome, err error) {
	if tr == nil {
		return
	}
	for i, span := range tr.spans {
		if span == nil {
			continue
		}
		if err == nil && b.entries[i].outcome != "" && span.IsRecording() {
			span.SetAttributes(tracing.KeyOutcome.String(b.entries[i].outcome))
		}
		tracing.Fail(span, err)
		span.End()
	}
	if out != nil {
		tr.batch.SetAttributes(tracing.KeyApplied.Int(out.applied), tracing.KeyDuplicates.Int(out.duplicates),
			tracing.KeyDeadLetters.Int(len(out.dead)), tracing.KeyParked.Int(len(out.parks)))
	}
	tracing.Fail(tr.batch, err)
	tr.batch.End()
}
