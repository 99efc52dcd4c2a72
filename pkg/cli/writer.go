package cli

import (
	"context"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/pkg/service"
)

// Writer runs the writer service: it consumes commands from Kafka, appends their
// events to the store in one transaction with the command's result and offset,
// relays the store's log to Kafka, and serves the entity API.
func (p Program) Writer(ctx context.Context, args []string, env Env) error {
	return stopped(ctx, p.runWriter(ctx, args, env))
}

// relayTxUsage is the usage of -relay-transactions.
const relayTxUsage = "publish the store's log in Kafka transactions (read_committed consumers see each event once); false: at least once, for brokers that refuse transactions"

func (p Program) runWriter(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("writer"), "Consume commands from Kafka, store their events, publish them, and serve entities over HTTP.", env.Stderr)
	var (
		k        kafkaFlags
		s        storeFlags
		rf       readFlags
		c        codecFlags
		l        logFlags
		httpAddr string
		group    string
		noRelay  bool
		relayTx  bool
		cache    int
		snapN    int64
		lim      limitFlags
		ha       httpAuthFlags
		gf       groupFlags
	)
	k.register(fs, "127.0.0.1:9092")
	s.register(fs, ".eventlog/eventlog.db")
	rf.register(fs)
	c.register(fs)
	l.register(fs)
	ha.register(fs)
	entities := p.entitiesFlag(fs, "entity types the writer accepts commands for, comma-separated")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (entities, commands, /healthz, /readyz, /metrics)")
	fs.StringVar(&group, "group", "eventlog-writer", "Kafka consumer group of the writers")
	fs.BoolVar(&noRelay, "no-relay", false, "do not run the relay here (another process publishes the store's log)")
	fs.BoolVar(&relayTx, "relay-transactions", true, relayTxUsage)
	fs.IntVar(&cache, "cache-size", 0, "aggregates kept in memory (0: the default)")
	fs.Int64Var(&snapN, "snapshot-every", 0, "store a snapshot after this many events replayed (0: never)")
	lim.register(fs)
	gf.register(fs, "writer")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := k.check(); err != nil {
		return UsageError{err}
	}
	if err := rf.check(&s); err != nil {
		return UsageError{err}
	}
	d, err := p.domain(*entities)
	if err != nil {
		return err
	}
	if err := gf.check(); err != nil {
		return UsageError{err}
	}
	if err := lim.check(); err != nil {
		return UsageError{err}
	}
	if err := s.checkPartitions(k.partitions); err != nil {
		return UsageError{err}
	}
	st, err := p.startService(ctx, "writer", &c, &l, &ha, httpAddr, env)
	if err != nil {
		return err
	}
	defer st.close()
	mopts, log, ln, auth, tp := st.mopts, st.log, st.ln, st.auth, st.tp
	backend, closeStore, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer closeStore()
	closeReads, err := rf.open(ctx, &s, &backend, log)
	if err != nil {
		return err
	}
	defer closeReads()
	if err := c.bindStore(backend.Recorder); err != nil {
		return err
	}
	if err := k.ping(ctx); err != nil {
		return err
	}
	reg := metrics.New()
	w, err := service.NewWriter(ctx, service.WriterConfig{
		Backend: backend, Kafka: k.service(log), Domain: d, Group: group, MapperOptions: mopts,
		CacheSize: cache, SnapshotEvery: snapN, NoRelay: noRelay, Log: log, Metrics: reg, MaxCommandSize: lim.maxCommand, EntityLimits: lim.entity,
		SessionTimeout: gf.session, RelayAtLeastOnce: !relayTx, TracerProvider: tp,
	})
	if err != nil {
		return err
	}
	api := &httpapi.Server{Log: log, Metrics: metrics.Handler(reg), Info: httpapi.Info{Program: p.Name, Service: "writer"}}
	w.API(api)
	log.Info("writer started", "http", ln.Addr().String(), "store", backend.Name, "kafka", k.brokers.String(), "entities", strings.Join(d.EntityTypes(), ","))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return serve(gctx, ln, api, auth, log) })
	err = g.Wait()
	log.Info("writer stopped")
	return err
}
