package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// TestConformanceExecModes runs the suite on pools that do not use pgx's
// default statement cache, as set up for PgBouncer in transaction mode:
// values then come back in text, and the decoders fall back to Scan.
func TestConformanceExecModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) store.ProcessRecorder {
				cfg, err := pgxpool.ParseConfig(pgtest.DSN(t))
				if err != nil {
					t.Fatal(err)
				}
				cfg.ConnConfig.DefaultQueryExecMode = mode
				pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
				rec, err := postgres.New(t.Context(), pool, postgres.Options{Schema: pgtest.Schema(t), Migrate: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { rec.Close() })
				logHolders(t, pool)
				return rec
			}, storetest.Goroutines(100), storetest.Wait(wait))
		})
	}
}
