// Package command turns command records into stored events: the handler
// registry (entity type, command type) -> handler, the built-in commands of the
// generic entity, and the Writer that applies batches of command records.
//
// A Kafka consumer (elsewhere) polls a batch of records from the commands topic
// and calls Writer.HandleBatch; on partition assignment it resumes after
// Writer.Tracking. The writer stores everything it has to say in the store's
// notification log (the outbox), which a relay publishes: entity events, one
// result item per command (wire.ResultItem, sequence = command id) and dead
// letters (wire.DeadLetterItem). The package imports no Kafka client and no
// store backend.
//
// # Guarantees
//
//   - Group commit. The events, results and dead letters of a whole batch, and
//     the tracking of the greatest offset of each (topic, partition) in it, are
//     stored in one transaction, or nothing is. Tracking is written first, moving
//     to the batch's first new offset and then to its last, so a writer any of
//     whose records another writer applied meanwhile (a zombie after a
//     rebalance) fails with store.ErrTrackingConflict and stores nothing.
//   - Exactly-once effect, provided the consumer resumes from Tracking after
//     every assignment, restart or error: records at or below the stored tracking
//     are skipped, so a redelivered batch changes nothing, and a writer killed at
//     any instant leaves either the whole batch or none of it.
//   - One bad command never fails the others. A record that is not a command
//     envelope (not JSON, a missing field, too large, command_id equal to
//     entity_id) becomes a dead letter: the record unchanged, with the reason and
//     its source topic, partition and offset. An unknown entity or command type,
//     data of the wrong shape, or input the handler finds malformed (any error
//     wrapping ErrInvalid, such as a bad attribute name or more attributes than
//     the entity's limits) gives an invalid result; a command the entity
//     refuses (update of a discarded or missing entity, an overdraft) a
//     rejected one; an expected_version other than the entity's
//     version (the number of its events; 0: it must not exist) a conflict. None
//     of these stores an event.
//   - Order. Commands are decided in record order; later commands of a batch see
//     the effects of earlier ones on the same entity. A command's events precede
//     its result in the notification log.
//   - Duplicates. A command whose command_id has a result (stored, or earlier in
//     the same batch) changes nothing: its original result is stored again,
//     byte for byte, as the next item of the command id's sequence (position 1,
//     2, ...), so it reaches the results topic again. The first result wins even
//     if the duplicate's content differs. The store's unique (sequence,
//     position) constraint finds a duplicate of a stored result: a batch is
//     decided as if its command ids were new, the duplicate's result then
//     takes a position that is held, the append conflicts, and the batch is
//     decided again with every result looked up (see Loading and caching).
//   - Concurrent writers. If another writer appended to one of the batch's
//     entities since the writer read or cached them (a rebalance), the commit
//     fails on the store's unique (sequence, position) constraint and the batch
//     is decided again from fresh state, up to WriterConfig.MaxConflictRetries
//     times. An aggregate whose unchanged state decided a rejection or a
//     conflict is re-checked inside the transaction, so such outcomes are not
//     based on stale state either. If another writer applied records of the
//     batch since the writer last saw its partition's tracking, the batch is
//     planned again after reading the tracking, and those records are skipped.
//   - Determinism. Deciding a batch again after a rollback produces the same
//     items, provided the records carry timestamps (events are stamped with their
//     record's timestamp) and no cipher is configured (encryption uses random
//     nonces). A batch handled again in another HandleBatch call (after a
//     crash) with tracing on gives the commands that came without a
//     traceparent another trace context.
//   - Errors. HandleBatch returns an error only when it stored nothing: a store
//     error (call it again with the same batch), an error wrapping
//     store.ErrTrackingConflict (the offsets were applied by another writer: seek
//     to Tracking), or conflicts that persisted through every retry.
//
// # Loading and caching
//
// A batch reads each aggregate its commands address that the writer has not
// cached, then decides the commands one by one in memory. It reads no result:
// it assumes each command id is answered for the first time and each dead
// letter not stored, which its append checks (a first result or dead letter
// is position 0 of its sequence). If the append conflicts, the batch is
// decided again, and from then on it also reads the last item of each
// command id's sequence (to find duplicates) and of each dead letter's. So a
// duplicate costs its batch a second attempt, and a batch of new commands
// reads nothing once its aggregates are cached. From a recorder that is a store.SequencesReader (every backend of
// this module) that is one read for the whole batch, whatever its size; from
// another, a read per sequence, WriterConfig.ReadConcurrency at a time. An
// uncached aggregate is replayed from its history, or, with snapshots, loaded
// through a store.Repository (one more read for each that exists).
//
// An aggregate the writer committed stays in an LRU cache of live aggregates
// (WriterConfig.CacheSize) and is used as it is on its next use, without a
// read. It is current unless another writer appended to it meanwhile (the
// writer owns its partitions, and commands are keyed by entity id), and stale
// state is caught when the batch commits: an accepted command's first event
// takes a position that the store holds already, so the append conflicts, and
// an outcome decided on unchanged state is re-checked in the transaction. A
// batch takes its aggregates out of the cache and puts them back only after its
// commit, so a failed or conflicting batch leaves nothing stale behind, and a
// retry reads every aggregate of the batch from the store.
//
// The writer also remembers the tracking it last read or committed for each
// partition, and reads a partition's tracking only the first time it sees the
// partition (Tracking, which the consumer calls on assignment, counts). A
// remembered tracking that another writer moved on fails the transaction's
// first tracking update, and the batch is planned again after a read.
//
// With a per-entity cipher (events.EntityCipher over store.DataKeys), a batch
// also prepares the data keys of its aggregates under its own context
// (events.Mapper.PrepareKeys) before it decides: those of the aggregates it
// replays, then those of every aggregate that may take events, creating the
// keys of new entities (each key is committed before the batch's transaction;
// an entity whose command then fails keeps a key that encrypts nothing).
// Keys in the key store's memory cost no read. Deciding and encoding do no
// I/O for keys.
//
// So a batch whose aggregates are cached reads once before its transaction, and
// the transaction sets the tracking, checks unchanged aggregates and appends
// the items in a call each where the store's Tx is a store.TrackingsSetter and
// a store.SequencesReader: a constant number of round trips per batch.
//
// Events are stamped with their record's timestamp (wire.Record.Timestamp; the
// writer's clock for records without one), after the handler ran.
//
// # Tracing
//
// A command record's traceparent header (W3C trace context, package wire)
// is stored with everything its command produced: its events, its result
// and its dead letter (events.SequencedItem.TraceParent), and the relay
// sends it on as their records' traceparent header. A malformed header is
// ignored. With WriterConfig.TracerProvider the writer also traces (see
// package tracing for the names and attributes): a span per batch, with a
// decide and a commit span per attempt, and a span per record that
// continues the record's trace, or starts one, and links to the batch span;
// the items then carry that span's context instead. Without a provider no
// span is started and the header is only read and carried.
//
// # Wiring
//
// The consumer needs HandleBatch and Tracking; its tracking name must be the
// writer's TrackingName (Writer.Tracking answers for it whatever name it is
// given). It must hand over records in
// offset order within each partition, call HandleBatch again with the same
// records after an error, and on an error wrapping store.ErrTrackingConflict
// seek past the stored tracking.
//
// Whoever owns the writer calls Close before the store is closed: it cancels
// a call still in progress and waits for it, so that nothing touches the
// store afterwards.
//
// # Not guaranteed
//
//   - Nothing is published by this package: results and events reach Kafka when
//     the relay publishes the notification log, so a client sees them only after
//     that (at least once, unless the relay publishes transactionally).
//   - Exactly-once effect needs the consumer's cooperation: a consumer that
//     commits Kafka offsets and does not resume from Tracking may skip records.
//   - Deduplication is by command id only, within the store's lifetime.
//   - On PostgreSQL at read-committed isolation, the in-transaction re-check of
//     unchanged aggregates narrows but does not close the window in which a
//     concurrent writer's append could make a rejection or conflict stale; with
//     serialised backends (memory, SQLite) it is exact. Accepted commands are
//     always checked by the unique constraint.
//   - Handlers must be deterministic and free of I/O; a panicking handler rejects
//     its command.
//
// The Registry and the Writer are safe for concurrent use once built.
// HandleBatch may run concurrently for different partitions.
package command
