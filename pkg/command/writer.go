package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A Writer turns command records into events, results and dead letters, and
// stores each batch of them in one transaction with the tracking of the records'
// offsets. It is safe for concurrent use: batches of different partitions may be
// handled at once (they retry if they touch the same entity).
type Writer struct {
	rec    store.ProcessRecorder
	seqs   store.SequencesReader // rec, if it reads many sequences at once
	mapper *events.Mapper
	es     *store.EventStore
	cfg    WriterConfig
	kinds  map[string]*writerKind
	cache  *aggCache
	log    *slog.Logger
	stats  counters
	tracer trace.Tracer // nil: no tracing
	// readResults is set when a batch that had to read its results (see
	// prefetch) failed: the next batch reads them from its first attempt.
	readResults atomic.Bool

	trackMu sync.Mutex
	tracked map[partitionKey]int64 // stored tracking of partitions, as this writer last read or committed it

	// Calls in progress (HandleBatch, Tracking) run under contexts that end
	// with life, which Close cancels, and count in calls.
	lifeMu sync.Mutex // guards closed and calls.Add, so nothing starts once Close waits
	closed bool
	life   context.Context
	stop   context.CancelFunc
	calls  sync.WaitGroup
}

// ErrClosed reports a call to a closed Writer.
var ErrClosed = errors.New("command: writer is closed")

type writerKind struct {
	*kind
	repo
}

// NewWriter returns a writer that stores into rec the commands of the entity
// types registered in reg, encoding events with mapper (which must use
// reg.Events()). Entity types registered later are not seen.
func NewWriter(rec store.ProcessRecorder, reg *Registry, mapper *events.Mapper, cfg WriterConfig) (*Writer, error) {
	switch {
	case rec == nil:
		return nil, errors.New("command: recorder is nil")
	case reg == nil:
		return nil, errors.New("command: registry is nil")
	case mapper == nil:
		return nil, errors.New("command: mapper is nil")
	case mapper.Registry() != reg.Events():
		return nil, errors.New("command: the mapper does not use the command registry's event registry")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kinds := reg.snapshot()
	if len(kinds) == 0 {
		return nil, errors.New("command: no entity types are registered")
	}
	seqs, _ := rec.(store.SequencesReader)
	w := &Writer{
		rec:     rec,
		seqs:    seqs,
		mapper:  mapper,
		es:      store.NewEventStore(mapper, rec),
		cfg:     cfg,
		kinds:   make(map[string]*writerKind, len(kinds)),
		cache:   newAggCache(cfg.CacheSize),
		log:     cfg.Logger,
		tracked: make(map[partitionKey]int64),
		tracer:  tracing.Tracer(cfg.TracerProvider),
	}
	w.life, w.stop = context.WithCancel(context.Background())
	for name, k := range kinds {
		rc := store.RepositoryConfig{}
		if cfg.SnapshotEvery > 0 {
			rc.Snapshots, rc.SnapshotEvery = cfg.Snapshots, cfg.SnapshotEvery
			rc.SnapshotTopic = k.snapshotTopic
		}
		r, err := k.newRepo(w.es, rc)
		if err != nil {
			return nil, fmt.Errorf("command: entity type %q: %w", name, err)
		}
		w.kinds[name] = &writerKind{kind: k, repo: r}
	}
	return w, nil
}

// TrackingName returns the name under which the writer tracks consumed offsets.
func (w *Writer) TrackingName() string { return w.cfg.TrackingName }

// Close stops the writer: a HandleBatch or Tracking call in progress is
// cancelled (a transaction running is rolled back, and its records are
// consumed again from the tracking, like any batch not committed), and Close
// waits for it, so that the writer touches the store no more once Close
// returns and the store can be closed. Later calls fail with ErrClosed.
// Close may be called more than once.
func (w *Writer) Close() error {
	w.lifeMu.Lock()
	w.closed = true
	w.lifeMu.Unlock()
	w.stop()
	w.calls.Wait()
	return nil
}

// begin registers a call: it returns ctx, ended also by Close, and done,
// which the call defers. It fails with ErrClosed once Close was called.
func (w *Writer) begin(ctx context.Context) (context.Context, func(), error) {
	w.lifeMu.Lock()
	defer w.lifeMu.Unlock()
	if w.closed {
		return nil, nil, ErrClosed
	}
	w.calls.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(w.life, cancel)
	return ctx, func() {
		stop()
		cancel()
		w.calls.Done()
	}, nil
}

// closing wraps err, of a call that Close cancelled, in ErrClosed.
func (w *Writer) closing(err error) error {
	if err != nil && w.life.Err() != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Stats returns the writer's totals so far.
func (w *Writer) Stats() Stats { return w.stats.snapshot() }

// HandleBatch applies a batch of command records, in order, and commits all its
// outcomes in one transaction together with the tracking of the greatest offset
// of each (topic, partition) in the batch:
//
//   - a record that is not a command envelope becomes a dead letter;
//   - a command becomes its entity's events (if accepted) and its result;
//   - a command id already answered gets its original result published again.
//
// Records at or below the stored tracking of their partition were applied
// already and are skipped. One invalid, rejected or conflicting command never
// fails the others. If another writer appended to one of the batch's entities
// meanwhile, the batch is tried again with fresh state. HandleBatch returns an
// error only if nothing was stored: a store error (try the same batch again), an
// error wrapping store.ErrTrackingConflict (another consumer applied these
// offsets: seek to the stored tracking), or too many conflicts in a row, or
// ErrClosed.
func (w *Writer) HandleBatch(ctx context.Context, records []wire.Record) error {
	ctx, done, err := w.begin(ctx)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	st := BatchStats{Records: len(records)}
	err = w.closing(w.handle(ctx, records, &st))
	st.Duration = time.Since(start)
	st.Err = err
	w.stats.record(st)
	if w.cfg.OnBatch != nil {
		w.cfg.OnBatch(st)
	}
	return err
}

func (w *Writer) handle(ctx context.Context, records []wire.Record, st *BatchStats) error {
	if len(records) == 0 {
		return nil
	}
	t0 := time.Now()
	in := w.decode(records)
	tr := w.startTrace(ctx, in)
	st.Decide += time.Since(t0)
	err := w.handleInputs(ctx, in, tr, st)
	tr.end(st, err)
	return err
}

// handleInputs is handle after decoding the records (and starting their
// spans).
func (w *Writer) handleInputs(ctx context.Context, in []input, tr *batchTrace, st *BatchStats) (err error) {
	bypass := make(map[uuid.UUID]bool)
	readTracking, readResults := false, w.readResults.Swap(false)
	defer func() {
		if err != nil && readResults {
			// The batch will be handed again: decide it with every result
			// read from its first attempt, so that a duplicate does not
			// cost it a failing attempt each time.
			w.readResults.Store(true)
		}
	}()
	conflicts := 0
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		dctx, span := tr.step(ctx, tracing.SpanWriterDecide, attempt+1)
		b, err := w.plan(dctx, in, bypass, readTracking, readResults)
		endStep(span, err)
		if b != nil {
			st.Read += b.stats.Read
			st.Decide += b.stats.Decide
			if err != nil {
				b = nil // a failed plan has nothing to commit
			}
		}
		if err == nil && b.empty() {
			st.Skipped = b.stats.Skipped
			return nil
		}
		if err == nil {
			st.Attempts++
			t0 := time.Now()
			cctx, span := tr.step(ctx, tracing.SpanWriterCommit, attempt+1)
			err = w.commit(cctx, b)
			endStep(span, err)
			st.Append = time.Since(t0)
			if err == nil {
				w.committed(ctx, b)
				b.stats.Records, b.stats.Attempts, b.stats.Append = st.Records, st.Attempts, st.Append
				b.stats.Read, b.stats.Decide = st.Read, st.Decide
				*st = b.stats
				return nil
			}
		}
		// The aggregates b took out of the cache are dropped with b.
		if errors.Is(err, store.ErrTrackingConflict) && b != nil && b.remembered && !readTracking {
			// Another writer applied records of a partition since this one
			// last saw its tracking: read the tracking, and skip those.
			readTracking = true
			w.log.InfoContext(ctx, "command: another writer applied records of the batch; reading the tracking and trying the batch again",
				logKeyAttempt, attempt+1, logKeyError, err)
			continue
		}
		conflict := errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrTrackingConflict)
		// The first conflict may be a duplicate's, found by the append: it is
		// retried, reading every result, whatever the limit.
		if conflict && (!readResults || conflicts < w.cfg.MaxConflictRetries) {
			conflicts++
			id := bypassAll
			if ce := (*store.ConflictError)(nil); errors.As(err, &ce) {
				id = ce.SequenceID
			}
			bypass[id] = true
			readResults = true
			w.log.InfoContext(ctx, "command: a sequence of the batch has the position taken (another writer appended to it, or a record is a duplicate); trying the batch again",
				logKeySequence, id, logKeyAttempt, attempt+1, logKeyError, err)
			continue
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("command: batch of %d records: %w", len(in), err)
	}
}
