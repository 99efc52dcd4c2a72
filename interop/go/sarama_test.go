// Package interop_test plays eventlog's seed scenario with sarama, a Go
// Kafka client other than franz-go, against `eventlog dev`, and reads every
// producer compression codec with it (see package
// github.com/eventlog/eventlog/internal/e2e/interop for the scenario and its
// checks).
package interop_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/eventlog/eventlog/internal/e2e/interop"
)

var dev interop.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	if err := dev.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// sarama with its default settings (the hash partitioner, FNV-1a; protocol
// version 2.8; read_uncommitted) but for Consumer.Offsets.Initial, so that a
// new group reads from the start, and Producer.Return.Successes, which its
// SyncProducer requires. It reads every codec.
func TestSarama(t *testing.T) {
	d := dev.Get(t)
	interop.Seed(t, d, "sarama", saramaRead)
	interop.Codecs(t, d, "sarama", saramaRead, map[string]bool{"none": true, "gzip": true, "snappy": true, "lz4": true, "zstd": true}, "")
}

// saramaRead is the interop.Reader of sarama: a SyncProducer for the
// commands, a ConsumerGroup for the rest.
func saramaRead(ctx context.Context, plan *interop.Plan) ([]interop.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(plan.TimeoutMs)*time.Millisecond)
	defer cancel()
	cfg := sarama.NewConfig()
	cfg.ClientID = "eventlog-interop-sarama"
	cfg.Producer.Return.Successes = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest

	group, err := sarama.NewConsumerGroup(plan.Brokers, plan.Group, cfg)
	if err != nil {
		return nil, err
	}
	defer group.Close()
	h := &handler{progress: plan.Progress(), done: make(chan struct{})}
	consumed := make(chan error, 1)
	cctx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	go func() {
		for cctx.Err() == nil {
			if err := group.Consume(cctx, plan.ReadTopics, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				consumed <- err
				return
			}
		}
		consumed <- nil
	}()

	if len(plan.Commands) > 0 {
		prod, err := sarama.NewSyncProducer(plan.Brokers, cfg)
		if err != nil {
			return nil, err
		}
		var msgs []*sarama.ProducerMessage
		for _, c := range plan.Commands {
			v, err := json.Marshal(c.Value)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, &sarama.ProducerMessage{Topic: plan.CommandsTopic, Key: sarama.StringEncoder(c.Key), Value: sarama.ByteEncoder(v)})
		}
		err = prod.SendMessages(msgs)
		if cerr := prod.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("produce the commands: %w", err)
		}
	}

	select {
	case <-h.done:
	case err := <-consumed:
		return nil, fmt.Errorf("consumer group: %v", err)
	case <-ctx.Done():
		h.mu.Lock()
		defer h.mu.Unlock()
		return nil, fmt.Errorf("%v: %s", ctx.Err(), h.progress)
	}
	stopConsuming()
	if err := <-consumed; err != nil {
		return nil, err
	}
	if err := group.Close(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.recs, nil
}

// handler is the consumer group's handler: it keeps the records of the
// plan's entities, marks every record consumed, and closes done once it has
// them all.
type handler struct {
	mu       sync.Mutex
	progress *interop.Progress
	recs     []interop.Record
	done     chan struct{}
	closed   bool
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case <-s.Context().Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.add(m)
			s.MarkMessage(m, "")
		}
	}
}

func (h *handler) add(m *sarama.ConsumerMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.progress.Mine(string(m.Key)) {
		return
	}
	r := interop.Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: string(m.Value)}
	for _, hd := range m.Headers {
		r.Headers = append(r.Headers, []string{string(hd.Key), string(hd.Value)})
	}
	h.recs = append(h.recs, r)
	h.progress.Add(r)
	if h.progress.Done() && !h.closed {
		h.closed = true
		close(h.done)
	}
}
