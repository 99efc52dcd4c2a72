// Package service assembles eventlog's services from the library: the writer
// (command consumer, relay, commander, entity API) and the projector. The mains
// and the embedded mode build them from flags; tests build them directly.
package service

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/shard"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A Backend is an opened store with what the services need of it.
type Backend struct {
	Recorder  store.ProcessRecorder
	Snapshots store.SnapshotRecorder // may be nil
	// Locker keeps one relay active per store.
	Locker kafka.Locker
	// Name says what it is, for logs ("sqlite:/path", "postgres:host/db").
	Name string
	// SQLitePath is the database file of a SQLite backend.
	SQLitePath string
	// Schema is the PostgreSQL schema of a PostgreSQL backend's tables, where
	// read models keep theirs too.
	Schema string
	// Reads, if set, serves the entity routes of the writer's API (GET
	// /v1/entities/{entity}/{id} and its events) instead of Recorder: a
	// recorder on a streaming replica of its database, which lags it
	// (?min_version=N waits for a version). Writes, the relay, the log and the
	// streams stay on Recorder.
	Reads store.ApplicationRecorder
	// Shards, if set, are the shards of a sharded store, in shard order, each
	// a Backend of its own database; Recorder and Snapshots are then a
	// shard.Store over them, and the rest of the fields are the home shard's
	// (shard 0). The writer runs a command writer and a relay per shard.
	Shards []Backend
}

// Ready checks the backend (every shard of it) can answer, its read replica
// too.
func (b Backend) Ready(ctx context.Context) error {
	if len(b.Shards) > 0 {
		for i, s := range b.Shards {
			if err := s.Ready(ctx); err != nil {
				return fmt.Errorf("shard %d: %w", i, err)
			}
		}
	} else if _, err := b.Recorder.MaxNotificationID(ctx); err != nil {
		return err
	}
	if b.Reads != nil {
		if _, err := b.Reads.MaxNotificationID(ctx); err != nil {
			return fmt.Errorf("read replica: %w", err)
		}
	}
	return nil
}

// Kafka says how to reach Kafka.
type Kafka struct {
	// ClientOptions connect a client: seed brokers, TLS, SASL, logger; and
	// kafka.ProducerCompression for the writer's producer (default
	// kafka.DefaultCompression).
	ClientOptions []kgo.Opt
	Topics        wire.Topics
	// Partitions and ReplicationFactor of topics created at start (-1: broker default).
	Partitions        int32
	ReplicationFactor int16
}

// WriterConfig configures a writer service.
type WriterConfig struct {
	Backend Backend
	Kafka   Kafka
	// Domain holds the entity types the writer takes commands for. Nil: the
	// generic entity of Entities.
	Domain *Domain
	// Entities, without a Domain, are the generic entity's types.
	Entities []string
	// Group is the writers' consumer group (default "eventlog-writer").
	Group string
	// MapperOptions set compression and encryption of new events.
	MapperOptions []events.MapperOption
	// CacheSize bounds the aggregates kept in memory, by the writer and,
	// apart, by the entity API: 0 is command.DefaultCacheSize, a negative
	// value caches nothing.
	CacheSize     int
	SnapshotEvery int64
	// NoRelay turns the relay off (another process runs it).
	NoRelay bool
	// RelayAtLeastOnce publishes without Kafka transactions, for brokers or
	// permissions that do not allow them (kafka.RelayConfig.Transactional
	// false). By default the relay publishes in transactions.
	RelayAtLeastOnce bool
	Log              *slog.Logger
	Metrics          prometheus.Registerer
	// CommandTimeout bounds POST /v1/commands.
	CommandTimeout time.Duration
	// MaxCommandSize bounds an encoded command; larger records are
	// dead-lettered. It overrides wire.MaxCommandSize.
	MaxCommandSize int
	// EntityLimits bound the attributes of one create or update (zero
	// fields: entity.DefaultLimits).
	EntityLimits entity.Limits
	// SessionTimeout, if set, overrides franz-go's consumer-group session
	// timeout (45s): how long the group waits for a silent writer before it
	// hands the writer's partitions to another.
	SessionTimeout time.Duration
	// OnBatch, if set, is called after every batch of commands the writer
	// handles, with its statistics (see command.WriterConfig.OnBatch). It must
	// not block.
	OnBatch func(command.BatchStats)
	// TracerProvider, if set, traces the writer's batches and the relay
	// (command.WriterConfig.TracerProvider, kafka.RelayConfig.TracerProvider).
	// Nil traces nothing; trace contexts that commands bring are carried on.
	TracerProvider trace.TracerProvider
}

// Writer is the writer service: it consumes commands, appends their events, and
// relays the store's notification log to Kafka. Over a sharded backend
// (Backend.Shards) it runs a command writer and a relay per shard: a
// partition's commands go to the shard that owns the partition
// (shard.Router), so a batch's transaction never spans databases.
type Writer struct {
	cfg       WriterConfig
	client    *kgo.Client
	writer    commandWriter // a *command.Writer, or a shardedWriter over one per shard
	consumer  *kafka.Consumer
	relays    []*kafka.Relay // one per shard
	commander *kafka.Commander
	entities  *httpapi.Entities
	registry  *command.Registry
	domain    *Domain
}

// NewWriter builds the writer service and creates its topics.
func NewWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Group == "" {
		cfg.Group = "eventlog-writer"
	}
	d, err := domainOf(cfg.Domain, cfg.Entities)
	if err != nil {
		return nil, err
	}
	if err := cfg.Kafka.Topics.Validate(); err != nil {
		return nil, err
	}
	reg, err := d.Registry(cfg.EntityLimits)
	if err != nil {
		return nil, err
	}
	types := d.EntityTypes()
	mapper := events.NewMapper(reg.Events(), cfg.MapperOptions...)
	w := &Writer{cfg: cfg, registry: reg, domain: d}

	onBatch := cfg.OnBatch
	if cfg.Metrics != nil {
		record := metrics.Writer(cfg.Metrics, func() command.Stats { return w.writer.Stats() })
		if extra := cfg.OnBatch; extra != nil {
			onBatch = func(st command.BatchStats) { record(st); extra(st) }
		} else {
			onBatch = record
		}
	}
	shards := shardsOf(cfg.Backend)
	writers := make([]*command.Writer, len(shards))
	var router *shard.Router // of a sharded store, set below before any batch
	for i, b := range shards {
		var admit func(*wire.Record, *wire.Command) error
		if len(shards) > 1 {
			admit = func(r *wire.Record, c *wire.Command) error { return onShard(router, i, r, c) }
		}
		writers[i], err = command.NewWriter(b.Recorder, reg, mapper, command.WriterConfig{
			CacheSize: cfg.CacheSize, Snapshots: b.Snapshots, SnapshotEvery: cfg.SnapshotEvery,
			MaxCommandSize: cfg.MaxCommandSize, Logger: cfg.Log, OnBatch: onBatch,
			TracerProvider: cfg.TracerProvider, Admit: admit,
		})
		if err != nil {
			return nil, err
		}
	}
	if len(writers) == 1 {
		w.writer = writers[0]
	}
	// The relay learns each destination topic's max.message.bytes, so that a
	// topic configured for large records (the dead letters of oversized
	// commands, say) gets them whole.
	topicLimits := kafka.NewTopicLimits(kafka.KafkaDefaultMaxMessageBytes)
	clientOpts := append(append([]kgo.Opt{kafka.DefaultProducerCompression()}, cfg.Kafka.ClientOptions...), kafka.RelayClientOptions()...)
	clientOpts = append(clientOpts, topicLimits.ClientOption())
	w.client, err = kgo.NewClient(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	adm := kadm.NewClient(w.client)
	topics := kafka.TopicNames(cfg.Kafka.Topics, types...)
	if err := ensureTopics(ctx, adm, topics, cfg.Kafka); err != nil {
		w.client.Close()
		return nil, err
	}
	if len(writers) > 1 {
		router, err = checkShards(ctx, adm, cfg.Kafka.Topics.Commands(), len(writers))
		if err != nil {
			w.client.Close()
			return nil, err
		}
		w.writer = &shardedWriter{router: router, ws: writers, log: cfg.Log, adm: adm, topic: cfg.Kafka.Topics.Commands()}
	}
	w.consumer, err = kafka.NewConsumer(kafka.ConsumerConfig{
		Name: w.writer.TrackingName(), Group: cfg.Group, Topics: []string{cfg.Kafka.Topics.Commands()},
		ClientOptions: consumerOptions(cfg.Kafka.ClientOptions), SessionTimeout: cfg.SessionTimeout, HeartbeatInterval: heartbeat(cfg.SessionTimeout),
		Logger: cfg.Log,
	}, w.writer, w.writer)
	if err != nil {
		w.client.Close()
		return nil, err
	}
	if !cfg.NoRelay {
		// One relay per shard, each over its shard's notification log with
		// its shard's lock, checkpoint and transactional id (made from its
		// store's id).
		for i, b := range shards {
			log := cfg.Log
			if len(shards) > 1 {
				log = log.With("shard", i)
			}
			relay, err := kafka.NewRelay(w.client, b.Recorder, kafka.RelayConfig{
				Topics: cfg.Kafka.Topics, Locker: b.Locker, Admin: adm, TopicLimits: topicLimits, Transactional: !cfg.RelayAtLeastOnce,
				TopicPartitions: cfg.Kafka.Partitions, TopicReplicationFactor: cfg.Kafka.ReplicationFactor, Logger: log,
				TracerProvider: cfg.TracerProvider,
			})
			if err != nil {
				w.client.Close()
				return nil, err
			}
			w.relays = append(w.relays, relay)
		}
	}
	w.commander, err = kafka.NewCommander(w.client, kafka.CommanderConfig{Topics: cfg.Kafka.Topics, ClientOptions: cfg.Kafka.ClientOptions, Logger: cfg.Log})
	if err != nil {
		w.client.Close()
		return nil, err
	}
	es := store.NewEventStore(mapper, cfg.Backend.Recorder)
	if cfg.Backend.Reads != nil {
		es = store.NewEventStore(mapper, cfg.Backend.Reads)
	}
	w.entities, err = d.EntitiesAPI(es, cfg.Backend.Recorder, store.RepositoryConfig{CacheSize: entityCacheSize(cfg.CacheSize)})
	if err != nil {
		w.client.Close()
		return nil, err
	}
	if cfg.Backend.Reads != nil {
		w.entities.Reads = cfg.Backend.Reads
	}
	if cfg.Metrics != nil {
		metrics.Consumer(cfg.Metrics, "writer", w.writer.TrackingName(), w.consumer.Stats)
		// Each shard's relay has metrics of its own: the relays of a
		// store's shards may be active in different processes.
		for i, relay := range w.relays {
			var labels prometheus.Labels
			if len(w.relays) > 1 {
				labels = prometheus.Labels{"shard": strconv.Itoa(i)}
			}
			metrics.Relay(cfg.Metrics, labels, relay.Stats)
		}
	}
	return w, nil
}

// Run runs the consumer, the relay and the commander until ctx ends, then drains
// and closes the Kafka client.
func (w *Writer) Run(ctx context.Context) error {
	defer w.client.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := w.consumer.Run(ctx)
		// The consumer has finished its last batch: nothing touches the
		// store once Close returns.
		if cerr := w.writer.Close(); cerr != nil {
			w.cfg.Log.Warn("writer: closing the command writer", "error", cerr)
		}
		return err
	})
	for _, relay := range w.relays {
		g.Go(func() error { return relay.Run(ctx) })
	}
	g.Go(func() error { return w.commander.Run(ctx) })
	return g.Wait()
}

// Registry returns the writer's command registry.
func (w *Writer) Registry() *command.Registry { return w.registry }

// Stats returns the writer's counters.
func (w *Writer) Stats() command.Stats { return w.writer.Stats() }

// RelayStats returns the relay's counters (zero without a relay; with shards,
// the sum of the shards' relays).
func (w *Writer) RelayStats() kafka.RelayStats {
	switch len(w.relays) {
	case 0:
		return kafka.RelayStats{}
	case 1:
		return w.relays[0].Stats()
	}
	return sumRelayStats(w.relays)
}

// API returns the writer's part of the HTTP server.
func (w *Writer) API(s *httpapi.Server) {
	s.Entities = w.entities
	s.Commands = commandSender{w.commander}
	s.CommandTimeout = w.cfg.CommandTimeout
	s.Info.AddTypes(typeInfo(w.domain, w.registry)...)
	s.Ready = append(s.Ready, w.cfg.Backend.Ready, func(ctx context.Context) error {
		if err := w.client.Ping(ctx); err != nil {
			return fmt.Errorf("kafka: %w", err)
		}
		return nil
	})
}

// ConsumerFetchMaxWait bounds how long the broker holds a consumer's fetch
// (the writer's and the projector's) when there is nothing to return. With franz-go's default of 5s, commands at
// a low rate were seen waiting seconds for their fetch (on kfake); a short
// wait bounds that, at the cost of an empty fetch per interval while idle.
const ConsumerFetchMaxWait = 100 * time.Millisecond

// consumerOptions returns a consumer's client options: the connection
// options and a shorter fetch wait.
func consumerOptions(conn []kgo.Opt) []kgo.Opt {
	return append(append([]kgo.Opt{}, conn...), kgo.FetchMaxWait(ConsumerFetchMaxWait))
}

// heartbeat returns the heartbeat interval for a session timeout: franz-go's
// default (3s, returned as 0) unless that leaves fewer than three heartbeats
// per session.
func heartbeat(session time.Duration) time.Duration {
	if session > 0 && session < 9*time.Second {
		return session / 3
	}
	return 0
}

// StartTimeout bounds how long a service waits for Kafka at start.
const StartTimeout = 20 * time.Second

func ensureTopics(ctx context.Context, adm *kadm.Client, topics []string, k Kafka) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, adm, topics, k.Partitions, k.ReplicationFactor); err != nil {
		return fmt.Errorf("kafka: cannot create topics within %s: %w (is the broker reachable? check -kafka-brokers)", StartTimeout, err)
	}
	return nil
}

type commandSender struct{ c *kafka.Commander }

func (s commandSender) Send(ctx context.Context, cmd wire.Command) (wire.Result, error) {
	return s.c.Do(ctx, cmd)
}

// typeInfo describes the domain's entity types, with their commands if reg
// is not nil.
func typeInfo(d *Domain, reg *command.Registry) []httpapi.TypeInfo {
	generic := d.GenericTypes()
	var out []httpapi.TypeInfo
	for _, typ := range d.EntityTypes() {
		t := httpapi.TypeInfo{Name: typ, Kind: httpapi.KindAggregate}
		if slices.Contains(generic, typ) {
			t.Kind = httpapi.KindAttributes
		}
		if reg != nil {
			t.Commands = reg.Commands(typ)
		}
		out = append(out, t)
	}
	return out
}

// entityCacheSize is the entity API's cache size for WriterConfig.CacheSize.
func entityCacheSize(n int) int {
	switch {
	case n == 0:
		return command.DefaultCacheSize
	case n < 0:
		return 0
	}
	return n
}
