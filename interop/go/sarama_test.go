// Package interop_test plays eventlog's seed scenario with sarama, a Go
// Kafka client other than franz-go, against `eventlog dev` (see package
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
// SyncProducer requires.
func TestSarama(t *testing.T) {
	d := dev.Get(t)
	plan := interop.NewPlan("sarama", d.Broker, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cfg := sarama.NewConfig()
	cfg.ClientID = "eventlog-interop-sarama"
	cfg.Producer.Return.Successes = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest

	group, err := sarama.NewConsumerGroup(plan.Brokers, plan.Group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &handler{plan: plan, mine: map[string]bool{}, results: map[string]bool{}, events: map[string]int{}, done: make(chan struct{})}
	for _, id := range plan.Entities {
		h.mine[id] = true
	}
	consumed := make(chan error, 1)
	cctx, stopConsuming := context.WithCancel(ctx)
	go func() {
		for cctx.Err() == nil {
			if err := group.Consume(cctx, plan.ReadTopics, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				consumed <- err
				return
			}
		}
		consumed <- nil
	}()

	prod, err := sarama.NewSyncProducer(plan.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*sarama.ProducerMessage
	for _, c := range plan.Commands {
		v, err := json.Marshal(c.Value)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, &sarama.ProducerMessage{Topic: plan.CommandsTopic, Key: sarama.StringEncoder(c.Key), Value: sarama.ByteEncoder(v)})
	}
	if err := prod.SendMessages(msgs); err != nil {
		t.Fatalf("produce the commands: %v", err)
	}
	if err := prod.Close(); err != nil {
		t.Fatal(err)
	}

	select {
	case <-h.done:
	case err := <-consumed:
		t.Fatalf("consumer group: %v", err)
	case <-ctx.Done():
		h.mu.Lock()
		t.Fatalf("%v: %d results, events %v", ctx.Err(), len(h.results), h.events)
	}
	stopConsuming()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	if err := group.Close(); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t.Logf("sarama: %d records", len(h.recs))
	if errs := plan.Check(h.recs); len(errs) > 0 {
		t.Errorf("%d problems in what sarama read:%s", len(errs), interop.Errors(errs))
	}
}

// handler is the consumer group's handler: it keeps the records of the
// plan's entities, marks every record consumed, and closes done once it has
// them all.
type handler struct {
	plan *interop.Plan
	mine map[string]bool

	mu      sync.Mutex
	recs    []interop.Record
	results map[string]bool
	events  map[string]int
	done    chan struct{}
	closed  bool
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
	if !h.mine[string(m.Key)] {
		return
	}
	r := interop.Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: string(m.Value)}
	for _, hd := range m.Headers {
		r.Headers = append(r.Headers, []string{string(hd.Key), string(hd.Value)})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	switch r.Topic {
	case h.plan.ResultsTopic:
		var res struct {
			CommandID string `json:"command_id"`
		}
		_ = json.Unmarshal(m.Value, &res)
		h.results[res.CommandID] = true
	case h.plan.EventsTopic:
		h.events[r.Key]++
	}
	for _, id := range h.plan.WantResults {
		if !h.results[id] {
			return
		}
	}
	for _, id := range h.plan.Entities {
		if h.events[id] < h.plan.WantEvents[id] {
			return
		}
	}
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}
