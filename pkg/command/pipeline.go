package command

import (
	"context"
	"fmt"
	"time"

	"github.com/eventlog/eventlog/internal/backoff"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Retries of a pipelined batch whose transaction failed, in the background:
// pipelineRetries attempts, with a jittered back-off from pipelineMinBackoff,
// doubling up to pipelineMaxBackoff.
const (
	pipelineRetries    = 5
	pipelineMinBackoff = 50 * time.Millisecond
	pipelineMaxBackoff = time.Second
)

// pending is a batch whose transaction was started by one HandleBatch call
// and is settled by the next (or by Flush): with WriterConfig.Pipeline.
type pending struct {
	records []wire.Record // to apply again if the transaction fails
	in      []input       // the records decoded, with their trace contexts
	tr      *batchTrace   // ended when the batch is stored or given up
	b       *batch
	start   time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	// Set before done is closed:
	end       time.Time // when the records were stored or given up
	st        BatchStats
	err       error // the records are not stored
	replanned bool  // b's transaction failed: the records were decided again
}

// handlePipelined is HandleBatch with WriterConfig.Pipeline: it decides
// records while the transaction of the previous batch runs, as if that one
// had committed, then waits for it, and starts the transaction of records
// without waiting for it. If the previous batch had to be decided again, so
// are records, once it is stored.
func (w *Writer) handlePipelined(ctx context.Context, records []wire.Record) error {
	w.pipeMu.Lock()
	defer w.pipeMu.Unlock()
	if w.isClosed() {
		return ErrClosed
	}
	start := time.Now()
	if p := w.pending; p != nil && p.isDone() {
		if _, err := w.settle(ctx); err != nil {
			return err
		}
	}
	var (
		b       *batch
		prev    *batch // the plan of the batch still committing, planned on
		planErr error
		st      = BatchStats{Records: len(records)}
		in      []input
		tr      *batchTrace
	)
	if len(records) > 0 {
		t0 := time.Now()
		in = w.decode(records)
		tr = w.startTrace(ctx, in)
		st.Decide = time.Since(t0)
		if w.pending != nil {
			prev = w.pending.b
		}
		dctx, span := tr.step(ctx, tracing.SpanWriterDecide, 1)
		b, planErr = w.plan(dctx, in, nil, false, prev)
		endStep(span, planErr)
		if b != nil {
			st.Read, st.Decide = b.stats.Read, st.Decide+b.stats.Decide
		}
	}
	held, err := w.settle(ctx)
	if err != nil {
		tr.end(nil, err)
		return err
	}
	if len(records) == 0 {
		return nil
	}
	if planErr != nil || (prev != nil && !held) {
		// The plan failed, or it assumed a decision of the previous batch
		// that was made again: apply the records as without Pipeline.
		st := BatchStats{Records: len(records)}
		err := w.handleInputs(ctx, in, tr, &st)
		tr.end(&st, err)
		st.Duration = time.Since(start)
		st.Err = err
		w.report(st)
		return err
	}
	if b.empty() {
		st.Skipped = b.stats.Skipped
		st.Duration = time.Since(start)
		tr.end(&st, nil)
		w.report(st)
		return nil
	}
	b.stats.Records, b.stats.Read, b.stats.Decide = st.Records, st.Read, st.Decide
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	np := &pending{records: records, in: in, tr: tr, b: b, st: b.stats, start: start, cancel: cancel, done: make(chan struct{})}
	if !w.goBackground(cancel, func() { w.store(cctx, np) }) {
		cancel()
		tr.end(nil, ErrClosed)
		return ErrClosed
	}
	w.pending = np
	return nil
}

// store runs np's transaction. If it fails, np's records are applied again
// as HandleBatch does without Pipeline (deciding them from the store), up to
// pipelineRetries times with back-off, so that a batch is stored even if no
// HandleBatch call follows.
func (w *Writer) store(ctx context.Context, np *pending) {
	defer close(np.done)
	defer func() { np.end = time.Now() }()
	defer func() { np.tr.end(&np.st, np.err) }()
	t0 := time.Now()
	cctx, span := np.tr.step(ctx, tracing.SpanWriterCommit, 1)
	err := w.commit(cctx, np.b)
	endStep(span, err)
	np.st.Append = time.Since(t0)
	np.st.Attempts = 1
	if err == nil {
		return
	}
	np.replanned = true
	if ctx.Err() != nil { // the writer is closing
		np.err = err
		return
	}
	w.log.InfoContext(ctx, "command: a batch's transaction failed; applying the batch again", logKeyError, err)
	wait := backoff.New(pipelineMinBackoff, pipelineMaxBackoff)
	for attempt := 1; ; attempt++ {
		w.stats.retries.Add(1)
		st := BatchStats{Records: len(np.records)}
		err = w.handleInputs(ctx, np.in, np.tr, &st)
		np.st = st
		if err == nil || attempt >= pipelineRetries || ctx.Err() != nil {
			np.err = err
			return
		}
		_ = wait.Wait(ctx) // a context that ends stops the loop above
	}
}

// isDone reports whether p's records are stored or given up.
func (p *pending) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// settle waits for the pending batch to be stored and reports whether it was
// stored as decided (held), as the next batch may have assumed. If it could
// not be stored, it is applied again, with HandleBatch's retries, and stays
// pending (settle returns the error) until that succeeds. If ctx ends first,
// settle returns its error and the pending batch's work goes on.
func (w *Writer) settle(ctx context.Context) (held bool, err error) {
	p := w.pending
	if p == nil {
		return true, nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return false, fmt.Errorf("command: waiting for the previous batch: %w", ctx.Err())
	}
	if p.err == nil {
		w.pending = nil
		p.cancel()
		if !p.replanned {
			w.committed(ctx, p.b)
		}
		p.st.Duration = p.end.Sub(p.start)
		w.report(p.st)
		return !p.replanned, nil
	}
	if w.isClosed() {
		return false, fmt.Errorf("%w: the previous batch is not stored: %w", ErrClosed, p.err)
	}
	w.stats.retries.Add(1)
	if err := w.handleNow(ctx, p.records); err != nil {
		return false, fmt.Errorf("command: the previous batch is not stored yet: %w", err)
	}
	w.pending = nil
	p.cancel()
	return false, nil
}

// Flush waits until the batch that the last HandleBatch call left committing
// (with WriterConfig.Pipeline) is stored, applying it again if that failed. It
// returns an error if it is not stored: call Flush or HandleBatch again. A
// consumer calls it when it stops, and may call it now and then while idle
// (a batch whose transaction failed is retried a few times in the background,
// then only by the next HandleBatch, Flush or Tracking call). If ctx ends
// first, Flush returns its error and the transaction goes on. Without
// Pipeline it does nothing.
func (w *Writer) Flush(ctx context.Context) error {
	if w.isClosed() {
		return ErrClosed
	}
	if !w.cfg.Pipeline {
		return nil
	}
	w.pipeMu.Lock()
	defer w.pipeMu.Unlock()
	_, err := w.settle(ctx)
	return err
}

// handleNow applies records and waits for their transaction, with retries:
// HandleBatch without Pipeline.
func (w *Writer) handleNow(ctx context.Context, records []wire.Record) error {
	start := time.Now()
	st := BatchStats{Records: len(records)}
	err := w.handle(ctx, records, &st)
	st.Duration = time.Since(start)
	st.Err = err
	w.report(st)
	return err
}

// report counts a batch and passes it to OnBatch.
func (w *Writer) report(st BatchStats) {
	w.stats.record(st)
	if w.cfg.OnBatch != nil {
		w.cfg.OnBatch(st)
	}
}
