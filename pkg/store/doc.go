// Package store is the storage vocabulary of eventlog: the sequenced item and
// the notification, the recorder interfaces every backend implements, the
// typed errors callers branch on, and what is built on a recorder alone: the
// EventStore (events <-> items through an events.Mapper), the Repository
// (aggregates rebuilt by replaying their events, from a snapshot if there is
// one) and DataKeys (per-entity data keys for crypto-shredding).
//
// It imports no database driver. The backends are subpackages, each knowing
// only its own driver: store/postgres (pgx), store/sqlite (modernc.org/sqlite,
// the embedded default) and store/memory; store/storetest is the conformance
// suite all of them pass, so that what follows holds on each.
//
// # Guarantees of every backend
//
//   - An item's (sequence id, position) is unique. An append that takes a
//     taken position fails with a *ConflictError (ErrConflict) naming the item,
//     never a raw driver error, and writes nothing: one InsertEvents call, and
//     one transaction (InTx), is all or nothing.
//   - Items that cannot be stored (ValidateItems: nil sequence id, negative
//     position, topic, codec or state over its limit) are refused with
//     ErrInvalidItem before they reach the database.
//   - The notification log (ApplicationRecorder) gives every item a place in
//     one order over all sequences, and a reader that continues from the last
//     id it got never skips an item that commits later with a lower id. Items
//     of one sequence are in position order in it.
//   - Tracking only moves forward: a SetTracking at or below the stored
//     position fails with a *TrackingConflictError (ErrTrackingConflict) and
//     the whole transaction rolls back, which is what makes consumers apply
//     what they consume exactly once.
//   - An item's trace context (SequencedItem.TraceParent) is stored with it,
//     outside its state, and returned with its notification
//     (SelectNotifications); an item without one comes back without one.
//     Reads of a sequence need not return it.
//   - Forgetting a sequence (KeyRecorder.Forget) deletes its data key and its
//     snapshots and appends its tombstone in one transaction; a forgotten
//     sequence never gets a key again.
//
// The optional interfaces (SequencesReader, TrackingsSetter, Notifier) only
// save round trips or polling; a caller that finds one missing does the same
// work one call at a time.
//
// # EventStore, Repository, DataKeys
//
// A Repository's Get replays an aggregate's events in position order,
// starting from the latest snapshot of its SnapshotTopic when it keeps
// snapshots; a cached state is brought up to date from the store before it
// is returned, so Get never returns an older version than the store holds.
// A discarded aggregate, or one with no events, is ErrNotFound. Replay is the
// same rebuild from items the caller read itself (the command writer reads
// many sequences in one call). Snapshots and the cache are optimisations: a
// failure to store a snapshot only makes the next Get replay more.
//
// DataKeys does its I/O under the caller's context, in PrepareDataKeys
// (events.Mapper.PrepareKeys): that is where keys are read and created; the
// cipher's DataKey then answers from memory and never creates a key. A key
// neither prepared nor cached is read on demand, within
// DataKeysConfig.Timeout, for decoders that do not prepare. EventStore.Put
// and Get, and the Repository, prepare the keys of the sequences they touch.
//
// # Not guaranteed
//
//   - Nothing here publishes to Kafka: the relay (package kafka) reads the
//     notification log.
//   - Notification ids grow in log order but are not contiguous; a reader
//     must never assume that ID+1 exists.
//   - A Repository does not lock: two writers may load the same version, and
//     the unique (sequence id, position) decides which append wins.
//   - A snapshot is stored at most once per position: a snapshot of another
//     topic at the same position is kept, and the Repository then replays
//     from the start until a later position gets one of its topic.
//
// Recorders, EventStore, Repository and DataKeys are safe for concurrent use
// (a Tx is not: one goroutine uses it).
package store
