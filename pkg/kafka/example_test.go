package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// The relay publishes what a writer committed to the store; a consumer reads
// it back with EventOf.
func ExampleRelay() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cluster, _ := kfake.NewCluster(kfake.NumBrokers(1))
	defer cluster.Close()
	quiet := slog.New(slog.DiscardHandler)

	// Topics: one partition each, so the output below has one order.
	topics := wire.Topics{Prefix: "eventlog"}
	admCl, _ := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	defer admCl.Close()
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(admCl), kafka.TopicNames(topics, "example"), 1, 1); err != nil {
		fmt.Println(err)
		return
	}

	// A writer commits three events of one entity.
	rec := memory.New()
	id := uuid.MustParse("00000000-0000-4000-8000-000000000001")
	_, _ = rec.InsertEvents(ctx, []store.SequencedItem{
		{SequenceID: id, Position: 0, Topic: "example.Created", State: []byte(`{"foo":"a"}`), Codec: "json"},
		{SequenceID: id, Position: 1, Topic: "example.AttributeChanged", State: []byte(`{"foo":"b"}`), Codec: "json"},
		{SequenceID: id, Position: 2, Topic: "example.Discarded", State: []byte(`{}`), Codec: "json"},
	})

	// The relay publishes them.
	producer, _ := kgo.NewClient(append(kafka.RelayClientOptions(), kgo.SeedBrokers(cluster.ListenAddrs()...))...)
	defer producer.Close()
	relay, err := kafka.NewRelay(producer, rec, kafka.RelayConfig{Topics: topics, Locker: kafka.NewLocalLock(), Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- relay.Run(rctx) }()
	for relay.Stats().Checkpoint < 3 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	stop()
	<-done

	// Anyone can read them back.
	consumer, _ := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.ConsumeTopics(topics.Events("example")), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer consumer.Close()
	for n := 0; n < 3 && ctx.Err() == nil; {
		consumer.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			n++
			ev, _ := kafka.EventOf(kafka.RecordOf(r))
			fmt.Println(r.Topic, string(r.Key) == id.String(), ev.Position, ev.Topic, ev.ID, string(r.Value))
		})
	}
	// Output:
	// eventlog.events.example true 0 example.Created 1 {"foo":"a"}
	// eventlog.events.example true 1 example.AttributeChanged 2 {"foo":"b"}
	// eventlog.events.example true 2 example.Discarded 3 {}
}
