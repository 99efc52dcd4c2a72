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
// read models share. All of them, and policies of your own, park through the
// same Runner.
//
// DeadLetters is the operator's side of parking, over the runners of a
// projector: list the parked sequences (projection, entity, first position,
// count, reason, first and last time), show one with its events and its
// retries and skips, retry one or all, skip one with a reason. The projector
// serves it over HTTP (/v1/dead-letters) and `eventlog dead-letters` calls
// that.
//
// # Guarantees
//
//   - Exactly-once effect, given a consumer that resumes from Tracking after
//     every assignment, restart and error. The policy's effect, the parked
//     events, the dead letters and the tracking of every (topic, partition)
//     of the batch commit in one transaction, or nothing does. Tracking is
//     written first, to the batch's first offset of each partition and then
//     to its last, and only moves forward, so a batch any record of which
//     was committed before (a redelivery, an overlapping batch) fails with
//     store.ErrTrackingConflict and changes nothing.
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
//   - Poison events park their sequence. A poison event is an item that does
//     not decode (corrupt state, an unknown topic or codec, a missing key),
//     or one the policy fails with a permanent error (Permanent, ideally in
//     an *ItemError naming it; an unattributed one is traced by applying the
//     batch's items one at a time in a new transaction), or with a transient
//     error it attributes to the item (an *ItemError) more than
//     Config.TransientRetries times in a row, with back-off, within one
//     HandleBatch. With PoisonPark (the default) the runner parks the
//     event's sequence for the projection: the event and every later event
//     of the same sequence that arrives are stored in the target
//     (store.ParkTx), in position order, in the same transaction as the rest
//     of the batch and its tracking, and are not applied; the batch commits
//     and the other sequences go on. A gap between parked events is filled
//     from Config.Source, so each event is parked once. The policy's effect
//     for the sequence therefore stays as it was after the event before the
//     poison one: it never shows a state that skipped an event. The poison
//     event is also recorded once as a dead letter (wire.DeadLetterItem),
//     which the target's relay publishes to the dead-letters topic. A parked
//     sequence is in the target, so it survives restarts and rebalances,
//     and a rebuild keeps to it (see Replay). The parking is logged once per
//     sequence, with the entity, the position and the reason.
//   - Retry and skip. Runner.Retry (and DeadLetters, for operators) applies
//     a parked sequence's events in order, exactly once, in one transaction
//     of the target that takes them out of the parked ones, passes them
//     through the position guard and gap repair, and records the retry; if an
//     event fails again, the ones before it are applied and it and the rest
//     stay parked with the new reason. Runner.Skip drops them instead,
//     recording the reason given (never silently); the skipped positions
//     count as applied from then on, so later events are applied after
//     them. Every batch locks the parked rows of its sequences before it
//     reads the policy's positions, and so does a retry or skip: a retry
//     racing the live runner (in this process or another, before or after a
//     rebalance) takes turns with it, and nothing is applied twice.
//   - Records whose headers do not parse name no sequence: they are
//     recorded as dead letters, unchanged and with the reason, in the same
//     transaction, and the batch commits without them. With PoisonDeadLetter
//     every poison event is handled so (and the later events of its sequence
//     are applied without it: use it only where that is right); its
//     position counts as applied for the rest of the batch. With PoisonStop,
//     HandleBatch fails with a *PoisonError and commits nothing.
//   - Transient errors (anything not permanent: the database, the network, a
//     context that ended) the policy does not attribute to an item are
//     returned, after the transaction rolled back, so the consumer retries
//     the batch with back-off. They never park anything.
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
//     applied twice, gaps go unnoticed, and a parked sequence may miss an
//     event the relay published out of order.
//   - Parking is per sequence: events of other sequences that depended on a
//     parked one (a process application that reads two entities) are
//     applied regardless. A retry applies all of a sequence's parked events
//     in one transaction, however many they are.
//   - A retry is exactly-once inside the target's transaction only: a
//     policy that calls out is at-least-once there too.
//   - Each projection parks on its own: an event two projections cannot
//     apply is parked, retried and skipped in each separately.
//   - A rebuild parks what fails again without a dead letter (the rebuild
//     reads the store, not a Kafka record).
//   - With PoisonDeadLetter, a poison item that was the last of its
//     sequence in its batch leaves the policy's position of that sequence
//     behind it. The sequence's next event then fills the gap from the
//     source, meets the same item again, and dead-letters it a second time,
//     as an item read from the source (which is stored once however often it
//     is read). The policy does not see it.
//
// # Tracing
//
// ItemOf reads an event record's traceparent header into the item's
// TraceParent, so a policy sees the trace context of the command that
// produced the event (sqlmodel's Tx.Emit gives it to the commands it
// sends). With Config.TracerProvider, HandleBatch is traced (package
// tracing): a batch span, a span per transaction tried, and an apply span
// per record with a traceparent, which continues that trace, ends once the
// batch committed (with the record's outcome: applied, duplicate, parked,
// dead-letter) and whose context the policy then sees as the item's
// TraceParent. Retries of parked sequences and rebuilds are not traced.
//
// Runner is safe for concurrent use; batches handled at the same time should
// cover different partitions. Policies must be safe for concurrent use if
// several runners share one.
package projection
