package tracing

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/wire"
)

// InstrumentationName names eventlog's tracer (its instrumentation scope).
const InstrumentationName = "github.com/eventlog/eventlog"

// Span names.
const (
	SpanWriterBatch      = "eventlog.writer.batch"
	SpanWriterDecide     = "eventlog.writer.decide"
	SpanWriterCommit     = "eventlog.writer.commit"
	SpanWriterCommand    = "eventlog.writer.command"
	SpanRelayTransaction = "eventlog.relay.transaction"
	SpanRelayPage        = "eventlog.relay.page"
	SpanProjectionBatch  = "eventlog.projection.batch"
	SpanProjectionTx     = "eventlog.projection.transaction"
	SpanProjectionApply  = "eventlog.projection.apply"
)

// Values of the messaging attributes.
const (
	MessagingKafka = "kafka"
	// OperationProcess and OperationSend are values of
	// KeyMessagingOperationType.
	OperationProcess = "process"
	OperationSend    = "send"
)

// maxLinks is the SDK's default bound on the links of a span.
const maxLinks = 128

// Attribute keys: OpenTelemetry's messaging conventions where they apply,
// eventlog's own otherwise.
const (
	KeyMessagingSystem        = attribute.Key("messaging.system")
	KeyMessagingOperationType = attribute.Key("messaging.operation.type")
	KeyMessagingDestination   = attribute.Key("messaging.destination.name")
	KeyMessagingPartition     = attribute.Key("messaging.destination.partition.id")
	KeyMessagingOffset        = attribute.Key("messaging.kafka.offset")
	KeyMessagingBatchCount    = attribute.Key("messaging.batch.message_count")

	KeyCommandID      = attribute.Key("eventlog.command.id")
	KeyCommandType    = attribute.Key("eventlog.command.type")
	KeyCommandStatus  = attribute.Key("eventlog.command.status")
	KeyEntity         = attribute.Key("eventlog.entity")
	KeyEntityID       = attribute.Key("eventlog.entity.id")
	KeyEntityVersion  = attribute.Key("eventlog.entity.version")
	KeyEvents         = attribute.Key("eventlog.events")
	KeyCommands       = attribute.Key("eventlog.commands")
	KeyDeadLetters    = attribute.Key("eventlog.dead_letters")
	KeyDuplicates     = attribute.Key("eventlog.duplicates")
	KeyAttempt        = attribute.Key("eventlog.attempt")
	KeyAttempts       = attribute.Key("eventlog.attempts")
	KeyItems          = attribute.Key("eventlog.items")
	KeyRecords        = attribute.Key("eventlog.records")
	KeyProjection     = attribute.Key("eventlog.projection")
	KeySequenceID     = attribute.Key("eventlog.sequence.id")
	KeyPosition       = attribute.Key("eventlog.position")
	KeyEventTopic     = attribute.Key("eventlog.event.topic")
	KeyNotificationID = attribute.Key("eventlog.notification.id")
	KeyFirstID        = attribute.Key("eventlog.notification.first_id")
	KeyLastID         = attribute.Key("eventlog.notification.last_id")
	KeyTransactional  = attribute.Key("eventlog.relay.transactional_id")
	KeyApplied        = attribute.Key("eventlog.applied")
	KeyParked         = attribute.Key("eventlog.parked")
	KeyOutcome        = attribute.Key("eventlog.outcome")
)

// Tracer returns eventlog's tracer from tp, or nil if tp is nil. The
// components take a nil tracer to mean that they do not trace: they start
// no span and make no trace context of their own.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(InstrumentationName)
}

// SpanContext returns the remote span context that a traceparent value
// names, or an invalid one if the value is empty or malformed.
func SpanContext(traceparent string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	tc, ok := wire.ParseTraceParent([]byte(traceparent))
	if !ok {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tc.TraceID,
		SpanID:     tc.SpanID,
		TraceFlags: trace.TraceFlags(tc.Flags) & trace.FlagsSampled,
		Remote:     true,
	})
}

// TraceParent returns the traceparent value of sc, "" if sc is invalid.
func TraceParent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	return wire.TraceContext{TraceID: sc.TraceID(), SpanID: sc.SpanID(), Flags: byte(sc.TraceFlags() & trace.FlagsSampled)}.String()
}

// WithParent returns ctx with the remote parent that traceparent names, or
// with no parent at all (not even one ctx had) if it names none: a span
// started from it continues that trace, or starts one of its own.
func WithParent(ctx context.Context, traceparent string) context.Context {
	sc := SpanContext(traceparent)
	if !sc.IsValid() {
		return trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// Fail marks span as failed with err (nothing if err is nil).
func Fail(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// Links collects the distinct trace contexts of a batch, up to a bound, as
// links of the span that processes the batch. The zero value is empty and
// keeps up to 128 (the SDK's default bound on a span's links).
type Links struct {
	Max   int
	links []trace.Link
	seen  map[trace.SpanID]struct{}
	// Dropped counts the trace contexts left out past Max.
	Dropped int
}

// Add adds the trace context that traceparent names, if valid, sampled and
// not added already.
func (l *Links) Add(traceparent string) {
	l.AddContext(SpanContext(traceparent))
}

// AddContext adds sc, if valid, sampled and not added already.
func (l *Links) AddContext(sc trace.SpanContext) {
	if !sc.IsValid() || !sc.IsSampled() {
		return
	}
	if _, ok := l.seen[sc.SpanID()]; ok {
		return
	}
	max := l.Max
	if max <= 0 {
		max = maxLinks
	}
	if len(l.links) >= max {
		l.Dropped++
		return
	}
	if l.seen == nil {
		l.seen = map[trace.SpanID]struct{}{}
	}
	l.seen[sc.SpanID()] = struct{}{}
	l.links = append(l.links, trace.Link{SpanContext: sc})
}

// Len returns the number of links collected.
func (l *Links) Len() int { return len(l.links) }

// Option returns the links as a span start option.
func (l *Links) Option() trace.SpanStartOption { return trace.WithLinks(l.links...) }

// AddTo adds the links to a span already started.
func (l *Links) AddTo(span trace.Span) {
	for _, lk := range l.links {
		span.AddLink(lk)
	}
}

// Kafka returns the messaging attributes of a record consumed or produced:
// system, destination, partition and offset (left out if negative).
func Kafka(topic string, partition int32, offset int64) []attribute.KeyValue {
	kv := []attribute.KeyValue{
		KeyMessagingSystem.String(MessagingKafka),
		KeyMessagingDestination.String(topic),
		KeyMessagingPartition.String(strconv.Itoa(int(partition))),
	}
	if offset >= 0 {
		kv = append(kv, KeyMessagingOffset.Int64(offset))
	}
	return kv
}
