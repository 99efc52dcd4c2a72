package command

import (
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Defaults of WriterConfig.
const (
	DefaultTrackingName       = "eventlog-writer"
	DefaultCacheSize          = 10000
	DefaultMaxConflictRetries = 5
	DefaultReadConcurrency    = 8
)

// Log keys.
const (
	logKeyTopic     = "topic"
	logKeyPartition = "partition"
	logKeyOffset    = "offset"
	logKeyReason    = "reason"
	logKeySequence  = "sequence_id"
	logKeyAttempt   = "attempt"
	logKeyError     = "error"
	logKeyCommand   = "command_id"
	logKeyStack     = "stack"
)

// WriterConfig configures a Writer. The zero value is usable: each field
// documents its default.
type WriterConfig struct {
	// TrackingName names the tracking records of consumed command offsets. It
	// overrides DefaultTrackingName. Every writer consuming the same command
	// topic must use the same name: it is what makes a second writer skip, or
	// fail on, offsets the first one applied.
	TrackingName string
	// MaxCommandSize bounds an encoded command envelope; a larger record is
	// dead-lettered. It overrides wire.MaxCommandSize.
	MaxCommandSize int
	// Admit, if set, is asked of every decoded command before it is decided:
	// an error dead-letters the record, with the error as its reason (a
	// sharded writer refuses a command that came on another shard's
	// partition).
	Admit func(r *wire.Record, c *wire.Command) error
	// CacheSize is how many aggregates the writer keeps in memory between
	// batches. It overrides DefaultCacheSize; a negative value caches nothing.
	// A cached aggregate is used without a read; if another writer appended
	// to it meanwhile, the commit fails and the batch is decided again from
	// the store (see the package doc).
	CacheSize int
	// Snapshots, with SnapshotEvery > 0, lets loads of uncached aggregates start
	// from a snapshot, and stores one (of the entity type's snapshot topic,
	// "<entity>.Snapshot" unless registered WithSnapshotTopic) whenever a load
	// replayed at least SnapshotEvery events. The default is no snapshots.
	Snapshots     store.SnapshotRecorder
	SnapshotEvery int64
	// MaxConflictRetries bounds how often a batch is tried again after its
	// transaction failed with store.ErrConflict (another writer appended to one
	// of its sequences). It overrides DefaultMaxConflictRetries; a negative value
	// retries only once after the batch's first conflict, which may be how
	// it finds a duplicate (see the package doc): that retry reads every
	// result.
	MaxConflictRetries int
	// ReadConcurrency is how many store reads (aggregate loads, result look-ups)
	// a batch runs at once before it processes its commands in order, where
	// it reads one sequence at a time: from a recorder that is no
	// store.SequencesReader, and for loads from snapshots. It overrides
	// DefaultReadConcurrency; 1 reads one at a time.
	ReadConcurrency int
	// Now is the clock that stamps the events of records without a timestamp.
	// It overrides time.Now.
	Now func() time.Time
	// Logger receives a warning for each dead letter and a note for each retry.
	// It overrides the default of logging nothing.
	Logger *slog.Logger
	// OnBatch, if set, is called at the end of every HandleBatch call, on the
	// calling goroutine, for metrics (so concurrently if HandleBatch runs
	// concurrently). It must not block.
	OnBatch func(BatchStats)
	// TracerProvider, if set, traces the writer's batches (see package
	// tracing): a span for each batch, with one for deciding and one for
	// committing each attempt, and one for each record, which continues the
	// trace of the record's traceparent header, or starts one, and whose
	// trace context the record's events and result carry to the relay. The
	// default, nil, starts no span; the items then carry the trace context
	// their records came with, unchanged.
	TracerProvider trace.TracerProvider
}

func (c *WriterConfig) setDefaults() {
	if c.TrackingName == "" {
		c.TrackingName = DefaultTrackingName
	}
	if c.MaxCommandSize <= 0 {
		c.MaxCommandSize = wire.MaxCommandSize
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxConflictRetries == 0 {
		c.MaxConflictRetries = DefaultMaxConflictRetries
	}
	if c.ReadConcurrency <= 0 {
		c.ReadConcurrency = DefaultReadConcurrency
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration that cannot work.
func (c WriterConfig) Validate() error {
	if c.SnapshotEvery < 0 {
		return errors.New("command: SnapshotEvery must not be negative")
	}
	if c.SnapshotEvery > 0 && c.Snapshots == nil {
		return errors.New("command: SnapshotEvery is set but Snapshots is nil")
	}
	return nil
}
