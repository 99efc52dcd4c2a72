package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

// Migrate creates or upgrades eventlog's PostgreSQL schema.
func Migrate(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog migrate", "Create or upgrade eventlog's tables in PostgreSQL (safe to run concurrently and repeatedly).", env.Stderr)
	var dsn, schema string
	fs.StringVar(&dsn, "postgres-dsn", "", "PostgreSQL DSN (required)")
	fs.StringVar(&schema, "postgres-schema", "public", "schema of eventlog's tables")
	fs.Secret("postgres-dsn")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if dsn == "" {
		return UsageError{errors.New("-postgres-dsn is required (or EVENTLOG_POSTGRES_DSN)")}
	}
	pool, err := postgres.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema})
	if err != nil {
		return err
	}
	defer rec.Close()
	if err := rec.Migrate(ctx); err != nil {
		return err
	}
	v, err := rec.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "schema %q is at version %d\n", schema, v)
	return nil
}
