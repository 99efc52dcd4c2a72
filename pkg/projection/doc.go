// Package projection applies the events the relay publishes to Kafka to
// policies (read models, copies in other stores, anything written through the
// Go API) with exactly-once effect.
//
// A Policy applies a batch of events inside a transaction of a Target (a
// store.ProcessRecorder). A Runner is the handler a Kafka consumer (package
// kafka) drives: for each poll it calls HandleBatch with the records, and on
// partition assignment it calls Tracking and resumes after the offset
// returned. The Runner turns each record into an Item (sequence id, position,
// topic, notification id and codec from the headers, state from the value;
// see ItemOf), decodes the items with an events.Mapper if the policy is a
// DecodingPolicy, and applies the whole batch in one transaction.
//
// Built-in policies: PersistencePolicy (a copy of every event in another
// store), and the read model of the generic entity in packages pgreadmodel
// (PostgreSQL) and sqlitereadmodel (SQLite). Package readmodel holds what the
// read models share.
//
// # Guarantees
//
//   - Exactly-once effect, given a consumer that resumes from Tracking after
//     every assignment, restart and error. The policy's effect, the dead
//     letters and the tracking of every (topic, partition) of the batch commit
//     in one transaction, or nothing does. Tracking is written first, to the
//     batch's first offset of each partition and then to its last, and only
//     moves forward, so a batch any record of which was committed before (a
//     redelivery, an overlapping batch) fails with store.ErrTrackingConflict
//     and changes nothing.
//   - Per-sequence position guard. A policy that implements Positions says how
//     far its effect has got in each sequence; the runner reads that once per
//     batch, inside the transaction. An item at or below it is a duplicate
//     (the relay published it again at a new offset) and is skipped; the
//     items of a sequence reach the policy in position order, each exactly
//     once, whatever the batch splits, duplicates and redeliveries.
//   - Gaps. An item more than one position past the last one applied means
//     the items between were not seen: the relay published out of order after
//     a failed publish, or the topic lost them to retention. The runner reads
//     them from Config.Source (the store the relay publishes), in the same
//     transaction, and applies them first. Without a Source, or if the source
//     does not have them, HandleBatch fails with a *GapError: the batch is
//     retried, never skipped.
//   - Per-partition order. Items reach the policy in the order of their
//     records within each partition (the records of one sequence share a
//     partition, being keyed by sequence id).
//   - Poison events: a record whose headers do not parse, an item that does
//     not decode (corrupt state, an unknown topic or codec, a missing key), or
//     an item the policy fails with a permanent error (Permanent, ideally in
//     an *ItemError naming it). With PoisonDeadLetter (the default) each is
//     recorded, unchanged and with the reason, as an outbox item
//     (wire.DeadLetterItem) in the same transaction, and the batch commits
//     without it, so it is neither lost nor retried for ever; its position
//     counts as applied for the rest of the batch. A permanent error the
//     policy does not attribute is traced by applying the batch's items one
//     at a time in a new transaction. With PoisonStop, HandleBatch fails with
//     a *PoisonError and commits nothing.
//   - Transient errors (anything not permanent: the database, the network, a
//     context that ended) are returned, after the transaction rolled back, so
//     the consumer retries the batch with back-off. They are never
//     dead-lettered.
//   - Zombies. A runner that lost its partitions but still handles a batch (a
//     consumer-group zombie) never applies an event twice. If the live runner
//     has tracked the batch's offsets first, the zombie's transaction fails on
//     the forward-only tracking with store.ErrTrackingConflict (on PostgreSQL
//     after waiting for the transaction that holds the tracking row) and
//     commits nothing. If the zombie already held the tracking rows when it
//     stalled, it commits its batch and the live runner's overlapping batch
//     fails instead: either way each event is applied once.
//
// # Not guaranteed
//
//   - Exactly-once effect outside the target's transaction: a policy that
//     calls out (HTTP, another database) is at-least-once there, and is
//     called again after every rollback.
//   - Order across partitions, or across sequences in different partitions.
//   - A dead letter is keyed by its record's topic, partition and offset
//     only: two runners of different names that dead-letter the same record
//     into the same store store it once, with the first one's reason. An item
//     read from the source to fill a gap is dead-lettered with source topic
//     its sequence id, partition -1 and offset its position.
//   - Without Positions (Config.Unguarded) an event published twice is
//     applied twice, and gaps go unnoticed.
//   - A poison item that was the last of its sequence in its batch leaves the
//     policy's position of that sequence behind it. The sequence's next event
//     then fills the gap from the source, meets the same item again, and
//     dead-letters it a second time, as an item read from the source (which
//     is stored once however often it is read). The policy does not see it.
//
// Runner is safe for concurrent use; batches handled at the same time should
// cover different partitions. Policies must be safe for concurrent use if
// several runners share one.
package projection
