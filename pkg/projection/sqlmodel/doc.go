// Package sqlmodel runs read models and process applications that keep their
// state in tables of their own, written in plain SQL, on PostgreSQL or SQLite:
// the database of the projection's target store, so that every change commits
// with the tracking of the Kafka offsets that caused it.
//
// A Model names its tables, gives the statements that create them (Schema)
// and applies decoded events to them (Apply). ReadModel runs a Model as a
// projection.Policy for a projection.Runner whose target is a PostgreSQL or
// SQLite recorder. Statements go through a Conn; placeholders are $1, $2, ...
// on both databases. Every table name in a statement comes from Names.Table
// (Tx.Table in Apply), because a rebuild fills tables of other names.
//
// A process application is a Model whose Apply also sends commands
// (Tx.Emit): each command is stored in the target's outbox, in the same
// transaction, and the relay produces it to the commands topic. Its id is
// derived from the event that caused it (wire.CausedCommandID), so that the
// writer sees a redelivered or repeated command as the duplicate it is.
// It carries the trace context of that event (projection.Item.TraceParent)
// as its traceparent header, so the trace goes on through the writer.
//
// # Guarantees
//
//   - Exactly-once effect, with the runner's guarantees: the model's
//     statements, the commands it emits, its per-entity positions and the
//     tracking commit in one transaction, or nothing does.
//   - Per-entity position guard: ReadModel keeps the position of the last
//     event applied of each entity in a table of its own (<name>__positions)
//     and implements projection.Positions with it, so events the relay
//     published twice are skipped and gaps are filled from the source store,
//     in position order.
//   - Commands emitted once: the outbox holds each command id once; a command
//     whose id is already there is not stored again.
//   - Migrate creates the tables the first time, in one transaction, and
//     records a fingerprint of the Schema statements. A process whose Schema
//     differs from the tables' refuses to start (ErrSchemaChanged) until the
//     model is rebuilt.
//   - Rebuild replays the store's notification log into new tables (build
//     aside) while the live tables keep serving queries and the live
//     projection keeps applying, then swaps them in, in one transaction
//     (PostgreSQL: under a lock that stops writers only; SQLite: under the
//     database's write lock). Only one rebuild of a model runs at a time on
//     PostgreSQL (an advisory lock). A rebuild sends only the commands of
//     the events the live projection had not applied when the new tables
//     went in (it skips those events afterwards): commands of the others were
//     sent when the live projection applied them, so together the two send
//     each command once.
//
// # Not guaranteed
//
//   - A model's Apply must do all its work through the Tx it is given, and be
//     deterministic: it may run again after a rollback.
//   - Apply sees the tombstone of a forgotten entity (*events.Forgotten); what
//     the model keeps of that entity is the model's to delete.
//   - A table a model writes for several entities at once (a total, say)
//     holds the effect of a parked entity's events up to the one that
//     failed: parking holds back the entity's later events, it does not undo
//     earlier ones.
//   - A rebuild keeps to the projection's parking (projection.Replay): the
//     events of a parked entity and the positions an operator skipped stay
//     out of the new tables, and an event that fails again parks its entity
//     (in the swap's transaction). A retry, skip or park while a rebuild runs
//     makes it start again, at most three times.
//
// A ReadModel is safe for concurrent use by several runners of the same
// projection.
package sqlmodel
