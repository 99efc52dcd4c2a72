package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/broker"
)

// zombieFencesLive runs the scenario FenceStaleProduces is about against the
// cluster at addr: producer a opens a transaction, b takes over its
// transactional id and commits a transaction, the fenced a produces again,
// and b, idle for longer than its transaction timeout, then commits another
// transaction. It returns the error of b's second transaction.
func zombieFencesLive(t *testing.T, addr string) (zombie, live error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mk := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID("relay"), kgo.TransactionTimeout(time.Second),
			kgo.RecordRetries(1), kgo.RequestRetries(1), kgo.AllowAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	txn := func(cl *kgo.Client, v string) error {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte(v)}).FirstErr(); err != nil {
			_ = cl.EndTransaction(ctx, kgo.TryAbort)
			return err
		}
		return cl.EndTransaction(ctx, kgo.TryCommit)
	}
	a := mk()
	if err := a.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := a.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("a1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	b := mk()
	if err := txn(b, "b1"); err != nil { // fences a
		t.Fatal(err)
	}
	zombie = a.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("a2")}).FirstErr()
	time.Sleep(2 * time.Second) // past b's transaction timeout, b idle
	return zombie, txn(b, "b2")
}

// A produce of a fenced producer must not make the producer that fenced it
// fail later. Plain kfake shows the difference from Kafka (the control);
// the embedded broker must not.
func TestFenceStaleProduces(t *testing.T) {
	t.Run("kfake", func(t *testing.T) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		zombie, live := zombieFencesLive(t, c.ListenAddrs()[0])
		if !errors.Is(zombie, kerr.InvalidProducerEpoch) {
			t.Errorf("zombie produce: %v, want INVALID_PRODUCER_EPOCH", zombie)
		}
		if live == nil {
			t.Skip("kfake no longer lets a fenced producer's produce fail the live one: FenceStaleProduces may go")
		}
		t.Logf("plain kfake: the live producer's next transaction fails: %v", live)
	})
	t.Run("embedded", func(t *testing.T) {
		c, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		zombie, live := zombieFencesLive(t, c.ListenAddrs()[0])
		if !errors.Is(zombie, kerr.InvalidProducerEpoch) {
			t.Errorf("zombie produce: %v, want INVALID_PRODUCER_EPOCH", zombie)
		}
		if live != nil {
			t.Errorf("the live producer's transaction after a zombie's produce: %v", live)
		}
	})
}
