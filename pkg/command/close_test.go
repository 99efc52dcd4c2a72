package command_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

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

// Close during a batch whose transaction runs: the transaction is
// cancelled, HandleBatch fails with ErrClosed, Close returns only once it
// has, the store is not touched again, and the records, not stored, are
// applied once by the next writer.
func TestCloseDuringBatch(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	g := &gateRecorder{ProcessRecorder: e.rec.Recorder, t: t, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w, err := command.NewWriter(g, e.reg, e.mapper, command.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	create := cmd("create", "example", id, `{"foo": "bar"}`)
	update := cmd("update", "example", id, `{"foo": "baz"}`)
	recs := []wire.Record{e.record(0, create), e.record(0, update)}
	handled := make(chan error, 1)
	go func() { handled <- w.HandleBatch(context.Background(), recs) }()
	<-g.entered // the batch's transaction waits at the gate

	if err := w.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	g.closed.Store(true) // the call in progress makes no store call from now on
	if n := g.active.Load(); n != 0 {
		t.Fatalf("after Close: %d store calls in progress", n)
	}
	if err := <-handled; !errors.Is(err, command.ErrClosed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("HandleBatch cut short by Close = %v, want ErrClosed wrapping the cancellation", err)
	}
	if err := w.HandleBatch(context.Background(), recs); !errors.Is(err, command.ErrClosed) {
		t.Fatalf("HandleBatch after Close = %v", err)
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
	next := e.plainWriter(command.WriterConfig{})
	if err := next.HandleBatch(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	checkResult(t, e.result(create.CommandID), wire.StatusAccepted, 1, 0)
	checkResult(t, e.result(update.CommandID), wire.StatusAccepted, 2, 1)
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
}
