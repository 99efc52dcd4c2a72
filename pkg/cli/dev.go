package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

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
func (p Program) Dev(ctx context.Context, args []string, env Env) error {
	return stopped(ctx, p.runDev(ctx, args, env))
}

func (p Program) runDev(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("dev"), "Run everything with no servers: embedded Kafka-protocol broker, SQLite store, writer, projector and HTTP API.", env.Stderr)
	var (
		dataDir, brokerAddr, httpAddr, dsn, schema string
		partitions                                 int
		relayTx                                    bool
		c                                          codecFlags
		l                                          logFlags
		lim                                        limitFlags
		k                                          = kafkaFlags{prefix: "eventlog", replication: -1}
		ha                                         httpAuthFlags
		pf                                         parkFlags
		sf                                         shardFlags
	)
	fs.StringVar(&dataDir, "data-dir", ".eventlog", "where the broker's log and the SQLite store live")
	fs.StringVar(&brokerAddr, "broker-addr", "127.0.0.1:9092", "the embedded broker's listen address; any Kafka client can connect")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address of the API")
	sf.registerDSN(fs, &dsn, "use PostgreSQL at this DSN instead of SQLite; repeat it for a sharded store, shard 0 first (-partitions a multiple of the shards)")
	sf.register(fs)
	fs.StringVar(&schema, "postgres-schema", "public", "PostgreSQL schema, with -postgres-dsn")
	fs.IntVar(&partitions, "partitions", 4, "partitions of each topic")
	entities := p.entitiesFlag(fs, "entity types, comma-separated")
	lim.register(fs)
	fs.BoolVar(&relayTx, "relay-transactions", true, relayTxUsage)
	fs.Secret("postgres-dsn")
	c.register(fs)
	l.register(fs)
	k.registerCompression(fs)
	ha.register(fs)
	pf.register(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := lim.check(); err != nil {
		return UsageError{err}
	}
	if err := pf.check(); err != nil {
		return UsageError{err}
	}
	if sf.sharded(dsn) {
		s := storeFlags{dsn: dsn, shards: sf}
		if err := s.checkPartitions(partitions); err != nil {
			return UsageError{err}
		}
	}
	if err := k.checkCompression(); err != nil {
		return UsageError{err}
	}
	d, err := p.domain(*entities)
	if err != nil {
		return err
	}
	st, err := p.startService(ctx, "dev", &c, &l, &ha, httpAddr, env)
	if err != nil {
		return err
	}
	defer st.close()
	mopts, log, ln, auth, tp := st.mopts, st.log, st.ln, st.auth, st.tp
	b, err := broker.Start(broker.Config{Addr: brokerAddr, DataDir: dataDir, Partitions: partitions})
	if err != nil {
		return err
	}
	defer b.Close()
	brokers := b.ListenAddrs()
	s := storeFlags{dsn: dsn, sqlite: filepath.Join(dataDir, "eventlog.db"), schema: schema, migrate: true, shards: sf}
	backend, closeStore, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := c.bindStore(backend.Recorder); err != nil {
		return err
	}
	k.brokers, k.partitions = brokers, partitions
	reg := metrics.New()
	w, err := service.NewWriter(ctx, service.WriterConfig{
		Backend: backend, Kafka: k.service(log), Domain: d, MapperOptions: mopts, Log: log, Metrics: reg,
		MaxCommandSize: lim.maxCommand, EntityLimits: lim.entity, RelayAtLeastOnce: !relayTx, TracerProvider: tp,
	})
	if err != nil {
		return err
	}
	api := &httpapi.Server{Log: log, Metrics: metrics.Handler(reg), Info: httpapi.Info{Program: p.Name, Service: "dev"}}
	w.API(api)
	runs := []func(context.Context) error{w.Run}
	if len(d.GenericTypes())+len(d.ReadModels())+len(d.Policies()) > 0 { // else nothing to project
		run, err := startProjector(ctx, service.ProjectorConfig{Backend: backend, Kafka: k.service(log), Domain: d, MapperOptions: mopts, Log: log, Metrics: reg, TracerProvider: tp,
			TransientRetries: pf.retries, RetryBackoff: pf.backoff}, true, api)
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	p.printBanner(env, d, brokers[0], ln.Addr().String(), dataDir, backend.Name, auth)
	g, gctx := errgroup.WithContext(ctx)
	for _, run := range runs {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error { return serve(gctx, ln, api, auth, log) })
	err = g.Wait()
	log.Info(p.name("dev") + " stopped")
	return err
}

// printBanner says what runs and how to try it. Its commands work as
// printed: they name the broker and HTTP addresses when those are not the
// tools' defaults.
func (p Program) printBanner(env Env, d *service.Domain, brokerAddr, httpAddr, dataDir, store string, auth *httpapi.Auth) {
	host, port, _ := net.SplitHostPort(httpAddr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	hostPort := net.JoinHostPort(host, port)
	api := "http://" + hostPort
	self := invocation(p.Name)
	sendFlags, getFlags := "", ""
	if brokerAddr != defaultBrokerAddr {
		sendFlags = " --kafka-brokers " + brokerAddr
	}
	if hostPort != defaultHTTPAddr {
		getFlags = " --http-addr " + hostPort
	}
	access, curl := "open (loopback only)", "curl"
	switch {
	case auth.Enabled() && auth.Token != "":
		access = "bearer token (give it in EVENTLOG_HTTP_TOKEN to the commands below)"
		curl = `curl -H "Authorization: Bearer $EVENTLOG_HTTP_TOKEN"`
	case auth.Enabled():
		access, curl = "basic auth (the users of -http-basic-auth-file)", "curl -u <user>"
	case !loopback(&net.TCPAddr{IP: net.ParseIP(strings.Trim(hostOf(httpAddr), "[]"))}):
		access = "OPEN to anyone who can reach it (-http-insecure)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `%s is running.
  Kafka broker  %s   (any Kafka client can connect)
  HTTP API      %s
  console       %s/ui/
  access        %s
  store         %s   (data in %s)
  entity types  %s
`, p.Name, brokerAddr, api, api, access, store, dataDir, strings.Join(d.EntityTypes(), ", "))
	if slices.Contains(d.GenericTypes(), "example") {
		fmt.Fprintf(&b, `
Try it from another terminal:
  %[1]s send%[4]s --type create --entity example --attr foo=bar
  %[1]s get%[5]s example <the id it printed>
  %[6]s '%[2]s/v1/read-models/example?foo="bar"'

Or with kcat, any Kafka client (commands keyed by entity id):
  id=$(cat /proc/sys/kernel/random/uuid)
  echo '{"command_id":"'$(cat /proc/sys/kernel/random/uuid)'","type":"create","entity":"example","entity_id":"'$id'","data":{"foo":"bar"}}' \
    | kcat -P -b %[3]s -t eventlog.commands -k $id
  kcat -C -b %[3]s -t eventlog.command-results -e -X isolation.level=read_committed
  kcat -C -b %[3]s -t eventlog.events.example -e -X isolation.level=read_committed -f '%%k %%h %%s\n'
`, self, api, brokerAddr, sendFlags, getFlags, curl)
	} else {
		fmt.Fprintf(&b, `
Send a command from another terminal:
  %s send%s --entity <type> --type <command> --id <uuid> --data '{...}'
`, self, sendFlags)
	}
	b.WriteString("\nStop with Ctrl-C; data survives a restart.\n")
	fmt.Fprint(env.Stdout, b.String())
}

// hostOf returns the host of host:port.
func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// The addresses the tools (send, get, ...) use when given none.
const (
	defaultBrokerAddr = "127.0.0.1:9092"
	defaultHTTPAddr   = "127.0.0.1:8080"
)

// invocation returns how to run this program again from the shell that
// started it: the path it was started by if it has one (./bin/eventlog),
// else its name.
func invocation(name string) string {
	if len(os.Args) == 0 {
		return name
	}
	a := os.Args[0]
	if !strings.Contains(a, "/") || strings.Contains(a, "go-build") || strings.HasSuffix(a, ".test") {
		return name
	}
	return a
}
