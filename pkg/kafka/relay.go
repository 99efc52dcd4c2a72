package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A RelaySource is the part of a store the relay uses: it reads the
// notification log and keeps its checkpoint as a tracking record (topic "",
// partition 0). Every store.ProcessRecorder is one. If the source also
// implements store.Notifier, the relay wakes on its notifications and polls
// less often.
type RelaySource interface {
	SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error)
	MaxNotificationID(ctx context.Context) (int64, error)
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
	InTx(ctx context.Context, fn func(store.Tx) error) error
}

// RelayConfig configures a Relay. The zero value of every field but Locker
// takes the default its doc names.
type RelayConfig struct {
	// Name names the relay's checkpoint (a store.Tracking with this name,
	// topic "" and partition 0) and its lock. Default "relay".
	Name string
	// Topics names the destination topics. Default prefix wire.DefaultPrefix.
	Topics wire.Topics
	// Locker makes sure one relay per store is active; it is required. Relays
	// in one process over an embedded store can share a LocalLock; relays in
	// several processes need a lock the store itself holds (a PostgreSQL
	// advisory lock, for example).
	Locker Locker

	// Transactional publishes each batch of the log in one Kafka
	// transaction, together with the relay's checkpoint (a record on
	// CheckpointTopic), so that a read_committed consumer sees every item
	// exactly once, and a relay resumes from the checkpoint committed in
	// Kafka (see the package doc, "Transactions"). The default, false, is
	// the at-least-once mode: no transactions, the checkpoint in the store.
	Transactional bool
	// TransactionalID is the transactional.id of the relay's producer in
	// transactional mode; every relay of one store must use the same one,
	// and relays of different stores different ones. Default
	// "<prefix>.relay.<Name>.<store id>", where the store id is a random
	// number the first transactional relay keeps in the store (a tracking
	// record named Name, topic StoreIDTrackingTopic), so that the default is
	// the same for every relay of the store, on any host, and a new store
	// gets a new one.
	TransactionalID string
	// CheckpointTopic receives the relay's checkpoint records in
	// transactional mode: key the transactional id, value the last
	// published notification id in decimal. Default
	// "<prefix>.relay-checkpoints". With Admin the relay creates it (one
	// partition, cleanup.policy=compact, TopicReplicationFactor); without,
	// it must exist.
	CheckpointTopic string
	// TransactionTimeout is the transaction.timeout.ms the relay's producer
	// asks for: the broker aborts a transaction of a relay that died after
	// this long, unless another relay of the store has started first (which
	// aborts it at once). Until then read_committed consumers of the
	// partitions it wrote wait. It must not exceed the broker's
	// transaction.max.timeout.ms (15 minutes by default). Default 10s.
	TransactionTimeout time.Duration

	// PageSize is how many notifications one read of the log returns at most.
	// Default 1000.
	PageSize int
	// MaxInFlightPages is how many pages may be produced and not yet fully
	// acknowledged at once. Default 8. 1 publishes a page, waits for every
	// acknowledgement, and only then reads the next page. In transactional
	// mode it is how many pages one transaction holds at most.
	MaxInFlightPages int
	// PollInterval is how often the relay reads the log when it is caught up
	// and the source is not a store.Notifier. Default 50ms.
	PollInterval time.Duration
	// NotifiedPollInterval is how often the relay reads the log when it is
	// caught up and the source is a store.Notifier: a fallback for lost
	// wake-ups. Default 500ms. After a wake-up the relay also reads again
	// after 2ms, 4ms, 8ms ... (until that reaches NotifiedPollInterval, or
	// the next wake-up): a store whose log is commit-order safe may not show
	// a committed item before every older transaction has ended, and that
	// end sends no wake-up.
	NotifiedPollInterval time.Duration
	// CheckpointInterval bounds how often the checkpoint is written: at most
	// once per interval, and about an interval after the acknowledgements it
	// covers, busy or idle; and once more when the relay stops or rewinds.
	// A checkpoint lost in a crash only makes the relay publish again what it
	// had published since the last one (see the package doc). Default 100ms.
	// In transactional mode it bounds how often the store's copy of the
	// checkpoint (a hint, for visibility) is written.
	CheckpointInterval time.Duration
	// LockRetryInterval is how often a standby relay tries the lock. Default
	// 500ms; at most 1s.
	LockRetryInterval time.Duration
	// MinBackoff and MaxBackoff bound the capped exponential back-off after a
	// failure to read the log or to publish. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// DrainTimeout bounds how long Run waits, when its context ends or the lock
	// is lost, for acknowledgements of records already produced, so that it can
	// checkpoint them. Default 10s.
	DrainTimeout time.Duration
	// StatsInterval is how often the relay asks the source for its greatest
	// notification id, for RelayStats.Lag. Default 1s.
	StatsInterval time.Duration

	// UnroutedTopic, if set, receives items whose topic names no entity type
	// (no dot), with the event headers. If empty such items are skipped and
	// logged.
	UnroutedTopic string

	// Admin, if set, is used to create each destination topic the first time
	// the relay is about to publish to it (with TopicPartitions and
	// TopicReplicationFactor). Without it, a topic must exist before its first
	// event is relayed: the relay retries until it does.
	Admin *kadm.Client
	// TopicPartitions and TopicReplicationFactor are used with Admin. Default
	// -1, the broker's defaults.
	TopicPartitions        int32
	TopicReplicationFactor int16
	// TopicLimits, if set, bounds the records of each destination topic by
	// the topic's max.message.bytes, which the relay learns with Admin
	// (required with it) before its first record to the topic; the client
	// must be built with TopicLimits.ClientOption. Without it, every record is
	// bounded by the client's kgo.ProducerBatchMaxBytes. A record over the
	// bound goes to the dead letters without its value.
	TopicLimits *TopicLimits

	// Logger receives the relay's logs. Default slog.Default().
	Logger *slog.Logger

	// TracerProvider, if set, traces the relay (see package tracing): a
	// span for each transaction (transactional mode) or each page of the
	// log (at-least-once mode), from its read until the broker acknowledged
	// or committed it, linked to the trace contexts of its items. The
	// default, nil, starts no span. Either way every record whose item has a
	// trace context carries it as its traceparent header.
	TracerProvider trace.TracerProvider
}

func (c *RelayConfig) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Name == "" {
		c.Name = "relay"
	}
	if c.Topics.Prefix == "" {
		c.Topics.Prefix = wire.DefaultPrefix
	}
	if c.PageSize <= 0 {
		c.PageSize = 1000
	}
	if c.MaxInFlightPages <= 0 {
		c.MaxInFlightPages = 8
	}
	def(&c.PollInterval, 50*time.Millisecond)
	def(&c.NotifiedPollInterval, 500*time.Millisecond)
	def(&c.CheckpointInterval, 100*time.Millisecond)
	def(&c.LockRetryInterval, 500*time.Millisecond)
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 5*time.Second)
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.StatsInterval, time.Second)
	def(&c.TransactionTimeout, 10*time.Second)
	if c.CheckpointTopic == "" {
		c.CheckpointTopic = c.Topics.Prefix + ".relay-checkpoints"
	}
	if c.TopicPartitions == 0 {
		c.TopicPartitions = -1
	}
	if c.TopicReplicationFactor == 0 {
		c.TopicReplicationFactor = -1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration the relay cannot run with. It checks the
// configuration as setDefaults leaves it.
func (c *RelayConfig) Validate() error {
	cc := *c
	cc.setDefaults()
	switch {
	case cc.Locker == nil:
		return errors.New("kafka: relay: Locker is required (NewLocalLock for a store only this process uses)")
	case cc.LockRetryInterval > time.Second:
		return fmt.Errorf("kafka: relay: LockRetryInterval %s is more than 1s", cc.LockRetryInterval)
	case cc.MinBackoff > cc.MaxBackoff:
		return fmt.Errorf("kafka: relay: MinBackoff %s is more than MaxBackoff %s", cc.MinBackoff, cc.MaxBackoff)
	case cc.UnroutedTopic != "" && !ValidTopicName(cc.UnroutedTopic):
		return fmt.Errorf("kafka: relay: invalid UnroutedTopic %q", cc.UnroutedTopic)
	case cc.TopicLimits != nil && cc.Admin == nil:
		return errors.New("kafka: relay: TopicLimits needs Admin to learn the limits")
	case cc.Transactional && !ValidTopicName(cc.CheckpointTopic):
		return fmt.Errorf("kafka: relay: invalid CheckpointTopic %q", cc.CheckpointTopic)
	case cc.Transactional && cc.TransactionTimeout < time.Second:
		return fmt.Errorf("kafka: relay: TransactionTimeout %s is less than 1s", cc.TransactionTimeout)
	}
	return cc.Topics.Validate()
}

// RelayClientOptions returns the producer options the relay wants from its
// client, to pass to kgo.NewClient with the connection options: acks from all
// in-sync replicas, the idempotent producer (franz-go's default, stated here so
// that no later option turns it off) and a linger of 0. franz-go v1.22 lingers
// 10ms by default, which adds up to 10ms to every relayed event; without
// lingering, records still batch up behind the requests in flight, so
// throughput does not suffer.
//
// It also raises the producer's batch limit from franz-go's 1,000,012 bytes
// to Kafka's default message.max.bytes (1,048,588), so that the events of the
// largest command the writer accepts (wire.MaxCommandSize) can be published to
// a broker with default settings. An item larger than that still goes to the
// dead letters, without its value. To bound each topic by its own
// max.message.bytes instead, add TopicLimits.ClientOption after these and set
// RelayConfig.TopicLimits.
func RelayClientOptions() []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(KafkaDefaultMaxMessageBytes),
	}
}

// KafkaDefaultMaxMessageBytes is Kafka's default message.max.bytes.
const KafkaDefaultMaxMessageBytes = 1048588

// RelayStats is a snapshot of a relay's progress.
type RelayStats struct {
	// Active reports whether this relay holds the lock and is publishing.
	Active bool
	// Published counts records the broker acknowledged, since the relay was
	// built. Records re-published after a failure count again. In
	// transactional mode it counts the records of the transactions the relay
	// committed, less those of a commit whose answer was lost (the relay
	// learns from its checkpoint that they committed, not how many).
	Published int64
	// DeadLettered counts items the relay sent to the dead letters because it
	// could not route them (an undecodable outbox item, an entity type that
	// makes no valid topic name).
	DeadLettered int64
	// Skipped counts items of no entity type that were not published (no
	// UnroutedTopic).
	Skipped int64
	// Failures counts failed reads of the log, failed publishes and failed
	// checkpoints.
	Failures int64
	// Transactions counts the transactions the relay committed, and Aborted
	// those it aborted (transactional mode).
	Transactions, Aborted int64
	// Fenced counts the times the broker fenced the relay's producer: another
	// producer with its transactional id started (transactional mode).
	Fenced int64
	// LastPublishedID is the greatest notification id such that it and every
	// item before it has been acknowledged (in transactional mode:
	// committed).
	LastPublishedID int64
	// Checkpoint is the stored checkpoint, as the relay last wrote or read it
	// (in transactional mode: the one committed in Kafka).
	Checkpoint int64
	// MaxID is the greatest notification id the relay has seen in the log.
	MaxID int64
	// Lag is MaxID - Checkpoint (not less than 0).
	Lag int64
}

// A Relay publishes a store's notification log to Kafka, in log order, and
// checkpoints what the broker has acknowledged. See the package doc for what it
// guarantees.
type Relay struct {
	client  *kgo.Client
	src     RelaySource
	cfg     RelayConfig
	log     *slog.Logger
	router  router
	running atomic.Bool
	tracer  trace.Tracer // nil: no tracing

	mu    sync.Mutex
	stats RelayStats
}

// NewRelay returns a relay that reads src and publishes with client. client
// must use acks from all in-sync replicas and the idempotent producer, must
// not use manual flushing (see RelayClientOptions) and must not be
// transactional; it may be shared with other producers. The relay does not
// close it. In transactional mode the relay publishes with a producer of its
// own, made from client.Opts() with a transactional id (see the package doc),
// and uses client for its admin requests and to read its checkpoint back.
func NewRelay(client *kgo.Client, src RelaySource, cfg RelayConfig) (*Relay, error) {
	if client == nil || src == nil {
		return nil, errors.New("kafka: relay: nil client or source")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if acks, _ := client.OptValue(kgo.RequiredAcks).(kgo.Acks); acks != kgo.AllISRAcks() {
		return nil, errors.New("kafka: relay: the client must use kgo.RequiredAcks(kgo.AllISRAcks())")
	}
	if off, _ := client.OptValue(kgo.DisableIdempotentWrite).(bool); off {
		return nil, errors.New("kafka: relay: the client must use the idempotent producer")
	}
	if manual, _ := client.OptValue(kgo.ManualFlushing).(bool); manual {
		return nil, errors.New("kafka: relay: the client must not use manual flushing")
	}
	if v := client.OptValues(kgo.TransactionalID); len(v) == 2 && v[1] == true {
		return nil, errors.New("kafka: relay: transactional clients are not supported")
	}
	maxBytes, _ := client.OptValue(kgo.ProducerBatchMaxBytes).(int32)
	if cfg.TopicLimits != nil {
		maxBytes = 0 // publishPage bounds each record by its topic's limit
	}
	return &Relay{
		client: client,
		src:    src,
		cfg:    cfg,
		log:    cfg.Logger.With(logKeyRelay, cfg.Name),
		router: router{topics: cfg.Topics, unrouted: cfg.UnroutedTopic, maxBytes: int(maxBytes)},
		tracer: tracing.Tracer(cfg.TracerProvider),
	}, nil
}

// Stats returns a snapshot of the relay's progress. It is safe to call
// concurrently with Run.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Lag = max(0, s.MaxID-s.Checkpoint)
	return s
}

func (r *Relay) update(fn func(*RelayStats)) {
	r.mu.Lock()
	fn(&r.stats)
	r.mu.Unlock()
}

// Run takes the relay's lock, retrying every LockRetryInterval while another
// relay holds it, and then publishes until ctx ends or the lock is lost; after
// losing the lock it goes back to trying it. Failures to read the log or to
// publish are logged and retried with back-off, never returned. Run returns nil
// once ctx ends, after waiting (up to DrainTimeout) for records in flight and
// checkpointing those acknowledged. A Relay runs once at a time.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("kafka: relay: already running")
	}
	defer r.running.Store(false)
	for {
		// The lock is taken with a context that Run's does not cancel, so that
		// a stopping relay keeps it until it has drained and checkpointed:
		// otherwise a standby would take over from an older checkpoint and
		// publish again what this one already had acknowledged.
		held, release, err := r.cfg.Locker.TryLock(context.WithoutCancel(ctx), r.cfg.Name)
		if err == nil && held == nil {
			// Some lockers (the PostgreSQL recorder's) say "held elsewhere"
			// with no context and no error.
			err = ErrLocked
		}
		switch {
		case err == nil:
			r.log.Info("relay took the lock; publishing")
			leading, stop := context.WithCancel(held)
			stopWithRun := context.AfterFunc(ctx, stop)
			if r.cfg.Transactional {
				err = r.leadTx(leading)
			} else {
				err = r.lead(leading)
			}
			stopWithRun()
			stop()
			r.update(func(s *RelayStats) { s.Active = false })
			release()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				r.log.Error("relay stopped publishing", logKeyErr, err)
			} else {
				r.log.Warn("relay lost the lock")
			}
		case ctx.Err() != nil:
			return nil
		case !errors.Is(err, ErrLocked):
			r.log.Warn("relay could not try the lock", logKeyErr, err)
		}
		if !sleep(ctx, r.cfg.LockRetryInterval) {
			return nil
		}
	}
}

// page is one read of the log, produced and waiting for acknowledgements.
type page struct {
	last    int64 // id of the last notification in the page
	pending atomic.Int64
	acked   atomic.Int64
	done    chan struct{}
	// failed is shared by the pages of one term: once a record fails, no
	// more records are produced until the relay has rewound.
	failed *atomic.Bool

	mu  sync.Mutex
	err error

	// span, at-least-once mode with tracing, ends when the page is done.
	span trace.Span
}

func newPage(last int64, records int, failed *atomic.Bool) *page {
	p := &page{last: last, done: make(chan struct{}), failed: failed}
	p.pending.Store(int64(records) + 1) // +1 held until every record is produced
	return p
}

// promise is the kgo promise of each record of the page.
func (p *page) promise(_ *kgo.Record, err error) { p.finish(err) }

func (p *page) finish(err error) {
	if err != nil {
		p.failed.Store(true)
		p.mu.Lock()
		if p.err == nil {
			p.err = err
		}
		p.mu.Unlock()
	} else {
		p.acked.Add(1)
	}
	p.release()
}

// release drops one pending count without an outcome.
func (p *page) release() {
	if p.pending.Add(-1) == 0 {
		if p.span != nil {
			tracing.Fail(p.span, p.failure())
			p.span.SetAttributes(tracing.KeyRecords.Int64(p.acked.Load()))
			p.span.End()
		}
		close(p.done)
	}
}

func (p *page) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *page) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// leader is the state of one term as the active relay.
type leader struct {
	r    *Relay
	held context.Context
	// produceCtx outlives held until drain gives up: records in flight when
	// held ends are not failed (which would break the order of their keys)
	// but awaited.
	produceCtx context.Context
	selected   int64           // last id read from the log
	inflight   []*page         // in log order
	known      map[string]bool // topics ensured with Admin
	failed     atomic.Bool     // a record of this term failed; see page.failed
	term
}

// term is what both relay modes keep through a term as the active relay: the
// checkpoint acknowledged (every id up to acked is published) and the one
// stored, and the back-off after a failure.
type term struct {
	cfg     *RelayConfig
	acked   int64
	saved   int64
	savedAt time.Time
	backoff time.Duration
}

// nextBackoff doubles the back-off, from MinBackoff up to MaxBackoff.
func (t *term) nextBackoff() time.Duration {
	if t.backoff == 0 {
		t.backoff = t.cfg.MinBackoff
	} else {
		t.backoff = min(2*t.backoff, t.cfg.MaxBackoff)
	}
	return t.backoff
}

// checkpointDue reports whether the checkpoint moved and force is set or
// CheckpointInterval has passed since it was stored.
func (t *term) checkpointDue(force bool) bool {
	return t.acked > t.saved && (force || time.Since(t.savedAt) >= t.cfg.CheckpointInterval)
}

// fastPollMin is the first wait for a read after a wake-up.
const fastPollMin = 2 * time.Millisecond

// pacer is a relay loop's wait for the log to grow: woken by the store where
// it notifies, else polling. After a wake-up the next waits are shorter
// (fastPollMin, doubling up to the poll interval; see NotifiedPollInterval),
// to catch commits that land just after the one announced. It also wakes the
// loop when a checkpoint is due, so an idle relay stores it about
// CheckpointInterval after the acknowledgements.
type pacer struct {
	wake       <-chan struct{}
	poll, fast time.Duration
	timer      *time.Timer
	cpEvery    time.Duration
	cpTimer    *time.Timer
}

func (r *Relay) newPacer(held context.Context) *pacer {
	pc := &pacer{poll: r.cfg.PollInterval, cpEvery: r.cfg.CheckpointInterval}
	if n, ok := r.src.(store.Notifier); ok {
		pc.wake = n.Notify(held)
		pc.poll = r.cfg.NotifiedPollInterval
	}
	pc.timer = time.NewTimer(pc.poll)
	pc.cpTimer = time.NewTimer(pc.cpEvery)
	pc.cpTimer.Stop()
	return pc
}

func (pc *pacer) stop() {
	pc.timer.Stop()
	pc.cpTimer.Stop()
}

// arm starts the wait for the next read.
func (pc *pacer) arm() {
	if !pc.timer.Stop() {
		select {
		case <-pc.timer.C:
		default:
		}
	}
	if pc.fast > 0 {
		pc.timer.Reset(pc.fast)
	} else {
		pc.timer.Reset(pc.poll)
	}
}

// What ended a pacer's wait.
const (
	waitOther       = iota // held ended, or head finished
	pollAgain              // a wake-up or the poll timer: read the log
	checkpointIsDue        // a checkpoint saved at savedAt is due
)

// wait blocks until held ends, head is closed, the log may have grown, or,
// if checkpoint is set, the checkpoint saved at savedAt is due.
func (pc *pacer) wait(held context.Context, head <-chan struct{}, checkpoint bool, savedAt time.Time) int {
	var due <-chan time.Time
	if checkpoint {
		pc.cpTimer.Reset(max(0, pc.cpEvery-time.Since(savedAt)))
		due = pc.cpTimer.C
		defer pc.cpTimer.Stop()
	}
	select {
	case <-held.Done():
	case <-head:
	case <-pc.wake:
		pc.fast = min(fastPollMin, pc.poll)
		return pollAgain
	case <-pc.timer.C:
		if pc.fast *= 2; pc.fast >= pc.poll {
			pc.fast = 0
		}
		return pollAgain
	case <-due:
		return checkpointIsDue
	}
	return waitOther
}

// errStopped fails the records a relay did not produce after a failure.
var errStopped = errors.New("kafka: relay: not produced after an earlier failure")

// lead publishes while held lasts. It returns nil when held ends.
func (r *Relay) lead(held context.Context) error {
	cp, err := r.src.Tracking(held, r.cfg.Name, "", 0)
	if err != nil {
		if held.Err() != nil {
			return nil
		}
		return fmt.Errorf("read checkpoint: %w", err)
	}
	cp = max(cp, 0)
	r.update(func(s *RelayStats) {
		s.Active, s.Checkpoint, s.LastPublishedID = true, cp, cp
		s.MaxID = max(s.MaxID, cp)
	})
	produceCtx, stopProducing := context.WithCancel(context.WithoutCancel(held))
	defer stopProducing()
	l := &leader{r: r, held: held, produceCtx: produceCtx, selected: cp, known: make(map[string]bool),
		term: term{cfg: &r.cfg, acked: cp, saved: cp, savedAt: time.Now()}}
	defer l.drain(stopProducing)

	pc := r.newPacer(held)
	defer pc.stop()
	var statsAt time.Time
	idle := false // the last read returned a short page
	for held.Err() == nil {
		if err := l.reap(); err != nil {
			l.recover(err)
			idle = false
			continue
		}
		l.checkpoint(false)
		if time.Since(statsAt) >= r.cfg.StatsInterval {
			statsAt = time.Now()
			if m, err := r.src.MaxNotificationID(held); err == nil {
				r.update(func(s *RelayStats) { s.MaxID = max(s.MaxID, m) })
			}
		}
		if !idle && len(l.inflight) < r.cfg.MaxInFlightPages {
			n, err := l.publishPage()
			if err != nil {
				if held.Err() != nil {
					break
				}
				r.update(func(s *RelayStats) { s.Failures++ })
				r.log.Error("relay could not publish a page", logKeyErr, err, logKeyBackoff, l.nextBackoff())
				sleep(held, l.backoff)
				continue
			}
			idle = n < r.cfg.PageSize
			continue
		}
		var head <-chan struct{}
		if len(l.inflight) > 0 {
			head = l.inflight[0].done
		}
		if idle {
			pc.arm()
		}
		// A checkpoint that is due wakes the loop (the next turn stores it).
		if pc.wait(held, head, l.acked > l.saved, l.savedAt) == pollAgain {
			idle = false
		}
	}
	return nil
}

// publishPage reads the next page of the log and produces it. It returns how
// many notifications it read.
func (l *leader) publishPage() (int, error) {
	r := l.r
	ns, err := r.src.SelectNotifications(l.held, l.selected, r.cfg.PageSize)
	if err != nil {
		return 0, fmt.Errorf("read the notification log: %w", err)
	}
	if len(ns) == 0 {
		return 0, nil
	}
	recs, skipped, bad, err := r.records(l.held, l.known, ns)
	if err != nil {
		return 0, err
	}
	last := ns[len(ns)-1].ID
	p := newPage(last, len(recs), &l.failed)
	if r.tracer != nil {
		p.span = r.startSpan(l.held, tracing.SpanRelayPage, ns, "")
	}
	for i, rec := range recs {
		if l.failed.Load() {
			// A record failed: producing more could put a later event of a
			// key ahead of an earlier one. Fail the rest of the page; the
			// relay rewinds to the checkpoint.
			for range recs[i:] {
				p.finish(errStopped)
			}
			break
		}
		r.client.Produce(l.produceCtx, rec, p.promise)
	}
	p.release() // the +1
	l.inflight = append(l.inflight, p)
	l.selected = last
	r.update(func(s *RelayStats) {
		s.Skipped += skipped
		s.DeadLettered += bad
		s.MaxID = max(s.MaxID, last)
	})
	return len(ns), nil
}

// records routes ns to their records, in order, and makes sure their topics
// exist (see ensureTopics; known holds the topics ensured so far). It returns
// how many items it skipped and how many it sent to the dead letters.
func (r *Relay) records(ctx context.Context, known map[string]bool, ns []store.Notification) (recs []*kgo.Record, skipped, bad int64, err error) {
	recs = make([]*kgo.Record, 0, len(ns))
	var refs []*store.Notification // the item of each of recs, with TopicLimits
	for i := range ns {
		rec, kind := r.router.route(&ns[i])
		switch kind {
		case routeSkip:
			skipped++
			r.log.Warn("relay skipped an item of no entity type", logKeyID, ns[i].ID, logKeyTopic, ns[i].Topic)
			continue
		case routeBad:
			bad++
			r.log.Error("relay sent an item it cannot route to the dead letters", logKeyID, ns[i].ID, logKeyTopic, ns[i].Topic)
		}
		recs = append(recs, rec)
		if r.cfg.TopicLimits != nil {
			refs = append(refs, &ns[i])
		}
	}
	if err := r.ensureTopics(ctx, known, recs); err != nil {
		return nil, 0, 0, fmt.Errorf("create destination topics: %w", err)
	}
	if lim := r.cfg.TopicLimits; lim != nil {
		for i, rec := range recs {
			if n := size(rec); n > int(lim.BatchMaxBytes(rec.Topic)) {
				// The dead-letters topic was learned with the others (see ensureTopics).
				recs[i] = r.router.bad(refs[i], fmt.Errorf("record of about %d bytes for %s is larger than the topic's limit of %d bytes", n, rec.Topic, lim.BatchMaxBytes(rec.Topic)))
				recs[i].Value = nil
				bad++
				r.log.Error("relay sent an item larger than its topic's limit to the dead letters", logKeyID, refs[i].ID, logKeyTopic, refs[i].Topic)
			}
		}
	}
	return recs, skipped, bad, nil
}

// ensureTopics creates, with Admin, destination topics not in known, and,
// with TopicLimits, learns their limits and that of the dead-letters topic
// (where a record over its topic's limit goes instead).
func (r *Relay) ensureTopics(ctx context.Context, known map[string]bool, recs []*kgo.Record) error {
	adm := r.cfg.Admin
	if adm == nil {
		return nil
	}
	var missing []string
	add := func(topic string) {
		if !known[topic] {
			known[topic] = true
			missing = append(missing, topic)
		}
	}
	for _, rec := range recs {
		add(rec.Topic)
	}
	if len(missing) == 0 {
		return nil
	}
	if r.cfg.TopicLimits != nil {
		add(r.cfg.Topics.DeadLetters())
	}
	err := EnsureTopics(ctx, adm, missing, r.cfg.TopicPartitions, r.cfg.TopicReplicationFactor)
	if err == nil && r.cfg.TopicLimits != nil {
		err = r.cfg.TopicLimits.Learn(ctx, adm, missing...)
	}
	if err != nil {
		for _, t := range missing {
			delete(known, t)
		}
		return err
	}
	return nil
}

// reap pops the pages at the head that are fully acknowledged. It returns the
// error of the first page that failed.
func (l *leader) reap() error {
	for len(l.inflight) > 0 && l.inflight[0].isDone() {
		p := l.inflight[0]
		acked := p.acked.Load()
		if err := p.failure(); err != nil {
			return err
		}
		l.inflight[0] = nil
		l.inflight = l.inflight[1:]
		l.acked = p.last
		l.backoff = 0
		l.r.update(func(s *RelayStats) {
			s.Published += acked
			s.LastPublishedID = p.last
		})
	}
	return nil
}

// recover handles a failed publish: it waits for every record in flight,
// checkpoints what was acknowledged before the failure, backs off and rewinds
// to the checkpoint. Records after the failure that were acknowledged are
// published again.
func (l *leader) recover(err error) {
	r := l.r
	r.update(func(s *RelayStats) { s.Failures++ })
	for _, p := range l.inflight {
		select {
		case <-p.done:
		case <-l.held.Done():
			return // drain takes over
		}
	}
	var acked int64
	for _, p := range l.inflight {
		acked += p.acked.Load()
	}
	r.update(func(s *RelayStats) { s.Published += acked })
	l.inflight = nil
	l.checkpoint(true)
	r.log.Error("relay publish failed; resuming from the checkpoint",
		logKeyErr, err, logKeyCheckpoint, l.acked, logKeyBackoff, l.nextBackoff())
	sleep(l.held, l.backoff)
	l.selected = l.acked
	l.failed.Store(false)
}

// checkpoint stores l.acked if it moved and force is set or CheckpointInterval
// has passed.
func (l *leader) checkpoint(force bool) {
	if !l.checkpointDue(force) {
		return
	}
	l.save(l.held)
}

func (l *leader) save(ctx context.Context) {
	r, pos := l.r, l.acked
	err := r.src.InTx(ctx, func(tx store.Tx) error {
		return tx.SetTracking(ctx, store.Tracking{Name: r.cfg.Name, Position: pos})
	})
	l.savedAt = time.Now()
	switch {
	case err == nil:
		l.saved = pos
	case errors.Is(err, store.ErrTrackingConflict):
		// Another relay (one that lost the lock, or took it while this one was
		// cut off) stored this position or a later one: it had published up to
		// there. Nothing is lost; adopt it.
		stored, rerr := r.src.Tracking(ctx, r.cfg.Name, "", 0)
		if rerr != nil {
			r.update(func(s *RelayStats) { s.Failures++ })
			r.log.Error("relay could not read its checkpoint", logKeyErr, rerr)
			return
		}
		r.log.Warn("relay checkpoint was moved by another relay", logKeyCheckpoint, stored)
		l.saved = max(l.saved, stored)
	default:
		if ctx.Err() != nil {
			return
		}
		r.update(func(s *RelayStats) { s.Failures++ })
		r.log.Error("relay could not store its checkpoint", logKeyErr, err, logKeyCheckpoint, pos)
		return
	}
	r.update(func(s *RelayStats) { s.Checkpoint = max(s.Checkpoint, l.saved) })
}

// drain waits, up to DrainTimeout, for records in flight, and checkpoints the
// acknowledged ones. It runs when held ends (or lead fails), so it stores the
// checkpoint under a context of its own.
func (l *leader) drain(stopProducing func()) {
	r := l.r
	deadline := time.NewTimer(r.cfg.DrainTimeout)
	defer deadline.Stop()
wait:
	for _, p := range l.inflight {
		select {
		case <-p.done:
		case <-deadline.C:
			r.log.Warn("relay stopped waiting for acknowledgements", logKeyPages, len(l.inflight))
			stopProducing()
			break wait
		}
	}
	_ = l.reap() // a failure stops the frontier where it is
	l.inflight = nil
	if l.acked > l.saved {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(l.held), 5*time.Second)
		defer cancel()
		l.save(ctx)
	}
}

// startSpan starts a span of the relay over notifications ns, linked to
// their items' trace contexts.
func (r *Relay) startSpan(ctx context.Context, name string, ns []store.Notification, txnID string) trace.Span {
	attrs := []attribute.KeyValue{
		tracing.KeyMessagingSystem.String(tracing.MessagingKafka),
		tracing.KeyMessagingOperationType.String(tracing.OperationSend),
	}
	if txnID != "" {
		attrs = append(attrs, tracing.KeyTransactional.String(txnID))
	}
	var links tracing.Links
	if len(ns) > 0 {
		attrs = append(attrs, tracing.KeyFirstID.Int64(ns[0].ID), tracing.KeyLastID.Int64(ns[len(ns)-1].ID), tracing.KeyItems.Int(len(ns)))
		linkItems(&links, ns)
	}
	_, span := r.tracer.Start(context.WithoutCancel(ctx), name, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithNewRoot(), trace.WithAttributes(attrs...), links.Option())
	return span
}

// linkItems adds the trace contexts of ns to links.
func linkItems(links *tracing.Links, ns []store.Notification) {
	prev := ""
	for i := range ns {
		if tp := ns[i].TraceParent; tp != "" && tp != prev { // a command's items come together
			links.Add(tp)
			prev = tp
		}
	}
}

// sleep waits for d or ctx, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
