package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/eventlog/eventlog/internal/config"
)

// Migrate creates or upgrades eventlog's PostgreSQL schema, and creates the
// tables of the domain's read models that do not exist yet.
func (p Program) Migrate(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("migrate"), "Create or upgrade eventlog's tables in PostgreSQL, and the read models' tables (safe to run concurrently and repeatedly).", env.Stderr)
	var s storeFlags
	fs.StringVar(&s.dsn, "postgres-dsn", "", "PostgreSQL DSN (required)")
	fs.StringVar(&s.schema, "postgres-schema", "public", "schema of eventlog's tables")
	fs.Secret("postgres-dsn")
	entities := p.entitiesFlag(fs, "entity types (their read models are created too), comma-separated")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if s.dsn == "" {
		return UsageError{errors.New("-postgres-dsn is required (or EVENTLOG_POSTGRES_DSN)")}
	}
	d, err := p.domain(*entities)
	if err != nil {
		return err
	}
	s.migrate = true
	backend, closeStore, err := s.open(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer closeStore()
	v, err := backend.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "schema %q is at version %d\n", s.schema, v)
	for _, m := range d.ReadModels() {
		rm, err := backend.ModelOf(m)
		if err != nil {
			return err
		}
		if err := rm.Migrate(ctx, backend.Recorder); err != nil {
			return fmt.Errorf("read model %q: %w", m.Name, err)
		}
		fmt.Fprintf(env.Stdout, "read model %q: tables %v ready\n", m.Name, m.OwnTables())
	}
	return nil
}
