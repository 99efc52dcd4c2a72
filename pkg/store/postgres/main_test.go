package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newRecorder returns a migrated recorder in a fresh schema of its own, on a
// pool of its own; both are closed and the schema dropped when t ends.
func newRecorder(t testing.TB, opts ...func(*postgres.Options)) *postgres.Recorder {
	t.Helper()
	pool := pgtest.Pool(t)
	o := postgres.Options{Schema: pgtest.Schema(t), Migrate: true}
	for _, f := range opts {
		f(&o)
	}
	rec, err := postgres.New(t.Context(), pool, o)
	if err != nil {
		t.Fatalf("postgres.New: %v", err)
	}
	t.Cleanup(func() { _ = rec.Close() })
	logHolders(t, pool)
	return rec
}

// logHolders registers a cleanup that, if t failed, logs the transactions
// that held the notification log's horizon back: a test elsewhere on the
// server that keeps a transaction open stalls every tailer here.
func logHolders(t testing.TB, pool *pgxpool.Pool) {
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Second)
			defer cancel()
			t.Logf("transactions holding the xmin horizon now:\n%s", pgtest.Holders(ctx, pool))
		}
	})
}

// wait is how long tests wait for the notification log: long, since a
// transaction open anywhere on the server holds it back.
const wait = 60 * time.Second

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.ProcessRecorder { return newRecorder(t) }, storetest.Wait(wait))
}
