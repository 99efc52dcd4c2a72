package pgreadmodel_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

func TestRebuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(11, 11))
	projtest.History(t, rng, e.mapper, e.rec, 30, 400)
	logA := e.log(t)
	live := e.runner(t, e.rm)
	(&projtest.Consumer{T: t, Rng: rng, Handler: live, Name: name, MaxBatch: 50}).Run(projtest.Publish(rng, logA, 2, 0))
	before := e.rows(t)

	// A quiet rebuild gives the live tables again.
	var calls [][2]int64
	st, err := e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{
		PageSize: 100,
		Progress: func(done, total int64) { calls = append(calls, [2]int64{done, total}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if diffs := projtest.CompareRows(e.rows(t), rowMap(before)); len(diffs) > 0 {
		t.Fatalf("rebuilt tables differ from the live ones in %d rows:\n%s", len(diffs), strings.Join(diffs[:min(10, len(diffs))], "\n"))
	}
	if st.Applied != int64(len(logA)) || st.Skipped != 0 || st.Last < logA[len(logA)-1].ID {
		t.Errorf("stats %+v, want %d applied up to at least %d", st, len(logA), logA[len(logA)-1].ID)
	}
	if len(calls) < len(logA)/100 {
		t.Errorf("progress called %d times for %d pages", len(calls), len(logA)/100)
	}
	for i, c := range calls {
		if c[0] > c[1] || (i > 0 && c[0] < calls[i-1][0]) {
			t.Fatalf("progress %v after %v", c, calls[max(0, i-1)])
		}
	}
	if last := calls[len(calls)-1]; last[0] != last[1] || last[1] != st.Last {
		t.Errorf("last progress %v, want done = total = %d", last, st.Last)
	}

	// A rebuild under load: queries, the live runner catching up, and new
	// events written while it runs.
	projtest.History(t, rng, e.mapper, e.rec, 10, 200) // B: the live runner has not seen it
	logAB := e.log(t)
	var ids []struct {
		typ string
		id  uuid.UUID
	}
	for _, r := range before {
		if !r.Discarded {
			ids = append(ids, struct {
				typ string
				id  uuid.UUID
			}{r.Type, r.ID})
		}
	}
	stop := make(chan struct{})
	var gets atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for {
				select {
				case <-stop:
					return
				default:
				}
				x := ids[rng.IntN(len(ids))]
				if _, err := e.rm.Get(ctx, x.typ, x.id); err != nil {
					t.Errorf("Get during the rebuild: %v", err)
					return
				}
				gets.Add(1)
			}
		})
	}
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	var second error
	go func() {
		_, err := e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{
			PageSize: 20,
			Progress: func(int64, int64) {
				once.Do(func() {
					_, second = e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{})
					close(started)
				})
				time.Sleep(time.Millisecond)
			},
		})
		done <- err
	}()
	<-started
	if !errors.Is(second, pgreadmodel.ErrRebuildRunning) {
		t.Errorf("a second rebuild while one runs: %v, want ErrRebuildRunning", second)
	}
	// While it runs: the live runner consumes B, and C is written.
	(&projtest.Consumer{T: t, Rng: rng, Handler: live, Name: name, MaxBatch: 10}).Run(projtest.Publish(rng, logAB, 2, 0))
	projtest.History(t, rng, e.mapper, e.rec, 10, 200) // C
	if err := <-done; err != nil {
		t.Fatalf("rebuild under load: %v", err)
	}
	close(stop)
	wg.Wait()
	if gets.Load() == 0 {
		t.Error("no Get ran during the rebuild")
	}
	// The live runner catches up with C; the tables then equal the fold of
	// the whole log.
	logABC := e.log(t)
	(&projtest.Consumer{T: t, Rng: rng, Handler: live, Name: name, MaxBatch: 50}).Run(projtest.Publish(rng, logABC, 2, 0))
	e.check(t, logABC)
	t.Logf("%d Gets during the rebuild; live runner stats %+v", gets.Load(), live.Stats())
}

// TestRebuildAndPoison rebuilds from a log holding items the live runner
// parked: the rebuild leaves them out and they stay parked (or, ignoring
// parking, skips them); a bad event the live runner has not met yet is
// parked by the rebuild, with its sequence's later events.
func TestRebuildAndPoison(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(12, 12))
	projtest.History(t, rng, e.mapper, e.rec, 5, 50)
	bad := []store.SequencedItem{
		{SequenceID: uuid.New(), Topic: "example.Created", State: []byte(`{"attributes": {`), Codec: "json"},
		{SequenceID: uuid.New(), Topic: "example.Created", State: []byte(`{"attributes": {"1bad": 1}}`), Codec: "json"},
		{SequenceID: uuid.New(), Topic: "other.Created", State: []byte(`{}`), Codec: "json"},
	}
	if _, err := e.rec.InsertEvents(ctx, bad); err != nil {
		t.Fatal(err)
	}
	projtest.History(t, rng, e.mapper, e.rec, 5, 50)
	log := e.log(t)
	var good, kept []store.Notification // kept: on the topics the projector reads
	for _, n := range log {
		if events.EntityOf(n.Topic) != "other" {
			kept = append(kept, n)
		}
		if n.SequenceID != bad[0].SequenceID && n.SequenceID != bad[1].SequenceID && n.SequenceID != bad[2].SequenceID {
			good = append(good, n)
		}
	}
	live := e.runner(t, e.rm)
	(&projtest.Consumer{T: t, Rng: rng, Handler: live, Name: name, MaxBatch: 30}).Run(projtest.Publish(rng, kept, 1, 0))
	if n := live.Stats().DeadLetters; n != 2 {
		t.Errorf("%d dead letters, want 2", n)
	}
	e.check(t, good)
	before := e.rows(t)
	// The live runner parked the two: the rebuild leaves them out, parked.
	st, err := e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Held != 2 || st.Skipped != 0 || st.Parked != 0 {
		t.Errorf("rebuild %+v, want the 2 parked events held", st)
	}
	if diffs := projtest.CompareRows(e.rows(t), rowMap(before)); len(diffs) > 0 {
		t.Fatalf("rebuilt tables differ: %v", diffs)
	}
	// Without regard to parking, they are skipped.
	st, err = e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{IgnoreParked: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 2 || st.Held != 0 {
		t.Errorf("rebuild ignoring parking: %+v, want 2 skipped", st)
	}
	// A bad event the live runner has not met yet: the rebuild parks it,
	// and its sequence's later events.
	seq := uuid.New()
	later := []store.SequencedItem{
		{SequenceID: seq, Position: 0, Topic: "example.Created", State: []byte(`{"attributes": {"fine": 1}}`), Codec: "json"},
		{SequenceID: seq, Position: 1, Topic: "example.AttributeChanged", State: []byte(`{"name": "not fine", "value": 2}`), Codec: "json"},
		{SequenceID: seq, Position: 2, Topic: "example.AttributeChanged", State: []byte(`{"name": "fine", "value": 3}`), Codec: "json"},
	}
	if _, err := e.rec.InsertEvents(ctx, later); err != nil {
		t.Fatal(err)
	}
	// A rebuild reads the log up to its horizon, which another test's open
	// transaction holds back: wait until the log shows them.
	e.log(t)
	st, err = e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Parked != 1 || st.Skipped != 1 || st.Held != 3 {
		t.Errorf("rebuild %+v, want 1 sequence parked, its bad event failed, it and the 2 others held", st)
	}
	parked, err := e.rec.ListParked(ctx, store.ParkedQuery{Name: name, SequenceID: seq})
	if err != nil || len(parked) != 1 || parked[0].First != 1 || parked[0].Last != 2 || !strings.Contains(parked[0].Reason, "rebuild") {
		t.Fatalf("parked %+v, %v; want %s parked from 1 to 2 by the rebuild", parked, err, seq)
	}
	row, err := e.rm.Get(ctx, "example", seq)
	if err != nil || row.Version != 1 {
		t.Fatalf("row %+v, %v; want version 1 (the event before the bad one)", row, err)
	}
	// The live runner then meets them: parked already, not applied.
	var recs []wire.Record
	for _, n := range e.log(t) {
		if n.SequenceID == seq {
			recs = append(recs, projection.RecordOf(n, "late", 0, int64(len(recs))))
		}
	}
	if err := live.HandleBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if row, err := e.rm.Get(ctx, "example", seq); err != nil || row.Version != 1 {
		t.Fatalf("after the live runner: row %+v, %v; want version 1", row, err)
	}
}
