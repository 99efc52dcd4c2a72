// Package cli holds eventlog's commands: the services (writer, projector, dev,
// broker), operations (migrate, rebuild) and the tools for people at a terminal
// (send, get, events, tail, bench, version). Each command is a function of its
// arguments, the environment and its output streams, so the mains stay thin and
// tests call the commands directly.
package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Env is what a command gets from its process.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
}

// UsageError is a mistake in the command line: exit code 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// ExitCode maps an error to the process's exit code: 0 ok, 2 usage, 1 otherwise.
func ExitCode(err error) int {
	var u UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// parse parses flags, turning mistakes into UsageErrors.
func parse(fs *config.FlagSet, args []string, env Env) error {
	if err := fs.Parse(args, env.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return UsageError{err}
	}
	return nil
}

// kafkaFlags are the flags of a command that talks to Kafka.
type kafkaFlags struct {
	brokers     config.List
	prefix      string
	partitions  int
	replication int
	sec         kafkaSecurity // TLS and SASL (security.go)
	compression string        // codec of produced batches; compress is its option, set by checkCompression
	compress    kgo.Opt
}

func (k *kafkaFlags) register(fs *config.FlagSet, defaultBrokers string) {
	k.brokers = config.List{defaultBrokers}
	fs.Var(&k.brokers, "kafka-brokers", "Kafka seed brokers, host:port[,host:port...]")
	fs.StringVar(&k.prefix, "topic-prefix", wire.DefaultPrefix, "prefix of every Kafka topic name")
	fs.IntVar(&k.partitions, "partitions", 4, "partitions of topics eventlog creates (scale writers and projectors up to this)")
	fs.IntVar(&k.replication, "replication-factor", -1, "replication factor of topics eventlog creates (-1: the broker's default)")
	k.sec.register(fs)
	k.registerCompression(fs)
}

// registerCompression registers -kafka-compression, the codec of the batches
// the command produces (the relay's events, results and dead letters; commands).
func (k *kafkaFlags) registerCompression(fs *config.FlagSet) {
	fs.StringVar(&k.compression, "kafka-compression", kafka.DefaultCompression, "compression of the record batches this command produces: "+
		strings.Join(kafka.CompressionNames(), ", ")+" (every consumer must read it: kafkajs reads only none and gzip without a codec plugin)")
}

// checkCompression checks -kafka-compression and sets k.compress.
func (k *kafkaFlags) checkCompression() error {
	o, err := kafka.ProducerCompression(k.compression)
	if err != nil {
		return fmt.Errorf("-kafka-compression: %w", err)
	}
	k.compress = o
	return nil
}

func (k *kafkaFlags) check() error {
	if len(k.brokers) == 0 {
		return errors.New("-kafka-brokers is empty: name at least one host:port")
	}
	for _, b := range k.brokers {
		if !strings.Contains(b, ":") {
			return fmt.Errorf("-kafka-brokers: %q must be host:port", b)
		}
	}
	if k.partitions < 1 || k.partitions > 10000 {
		return fmt.Errorf("-partitions must be from 1 to 10000, got %d", k.partitions)
	}
	if err := k.sec.check(); err != nil {
		return err
	}
	if err := k.checkCompression(); err != nil {
		return err
	}
	return wire.Topics{Prefix: k.prefix}.Validate()
}

func (k *kafkaFlags) service(log *slog.Logger) service.Kafka {
	return service.Kafka{
		ClientOptions:     k.clientOptions(kgo.WithLogger(kafka.NewLogger(log))),
		Topics:            wire.Topics{Prefix: k.prefix},
		Partitions:        int32(k.partitions),
		ReplicationFactor: int16(k.replication),
	}
}

// storeFlags choose the store: PostgreSQL if a DSN is given, else SQLite.
type storeFlags struct {
	dsn     string
	sqlite  string
	schema  string
	migrate bool
	shards  shardFlags // more than one DSN: a sharded store (shards.go)
}

func (s *storeFlags) register(fs *config.FlagSet, defaultSQLite string) {
	s.shards.registerDSN(fs, &s.dsn, "PostgreSQL DSN (postgres://user:pass@host:5432/db?sslmode=...); empty uses SQLite; repeat it for a sharded store, shard 0 first")
	fs.StringVar(&s.sqlite, "sqlite-path", defaultSQLite, "SQLite database file, used when -postgres-dsn is empty")
	fs.StringVar(&s.schema, "postgres-schema", "public", "PostgreSQL schema of eventlog's tables")
	fs.BoolVar(&s.migrate, "migrate", true, "apply database migrations at start (else run 'eventlog migrate' first)")
	s.shards.register(fs)
	fs.Secret("postgres-dsn")
}

// open opens the store. close releases it.
func (s *storeFlags) open(ctx context.Context, log *slog.Logger) (b service.Backend, close func(), err error) {
	dsns, err := s.shards.dsns(s.dsn)
	if err != nil {
		return b, nil, UsageError{err}
	}
	if len(dsns) > 1 {
		return s.openShards(ctx, log, dsns)
	}
	if len(dsns) == 1 {
		s.dsn = dsns[0]
	}
	if s.dsn != "" {
		pool, err := postgres.Connect(ctx, s.dsn)
		if err != nil {
			return b, nil, fmt.Errorf("-postgres-dsn: %w", err)
		}
		rec, err := postgres.New(ctx, pool, postgres.Options{Schema: s.schema, Migrate: s.migrate, Logger: log})
		if err != nil {
			pool.Close()
			return b, nil, err
		}
		if err := rec.CheckShard(ctx, 0, 1); err != nil {
			rec.Close()
			pool.Close()
			return b, nil, err
		}
		b = service.Backend{Recorder: rec, Snapshots: rec, Locker: rec, Name: "postgres", Schema: rec.Options().Schema}
		return b, func() { rec.Close(); pool.Close() }, nil
	}
	if s.sqlite == "" {
		return b, nil, errors.New("no store: give -postgres-dsn or -sqlite-path")
	}
	if dir := filepath.Dir(s.sqlite); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return b, nil, fmt.Errorf("-sqlite-path: %w", err)
		}
	}
	rec, err := sqlite.Open(ctx, s.sqlite, sqlite.Options{Logger: log})
	if err != nil {
		return b, nil, fmt.Errorf("-sqlite-path: %w", err)
	}
	b = service.Backend{Recorder: rec, Snapshots: rec, Locker: kafka.NewLocalLock(), Name: "sqlite:" + s.sqlite, SQLitePath: s.sqlite}
	return b, func() { rec.Close() }, nil
}

// codecFlags set compression and encryption of new events.
type codecFlags struct {
	compress int
	keyFile  string
	key      string
	keyring  keyringFlags // several keys by id (keyring.go)
}

func (c *codecFlags) register(fs *config.FlagSet) {
	fs.IntVar(&c.compress, "compress-min", 0, "zstd-compress event states of at least this many bytes (0: never)")
	fs.StringVar(&c.keyFile, "cipher-key-file", "", "file holding a 32-byte AES-256 key as 64 hex digits: encrypt event states")
	fs.StringVar(&c.key, "cipher-key", "", "the AES-256 key as 64 hex digits (prefer -cipher-key-file)")
	fs.Secret("cipher-key")
	c.keyring.register(fs)
}

func (c *codecFlags) options() ([]events.MapperOption, error) {
	var opts []events.MapperOption
	if c.compress < 0 {
		return nil, errors.New("-compress-min must not be negative")
	}
	if c.compress > 0 {
		opts = append(opts, events.WithCompression(c.compress))
	}
	key := c.key
	if c.keyFile != "" {
		b, err := os.ReadFile(c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-cipher-key-file: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if c.keyring.set() {
		ciph, err := c.keyring.keyring(key)
		if err != nil {
			return nil, err
		}
		return append(opts, events.WithCipher(ciph)), nil
	}
	if key != "" {
		raw, err := hex.DecodeString(key)
		if err != nil || len(raw) != 32 {
			return nil, errors.New("the cipher key must be 64 hex digits (32 bytes); make one with: openssl rand -hex 32")
		}
		ciph, err := events.NewAESCipher(raw)
		if err != nil {
			return nil, err
		}
		opts = append(opts, events.WithCipher(ciph))
	}
	return opts, nil
}

// logFlags set up logging.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *config.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("-log-level: %q is not debug, info, warn or error", l.level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", l.format)
}

// started is what a service command (writer, projector, dev) has once its
// flags are checked: the mapper options, the logger, the HTTP listener with
// its access check, and the tracer provider. close releases them.
type started struct {
	mopts []events.MapperOption
	log   *slog.Logger
	ln    net.Listener
	auth  *httpapi.Auth
	tp    trace.TracerProvider
	close func()
}

// startService makes the codec options, the logger, the HTTP listener (before
// anything else opens, so that a port in use fails at once), its access check
// and the tracer provider of the service cmd.
func (p Program) startService(ctx context.Context, cmd string, c *codecFlags, l *logFlags, ha *httpAuthFlags, httpAddr string, env Env) (*started, error) {
	mopts, err := c.options()
	if err != nil {
		return nil, UsageError{err}
	}
	log, err := l.logger(env.Stderr)
	if err != nil {
		return nil, UsageError{err}
	}
	ln, err := listen(httpAddr)
	if err != nil {
		return nil, err
	}
	auth, err := ha.auth(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	tp, stopTracing, err := p.startTracing(ctx, cmd, env, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &started{mopts: mopts, log: log, ln: ln, auth: auth, tp: tp, close: func() { stopTracing(); ln.Close() }}, nil
}

// stopped turns the error of a service that was asked to stop while it was
// still starting into nil: a signal is not a failure.
func stopped(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// shutdownTimeout bounds a graceful shutdown.
const shutdownTimeout = 30 * time.Second

// Default and bounds of -session-timeout (DefaultSessionTimeout is
// franz-go's default). Kafka's default group.min.session.timeout.ms is
// 6s and its group.max.session.timeout.ms 30m; a broker configured otherwise
// rejects a value outside its own bounds when the member joins.
const (
	DefaultSessionTimeout = 45 * time.Second
	MinSessionTimeout     = time.Second
	MaxSessionTimeout     = 30 * time.Minute
)

// checkSessionTimeout checks a -session-timeout value.
func checkSessionTimeout(d time.Duration) error {
	if d < MinSessionTimeout || d > MaxSessionTimeout {
		return fmt.Errorf("-session-timeout must be from %s to %s, got %s", MinSessionTimeout, MaxSessionTimeout, d)
	}
	return nil
}

// limitFlags bound what one command may carry (writer, dev).
type limitFlags struct {
	maxCommand int
	entity     entity.Limits
}

func (l *limitFlags) register(fs *config.FlagSet) {
	fs.IntVar(&l.maxCommand, "max-command-bytes", wire.MaxCommandSize, "largest command envelope accepted; larger records go to the dead letters")
	fs.IntVar(&l.entity.MaxAttributes, "max-attributes", entity.MaxAttributes, "most attributes one create or update may set; more makes the command invalid")
	fs.IntVar(&l.entity.MaxValueBytes, "max-attribute-bytes", entity.MaxValueBytes, "largest JSON value of one attribute, in bytes; larger makes the command invalid")
}

func (l *limitFlags) check() error {
	if l.maxCommand < 256 || l.maxCommand > 64<<20 {
		return fmt.Errorf("-max-command-bytes must be from 256 to %d, got %d", 64<<20, l.maxCommand)
	}
	if l.entity.MaxAttributes < 1 || l.entity.MaxValueBytes < 1 {
		return fmt.Errorf("-max-attributes and -max-attribute-bytes must be at least 1, got %d and %d", l.entity.MaxAttributes, l.entity.MaxValueBytes)
	}
	return nil
}

// groupFlags are the flags of a consumer-group member (writer, projector).
type groupFlags struct {
	session time.Duration
}

func (g *groupFlags) register(fs *config.FlagSet, who string) {
	fs.DurationVar(&g.session, "session-timeout", DefaultSessionTimeout, "how long the consumer group waits for a silent "+who+" before giving its partitions to another ("+
		MinSessionTimeout.String()+" to "+MaxSessionTimeout.String()+"; the broker's group.min/max.session.timeout.ms must allow it)")
}

func (g *groupFlags) check() error { return checkSessionTimeout(g.session) }
