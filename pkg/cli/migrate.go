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
	s.shards.registerDSN(fs, &s.dsn, "PostgreSQL DSN (required); repeat it for a sharded store, shard 0 first: each shard is migrated")
	fs.StringVar(&s.schema, "postgres-schema", "public", "schema of eventlog's tables")
	s.shards.register(fs)
	fs.Secret("postgres-dsn")
	entities := p.entitiesFlag(fs, "entity types (their read models are created too), comma-separated")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if s.dsn == "" && len(s.shards.list) == 0 {
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
	for i, sh := range backend.Shards {
		v, err := sh.SchemaVersion(ctx)
		if err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		fmt.Fprintf(env.Stdout, "shard %d of %d: schema %q is at version %d\n", i, len(backend.Shards), s.schema, v)
	}
	if len(backend.Shards) == 0 {
		v, err := backend.SchemaVersion(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "schema %q is at version %d\n", s.schema, v)
	}
	// Read models live on the home shard of a sharded store.
	backend = backend.Home()
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
