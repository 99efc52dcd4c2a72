package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/broker"
)

// A record produced before a restart is there after it.
func TestBrokerPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	c.Close()

	c, err = broker.Start(broker.Config{Addr: addr, DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err = kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "kept" {
		t.Fatalf("after restart: %v", recs)
	}
}

func TestBrokerPortInUse(t *testing.T) {
	c, err := broker.Start(broker.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = broker.Start(broker.Config{Addr: c.ListenAddrs()[0]})
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "--broker-addr") {
		t.Fatalf("got %v", err)
	}
}
