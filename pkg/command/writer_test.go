package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// The stand-alone example's scenario, driven by commands.
func TestSeedScenario(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()

	create := cmd("create", "example", id, `{"foo": "bar"}`)
	e.handle(e.w, e.record(0, create))
	checkResult(t, e.result(create.CommandID), wire.StatusAccepted, 1, 0)
	got, err := e.repo.Get(ctx, id)
	if err != nil || got.String("foo") != "bar" {
		t.Fatalf("after create: %v %v", got, err)
	}

	update := cmd("update", "example", id, `{"foo": "baz"}`)
	e.handle(e.w, e.record(0, update))
	checkResult(t, e.result(update.CommandID), wire.StatusAccepted, 2, 1)
	got, err = e.repo.Get(ctx, id)
	if err != nil || got.String("foo") != "baz" || got.Version() != 2 {
		t.Fatalf("after update: %+v %v", got, err)
	}

	discard := cmd("discard", "example", id, "")
	e.handle(e.w, e.record(0, discard))
	checkResult(t, e.result(discard.CommandID), wire.StatusAccepted, 3, 2)

	late := cmd("update", "example", id, `{"foo": "qux"}`)
	e.handle(e.w, e.record(0, late))
	r := e.result(late.CommandID)
	checkResult(t, r, wire.StatusRejected, 3)
	if !strings.Contains(r.Error, events.ErrDiscarded.Error()) {
		t.Fatalf("error %q does not say discarded", r.Error)
	}
	if _, err := e.repo.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after discard: %v, want ErrNotFound", err)
	}
	if n := e.eventCount(id); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
	// The log holds each command's events, then its result.
	var topics []string
	for _, n := range e.log() {
		topics = append(topics, n.Topic)
	}
	want := []string{"example.Created", wire.ResultItemTopic, "example.AttributeChanged", wire.ResultItemTopic,
		"example.Discarded", wire.ResultItemTopic, wire.ResultItemTopic}
	if !slices.Equal(topics, want) {
		t.Fatalf("log topics %v, want %v", topics, want)
	}
	if p := e.tracking(0); p != 3 {
		t.Fatalf("tracking %d, want 3", p)
	}
	if s := e.w.Stats(); s.Batches != 4 || s.Accepted != 3 || s.Rejected != 1 || s.Events != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMixedBatch(t *testing.T) {
	ctx := context.Background()
	var batches []command.BatchStats
	e := newEnv(t, command.WriterConfig{OnBatch: func(b command.BatchStats) { batches = append(batches, b) }})
	a, b, gone := uuid.New(), uuid.New(), uuid.New()

	// Set-up: gone exists and is discarded.
	e.handle(e.w, e.record(1, cmd("create", "example", gone, `{}`)), e.record(1, cmd("discard", "example", gone, "")))
	txsBefore := e.rec.transactions()

	noID := cmd("create", "example", uuid.New(), `{}`)
	noID.CommandID = uuid.Nil
	createA := cmd("create", "example", a, `{"n": 1}`)
	updateA := cmd("update", "example", a, `{"n": 2, "m": "x"}`)
	unknownEntity := cmd("create", "nosuch", uuid.New(), `{}`)
	unknownCommand := cmd("rename", "example", a, `{}`)
	badData := cmd("update", "example", a, `{"bad name": 1}`)
	conflicting := expect(cmd("update", "example", a, `{"n": 3}`), 1)
	rejected := cmd("update", "example", gone, `{"n": 1}`)
	missing := cmd("update", "example", uuid.New(), `{"n": 1}`)
	createB := expect(cmd("create", "example", b, `{"k": true}`), 0)
	updateA2 := expect(cmd("update", "example", a, `{"n": 4}`), 3)
	discardB := cmd("discard", "example", b, "")

	recs := []wire.Record{
		e.record(0, "this is not JSON"),
		e.record(0, createA),
		e.record(1, noID),
		e.record(0, updateA),
		e.record(1, unknownEntity),
		e.record(0, unknownCommand),
		e.record(0, badData),
		e.record(0, conflicting),
		e.record(1, rejected),
		e.record(1, missing),
		e.record(0, createB),
		e.record(0, updateA2),
		e.record(0, discardB),
	}
	e.handle(e.w, recs...)

	if n := e.rec.transactions() - txsBefore; n != 1 {
		t.Fatalf("%d transactions, want 1", n)
	}
	checkResult(t, e.result(createA.CommandID), wire.StatusAccepted, 1, 0)
	checkResult(t, e.result(updateA.CommandID), wire.StatusAccepted, 3, 1, 2) // "m" then "n"
	checkResult(t, e.result(unknownEntity.CommandID), wire.StatusInvalid, 0)
	checkResult(t, e.result(unknownCommand.CommandID), wire.StatusInvalid, 0)
	checkResult(t, e.result(badData.CommandID), wire.StatusInvalid, 3) // entity.ErrInvalid: malformed input
	checkResult(t, e.result(conflicting.CommandID), wire.StatusConflict, 3)
	checkResult(t, e.result(rejected.CommandID), wire.StatusRejected, 2)
	checkResult(t, e.result(missing.CommandID), wire.StatusRejected, 0)
	checkResult(t, e.result(createB.CommandID), wire.StatusAccepted, 1, 0)
	checkResult(t, e.result(updateA2.CommandID), wire.StatusAccepted, 4, 3)
	checkResult(t, e.result(discardB.CommandID), wire.StatusAccepted, 2, 1)

	gotA, err := e.repo.Get(ctx, a)
	if err != nil || string(gotA.Attributes["n"]) != "4" || gotA.String("m") != "x" || gotA.Version() != 4 {
		t.Fatalf("a = %+v, %v", gotA, err)
	}
	if _, err := e.repo.Get(ctx, b); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b: %v", err)
	}

	dls := e.deadLetters()
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dls))
	}
	for i, want := range []wire.Record{recs[0], recs[2]} {
		d := dls[i]
		if d.SourceTopic != want.Topic || d.SourcePartition != want.Partition || d.SourceOffset != want.Offset ||
			!bytes.Equal(d.Value, want.Value) || !bytes.Equal(d.Key, want.Key) || len(d.Headers) != 1 ||
			!bytes.Equal(d.Headers[0].Value, want.Headers[0].Value) || d.Reason == "" {
			t.Fatalf("dead letter %d = %+v, from %+v", i, d, want)
		}
	}
	if !strings.Contains(dls[1].Reason, "command_id") {
		t.Fatalf("reason %q", dls[1].Reason)
	}
	if p0, p1 := e.tracking(0), e.tracking(1); p0 != recs[12].Offset || p1 != recs[9].Offset {
		t.Fatalf("tracking %d %d, want %d %d", p0, p1, recs[12].Offset, recs[9].Offset)
	}
	last := batches[len(batches)-1]
	if last.Records != 13 || last.Accepted != 5 || last.Rejected != 2 || last.Conflict != 1 || last.Invalid != 3 ||
		last.DeadLetters != 2 || last.Events != 6 || last.Attempts != 1 || last.Err != nil {
		t.Fatalf("batch stats %+v", last)
	}
}

func TestDuplicates(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()
	create := cmd("create", "example", id, `{"foo": "bar"}`)
	update := cmd("update", "example", id, `{"foo": "baz"}`)

	// The same command twice in one batch, then again in a later batch.
	e.handle(e.w, e.record(0, create), e.record(0, update), e.record(0, create))
	e.handle(e.w, e.record(0, update), e.record(0, update))

	if n := e.eventCount(id); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	for c, want := range map[uuid.UUID]int{create.CommandID: 2, update.CommandID: 3} {
		items := e.results(c)
		if len(items) != want {
			t.Fatalf("%d results of %s, want %d", len(items), c, want)
		}
		for i, it := range items {
			if it.Position != int64(i) || !bytes.Equal(it.State, items[0].State) {
				t.Fatalf("result %d of %s differs: %s vs %s", i, c, it.State, items[0].State)
			}
		}
	}
	r, _ := wire.DecodeResult(e.results(update.CommandID)[2].State)
	checkResult(t, r, wire.StatusAccepted, 2, 1)
	if s := e.w.Stats(); s.Duplicates != 3 || s.Accepted != 2 {
		t.Fatalf("stats %+v", s)
	}

	// A duplicate with different content still gets the original result.
	changed := update
	changed.Data = json.RawMessage(`{"foo": "other"}`)
	e.handle(e.w, e.record(0, changed))
	got, _ := e.repo.Get(context.Background(), id)
	if got.String("foo") != "baz" || len(e.results(update.CommandID)) != 4 {
		t.Fatalf("duplicate with other data applied: foo=%s", got.String("foo"))
	}
}

// A batch decides its commands as new without reading their results: a
// duplicate of a stored result is found by the append, which conflicts on
// the result's position 0, and the batch is decided again with every result
// read. The duplicate changes nothing; the new commands beside it are applied
// once.
// A writer that never retries conflicts still makes that retry, so it
// answers duplicates.
func TestDuplicateFoundByAppend(t *testing.T) {
	var st command.BatchStats
	e := newEnv(t, command.WriterConfig{MaxConflictRetries: -1, OnBatch: func(b command.BatchStats) { st = b }})
	id, other := uuid.New(), uuid.New()
	create := cmd("create", "example", id, `{"foo": "bar"}`)
	e.handle(e.w, e.record(0, create))
	if st.Attempts != 1 {
		t.Fatalf("new commands: %d attempts, want 1", st.Attempts)
	}

	fresh := cmd("create", "example", other, `{"foo": "qux"}`)
	update := cmd("update", "example", id, `{"foo": "baz"}`)
	e.handle(e.w, e.record(0, fresh), e.record(0, create), e.record(0, update))
	if st.Attempts != 2 || st.Duplicates != 1 || st.Accepted != 2 {
		t.Fatalf("batch with a duplicate: %+v, want 2 attempts, 1 duplicate, 2 accepted", st)
	}
	if n := e.eventCount(id); n != 2 {
		t.Fatalf("%d events of the duplicated entity, want 2", n)
	}
	if items := e.results(create.CommandID); len(items) != 2 || !bytes.Equal(items[0].State, items[1].State) {
		t.Fatalf("the duplicate has %d results, want 2 equal ones", len(items))
	}
	checkResult(t, e.result(fresh.CommandID), wire.StatusAccepted, 1, 0)
	checkResult(t, e.result(update.CommandID), wire.StatusAccepted, 2, 1)
	if n := e.eventCount(other); n != 1 {
		t.Fatalf("%d events of the new entity, want 1", n)
	}

	// A batch whose attempt after finding a duplicate fails is handed again:
	// it then reads every result from its first attempt, so that failures
	// coming every other transaction cannot keep it from being stored.
	third := cmd("create", "example", uuid.New(), `{}`)
	recs := []wire.Record{e.record(0, third), e.record(0, update)}
	e.rec.failCommit = append(e.rec.failCommit, nil, errTransient) // the first attempt conflicts anyway
	if err := e.w.HandleBatch(context.Background(), recs); !errors.Is(err, errTransient) {
		t.Fatalf("HandleBatch = %v, want the injected failure", err)
	}
	e.rec.failCommit = append(e.rec.failCommit, errTransient, nil)
	if err := e.w.HandleBatch(context.Background(), recs); !errors.Is(err, errTransient) {
		t.Fatalf("HandleBatch = %v, want the injected failure", err)
	}
	e.handle(e.w, recs...)
	if st.Attempts != 1 || st.Duplicates != 1 || st.Accepted != 1 {
		t.Fatalf("batch handed again: %+v, want 1 attempt, 1 duplicate, 1 accepted", st)
	}
	checkResult(t, e.result(third.CommandID), wire.StatusAccepted, 1, 0)
	e.handle(e.w, e.record(0, cmd("create", "example", uuid.New(), `{}`)))
	if st.Attempts != 1 {
		t.Fatalf("next batch: %d attempts", st.Attempts)
	}
}

func TestRedeliverySkipped(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()
	batch := []wire.Record{
		e.record(0, cmd("create", "example", id, `{"foo": "bar"}`)),
		e.record(0, "junk"),
		e.record(0, cmd("update", "example", id, `{"foo": "baz"}`)),
	}
	e.handle(e.w, batch...)
	before := e.log()
	txs := e.rec.transactions()

	var st command.BatchStats
	w := e.writer(command.WriterConfig{OnBatch: func(b command.BatchStats) { st = b }})
	e.handle(w, batch...)
	e.handle(e.w, batch[1:]...)
	if got := e.log(); len(got) != len(before) {
		t.Fatalf("log grew from %d to %d items", len(before), len(got))
	}
	if n := e.rec.transactions() - txs; n != 0 {
		t.Fatalf("%d transactions for applied records", n)
	}
	if st.Skipped != 3 || st.Err != nil {
		t.Fatalf("stats %+v", st)
	}

	// A batch that overlaps the tracking applies only its new records.
	next := e.record(0, cmd("update", "example", id, `{"foo": "qux"}`))
	e.handle(e.w, append(batch[1:], next)...)
	if n := e.eventCount(id); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
	if p := e.tracking(0); p != next.Offset {
		t.Fatalf("tracking %d, want %d", p, next.Offset)
	}
	// The same record twice in one batch is applied once.
	again := e.record(0, cmd("update", "example", id, `{"foo": "quux"}`))
	e.handle(e.w, again, again)
	if n := e.eventCount(id); n != 4 {
		t.Fatalf("%d events, want 4", n)
	}
}

// Another writer appends to an entity between the batch's load and its commit.
func TestConcurrentWriterConflict(t *testing.T) {
	for _, withExpected := range []bool{false, true} {
		t.Run(fmt.Sprintf("expected_version=%v", withExpected), func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, command.WriterConfig{})
			id := uuid.New()
			e.handle(e.w, e.record(0, cmd("create", "example", id, `{"foo": "bar"}`)))
			// Warm the cache, so the conflicting write is one the cache misses.
			e.handle(e.w, e.record(0, cmd("update", "example", id, `{"foo": "baz"}`)))

			other := e.plainWriter(command.WriterConfig{TrackingName: "other"})
			e.rec.beforeTx = append(e.rec.beforeTx, func() {
				var wg sync.WaitGroup
				wg.Go(func() {
					if err := other.HandleBatch(ctx, []wire.Record{e.record(7, cmd("update", "example", id, `{"other": 1}`))}); err != nil {
						t.Error(err)
					}
				})
				wg.Wait()
			})
			c := cmd("update", "example", id, `{"foo": "mine"}`)
			if withExpected {
				c = expect(c, 2)
			}
			w := e.w
			if err := w.HandleBatch(ctx, []wire.Record{e.record(0, c)}); err != nil {
				t.Fatal(err)
			}
			got, err := e.repo.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Attributes["other"]) != "1" {
				t.Fatalf("the other writer's update was lost: %+v", got.Attributes)
			}
			if withExpected {
				checkResult(t, e.result(c.CommandID), wire.StatusConflict, 3)
				if got.String("foo") != "baz" || got.Version() != 3 {
					t.Fatalf("state %+v", got)
				}
			} else {
				checkResult(t, e.result(c.CommandID), wire.StatusAccepted, 4, 3)
				if got.String("foo") != "mine" || got.Version() != 4 {
					t.Fatalf("state %+v", got)
				}
			}
			if s := w.Stats(); s.Retries != 1 {
				t.Fatalf("stats %+v", s)
			}
			if p := e.tracking(0); p != 2 {
				t.Fatalf("tracking %d", p)
			}
		})
	}
}

// A rejection decided on state another writer changes before the commit is
// decided again.
func TestStaleRejectionRetried(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()
	other := e.plainWriter(command.WriterConfig{TrackingName: "other"})
	e.rec.beforeTx = append(e.rec.beforeTx, func() {
		if err := other.HandleBatch(ctx, []wire.Record{e.record(7, cmd("create", "example", id, `{}`))}); err != nil {
			t.Error(err)
		}
	})
	c := cmd("update", "example", id, `{"foo": "x"}`) // the entity does not exist yet
	e.handle(e.w, e.record(0, c))
	checkResult(t, e.result(c.CommandID), wire.StatusAccepted, 2, 1)
}

// A writer reads the tracking of a partition once and then remembers what it
// committed; if another writer applied records of the partition meanwhile, the
// batch fails on the tracking, and the writer reads it and skips those records.
func TestRememberedTracking(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	var st command.BatchStats
	w := e.writer(command.WriterConfig{OnBatch: func(b command.BatchStats) { st = b }})
	id := uuid.New()
	before := e.rec.trackings.Load()
	e.handle(w, e.record(0, cmd("create", "example", id, `{}`)), e.record(1, cmd("create", "example", uuid.New(), `{}`)))
	for i := range 3 {
		e.handle(w, e.record(0, cmd("update", "example", id, fmt.Sprintf(`{"a": %d}`, i))))
	}
	if n := e.rec.trackings.Load() - before; n != 2 {
		t.Fatalf("%d tracking reads, want 2 (one per partition)", n)
	}

	// Another writer applies offsets 4 and 5; w is handed them again with 6.
	other := e.plainWriter(command.WriterConfig{})
	redelivered := []wire.Record{
		e.record(0, cmd("update", "example", id, `{"b": 1}`)),
		e.record(0, cmd("update", "example", id, `{"b": 2}`)),
	}
	e.handle(other, redelivered...)
	next := cmd("update", "example", id, `{"c": 1}`)
	e.handle(w, append(redelivered, e.record(0, next))...)
	if st.Attempts != 2 || st.Skipped != 2 || st.Accepted != 1 || st.Duplicates != 0 {
		t.Fatalf("batch stats %+v; want 2 attempts, 2 skipped, 1 accepted", st)
	}
	checkResult(t, e.result(next.CommandID), wire.StatusAccepted, 7, 6)
	if n := e.eventCount(id); n != 7 {
		t.Fatalf("%d events, want 7", n)
	}
	// Records at or below the tracking w remembers are skipped without a read.
	before = e.rec.trackings.Load()
	e.handle(w, redelivered...)
	if n := e.rec.trackings.Load() - before; n != 0 || st.Skipped != 2 || st.Attempts != 0 {
		t.Fatalf("%d tracking reads, batch stats %+v; want none, 2 skipped", n, st)
	}
}

// A zombie writer that read the tracking before the first writer committed.
func TestZombieWriter(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()
	batch := []wire.Record{
		e.record(0, cmd("create", "example", id, `{"foo": "bar"}`)),
		e.record(0, "junk"),
		e.record(0, cmd("update", "example", id, `{"foo": "baz"}`)),
	}
	zombie := e.writer(command.WriterConfig{})
	reached, release := make(chan struct{}), make(chan struct{})
	e.rec.beforeTx = append(e.rec.beforeTx, func() { close(reached); <-release })
	done := make(chan error)
	go func() { done <- zombie.HandleBatch(ctx, batch) }()
	<-reached
	e.handle(e.w, batch...)
	before, track := e.log(), e.tracking(0)
	close(release)
	err := <-done
	if !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("zombie: %v, want ErrTrackingConflict", err)
	}
	if after := e.log(); len(after) != len(before) || e.tracking(0) != track {
		t.Fatalf("the zombie changed the store")
	}
	if n := e.eventCount(id); n != 2 {
		t.Fatalf("%d events", n)
	}
	if s := zombie.Stats(); s.Failures != 1 || s.Batches != 0 {
		t.Fatalf("zombie stats %+v", s)
	}
}

// A zombie that read the tracking before another writer applied part of its
// batch, and everything else after, fails rather than publishing the applied
// part's results again.
func TestZombieOverlappingBatch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	batch := []wire.Record{
		e.record(0, cmd("create", "example", ids[0], `{}`)),
		e.record(0, cmd("create", "example", ids[1], `{}`)),
		e.record(0, cmd("update", "example", ids[0], `{"a": 1}`)),
	}
	zombie := e.writer(command.WriterConfig{})
	e.rec.afterTrack = append(e.rec.afterTrack, func() {
		// The zombie read -1; now the other writer applies the first two records.
		if err := e.w.HandleBatch(ctx, batch[:2]); err != nil {
			t.Error(err)
		}
	})
	before := len(e.log()) // 0
	err := zombie.HandleBatch(ctx, batch)
	if !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("zombie: %v, want ErrTrackingConflict", err)
	}
	if n := len(e.log()) - before; n != 4 { // the other writer's two events and two results
		t.Fatalf("log has %d items, want 4", n)
	}
	// The consumer seeks past the tracking and hands over the rest.
	e.handle(zombie, batch[2:]...)
	checkResult(t, e.result(batch2cmd(t, batch[2]).CommandID), wire.StatusAccepted, 2, 1)
}

func batch2cmd(t *testing.T, r wire.Record) wire.Command {
	t.Helper()
	c, err := wire.DecodeCommand(r.Value, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// After a failed commit, the same batch decides the same items.
func TestDeterministicRerun(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	a, acct := uuid.New(), uuid.New()
	e.handle(e.w, e.record(0, cmd("create", "example", a, `{"foo": "bar"}`)))
	batch := []wire.Record{
		e.record(0, cmd("update", "example", a, `{"foo": "baz", "x": [1, 2]}`)),
		e.record(0, "junk"),
		e.record(0, cmd("open", "account", acct, `{"owner": "ada"}`)),
		e.record(0, cmd("deposit", "account", acct, `{"amount": 5}`)),
		e.record(0, cmd("withdraw", "account", acct, `{"amount": 9}`)),
		e.record(0, cmd("discard", "example", a, "")),
	}
	boom := errors.New("connection reset")
	e.rec.failCommit = append(e.rec.failCommit, boom)
	if err := e.w.HandleBatch(context.Background(), batch); !errors.Is(err, boom) {
		t.Fatalf("HandleBatch: %v, want %v", err, boom)
	}
	first := e.rec.lastInserted()
	if e.eventCount(a) != 1 || e.tracking(0) != 0 {
		t.Fatal("a failed commit kept something")
	}
	e.handle(e.w, batch...)
	second := e.rec.lastInserted()
	if len(first) != len(second) || len(first) != 11 {
		t.Fatalf("%d items, then %d", len(first), len(second))
	}
	for i := range first {
		f, s := first[i], second[i]
		if f.SequenceID != s.SequenceID || f.Position != s.Position || f.Topic != s.Topic || f.Codec != s.Codec || !bytes.Equal(f.State, s.State) {
			t.Fatalf("item %d differs:\n%+v\n%+v", i, f, s)
		}
	}
}

func TestTransientErrorsReturned(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()
	r := e.record(0, cmd("create", "example", id, `{}`))
	e.rec.failCommit = append(e.rec.failCommit, errors.New("disk full"))
	if err := e.w.HandleBatch(context.Background(), []wire.Record{r}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("HandleBatch: %v", err)
	}
	e.handle(e.w, r)
	if e.eventCount(id) != 1 {
		t.Fatal("not applied on the second try")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.w.HandleBatch(ctx, []wire.Record{e.record(0, cmd("create", "example", uuid.New(), `{}`))}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if s := e.w.Stats(); s.Failures != 2 || s.Batches != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Ids that collide across sequences never stall a partition.
func TestIDCollisions(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	x, y := uuid.New(), uuid.New()
	e.handle(e.w, e.record(0, cmd("create", "example", x, `{}`)))

	self := cmd("create", "example", y, `{}`)
	self.CommandID = y // command_id = entity_id
	namesEntity := cmd("create", "example", uuid.New(), `{}`)
	namesEntity.CommandID = x // command_id = a stored entity's id
	asAccount := cmd("deposit", "account", x, `{"amount": 1}`)
	resultID := cmd("create", "example", uuid.New(), `{}`)
	onResult := cmd("create", "example", resultID.CommandID, `{}`)
	createZ := cmd("create", "example", uuid.New(), `{}`)
	idOfZ := cmd("create", "example", uuid.New(), `{}`)
	idOfZ.CommandID = createZ.EntityID

	e.handle(e.w,
		e.record(0, self), e.record(0, namesEntity), e.record(0, asAccount),
		e.record(0, resultID), e.record(0, onResult), e.record(0, createZ), e.record(0, idOfZ))
	if n := len(e.deadLetters()); n != 3 {
		t.Fatalf("%d dead letters, want 3", n)
	}
	checkResult(t, e.result(asAccount.CommandID), wire.StatusRejected, 0)
	checkResult(t, e.result(resultID.CommandID), wire.StatusAccepted, 1, 0)
	checkResult(t, e.result(onResult.CommandID), wire.StatusRejected, 0)
	checkResult(t, e.result(createZ.CommandID), wire.StatusAccepted, 1, 0)

	// A later batch addressing a result's sequence as an entity is rejected too.
	later := cmd("update", "example", resultID.CommandID, `{"a": 1}`)
	e.handle(e.w, e.record(0, later))
	checkResult(t, e.result(later.CommandID), wire.StatusRejected, 0)
}

// A handler that triggers events and then fails leaves no trace, and a panic
// rejects only its command.
func TestFailingHandlerRollsBack(t *testing.T) {
	reg := command.NewRegistry(events.NewRegistry())
	registerAccountEvents(reg.Events())
	cmds := map[string]command.Handler[*Account]{
		"open": accountCommands["open"],
		"deposit-then-fail": func(ctx context.Context, a *Account, c wire.Command) error {
			if err := events.Trigger(a, &Deposited{Amount: 1000}); err != nil {
				return err
			}
			return errors.New("changed my mind")
		},
		"panic": func(ctx context.Context, a *Account, c wire.Command) error {
			_ = events.Trigger(a, &Deposited{Amount: 1})
			panic("boom")
		},
		"foreign": func(ctx context.Context, a *Account, c wire.Command) error {
			return events.Trigger(a, &Foreign{})
		},
		"deposit":  accountCommands["deposit"],
		"withdraw": accountCommands["withdraw"],
	}
	if err := command.Register(reg, "account", newAccount, cmds); err != nil {
		t.Fatal(err)
	}
	reg.Events().MustRegister("other.Foreign", func() events.Event { return &Foreign{} })
	e := newEnv(t, command.WriterConfig{})
	w, err := command.NewWriter(e.rec, reg, events.NewMapper(reg.Events()), command.WriterConfig{TrackingName: "t2"})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	fail := cmd("deposit-then-fail", "account", id, "")
	boom := cmd("panic", "account", id, "")
	foreign := cmd("foreign", "account", id, "")
	withdraw := cmd("withdraw", "account", id, `{"amount": 20}`)
	e.handle(w,
		e.record(0, cmd("open", "account", id, `{"owner": "bo"}`)),
		e.record(0, cmd("deposit", "account", id, `{"amount": 10}`)),
		e.record(0, fail), e.record(0, boom), e.record(0, foreign), e.record(0, withdraw))
	checkResult(t, e.result(foreign.CommandID), wire.StatusRejected, 2)
	checkResult(t, e.result(fail.CommandID), wire.StatusRejected, 2)
	r := e.result(boom.CommandID)
	checkResult(t, r, wire.StatusRejected, 2)
	if !strings.Contains(r.Error, "panicked: boom") {
		t.Fatalf("panic result %q", r.Error)
	}
	checkResult(t, e.result(withdraw.CommandID), wire.StatusRejected, 2) // balance 10, not 1011
	if n := e.eventCount(id); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
}

// Foreign is an event of another entity type.
type Foreign struct{ events.Meta }

// A batch of new commands reads no result, and its cached aggregates cost
// nothing; uncached ones cost one read however many there are, or, from a
// recorder that reads one sequence at a time, each one's last item and
// history.
func TestCacheReads(t *testing.T) {
	for _, tc := range []struct {
		perSequence      bool
		cached, uncached int64 // reads of an update batch of n commands for n entities
	}{
		{false, 0, 1},
		{true, 0, 2},
	} {
		t.Run(fmt.Sprintf("perSequence=%v", tc.perSequence), func(t *testing.T) {
			for _, n := range []int64{1, 10} {
				for _, cacheSize := range []int{0, -1} {
					e := newEnvReads(t, command.WriterConfig{CacheSize: cacheSize, ReadConcurrency: 1}, tc.perSequence)
					ids := make([]uuid.UUID, n)
					var creates, updates []wire.Record
					for i := range ids {
						ids[i] = uuid.New()
						creates = append(creates, e.record(0, cmd("create", "example", ids[i], `{}`)))
					}
					for _, id := range ids {
						updates = append(updates, e.record(0, cmd("update", "example", id, `{"a": 1}`)))
					}
					e.handle(e.w, creates...)
					before := e.rec.selects.Load()
					e.handle(e.w, updates...)
					got := e.rec.selects.Load() - before
					want := tc.cached
					if cacheSize < 0 {
						want = tc.uncached
					}
					if tc.perSequence {
						want *= n
					}
					if got != want {
						t.Fatalf("%d commands, cache size %d: %d reads, want %d", n, cacheSize, got, want)
					}
				}
			}
		})
	}
}

// A cached aggregate that another writer appended to is not read again before
// use; the commit finds it stale, and the batch is decided again from the
// store: an accepted command's append conflicts, and a rejection or conflict
// decided on its unchanged state fails the check in the transaction.
func TestStaleCache(t *testing.T) {
	for _, perSequence := range []bool{false, true} {
		t.Run(fmt.Sprintf("perSequence=%v", perSequence), func(t *testing.T) {
			e := newEnvReads(t, command.WriterConfig{}, perSequence)
			other := e.plainWriter(command.WriterConfig{TrackingName: "other"})
			id := uuid.New()
			e.handle(e.w, e.record(0, cmd("create", "example", id, `{"a": 0}`))) // cached at version 1

			var st command.BatchStats
			w := e.writer(command.WriterConfig{OnBatch: func(b command.BatchStats) { st = b }})
			e.handle(w, e.record(0, cmd("update", "example", id, `{"a": 1}`))) // w caches version 2
			e.handle(other, e.record(5, cmd("update", "example", id, `{"b": 1}`)))

			// Decided on version 2 this would be accepted at position 2, taken.
			c1 := expect(cmd("update", "example", id, `{"a": 2}`), 2)
			e.handle(w, e.record(0, c1))
			checkResult(t, e.result(c1.CommandID), wire.StatusConflict, 3)
			if st.Attempts != 2 {
				t.Fatalf("attempts %d, want 2", st.Attempts)
			}

			// Rejected on a stale cache: nothing to append, so the transaction checks.
			e.handle(w, e.record(0, cmd("update", "example", id, `{"a": 3}`))) // w caches version 4
			e.handle(other, e.record(5, cmd("discard", "example", id, "")))
			c2 := cmd("create", "example", id, `{}`)
			e.handle(w, e.record(0, c2))
			r := e.result(c2.CommandID)
			checkResult(t, r, wire.StatusRejected, 5)
			if !strings.Contains(r.Error, "discarded") || st.Attempts != 2 {
				t.Fatalf("result %+v after %d attempts; want a rejection of the discarded entity after 2", r, st.Attempts)
			}
			if n := e.eventCount(id); n != 5 {
				t.Fatalf("%d events, want 5", n)
			}
		})
	}
}

func TestSnapshots(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	w := e.writer(command.WriterConfig{TrackingName: "snap", CacheSize: -1, Snapshots: e.rec, SnapshotEvery: 2})
	id := uuid.New()
	e.handle(w, e.record(0, cmd("create", "example", id, `{"a": 0}`)))
	for i := range 4 {
		e.handle(w, e.record(0, cmd("update", "example", id, fmt.Sprintf(`{"a": %d}`, i+1))))
	}
	snap, err := e.rec.LatestSnapshot(ctx, id, -1)
	if err != nil || snap.Topic != "example.Snapshot" {
		t.Fatalf("snapshot %+v, %v", snap, err)
	}
	c := cmd("update", "example", id, `{"a": 9}`)
	e.handle(w, e.record(0, c))
	checkResult(t, e.result(c.CommandID), wire.StatusAccepted, 6, 5)
}

func TestRegistry(t *testing.T) {
	reg := command.NewRegistry(events.NewRegistry())
	if err := command.RegisterEntity(reg, "example"); err != nil {
		t.Fatal(err)
	}
	if err := command.RegisterEntity(reg, "example"); err == nil {
		t.Fatal("registered twice")
	}
	if err := command.RegisterEntity(reg, "eventlog"); err == nil {
		t.Fatal("registered the reserved type")
	}
	if err := command.Register(reg, "Bad Type", newAccount, accountCommands); err == nil {
		t.Fatal("registered an invalid type")
	}
	if err := command.Register[*Account](reg, "account", newAccount, nil); err == nil {
		t.Fatal("registered no commands")
	}
	if got := reg.Commands("example"); !slices.Equal(got, []string{"create", "discard", "update"}) {
		t.Fatalf("commands %v", got)
	}
	if got := reg.EntityTypes(); !slices.Equal(got, []string{"example"}) {
		t.Fatalf("types %v", got)
	}
	if _, err := command.NewWriter(newHookRecorder(), reg, events.NewMapper(events.NewRegistry()), command.WriterConfig{}); err == nil {
		t.Fatal("NewWriter took a mapper of another registry")
	}
	if _, err := command.NewWriter(newHookRecorder(), reg, events.NewMapper(reg.Events()), command.WriterConfig{SnapshotEvery: 3}); err == nil {
		t.Fatal("NewWriter took SnapshotEvery without Snapshots")
	}
}

// The Writer satisfies the consumer-side interface the Kafka adapter declares.
var _ interface {
	HandleBatch(ctx context.Context, records []wire.Record) error
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
} = (*command.Writer)(nil)

var _ = entity.ErrInvalid

// Two writers handed the same batches at once: each batch is applied once.
func TestConcurrentSameBatch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	w2 := e.writer(command.WriterConfig{})
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	var all []wire.Command
	for round := range 20 {
		var batch []wire.Record
		for i := range 20 {
			id := ids[i%len(ids)]
			c := cmd("update", "example", id, fmt.Sprintf(`{"r%d": %d}`, round, i))
			if round == 0 && i < len(ids) {
				c = cmd("create", "example", id, `{}`)
			}
			all = append(all, c)
			batch = append(batch, e.record(0, c))
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, w := range []*command.Writer{e.w, w2} {
			wg.Go(func() { errs[i] = w.HandleBatch(ctx, batch) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && !errors.Is(err, store.ErrTrackingConflict) {
				t.Fatal(err)
			}
		}
	}
	for _, c := range all {
		if r := e.result(c.CommandID); r.Status != wire.StatusAccepted {
			t.Fatalf("result %+v", r)
		}
	}
	for _, id := range ids {
		got, err := e.repo.Get(ctx, id)
		if err != nil || len(got.Attributes) != 20 {
			t.Fatalf("%s: %d attributes, %v", id, len(got.Attributes), err)
		}
	}
}

// A writer that lost the tracking (here: another tracking name) applies nothing
// twice: results are published again, dead letters are not stored again.
func TestTrackingLost(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	id := uuid.New()
	create := cmd("create", "example", id, `{}`)
	batch := []wire.Record{e.record(0, create), e.record(0, "junk"), e.record(0, cmd("update", "example", id, `{"a": 1}`))}
	e.handle(e.w, batch...)
	other := e.writer(command.WriterConfig{TrackingName: "new-name"})
	e.handle(other, batch...)
	if n := e.eventCount(id); n != 2 {
		t.Fatalf("%d events", n)
	}
	if n := len(e.results(create.CommandID)); n != 2 {
		t.Fatalf("%d results", n)
	}
	if n := len(e.deadLetters()); n != 1 {
		t.Fatalf("%d dead letters", n)
	}
	if s := other.Stats(); s.Duplicates != 2 || s.DeadLetters != 0 || s.Accepted != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A record too large to store whole is dead-lettered without its payload.
func TestHugeRecordDeadLettered(t *testing.T) {
	e := newEnv(t, command.WriterConfig{})
	r := e.record(0, bytes.Repeat([]byte("x"), 13<<20))
	e.handle(e.w, r)
	dls := e.deadLetters()
	if len(dls) != 1 || dls[0].Value != nil || !strings.Contains(dls[0].Reason, "omitted") || dls[0].SourceOffset != r.Offset {
		t.Fatalf("dead letters %+v", dls)
	}
}

// Conflicts that persist through every retry fail the batch, storing nothing.
func TestConflictRetriesCapped(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, command.WriterConfig{})
	other := e.plainWriter(command.WriterConfig{TrackingName: "other"})
	id := uuid.New()
	e.handle(e.w, e.record(0, cmd("create", "example", id, `{}`)))
	for i := range 3 {
		e.rec.beforeTx = append(e.rec.beforeTx, func() {
			if err := other.HandleBatch(ctx, []wire.Record{e.record(9, cmd("update", "example", id, fmt.Sprintf(`{"o": %d}`, i)))}); err != nil {
				t.Error(err)
			}
		})
	}
	c := cmd("update", "example", id, `{"mine": 1}`)
	var st command.BatchStats
	w2 := e.writer(command.WriterConfig{MaxConflictRetries: 2, TrackingName: "capped", OnBatch: func(b command.BatchStats) { st = b }})
	err := w2.HandleBatch(ctx, []wire.Record{e.record(0, c)})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("HandleBatch: %v, want ErrConflict", err)
	}
	if st.Attempts != 3 || len(e.results(c.CommandID)) != 0 {
		t.Fatalf("attempts %d, results %d", st.Attempts, len(e.results(c.CommandID)))
	}
	// The next try, with no more interference, applies it after the others.
	e.handle(w2, e.record(0, c))
	checkResult(t, e.result(c.CommandID), wire.StatusAccepted, 5, 4)
}
