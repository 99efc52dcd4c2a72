package kafka

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Compression codecs of the batches eventlog's producers send, as named by
// Kafka's compression.type.
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLz4    = "lz4"
	CompressionZstd   = "zstd"
)

// DefaultCompression is the codec of eventlog's producers unless told
// otherwise: none, which every Kafka client reads with no plugin (kafkajs,
// for one, reads only gzip without one, and franz-go's own default, snappy,
// makes a kafkajs consumer fail with "Snappy compression not implemented").
// It is also the default of the Java client, librdkafka and kafkajs.
const DefaultCompression = CompressionNone

// compressionNames are the codecs ProducerCompression takes.
var compressionNames = []string{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLz4, CompressionZstd}

// ErrCompression is the error of ProducerCompression for a codec it does not
// know.
var ErrCompression = errors.New("kafka: unknown compression codec")

// CompressionNames returns the codecs ProducerCompression takes, in the order
// a help text lists them.
func CompressionNames() []string { return append([]string(nil), compressionNames...) }

// ProducerCompression returns the client option that compresses produced
// batches with codec name: none, gzip, snappy, lz4 or zstd (case-insensitive;
// "" is DefaultCompression). With zstd the client falls back to no
// compression for a broker older than Kafka 2.1, which cannot store zstd.
// Whatever the codec, franz-go sends a batch uncompressed when compressing
// does not make it smaller.
//
// The option sets the client's compressor (kgo.WithCompressor), so it wins
// over franz-go's default (snappy, then none) and over any
// kgo.ProducerBatchCompression, before or after it; of two
// ProducerCompression options the last wins. Unlike a
// kgo.ProducerBatchCompression option, whose codec list franz-go rewrites
// when it builds a client, one option may be shared by clients built at the
// same time.
//
// An unknown name returns an error wrapping ErrCompression that lists the
// codecs taken.
func ProducerCompression(name string) (kgo.Opt, error) {
	var c []kgo.CompressionCodec
	switch strings.ToLower(name) {
	case "":
		return ProducerCompression(DefaultCompression)
	case CompressionNone:
		return kgo.WithCompressor(noCompression{}), nil
	case CompressionGzip:
		c = []kgo.CompressionCodec{kgo.GzipCompression()}
	case CompressionSnappy:
		c = []kgo.CompressionCodec{kgo.SnappyCompression()}
	case CompressionLz4:
		c = []kgo.CompressionCodec{kgo.Lz4Compression()}
	case CompressionZstd:
		c = []kgo.CompressionCodec{kgo.ZstdCompression(), kgo.NoCompression()}
	default:
		return nil, fmt.Errorf("%w %q: choose %s", ErrCompression, name, strings.Join(compressionNames, ", "))
	}
	comp, err := kgo.DefaultCompressor(c...)
	if err != nil {
		return nil, fmt.Errorf("kafka: compression %s: %w", name, err)
	}
	return kgo.WithCompressor(comp), nil
}

// noCompression is a compressor that compresses nothing: a nil result makes
// the client send the batch as it is.
type noCompression struct{}

func (noCompression) Compress(*bytes.Buffer, []byte, ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	return nil, kgo.CodecNone
}

// DefaultProducerCompression returns the option of DefaultCompression as a
// kgo.ProducerBatchCompression, for a component that builds its own
// producer client: put it before the options it was given, so that any
// compression option among them (ProducerCompression, or
// kgo.ProducerBatchCompression) still chooses another codec. Each call returns
// a new option; give each client its own.
func DefaultProducerCompression() kgo.Opt {
	return kgo.ProducerBatchCompression(kgo.NoCompression())
}
