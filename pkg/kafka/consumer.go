package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A BatchHandler processes the records of one poll, from any of the consumer's
// partitions, in offset order within each partition.
//
// To apply records exactly once, a handler commits its effects together with a
// store.Tracking per (topic, partition) named ConsumerConfig.Name, in one
// transaction. It should set the tracking to the batch's first offset of the
// partition and then (if different) to its last: the first call fails with
// store.ErrTrackingConflict if any record of the batch was applied already (by
// a zombie member, say), so that nothing is applied twice. On that error the
// consumer re-reads the tracking and seeks past it.
//
// Any other error makes the consumer call HandleBatch again with the same
// records after a back-off; a record is never skipped. A record the handler
// cannot process ever (bad input) should be dead-lettered by the handler, not
// returned as an error.
type BatchHandler interface {
	HandleBatch(ctx context.Context, records []wire.Record) error
}

// BatchHandlerFunc adapts a function to BatchHandler.
type BatchHandlerFunc func(ctx context.Context, records []wire.Record) error

// HandleBatch calls f.
func (f BatchHandlerFunc) HandleBatch(ctx context.Context, records []wire.Record) error {
	return f(ctx, records)
}

// A TrackingReader returns the position stored for (name, topic, partition): the
// offset of the last record applied, or -1 and no error if there is none.
// store.ProcessRecorder is one.
type TrackingReader interface {
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
}

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Name is the tracking name the handler records positions under.
	// Required.
	Name string
	// Group is the Kafka consumer group. Required.
	Group string
	// Topics are consumed. At least one is required.
	Topics []string
	// ClientOptions are the connection options for the consumer's client
	// (kgo.SeedBrokers, TLS, SASL, kgo.WithLogger ...). The consumer adds its
	// group options after them, so those win.
	ClientOptions []kgo.Opt

	// MaxPollRecords bounds the records of one batch. Default 1000.
	MaxPollRecords int
	// SessionTimeout, RebalanceTimeout and HeartbeatInterval override
	// franz-go's group defaults (45s, 60s and 3s) when set.
	SessionTimeout, RebalanceTimeout, HeartbeatInterval time.Duration
	// MinBackoff and MaxBackoff bound the capped exponential back-off between
	// attempts at a failing batch. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// ShutdownTimeout bounds how long the batch in flight may still run once
	// Run's context ends; then its context is cancelled. Default 30s.
	ShutdownTimeout time.Duration
	// CommitTimeout bounds one offset commit. Default 10s.
	CommitTimeout time.Duration
	// VerifyTracking, for a handler whose commits the store may lose after
	// they returned (PostgreSQL with synchronous_commit off: a crash or a
	// failover to a standby takes back its last commits), makes the consumer
	// check, before the next batch after a failed one or after an idle spell
	// of VerifyIdle, that the store's tracking still holds every offset it
	// handled; a partition whose tracking went back is fetched again from
	// it, so that the lost records are applied again instead of skipped.
	// Handlers that return before their commit (a pipeline) must not set it.
	VerifyTracking bool
	// Logger receives the consumer's logs. The default logs nothing.
	Logger *slog.Logger
}

// VerifyIdle is the idle spell after which a consumer with VerifyTracking
// checks the tracking before a batch: a store that crashed and came back
// while no batch was tried shows no failure, only a pause at least as long
// as its restart.
const VerifyIdle = 250 * time.Millisecond

func (c *ConsumerConfig) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 1000
	}
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 10*time.Second)
	def(&c.ShutdownTimeout, 30*time.Second)
	def(&c.CommitTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the consumer cannot run with. It checks
// the configuration as setDefaults leaves it: MinBackoff 20s with MaxBackoff
// unset is more than the default MaxBackoff.
func (c *ConsumerConfig) Validate() error {
	cc := *c
	cc.setDefaults()
	switch {
	case cc.Name == "":
		return errors.New("kafka: consumer: Name is required")
	case cc.Group == "":
		return errors.New("kafka: consumer: Group is required")
	case len(cc.Topics) == 0:
		return errors.New("kafka: consumer: Topics is required")
	case cc.MinBackoff > cc.MaxBackoff:
		return fmt.Errorf("kafka: consumer: MinBackoff %s is more than MaxBackoff %s", cc.MinBackoff, cc.MaxBackoff)
	}
	for _, t := range cc.Topics {
		if !ValidTopicName(t) {
			return fmt.Errorf("kafka: consumer: invalid topic %q", t)
		}
	}
	return nil
}

// ConsumerStats counts what a consumer did since it was built.
type ConsumerStats struct {
	Batches   int64 // batches handled successfully
	Records   int64 // records in those batches
	Retries   int64 // failed attempts that were retried
	Conflicts int64 // tracking conflicts that made the consumer seek
	Rewinds   int64 // batches given up for a rebalance or shutdown and fetched again
	// LostCommits counts partitions whose stored tracking was found behind
	// the offsets handled (VerifyTracking), and were fetched again.
	LostCommits int64
}

// Add adds o's counters to s (the consumers of one projection, say).
func (s *ConsumerStats) Add(o ConsumerStats) {
	s.Batches += o.Batches
	s.Records += o.Records
	s.Retries += o.Retries
	s.Conflicts += o.Conflicts
	s.Rewinds += o.Rewinds
	s.LostCommits += o.LostCommits
}

// A Consumer is a consumer-group member that hands polled records to a
// BatchHandler. On each partition it is assigned, it starts after the
// handler's own tracking, not at the group's committed offset; it commits
// offsets to Kafka after each successful batch only so that lag tooling works.
type Consumer struct {
	cfg     ConsumerConfig
	h       BatchHandler
	tr      TrackingReader
	log     *slog.Logger
	running atomic.Bool
	blocked chan struct{} // a rebalance waits for the batch in hand

	batches, records, retries, conflicts, rewinds, lost atomic.Int64

	// With VerifyTracking, used by the polling goroutine only: the last
	// offset handled per partition, whether to check the tracking before the
	// next batch, and when the last batch ended.
	handled  map[string]map[int32]int64
	check    bool
	lastDone time.Time
}

// NewConsumer returns a consumer that hands records to h and reads positions
// from tr. It does no I/O: Run builds the client.
func NewConsumer(cfg ConsumerConfig, h BatchHandler, tr TrackingReader) (*Consumer, error) {
	if h == nil || tr == nil {
		return nil, errors.New("kafka: consumer: nil handler or tracking reader")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Topics = append([]string(nil), cfg.Topics...)
	cfg.ClientOptions = append([]kgo.Opt(nil), cfg.ClientOptions...)
	return &Consumer{
		cfg:     cfg,
		h:       h,
		tr:      tr,
		log:     cfg.Logger.With(logKeyConsumer, cfg.Name, logKeyGroup, cfg.Group),
		blocked: make(chan struct{}, 1),
	}, nil
}

// Stats returns the consumer's counters. It is safe to call concurrently.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{
		Batches:     c.batches.Load(),
		Records:     c.records.Load(),
		Retries:     c.retries.Load(),
		Conflicts:   c.conflicts.Load(),
		Rewinds:     c.rewinds.Load(),
		LostCommits: c.lost.Load(),
	}
}

// clientOptions returns the options of the consumer's client.
func (c *Consumer) clientOptions() []kgo.Opt {
	opts := append([]kgo.Opt(nil), c.cfg.ClientOptions...)
	opts = append(opts,
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AdjustFetchOffsetsFn(c.adjustOffsets),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) {
			select {
			case c.blocked <- struct{}{}:
			default:
			}
		}),
	)
	if c.cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(c.cfg.SessionTimeout))
	}
	if c.cfg.RebalanceTimeout > 0 {
		opts = append(opts, kgo.RebalanceTimeout(c.cfg.RebalanceTimeout))
	}
	if c.cfg.HeartbeatInterval > 0 {
		opts = append(opts, kgo.HeartbeatInterval(c.cfg.HeartbeatInterval))
	}
	return opts
}

// adjustOffsets replaces the committed offsets of newly assigned partitions
// with the handler's tracking: consumption starts right after the last offset
// the handler applied, or at the start of the partition if it applied none.
func (c *Consumer) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, ps := range offsets {
		for p := range ps {
			pos, err := c.tr.Tracking(ctx, c.cfg.Name, topic, p)
			if err != nil {
				c.log.Error("consumer could not read tracking; rejoining", logKeyTopic, topic, logKeyPartition, p, logKeyErr, err)
				return nil, fmt.Errorf("kafka: consumer: read tracking of %s/%d: %w", topic, p, err)
			}
			if pos >= 0 {
				ps[p] = kgo.NewOffset().At(pos + 1)
			} else {
				ps[p] = kgo.NewOffset().AtStart()
			}
			c.log.Debug("consumer resumes from tracking", logKeyTopic, topic, logKeyPartition, p, logKeyOffset, pos+1)
		}
	}
	return offsets, nil
}

// Run joins the group and handles batches until ctx ends. It then finishes the
// batch in flight (giving it up to ShutdownTimeout), commits, leaves the group
// and returns nil. It returns an error only if the client cannot be built. A
// Consumer runs once at a time.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("kafka: consumer: already running")
	}
	defer c.running.Store(false)
	cl, err := kgo.NewClient(c.clientOptions()...)
	if err != nil {
		return fmt.Errorf("kafka: consumer: %w", err)
	}
	defer cl.CloseAllowingRebalance()

	// The batch in flight keeps running for ShutdownTimeout after ctx ends.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(c.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			hcancel()
		}
	}()

	// Offsets are committed off the batch path: franz-go holds a commit while
	// the group re-forms, which can last a dead member's whole session
	// timeout, and the batches must not wait for that.
	commits := newCommitter()
	cctx, stopCommits := context.WithCancel(ctx)
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		for {
			select {
			case <-cctx.Done():
				return
			case <-commits.wake:
				c.commit(ctx, cl, commits.take())
			}
		}
	}()

	for ctx.Err() == nil {
		fetches := cl.PollRecords(ctx, c.cfg.MaxPollRecords)
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			c.log.Warn("consumer fetch error", logKeyTopic, topic, logKeyPartition, p, logKeyErr, err)
		})
		krecs := fetches.Records()
		if len(krecs) > 0 && ctx.Err() == nil {
			if c.process(ctx, hctx, cl, krecs) {
				commits.add(krecs)
			}
		}
		cl.AllowRebalance()
	}
	stopCommits()
	<-committed
	c.commit(ctx, cl, commits.take())
	cl.AllowRebalance()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
	defer cancel()
	if err := cl.LeaveGroupContext(lctx); err != nil {
		c.log.Warn("consumer could not leave the group cleanly", logKeyErr, err)
	}
	return nil
}

// process handles one polled batch until it succeeds (true), or gives it up
// (seeking back so it is fetched again) on a tracking conflict, a rebalance
// that waits for it, or shutdown. It runs while rebalances are blocked.
func (c *Consumer) process(ctx, hctx context.Context, cl *kgo.Client, krecs []*kgo.Record) bool {
	// A signal left in c.blocked from an earlier batch at worst makes a
	// failing batch give up (and be fetched again) once too often.
	recs := make([]wire.Record, len(krecs))
	for i, r := range krecs {
		recs[i] = RecordOf(r)
	}
	var backoff time.Duration
	for attempt := 1; ; attempt++ {
		var err error
		if c.cfg.VerifyTracking && (c.check || time.Since(c.lastDone) >= VerifyIdle) {
			err = c.verify(hctx, cl, krecs)
			if errors.Is(err, errLostCommits) {
				return false
			}
		}
		if err == nil {
			err = c.h.HandleBatch(hctx, recs)
		}
		if c.cfg.VerifyTracking {
			c.lastDone = time.Now()
		}
		if err == nil {
			c.batches.Add(1)
			c.records.Add(int64(len(recs)))
			c.noteHandled(krecs)
			return true
		}
		c.check = c.cfg.VerifyTracking
		if errors.Is(err, store.ErrTrackingConflict) {
			c.conflicts.Add(1)
			c.log.Warn("consumer tracking conflict; seeking past the stored tracking", logKeyErr, err)
			c.seek(hctx, cl, krecs, true)
			return false
		}
		c.retries.Add(1)
		if backoff == 0 {
			backoff = c.cfg.MinBackoff
		} else {
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
		c.log.Error("consumer batch failed; retrying", logKeyErr, err, logKeyAttempt, attempt, logKeyRecords, len(recs), logKeyBackoff, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
		case <-c.blocked:
		}
		t.Stop()
		// Give the batch up: a rebalance is waiting for it, or shutdown.
		c.rewinds.Add(1)
		c.seek(hctx, cl, krecs, false)
		return false
	}
}

// errLostCommits: verify found tracking behind what was handled, and seeked.
var errLostCommits = errors.New("kafka: consumer: the store lost commits")

// noteHandled records the batch's offsets as handled (VerifyTracking).
func (c *Consumer) noteHandled(krecs []*kgo.Record) {
	if !c.cfg.VerifyTracking {
		return
	}
	if c.handled == nil {
		c.handled = make(map[string]map[int32]int64)
	}
	for _, r := range krecs {
		ps := c.handled[r.Topic]
		if ps == nil {
			ps = make(map[int32]int64)
			c.handled[r.Topic] = ps
		}
		ps[r.Partition] = max(ps[r.Partition], r.Offset)
	}
}

// verify reads the stored tracking of every partition the consumer has
// handled records of. Where it is behind the last offset handled, the store
// lost commits that had returned: verify seeks those partitions to just after
// their tracking, and the other partitions of the batch back to its first
// records, and returns errLostCommits. A failed read returns its error (the
// check is tried again before the next attempt).
func (c *Consumer) verify(ctx context.Context, cl *kgo.Client, krecs []*kgo.Record) error {
	lost := make(map[string]map[int32]kgo.EpochOffset)
	for topic, ps := range c.handled {
		for p, last := range ps {
			pos, err := c.tr.Tracking(ctx, c.cfg.Name, topic, p)
			if err != nil {
				return fmt.Errorf("kafka: consumer: check the tracking of %s/%d: %w", topic, p, err)
			}
			if pos < last {
				if lost[topic] == nil {
					lost[topic] = make(map[int32]kgo.EpochOffset)
				}
				lost[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: pos + 1}
				c.log.Warn("consumer found the store's tracking behind the records it handled (commits lost in a crash or failover); fetching them again",
					logKeyTopic, topic, logKeyPartition, p, logKeyOffset, pos+1, "handled", last)
			}
		}
	}
	c.check = false
	if len(lost) == 0 {
		return nil
	}
	to := make(map[string]map[int32]kgo.EpochOffset)
	for _, r := range krecs {
		if to[r.Topic] == nil {
			to[r.Topic] = make(map[int32]kgo.EpochOffset)
		}
		if _, ok := to[r.Topic][r.Partition]; !ok {
			to[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: -1, Offset: r.Offset}
		}
	}
	for topic, ps := range lost {
		if to[topic] == nil {
			to[topic] = make(map[int32]kgo.EpochOffset)
		}
		for p, eo := range ps {
			to[topic][p] = eo
			c.handled[topic][p] = eo.Offset - 1
			c.lost.Add(1)
		}
	}
	cl.SetOffsets(to)
	return errLostCommits
}

// commit commits offsets to the group, for lag tooling only: the handler's
// tracking, not these, decides where a member resumes. A commit for a partition
// the member has lost since may rewind the group's offset there; the new owner
// corrects it with its next commit.
func (c *Consumer) commit(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) {
	if len(offsets) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
	defer cancel()
	var failed error
	cl.CommitOffsetsSync(cctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			failed = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && failed == nil {
					failed = err
				}
			}
		}
	})
	if failed != nil {
		c.log.Warn("consumer could not commit offsets (tracking still holds the position)", logKeyErr, failed)
	}
}

// committer holds the offsets to commit next: for each partition, one past
// the last record handled.
type committer struct {
	mu      sync.Mutex
	pending map[string]map[int32]kgo.EpochOffset
	wake    chan struct{}
}

func newCommitter() *committer {
	return &committer{pending: make(map[string]map[int32]kgo.EpochOffset), wake: make(chan struct{}, 1)}
}

func (m *committer) add(krecs []*kgo.Record) {
	m.mu.Lock()
	for _, r := range krecs {
		parts := m.pending[r.Topic]
		if parts == nil {
			parts = make(map[int32]kgo.EpochOffset)
			m.pending[r.Topic] = parts
		}
		if cur, ok := parts[r.Partition]; !ok || r.Offset+1 > cur.Offset {
			parts[r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		}
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *committer) take() map[string]map[int32]kgo.EpochOffset {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.pending
	m.pending = make(map[string]map[int32]kgo.EpochOffset)
	return out
}

// seek moves every partition of the batch back to its first record, or, with
// fromTracking, to just after the stored tracking if that is later, so that the
// records not applied are fetched again and those applied are not.
func (c *Consumer) seek(ctx context.Context, cl *kgo.Client, krecs []*kgo.Record, fromTracking bool) {
	to := make(map[string]map[int32]kgo.EpochOffset)
	for _, r := range krecs {
		ps := to[r.Topic]
		if ps == nil {
			ps = make(map[int32]kgo.EpochOffset)
			to[r.Topic] = ps
		}
		if _, ok := ps[r.Partition]; !ok {
			ps[r.Partition] = kgo.EpochOffset{Epoch: -1, Offset: r.Offset} // records are in offset order per partition
		}
	}
	if fromTracking {
		for topic, ps := range to {
			for p, eo := range ps {
				pos, err := c.tr.Tracking(ctx, c.cfg.Name, topic, p)
				if err != nil {
					c.log.Error("consumer could not read tracking; fetching the batch again", logKeyTopic, topic, logKeyPartition, p, logKeyErr, err)
					continue
				}
				if pos+1 > eo.Offset {
					ps[p] = kgo.EpochOffset{Epoch: -1, Offset: pos + 1}
				}
			}
		}
	}
	cl.SetOffsets(to)
}
