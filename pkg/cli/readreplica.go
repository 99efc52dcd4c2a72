package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

// readFlags choose a streaming replica of the PostgreSQL store for the
// writer's entity routes (-postgres-read-dsn).
type readFlags struct{ dsn string }

func (r *readFlags) register(fs *config.FlagSet) {
	fs.StringVar(&r.dsn, "postgres-read-dsn", "", "PostgreSQL DSN of a streaming replica of -postgres-dsn's database: the HTTP API reads entities and their events there "+
		"(it lags the primary: GET ...?min_version=N waits for a version); empty reads from -postgres-dsn")
	fs.Secret("postgres-read-dsn")
}

// check refuses a replica without a PostgreSQL store, or with a sharded one.
func (r *readFlags) check(s *storeFlags) error {
	if r.dsn == "" {
		return nil
	}
	if s.shards.sharded(s.dsn) {
		return errors.New("-postgres-read-dsn names the replica of one database; a sharded store has none: leave it out, or give one -postgres-dsn")
	}
	if d, err := s.shards.dsns(s.dsn); err == nil && len(d) == 0 {
		return errors.New("-postgres-read-dsn needs -postgres-dsn: it names a replica of the PostgreSQL store (SQLite has none)")
	}
	return nil
}

// open connects to the replica, checks that it holds the store's tables,
// and sets b.Reads. close releases it.
func (r *readFlags) open(ctx context.Context, s *storeFlags, b *service.Backend, log *slog.Logger) (close func(), err error) {
	if r.dsn == "" {
		return func() {}, nil
	}
	pool, err := postgres.Connect(ctx, r.dsn)
	if err != nil {
		return nil, fmt.Errorf("-postgres-read-dsn: %w", err)
	}
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: s.schema, Logger: log})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("-postgres-read-dsn: %w", err)
	}
	closeAll := func() { rec.Close(); pool.Close() }
	v, err := rec.SchemaVersion(ctx)
	if err == nil && v == 0 {
		err = fmt.Errorf("no eventlog tables in schema %q: name a replica of -postgres-dsn's database (and migrate the primary first)", s.schema)
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("-postgres-read-dsn: %w", err)
	}
	// A primary (the store's own, or another) is served too, but it is not
	// what the flag is for: say so.
	var standby bool
	if err := pool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err == nil && !standby {
		log.Warn("-postgres-read-dsn names a server that is not a standby: the entity routes read there all the same; name a streaming replica of -postgres-dsn's database")
	}
	b.Reads = rec
	return closeAll, nil
}
