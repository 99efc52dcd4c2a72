package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

// readModelFor returns the read model kept in the backend's database.
// close releases what the read model holds of its own.
func readModelFor(ctx context.Context, b service.Backend, entities []string) (rm service.EntityReadModel, close func(), err error) {
	switch rec := b.Recorder.(type) {
	case *postgres.Recorder:
		// AsyncCommit: a crash may lose the last commits, but each loses its
		// rows and its tracking together, and the records are applied again
		// from Kafka. Without a WAL flush per batch the projection is faster,
		// most with small batches.
		rm, err := pgreadmodel.New(rec.Pool(), pgreadmodel.Options{Types: entities, Schema: rec.Options().Schema, AsyncCommit: true})
		if err != nil {
			return nil, nil, err
		}
		if err := rm.Migrate(ctx); err != nil {
			return nil, nil, err
		}
		return rm, func() {}, nil
	}
	return sqliteReadModel(ctx, b, entities)
}

// Projector runs the projector service.
func (p Program) Projector(ctx context.Context, args []string, env Env) error {
	return stopped(ctx, p.runProjector(ctx, args, env))
}

func (p Program) runProjector(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("projector"), "Consume events from Kafka and keep read models (and a persistent copy) current, exactly once in effect.", env.Stderr)
	var (
		k                         kafkaFlags
		s                         storeFlags
		persist                   storeFlags
		c                         codecFlags
		l                         logFlags
		httpAddr, group, policies string
		consumers                 int
		gf                        groupFlags
		ha                        httpAuthFlags
		pf                        parkFlags
	)
	k.register(fs, "127.0.0.1:9092")
	s.register(fs, ".eventlog/eventlog.db")
	fs.StringVar(&persist.dsn, "persist-postgres-dsn", "", "persistence policy: copy every event into the store at this PostgreSQL DSN")
	fs.StringVar(&persist.schema, "persist-postgres-schema", "public", "schema of the persistence policy's PostgreSQL store")
	fs.StringVar(&persist.sqlite, "persist-sqlite-path", "", "persistence policy: copy every event into this SQLite file")
	fs.Secret("persist-postgres-dsn")
	c.register(fs)
	l.register(fs)
	ha.register(fs)
	entities := p.entitiesFlag(fs, "entity types to project, comma-separated")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8081", "HTTP listen address (read models, projections, /healthz, /readyz, /metrics)")
	fs.StringVar(&group, "group", "eventlog-projector", "prefix of the projectors' Kafka consumer groups")
	fs.StringVar(&policies, "read-model", "on", "keep the read models: on or off (off: only the persistence policy)")
	fs.IntVar(&consumers, "consumers", 0, "Kafka consumers per projection in this process, applying batches of different partitions at once (0: 4 with PostgreSQL, 1 with SQLite)")
	gf.register(fs, "projector")
	pf.register(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := pf.check(); err != nil {
		return UsageError{err}
	}
	if consumers < 0 || consumers > 64 {
		return UsageError{fmt.Errorf("-consumers must be from 0 to 64, got %d", consumers)}
	}
	if err := gf.check(); err != nil {
		return UsageError{err}
	}
	if err := k.check(); err != nil {
		return UsageError{err}
	}
	if policies != "on" && policies != "off" {
		return UsageError{fmt.Errorf("-read-model must be on or off, got %q", policies)}
	}
	if policies == "off" && persist.dsn == "" && persist.sqlite == "" {
		return UsageError{errors.New("nothing to do: -read-model off and no -persist-postgres-dsn or -persist-sqlite-path")}
	}
	d, err := p.domain(*entities)
	if err != nil {
		return err
	}
	st, err := p.startService(ctx, "projector", &c, &l, &ha, httpAddr, env)
	if err != nil {
		return err
	}
	defer st.close()
	mopts, log, ln, auth, tp := st.mopts, st.log, st.ln, st.auth, st.tp
	s.migrate = true
	backend, closeStore, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer closeStore()
	// Read models and the tracking of projections live on the home shard of
	// a sharded store; the events come from Kafka, which carries every
	// shard's, and what is read of one entity (its data key, the events of a
	// gap) comes from the entity's shard.
	if err := c.bindStore(backend.Recorder); err != nil {
		return err
	}
	if err := k.ping(ctx); err != nil {
		return err
	}
	if consumers == 0 {
		// SQLite has one writer at a time: a second consumer would only wait.
		consumers = 1
		if _, ok := backend.Home().Recorder.(*postgres.Recorder); ok {
			consumers = 4 // the default partition count
		}
	}
	cfg := service.ProjectorConfig{Backend: backend, Kafka: k.service(log), Domain: d, NoDomainModels: policies == "off", Group: group, MapperOptions: mopts, Log: log, Consumers: consumers, SessionTimeout: gf.session, TracerProvider: tp,
		TransientRetries: pf.retries, RetryBackoff: pf.backoff}
	if persist.dsn != "" || persist.sqlite != "" {
		persist.migrate = true
		pb, closePersist, err := persist.open(ctx, log)
		if err != nil {
			return fmt.Errorf("persistence store: %w", err)
		}
		defer closePersist()
		cfg.Persistence = &pb
	}
	reg := metrics.New()
	cfg.Metrics = reg
	api := &httpapi.Server{Log: log, Metrics: metrics.Handler(reg), Info: httpapi.Info{Program: p.Name, Service: "projector"}}
	run, err := startProjector(ctx, cfg, policies == "on", api)
	if err != nil {
		return err
	}
	log.Info("projector started", "http", ln.Addr().String(), "store", backend.Name, "kafka", k.brokers.String(), "entities", strings.Join(d.EntityTypes(), ","))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return run(gctx) })
	g.Go(func() error { return serve(gctx, ln, api, auth, log) })
	err = g.Wait()
	log.Info("projector stopped")
	return err
}

// startProjector builds the projector service and adds its API to api.
func startProjector(ctx context.Context, cfg service.ProjectorConfig, readModel bool, api *httpapi.Server) (func(context.Context) error, error) {
	closeRM := func() {}
	if types := cfg.Domain.GenericTypes(); readModel && len(types) > 0 {
		rm, c, err := readModelFor(ctx, cfg.Backend.Home(), types)
		if err != nil {
			return nil, err
		}
		cfg.ReadModel, closeRM = rm, c
	}
	p, err := service.NewProjector(ctx, cfg)
	if err != nil {
		closeRM()
		return nil, err
	}
	p.API(api)
	return func(ctx context.Context) error {
		defer closeRM()
		return p.Run(ctx)
	}, nil
}
