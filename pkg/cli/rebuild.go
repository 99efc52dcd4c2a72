package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/shard"
)

// RebuildResult is what `rebuild --json` prints for each read model.
type RebuildResult struct {
	ReadModel     string `json:"read_model"`
	Notifications int64  `json:"notifications"`
	Applied       int64  `json:"applied"`
	Skipped       int64  `json:"skipped"` // left out: parked, skipped, or failing
	Parked        int64  `json:"parked"`  // entities the rebuild parked
	Last          int64  `json:"last"`
}

// Rebuild replays read models from the store's notification log (not from
// Kafka) into new tables and swaps them in atomically; queries keep working.
func (p Program) Rebuild(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("rebuild"), "Rebuild read models from the store's notification log into new tables, then swap them in atomically; queries and projectors go on.", env.Stderr)
	var (
		s      storeFlags
		c      codecFlags
		asJSON bool
		only   config.List
	)
	s.register(fs, ".eventlog/eventlog.db")
	entities := p.entitiesFlag(fs, "entity types whose read model to rebuild, comma-separated")
	fs.Var(&only, "read-model", "the read models to rebuild, comma-separated (default: every one; "+service.ProjectionReadModel+" is the generic entity's)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON, no progress bar")
	c.register(fs)
	fs.Local("read-model", "json")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	d, err := p.domain(*entities)
	if err != nil {
		return err
	}
	mopts, err := c.options()
	if err != nil {
		return UsageError{err}
	}
	type job struct {
		name string
		run  func(progress func(done, total int64)) (sqlmodel.RebuildStats, error)
	}
	var jobs []job
	s.migrate = true
	backend, closeStore, err := s.open(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer closeStore()
	if err := c.bindStore(backend.Recorder); err != nil {
		return err
	}
	// The log to replay: the store's, or on a sharded store every shard's,
	// merged (each entity's events in order; read models are on the home
	// shard).
	logOf := func() rebuildLog { return backend.Recorder }
	if st, ok := backend.Recorder.(*shard.Store); ok {
		logOf = func() rebuildLog { return shard.NewMergedLog(st) }
	}
	home := backend.Home()
	reg, err := d.Events()
	if err != nil {
		return err
	}
	mapper := events.NewMapper(reg, mopts...)
	want := func(name string) bool { return len(only) == 0 || slices.Contains(only, name) }
	if types := d.GenericTypes(); len(types) > 0 && want(service.ProjectionReadModel) {
		rec, ok := home.Recorder.(*postgres.Recorder)
		switch {
		case ok:
			rm, err := pgreadmodel.New(rec.Pool(), pgreadmodel.Options{Types: types, Schema: s.schema})
			if err != nil {
				return err
			}
			jobs = append(jobs, job{service.ProjectionReadModel, func(progress func(done, total int64)) (sqlmodel.RebuildStats, error) {
				if err := rm.Migrate(ctx); err != nil {
					return sqlmodel.RebuildStats{}, err
				}
				st, err := rm.Rebuild(ctx, logOf(), mapper, pgreadmodel.RebuildOptions{Progress: progress, Parked: rec})
				return sqlmodel.RebuildStats{Notifications: st.Notifications, Applied: st.Applied, Skipped: st.Skipped + st.Held, Parked: st.Parked, Last: st.Last}, err
			}})
		case len(only) > 0:
			return UsageError{errors.New("the generic entity's read model on SQLite has no rebuild: stop the projector, delete its readmodel_* tables and start it again")}
		}
	}
	for _, m := range d.ReadModels() {
		if !want(m.Name) {
			continue
		}
		rm, err := home.ModelOf(m)
		if err != nil {
			return err
		}
		jobs = append(jobs, job{m.Name, func(progress func(done, total int64)) (sqlmodel.RebuildStats, error) {
			return rm.Rebuild(ctx, home.Recorder, logOf(), mapper, sqlmodel.RebuildOptions{Progress: progress})
		}})
	}
	for _, name := range only {
		if !slices.ContainsFunc(jobs, func(j job) bool { return j.name == name }) {
			return UsageError{fmt.Errorf("-read-model: no read model called %q to rebuild here", name)}
		}
	}
	if len(jobs) == 0 {
		return UsageError{errors.New("no read model to rebuild")}
	}
	var results []RebuildResult
	for _, j := range jobs {
		var bar *progressBar
		var progress func(done, total int64)
		if !asJSON {
			bar = newProgressBar(env.Stderr, j.name)
			progress = func(done, total int64) { bar.set(done, total, "notification "+thousands(done)) }
		}
		st, err := j.run(progress)
		if bar != nil {
			bar.finish()
		}
		if err != nil {
			return fmt.Errorf("rebuild %s: %w", j.name, err)
		}
		results = append(results, RebuildResult{ReadModel: j.name, Notifications: st.Notifications, Applied: st.Applied, Skipped: st.Skipped, Parked: st.Parked, Last: st.Last})
		if !asJSON {
			fmt.Fprintf(env.Stdout, "rebuilt %s: %s events applied from %s notifications (%s left out, %s entities parked), complete up to notification %d\n",
				j.name, thousands(st.Applied), thousands(st.Notifications), thousands(st.Skipped), thousands(st.Parked), st.Last)
		}
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(results)
	}
	return nil
}

// rebuildLog is what a rebuild reads: a notification log, and one sequence's
// events for parking.
type rebuildLog interface {
	SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error)
	MaxNotificationID(ctx context.Context) (int64, error)
	SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error)
}
