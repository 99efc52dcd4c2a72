// Package kafka connects eventlog to Kafka with franz-go: topic admin, the
// relay that publishes a store's notification log, a consumer-group consumer
// that resumes from its handler's own tracking, and a Commander that sends a
// command and waits for its result. It talks to a store only through the small
// interfaces it declares (RelaySource, TrackingReader, Locker); it imports no
// store backend. Topic names, keys, values and headers follow package wire.
//
// # Relay
//
// Everything eventlog sends to Kafka is first written to the store's
// notification log, in the transaction of the state change it reports. A Relay
// reads the log from its checkpoint and publishes each item:
//
//   - an entity event (topic "<entity>.<Event>") to the entity's events topic,
//     keyed by its sequence id, value the stored state bytes unchanged, with
//     headers sequence-id, position, topic, notification-id and codec;
//   - a command result (wire.ResultItemTopic) to the results topic, keyed by the
//     result's entity id, value the result JSON, with a notification-id header;
//   - a dead letter (wire.DeadLetterItemTopic) to the dead-letters topic, with
//     the original record's key, value and headers unchanged, plus headers
//     error, source-topic, source-partition and source-offset;
//   - an item of no entity type (no dot in its topic) to RelayConfig.UnroutedTopic,
//     or, if that is empty, nowhere (logged and counted as skipped);
//   - an item the relay cannot route (an outbox item that does not decode, an
//     entity type that makes an invalid topic name, a record larger than its
//     topic takes) to the dead letters, keyed by its sequence id,
//     with the event headers and error, source-topic (the item's topic),
//     source-partition 0 and source-offset (its notification id); an
//     oversized one without its value. Bad data never stops the relay.
//
// How large a record a topic takes is, with RelayConfig.TopicLimits, the
// topic's max.message.bytes as the brokers describe it, learned before the
// relay's first record to the topic (so a dead-letters topic configured for
// large records gets the dead letters of oversized commands whole); without
// it, the client's kgo.ProducerBatchMaxBytes for every topic.
//
// What the relay guarantees:
//
//   - Log order. Records are produced in notification-id order through the
//     idempotent producer with acks from all in-sync replicas. Since every
//     record of a key goes to one partition, the events of one sequence reach
//     their partition in position order. Retriable broker errors are retried
//     by the producer without duplicates or reordering.
//   - The checkpoint (a store.Tracking named RelayConfig.Name, topic "",
//     partition 0) only ever covers items the broker acknowledged: it is the
//     greatest id such that it and every item before it were acknowledged. It
//     is written at most every CheckpointInterval (about that long after the
//     acknowledgements it covers, busy or idle), and when the relay rewinds
//     after a failure, stops or loses its lock. A checkpoint lost in a crash
//     only means that the items published since the one before are published
//     again: consumers apply an event only at the position they expect (see
//     below; the projectors' position guard), so they drop the copies.
//   - At least once. After a failed publish the relay waits for the records in
//     flight, stores the checkpoint, backs off (capped exponential) and
//     publishes again from the checkpoint. On shutdown it waits (up to
//     DrainTimeout) for the records in flight and checkpoints them, so a clean
//     stop or hand-over publishes nothing twice.
//   - Prompt reads. With a store.Notifier, the relay reads the log on each
//     wake-up and again 2ms, 4ms, 8ms ... later, since on PostgreSQL a
//     committed item is read only once every older transaction has ended,
//     which sends no wake-up; then every NotifiedPollInterval.
//   - One active relay per store, given a Locker whose lock is held by one
//     holder at a time and whose held context ends when the lock is lost. A
//     standby tries the lock every LockRetryInterval (at most 1s), so it takes
//     over within about a second of a clean release, and otherwise as soon as
//     the lock's implementation notices the holder is gone.
//
// What it does not guarantee:
//
//   - Exactly once. An item is published again when the relay crashes (or
//     loses its lock) after the broker acknowledged it and before the
//     checkpoint covered it (at most CheckpointInterval plus the pages in
//     flight), and when a publish fails: the items after the failure that were
//     acknowledged are published again. Such duplicates are exact copies of
//     the record (same key, value and headers).
//   - Strict per-key order after a failed publish. A non-retriable error
//     (message too large for the broker, authorization, a policy violation,
//     or a topic that does not exist after the producer's retries) fails a
//     record; records of later pages that were already produced may still be
//     acknowledged, so a later event of a key can precede the re-published
//     earlier one. The re-publication replays each key in order, so the last
//     copy of every event is in position order. Consumers should therefore
//     apply an event of a sequence only if its position is the next one they
//     expect, using the sequence-id and position headers (EventOf decodes
//     them).
//   - Kafka transactions. The relay does not use them, so a read_committed
//     consumer can see the duplicates above.
//
// # Consumer
//
// A Consumer is a consumer-group member for the writer and the projectors. It
// polls at most MaxPollRecords records from all its partitions and hands them,
// in offset order per partition, to a BatchHandler. Rebalances wait while a
// batch is handled (kgo.BlockRebalanceOnPoll), so a batch is never split across
// a rebalance. On each partition assignment it starts right after the
// handler's own tracking (TrackingReader), not at the group's committed offset;
// it commits offsets after each successful batch only so that lag tooling
// works. It reads with isolation read_committed.
//
// If the handler fails with store.ErrTrackingConflict (a zombie member or a
// duplicate delivery got there first), the consumer re-reads the tracking of
// the batch's partitions and seeks past it. Any other error is retried with
// capped exponential back-off on the same batch; records are never skipped.
// If a rebalance waits for a failing batch, or Run's context ends, the batch is
// given up and its partitions are rewound, so whichever member owns them next
// fetches them again. Exactly-once application is the handler's part: see
// BatchHandler.
//
// Run returns after the batch in flight has finished (or ShutdownTimeout),
// commits, leaves the group and closes its client.
//
// Not handled: a partition whose tracking lies beyond its end (the topic was
// deleted and created again) is reset to its start and conflicts until an
// operator resets the tracking.
//
// # Commander
//
// A Commander produces command envelopes to the commands topic, keyed by
// entity id, and waits for results on the results topic, which it consumes
// directly from the end offsets at the time its Run started. It reads only the
// command id of each result (ResultCommandID) and decodes the results that are
// waited for.
//
// # Compression
//
// ProducerCompression is the option that chooses the codec of the record
// batches a producer sends (none, gzip, snappy, lz4, zstd); consumers
// decompress them, so every consumer of a topic must read the codec. The
// default, DefaultCompression, is none, which every Kafka client reads with
// no plugin (franz-go's own default is snappy, which kafkajs, for one, reads
// only with a codec package). It changes neither the records' values nor
// their headers: compression of event states in the store is the mapper's
// (events.WithCompression) and shows in the codec header.
//
// # Logging
//
// NewLogger bridges franz-go's logs to log/slog. Relays, consumers and the
// Commander log failures they retry and return only errors they cannot.
//
// # Concurrency
//
// Stats methods and the Commander's methods are safe for concurrent use. Each
// Relay, Consumer and Commander runs one Run at a time; Run owns every
// goroutine it starts and returns only after they are done, except that the
// promises of records the relay gave up waiting for (DrainTimeout) are called
// when the client finishes them.
package kafka
