// Package e2e holds eventlog's end-to-end tests: the writer as a program
// (cli.Writer, in process and as a child process that is SIGKILLed), several
// writers in one consumer group or in competing ones, the relay against
// out-of-order commits and across hand-overs, bad input, duplicate delivery,
// graceful shutdown, a failover of the PostgreSQL primary to its synchronous
// standby while commands flow and reads from a standby with min_version
// (TestFailoverToStandby, TestReadReplica: only with
// EVENTLOG_TEST_PG_FAILOVER=1, on clusters of their own from
// pgtest.NewReplicated), and an end-to-end benchmark (BenchmarkEndToEnd).
//
// Every test runs against an in-process Kafka-protocol broker (kfake). Tests
// that need PostgreSQL get a schema of their own from internal/pgtest: set
// EVENTLOG_TEST_POSTGRES_DSN, else they skip (or fail, with
// EVENTLOG_REQUIRE_POSTGRES=1). Most run on SQLite and on PostgreSQL. Run
// with GOEXPERIMENT=jsonv2 and -race, as the Makefile does; -short skips the
// crash test and shrinks the others. TestWriterSIGKILL runs alone; the other
// tests run in parallel with each other.
//
// What the tests check after a scenario, from the store and from Kafka
// (checkStore, checkKafka):
//
//   - every command has exactly one effect: each entity has exactly the events
//     its commands made, in position order, and each command exactly one
//     result item (a second one means a record was handled twice);
//   - every stored event is on its events topic at least once, and every
//     event record there is a stored event (same key, position, bytes and
//     headers);
//   - per key, the first copies of the events are in position order 0, 1, 2, ...;
//   - every command has a result on the results topic, and the first one is
//     the stored one.
//
// Some tests show bugs of other packages and fail until those are fixed; each
// says which in its comment (TestPostgresStandbyRelay,
// TestRelayHandOverPublishesNothingTwice, TestOversizedCommandDeadLetter,
// TestLargeCommandEventReachesEventsTopic, TestEventTimestampIsRecordTimestamp,
// TestShutdownDuringStartup).
//
// The package has no non-test code: this file only documents it.
package e2e
