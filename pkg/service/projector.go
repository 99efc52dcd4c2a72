package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// An EntityReadModel keeps the generic entity's state queryable (pgreadmodel,
// or the SQLite one) and is the policy that keeps it current.
type EntityReadModel interface {
	projection.Policy
	Get(ctx context.Context, typ string, id uuid.UUID) (readmodel.Row, error)
	List(ctx context.Context, typ string, q readmodel.Query) ([]readmodel.Row, error)
}

// ProjectorConfig configures a projector service.
type ProjectorConfig struct {
	// Backend is where the read model, its tracking and its dead letters are
	// committed together; it is also the source that fills gaps. Of a
	// sharded backend (Backend.Shards), they are committed on the home shard
	// (Backend.Home), and the events that fill a gap, like the other reads of
	// one entity, come from the entity's shard.
	Backend Backend
	Kafka   Kafka
	// Domain is what the projector projects: the read models and process
	// applications of the domain, each a projection of its own, over the
	// events of its entity types. Nil: the generic entity of Entities.
	Domain *Domain
	// Entities, without a Domain, are the generic entity's types.
	Entities []string
	// ReadModel is the built-in read model of the domain's generic entity
	// types. Nil runs none.
	ReadModel EntityReadModel
	// NoDomainModels turns the domain's read models, process applications
	// and policies off (another projector runs them).
	NoDomainModels bool
	// Persistence, if set, receives a copy of every event (the persistence
	// policy), with its own tracking there.
	Persistence *Backend
	// Group prefixes the consumer groups (default "eventlog-projector").
	Group         string
	MapperOptions []events.MapperOption
	// Consumers is the number of consumer-group members each projection runs
	// in this process, each with a Kafka client of its own, so that batches
	// of different partitions are applied at once (each member still applies
	// its partitions in order, one batch at a time). Default 1.
	Consumers int
	// SessionTimeout, if set, overrides franz-go's consumer-group session
	// timeout (45s): how long the group waits for a silent projector before
	// it hands the projector's partitions to another.
	SessionTimeout time.Duration
	// Committed, if set, is called after each batch of records a projection
	// committed, with the time of the commit, from the consumer's goroutine.
	Committed func(projection string, records []wire.Record, at time.Time)
	// StallAfter makes /readyz fail when a partition has lag and no progress
	// for this long (default 60s).
	StallAfter time.Duration
	Log        *slog.Logger
	Metrics    prometheus.Registerer
	// TracerProvider, if set, traces every projection's batches
	// (projection.Config.TracerProvider). Nil traces nothing.
	TracerProvider trace.TracerProvider
	// TransientRetries and RetryBackoff set, for every projection, when an
	// event failing with a transient error is taken as poison and its
	// sequence parked (projection.Config; zero: the defaults).
	TransientRetries int
	RetryBackoff     time.Duration
}

type projectionRun struct {
	runner    *projection.Runner
	consumers []*kafka.Consumer
	topics    []string
}

// consumerStats sums the stats of the run's consumers.
func (r projectionRun) consumerStats() kafka.ConsumerStats {
	var sum kafka.ConsumerStats
	for _, c := range r.consumers {
		sum.Add(c.Stats())
	}
	return sum
}

// Projector is the projector service.
type Projector struct {
	cfg    ProjectorConfig
	domain *Domain
	runs   []projectionRun
	topics []string // every run's
	admin  *kadm.Client
	client *kgo.Client
	// models are the domain's read models, with their readers.
	models []runningModel
	// entities reads an entity's events: the backend's recorder, which over
	// shards reads each from its shard.
	entities store.AggregateRecorder

	mu  sync.Mutex
	lag map[string]*partitionLag // by name/topic/partition
	// dead is what operators do with the projections' parked sequences.
	dead *projection.DeadLetters
}

// PartitionLag is how far one projection is behind on one partition.
type PartitionLag struct {
	Projection string  `json:"projection"`
	Topic      string  `json:"topic"`
	Partition  int32   `json:"partition"`
	Position   int64   `json:"position"`   // the last offset applied (-1: none)
	EndOffset  int64   `json:"end_offset"` // the next offset Kafka will write
	Lag        int64   `json:"lag"`        // records not yet applied
	LagSeconds float64 `json:"lag_seconds"`
}

type partitionLag struct {
	PartitionLag
	lastMove time.Time
}

// NewProjector builds the projector service.
func NewProjector(ctx context.Context, cfg ProjectorConfig) (*Projector, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Group == "" {
		cfg.Group = "eventlog-projector"
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = time.Minute
	}
	if cfg.Consumers <= 0 {
		cfg.Consumers = 1
	}
	d, err := domainOf(cfg.Domain, cfg.Entities)
	if err != nil {
		return nil, err
	}
	if cfg.NoDomainModels {
		d = d.withoutModels()
	}
	if cfg.ReadModel == nil && cfg.Persistence == nil && !d.hasModels() {
		return nil, errors.New("no policy: run the read model, the persistence policy, or both")
	}
	reg, err := d.Events()
	if err != nil {
		return nil, err
	}
	mapper := events.NewMapper(reg, cfg.MapperOptions...)
	// Over shards, the projections commit on the home shard, and read each
	// entity from its own shard (the home shard holds only some).
	entities := store.AggregateRecorder(cfg.Backend.Recorder)
	cfg.Backend = cfg.Backend.Home()
	p := &Projector{cfg: cfg, domain: d, lag: make(map[string]*partitionLag), entities: entities}
	topicsOf := func(types []string) []string {
		var out []string
		for _, typ := range types {
			out = append(out, cfg.Kafka.Topics.Events(typ))
		}
		return out
	}
	all := topicsOf(d.EntityTypes())
	p.topics = all
	p.client, err = kgo.NewClient(cfg.Kafka.ClientOptions...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	p.admin = kadm.NewClient(p.client)
	if err := ensureTopics(ctx, p.admin, p.topics, cfg.Kafka); err != nil {
		p.client.Close()
		return nil, err
	}
	add := func(name string, target Backend, policy projection.Policy, source projection.Source, topics []string, unguarded bool) error {
		r, err := projection.NewRunner(target.Recorder, projection.Config{
			Name: name, Policy: policy, Mapper: mapper, Source: source, Logger: cfg.Log, Unguarded: unguarded,
			TracerProvider: cfg.TracerProvider, TransientRetries: cfg.TransientRetries, RetryBackoff: cfg.RetryBackoff,
		})
		if err != nil {
			return err
		}
		run := projectionRun{runner: r, topics: topics}
		var observe []func([]wire.Record, time.Time)
		if cfg.Metrics != nil {
			observe = append(observe, metrics.Projection(cfg.Metrics, name, r.Stats))
		}
		if cfg.Committed != nil {
			observe = append(observe, func(recs []wire.Record, at time.Time) { cfg.Committed(name, recs, at) })
		}
		var h kafka.BatchHandler = r
		if len(observe) > 0 {
			h = kafka.BatchHandlerFunc(func(ctx context.Context, recs []wire.Record) error {
				if err := r.HandleBatch(ctx, recs); err != nil {
					return err
				}
				at := time.Now()
				for _, f := range observe {
					f(recs, at)
				}
				return nil
			})
		}
		for range cfg.Consumers {
			c, err := kafka.NewConsumer(kafka.ConsumerConfig{
				Name: name, Group: cfg.Group + "-" + name, Topics: topics, ClientOptions: consumerOptions(cfg.Kafka.ClientOptions), Logger: cfg.Log,
				SessionTimeout: cfg.SessionTimeout, HeartbeatInterval: heartbeat(cfg.SessionTimeout),
				// A read model may commit asynchronously (pgreadmodel's
				// AsyncCommit): a crash or a failover can take back its last
				// commits after they returned.
				VerifyTracking: true,
			}, h, r)
			if err != nil {
				return err
			}
			run.consumers = append(run.consumers, c)
		}
		p.runs = append(p.runs, run)
		if cfg.Metrics != nil {
			metrics.Consumer(cfg.Metrics, "projector", name, run.consumerStats) // run has its consumers now
		}
		return nil
	}
	if cfg.ReadModel != nil {
		if err := add(ProjectionReadModel, cfg.Backend, cfg.ReadModel, entities, topicsOf(d.GenericTypes()), false); err != nil {
			p.client.Close()
			return nil, err
		}
	}
	if cfg.Persistence != nil {
		if err := add(ProjectionPersistence, *cfg.Persistence, projection.PersistencePolicy{}, entities, all, false); err != nil {
			p.client.Close()
			return nil, err
		}
	}
	for _, m := range d.ReadModels() {
		rm, err := openModel(ctx, cfg.Backend, m)
		if err != nil {
			p.client.Close()
			return nil, err
		}
		if err := add(m.Name, cfg.Backend, rm.model, entities, topicsOf(m.Entities), false); err != nil {
			p.client.Close()
			return nil, err
		}
		p.models = append(p.models, rm)
	}
	for _, pol := range d.Policies() {
		if err := add(pol.Name, cfg.Backend, pol.Policy, entities, topicsOf(pol.Entities), pol.Unguarded); err != nil {
			p.client.Close()
			return nil, err
		}
	}
	var runners []*projection.Runner
	for _, r := range p.runs {
		runners = append(runners, r.runner)
	}
	if p.dead, err = projection.NewDeadLetters(runners...); err != nil {
		p.client.Close()
		return nil, err
	}
	if cfg.Metrics != nil {
		metrics.Lag(cfg.Metrics, func() []metrics.PartitionLag {
			var out []metrics.PartitionLag
			for _, l := range p.Lag() {
				out = append(out, metrics.PartitionLag{Projection: l.Projection, Topic: l.Topic, Partition: l.Partition, Lag: l.Lag, Seconds: l.LagSeconds})
			}
			return out
		})
	}
	return p, nil
}

// Run runs every projection until ctx ends.
func (p *Projector) Run(ctx context.Context) error {
	defer p.client.Close()
	g, ctx := errgroup.WithContext(ctx)
	for _, r := range p.runs {
		for _, c := range r.consumers {
			g.Go(func() error { return c.Run(ctx) })
		}
	}
	g.Go(func() error {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			p.measureLag(ctx)
			_, _ = p.dead.Count(ctx) // parked gauges; an error shows in the next count
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return g.Wait()
}

// measureLag compares each projection's tracking with the partitions' ends.
func (p *Projector) measureLag(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ends, err := p.admin.ListEndOffsets(ctx, p.topics...)
	if err != nil {
		return
	}
	now := time.Now()
	type key struct {
		topic string
		part  int32
	}
	var found []key
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			found = append(found, key{o.Topic, o.Partition})
		}
	})
	for _, r := range p.runs {
		for _, k := range found {
			if !slices.Contains(r.topics, k.topic) {
				continue
			}
			end, _ := ends.Lookup(k.topic, k.part)
			pos, err := r.runner.Tracking(ctx, r.runner.Name(), k.topic, k.part)
			if err != nil {
				return
			}
			id := fmt.Sprintf("%s/%s/%d", r.runner.Name(), k.topic, k.part)
			p.mu.Lock()
			l, ok := p.lag[id]
			if !ok {
				l = &partitionLag{PartitionLag: PartitionLag{Projection: r.runner.Name(), Topic: k.topic, Partition: k.part, Position: pos}, lastMove: now}
				p.lag[id] = l
			}
			if pos != l.Position {
				l.lastMove = now
			}
			l.Position, l.EndOffset = pos, end.Offset
			l.Lag = max(end.Offset-(pos+1), 0)
			if l.Lag > 0 {
				// A partition the relay wrote in a transaction ends with
				// its marker, which is no record to apply.
				if done, err := kafka.CaughtUp(ctx, p.client, k.topic, k.part, pos+1, end.Offset); err == nil && done {
					l.Lag = 0
				}
			}
			if l.Lag == 0 {
				l.lastMove = now
				l.LagSeconds = 0
			} else {
				l.LagSeconds = now.Sub(l.lastMove).Seconds()
			}
			p.mu.Unlock()
		}
	}
}

// Lag returns the last measured lag of every projection and partition.
func (p *Projector) Lag() []PartitionLag {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PartitionLag, 0, len(p.lag))
	for _, l := range p.lag {
		out = append(out, l.PartitionLag)
	}
	slices.SortFunc(out, func(a, b PartitionLag) int {
		return cmp.Or(cmp.Compare(a.Projection, b.Projection), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}

// Stats returns each projection's counters by name.
func (p *Projector) Stats() map[string]projection.Stats {
	out := make(map[string]projection.Stats)
	for _, r := range p.runs {
		out[r.runner.Name()] = r.runner.Stats()
	}
	return out
}

// stalled reports a partition with lag and no progress for StallAfter.
func (p *Projector) stalled(ctx context.Context) error {
	for _, l := range p.Lag() {
		if l.Lag > 0 && l.LagSeconds > p.cfg.StallAfter.Seconds() {
			return fmt.Errorf("projection %s is stalled on %s/%d: %d records behind, no progress for %.0fs",
				l.Projection, l.Topic, l.Partition, l.Lag, l.LagSeconds)
		}
	}
	return nil
}

// API adds the projector's routes and readiness checks to s.
func (p *Projector) API(s *httpapi.Server) {
	s.Ready = append(s.Ready, p.cfg.Backend.Ready, p.stalled)
	s.Info.AddTypes(typeInfo(p.domain, nil)...)
	if p.cfg.ReadModel != nil {
		s.Info.ReadModelTypes = p.domain.GenericTypes()
	}
	s.Info.Projections = make([]string, 0, len(p.runs))
	for _, r := range p.runs {
		s.Info.Projections = append(s.Info.Projections, r.runner.Name())
	}
	prev := s.Extra
	s.Extra = func(mux *httpapi.Mux) {
		if prev != nil {
			prev(mux)
		}
		rm := &httpapi.ReadModels{Log: s.Log, Types: p.domain.GenericTypes(), Lag: func() any { return p.Lag() }, Stats: func() any { return p.Stats() },
			Forgotten: httpapi.ForgottenIn(p.entities)}
		if p.cfg.ReadModel != nil {
			rm.Model = p.cfg.ReadModel
		}
		rm.Routes(mux)
		(&httpapi.DeadLetters{Log: s.Log, Letters: p.dead}).Routes(mux)
		for _, m := range p.models {
			if m.routes != nil {
				m.routes(mux, m.reader)
			}
		}
	}
}

// DeadLetters returns the projections' parked sequences, to list, retry and
// skip.
func (p *Projector) DeadLetters() *projection.DeadLetters { return p.dead }
