package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

func init() {
	extra["rebuild"] = command{Rebuild, "rebuild a read model from the store's log while queries go on"}
}

// Rebuild replays the read model from the store's notification log (not from
// Kafka) into new tables and swaps them in atomically; queries keep working.
func Rebuild(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog rebuild", "Rebuild the PostgreSQL read model from the store's notification log, then swap it in atomically.", env.Stderr)
	var (
		dsn, schema string
		entities    = config.List{"example"}
		c           codecFlags
		asJSON      bool
	)
	fs.StringVar(&dsn, "postgres-dsn", "", "PostgreSQL DSN of the store and read model (required)")
	fs.StringVar(&schema, "postgres-schema", "public", "schema of eventlog's tables")
	fs.Var(&entities, "entities", "entity types to rebuild, comma-separated")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON, no progress bar")
	fs.Secret("postgres-dsn")
	c.register(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if dsn == "" {
		return UsageError{errors.New("-postgres-dsn is required (the SQLite read model of eventlog dev has no rebuild: delete its tables and restart)")}
	}
	mopts, err := c.options()
	if err != nil {
		return UsageError{err}
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
	if err := c.bindStore(rec); err != nil {
		return err
	}
	reg := events.NewRegistry()
	for _, typ := range entities {
		if err := entity.Register(reg, typ); err != nil {
			return UsageError{err}
		}
	}
	rm, err := pgreadmodel.New(pool, pgreadmodel.Options{Types: entities, Schema: schema})
	if err != nil {
		return err
	}
	if err := rm.Migrate(ctx); err != nil {
		return err
	}
	opts := pgreadmodel.RebuildOptions{}
	var bar *progressBar
	if !asJSON {
		bar = newProgressBar(env.Stderr, "rebuild")
		opts.Progress = func(done, total int64) { bar.set(done, total, "notification "+thousands(done)) }
	}
	st, err := rm.Rebuild(ctx, rec, events.NewMapper(reg, mopts...), opts)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(st)
	}
	fmt.Fprintf(env.Stdout, "rebuilt %v: %s events applied from %s notifications (%s skipped), complete up to notification %d\n",
		entities, thousands(st.Applied), thousands(st.Notifications), thousands(st.Skipped), st.Last)
	return nil
}
