package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// parkRecorder returns a recorder that keeps parked sequences, or skips.
func (s *suite) parkRecorder(t *testing.T) (store.ProcessRecorder, store.ParkRecorder) {
	rec := s.newRecorder(t)
	pr, ok := rec.(store.ParkRecorder)
	if !ok {
		t.Skipf("%T does not implement store.ParkRecorder", rec)
	}
	return rec, pr
}

// parkTx runs fn in a transaction of rec, as a store.ParkTx.
func parkTx(t testing.TB, rec store.ProcessRecorder, fn func(tx store.Tx, p store.ParkTx) error) error {
	t.Helper()
	return rec.InTx(t.Context(), func(tx store.Tx) error {
		p, ok := tx.(store.ParkTx)
		if !ok {
			t.Fatalf("the recorder is a store.ParkRecorder but its Tx %T is not a store.ParkTx", tx)
		}
		return fn(tx, p)
	})
}

// stamp is a time that survives every backend (microseconds, UTC).
func stamp(sec int) time.Time {
	return time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC).Add(time.Duration(sec) * time.Second)
}

func parkedSeq(name string, id uuid.UUID, first, last int64, reason string) store.ParkedSequence {
	return store.ParkedSequence{
		Name: name, SequenceID: id, Entity: "example", First: first, Last: last, Count: last - first + 1,
		Reason: reason, ParkedAt: stamp(0), UpdatedAt: stamp(int(last)), Retries: 1,
	}
}

func parkedEvents(name string, id uuid.UUID, from, to int64) []store.ParkedEvent {
	var out []store.ParkedEvent
	for p := from; p <= to; p++ {
		out = append(out, store.ParkedEvent{
			Name: name, SequencedItem: Item(id, p), NotificationID: 1000 + p,
			RecordTopic: "eventlog.events.example", RecordPartition: 2, RecordOffset: 500 + p, ParkedAt: stamp(int(p)),
		})
	}
	return out
}

func sameSeq(a, b store.ParkedSequence) bool {
	return a.Name == b.Name && a.SequenceID == b.SequenceID && a.Entity == b.Entity && a.First == b.First && a.Last == b.Last &&
		a.Count == b.Count && a.Reason == b.Reason && a.ParkedAt.Equal(b.ParkedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.Retries == b.Retries && slices.Equal(a.Skipped, b.Skipped)
}

func checkSeq(t testing.TB, what string, got, want store.ParkedSequence) {
	t.Helper()
	if !sameSeq(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func checkParkedEvents(t testing.TB, what string, got, want []store.ParkedEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Name != w.Name || !sameItem(g.SequencedItem, w.SequencedItem) || g.NotificationID != w.NotificationID ||
			g.RecordTopic != w.RecordTopic || g.RecordPartition != w.RecordPartition || g.RecordOffset != w.RecordOffset ||
			!g.ParkedAt.Equal(w.ParkedAt) {
			t.Fatalf("%s: event %d:\n got  %+v\n want %+v", what, i, g, w)
		}
	}
}

func (s *suite) listParked(t testing.TB, pr store.ParkRecorder, q store.ParkedQuery) []store.ParkedSequence {
	t.Helper()
	got, err := pr.ListParked(t.Context(), q)
	if err != nil {
		t.Fatalf("ListParked(%+v): %v", q, err)
	}
	return got
}

// testParked: parked sequences and events round-trip, per projection name,
// and are listed, paged and counted.
func (s *suite) testParked(t *testing.T) {
	rec, pr := s.parkRecorder(t)
	ctx := t.Context()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	a := parkedSeq("alpha", ids[0], 3, 5, "refused")
	a.Skipped = []store.PositionRange{{From: 0, To: 0}, {From: 1, To: 2}}
	b := parkedSeq("alpha", ids[1], 0, 0, "bad state: a reason with 'quotes', \"more\" and ünïcode")
	c := parkedSeq("beta", ids[0], 7, 8, "other projection, same sequence")
	err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		got, err := p.ParkedSequences(ctx, "alpha", ids)
		if err != nil || len(got) != 0 {
			return fmt.Errorf("ParkedSequences of an empty store = %v, %v", got, err)
		}
		for _, seq := range []store.ParkedSequence{a, b, c} {
			if err := p.PutParkedSequence(ctx, seq); err != nil {
				return err
			}
		}
		evs := append(append(parkedEvents("alpha", ids[0], 3, 5), parkedEvents("alpha", ids[1], 0, 0)...), parkedEvents("beta", ids[0], 7, 8)...)
		if err := p.ParkEvents(ctx, evs); err != nil {
			return err
		}
		// Inside the transaction its own writes are seen.
		got, err = p.ParkedSequences(ctx, "alpha", ids)
		if err != nil {
			return err
		}
		if len(got) != 2 {
			return fmt.Errorf("ParkedSequences in the writing transaction: %d rows, want 2", len(got))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		got, err := p.ParkedSequences(ctx, "alpha", []uuid.UUID{ids[0], ids[2]})
		if err != nil {
			return err
		}
		if len(got) != 1 {
			return fmt.Errorf("ParkedSequences(alpha, [a, none]) = %d rows, want 1", len(got))
		}
		checkSeq(t, "ParkedSequences(alpha, a)", got[ids[0]], a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all := s.listParked(t, pr, store.ParkedQuery{})
	if len(all) != 3 {
		t.Fatalf("ListParked = %d sequences, want 3", len(all))
	}
	checkSeq(t, "ListParked[0]", all[0], a)
	checkSeq(t, "ListParked[1]", all[1], b)
	checkSeq(t, "ListParked[2]", all[2], c)
	if got := s.listParked(t, pr, store.ParkedQuery{Name: "beta"}); len(got) != 1 || !sameSeq(got[0], c) {
		t.Fatalf("ListParked(beta) = %+v, want only %+v", got, c)
	}
	if got := s.listParked(t, pr, store.ParkedQuery{SequenceID: ids[0]}); len(got) != 2 || got[0].Name != "alpha" || got[1].Name != "beta" {
		t.Fatalf("ListParked(sequence a) = %+v, want alpha's and beta's", got)
	}
	if got := s.listParked(t, pr, store.ParkedQuery{SequenceID: ids[2]}); len(got) != 0 {
		t.Fatalf("ListParked(unparked sequence) = %+v", got)
	}
	// Paging by (name, sequence id).
	var paged []store.ParkedSequence
	q := store.ParkedQuery{Limit: 1}
	for range 5 {
		page := s.listParked(t, pr, q)
		if len(page) == 0 {
			break
		}
		if len(page) > 1 {
			t.Fatalf("ListParked with limit 1 returned %d", len(page))
		}
		paged = append(paged, page...)
		q.AfterName, q.After = page[0].Name, page[0].SequenceID
	}
	if len(paged) != 3 || !sameSeq(paged[2], c) {
		t.Fatalf("paging gave %d sequences, want the 3 in order", len(paged))
	}
	// Events, per projection, in order, after a position, limited.
	got, err := pr.ParkedEvents(ctx, "alpha", ids[0], -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkParkedEvents(t, "ParkedEvents(alpha, a)", got, parkedEvents("alpha", ids[0], 3, 5))
	got, err = pr.ParkedEvents(ctx, "alpha", ids[0], 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkParkedEvents(t, "ParkedEvents(alpha, a, after 3, limit 1)", got, parkedEvents("alpha", ids[0], 4, 4))
	got, err = pr.ParkedEvents(ctx, "beta", ids[0], -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkParkedEvents(t, "ParkedEvents(beta, a)", got, parkedEvents("beta", ids[0], 7, 8))
	if got, err := pr.ParkedEvents(ctx, "gamma", ids[0], -1, 0); err != nil || len(got) != 0 {
		t.Fatalf("ParkedEvents of another projection = %v, %v", got, err)
	}
	counts, err := pr.CountParked(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ParkedCount{{Name: "alpha", Sequences: 2, Events: 4}, {Name: "beta", Sequences: 1, Events: 2}}
	if !slices.Equal(counts, want) {
		t.Fatalf("CountParked = %+v, want %+v", counts, want)
	}
}

// testParkedTake: TakeParkedEvents returns a sequence's events in order and
// deletes them (and only them); a rolled back take keeps them; a row with
// nothing parked stays only while it has skipped positions.
func (s *suite) testParkedTake(t *testing.T) {
	rec, pr := s.parkRecorder(t)
	ctx := t.Context()
	a, b := uuid.New(), uuid.New()
	err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		for _, seq := range []store.ParkedSequence{parkedSeq("p", a, 0, 3, "x"), parkedSeq("p", b, 2, 2, "y")} {
			if err := p.PutParkedSequence(ctx, seq); err != nil {
				return err
			}
		}
		// Out of order: the store keeps position order.
		evs := parkedEvents("p", a, 0, 3)
		evs[0], evs[3] = evs[3], evs[0]
		return p.ParkEvents(ctx, append(evs, parkedEvents("p", b, 2, 2)...))
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		got, err := p.TakeParkedEvents(ctx, "p", a)
		if err != nil {
			return err
		}
		checkParkedEvents(t, "TakeParkedEvents", got, parkedEvents("p", a, 0, 3))
		if again, err := p.TakeParkedEvents(ctx, "p", a); err != nil || len(again) != 0 {
			return fmt.Errorf("a second take in the transaction = %d events, %v; want none", len(again), err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if got, err := pr.ParkedEvents(ctx, "p", a, -1, 0); err != nil || len(got) != 4 {
		t.Fatalf("after a rolled back take: %d events, %v; want 4", len(got), err)
	}
	skipped := parkedSeq("p", a, 0, 3, "x")
	skipped.First, skipped.Last, skipped.Count = -1, -1, 0
	skipped.Skipped = []store.PositionRange{{From: 0, To: 3}}
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		if got, err := p.TakeParkedEvents(ctx, "p", a); err != nil || len(got) != 4 {
			return fmt.Errorf("take = %d events, %v; want 4", len(got), err)
		}
		if err := p.PutParkedSequence(ctx, skipped); err != nil {
			return err
		}
		// Nothing parked, nothing skipped: the row goes.
		gone := parkedSeq("p", b, 2, 2, "y")
		gone.First, gone.Last, gone.Count = -1, -1, 0
		if _, err := p.TakeParkedEvents(ctx, "p", b); err != nil {
			return err
		}
		return p.PutParkedSequence(ctx, gone)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.listParked(t, pr, store.ParkedQuery{}); len(got) != 0 {
		t.Fatalf("ListParked after the takes = %+v, want nothing parked", got)
	}
	got := s.listParked(t, pr, store.ParkedQuery{WithSkipped: true})
	if len(got) != 1 {
		t.Fatalf("ListParked(WithSkipped) = %+v, want the skipped row only", got)
	}
	checkSeq(t, "the skipped row", got[0], skipped)
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		rows, err := p.ParkedSequences(ctx, "p", []uuid.UUID{a, b})
		if err != nil {
			return err
		}
		if _, ok := rows[b]; ok || len(rows) != 1 {
			return fmt.Errorf("ParkedSequences after the takes = %+v, want a's skipped row only", rows)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if counts, err := pr.CountParked(ctx); err != nil || len(counts) != 0 {
		t.Fatalf("CountParked = %+v, %v; want none", counts, err)
	}
}

// testParkedConflict: parking a position parked already fails with a
// *store.ConflictError, keeps nothing of the call, and leaves the
// transaction usable.
func (s *suite) testParkedConflict(t *testing.T) {
	rec, pr := s.parkRecorder(t)
	ctx := t.Context()
	a, b := uuid.New(), uuid.New()
	if err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		return p.ParkEvents(ctx, parkedEvents("p", a, 0, 1))
	}); err != nil {
		t.Fatal(err)
	}
	err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		err := p.ParkEvents(ctx, append(parkedEvents("p", b, 0, 2), parkedEvents("p", a, 1, 1)...))
		var ce *store.ConflictError
		if !errors.As(err, &ce) || ce.SequenceID != a || ce.Position != 1 {
			return fmt.Errorf("ParkEvents over a parked position = %v, want a *store.ConflictError for %s/1", err, a)
		}
		// The same projection name parks the same position once; another
		// name has positions of its own.
		if err := p.ParkEvents(ctx, parkedEvents("q", a, 1, 1)); err != nil {
			return err
		}
		return p.ParkEvents(ctx, parkedEvents("p", a, 2, 2))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pr.ParkedEvents(ctx, "p", b, -1, 0); err != nil || len(got) != 0 {
		t.Fatalf("events of the failed call were kept: %d, %v", len(got), err)
	}
	got, err := pr.ParkedEvents(ctx, "p", a, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkParkedEvents(t, "after the conflict", got, parkedEvents("p", a, 0, 2))
	// Invalid input is refused before it reaches the database.
	for _, bad := range []store.ParkedSequence{
		{SequenceID: a, Count: 1, First: 0, Last: 0},
		{Name: "p", Count: 1, First: 0, Last: 0},
		{Name: "p", SequenceID: a, Count: 2, First: 3, Last: 1},
		{Name: "p", SequenceID: a, Skipped: []store.PositionRange{{From: 3, To: 4}, {From: 4, To: 5}}},
	} {
		err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error { return p.PutParkedSequence(ctx, bad) })
		if !errors.Is(err, store.ErrInvalidItem) {
			t.Fatalf("PutParkedSequence(%+v) = %v, want store.ErrInvalidItem", bad, err)
		}
	}
	badEvent := parkedEvents("p", a, 9, 9)
	badEvent[0].Topic = ""
	noName := parkedEvents("", a, 9, 9)
	for _, bad := range [][]store.ParkedEvent{badEvent, noName} {
		err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error { return p.ParkEvents(ctx, bad) })
		if !errors.Is(err, store.ErrInvalidItem) {
			t.Fatalf("ParkEvents(%+v) = %v, want store.ErrInvalidItem", bad, err)
		}
	}
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		return p.RecordParkAction(ctx, store.ParkAction{Name: "p", SequenceID: a, Action: "shrugged"})
	})
	if !errors.Is(err, store.ErrInvalidItem) {
		t.Fatalf("RecordParkAction of an unknown action = %v, want store.ErrInvalidItem", err)
	}
}

// testParkActions: the trail of retries and skips, oldest first, per
// projection and sequence; a rolled back action is not kept.
func (s *suite) testParkActions(t *testing.T) {
	rec, pr := s.parkRecorder(t)
	ctx := t.Context()
	a, b := uuid.New(), uuid.New()
	actions := []store.ParkAction{
		{Name: "p", SequenceID: a, Entity: "example", Action: store.ParkRetryFailed, Positions: store.PositionRange{From: 2, To: 5}, Count: 4, Reason: "still refused", At: stamp(1)},
		{Name: "p", SequenceID: b, Entity: "example", Action: store.ParkSkipped, Positions: store.PositionRange{From: 0, To: 0}, Count: 1, Reason: "ops: bad import, ticket 12", At: stamp(2)},
		{Name: "q", SequenceID: a, Entity: "example", Action: store.ParkSkipped, Positions: store.PositionRange{From: 2, To: 2}, Count: 1, Reason: "other", At: stamp(3)},
		{Name: "p", SequenceID: a, Entity: "example", Action: store.ParkRetried, Positions: store.PositionRange{From: 2, To: 6}, Count: 5, At: stamp(4)},
	}
	for _, act := range actions {
		if err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error { return p.RecordParkAction(ctx, act) }); err != nil {
			t.Fatal(err)
		}
	}
	boom := errors.New("boom")
	if err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		if err := p.RecordParkAction(ctx, actions[0]); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	same := func(x, y store.ParkAction) bool {
		return x.Name == y.Name && x.SequenceID == y.SequenceID && x.Entity == y.Entity && x.Action == y.Action &&
			x.Positions == y.Positions && x.Count == y.Count && x.Reason == y.Reason && x.At.Equal(y.At)
	}
	for _, tc := range []struct {
		name  string
		seq   uuid.UUID
		limit int
		want  []store.ParkAction
	}{
		{"p", uuid.Nil, 0, []store.ParkAction{actions[0], actions[1], actions[3]}},
		{"p", a, 0, []store.ParkAction{actions[0], actions[3]}},
		{"p", uuid.Nil, 1, []store.ParkAction{actions[0]}},
		{"q", a, 0, []store.ParkAction{actions[2]}},
		{"r", uuid.Nil, 0, nil},
	} {
		got, err := pr.ParkActions(ctx, tc.name, tc.seq, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("ParkActions(%s, %s, %d) = %d actions, want %d", tc.name, tc.seq, tc.limit, len(got), len(tc.want))
		}
		for i := range got {
			if !same(got[i], tc.want[i]) {
				t.Fatalf("ParkActions(%s, %s, %d)[%d] = %+v, want %+v", tc.name, tc.seq, tc.limit, i, got[i], tc.want[i])
			}
		}
	}
}

// testParkedLock: transactions that read a parked sequence with
// ParkedSequences and then extend it take turns: none reads a row another
// has changed but not committed, so no extension is lost and none parks the
// same position twice.
func (s *suite) testParkedLock(t *testing.T) {
	rec, pr := s.parkRecorder(t)
	ctx := t.Context()
	id := uuid.New()
	if err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		if err := p.PutParkedSequence(ctx, parkedSeq("p", id, 0, 0, "x")); err != nil {
			return err
		}
		return p.ParkEvents(ctx, parkedEvents("p", id, 0, 0))
	}); err != nil {
		t.Fatal(err)
	}
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			errs <- rec.InTx(ctx, func(tx store.Tx) error {
				p := tx.(store.ParkTx)
				rows, err := p.ParkedSequences(ctx, "p", []uuid.UUID{id})
				if err != nil {
					return err
				}
				seq := rows[id]
				next := seq.Last + 1
				time.Sleep(time.Millisecond) // let the others try in between
				if err := p.ParkEvents(ctx, parkedEvents("p", id, next, next)); err != nil {
					return err
				}
				seq.Last, seq.Count = next, seq.Count+1
				return p.PutParkedSequence(ctx, seq)
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a transaction extending the parked sequence failed: %v (the rows were not locked)", err)
		}
	}
	got := s.listParked(t, pr, store.ParkedQuery{Name: "p"})
	if len(got) != 1 || got[0].Count != n+1 || got[0].Last != n {
		t.Fatalf("after %d extensions: %+v, want %d events up to position %d", n, got, n+1, n)
	}
	evs, err := pr.ParkedEvents(ctx, "p", id, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkParkedEvents(t, "the extended sequence", evs, parkedEvents("p", id, 0, n))
}

// testParkedTracking: a store.TrackingParkTx records tracking and reads the
// parked rows in one call, as SetTrackings and ParkedSequences would.
func (s *suite) testParkedTracking(t *testing.T) {
	rec, _ := s.parkRecorder(t)
	ctx := t.Context()
	a, b := uuid.New(), uuid.New()
	var supported bool
	err := parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		if _, supported = tx.(store.TrackingParkTx); !supported {
			return nil
		}
		return p.PutParkedSequence(ctx, parkedSeq("p", a, 2, 3, "x"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if !supported {
		t.Skip("the recorder's Tx is not a store.TrackingParkTx")
	}
	tr := func(partition int32, pos int64) store.Tracking {
		return store.Tracking{Name: "p", Topic: "t", Partition: partition, Position: pos}
	}
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		rows, err := tx.(store.TrackingParkTx).SetTrackingsParked(ctx, []store.Tracking{tr(0, 5), tr(0, 7), tr(1, 2)}, "p", []uuid.UUID{a, b})
		if err != nil {
			return err
		}
		if len(rows) != 1 {
			return fmt.Errorf("SetTrackingsParked returned %d rows, want a's", len(rows))
		}
		checkSeq(t, "SetTrackingsParked", rows[a], parkedSeq("p", a, 2, 3, "x"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[int32]int64{0: 7, 1: 2} {
		if got, err := rec.Tracking(ctx, "p", "t", p); err != nil || got != want {
			t.Fatalf("Tracking(p, t, %d) = %d, %v; want %d", p, got, err, want)
		}
	}
	// A position that does not move forward fails the call and the
	// transaction, even if fn swallows the error.
	err = parkTx(t, rec, func(tx store.Tx, p store.ParkTx) error {
		_, err := tx.(store.TrackingParkTx).SetTrackingsParked(ctx, []store.Tracking{tr(1, 9), tr(0, 6)}, "p", []uuid.UUID{a})
		var tce *store.TrackingConflictError
		if !errors.As(err, &tce) || tce.Tracking.Partition != 0 || tce.Stored != 7 {
			return fmt.Errorf("SetTrackingsParked over a newer position = %v, want a conflict naming partition 0 at 7", err)
		}
		return nil
	})
	if !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("InTx after a swallowed conflict = %v, want store.ErrTrackingConflict", err)
	}
	if got, _ := rec.Tracking(ctx, "p", "t", 1); got != 2 {
		t.Fatalf("the failed transaction moved tracking to %d", got)
	}
}
