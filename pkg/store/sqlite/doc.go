// Package sqlite is the embedded store backend: a store.ProcessRecorder,
// store.SequencesReader, store.SnapshotRecorder, store.KeyRecorder,
// store.ParkRecorder and store.Notifier on one SQLite database file, through modernc.org/sqlite
// (pure Go, no cgo).
//
// Per-entity data keys (crypto-shredding) live in the table entity_keys,
// wrapped by a master key. Forget appends the tombstone, empties the key row
// (keeping that the sequence was forgotten) and deletes the snapshots in one
// transaction; the wrapped key's old bytes may remain in free pages and the
// WAL until reused, checkpointed or VACUUMed.
//
// The projections' parked sequences (store.ParkRecorder) live in the tables
// parked_sequences, parked_events and park_actions; a transaction holds the
// database's write lock, so the rows ParkedSequences reads are locked with
// it.
//
// Open opens a file and owns its connections; New wraps a *sql.DB of the
// caller's (for read models kept in the same file, written in the same
// transaction through Tx.ExecContext); MemoryPath opens a throwaway in-memory
// database. Open and Migrate apply the embedded, versioned schema migrations
// and refuse, with ErrSchemaTooNew, a database migrated by a newer binary.
//
// # Durability
//
// The database runs in WAL mode with synchronous=FULL: when InsertEvents, InTx
// or InsertSnapshot returns nil, the transaction is in the write-ahead log and
// the log has been fsynced, so it survives the process being killed, the OS
// crashing and the power failing (given storage that honours fsync). The
// fsync costs one flush per commit, not per item. Measured with
// BenchmarkRecorder on a shared 2-core VM (ext4), one item per transaction
// ran at 600-1,650 events/s with FULL against 4,000-8,400 with NORMAL, and
// 100 items per transaction at 20,000-59,000 against 30,000-68,000,
// depending on the machine's load. Callers that want throughput batch items
// into transactions rather than weaken the guarantee. Options.Synchronous can
// select NORMAL, which keeps the process-crash guarantee and the file's
// integrity but may lose the last commits on power loss; nothing weaker is
// accepted. An error from a write means nothing of it was committed: a
// context that ends before COMMIT rolls back, and COMMIT itself is not
// interrupted. The one exception is shared by every database: when the disk
// reports an I/O error during COMMIT, the outcome is unknown.
//
// # Concurrency and the notification log
//
// A Recorder is safe for concurrent use. Writes (InsertEvents, InTx,
// InsertSnapshot, Migrate) take a single write connection one at a time,
// waiting in Go under the caller's context, and each is one BEGIN IMMEDIATE
// transaction, which holds SQLite's write lock from its first statement.
// Reads use a pool of connections and, in WAL mode, run alongside the writer,
// seeing the last committed state.
//
// SQLite admits one writer per database at a time, across processes, so
// notification ids (an AUTOINCREMENT column, assigned while the write lock is
// held) are assigned in commit order: every id a transaction gets is greater
// than every id committed before it, and no transaction can commit a smaller
// one later. A reader that continues from the last id it read therefore never
// skips an item, and SelectNotifications can return everything committed
// without holding anything back. Ids are not contiguous. Within one append,
// the items of a sequence get ids in position order whatever their order in
// the batch.
//
// A position taken fails the append with a *store.ConflictError naming it;
// invalid items fail with store.ErrInvalidItem before the database is
// touched. SQLITE_BUSY (a lock held by another process) is never returned:
// the recorder waits, up to Options.BusyTimeout inside SQLite and then in
// retries, until the caller's context ends.
//
// # Transactions
//
// InTx runs its function while holding the write lock, so the function
// should be short and must write through the Tx it is given: a write through
// the Recorder would wait for the function to end. A Tx.InsertEvents that
// fails (a conflict, say) keeps nothing of that call, through a savepoint, and
// the transaction may go on; a SetTracking conflict dooms the whole
// transaction, which InTx rolls back even if the function ignores the error.
//
// # What it does not do
//
//   - Notify wakes tailers after commits made through this Recorder only.
//     Other processes writing the same file are not seen until the tailer
//     polls, as store.Notifier requires it to now and then.
//   - Several processes may share a file, and every guarantee above still
//     holds, but they contend for the one write lock and do not wake each
//     other's tailers: one owning process per file is recommended.
//   - WAL needs shared memory between the processes using a file, so the file
//     must not be on a network file system. Open fails if WAL cannot be set.
//   - An in-memory database (MemoryPath) has a single connection: reads wait
//     for an open write transaction, and it is gone when the Recorder closes.
//   - Throughput is bounded by the single writer and, with synchronous=FULL,
//     by one fsync per transaction; PostgreSQL is the backend for more.
//
// # Schema
//
// Tables events (id INTEGER PRIMARY KEY AUTOINCREMENT, sequence_id BLOB(16),
// position, topic, state, codec; UNIQUE(sequence_id, position)), snapshots
// (the same columns, keyed by sequence_id and position) and tracking ((name,
// topic, partition) -> position), all STRICT, plus eventlog_migrations, which
// records the migrations applied. Migration files live in migrations/, one per
// version; a released one is never edited.
package sqlite
