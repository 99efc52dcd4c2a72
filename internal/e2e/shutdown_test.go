package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// runCLIWriter runs cli.Writer in a goroutine, as cmd/writer's main does,
// until the returned cancel is called (SIGTERM in the program). It returns a
// channel with Writer's result.
func runCLIWriter(t testing.TB, b *broker, st *testStore, log *slog.Logger) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := e2etest.Writer(t)
	args := append([]string{"-kafka-brokers", b.addrs[0], "-http-addr", "127.0.0.1:0", "-log-level", "warn"}, st.flags...)
	done := make(chan error, 1)
	go func() {
		done <- cli.Writer(ctx, args, cli.Env{Getenv: func(string) string { return "" }, Stdout: out, Stderr: out})
	}()
	t.Cleanup(cancel)
	return cancel, done
}

// TestGracefulShutdown stops cli.Writer (the writer program's body) by
// cancelling its context, as SIGTERM does, while commands flow; it must return
// nil within a few seconds. A writer started again must apply the rest, every
// command exactly once, and, as the stop was clean, nothing may be handled or
// published twice.
//
// Bugs it catches: a shutdown that hangs (a goroutine without an exit, a
// client closed before its users), one that returns an error on a clean stop,
// one that abandons the batch in hand or the relay's records in flight (the
// restarted writer then handles records again, or the relay republishes:
// DESIGN "Shutdown drains: finish the batch, commit, then close clients").
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(testing.TB) *testStore) {
		st := newStore(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		b := newBroker(t)
		b.createTopics(t)
		log := e2etest.Log(t, slog.LevelWarn)
		results := watchResults(t, b)
		wl := newWorkload(scaled(300, 60), scaled(10, 5))
		prod := b.client(t)
		produced := make(chan error, 1)
		// At a rate the writer keeps up with, so that the batch in hand at the
		// stop is small: finishing a 1,000-command batch on SQLite under the
		// race detector can itself take seconds.
		go func() { produced <- produceAt(ctx, prod, wl.records(t), scaled(400, 200)) }()

		stop, done := runCLIWriter(t, b, st, log)
		results.waitDistinct(t, wl.total()/3, time.Minute)
		t0 := time.Now()
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("cli.Writer returned %v after its context ended, want nil", err)
			}
		case <-time.After(40 * time.Second):
			t.Fatalf("cli.Writer did not return within 40s of its context ending")
		}
		took := time.Since(t0)
		stoppedAt := results.distinct()
		// The stop finishes the batch in hand first, which on SQLite under the
		// race detector and a loaded machine can take seconds by itself (a
		// writer that fell behind has up to 1,000 records in it).
		limit := 5 * time.Second
		if st.name == "sqlite" {
			limit = 15 * time.Second
		}
		if took > limit {
			t.Errorf("cli.Writer took %s to stop, want %s at most", took, limit)
		}
		if stoppedAt >= wl.total() {
			t.Fatalf("all %d commands were applied before the stop: the test stopped an idle writer", wl.total())
		}

		stop, done = runCLIWriter(t, b, st, log)
		if err := <-produced; err != nil {
			t.Fatal(err)
		}
		results.waitDistinct(t, wl.total(), time.Minute)
		waitRelayed(t, st.rec, time.Minute)
		stop()
		if err := <-done; err != nil {
			t.Errorf("restarted cli.Writer: %v", err)
		}
		v := readStore(t, ctx, st.rec)
		checkExactlyOnce(t, v, wl, false)
		kv := checkKafka(t, ctx, b, v)
		t.Logf("%s: stopped in %s with %d of %d commands applied", st.name, took.Round(time.Millisecond), stoppedAt, wl.total())
		if kv.eventDuplicates != 0 || kv.resultDuplicates != 0 {
			t.Errorf("after a clean stop the relay published %d events and %d results twice, want none", kv.eventDuplicates, kv.resultDuplicates)
		}
	})
}

// TestEventTimestampIsRecordTimestamp produces a create command whose Kafka
// record carries a timestamp, and expects the stored event to be stamped with
// it: pkg/command says events are stamped with their record's timestamp, and
// relies on it for "Deciding a batch again after a rollback produces the same
// items" (a retry after a store conflict must not change the items).
//
// Bug it catches, and shows at the time of writing: kafka.RecordOf (the
// consumer's conversion of a fetched record into a wire.Record) does not copy
// Record.Timestamp, so every event is stamped with the writer's clock, and a
// batch decided twice produces different bytes.
func TestEventTimestampIsRecordTimestamp(t *testing.T) {
	t.Parallel()
	st := sqliteStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	startWriter(t, b, st.backend(t), e2etest.Log(t, slog.LevelWarn))
	results := watchResults(t, b)
	at := time.Date(2001, 2, 3, 4, 5, 6, 789_000_000, time.UTC)
	c := wire.Command{CommandID: uuid.New(), Type: wire.TypeCreate, Entity: "example", EntityID: uuid.New(), Data: json.RawMessage(`{"a":1}`)}
	r := commandRecord(t, c)
	r.Timestamp = at
	produce(t, ctx, b.client(t), r)
	results.waitDistinct(t, 1, 30*time.Second)
	items, err := st.rec.SelectEvents(ctx, c.EntityID, store.Query{})
	if err != nil || len(items) != 1 {
		t.Fatalf("events: %v, %v", items, err)
	}
	var ev struct {
		Timestamp time.Time `json:"timestamp"`
	}
	if err := json.Unmarshal(items[0].State, &ev); err != nil {
		t.Fatal(err)
	}
	if !ev.Timestamp.Equal(at) {
		t.Errorf("event timestamp %s, want the command record's %s", ev.Timestamp, at)
	}
}

// TestShutdownDuringStartup cancels cli.Writer's context at random moments of
// its start-up (connecting to the store, migrating, creating topics, joining
// the group): SIGTERM then must still be a clean stop, returning nil within a
// few seconds, and a writer started afterwards must work.
//
// Bugs it catches: a start-up step that ignores its context (a hang until
// its own timeout), or that reports the cancellation as a failure (exit code
// 1 and an error message for an operator's ordinary SIGTERM).
func TestShutdownDuringStartup(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(testing.TB) *testStore) {
		st := newStore(t)
		b := newBroker(t)
		log := e2etest.Log(t, slog.LevelWarn)
		for i, d := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
			50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
			stop, done := runCLIWriter(t, b, st, log)
			time.Sleep(d)
			t0 := time.Now()
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("stop %d, %s after start: cli.Writer returned %q, want nil", i, d, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("stop %d, %s after start: cli.Writer did not return within 10s", i, d)
			}
			if took := time.Since(t0); took > 5*time.Second {
				t.Errorf("stop %d, %s after start: took %s", i, d, took)
			}
		}
		// And the store and topics are fine for the next writer.
		results := watchResults(t, b)
		stop, done := runCLIWriter(t, b, st, log)
		wl := newWorkload(5, 2)
		produce(t, t.Context(), b.client(t), wl.records(t)...)
		results.waitDistinct(t, wl.total(), 30*time.Second)
		stop()
		if err := <-done; err != nil {
			t.Errorf("writer after the stops: %v", err)
		}
	})
}
