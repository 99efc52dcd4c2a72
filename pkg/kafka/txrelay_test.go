package kafka_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// txConfig is a transactional relay's configuration for the tests: it creates
// its checkpoint topic with an admin client of c.
func txConfig(t testing.TB, c *kfake.Cluster, cfg kafka.RelayConfig) kafka.RelayConfig {
	cfg.Transactional = true
	if cfg.Admin == nil {
		cfg.Admin = admin(t, c)
	}
	if cfg.TopicReplicationFactor == 0 {
		cfg.TopicReplicationFactor = 1
	}
	return cfg
}

// checkExactlyOnce checks that recs, read read_committed from the events
// topic, hold every notification 1..n exactly once and, per key, in
// position order.
func checkExactlyOnce(t testing.TB, recs []*kgo.Record, n int64) {
	t.Helper()
	byID := byNotificationID(t, recs)
	var dups, lost int
	for id := int64(1); id <= n; id++ {
		switch k := len(byID[id]); {
		case k == 0:
			lost++
		case k > 1:
			dups += k - 1
		}
	}
	if dups > 0 || lost > 0 || int64(len(recs)) != n {
		t.Fatalf("%d records for %d notifications: %d duplicates, %d lost", len(recs), n, dups, lost)
	}
	checkKeyOrder(t, recs)
}

// storedCheckpoint returns the last checkpoint committed to the checkpoint
// topic for the key, read read_committed.
func storedCheckpoint(t testing.TB, c *kfake.Cluster, topic string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range consume(t, c, 1<<30, time.Second, 0, topic) {
		n, err := strconv.ParseInt(string(r.Value), 10, 64)
		if err != nil {
			t.Fatalf("checkpoint record %q: %v", r.Value, err)
		}
		out[string(r.Key)] = n
	}
	return out
}

// TestTxRelayPublishesOnceAndResumesFromKafka: a transactional relay
// publishes every item once, commits its checkpoint to the checkpoint topic,
// and a relay started after it resumes from there, not from the store's copy.
func TestTxRelayPublishesOnceAndResumesFromKafka(t *testing.T) {
	c := newCluster(t, 3, "example")
	rec := memory.New()
	items := exampleItems("example", 20, 3000)
	insert(t, rec, items[:1000])

	r1 := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, kafka.RelayConfig{PageSize: 100}))
	stop := runRelay(t, r1)
	waitFor(t, 10*time.Second, "first relay publishes 1000", func() bool { return r1.Stats().LastPublishedID >= 1000 })
	stop()
	s1 := r1.Stats()
	if s1.Transactions == 0 || s1.Published != 1000 || s1.Aborted != 0 {
		t.Fatalf("first relay: %+v", s1)
	}
	if cp := checkpoint(t, rec, "relay"); cp != 1000 {
		t.Errorf("store's copy of the checkpoint after a clean stop: %d, want 1000", cp)
	}
	cps := storedCheckpoint(t, c, "eventlog.relay-checkpoints")
	if len(cps) != 1 {
		t.Fatalf("checkpoint topic holds keys %v, want one", cps)
	}
	for k, v := range cps {
		if v != 1000 {
			t.Fatalf("checkpoint %s = %d, want 1000", k, v)
		}
	}

	// The store's copy is only a hint: moved back, it changes nothing.
	insert(t, rec, items[1000:])
	r2 := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, kafka.RelayConfig{PageSize: 100, Name: "relay"}))
	runRelay(t, r2)
	waitFor(t, 10*time.Second, "second relay publishes the rest", func() bool { return r2.Stats().LastPublishedID >= 3000 })
	if s := r2.Stats(); s.Published != 2000 {
		t.Errorf("second relay published %d, want 2000 (%+v)", s.Published, s)
	}
	checkExactlyOnce(t, consume(t, c, 3000, 10*time.Second, 300*time.Millisecond, topics.Events("example")), 3000)
}

func TestTxRelayDefaultTransactionalIDFromStore(t *testing.T) {
	c := newCluster(t, 1, "example")
	rec := memory.New()
	insert(t, rec, exampleItems("example", 2, 10))
	r := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, kafka.RelayConfig{}))
	stop := runRelay(t, r)
	waitFor(t, 10*time.Second, "relay publishes", func() bool { return r.Stats().LastPublishedID >= 10 })
	stop()
	n, err := rec.Tracking(context.Background(), "relay", kafka.StoreIDTrackingTopic, 0)
	if err != nil || n <= 0 {
		t.Fatalf("store id %d, %v", n, err)
	}
	want := fmt.Sprintf("eventlog.relay.relay.%016x", n)
	if cps := storedCheckpoint(t, c, "eventlog.relay-checkpoints"); cps[want] != 10 {
		t.Fatalf("checkpoints %v, want %s = 10", cps, want)
	}
}
