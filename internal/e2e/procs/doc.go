// Package procs holds eventlog's multi-process tests: the programs run as real
// child processes (the test binary re-executed, running cli.Main with the
// arguments of `eventlog <command>`), so that a test can SIGKILL, SIGSTOP and
// SIGCONT them as an operating system or an orchestrator would.
//
//   - TestProjectorsUnderChurn: three `eventlog projector` processes on one
//     PostgreSQL schema, one SIGKILLed, started or SIGSTOPped every two
//     seconds while 100,000 events flow (10,000 with -short), with relay
//     duplicates injected into the events topic. The read model must equal
//     the fold of the stored events, and no event may reach the read
//     model's policy twice (a trigger on the read-model table logs every
//     application in the projection's transaction).
//   - TestZombieProjector: a projector member that holds a batch past its
//     session timeout while its partitions move to another member; its late
//     transaction must fail with store.ErrTrackingConflict and change
//     nothing (in process: the programs have no session timeout flag).
//   - TestDevSIGKILL: `eventlog dev` SIGKILLed at random moments while a Kafka
//     client sends commands, and restarted on the same data directory and
//     ports; every acknowledged command must apply exactly once.
//   - TestSeparateProcesses: `eventlog broker`, two writers and two
//     projectors as separate processes on one PostgreSQL schema: the seed
//     scenario over HTTP, then a writer and a projector SIGKILLed while
//     commands flow.
//   - TestRelaySIGKILL: the writer's relay, as a process, SIGKILLed 100 times
//     (20 with -short) while it publishes 100,000 events appended to
//     PostgreSQL as it goes, at random instants and, fired by the broker, at
//     a produce request or a commit. In transactional mode a read_committed
//     consumer must see every (entity, position) exactly once and in order;
//     the at-least-once mode, its negative control, must show duplicates.
//   - TestKcatReadsCommittedAfterRelayCrash: kcat (librdkafka) reads the
//     events read_committed after a relay was killed mid-transaction: no
//     duplicate, nothing lost (skipped without kcat).
//   - TestTwoRelayWritersOnOneStore, TestProjectorKeepsApplyingDuringRebalance
//     and TestTrackingConflictReportsStoredPosition show bugs found on the
//     way (see their comments); they fail until the bugs are fixed.
//
// The programs run with franz-go's consumer group session timeout (45s), so
// a SIGKILLed or SIGSTOPped member keeps its partitions for 45s. Where a test
// runs the broker itself (kfake, in the test process), the broker rewrites
// every JoinGroup request to a session timeout of a few seconds (kfake's
// ControlKey), with the programs unchanged; against `eventlog broker` the
// test waits the 45s out. Either way the broker's groups are watched by
// internal/broker's Groups, which mends two ways kfake's group coordinator
// differs from Kafka's when a member dies.
//
// Tests that need PostgreSQL get a schema of their own from internal/pgtest
// (EVENTLOG_TEST_POSTGRES_DSN; they skip without it, or fail with
// EVENTLOG_REQUIRE_POSTGRES=1). Run with GOEXPERIMENT=jsonv2 and -race, as the
// Makefile does; -short shrinks the churn test and skips TestDevSIGKILL and
// TestSeparateProcesses. EVENTLOG_PROCS_LOG_DIR keeps the children's logs
// (JSON) in a directory of that name, and EVENTLOG_PROCS_LOG_LEVEL sets their
// level (default warn).
//
// The package has no non-test code: this file only documents it.
package procs
