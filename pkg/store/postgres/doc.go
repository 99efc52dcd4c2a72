// Package postgres is the PostgreSQL store backend (PostgreSQL 13 or later;
// production targets 14+), on pgx/v5.
//
// A Recorder is a store.ProcessRecorder, a store.SequencesReader, a
// store.SnapshotRecorder, a store.KeyRecorder, a store.ParkRecorder and a
// store.Notifier. New takes a connected
// *pgxpool.Pool and Options (schema, and a table prefix so several
// applications can share a schema); it never dials or reads the environment.
// Connect is a helper for main: it parses a DSN, opens a pool, pings, and says
// what to fix (ErrInvalidDSN, ErrUnreachable, ErrAuth, ErrNoDatabase) without
// ever printing the password.
//
// # Schema and migrations
//
// Tables named <prefix>events, <prefix>snapshots, <prefix>tracking,
// <prefix>entity_keys (per-entity data keys for crypto-shredding, wrapped by
// a master key; see store.KeyRecorder), <prefix>parked_sequences,
// <prefix>parked_events and <prefix>park_actions (the projections' parked
// sequences; see store.ParkRecorder: ParkedSequences locks the rows it reads
// FOR UPDATE, in the order of the ids given), <prefix>shard_layout (the
// database's place in a sharded store, recorded and checked by CheckShard),
// plus <prefix>schema_version. Events have the primary key (sequence_id,
// position) and a unique index on notification_id. Migrations are embedded SQL
// files applied by Migrate (or by New with Options.Migrate), each in its own
// transaction, serialised across processes with pg_advisory_lock. A schema
// that a newer program migrated is refused with ErrSchemaTooNew.
//
// # Appends
//
// InsertEvents validates the batch with store.ValidateItems before any I/O,
// then appends it in one statement, INSERT ... SELECT FROM unnest($1::uuid[],
// ...), which is one transaction however many items it holds. A taken
// position fails the statement (SQLSTATE 23505), so nothing is written, and
// becomes a *store.ConflictError naming the item, read from the error's detail
// or, failing that, asked of the database. Items are sent sorted by (sequence
// id, position), so concurrent appends lock index entries in one order and do
// not deadlock each other. COPY was measured as the alternative: with the same
// guarantees (transaction id, guard, NOTIFY) it needs four round trips to the
// statement's one and ran at 77-88% of a bare pgx CopyFrom's throughput, where
// the statement runs at 98-104% (BenchmarkAppendMethods, 100 items per
// transaction), so the statement stays.
//
// Inside InTx, a taken position fails InsertEvents with the
// *store.ConflictError and the call writes nothing, but the transaction stays
// usable, so one conflicting command of a group commit does not fail the
// others. The first 16 calls of a transaction run the statement under a
// savepoint (sent with it, and its release, in one round trip) and roll back
// to it on a unique violation: a plain INSERT costs the server about a fifth
// less than ON CONFLICT DO NOTHING, which inserts each row speculatively
// (BenchmarkTxAppend, which reports the server's CPU time per transaction).
// Later calls use ON CONFLICT DO NOTHING and delete the rows they inserted if
// a position was taken, so that a transaction never holds more than 16
// subtransactions (past 64, every snapshot on the server gets slower).
//
// # The notification log (DESIGN invariant 2)
//
// An item's notification id is
//
//	(pg_current_xact_id() << 20) + ordinal
//
// where ordinal is the item's place among the items its transaction inserted
// (the Tx counts across calls; at most store.MaxItemsPerAppend = 1<<20 per
// transaction). Readers select
//
//	WHERE notification_id > $after
//	  AND notification_id < (pg_snapshot_xmin(pg_current_snapshot()) << 20)
//	ORDER BY notification_id LIMIT $n
//
// Why no reader skips an item: the statement reads with one snapshot S whose
// xmin is X. Every transaction with an id below X had ended when S was taken,
// so its rows, if it committed, are visible in S, and none will ever be added
// below X << 20. Any transaction that commits later was running at S or began
// after it, so its id is at least X and its items' ids are at least X << 20,
// above everything the reader can have returned. A reader that continues from
// the last id it got therefore never misses an item and never sees one twice.
//
// The obvious alternatives are wrong: a bigserial read with id > last skips a
// row whose serial was taken before, and committed after, a row already read;
// and "bigserial, but only rows of transactions below xmin" still skips,
// because a transaction with a larger transaction id can take a smaller serial.
// TestOutOfOrderCommits shows the first failing (as its negative control) and
// this design passing.
//
// The cost: the horizon is the oldest transaction id still running in the
// whole cluster (every database), so one long transaction that wrote anything
// holds back every tailer until it ends. Tailers wait, they do not skip
// (TestLongRunningTransaction). Watch for sessions idle in transaction and
// forgotten prepared transactions: pg_stat_activity.backend_xid,
// pg_prepared_xacts. MaxNotificationID is the greatest id below the horizon.
// Notification ids are large (about 2^20 times the transaction id) and far from
// contiguous; they fit in an int64 until the cluster has used 2^43 transaction
// ids (27 years at 10,000 a second). Read the log on the primary. Restoring a
// dump into another cluster restarts transaction ids lower than the stored
// ones, which would put new items before old ones: Migrate refuses such a log
// with ErrLogAhead (advance the new cluster's transaction id first).
//
// # Position order in the log (DESIGN invariant 3)
//
// Within one append the ordinals follow position order per sequence, whatever
// order the caller passed. Across transactions ids follow transaction ids, not
// commit order, so one case needs a guard: a transaction T1 that took its id
// (wrote anything) before T2, and then appends position p+1 of a sequence
// after T2 committed position p of it, would give p+1 a smaller id than p. The
// insert statement checks, with one primary-key probe per sequence of the
// batch, that the item at position p-1 before the batch's first position p has
// a smaller id than the batch's; if not, it inserts nothing and returns a
// *LogOrderError, which matches store.ErrConflict and ErrLogOrder. The
// transaction stays usable, but the same append fails in it again: retry in a
// new transaction (a stand-alone InsertEvents takes its id after anything it
// could have read, so it never fails this way). The guard assumes appends are
// contiguous: if p-1 does not exist yet (a caller appending with a gap), it has
// nothing to compare with and lets the append through.
//
// # Reads
//
// SelectEvents reads one sequence with one index scan. SelectSequences (the
// optional store.SequencesReader, on the Recorder and inside InTx) reads many
// sequences, each with its own store.Query, in one statement and so one round
// trip: the queries go as arrays, unnest'ed and joined LATERAL to one
// primary-key scan per sequence (ascending or descending, with its limit), a
// nested loop over the input whatever the size of the table.
//
// # Tracking and transactions
//
// InTx runs fn in a READ COMMITTED transaction. SetTracking is one upsert
// that updates only if the stored position is lower; if it changes nothing it
// returns a *store.TrackingConflictError, and InTx rolls back and returns that
// error even if fn ignored it. SetTrackings (the optional
// store.TrackingsSetter) sends several of those upserts as one pipelined pgx
// batch: one round trip, run in order by the server. PgxTx gives postgres-specific code the pgx.Tx
// under a store.Tx, to commit its own writes with the store's. If the
// connection breaks during the commit, the outcome is unknown to the caller:
// retry with idempotent operations (tracking makes consumers so).
//
// # Wake-ups
//
// Every append calls pg_notify on a channel private to the store in its
// transaction; NOTIFY is delivered at commit, and duplicates within a
// transaction collapse. Notify LISTENs on one dedicated connection (taken out
// of the pool), reconnects when it drops and wakes every subscriber after a
// reconnect. Wake-ups can still be lost, so a tailer must also poll, on a
// timer, and treat a wake-up only as a reason to poll sooner.
//
// # Forgetting (crypto-shredding)
//
// A Recorder is a store.KeyRecorder. CreateDataKey inserts with ON CONFLICT
// DO NOTHING and then reads the row in a second statement, so racing callers
// all get the key that won. Forget runs in one InTx transaction: the tombstone
// appended like any item (so it takes the log-order guard and the
// notification id of the transaction), the key row's wrapped key set to NULL
// with forgotten_at (a row is made if the sequence had no key, so none is
// ever made later), and the sequence's snapshots deleted. The old row
// version holds the wrapped key until VACUUM; the WAL and backups keep it
// until they expire.
//
// # Leader election
//
// TryLock takes a session-level pg_try_advisory_lock on a dedicated connection
// and returns a context that is cancelled (cause ErrLockLost) when a periodic
// ping finds that connection dead, since the server then releases the lock. It
// is meant for "one relay per store"; the holder must stop when the context
// is done, and its work must tolerate the short window before it notices.
//
// LISTEN and session advisory locks need session-level connections: put
// PgBouncer in session mode, or connect directly, for those features.
//
// # Concurrency
//
// A Recorder is safe for concurrent use; a store.Tx is not. Close stops the
// recorder's goroutines (the LISTEN connection, lock monitors), releases its
// locks, closes Notify channels and waits; it does not close the pool.
package postgres
