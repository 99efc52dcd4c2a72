package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store/shard"
	"github.com/eventlog/eventlog/pkg/wire"
)

// commandWriter is what the writer service needs of a command writer: a
// *command.Writer, or a shardedWriter over one per shard.
type commandWriter interface {
	HandleBatch(ctx context.Context, records []wire.Record) error
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
	Close() error
	Stats() command.Stats
	TrackingName() string
}

var (
	_ commandWriter = (*command.Writer)(nil)
	_ commandWriter = (*shardedWriter)(nil)
)

// shardsOf returns the shards of b: b.Shards, or b itself.
func shardsOf(b Backend) []Backend {
	if len(b.Shards) > 0 {
		return b.Shards
	}
	return []Backend{b}
}

// ShardedBackend returns the backend of a store over shards, in shard order:
// its Recorder and Snapshots are a shard.Store over the shards' recorders
// (each must also be a store.SnapshotRecorder), the rest is the home shard's
// (shard 0). With one shard it returns that shard. Check each shard's
// recorded layout first (postgres.Recorder.CheckShard).
func ShardedBackend(shards []Backend) (Backend, error) {
	switch len(shards) {
	case 0:
		return Backend{}, errors.New("service: no shards")
	case 1:
		return shards[0], nil
	}
	recs := make([]shard.Recorder, len(shards))
	for i, b := range shards {
		r, ok := b.Recorder.(shard.Recorder)
		if !ok {
			return Backend{}, fmt.Errorf("service: shard %d (%s) keeps no snapshots: it cannot be a shard", i, b.Name)
		}
		recs[i] = r
	}
	st, err := shard.New(recs...)
	if err != nil {
		return Backend{}, err
	}
	b := shards[0]
	b.Recorder, b.Snapshots, b.Shards = st, st, shards
	b.Name = fmt.Sprintf("%s (+%d shards)", shards[0].Name, len(shards)-1)
	return b, nil
}

// Home returns the home shard (shard 0) of a sharded backend, where read
// models and the tracking of projections live, or b itself.
func (b Backend) Home() Backend {
	if len(b.Shards) > 0 {
		return b.Shards[0]
	}
	return b
}

// checkShards checks the commands topic's partition count against the shard
// count and returns the router of the layout.
func checkShards(ctx context.Context, adm *kadm.Client, topic string, shards int) (*shard.Router, error) {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	n, err := kafka.TopicPartitions(ctx, adm, topic)
	if err != nil {
		return nil, err
	}
	r, err := shard.NewRouter(n, shards)
	if err != nil {
		if !errors.Is(err, shard.ErrLayout) {
			return nil, err
		}
		// The topic exists: its partitions can only grow.
		up := (n/shards + 1) * shards
		return nil, fmt.Errorf("%w: the commands topic %s has %d partitions, which is not a multiple of the %d shards: grow it to %d (kafka-topics --alter --topic %s --partitions %d; a topic's partitions cannot shrink, and -partitions only sets the count of topics eventlog creates), or use a shard count that divides %d",
			shard.ErrLayout, topic, n, shards, up, topic, up, n)
	}
	return r, nil
}

// A shardedWriter splits each batch of command records by partition and hands
// each shard's part to that shard's command writer: a partition belongs to one
// shard (shard.Router), so each part is one transaction of one database, with
// the tracking of its partitions. Parts of different shards run at once.
type shardedWriter struct {
	router    *shard.Router
	ws        []*command.Writer
	log       *slog.Logger
	misrouted atomic.Int64 // commands found on another shard's partition

	// A misrouted command, or one on a partition the router does not know,
	// makes the writer look at the commands topic's partition count again
	// (kadm's cached metadata, at most 5s old), to say whether the topic
	// grew to a count that does not fit the shards (at most once per
	// layoutErrorEvery).
	adm     *kadm.Client
	topic   string
	errMu   sync.Mutex
	lastErr time.Time
}

// layoutErrorEvery bounds how often a sharded writer logs that the commands
// topic no longer fits the shards.
const layoutErrorEvery = time.Minute

// HandleBatch handles each shard's records on that shard. If any shard fails,
// it returns the errors of every shard that failed; the consumer hands the
// batch again, and the shards that stored their part skip it (their tracking
// has it).
func (s *shardedWriter) HandleBatch(ctx context.Context, records []wire.Record) error {
	parts := make([][]wire.Record, len(s.ws))
	suspect := false
	for _, r := range records {
		i := s.router.ShardOfPartition(r.Partition)
		if !s.checkKey(r, i) || r.Partition >= s.router.Partitions() {
			suspect = true
		}
		parts[i] = append(parts[i], r)
	}
	if suspect {
		s.checkLayout(ctx)
	}
	errs := make([]error, len(s.ws))
	var wg sync.WaitGroup
	for i, part := range parts {
		if len(part) == 0 {
			continue
		}
		wg.Go(func() {
			if err := s.ws[i].HandleBatch(ctx, part); err != nil {
				errs[i] = fmt.Errorf("shard %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// onShard refuses a command whose entity belongs to another shard than the
// partition it came on (shard i): stored on shard i, its entity would have
// events where reads by entity id do not look, and perhaps a second history
// on its own shard. The record is dead-lettered with what to fix, and can be
// resent once keyed right.
func onShard(router *shard.Router, i int, r *wire.Record, c *wire.Command) error {
	if s := router.Shard(c.EntityID); s != i {
		return fmt.Errorf("%w: entity %s belongs to shard %d of %d, but its command came on partition %d, of shard %d: "+
			"produce commands keyed by entity id with Kafka's default partitioner (murmur2; librdkafka and kcat: -X partitioner=murmur2_random)",
			command.ErrInvalid, c.EntityID, s, router.Shards(), r.Partition, i)
	}
	return nil
}

// checkKey warns of a command whose key (its entity id) belongs to another
// shard than its partition: a producer that did not use Kafka's default
// partitioner on the entity id. The shard's writer dead-letters it (onShard).
// It reports whether the record is where its key belongs (or has no entity id
// for a key).
func (s *shardedWriter) checkKey(r wire.Record, i int) bool {
	if len(r.Key) != 36 {
		return true
	}
	id, err := uuid.ParseBytes(r.Key)
	if err != nil || s.router.Shard(id) == i {
		return true
	}
	if s.misrouted.Add(1)%1000 == 1 {
		s.log.Warn("writer: a command's partition is not its entity's: produce commands keyed by entity id with Kafka's default partitioner",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "entity_shard", s.router.Shard(id), "partition_shard", i, "misrouted", s.misrouted.Load())
	}
	return false
}

// checkLayout reads the commands topic's partition count and logs an error
// (at most once per layoutErrorEvery) if the topic has grown to a count that
// is not a multiple of the shards: Kafka's partitioner then puts the
// commands of some entities on another shard's partitions, where they are
// stored and their entities' reads do not look.
func (s *shardedWriter) checkLayout(ctx context.Context) {
	if s.adm == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := kafka.TopicPartitions(ctx, s.adm, s.topic)
	if err != nil {
		return // a command's misrouting is logged anyway
	}
	if shards := s.router.Shards(); n%shards != 0 {
		s.errMu.Lock()
		due := time.Since(s.lastErr) >= layoutErrorEvery
		if due {
			s.lastErr = time.Now()
		}
		s.errMu.Unlock()
		if !due {
			return
		}
		up := (n/shards + 1) * shards
		s.log.Error(fmt.Sprintf("writer: the commands topic %s has grown to %d partitions, which is not a multiple of the %d shards: commands of some entities now go to another shard's partitions and are stored there, where reads of their entities do not look; grow it to %d at once (kafka-topics --alter --topic %s --partitions %d)",
			s.topic, n, shards, up, s.topic, up), "topic", s.topic, "partitions", n, "shards", shards)
	}
}

// Tracking reads the tracking of partition on the shard that owns it.
func (s *shardedWriter) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	return s.ws[s.router.ShardOfPartition(partition)].Tracking(ctx, name, topic, partition)
}

// Close closes every shard's writer.
func (s *shardedWriter) Close() error {
	errs := make([]error, len(s.ws))
	for i, w := range s.ws {
		errs[i] = w.Close()
	}
	return errors.Join(errs...)
}

// Stats sums the shards' counters.
func (s *shardedWriter) Stats() command.Stats {
	var t command.Stats
	for _, w := range s.ws {
		t.Add(w.Stats())
	}
	return t
}

// TrackingName is the shards' tracking name (the same on each).
func (s *shardedWriter) TrackingName() string { return s.ws[0].TrackingName() }

// sumRelayStats sums the counters of relays, one per shard. Active holds if
// every relay is active; ids and positions, which are per shard's log, are
// summed too, so that lag adds up (they mean nothing else summed).
func sumRelayStats(relays []*kafka.Relay) kafka.RelayStats {
	var t kafka.RelayStats
	t.Active = len(relays) > 0
	for _, r := range relays {
		st := r.Stats()
		t.Active = t.Active && st.Active
		t.Published += st.Published
		t.DeadLettered += st.DeadLettered
		t.Skipped += st.Skipped
		t.Failures += st.Failures
		t.Transactions += st.Transactions
		t.Aborted += st.Aborted
		t.Fenced += st.Fenced
		t.LastPublishedID += st.LastPublishedID
		t.Checkpoint += st.Checkpoint
		t.MaxID += st.MaxID
		t.Lag += st.Lag
	}
	return t
}
