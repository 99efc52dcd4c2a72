package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

const secret = "s3cr3t-Pa55"

func TestConnectErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tests := []struct {
		name string
		dsn  string
		want error
		says string
	}{
		{"bad port", "postgres://app:" + secret + "@db.example:notaport/app", postgres.ErrInvalidDSN, "invalid DSN"},
		{"bad scheme", "mysql://app:" + secret + "@127.0.0.1/app", postgres.ErrInvalidDSN, "invalid DSN"},
		{"bad key value", "host=127.0.0.1 password=" + secret + " port=x", postgres.ErrInvalidDSN, "invalid DSN"},
		{"unreachable url", "postgres://app:" + secret + "@127.0.0.1:1/app?connect_timeout=3", postgres.ErrUnreachable, "127.0.0.1:1"},
		{"unreachable key value", "host=127.0.0.1 port=1 user=app password=" + secret + " connect_timeout=3", postgres.ErrUnreachable, "check the host and port"},
		{"unreachable multi-host", "host=127.0.0.1,127.0.0.1 port=1,2 user=app password=" + secret + " connect_timeout=2 target_session_attrs=read-write",
			postgres.ErrUnreachable, "nothing answered at 127.0.0.1:1, 127.0.0.1:2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			pool, err := postgres.Connect(ctx, tc.dsn)
			if err == nil {
				pool.Close()
				t.Fatal("Connect succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Connect = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Connect = %q, want it to say %q", err, tc.says)
			}
			if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), secret) {
				t.Errorf("the error leaks the password: %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Connect took %v", d)
			}
		})
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pool, err := postgres.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Connect(test DSN): %v", err)
	}
	pool.Close()

	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Skip("the test DSN is not a URL; cannot derive one for a missing database")
	}
	u.Path = "/no_such_db_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	_, err = postgres.Connect(t.Context(), u.String())
	if !errors.Is(err, postgres.ErrNoDatabase) || !strings.Contains(err.Error(), u.Path[1:]) {
		t.Fatalf("Connect to a missing database = %v, want ErrNoDatabase naming it", err)
	}
}

// TestRejectedBeforeDB: invalid items fail with ErrInvalidItem on a recorder
// whose pool points at nothing, so they never reached a database.
func TestRejectedBeforeDB(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg, err := pgxpool.ParseConfig("postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // lazy: does not connect
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rec, err := postgres.New(ctx, pool, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	good := storetest.Item(uuid.New(), 0)
	for name, bad := range map[string]store.SequencedItem{
		"oversized state": {SequenceID: uuid.New(), Topic: "t", State: make([]byte, store.MaxStateSize+1)},
		"oversized topic": {SequenceID: uuid.New(), Topic: strings.Repeat("t", store.MaxTopicLen+1)},
		"nil uuid":        {Topic: "t"},
		"negative":        {SequenceID: uuid.New(), Position: -3, Topic: "t"},
	} {
		if _, err := rec.InsertEvents(ctx, []store.SequencedItem{good, bad}); !errors.Is(err, store.ErrInvalidItem) {
			t.Errorf("%s: InsertEvents = %v, want ErrInvalidItem without touching the database", name, err)
		}
		if err := rec.InsertSnapshot(ctx, bad); !errors.Is(err, store.ErrInvalidItem) {
			t.Errorf("%s: InsertSnapshot = %v, want ErrInvalidItem", name, err)
		}
	}
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{good, good}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate in batch = %v, want a conflict without touching the database", err)
	}
	// A valid item does reach for the database, and fails: the check above is
	// not vacuous.
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{good}); err == nil || errors.Is(err, store.ErrInvalidItem) {
		t.Errorf("a valid item on an unreachable server = %v, want a connection error", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, o := range []postgres.Options{
		{Schema: "Public"},
		{Schema: "a-b"},
		{Schema: `x"; DROP TABLE y; --`},
		{Schema: "1abc"},
		{Schema: strings.Repeat("s", 64)},
		{TablePrefix: "My_"},
		{TablePrefix: "a b"},
		{TablePrefix: strings.Repeat("p", 33)},
	} {
		if _, err := postgres.New(ctx, pool, o); err == nil {
			t.Errorf("New(%+v) accepted a bad identifier", o)
		}
	}
	for _, o := range []postgres.Options{{}, {Schema: "app_1", TablePrefix: "x_"}, {NoTablePrefix: true}} {
		rec, err := postgres.New(ctx, pool, o)
		if err != nil {
			t.Errorf("New(%+v): %v", o, err)
			continue
		}
		rec.Close()
	}
	if _, err := postgres.New(ctx, nil, postgres.Options{}); err == nil {
		t.Error("New accepted a nil pool")
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t) // dropped at cleanup, if it exists
	if _, err := pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err) // Migrate creates it
	}
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if v, err := rec.SchemaVersion(ctx); err != nil || v != 0 {
		t.Fatalf("SchemaVersion before Migrate = %d, %v; want 0", v, err)
	}

	// Concurrent calls are serialised: without the lock, concurrent CREATE
	// TABLEs fail with duplicate key errors in the catalog.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			r, err := postgres.New(ctx, pool, postgres.Options{Schema: schema})
			if err == nil {
				err = r.Migrate(ctx)
				r.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	// Idempotent.
	for range 2 {
		if err := rec.Migrate(ctx); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	}
	if v, err := rec.SchemaVersion(ctx); err != nil || v != postgres.SchemaVersion() {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, postgres.SchemaVersion())
	}
	var applied int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "eventlog_schema_version"}.Sanitize()).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != postgres.SchemaVersion() {
		t.Fatalf("%d migrations recorded, want %d (each once)", applied, postgres.SchemaVersion())
	}
	if _, err := rec.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 2)); err != nil {
		t.Fatalf("insert after Migrate: %v", err)
	}

	// A log whose ids are ahead of the server's transaction ids (restored from
	// a dump into another cluster) is refused: new items would sort first.
	events := pgx.Identifier{schema, "eventlog_events"}.Sanitize()
	if _, err := pool.Exec(ctx, "INSERT INTO "+events+" SELECT sequence_id, 99, topic, state, codec, 1::bigint << 60 FROM "+events+" LIMIT 1"); err != nil {
		t.Fatal(err)
	}
	if err := rec.Migrate(ctx); !errors.Is(err, postgres.ErrLogAhead) || !strings.Contains(err.Error(), "pg_resetwal") {
		t.Fatalf("Migrate with the log ahead of the server = %v, want ErrLogAhead saying what to do", err)
	}
	if _, err := pool.Exec(ctx, "DELETE FROM "+events+" WHERE position = 99"); err != nil {
		t.Fatal(err)
	}
	if err := rec.Migrate(ctx); err != nil {
		t.Fatalf("Migrate once the log is fine again: %v", err)
	}

	// A newer schema is refused, and left alone.
	newer := postgres.SchemaVersion() + 7
	if _, err := pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "eventlog_schema_version"}.Sanitize()+" (version, name) VALUES ($1, 'future')", newer); err != nil {
		t.Fatal(err)
	}
	err = rec.Migrate(ctx)
	if !errors.Is(err, postgres.ErrSchemaTooNew) || !strings.Contains(err.Error(), fmt.Sprint(newer)) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("Migrate of a newer schema = %v, want ErrSchemaTooNew naming version %d and what to do", err, newer)
	}
	if _, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, Migrate: true}); !errors.Is(err, postgres.ErrSchemaTooNew) {
		t.Fatalf("New with Migrate on a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

// TestTablePrefixes: two stores in one schema, told apart by prefix, share
// nothing: not events, not the log, not wake-ups, not locks.
func TestTablePrefixes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t)
	open := func(prefix string) *postgres.Recorder {
		rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, TablePrefix: prefix, Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rec.Close() })
		return rec
	}
	a, b := open("app_a_"), open("app_b_")
	if a.Channel() == b.Channel() {
		t.Fatal("two prefixes share a NOTIFY channel")
	}
	id := uuid.New()
	if _, err := a.InsertEvents(ctx, storetest.Items(id, 0, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.InsertEvents(ctx, storetest.Items(id, 0, 1)); err != nil {
		t.Fatalf("same position in the other store: %v", err)
	}
	if got, _ := b.SelectEvents(ctx, id, store.Query{}); len(got) != 1 {
		t.Fatalf("store b holds %d items of the sequence, want 1", len(got))
	}
	held, release, err := a.TryLock(ctx, "relay")
	if err != nil || held == nil {
		t.Fatalf("a.TryLock = %v, %v", held, err)
	}
	defer release()
	heldB, releaseB, err := b.TryLock(ctx, "relay")
	if err != nil || heldB == nil {
		t.Fatalf("b.TryLock of the same name = %v, %v; want its own lock", heldB, err)
	}
	releaseB()
}

func TestTryLock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rec := newRecorder(t, func(o *postgres.Options) { o.LockCheckInterval = 50 * time.Millisecond })
	other, err := postgres.New(ctx, rec.Pool(), rec.Options()) // another process, as far as locks go
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	held, release, err := rec.TryLock(ctx, "relay")
	if err != nil || held == nil {
		t.Fatalf("TryLock = %v, %v; want the lock", held, err)
	}
	if h, r, err := other.TryLock(ctx, "relay"); err != nil || h != nil || r != nil {
		t.Fatalf("TryLock of a held lock = %v, %v; want nil, nil, nil", h, err)
	}
	if h, r, err := other.TryLock(ctx, "another"); err != nil || h == nil {
		t.Fatalf("TryLock of another name = %v, %v; want it", h, err)
	} else {
		r()
	}
	release()
	release() // twice is fine
	if held.Err() == nil {
		t.Fatal("held is live after release")
	}
	// release returns once the lock is free on the server, not merely once
	// its connection is closed (the backend frees it a moment later).
	var granted int
	if err := rec.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND ((classid::bigint << 32) | objid::bigint) = $1`, rec.LockKey("relay")).Scan(&granted); err != nil || granted != 0 {
		t.Fatalf("after release, the lock is granted to %d sessions (%v); want none", granted, err)
	}
	held2, release2, err := other.TryLock(ctx, "relay")
	if err != nil || held2 == nil {
		t.Fatalf("TryLock after release = %v, %v; want the lock", held2, err)
	}
	defer release2()

	// Losing the connection loses the lock, and the holder learns of it.
	var pid int
	err = rec.Pool().QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND ((classid::bigint << 32) | objid::bigint) = $1`, other.LockKey("relay")).Scan(&pid)
	if err != nil {
		t.Fatalf("find the lock's backend: %v", err)
	}
	if _, err := rec.Pool().Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held2.Done():
		if !errors.Is(context.Cause(held2), postgres.ErrLockLost) {
			t.Fatalf("cause = %v, want ErrLockLost", context.Cause(held2))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the holder was not told that its lock was lost")
	}
	// The lock goes when the terminated backend has exited, which may be
	// a moment after its client saw the connection close.
	var (
		held3    context.Context
		release3 func()
	)
	for deadline := time.Now().Add(5 * time.Second); ; {
		held3, release3, err = rec.TryLock(ctx, "relay")
		if err != nil || held3 != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || held3 == nil {
		t.Fatalf("TryLock after the holder's connection died = %v, %v; want the lock", held3, err)
	}
	// Closing the recorder releases its locks.
	rec.Close()
	<-held3.Done()
	release3()
	held4, release4, err := other.TryLock(ctx, "relay")
	if err != nil || held4 == nil {
		t.Fatalf("TryLock after the holder closed = %v, %v; want the lock", held4, err)
	}
	release4()
}

// TestCloseDuringNotifyAndTryLock closes a recorder while other goroutines
// subscribe and take locks: Close must wait for every goroutine it lets
// start, and none may start after it (run with -race).
func TestCloseDuringNotifyAndTryLock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := newRecorder(t)
	opts := base.Options()
	opts.Migrate = false
	for round := range 20 {
		rec, err := postgres.New(ctx, base.Pool(), opts)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if i%2 == 0 {
					sctx, cancel := context.WithTimeout(ctx, time.Second)
					defer cancel()
					for range rec.Notify(sctx) {
					}
					return
				}
				held, release, err := rec.TryLock(ctx, fmt.Sprintf("lock-%d-%d", round, i))
				if err != nil && !errors.Is(err, store.ErrClosed) {
					t.Errorf("TryLock = %v", err)
				}
				if held != nil {
					release()
				}
			}()
		}
		close(start)
		if round%2 == 1 {
			time.Sleep(time.Duration(round) * time.Millisecond)
		}
		if err := rec.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		// Nothing the closed recorder let start outlives it: a Notify channel
		// of a closed recorder is closed at once, and TryLock refuses.
		if _, ok := <-rec.Notify(ctx); ok {
			t.Fatal("Notify of a closed recorder returned a live channel")
		}
		if _, _, err := rec.TryLock(ctx, "after"); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("TryLock after Close = %v, want store.ErrClosed", err)
		}
	}
}

// TestNotifyReconnect: when the LISTEN connection dies, subscribers are woken
// (items may have committed unseen) and later appends wake them again.
func TestNotifyReconnect(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rec := newRecorder(t, func(o *postgres.Options) { o.ReconnectDelay = 100 * time.Millisecond })
	wake := rec.Notify(ctx)
	drain(wake)
	res, err := rec.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1`,
		"LISTEN "+pgx.Identifier{rec.Channel()}.Sanitize())
	if err != nil || res.RowsAffected() != 1 {
		t.Fatalf("terminate the LISTEN backend: %v, %d rows", err, res.RowsAffected())
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after the LISTEN connection was re-established")
	}
	drain(wake)
	deadline := time.After(10 * time.Second)
	for {
		if _, err := rec.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 1)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wake:
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("no wake-up for an append after the reconnect")
		}
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
			return
		}
	}
}

// TestPgxTx: postgres-specific work through the pgx.Tx commits and rolls back
// with the store's.
func TestPgxTx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rec := newRecorder(t)
	table := pgx.Identifier{rec.Options().Schema, "read_model"}.Sanitize()
	if _, err := rec.Pool().Exec(ctx, "CREATE TABLE "+table+" (id uuid PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for _, fail := range []bool{true, false} {
		id := uuid.New()
		err := rec.InTx(ctx, func(tx store.Tx) error {
			ptx, ok := postgres.PgxTx(tx)
			if !ok {
				return errors.New("PgxTx: not a postgres tx")
			}
			if _, err := tx.InsertEvents(ctx, storetest.Items(id, 0, 1)); err != nil {
				return err
			}
			if _, err := ptx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1)", id); err != nil {
				return err
			}
			if fail {
				return errors.New("fail")
			}
			return nil
		})
		if (err != nil) != fail {
			t.Fatalf("InTx (fail=%v) = %v", fail, err)
		}
		var rows int
		if err := rec.Pool().QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = $1", id).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		events, _ := rec.SelectEvents(ctx, id, store.Query{})
		if want := map[bool]int{true: 0, false: 1}[fail]; rows != want || len(events) != want {
			t.Fatalf("fail=%v: %d read-model rows and %d events, want %d of each", fail, rows, len(events), want)
		}
	}
	if _, ok := postgres.PgxTx(nil); ok {
		t.Fatal("PgxTx(nil) reported a transaction")
	}
}

// TestClosed: a closed recorder refuses work.
func TestClosed(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	rec.Close()
	ctx := t.Context()
	if _, err := rec.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 1)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("InsertEvents = %v, want ErrClosed", err)
	}
	if err := rec.InTx(ctx, func(store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("InTx = %v, want ErrClosed", err)
	}
	if _, ok := <-rec.Notify(ctx); ok {
		t.Error("Notify on a closed recorder gave an open channel")
	}
}
