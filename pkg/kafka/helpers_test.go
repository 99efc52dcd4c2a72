package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

var topics = wire.Topics{Prefix: "eventlog"}

// testLogger logs warnings and errors to stderr when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// newCluster starts a one-broker kfake cluster with the eventlog topics of the
// given entities, each with partitions partitions.
func newCluster(t testing.TB, partitions int32, entities ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, kafka.TopicNames(topics, entities...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newClient(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.WithLogger(kafka.NewLogger(testLogger(t)))}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newRelayClient(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	return newClient(t, c, append(kafka.RelayClientOptions(), opts...)...)
}

// consume reads the topics from the start (read_committed) until it has n
// records or timeout passes, and then for settle more to catch extra ones.
func consume(t testing.TB, c *kfake.Cluster, n int, timeout, settle time.Duration, topics ...string) []*kgo.Record {
	t.Helper()
	cl := newClient(t, c,
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(50*time.Millisecond),
	)
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(timeout)
	for {
		if len(out) >= n {
			if settle <= 0 {
				break
			}
			deadline, settle = time.Now().Add(settle), 0
		}
		if time.Now().After(deadline) {
			break
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		fs := cl.PollFetches(ctx)
		cancel()
		out = append(out, fs.Records()...)
	}
	return out
}

// exampleItems returns n items over seqs sequences of entity, positions in order.
func exampleItems(entity string, seqs, n int) []store.SequencedItem {
	ids := make([]uuid.UUID, seqs)
	for i := range ids {
		ids[i] = uuid.New()
	}
	items := make([]store.SequencedItem, n)
	pos := make([]int64, seqs)
	for i := range items {
		s := i % seqs
		items[i] = store.SequencedItem{
			SequenceID: ids[s],
			Position:   pos[s],
			Topic:      entity + ".AttributeChanged",
			State:      fmt.Appendf(nil, `{"n":%d,"foo":"bar"}`, i),
			Codec:      events.CodecJSON,
		}
		pos[s]++
	}
	return items
}

func insert(t testing.TB, rec *memory.Recorder, items []store.SequencedItem) {
	t.Helper()
	// Many small transactions, as a writer would commit them.
	const per = 100
	for len(items) > 0 {
		n := min(per, len(items))
		if _, err := rec.InsertEvents(context.Background(), items[:n]); err != nil {
			t.Fatal(err)
		}
		items = items[n:]
	}
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}

// runRelay runs r until the test ends; the returned stop cancels it and waits.
func runRelay(t testing.TB, r *kafka.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("relay did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func checkpoint(t testing.TB, rec *memory.Recorder, name string) int64 {
	t.Helper()
	p, err := rec.Tracking(context.Background(), name, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func admin(t testing.TB, c *kfake.Cluster) *kadm.Client {
	return kadm.NewClient(newClient(t, c))
}
