package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/kafka"
)

// batchCodecs records the compression codec of every batch a client wrote.
type batchCodecs struct {
	mu     sync.Mutex
	codecs map[uint8]int
}

func (h *batchCodecs) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.codecs == nil {
		h.codecs = map[uint8]int{}
	}
	h.codecs[m.CompressionType]++
}

// only returns the one codec of the batches written. franz-go calls the hook
// from a goroutine of its own after the promises, so it waits for a first
// batch.
func (h *batchCodecs) only() (uint8, error) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		h.mu.Lock()
		n := len(h.codecs)
		h.mu.Unlock()
		if n > 0 {
			break
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.codecs) != 1 {
		return 0, fmt.Errorf("batches by codec: %v, want one codec", h.codecs)
	}
	for c := range h.codecs {
		return c, nil
	}
	return 0, nil
}

// Each codec name compresses the batches a client produces with that codec
// (the attribute Kafka consumers read to decompress), whatever franz-go's
// compression options say; the default is no compression, where franz-go's
// own default is snappy (the negative control: the same records without an
// option), and yields to a compression option after it.
func TestProducerCompression(t *testing.T) {
	c := newCluster(t, 1, "example")
	topic := topics.Events("example")
	cases := []struct {
		name string
		opts func(t *testing.T) []kgo.Opt
		want uint8 // Kafka's codec number: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
	}{
		{"franz-go default", func(*testing.T) []kgo.Opt { return nil }, 2},
		{"eventlog default", func(*testing.T) []kgo.Opt { return []kgo.Opt{kafka.DefaultProducerCompression()} }, 0},
		{"empty name", func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "")} }, 0},
		{kafka.CompressionNone, func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "none")} }, 0},
		{kafka.CompressionGzip, func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "gzip")} }, 1},
		{kafka.CompressionSnappy, func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "snappy")} }, 2},
		{kafka.CompressionLz4, func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "LZ4")} }, 3},
		{kafka.CompressionZstd, func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "zstd")} }, 4},
		{"gzip after the default", func(t *testing.T) []kgo.Opt {
			return []kgo.Opt{kafka.DefaultProducerCompression(), compression(t, "gzip")}
		}, 1},
		{"kgo gzip after the default", func(t *testing.T) []kgo.Opt {
			return []kgo.Opt{kafka.DefaultProducerCompression(), kgo.ProducerBatchCompression(kgo.GzipCompression())}
		}, 1},
		{"lz4 before kgo snappy", func(t *testing.T) []kgo.Opt {
			return []kgo.Opt{compression(t, "lz4"), kgo.ProducerBatchCompression(kgo.SnappyCompression())}
		}, 3},
		{"none after zstd", func(t *testing.T) []kgo.Opt { return []kgo.Opt{compression(t, "zstd"), compression(t, "none")} }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h batchCodecs
			opts := append(kafka.RelayClientOptions(), tc.opts(t)...)
			cl := newClient(t, c, append(opts, kgo.WithHooks(&h))...)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			// One batch of records that compress well, as a relay page of
			// JSON events does.
			value := []byte(`{"name":"foo","value":"` + strings.Repeat("bar", 30) + `"}`)
			var recs []*kgo.Record
			for range 50 {
				recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("k"), Value: value})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			got, err := h.only()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("batches compressed with codec %d, want %d", got, tc.want)
			}
		})
	}
	// Whatever the codec, a consumer reads the records back unchanged.
	recs := consume(t, c, len(cases)*50, 20*time.Second, 0, topic)
	if len(recs) != len(cases)*50 {
		t.Fatalf("read %d records back, want %d", len(recs), len(cases)*50)
	}
	for _, r := range recs {
		if !strings.HasPrefix(string(r.Value), `{"name":"foo","value":"barbar`) {
			t.Fatalf("record read back as %q", r.Value)
		}
	}
}

func compression(t testing.TB, name string) kgo.Opt {
	t.Helper()
	o, err := kafka.ProducerCompression(name)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// An unknown codec is an error that says which ones there are.
func TestProducerCompressionUnknown(t *testing.T) {
	for _, name := range []string{"brotli", "snapy", "gzip ", "none,gzip"} {
		o, err := kafka.ProducerCompression(name)
		if o != nil || !errors.Is(err, kafka.ErrCompression) {
			t.Errorf("ProducerCompression(%q) = %v, %v; want ErrCompression", name, o, err)
			continue
		}
		for _, want := range append(kafka.CompressionNames(), fmt.Sprintf("%q", name)) {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ProducerCompression(%q): %q does not name %s", name, err, want)
			}
		}
	}
}

// One option serves clients built at the same time (franz-go rewrites the
// codec list of a kgo.ProducerBatchCompression option as it builds a client:
// shared, that is a data race the race detector reports).
func TestProducerCompressionShared(t *testing.T) {
	c := newCluster(t, 1, "example")
	for _, name := range kafka.CompressionNames() {
		opt := compression(t, name)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), opt)
				if err != nil {
					t.Error(err)
					return
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics.Events("example"), Value: []byte(strings.Repeat("x", 200))}).FirstErr(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
}
