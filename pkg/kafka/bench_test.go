package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// BenchmarkRelay measures the relay from the memory recorder to an in-process
// kfake broker: b.N events of 1,000 entities, ~100-byte JSON states, stored
// beforehand; the clock runs from Run until the checkpoint covers them all.
//
//	go test -run '^$' -bench Relay -benchtime 200000x ./pkg/kafka/
func BenchmarkRelay(b *testing.B) {
	c := newCluster(b, 6, "example")
	rec := memory.New()
	items := exampleItems("example", 1000, b.N)
	for i := 0; i < len(items); i += 1000 {
		if _, err := rec.InsertEvents(context.Background(), items[i:min(i+1000, len(items))]); err != nil {
			b.Fatal(err)
		}
	}
	r := newRelay(b, newRelayClient(b, c), rec, kafka.RelayConfig{})
	b.ResetTimer()
	start := time.Now()
	stop := runRelay(b, r)
	for checkpoint(b, rec, "relay") < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkRelayLatency measures one event at a time: from its commit until
// the relay has checkpointed it (so the broker acknowledged it).
//
//	go test -run '^$' -bench RelayLatency -benchtime 500x ./pkg/kafka/
func BenchmarkRelayLatency(b *testing.B) {
	c := newCluster(b, 6, "example")
	rec := memory.New()
	r := newRelay(b, newRelayClient(b, c), rec, kafka.RelayConfig{})
	runRelay(b, r)
	items := exampleItems("example", 100, b.N)
	b.ResetTimer()
	for i := range items {
		if _, err := rec.InsertEvents(context.Background(), items[i:i+1]); err != nil {
			b.Fatal(err)
		}
		for checkpoint(b, rec, "relay") < int64(i+1) {
			time.Sleep(50 * time.Microsecond)
		}
	}
}
