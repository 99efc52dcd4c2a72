package command_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

const commandsTopic = "eventlog.commands"

// hookRecorder is a memory recorder that counts transactions and reads, and can
// run a hook before a transaction or fail one after its work. It and its
// transactions read many sequences at once (store.SequencesReader), and its
// transactions set many tracking records at once (store.TrackingsSetter);
// perSequence hides both from a writer.
type hookRecorder struct {
	*memory.Recorder
	perSequence bool // writers get neither optional interface

	mu         sync.Mutex
	txs        int                     // InTx calls
	beforeTx   []func()                // each runs once, before one InTx
	failCommit []error                 // each fails one InTx after fn succeeded
	inserted   [][]store.SequencedItem // items passed to InsertEvents, per InTx
	afterTrack []func()                // each runs once, after one Tracking read
	selects    atomic.Int64            // reads: SelectEvents and SelectSequences calls
	trackings  atomic.Int64            // Tracking calls
}

func newHookRecorder() *hookRecorder { return &hookRecorder{Recorder: memory.New()} }

func (h *hookRecorder) SelectEvents(ctx context.Context, id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	h.selects.Add(1)
	return h.Recorder.SelectEvents(ctx, id, q)
}

func (h *hookRecorder) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	h.selects.Add(1)
	return h.Recorder.SelectSequences(ctx, queries)
}

// perSequence is a recorder with only the methods of store.ProcessRecorder, so
// that a writer over it reads one sequence at a time.
type perSequence struct{ store.ProcessRecorder }

func (h *hookRecorder) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	h.trackings.Add(1)
	pos, err := h.Recorder.Tracking(ctx, name, topic, partition)
	h.mu.Lock()
	var hook func()
	if len(h.afterTrack) > 0 {
		hook, h.afterTrack = h.afterTrack[0], h.afterTrack[1:]
	}
	h.mu.Unlock()
	if hook != nil {
		hook()
	}
	return pos, err
}

func (h *hookRecorder) InTx(ctx context.Context, fn func(store.Tx) error) error {
	h.mu.Lock()
	h.txs++
	var hook func()
	if len(h.beforeTx) > 0 {
		hook, h.beforeTx = h.beforeTx[0], h.beforeTx[1:]
	}
	var fail error
	if len(h.failCommit) > 0 {
		fail, h.failCommit = h.failCommit[0], h.failCommit[1:]
	}
	h.mu.Unlock()
	if hook != nil {
		hook()
	}
	var items []store.SequencedItem
	err := h.Recorder.InTx(ctx, func(tx store.Tx) error {
		capture := &captureTx{Tx: tx, items: &items}
		var passed store.Tx = capture
		if !h.perSequence {
			passed = &captureSequencesTx{capture, tx.(store.SequencesReader), tx.(store.TrackingsSetter)}
		}
		if err := fn(passed); err != nil {
			return err
		}
		return fail
	})
	h.mu.Lock()
	h.inserted = append(h.inserted, items)
	h.mu.Unlock()
	return err
}

func (h *hookRecorder) transactions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.txs
}

func (h *hookRecorder) lastInserted() []store.SequencedItem {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inserted[len(h.inserted)-1]
}

type captureTx struct {
	store.Tx
	items *[]store.SequencedItem
}

func (c *captureTx) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	*c.items = append(*c.items, items...)
	return c.Tx.InsertEvents(ctx, items)
}

// captureSequencesTx is a captureTx with the optional methods of the memory
// recorder's transactions.
type captureSequencesTx struct {
	*captureTx
	store.SequencesReader
	store.TrackingsSetter
}

// env is a writer over a hook recorder with the generic entity "example".
type env struct {
	t      testing.TB
	rec    *hookRecorder
	reg    *command.Registry
	mapper *events.Mapper
	w      *command.Writer
	repo   *store.Repository[*entity.Entity]
	offset map[int32]int64 // next offset per partition
	clock  time.Time
}

func newEnv(t testing.TB, cfg command.WriterConfig) *env {
	t.Helper()
	return newEnvReads(t, cfg, false)
}

// newEnvReads returns an env whose writers, with perSequence, read one
// sequence at a time and set one tracking record at a time.
func newEnvReads(t testing.TB, cfg command.WriterConfig, perSequence bool) *env {
	t.Helper()
	e := &env{t: t, rec: newHookRecorder(), offset: map[int32]int64{}, clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e.rec.perSequence = perSequence
	e.reg = command.NewRegistry(events.NewRegistry())
	if err := command.RegisterEntity(e.reg, "example"); err != nil {
		t.Fatal(err)
	}
	if err := command.Register(e.reg, "account", newAccount, accountCommands); err != nil {
		t.Fatal(err)
	}
	registerAccountEvents(e.reg.Events())
	e.mapper = events.NewMapper(e.reg.Events())
	e.w = e.writer(cfg)
	repo, err := store.NewRepository(store.NewEventStore(e.mapper, e.rec), func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e.repo = repo
	return e
}

// writer returns another writer over the same store.
func (e *env) writer(cfg command.WriterConfig) *command.Writer {
	e.t.Helper()
	var rec store.ProcessRecorder = e.rec
	if e.rec.perSequence {
		rec = perSequence{e.rec}
	}
	w, err := command.NewWriter(rec, e.reg, e.mapper, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// plainWriter returns another writer over the same store that bypasses the
// test recorder's hooks.
func (e *env) plainWriter(cfg command.WriterConfig) *command.Writer {
	e.t.Helper()
	w, err := command.NewWriter(e.rec.Recorder, e.reg, e.mapper, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// record returns the next record of partition p with value v (a wire.Command
// or raw bytes).
func (e *env) record(p int32, v any) wire.Record {
	var value []byte
	var key []byte
	switch v := v.(type) {
	case []byte:
		value = v
	case string:
		value = []byte(v)
	case wire.Command:
		b, err := json.Marshal(v)
		if err != nil {
			e.t.Fatal(err)
		}
		value, key = b, []byte(v.EntityID.String())
	default:
		e.t.Fatalf("record of %T", v)
	}
	off := e.offset[p]
	e.offset[p]++
	e.clock = e.clock.Add(time.Millisecond)
	return wire.Record{
		Topic: commandsTopic, Partition: p, Offset: off, Key: key, Value: value,
		Headers: []wire.Header{{Key: "trace", Value: []byte("t-" + key2str(key))}}, Timestamp: e.clock,
	}
}

func key2str(k []byte) string { return string(k) }

func (e *env) handle(w *command.Writer, recs ...wire.Record) {
	e.t.Helper()
	if err := w.HandleBatch(context.Background(), recs); err != nil {
		e.t.Fatal(err)
	}
}

// results returns the result items stored for a command id, in position order.
func (e *env) results(commandID uuid.UUID) []store.SequencedItem {
	e.t.Helper()
	items, err := e.rec.SelectEvents(context.Background(), commandID, store.Query{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, it := range items {
		if it.Topic != wire.ResultItemTopic {
			e.t.Fatalf("sequence %s has item of topic %s", commandID, it.Topic)
		}
	}
	return items
}

// result returns the one result of a command, failing unless there is exactly one.
func (e *env) result(commandID uuid.UUID) wire.Result {
	e.t.Helper()
	items := e.results(commandID)
	if len(items) != 1 {
		e.t.Fatalf("command %s has %d results, want 1", commandID, len(items))
	}
	r, err := wire.DecodeResult(items[0].State)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// log returns the whole notification log.
func (e *env) log() []store.Notification {
	e.t.Helper()
	ns, err := e.rec.SelectNotifications(context.Background(), 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return ns
}

func (e *env) deadLetters() []wire.DeadLetter {
	e.t.Helper()
	var out []wire.DeadLetter
	for _, n := range e.log() {
		if n.Topic == wire.DeadLetterItemTopic {
			d, err := wire.DecodeDeadLetter(n.State)
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, d)
		}
	}
	return out
}

func (e *env) tracking(p int32) int64 {
	e.t.Helper()
	pos, err := e.w.Tracking(context.Background(), "", commandsTopic, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return pos
}

// eventCount returns the number of stored events of an entity.
func (e *env) eventCount(id uuid.UUID) int {
	e.t.Helper()
	items, err := e.rec.SelectEvents(context.Background(), id, store.Query{})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(items)
}

func cmd(typ, ent string, id uuid.UUID, data string) wire.Command {
	c := wire.Command{CommandID: uuid.New(), Type: typ, Entity: ent, EntityID: id}
	if data != "" {
		c.Data = json.RawMessage(data)
	}
	return c
}

func expect(c wire.Command, v int64) wire.Command {
	c.ExpectedVersion = &v
	return c
}

func checkResult(t testing.TB, r wire.Result, status wire.Status, version int64, positions ...int64) {
	t.Helper()
	if positions == nil {
		positions = []int64{}
	}
	if r.Status != status || r.Version != version || !slices.Equal(r.Positions, positions) {
		t.Fatalf("result %+v, want status %s version %d positions %v", r, status, version, positions)
	}
	if status == wire.StatusAccepted && r.Error != "" || status != wire.StatusAccepted && r.Error == "" {
		t.Fatalf("result %+v: error text does not fit status", r)
	}
}
