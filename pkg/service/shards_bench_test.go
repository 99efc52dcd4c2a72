package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchmarkSharded measures commands/s through the writer, from producing
// them to their last result, on one database and on two shards (two
// databases of the test server), over kfake with 4 partitions.
func BenchmarkSharded(b *testing.B) {
	for _, n := range []int{1, 2} {
		name := "1db"
		if n > 1 {
			name = fmt.Sprintf("%dshards", n)
		}
		b.Run(name, func(b *testing.B) { benchSharded(b, n) })
	}
}

func benchSharded(b *testing.B, n int) {
	k := startBroker(b)
	backend, err := service.ShardedBackend(pgShards(b, n))
	if err != nil {
		b.Fatal(err)
	}
	topics := wire.Topics{Prefix: "eventlog"}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := service.NewWriter(ctx, service.WriterConfig{
		Backend: backend, Kafka: service.Kafka{ClientOptions: k, Topics: topics, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, Log: quietLog(),
	})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	prod, err := kgo.NewClient(append(k, kgo.ProducerLinger(time.Millisecond))...)
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	results, err := kgo.NewClient(append(k, kgo.ConsumeTopics(topics.Results()), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))...)
	if err != nil {
		b.Fatal(err)
	}
	defer results.Close()
	// Warm up: one command, so that topics, groups and relays are ready.
	send := func(count int) {
		for range count {
			id := uuid.New()
			v, _ := json.Marshal(wire.Command{CommandID: uuid.New(), Type: "create", Entity: "example", EntityID: id, Data: json.RawMessage(`{"foo":"bar"}`)})
			prod.Produce(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(id.String()), Value: v}, nil)
		}
	}
	await := func(count int) {
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer wcancel()
		got := 0
		for got < count && wctx.Err() == nil {
			got += results.PollFetches(wctx).NumRecords()
		}
		if got < count {
			b.Fatalf("%d results of %d", got, count)
		}
	}
	send(1)
	await(1)
	b.ResetTimer()
	start := time.Now()
	send(b.N)
	await(b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
}
