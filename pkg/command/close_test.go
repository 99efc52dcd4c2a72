package command_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// gateRecorder holds every transaction until its gate opens or the
// transaction's context ends, and fails t on any call once closed is set.
type gateRecorder struct {
	store.ProcessRecorder
	t       *testing.T
	gate    chan struct{}
	entered chan struct{} // one value per transaction that reached the gate
	active  atomic.Int64  // calls in progress
	closed  atomic.Bool   // the writer was closed: no call may come
}

func (g *gateRecorder) enter(what string) func() {
	if g.closed.Load() {
		g.t.Errorf("%s after the writer's Close returned", what)
	}
	g.active.Add(1)
	return func() { g.active.Add(-1) }
}

func (g *gateRecorder) InTx(ctx context.Context, fn func(store.Tx) error) error {
	defer g.enter("InTx")()
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.ProcessRecorder.InTx(ctx, fn)
}

func (g *gateRecorder) SelectEvents(ctx context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	defer g.enter("SelectEvents")()
	return g.ProcessRecorder.SelectEvents(ctx, id, q)
}

func (g *gateRecorder) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	defer g.enter("Tracking")()
	return g.ProcessRecorder.Tracking(ctx, name, topic, partition)
}

// storing reports whether a goroutine of the writer's runs a batch's
// transaction or its retries.
func storing() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "command.(*Writer).store(")
}

// Close during a pipelined batch whose transaction runs, after a Flush that
// timed out: the transaction is cancelled, Close returns only once the
// writer's goroutine has, the store is not touched again, and the records,
// not stored, are applied once by the next writer.
func TestCloseDuringPipelinedBatch(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	g := &gateRecorder{ProcessRecorder: e.rec.Recorder, t: t, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w, err := command.NewWriter(g, e.reg, e.mapper, command.WriterConfig{Pipeline: true})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	create := cmd("create", "example", id, `{"foo": "bar"}`)
	update := cmd("update", "example", id, `{"foo": "baz"}`)
	recs := []wire.Record{e.record(0, create), e.record(0, update)}
	if err := w.HandleBatch(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the batch's transaction waits at the gate
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := w.Flush(fctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush while the transaction waits = %v, want its deadline", err)
	}

	err = w.Close()
	g.closed.Store(true)
	if err == nil || !strings.Contains(err.Error(), "2 records not stored") {
		t.Fatalf("Close = %v, want it to say the batch is not stored", err)
	}
	if n := g.active.Load(); n != 0 || storing() {
		t.Fatalf("after Close: %d store calls in progress, the store goroutine running: %v", n, storing())
	}
	if err := w.HandleBatch(context.Background(), recs); !errors.Is(err, command.ErrClosed) {
		t.Fatalf("HandleBatch after Close = %v", err)
	}
	if err := w.Flush(context.Background()); !errors.Is(err, command.ErrClosed) {
		t.Fatalf("Flush after Close = %v", err)
	}
	if _, err := w.Tracking(context.Background(), "", commandsTopic, 0); !errors.Is(err, command.ErrClosed) {
		t.Fatalf("Tracking after Close = %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if n := e.eventCount(id); n != 0 {
		t.Fatalf("%d events stored by the cancelled transaction", n)
	}

	// The records are consumed again from the tracking, by the next writer.
	next := e.plainWriter(command.WriterConfig{Pipeline: true})
	if err := next.HandleBatch(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if err := next.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkResult(t, e.result(create.CommandID), wire.StatusAccepted, 1, 0)
	checkResult(t, e.result(update.CommandID), wire.StatusAccepted, 2, 1)
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
}

// Close while a failed pipelined batch is applied again in the background,
// between retries: Close cancels the back-off and waits for the goroutine.
func TestCloseDuringPipelinedRetries(t *testing.T) {
	e := newEnv(t, command.WriterConfig{Pipeline: true})
	for range 20 {
		e.rec.failCommit = append(e.rec.failCommit, errTransient)
	}
	id := uuid.New()
	e.handle(e.w, e.record(0, cmd("create", "example", id, `{"foo": "bar"}`)))
	testutil.Eventually(t, time.Minute, func() error {
		if n := e.rec.transactions(); n < 2 {
			return fmt.Errorf("%d transactions tried, want a retry", n)
		}
		return nil
	})
	if err := e.w.Close(); err != nil && !errors.Is(err, errTransient) && !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v", err)
	}
	txs := e.rec.transactions()
	if storing() {
		t.Fatal("the store goroutine outlived Close")
	}
	if err := e.w.HandleBatch(context.Background(), []wire.Record{e.record(0, cmd("update", "example", id, `{"a": 1}`))}); !errors.Is(err, command.ErrClosed) {
		t.Fatalf("HandleBatch after Close = %v", err)
	}
	if n := e.rec.transactions(); n != txs {
		t.Fatalf("%d transactions after Close", n-txs)
	}
}
