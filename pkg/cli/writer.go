package cli

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Writer runs the writer service: it consumes commands from Kafka, appends their
// events to the store in one transaction with the command's result and offset,
// relays the store's log to Kafka, and serves the entity API.
func Writer(ctx context.Context, args []string, env Env) error {
	return stopped(ctx, runWriter(ctx, args, env))
}

// relayTxUsage is the usage of -relay-transactions.
const relayTxUsage = "publish the store's log in Kafka transactions (read_committed consumers see each event once); false: at least once, for brokers that refuse transactions"

func runWriter(ctx context.Context, args []string, env Env) error {
	fs := config.New("writer", "Consume commands from Kafka, store their events, publish them, and serve entities over HTTP.", env.Stderr)
	var (
		k        kafkaFlags
		s        storeFlags
		c        codecFlags
		l        logFlags
		entities = config.List{"example"}
		httpAddr string
		group    string
		noRelay  bool
		relayTx  bool
		cache    int
		snapN    int64
		maxCmd   int
		limits   entity.Limits
		gf       groupFlags
	)
	k.register(fs, "127.0.0.1:9092")
	s.register(fs, ".eventlog/eventlog.db")
	c.register(fs)
	l.register(fs)
	fs.Var(&entities, "entities", "entity types the writer accepts commands for, comma-separated")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (entities, commands, /healthz, /readyz, /metrics)")
	fs.StringVar(&group, "group", "eventlog-writer", "Kafka consumer group of the writers")
	fs.BoolVar(&noRelay, "no-relay", false, "do not run the relay here (another process publishes the store's log)")
	fs.BoolVar(&relayTx, "relay-transactions", true, relayTxUsage)
	fs.IntVar(&cache, "cache-size", 0, "aggregates kept in memory (0: the default)")
	fs.Int64Var(&snapN, "snapshot-every", 0, "store a snapshot after this many events replayed (0: never)")
	fs.IntVar(&maxCmd, "max-command-bytes", wire.MaxCommandSize, "largest command envelope accepted; larger records go to the dead letters")
	fs.IntVar(&limits.MaxAttributes, "max-attributes", entity.MaxAttributes, "most attributes one create or update may set; more makes the command invalid")
	fs.IntVar(&limits.MaxValueBytes, "max-attribute-bytes", entity.MaxValueBytes, "largest JSON value of one attribute, in bytes; larger makes the command invalid")
	gf.register(fs, "writer")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := k.check(); err != nil {
		return UsageError{err}
	}
	if err := gf.check(); err != nil {
		return UsageError{err}
	}
	if maxCmd < 256 || maxCmd > 64<<20 {
		return UsageError{fmt.Errorf("-max-command-bytes must be from 256 to %d, got %d", 64<<20, maxCmd)}
	}
	if limits.MaxAttributes < 1 || limits.MaxValueBytes < 1 {
		return UsageError{fmt.Errorf("-max-attributes and -max-attribute-bytes must be at least 1, got %d and %d", limits.MaxAttributes, limits.MaxValueBytes)}
	}
	mopts, log, ln, err := prepare(&c, &l, httpAddr, env)
	if err != nil {
		return err
	}
	defer ln.Close()
	backend, closeStore, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := c.bindStore(backend.Recorder); err != nil {
		return err
	}
	if err := k.ping(ctx); err != nil {
		return err
	}
	reg := metrics.New()
	w, err := service.NewWriter(ctx, service.WriterConfig{
		Backend: backend, Kafka: k.service(log), Entities: entities, Group: group, MapperOptions: mopts,
		CacheSize: cache, SnapshotEvery: snapN, NoRelay: noRelay, Log: log, Metrics: reg, MaxCommandSize: maxCmd, EntityLimits: limits,
		SessionTimeout: gf.session, RelayAtLeastOnce: !relayTx,
	})
	if err != nil {
		return err
	}
	api := &httpapi.Server{Log: log, Metrics: metrics.Handler(reg)}
	w.API(api)
	log.Info("writer started", "http", ln.Addr().String(), "store", backend.Name, "kafka", k.brokers.String(), "entities", entities.String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return serve(gctx, ln, api.Handler(), log) })
	err = g.Wait()
	log.Info("writer stopped")
	return err
}
