package cli

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/pkg/events"

	"github.com/eventlog/eventlog/internal/broker"
	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/pkg/service"
)

// Dev runs eventlog in one process with no servers: the embedded broker, the
// SQLite store (or PostgreSQL), the writer with its relay, the projector and one
// HTTP server for both APIs. Everything is kept under the data directory and
// survives a restart.
func Dev(ctx context.Context, args []string, env Env) error {
	return stopped(ctx, runDev(ctx, args, env))
}

func runDev(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog dev", "Run eventlog with no servers: embedded Kafka-protocol broker, SQLite store, writer, projector and HTTP API.", env.Stderr)
	var (
		dataDir, brokerAddr, httpAddr, dsn, schema string
		partitions                                 int
		relayTx                                    bool
		entities                                   = config.List{"example"}
		c                                          codecFlags
		l                                          logFlags
	)
	fs.StringVar(&dataDir, "data-dir", ".eventlog", "where the broker's log and the SQLite store live")
	fs.StringVar(&brokerAddr, "broker-addr", "127.0.0.1:9092", "the embedded broker's listen address; any Kafka client can connect")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address of the API")
	fs.StringVar(&dsn, "postgres-dsn", "", "use PostgreSQL at this DSN instead of SQLite")
	fs.StringVar(&schema, "postgres-schema", "public", "PostgreSQL schema, with -postgres-dsn")
	fs.IntVar(&partitions, "partitions", 4, "partitions of each topic")
	fs.Var(&entities, "entities", "entity types, comma-separated")
	fs.BoolVar(&relayTx, "relay-transactions", true, relayTxUsage)
	fs.Secret("postgres-dsn")
	c.register(fs)
	l.register(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	mopts, log, ln, err := prepare(&c, &l, httpAddr, env)
	if err != nil {
		return err
	}
	defer ln.Close()
	b, err := broker.Start(broker.Config{Addr: brokerAddr, DataDir: dataDir, Partitions: partitions})
	if err != nil {
		return err
	}
	defer b.Close()
	brokers := b.ListenAddrs()
	s := storeFlags{dsn: dsn, sqlite: filepath.Join(dataDir, "eventlog.db"), schema: schema, migrate: true}
	backend, closeStore, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := c.bindStore(backend.Recorder); err != nil {
		return err
	}
	k := kafkaFlags{brokers: brokers, prefix: "eventlog", partitions: partitions, replication: -1}
	reg := metrics.New()
	w, err := service.NewWriter(ctx, service.WriterConfig{
		Backend: backend, Kafka: k.service(log), Entities: entities, MapperOptions: mopts, Log: log, Metrics: reg,
		RelayAtLeastOnce: !relayTx,
	})
	if err != nil {
		return err
	}
	api := &httpapi.Server{Log: log, Metrics: metrics.Handler(reg)}
	w.API(api)
	runs := []func(context.Context) error{w.Run}
	if devProjector != nil {
		run, err := devProjector(ctx, backend, k.service(log), entities, mopts, log, reg, api)
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	printBanner(env, brokers[0], ln.Addr().String(), dataDir, backend.Name)
	g, gctx := errgroup.WithContext(ctx)
	for _, run := range runs {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error { return serve(gctx, ln, api.Handler(), log) })
	err = g.Wait()
	log.Info("eventlog dev stopped")
	return err
}

type (
	eventsMapperOption = events.MapperOption
	promRegistry       = prometheus.Registry
)

// devProjector, when set, adds the projector to the embedded mode.
var devProjector func(ctx context.Context, b service.Backend, k service.Kafka, entities []string, mopts []eventsMapperOption, log *slog.Logger, reg *promRegistry, api *httpapi.Server) (func(context.Context) error, error)

func printBanner(env Env, brokerAddr, httpAddr, dataDir, store string) {
	host, port, _ := net.SplitHostPort(httpAddr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	api := "http://" + net.JoinHostPort(host, port)
	fmt.Fprintf(env.Stdout, `eventlog is running.
  Kafka broker  %s   (any Kafka client can connect)
  HTTP API      %s
  store         %s   (data in %s)

Try it from another terminal:
  eventlog send --kafka-brokers %s --type create --entity example --attr foo=bar
  eventlog get --http-addr %s example <id printed above>

Or with kcat, any Kafka client:
  echo '{"command_id":"'$(uuidgen)'","type":"create","entity":"example","entity_id":"'$(uuidgen)'","data":{"foo":"bar"}}' \
    | kcat -P -b %s -t eventlog.commands
  kcat -C -b %s -t eventlog.command-results -e
  kcat -C -b %s -t eventlog.events.example -e -f '%%k %%h %%s\n'

Stop with Ctrl-C; data survives a restart.
`, brokerAddr, api, store, dataDir, brokerAddr, api, brokerAddr, brokerAddr, brokerAddr)
}
