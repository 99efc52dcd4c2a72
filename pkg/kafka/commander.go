package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/wire"
)

// CommanderConfig configures a Commander.
type CommanderConfig struct {
	// Topics names the commands and results topics. Default prefix
	// wire.DefaultPrefix.
	Topics wire.Topics
	// ClientOptions are the connection options of the Commander's results
	// consumer (kgo.SeedBrokers, TLS, SASL, kgo.WithLogger ...).
	ClientOptions []kgo.Opt
	// RecentResults is how many results the Commander keeps for Wait calls
	// that come after their result. Default 10000.
	RecentResults int
	// Logger receives the Commander's logs. Default slog.Default().
	Logger *slog.Logger
}

// A Commander sends commands and waits for their results: the "produce a
// command and wait for its result" path of the CLI and the HTTP API.
//
// Run consumes the results topic directly (no group), from its end offsets at
// the time Run starts; Send, Wait and Do wait until it has listed them. A
// Commander thus sees the result of every command sent after Run started, and
// none before (a duplicate of a command handled earlier may not be answered
// again on Kafka: look it up in the store instead). Partitions added to the
// results topic after Run started are not consumed. Results whose Wait never
// comes are kept, RecentResults at most, oldest dropped first.
//
// All methods are safe for concurrent use.
type Commander struct {
	producer *kgo.Client
	cfg      CommanderConfig
	log      *slog.Logger
	running  atomic.Bool
	ready    chan struct{}
	readyErr error // set before ready is closed

	mu      sync.Mutex
	waiters map[uuid.UUID][]chan wire.Result
	recent  map[uuid.UUID]wire.Result
	order   []uuid.UUID // ring of recent ids, oldest at next
	next    int
}

// NewCommander returns a Commander that produces commands with producer (which
// it does not close). It does no I/O.
func NewCommander(producer *kgo.Client, cfg CommanderConfig) (*Commander, error) {
	if producer == nil {
		return nil, errors.New("kafka: commander: nil producer")
	}
	if cfg.Topics.Prefix == "" {
		cfg.Topics.Prefix = wire.DefaultPrefix
	}
	if err := cfg.Topics.Validate(); err != nil {
		return nil, err
	}
	if cfg.RecentResults <= 0 {
		cfg.RecentResults = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.ClientOptions = append([]kgo.Opt(nil), cfg.ClientOptions...)
	return &Commander{
		producer: producer,
		cfg:      cfg,
		log:      cfg.Logger,
		ready:    make(chan struct{}),
		waiters:  make(map[uuid.UUID][]chan wire.Result),
		recent:   make(map[uuid.UUID]wire.Result),
		order:    make([]uuid.UUID, cfg.RecentResults),
	}, nil
}

// Run consumes results until ctx ends, then returns nil. It fails if it cannot
// list the results topic's end offsets (make sure the topic exists), and then
// Send, Wait and Do fail too. A Commander runs once.
func (c *Commander) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("kafka: commander: Run called twice")
	}
	topic := c.cfg.Topics.Results()
	cl, err := c.start(ctx, topic)
	if err != nil {
		c.readyErr = err
		close(c.ready)
		if ctx.Err() != nil {
			return nil // stopped before it started: not a failure
		}
		return err
	}
	defer cl.Close()
	close(c.ready)
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("commander fetch error", logKeyTopic, t, logKeyPartition, p, logKeyErr, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			res, err := wire.DecodeResult(r.Value)
			if err != nil || res.CommandID == uuid.Nil {
				c.log.Warn("commander skipped a record that is not a result", logKeyPartition, r.Partition, logKeyOffset, r.Offset)
				return
			}
			c.deliver(res)
		})
	}
	return nil
}

func (c *Commander) start(ctx context.Context, topic string) (*kgo.Client, error) {
	ends, err := kadm.NewClient(c.producer).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: commander: list end offsets of %s: %w", topic, err)
	}
	parts := make(map[int32]kgo.Offset)
	ends.Each(func(o kadm.ListedOffset) { parts[o.Partition] = kgo.NewOffset().At(o.Offset) })
	if len(parts) == 0 {
		return nil, fmt.Errorf("kafka: commander: topic %s has no partitions", topic)
	}
	opts := append(append([]kgo.Opt(nil), c.cfg.ClientOptions...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: commander: %w", err)
	}
	return cl, nil
}

func (c *Commander) deliver(res wire.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.waiters[res.CommandID] {
		ch <- res // buffered, one result per waiter
	}
	delete(c.waiters, res.CommandID)
	if _, ok := c.recent[res.CommandID]; !ok {
		if old := c.order[c.next]; old != uuid.Nil {
			delete(c.recent, old)
		}
		c.order[c.next] = res.CommandID
		c.next = (c.next + 1) % len(c.order)
	}
	c.recent[res.CommandID] = res
}

func (c *Commander) awaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return c.readyErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Send produces cmd to the commands topic, keyed by its entity id, and returns
// once the broker has acknowledged it. cmd must pass wire.DecodeCommand's
// checks.
func (c *Commander) Send(ctx context.Context, cmd wire.Command) error {
	if err := c.awaitReady(ctx); err != nil {
		return err
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("kafka: commander: %w", err)
	}
	if _, err := wire.DecodeCommand(b, 0); err != nil {
		return err
	}
	rec := &kgo.Record{Topic: c.cfg.Topics.Commands(), Key: []byte(cmd.EntityID.String()), Value: b}
	if err := c.producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("kafka: commander: produce command %s: %w", cmd.CommandID, err)
	}
	return nil
}

// Wait returns the result of the command commandID: one seen since Run started
// (and still among the recent ones), or the next one to arrive, or ctx's error.
func (c *Commander) Wait(ctx context.Context, commandID uuid.UUID) (wire.Result, error) {
	if err := c.awaitReady(ctx); err != nil {
		return wire.Result{}, err
	}
	ch, cancel := c.register(commandID)
	defer cancel()
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		return wire.Result{}, ctx.Err()
	}
}

// register returns a channel that receives the result of commandID (at once if
// it is among the recent ones) and a function that unregisters it.
func (c *Commander) register(commandID uuid.UUID) (<-chan wire.Result, func()) {
	ch := make(chan wire.Result, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if res, ok := c.recent[commandID]; ok {
		ch <- res
		return ch, func() {}
	}
	c.waiters[commandID] = append(c.waiters[commandID], ch)
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		ws := c.waiters[commandID]
		for i, w := range ws {
			if w == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(c.waiters, commandID)
		} else {
			c.waiters[commandID] = ws
		}
	}
}

// Do sends cmd and waits for its result.
func (c *Commander) Do(ctx context.Context, cmd wire.Command) (wire.Result, error) {
	if err := c.awaitReady(ctx); err != nil {
		return wire.Result{}, err
	}
	ch, cancel := c.register(cmd.CommandID)
	defer cancel()
	if err := c.Send(ctx, cmd); err != nil {
		return wire.Result{}, err
	}
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		return wire.Result{}, fmt.Errorf("kafka: commander: waiting for the result of %s: %w", cmd.CommandID, ctx.Err())
	}
}
