// Package tracing is eventlog's glue to OpenTelemetry tracing: the names of
// its spans and their attributes, and the conversions between a W3C
// traceparent (the string the store keeps with each item, package wire
// parses and the records carry as their traceparent header) and an
// OpenTelemetry span context. It imports only the OpenTelemetry API; the
// SDK and the exporters are the program's (package cli builds them from the
// OTEL_* environment).
//
// The components take a trace.TracerProvider in their configuration
// (command.WriterConfig, kafka.RelayConfig, projection.Config, and the
// service configs that pass it on). Nil, the default, is off: no span is
// started and no trace context is made, so tracing costs nothing but
// reading a record's traceparent header; a trace context that a command
// brings is still stored with its events and sent on, as it came.
//
// # What is traced
//
// One trace runs from a command to its read-model commit:
//
//	client span (traceparent on the command record, or POST /v1/commands)
//	└─ eventlog.writer.command          writer, one per command record (consumer)
//	   ├─ its events and result carry this span's context, in the store and on Kafka
//	   ├─ eventlog.projection.apply     projector, one per event record (consumer)
//	   │  └─ a command a process application emits carries this span's context
//	   └─ (linked from) eventlog.relay.transaction / eventlog.relay.page
//
// and each batch has a span of its own, linked both ways to the spans of its
// records:
//
//	eventlog.writer.batch               one per HandleBatch call
//	├─ eventlog.writer.decide           per attempt: reads, handlers, encoding
//	└─ eventlog.writer.commit           per attempt: the store transaction
//	eventlog.relay.transaction          per Kafka transaction (transactional relay; producer)
//	eventlog.relay.page                 per page of the log (at-least-once relay; producer), until acknowledged
//	eventlog.projection.batch           one per HandleBatch call of a projection
//	└─ eventlog.projection.transaction  per attempt: the target's transaction
//
// Attributes:
//
//   - eventlog.writer.command: messaging.system (kafka),
//     messaging.operation.type (process), messaging.destination.name,
//     messaging.destination.partition.id, messaging.kafka.offset,
//     eventlog.command.id, eventlog.command.type, eventlog.entity,
//     eventlog.entity.id and, once decided, eventlog.command.status
//     (accepted, rejected, conflict, invalid, duplicate, dead-letter,
//     skipped: applied before), eventlog.entity.version and eventlog.events.
//     It starts with the batch and ends when the batch committed; if the
//     batch was not stored it ends with an error status.
//   - eventlog.writer.batch: messaging.batch.message_count, eventlog.commands,
//     eventlog.events, eventlog.duplicates, eventlog.dead_letters,
//     eventlog.attempts; decide and commit: eventlog.attempt.
//   - eventlog.relay.transaction and eventlog.relay.page: messaging.system,
//     messaging.operation.type (send), eventlog.notification.first_id and
//     last_id, eventlog.items (read from the log), eventlog.records
//     (published), eventlog.relay.transactional_id; links to the distinct
//     trace contexts of the items (up to 128), not a span per record.
//   - eventlog.projection.apply: the messaging attributes of the record,
//     eventlog.projection (the projection's name), eventlog.sequence.id, eventlog.position,
//     eventlog.event.topic, eventlog.notification.id and, once committed,
//     eventlog.outcome (applied, duplicate, parked, dead-letter). Only
//     records with a traceparent get one: a projector continues traces and
//     starts none per event.
//   - eventlog.projection.batch: eventlog.projection,
//     messaging.batch.message_count, eventlog.applied, eventlog.duplicates,
//     eventlog.dead_letters, eventlog.parked (sequences whose parking
//     changed); transaction: eventlog.attempt.
//
// Failures are recorded on the span (an error event and an error status).
//
// # Not guaranteed
//
//   - Spans are as durable as the exporter makes them: a process killed
//     before its batch processor exported them loses them; the trace
//     context in the store and on the records is not lost.
//   - With tracing on, a command that came without a traceparent gets a new
//     trace each time it is decided: a batch applied again after a crash or
//     a failed transaction stores another trace context than the first
//     attempt made (the items are otherwise the same).
//   - Only traceparent is carried, not tracestate or baggage.
//   - Parked events keep no trace context: a retry's apply is not traced,
//     and neither is a rebuild (whose emitted commands still carry the
//     stored trace context of their events).
//   - The HTTP API starts no server span: POST /v1/commands passes the
//     request's traceparent on to the command record.
package tracing
