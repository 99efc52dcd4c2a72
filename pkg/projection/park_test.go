package projection_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// parkTarget is a store a runner parks into.
type parkTarget interface {
	store.ProcessRecorder
	store.ParkRecorder
}

// targets are the backends the parking tests run against: memory, a SQLite
// file, and PostgreSQL where there is one.
var targets = []struct {
	name string
	make func(t *testing.T) parkTarget
}{
	{"memory", func(t *testing.T) parkTarget { return memory.New() }},
	{"sqlite", func(t *testing.T) parkTarget {
		rec, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "target.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Close() })
		return rec
	}},
	{"postgres", func(t *testing.T) parkTarget {
		rec, err := postgres.New(t.Context(), pgtest.Pool(t), postgres.Options{Schema: pgtest.Schema(t), Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Close() })
		return rec
	}},
}

func eachTarget(t *testing.T, f func(t *testing.T, target parkTarget)) {
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f(t, tc.make(t))
		})
	}
}

// parkScene is a random history of a few entities, one of which (x) the
// policy refuses at position k, published with duplicates and gaps.
type parkScene struct {
	t      *testing.T
	rng    *rand.Rand
	src    *memory.Recorder
	log    []store.Notification
	x      *entity.Entity
	k, n   int64 // the refused position, x's last
	f      *projtest.Fault
	target parkTarget
	cfg    projection.Config
	logs   *logRecords
}

// logRecords keeps the records logged.
type logRecords struct {
	mu  sync.Mutex
	all []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// with returns the records whose message starts with prefix, each as its
// attributes.
func (l *logRecords) with(prefix string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.all {
		if !strings.HasPrefix(r.Message, prefix) {
			continue
		}
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		out = append(out, m)
	}
	return out
}

func newParkScene(t *testing.T, target parkTarget, seed uint64) *parkScene {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	mapper := newMapper(t)
	src := memory.New()
	ents := projtest.History(t, rng, mapper, src, 6, 240)
	s := &parkScene{t: t, rng: rng, src: src, log: notifications(t, src), target: target}
	for _, e := range ents { // the live entity with the most events
		if !e.Discarded() && (s.x == nil || e.Version() > s.x.Version()) {
			s.x = e
		}
	}
	s.n = s.x.Version() - 1
	s.k = 2 + rng.Int64N(s.n/2)
	s.f = projtest.NewFault(s.x.ID(), s.k)
	s.logs = &logRecords{}
	s.cfg = projection.Config{Name: name, Policy: counting{projtest.Faulty(decodingCopy{}, s.f)}, Mapper: mapper, Source: src,
		RetryBackoff: time.Millisecond, Logger: slog.New(s.logs)}
	return s
}

func (s *parkScene) runner() *projection.Runner {
	s.t.Helper()
	return newRunner(s.t, s.target, s.cfg)
}

// restarting hands batches to a new runner every few batches, as a
// projector restarted, or a partition moved to another process, would.
type restarting struct {
	s   *parkScene
	cur *projection.Runner
	n   int
}

func (h *restarting) HandleBatch(ctx context.Context, recs []wire.Record) error {
	if h.n++; h.cur == nil || h.n%4 == 0 {
		h.cur = h.s.runner()
	}
	return h.cur.HandleBatch(ctx, recs)
}

func (h *restarting) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	if h.cur == nil {
		h.cur = h.s.runner()
	}
	return h.cur.Tracking(ctx, name, topic, partition)
}

// feed consumes a stream of log, with duplicates, gaps and redeliveries,
// through restarting runners.
func (s *parkScene) feed(log []store.Notification) {
	s.t.Helper()
	c := &projtest.Consumer{T: s.t, Rng: s.rng, Handler: &restarting{s: s}, Name: name, MaxBatch: 12, Redeliver: 0.2}
	c.Run(projtest.Publish(s.rng, log, 2, 0.1))
}

// checkApplied asserts that every event of log was applied once, but x's
// positions in skip (applied never).
func (s *parkScene) checkApplied(skip store.PositionRange) {
	s.t.Helper()
	for _, n := range s.log {
		got, err := s.target.SelectEvents(s.t.Context(), markerID(n.SequenceID, n.Position), store.Query{})
		if err != nil {
			s.t.Fatal(err)
		}
		want := 1
		if n.SequenceID == s.x.ID() && skip.Contains(n.Position) {
			want = 0
		}
		if len(got) != want {
			s.t.Errorf("position %d of %s applied %d times, want %d", n.Position, n.SequenceID, len(got), want)
		}
	}
}

// checkParked asserts that x, and only x, is parked, from position first
// to s.n, and returns its row.
func (s *parkScene) checkParked(first int64) store.ParkedSequence {
	s.t.Helper()
	ctx := s.t.Context()
	rows, err := s.target.ListParked(ctx, store.ParkedQuery{})
	if err != nil {
		s.t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].SequenceID != s.x.ID() || rows[0].Name != name {
		s.t.Fatalf("parked %+v, want only %s", rows, s.x.ID())
	}
	row := rows[0]
	if row.First != first || row.Last != s.n || row.Count != s.n-first+1 || row.Entity != s.x.Type {
		s.t.Fatalf("parked row %+v, want %s positions %d to %d", row, s.x.Type, first, s.n)
	}
	evs, err := s.target.ParkedEvents(ctx, name, s.x.ID(), -1, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	var want []store.SequencedItem
	for _, n := range s.log {
		if n.SequenceID == s.x.ID() && n.Position >= first {
			want = append(want, n.SequencedItem)
		}
	}
	if len(evs) != len(want) {
		s.t.Fatalf("%d parked events, want %d", len(evs), len(want))
	}
	for i := range evs {
		if !sameItem(evs[i].SequencedItem, want[i]) {
			s.t.Fatalf("parked event %d = %+v, want %+v", i, evs[i].SequencedItem, want[i])
		}
	}
	return row
}

func sameItem(a, b store.SequencedItem) bool {
	return a.SequenceID == b.SequenceID && a.Position == b.Position && a.Topic == b.Topic && a.Codec == b.Codec && string(a.State) == string(b.State)
}

// TestParkSequence: a policy that fails on event k of entity x parks x's
// events k..n in order, through restarts and redeliveries, while every other
// entity is applied in full; the failing event is dead-lettered once. Once
// the fault is gone, a retry applies k..n exactly once, and x's later events
// flow again.
func TestParkSequence(t *testing.T) {
	t.Parallel()
	for _, unattributed := range []bool{false, true} {
		t.Run(fmt.Sprintf("unattributed=%v", unattributed), func(t *testing.T) {
			t.Parallel()
			eachTarget(t, func(t *testing.T, target parkTarget) {
				s := newParkScene(t, target, 1)
				s.f.Unattributed = unattributed
				s.feed(s.log)
				s.checkApplied(store.PositionRange{From: s.k, To: s.n})
				row := s.checkParked(s.k)
				if !strings.Contains(row.Reason, fmt.Sprintf("event %d of %s refused", s.k, s.x.ID())) {
					t.Errorf("reason %q does not say why", row.Reason)
				}
				// Logged once, though several runners handled x's later
				// events, saying which entity and why.
				parkedLogs := s.logs.with("projection: sequence parked")
				if len(parkedLogs) != 1 || parkedLogs[0]["sequence_id"] != s.x.ID().String() || parkedLogs[0]["entity"] != s.x.Type ||
					parkedLogs[0]["position"] != fmt.Sprint(s.k) || !strings.Contains(parkedLogs[0]["reason"], "refused") {
					t.Errorf("parking logged %v, want once with the entity, position and reason", parkedLogs)
				}
				// The failing event reached the dead letters, once.
				dls := deadLetters(t, target)
				if len(dls) != 1 || !strings.Contains(dls[0].Reason, "refused") {
					t.Fatalf("dead letters %+v, want the refused event once", dls)
				}

				// Fault removed: the retry applies k..n once.
				s.f.On.Store(false)
				dl, err := projection.NewDeadLetters(s.runner())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := dl.Retry(t.Context(), name, "no-such-entity", s.x.ID()); !errors.Is(err, projection.ErrNotParked) {
					t.Fatalf("retry naming another entity type = %v, want ErrNotParked", err)
				}
				res, err := dl.Retry(t.Context(), name, s.x.Type, s.x.ID())
				if err != nil {
					t.Fatal(err)
				}
				if res.Parked || res.Applied != int(s.n-s.k+1) || res.Positions != (store.PositionRange{From: s.k, To: s.n}) {
					t.Fatalf("retry %+v, want positions %d to %d applied", res, s.k, s.n)
				}
				s.checkApplied(store.PositionRange{From: 1, To: 0})
				if rows, _ := target.ListParked(t.Context(), store.ParkedQuery{}); len(rows) != 0 {
					t.Fatalf("still parked after the retry: %+v", rows)
				}
				if _, err := dl.Retry(t.Context(), name, "", s.x.ID()); !errors.Is(err, projection.ErrNotParked) {
					t.Fatalf("second retry = %v, want ErrNotParked", err)
				}
				acts, err := target.ParkActions(t.Context(), name, s.x.ID(), 0)
				if err != nil || len(acts) != 1 || acts[0].Action != store.ParkRetried || acts[0].Count != s.n-s.k+1 {
					t.Fatalf("actions %+v, %v; want one retry of %d events", acts, err, s.n-s.k+1)
				}
				det, err := dl.Show(t.Context(), name, s.x.Type, s.x.ID())
				if err != nil || det.Sequence.Parked() || len(det.Actions) != 1 {
					t.Fatalf("show after the retry = %+v, %v", det, err)
				}

				// Later events of x are applied as usual.
				before := len(s.log)
				s.more(3)
				var recs []wire.Record
				for i, n := range s.log[before:] {
					recs = append(recs, projection.RecordOf(n, "later", 0, int64(i)))
				}
				if err := s.runner().HandleBatch(t.Context(), recs); err != nil {
					t.Fatal(err)
				}
				s.checkApplied(store.PositionRange{From: 1, To: 0})
			})
		})
	}
}

// more appends n events of x to the source.
func (s *parkScene) more(n int) {
	s.t.Helper()
	es := store.NewEventStore(newMapper(s.t), s.src)
	for i := range n {
		if err := s.x.Set("later", i); err != nil {
			s.t.Fatal(err)
		}
	}
	if _, err := es.Put(s.t.Context(), s.x.PendingEvents()...); err != nil {
		s.t.Fatal(err)
	}
	s.x.CollectEvents()
	s.log = notifications(s.t, s.src)
}

// TestParkTransient: a transient failure attributed to an event that heals
// within the retry budget parks nothing; one that does not heals parks.
func TestParkTransient(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, target parkTarget) {
		s := newParkScene(t, target, 2)
		s.f.On.Store(false)
		s.f.Transient.Store(2) // the budget is 3
		r := s.runner()
		recs := flatten(publish(s.rng, s.log, 1, 0))
		if err := r.HandleBatch(t.Context(), recs); err != nil {
			t.Fatal(err)
		}
		s.checkApplied(store.PositionRange{From: 1, To: 0})
		if rows, _ := target.ListParked(t.Context(), store.ParkedQuery{}); len(rows) != 0 {
			t.Fatalf("a healed transient failure parked %+v", rows)
		}
		if st := r.Stats(); st.Parked != 0 || st.Retries != 2 || s.f.Hits.Load() != 3 {
			t.Fatalf("stats %+v, %d hits; want 2 retries, 3 tries of the event and nothing parked", st, s.f.Hits.Load())
		}
	})
	eachTarget(t, func(t *testing.T, target parkTarget) {
		s := newParkScene(t, target, 3)
		s.f.On.Store(false)
		s.f.Transient.Store(1000)
		s.cfg.TransientRetries = 2
		r := s.runner()
		if err := r.HandleBatch(t.Context(), flatten(publish(s.rng, s.log, 1, 0))); err != nil {
			t.Fatal(err)
		}
		row := s.checkParked(s.k)
		if !strings.Contains(row.Reason, "failed 3 times") || !strings.Contains(row.Reason, "i/o timeout") {
			t.Errorf("reason %q does not say it failed 3 times", row.Reason)
		}
		if got := s.f.Hits.Load(); got != 3 {
			t.Errorf("the event was tried %d times, want 3", got)
		}
		// Without a budget the error is returned, and nothing is committed.
		s2 := newParkScene(t, memory.New(), 3)
		s2.f.On.Store(false)
		s2.f.Transient.Store(1000)
		s2.cfg.TransientRetries = -1
		err := s2.runner().HandleBatch(t.Context(), flatten(publish(s2.rng, s2.log, 1, 0)))
		if err == nil || projection.IsPermanent(err) || !strings.Contains(err.Error(), "i/o timeout") {
			t.Fatalf("without a budget: %v, want the transient error", err)
		}
	})
}

// TestParkSkip: a skip applies nothing of the parked events, records the
// reason, and the sequence's later events are applied after the skipped
// ones (a gap never fills with them).
func TestParkSkip(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, target parkTarget) {
		s := newParkScene(t, target, 4)
		s.feed(s.log)
		s.checkParked(s.k)
		dl, err := projection.NewDeadLetters(s.runner())
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		if _, err := dl.Skip(ctx, name, s.x.Type, s.x.ID(), "  "); !errors.Is(err, projection.ErrNoReason) {
			t.Fatalf("skip without a reason = %v, want ErrNoReason", err)
		}
		s.checkParked(s.k)
		res, err := dl.Skip(ctx, name, s.x.Type, s.x.ID(), "bad import, ticket OPS-12")
		if err != nil {
			t.Fatal(err)
		}
		skipped := store.PositionRange{From: s.k, To: s.n}
		if res.Events != int(s.n-s.k+1) || res.Positions != skipped {
			t.Fatalf("skip %+v, want positions %v", res, skipped)
		}
		acts, err := target.ParkActions(ctx, name, s.x.ID(), 0)
		if err != nil || len(acts) != 1 || acts[0].Action != store.ParkSkipped || acts[0].Reason != "bad import, ticket OPS-12" || acts[0].Positions != skipped {
			t.Fatalf("actions %+v, %v; want the skip with its reason", acts, err)
		}
		if _, err := dl.Retry(ctx, name, "", s.x.ID()); !errors.Is(err, projection.ErrNotParked) {
			t.Fatalf("retry after skip = %v, want ErrNotParked", err)
		}
		s.f.On.Store(false) // nothing may apply the skipped events now
		// The skipped events arrive again (redelivered, replayed): never
		// applied. Later events, delivered after a gap: applied, with only
		// the missing later one read from the source.
		before := len(s.log)
		s.more(3)
		r := s.runner()
		var recs []wire.Record
		for i, n := range s.log {
			if n.SequenceID == s.x.ID() && (n.Position >= s.k && n.Position <= s.n || i == before+2) {
				recs = append(recs, projection.RecordOf(n, "replay", 0, int64(len(recs))))
			}
		}
		if err := r.HandleBatch(ctx, recs); err != nil {
			t.Fatal(err)
		}
		s.checkApplied(skipped)
		if st := r.Stats(); st.Repaired != 2 || st.Applied != 3 {
			t.Errorf("stats %+v, want the 2 later events before the last repaired, 3 applied", st)
		}
		copied, err := target.SelectEvents(ctx, s.x.ID(), store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range copied {
			if skipped.Contains(it.Position) {
				t.Fatalf("skipped position %d reached the policy", it.Position)
			}
		}
	})
}

// TestParkRetryFailsAgain: a retry that meets a failing event applies the
// ones before it and parks it and the rest again with the new reason.
func TestParkRetryFailsAgain(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, target parkTarget) {
		s := newParkScene(t, target, 5)
		s.feed(s.log)
		first := s.checkParked(s.k)
		s.f.Pos.Store(s.k + 1)
		r := s.runner()
		res, err := r.Retry(t.Context(), s.x.ID())
		if err != nil {
			t.Fatal(err)
		}
		if !res.Parked || res.First != s.k+1 || res.Applied != 1 || !strings.Contains(res.Reason, fmt.Sprintf("event %d", s.k+1)) {
			t.Fatalf("retry %+v, want position %d applied and %d parked again", res, s.k, s.k+1)
		}
		row := s.checkParked(s.k + 1)
		if row.Retries != 1 || !row.ParkedAt.Equal(first.ParkedAt) || !strings.Contains(row.Reason, fmt.Sprintf("event %d", s.k+1)) {
			t.Fatalf("row after a failed retry %+v, want 1 retry, first parked at %v, the new reason", row, first.ParkedAt)
		}
		s.checkApplied(store.PositionRange{From: s.k + 1, To: s.n})
		acts, _ := target.ParkActions(t.Context(), name, s.x.ID(), 0)
		if len(acts) != 1 || acts[0].Action != store.ParkRetryFailed {
			t.Fatalf("actions %+v, want the failed retry", acts)
		}
		if st := r.Stats(); st.RetryFailures != 1 || st.Retried != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestParkRetryRacesRunner retries a parked sequence again and again, from
// a runner of its own (an operator's), while the live runner handles the
// sequence's later events: each event is applied exactly once, whoever
// gets it.
func TestParkRetryRacesRunner(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, target parkTarget) {
		s := newParkScene(t, target, 6)
		// The first part of the log: x parks.
		var cut int
		for i, n := range s.log {
			if n.SequenceID == s.x.ID() && n.Position == s.k+2 {
				cut = i + 1
			}
		}
		recs := flatten(projtest.Publish(s.rng, s.log, 1, 0))
		live, operator := s.runner(), s.runner()
		ctx := t.Context()
		if err := live.HandleBatch(ctx, recs[:cut]); err != nil {
			t.Fatal(err)
		}
		s.f.On.Store(false)
		var wg sync.WaitGroup
		done := make(chan struct{})
		var retried atomic.Int64
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				res, err := operator.Retry(ctx, s.x.ID())
				switch {
				case errors.Is(err, projection.ErrNotParked):
					time.Sleep(100 * time.Microsecond)
				case err != nil:
					t.Errorf("retry: %v", err)
					return
				default:
					retried.Add(int64(res.Applied))
				}
			}
		})
		for i := cut; i < len(recs); {
			n := 1 + s.rng.IntN(3)
			if err := live.HandleBatch(ctx, recs[i:min(len(recs), i+n)]); err != nil {
				t.Fatal(err)
			}
			i += n
			time.Sleep(time.Duration(s.rng.IntN(300)) * time.Microsecond) // let the retries in
			if i%5 == 0 {
				s.f.On.Store(!s.f.On.Load()) // x parks now and then, and is retried
			}
		}
		close(done)
		wg.Wait()
		s.f.On.Store(false)
		if _, err := operator.Retry(ctx, s.x.ID()); err != nil && !errors.Is(err, projection.ErrNotParked) {
			t.Fatal(err)
		}
		s.checkApplied(store.PositionRange{From: 1, To: 0})
		if retried.Load() == 0 {
			t.Log("no retry applied anything this run")
		}
		if rows, _ := target.ListParked(ctx, store.ParkedQuery{}); len(rows) != 0 {
			t.Fatalf("still parked: %+v", rows)
		}
	})
}

// TestParkUnguarded parks through a policy without a position guard.
func TestParkUnguarded(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []int64
	var fail atomic.Bool
	fail.Store(true)
	id := uuid.New()
	policy := projection.PolicyFunc(func(ctx context.Context, tx store.Tx, items []projection.Item) error {
		for i, it := range items {
			if it.SequenceID == id && it.Position == 1 && fail.Load() {
				return &projection.ItemError{Index: i, Err: projection.Permanent(errors.New("no"))}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for _, it := range items {
			if it.SequenceID == id {
				seen = append(seen, it.Position)
			}
		}
		return nil
	})
	target := memory.New()
	r := newRunner(t, target, projection.Config{Policy: policy, Unguarded: true})
	var recs []wire.Record
	for p := range int64(4) {
		recs = append(recs, projection.RecordOf(store.Notification{ID: p + 1, SequencedItem: store.SequencedItem{SequenceID: id, Position: p, Topic: "example.Happened", Codec: "json", State: []byte("{}")}}, "t", 0, p))
	}
	if err := r.HandleBatch(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int64{0}) {
		t.Fatalf("applied %v, want [0] with 1..3 parked", seen)
	}
	fail.Store(false)
	if _, err := r.Retry(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Retry(t.Context(), id); !errors.Is(err, projection.ErrNotParked) {
		t.Fatalf("second retry: %v", err)
	}
	if !slices.Equal(seen, []int64{0, 1, 2, 3}) {
		t.Fatalf("applied %v, want each once in order", seen)
	}
}

// TestParkNeedsAParkingTarget: the default Poison needs a target that parks.
func TestParkNeedsAParkingTarget(t *testing.T) {
	t.Parallel()
	type plain struct{ projection.Target }
	if _, err := projection.NewRunner(plain{memory.New()}, projection.Config{Name: "n", Policy: projection.PersistencePolicy{}}); err == nil {
		t.Fatal("NewRunner accepted a target that cannot park")
	}
	if _, err := projection.NewRunner(plain{memory.New()}, projection.Config{Name: "n", Policy: projection.PersistencePolicy{}, Poison: projection.PoisonDeadLetter}); err != nil {
		t.Fatal(err)
	}
}
