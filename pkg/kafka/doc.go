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
// An item with a trace context (events.SequencedItem.TraceParent, kept by
// the store) carries it as its record's traceparent header: events, results
// and the commands a process application sent. A dead letter keeps the
// original record's headers. With RelayConfig.TracerProvider the relay also
// starts a span per transaction (or per page, at least once), linked to the
// items' trace contexts (package tracing).
//
// How large a record a topic takes is, with RelayConfig.TopicLimits, the
// topic's max.message.bytes as the brokers describe it, learned before the
// relay's first record to the topic (so a dead-letters topic configured for
// large records gets the dead letters of oversized commands whole); without
// it, the client's kgo.ProducerBatchMaxBytes for every topic.
//
// A relay publishes in one of two modes, RelayConfig.Transactional.
//
// What the relay guarantees in both modes:
//
//   - Log order. Records are produced in notification-id order through the
//     idempotent producer with acks from all in-sync replicas. Since every
//     record of a key goes to one partition, the events of one sequence reach
//     their partition in position order. Retriable broker errors are retried
//     by the producer without duplicates or reordering.
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
// # Transactions
//
// In transactional mode the relay publishes each batch of the log (up to
// MaxInFlightPages pages: events, results, dead letters, and whatever else the
// log holds) in one Kafka transaction, and writes in that same transaction its
// checkpoint: a record on CheckpointTopic (a compacted topic of one partition)
// keyed by the relay's transactional id, whose value is the batch's last
// notification id. Records and checkpoint commit or abort together, as Kafka
// Connect's exactly-once source connectors do with their offsets (KIP-618).
// Within a batch, the next page is read while the last one is routed and
// produced.
//
//   - Exactly once for read_committed consumers. A relay killed at any
//     instant leaves at most one transaction open; the next relay of the
//     store initializes its producer with the same transactional id, which
//     makes the broker abort that transaction, and then reads the checkpoint
//     back (read_committed) and resumes after it. A transaction that fails
//     (a record the broker refuses, a commit whose answer is lost, records not
//     acknowledged within TransactionTimeout) is aborted, and the relay reads
//     the checkpoint back before publishing again: a commit whose answer was
//     lost may have committed, and then nothing of it is published again. So
//     a read_committed consumer sees every item once, in log order per key,
//     even across crashes, failovers and broker faults.
//   - Fencing. The transactional id is the same for every relay of a store
//     (RelayConfig.TransactionalID; by default derived from an id the store
//     keeps). Initializing a producer fences every older producer of the id:
//     a relay that lost its lock without noticing (a zombie) cannot commit
//     anything after the new one has started, in addition to the lock. A
//     fenced relay stops publishing (ErrFenced, counted in RelayStats.Fenced),
//     gives up its lock and tries it again.
//   - The checkpoint in Kafka is the source of truth. The relay copies it to
//     the store (the tracking record it uses in the at-least-once mode) at
//     most every CheckpointInterval, for operators and lag metrics; a copy
//     that is behind only delays that view. The store's checkpoint counts
//     only when Kafka has none for the transactional id (the first
//     transactional start: the relay goes on from where the at-least-once
//     mode stopped), or when the at-least-once mode has moved it since the
//     last transactional run.
//   - Shutdown finishes the transaction in progress (within
//     TransactionTimeout) and copies the checkpoint to the store.
//
// What transactions do not do, and what to know about them:
//
//   - read_uncommitted consumers (the default of the Java client and of
//     franz-go; kcat, librdkafka and kafkajs read committed by default) see
//     the records of aborted transactions too: after every crash, failover
//     or failed transaction, the records that had been produced and were
//     then aborted, which the relay publishes again. They see what the
//     at-least-once mode gives: duplicates, exact copies, and the last copy
//     of each event in position order. Read with
//     isolation.level=read_committed.
//   - An open transaction holds back read_committed consumers of every
//     partition it wrote (they read only below the last stable offset),
//     including other producers' records on those partitions, such as the
//     commands the Commander sends. A relay that dies leaves its transaction
//     open until the next relay of the store starts (a standby takes over
//     within about a second) or until the broker aborts it after
//     TransactionTimeout (default 10s; at most the broker's
//     transaction.max.timeout.ms, 15 minutes by default). A relay that does
//     not come back thus stalls those consumers for up to TransactionTimeout.
//   - Hanging transactions (KIP-890). Before Kafka 3.6, a produce request
//     delayed past the end of its transaction (a retry, a slow network) could
//     be written after the commit or abort marker, opening a transaction the
//     coordinator does not know: it is never aborted, and it holds back
//     read_committed consumers of its partition for good, until an operator
//     aborts it (kafka-transactions.sh find-hanging, then abort, KIP-664).
//     franz-go ends a transaction only once every produce request has an
//     answer, which avoids the common case; Kafka 3.6+ verifies that a
//     partition is part of an ongoing transaction before it appends
//     (KIP-890 part 1), and Kafka 4.0 with transaction.version 2 bumps the
//     producer epoch on every commit and abort (part 2), which franz-go uses
//     when the cluster enables it (Produce v12, EndTxn v5): a late request
//     of an ended transaction is then refused. A hanging transaction on the
//     checkpoint topic stops a relay from starting: it waits for the
//     transactions open on that topic to end, logs that it waits, and fails
//     (and retries) after twice TransactionTimeout plus 10s.
//   - Broker settings and permissions. The relay's principal needs WRITE and
//     DESCRIBE on its transactional id, READ, WRITE and DESCRIBE on the
//     checkpoint topic (and CREATE to create it with Admin) and, before Kafka
//     3.0, IDEMPOTENT_WRITE on the cluster; the brokers must be able to create
//     __transaction_state (transaction.state.log.replication.factor, default
//     3, at most the number of brokers, and transaction.state.log.min.isr at
//     most that). When the broker refuses, the relay logs an error wrapping
//     ErrTransactionsRefused that says what to set, and tries again with
//     back-off. The at-least-once mode needs none of this.
//   - The relay makes its transactional producer from client.Opts() with
//     kgo.TransactionalID and kgo.TransactionTimeout added (a new one for
//     each term as the active relay, and after a failed abort), so the
//     client's options must suit a producer: no consumer options, and no
//     hooks that cannot be registered twice.
//   - Several stores can share a checkpoint topic (their keys differ), but
//     a relay then starts only once the transactions open on the topic at
//     its start have ended.
//   - Transactions cost a commit per batch: a caught-up relay commits one
//     transaction per read of the log, which adds the EndTxn round trip to
//     the latency of each event; a busy one commits every MaxInFlightPages
//     pages. See BenchmarkRelayPostgres for the throughput of both modes, and
//     BenchmarkRelayStores for each store beside the memory recorder.
//
// # At least once
//
// Without transactions, the relay pipelines up to MaxInFlightPages pages and
// keeps its checkpoint in the store:
//
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
//
// What it does not guarantee:
//
//   - Exactly once. An item is published again when the relay crashes (or
//     loses its lock) after the broker acknowledged it and before the
//     checkpoint covered it (at most CheckpointInterval plus the pages in
//     flight), and when a publish fails: the items after the failure that were
//     acknowledged are published again. Such duplicates are exact copies of
//     the record (same key, value and headers), and read_committed consumers
//     see them too.
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
// works. It reads with isolation read_committed, so that it sees no record of
// an aborted transaction of a transactional relay. The offset it commits is
// its last record's plus one: on a partition that ends with a transaction
// marker, lag tooling that compares it with the end offset shows 1 (CaughtUp
// tells a marker from a record).
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
// A store can take back commits that had returned: PostgreSQL with
// synchronous_commit off (the projector's read model) in a crash, or in a
// failover to a standby. With VerifyTracking, the consumer checks, before the
// next batch after a failed one or after an idle spell (VerifyIdle), that the
// stored tracking of every partition it handled still holds the last offset
// it handled; a partition whose tracking went back is fetched again from it.
// Without it, such records would be skipped: the handler's tracking guard
// refuses only offsets already recorded, not a gap.
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
// directly from the end offsets at the time its Run started, read_committed.
// It reads only the command id of each result (ResultCommandID) and decodes
// the results that are waited for. A command sent under a context that
// carries an OpenTelemetry span context gets it as its traceparent header.
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
// when the client finishes them. A transactional relay closes the producer it
// made before Run returns.
package kafka
