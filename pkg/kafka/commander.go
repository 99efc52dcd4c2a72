package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// CommanderFetchMaxWait is how long the broker may hold the Commander's fetch
// of results when it has none, unless CommanderConfig.ClientOptions set
// kgo.FetchMaxWait: franz-go's default is 5s.
const CommanderFetchMaxWait = 100 * time.Millisecond

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
	// Logger receives the Commander's logs. The default logs nothing.
	Logger *slog.Logger
}

func (c *CommanderConfig) setDefaults() {
	if c.Topics.Prefix == "" {
		c.Topics.Prefix = wire.DefaultPrefix
	}
	if c.RecentResults <= 0 {
		c.RecentResults = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the Commander cannot work with, as
// setDefaults leaves it.
func (c *CommanderConfig) Validate() error {
	cc := *c
	cc.setDefaults()
	return cc.Topics.Validate()
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
	recent  map[uuid.UUID][]byte // record values, decoded when waited for
	order   []uuid.UUID          // ring of recent ids, oldest at next
	next    int
}

// NewCommander returns a Commander that produces commands with producer (which
// it does not close). It does no I/O.
func NewCommander(producer *kgo.Client, cfg CommanderConfig) (*Commander, error) {
	if producer == nil {
		return nil, errors.New("kafka: commander: nil producer")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ClientOptions = append([]kgo.Opt(nil), cfg.ClientOptions...)
	return &Commander{
		producer: producer,
		cfg:      cfg,
		log:      cfg.Logger,
		ready:    make(chan struct{}),
		waiters:  make(map[uuid.UUID][]chan wire.Result),
		recent:   make(map[uuid.UUID][]byte),
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
			id, err := ResultCommandID(r.Value)
			if err != nil || id == uuid.Nil {
				c.log.Warn("commander skipped a record that is not a result", logKeyPartition, r.Partition, logKeyOffset, r.Offset)
				return
			}
			c.deliver(id, r)
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
	// A short fetch wait first, so that ClientOptions may override it: a
	// fetch that misses its wake-up then delays a result by at most that.
	opts := append([]kgo.Opt{kgo.FetchMaxWait(CommanderFetchMaxWait)}, c.cfg.ClientOptions...)
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: commander: %w", err)
	}
	return cl, nil
}

// deliver hands the result of command id in r to its waiters and keeps it
// among the recent ones. Only a result someone waits for is decoded.
func (c *Commander) deliver(id uuid.UUID, r *kgo.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ws := c.waiters[id]; len(ws) > 0 {
		res, err := wire.DecodeResult(r.Value)
		if err != nil {
			c.log.Warn("commander skipped a record that is not a result", logKeyPartition, r.Partition, logKeyOffset, r.Offset, logKeyErr, err)
			return
		}
		for _, ch := range ws {
			ch <- res // buffered, one result per waiter
		}
		delete(c.waiters, id)
	}
	if _, ok := c.recent[id]; !ok {
		if old := c.order[c.next]; old != uuid.Nil {
			delete(c.recent, old)
		}
		c.order[c.next] = id
		c.next = (c.next + 1) % len(c.order)
	}
	c.recent[id] = bytes.Clone(r.Value) // not pinning the fetch's buffer
}

// resultPrefix starts every result value the writer stores: wire.ResultItem
// encodes command_id first.
const resultPrefix = `{"command_id":"`

// ResultCommandID returns the command id of a value of the results topic
// without decoding the rest of it: from the leading command_id that
// wire.ResultItem writes, or else by decoding the JSON. It does not check
// that the rest is a valid result (wire.DecodeResult does).
func ResultCommandID(value []byte) (uuid.UUID, error) {
	const n = len(resultPrefix)
	if len(value) > n+36 && string(value[:n]) == resultPrefix && value[n+36] == '"' {
		if id, err := uuid.ParseBytes(value[n : n+36]); err == nil {
			return id, nil
		}
	}
	var r struct {
		CommandID uuid.UUID `json:"command_id"`
	}
	if err := json.Unmarshal(value, &r); err != nil {
		return uuid.Nil, fmt.Errorf("kafka: result: %w", err)
	}
	return r.CommandID, nil
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
// checks. If ctx carries an OpenTelemetry span context (a span, or a remote
// parent such as tracing.WithParent makes of an HTTP request's traceparent),
// the record carries it as its traceparent header, and the writer continues
// that trace.
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
	if tp := tracing.TraceParent(trace.SpanContextFromContext(ctx)); tp != "" {
		rec.Headers = []kgo.RecordHeader{{Key: wire.HeaderTraceParent, Value: []byte(tp)}}
	}
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
	if raw, ok := c.recent[commandID]; ok {
		if res, err := wire.DecodeResult(raw); err == nil {
			ch <- res
			return ch, func() {}
		}
		delete(c.recent, commandID) // not a result: wait for the next one
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
