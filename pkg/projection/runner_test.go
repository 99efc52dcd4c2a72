package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

const name = "test-projection"

func newRunner(t testing.TB, target projection.Target, cfg projection.Config) *projection.Runner {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = name
	}
	r, err := projection.NewRunner(target, cfg)
	if err != nil {
		t.Fatalf("NewRunner: %v", err)
	}
	return r
}

// TestExactlyOnce feeds random batch splits of a relay stream with duplicates
// (the same item again at new offsets, sometimes after later items), and
// re-delivers batches, and checks that the copy equals the source and that
// every item was applied exactly once.
func TestExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		partitions int
		dupRate    float64
		redeliver  float64
		maxBatch   int
	}{
		{1, 0, 0, 50},
		{1, 0.1, 0.2, 7},
		{3, 0.05, 0.1, 20},
		{4, 0.2, 0.3, 3},
	} {
		t.Run(fmt.Sprintf("p%d-dup%v-redeliver%v-batch%d", tc.partitions, tc.dupRate, tc.redeliver, tc.maxBatch), func(t *testing.T) {
			t.Parallel()
			var repaired int64
			for seed := range uint64(4) {
				rng := rand.New(rand.NewPCG(seed, 1))
				mapper := newMapper(t)
				src := history(t, rng, mapper, 20, 300)
				log := notifications(t, src)
				s := publish(rng, log, tc.partitions, tc.dupRate)
				target := memory.New()
				r := newRunner(t, target, projection.Config{
					Policy: counting{decodingCopy{}}, Mapper: mapper, Source: src,
				})
				c := &projtest.Consumer{T: t, Rng: rng, Handler: r, Name: name, MaxBatch: tc.maxBatch, Redeliver: tc.redeliver}
				c.Run(s)
				checkCopy(t, target, log)
				checkAppliedOnce(t, target, log)
				st := r.Stats()
				if st.Applied != int64(len(log)) {
					t.Errorf("seed %d: Stats.Applied = %d, want %d", seed, st.Applied, len(log))
				}
				if tc.dupRate > 0 && st.Duplicates == 0 {
					t.Errorf("seed %d: no duplicates skipped; the test does not test the guard", seed)
				}
				if st.DeadLetters != 0 {
					t.Errorf("seed %d: %d dead letters", seed, st.DeadLetters)
				}
				repaired += st.Repaired
			}
			if tc.dupRate > 0 && repaired == 0 {
				t.Error("no gap repaired; the test does not test gap repair")
			}
		})
	}
}

// TestRedeliveredBatch hands a committed batch, and one overlapping it, again.
func TestRedeliveredBatch(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 7))
	mapper := newMapper(t)
	src := history(t, rng, mapper, 3, 20)
	log := notifications(t, src)
	recs := flatten(publish(rng, log, 1, 0))
	target := memory.New()
	r := newRunner(t, target, projection.Config{Policy: counting{projection.PersistencePolicy{}}})
	ctx := context.Background()
	if err := r.HandleBatch(ctx, recs[:10]); err != nil {
		t.Fatal(err)
	}
	before := notifications(t, target)
	for _, batch := range [][]wire.Record{recs[:10], recs[5:15], recs[9:10]} {
		err := r.HandleBatch(ctx, batch)
		var tce *store.TrackingConflictError
		if !errors.As(err, &tce) {
			t.Fatalf("redelivered batch: got %v, want a *store.TrackingConflictError", err)
		}
		if tce.Stored < tce.Tracking.Position || tce.Tracking.Name != name {
			t.Errorf("conflict %+v does not say why", tce)
		}
	}
	if after := notifications(t, target); len(after) != len(before) {
		t.Fatalf("a redelivered batch changed the target: %d items, want %d", len(after), len(before))
	}
	if err := r.HandleBatch(ctx, recs[10:]); err != nil {
		t.Fatal(err)
	}
	checkCopy(t, target, log)
	checkAppliedOnce(t, target, log)
}

// TestZombie runs two runners of the same name on one partition: the one
// whose batch comes second fails with store.ErrTrackingConflict and changes
// nothing.
func TestZombie(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	mapper := newMapper(t)
	src := history(t, rng, mapper, 4, 40)
	log := notifications(t, src)
	recs := flatten(publish(rng, log, 1, 0))
	target := memory.New()
	cfg := projection.Config{Policy: counting{projection.PersistencePolicy{}}, Source: src}
	live := newRunner(t, target, cfg)
	zombie := newRunner(t, target, cfg)
	ctx := context.Background()

	// Both were assigned the partition at offset 0; the live one commits first.
	if err := live.HandleBatch(ctx, recs[:20]); err != nil {
		t.Fatal(err)
	}
	before := notifications(t, target)
	for _, batch := range [][]wire.Record{recs[:20], recs[:5], recs[10:30]} {
		if err := zombie.HandleBatch(ctx, batch); !errors.Is(err, store.ErrTrackingConflict) {
			t.Fatalf("zombie batch %d-%d: got %v, want store.ErrTrackingConflict", batch[0].Offset, batch[len(batch)-1].Offset, err)
		}
	}
	if after := notifications(t, target); len(after) != len(before) {
		t.Fatalf("the zombie changed the target: %d items, want %d", len(after), len(before))
	}
	if st := zombie.Stats(); st.Batches != 0 || st.Applied != 0 {
		t.Errorf("zombie stats %+v, want nothing committed", st)
	}
	if err := live.HandleBatch(ctx, recs[20:]); err != nil {
		t.Fatal(err)
	}
	checkCopy(t, target, log)
	checkAppliedOnce(t, target, log)
}

// gapLog returns one entity's history of n events and its records, on one
// partition, without the records of the positions in drop.
func gapLog(t *testing.T, n int, drop ...int64) (*memory.Recorder, []store.Notification, []wire.Record) {
	t.Helper()
	mapper := newMapper(t)
	src := memory.New()
	es := store.NewEventStore(mapper, src)
	e, err := entity.Create("example", uuid.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if err := e.Set("foo", i); err != nil {
			t.Fatal(err)
		}
	}
	put(t, es, e)
	log := notifications(t, src)
	var recs []wire.Record
	for _, n := range log {
		skip := false
		for _, d := range drop {
			skip = skip || n.Position == d
		}
		if !skip {
			recs = append(recs, projection.RecordOf(n, topics.Events("example"), 0, int64(len(recs))))
		}
	}
	return src, log, recs
}

func TestGapRepairedFromSource(t *testing.T) {
	t.Parallel()
	src, log, recs := gapLog(t, 8, 2, 3, 6)
	target := memory.New()
	r := newRunner(t, target, projection.Config{Policy: counting{decodingCopy{}}, Mapper: newMapper(t), Source: src})
	ctx := context.Background()
	// Two batches: the second starts after a gap.
	if err := r.HandleBatch(ctx, recs[:3]); err != nil { // positions 0, 1, 4
		t.Fatal(err)
	}
	if err := r.HandleBatch(ctx, recs[3:]); err != nil { // 5, 7
		t.Fatal(err)
	}
	checkCopy(t, target, log)
	checkAppliedOnce(t, target, log)
	if st := r.Stats(); st.Repaired != 3 || st.Applied != 8 {
		t.Errorf("stats %+v, want Repaired 3, Applied 8", st)
	}
	// The dropped items arrive late (the relay re-published them): skipped.
	late := []wire.Record{projection.RecordOf(log[2], topics.Events("example"), 0, 10), projection.RecordOf(log[6], topics.Events("example"), 0, 11)}
	if err := r.HandleBatch(ctx, late); err != nil {
		t.Fatal(err)
	}
	checkAppliedOnce(t, target, log)
	if st := r.Stats(); st.Duplicates != 2 {
		t.Errorf("Duplicates = %d, want 2", st.Duplicates)
	}
}

func TestGapWithoutSourceFails(t *testing.T) {
	t.Parallel()
	_, _, recs := gapLog(t, 5, 2)
	target := memory.New()
	r := newRunner(t, target, projection.Config{Policy: counting{projection.PersistencePolicy{}}})
	ctx := context.Background()
	err := r.HandleBatch(ctx, recs)
	var gap *projection.GapError
	if !errors.As(err, &gap) || !errors.Is(err, projection.ErrGap) {
		t.Fatalf("got %v, want a *GapError", err)
	}
	if gap.Last != 1 || gap.Position != 3 {
		t.Errorf("gap %+v, want last 1, position 3", gap)
	}
	if projection.IsPermanent(err) {
		t.Error("a gap must not be permanent: it would be dead-lettered")
	}
	if n := len(notifications(t, target)); n != 0 {
		t.Errorf("target has %d items after a failed batch, want 0", n)
	}
	if pos, _ := r.Tracking(ctx, name, recs[0].Topic, 0); pos != -1 {
		t.Errorf("tracking %d after a failed batch, want -1", pos)
	}
}

func TestGapSourceIncomplete(t *testing.T) {
	t.Parallel()
	_, log, recs := gapLog(t, 5, 2)
	partial := memory.New() // has positions 0 and 1 only
	if _, err := partial.InsertEvents(context.Background(), []store.SequencedItem{log[0].SequencedItem, log[1].SequencedItem}); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, memory.New(), projection.Config{Policy: projection.PersistencePolicy{}, Source: partial})
	err := r.HandleBatch(context.Background(), recs)
	if !errors.Is(err, projection.ErrGap) {
		t.Fatalf("got %v, want ErrGap", err)
	}
}

// selfAudit records, for each event, an item at the same position of a
// derived sequence in the store the events live in.
type selfAudit struct{}

var auditSpace = uuid.MustParse("0b6b1f5e-7a4d-4f43-8d43-6a1f3c2e9d10")

func auditID(id uuid.UUID) uuid.UUID { return uuid.NewSHA1(auditSpace, id[:]) }

func (selfAudit) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	out := make([]store.SequencedItem, len(items))
	for i, it := range items {
		out[i] = store.SequencedItem{SequenceID: auditID(it.SequenceID), Position: it.Position, Topic: "audit.Seen", Codec: "json", State: []byte("{}")}
	}
	_, err := tx.InsertEvents(ctx, out)
	return err
}

func (selfAudit) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return projection.LastItemPositions(ctx, tx, ids, auditID)
}

// TestGapSourceIsTarget repairs a gap from the store the runner commits to:
// the missing items are read through the transaction (the memory recorder
// would deadlock otherwise).
func TestGapSourceIsTarget(t *testing.T) {
	t.Parallel()
	src, log, recs := gapLog(t, 6, 1, 2)
	r := newRunner(t, src, projection.Config{Policy: selfAudit{}, Source: src})
	if err := r.HandleBatch(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	got, err := src.SelectEvents(context.Background(), auditID(log[0].SequenceID), store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(log) {
		t.Errorf("%d audit items, want %d", len(got), len(log))
	}
}

// refusing fails permanently on the Created events of entities with a
// "refuse" attribute; with attribute set it says which item.
type refusing struct {
	projection.Policy
	attribute bool
}

func (r refusing) DecodesEvents() bool { return true }

func (r refusing) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return r.Policy.(projection.Positions).LastPositions(ctx, tx, ids)
}

func (r refusing) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	for i, it := range items {
		if c, ok := it.Event.(*entity.Created); ok {
			if _, bad := c.Attributes["refuse"]; bad {
				err := projection.Permanent(fmt.Errorf("entity %s refused", it.SequenceID))
				if r.attribute {
					return &projection.ItemError{Index: i, Err: err}
				}
				return err
			}
		}
	}
	return r.Policy.Apply(ctx, tx, items)
}

// poisonRecords returns records that cannot be applied, for fresh sequences,
// and a description of each.
func poisonRecords(t *testing.T, mapper *events.Mapper) ([]wire.Record, []string) {
	t.Helper()
	var recs []wire.Record
	var what []string
	add := func(w string, rec wire.Record) {
		recs = append(recs, rec)
		what = append(what, w)
	}
	item := func(topic, state string) store.Notification {
		return store.Notification{ID: 1, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: topic, State: []byte(state), Codec: "json"}}
	}
	add("bad state", projection.RecordOf(item("example.Created", `{"attributes": [`), "t", 0, 0))
	add("unknown topic", projection.RecordOf(item("nosuch.Created", `{}`), "t", 0, 0))
	add("unknown codec", projection.RecordOf(item("example.Created", `{}`), "t", 0, 0))
	recs[len(recs)-1].Headers[len(recs[len(recs)-1].Headers)-1].Value = []byte("json+rot13")
	noSeq := projection.RecordOf(item("example.Created", `{}`), "t", 0, 0)
	noSeq.Headers = noSeq.Headers[1:]
	add("no sequence-id header", noSeq)
	badPos := projection.RecordOf(item("example.Created", `{}`), "t", 0, 0)
	badPos.Headers[1].Value = []byte("x1")
	add("bad position header", badPos)
	add("no headers", wire.Record{Key: []byte("k"), Value: []byte("v")})
	// A good event the policy refuses.
	e, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{"refuse": json.RawMessage(`true`)})
	if err != nil {
		t.Fatal(err)
	}
	it, err := mapper.ToItem(e.PendingEvents()[0])
	if err != nil {
		t.Fatal(err)
	}
	add("refused by the policy", projection.RecordOf(store.Notification{ID: 1, SequencedItem: it}, "t", 0, 0))
	return recs, what
}

// mix inserts the poison records among good ones, at random places of one
// partition, renumbering offsets.
func mix(rng *rand.Rand, good, poison []wire.Record) []wire.Record {
	out := append([]wire.Record(nil), good...)
	for _, p := range poison {
		i := rng.IntN(len(out) + 1)
		out = append(out[:i], append([]wire.Record{p}, out[i:]...)...)
	}
	for i := range out {
		out[i].Topic, out[i].Partition, out[i].Offset = topics.Events("example"), 0, int64(i)
	}
	return out
}

func deadLetters(t *testing.T, rec store.ApplicationRecorder) []wire.DeadLetter {
	t.Helper()
	var out []wire.DeadLetter
	for _, n := range notifications(t, rec) {
		if n.Topic == wire.DeadLetterItemTopic {
			d, err := wire.DecodeDeadLetter(n.State)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d)
		}
	}
	return out
}

func TestPoisonDeadLettered(t *testing.T) {
	t.Parallel()
	for _, attribute := range []bool{false, true} {
		t.Run(fmt.Sprintf("itemError=%v", attribute), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(3, 4))
			mapper := newMapper(t)
			src := history(t, rng, mapper, 10, 100)
			log := notifications(t, src)
			poison, what := poisonRecords(t, mapper)
			recs := mix(rng, flatten(publish(rng, log, 1, 0)), poison)
			target := memory.New()
			r := newRunner(t, target, projection.Config{
				Policy: counting{refusing{decodingCopy{}, attribute}}, Mapper: mapper, Source: src,
			})
			// Random batches, each handed twice: the second must conflict.
			for i := 0; i < len(recs); {
				n := 1 + rng.IntN(40)
				batch := recs[i:min(len(recs), i+n)]
				if err := r.HandleBatch(context.Background(), batch); err != nil {
					t.Fatalf("batch at %d: %v", i, err)
				}
				if err := r.HandleBatch(context.Background(), batch); !errors.Is(err, store.ErrTrackingConflict) {
					t.Fatalf("redelivered batch at %d: %v", i, err)
				}
				i += len(batch)
			}
			checkCopy(t, target, log)
			checkAppliedOnce(t, target, log)
			dls := deadLetters(t, target)
			if len(dls) != len(poison) {
				t.Fatalf("%d dead letters, want %d (%s)", len(dls), len(poison), strings.Join(what, ", "))
			}
			if st := r.Stats(); st.DeadLetters != int64(len(poison)) {
				t.Errorf("Stats.DeadLetters = %d, want %d", st.DeadLetters, len(poison))
			}
			for _, d := range dls {
				src := recs[d.SourceOffset]
				if d.SourceTopic != src.Topic || d.SourcePartition != 0 || string(d.Value) != string(src.Value) || len(d.Headers) != len(src.Headers) {
					t.Errorf("dead letter %+v does not carry its record %+v", d, src)
				}
				if !strings.HasPrefix(d.Reason, "projection "+name+": ") {
					t.Errorf("dead letter reason %q does not name the projection", d.Reason)
				}
			}
		})
	}
}

func TestPoisonStop(t *testing.T) {
	t.Parallel()
	mapper := newMapper(t)
	rng := rand.New(rand.NewPCG(5, 6))
	src := history(t, rng, mapper, 3, 10)
	good := flatten(publish(rng, notifications(t, src), 1, 0))
	poison, what := poisonRecords(t, mapper)
	for i, p := range poison {
		recs := mix(rng, good, []wire.Record{p})
		target := memory.New()
		r := newRunner(t, target, projection.Config{
			Policy: counting{refusing{decodingCopy{}, false}}, Mapper: mapper, Source: src, Poison: projection.PoisonStop,
		})
		err := r.HandleBatch(context.Background(), recs)
		var pe *projection.PoisonError
		if !errors.As(err, &pe) || !errors.Is(err, projection.ErrPoison) {
			t.Fatalf("%s: got %v, want a *PoisonError", what[i], err)
		}
		if recs[pe.Offset].Value == nil && p.Value != nil || string(recs[pe.Offset].Value) != string(p.Value) {
			t.Errorf("%s: error names offset %d, not the poison record", what[i], pe.Offset)
		}
		if n := len(notifications(t, target)); n != 0 {
			t.Errorf("%s: target has %d items after a stopped batch, want 0", what[i], n)
		}
		if pos, _ := r.Tracking(context.Background(), name, recs[0].Topic, 0); pos != -1 {
			t.Errorf("%s: tracking %d after a stopped batch, want -1", what[i], pos)
		}
	}
}

// flaky fails its first Apply with a transient error.
type flaky struct {
	projection.PersistencePolicy
	failed bool
}

func (f *flaky) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	if !f.failed {
		f.failed = true
		// Half the work is done in the transaction before the failure.
		if err := f.PersistencePolicy.Apply(ctx, tx, items[:len(items)/2]); err != nil {
			return err
		}
		return errors.New("connection reset by peer")
	}
	return f.PersistencePolicy.Apply(ctx, tx, items)
}

func TestTransientErrorRetried(t *testing.T) {
	t.Parallel()
	mapper := newMapper(t)
	rng := rand.New(rand.NewPCG(8, 9))
	src := history(t, rng, mapper, 3, 30)
	log := notifications(t, src)
	recs := flatten(publish(rng, log, 1, 0))
	target := memory.New()
	r := newRunner(t, target, projection.Config{Policy: &flaky{}})
	ctx := context.Background()
	err := r.HandleBatch(ctx, recs)
	if err == nil || projection.IsPermanent(err) || errors.Is(err, projection.ErrPoison) {
		t.Fatalf("got %v, want the transient error", err)
	}
	if n := len(notifications(t, target)); n != 0 {
		t.Fatalf("target has %d items after a failed batch, want 0", n)
	}
	if pos, _ := r.Tracking(ctx, name, recs[0].Topic, 0); pos != -1 {
		t.Fatalf("tracking %d after a failed batch, want -1", pos)
	}
	if err := r.HandleBatch(ctx, recs); err != nil {
		t.Fatalf("retry: %v", err)
	}
	checkCopy(t, target, log)
	if st := r.Stats(); st.DeadLetters != 0 || st.Batches != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestPersistenceIntoSQLite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mapper := newMapper(t)
	rng := rand.New(rand.NewPCG(10, 11))
	src := history(t, rng, mapper, 10, 200)
	log := notifications(t, src)
	target, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "copy.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Close() })
	r := newRunner(t, target, projection.Config{Policy: projection.PersistencePolicy{}, Source: src})
	c := &projtest.Consumer{T: t, Rng: rng, Handler: r, Name: name, MaxBatch: 30, Redeliver: 0.2}
	c.Run(publish(rng, log, 3, 0.1))
	checkCopy(t, target, log)
	if got := notifications(t, target); len(got) != len(log) {
		t.Errorf("copy has %d items, source %d", len(got), len(log))
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	apply := projection.PolicyFunc(func(context.Context, store.Tx, []projection.Item) error { return nil })
	for _, tc := range []struct {
		what string
		cfg  projection.Config
	}{
		{"no name", projection.Config{Policy: projection.PersistencePolicy{}}},
		{"no policy", projection.Config{Name: "n"}},
		{"no guard", projection.Config{Name: "n", Policy: apply}},
		{"decodes without a mapper", projection.Config{Name: "n", Policy: decodingCopy{}}},
		{"bad poison action", projection.Config{Name: "n", Policy: projection.PersistencePolicy{}, Poison: 7}},
	} {
		if _, err := projection.NewRunner(memory.New(), tc.cfg); err == nil {
			t.Errorf("%s: NewRunner accepted it", tc.what)
		}
	}
	if _, err := projection.NewRunner(memory.New(), projection.Config{Name: "n", Policy: apply, Unguarded: true}); err != nil {
		t.Errorf("unguarded: %v", err)
	}
	r := newRunner(t, memory.New(), projection.Config{Policy: projection.PersistencePolicy{}})
	if _, err := r.Tracking(context.Background(), "other", "t", 0); err == nil {
		t.Error("Tracking with another name succeeded")
	}
}

func TestIsPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("x")
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{base, false},
		{projection.Permanent(base), true},
		{fmt.Errorf("wrapped: %w", projection.Permanent(base)), true},
		{&projection.ItemError{Index: 1, Err: projection.Permanent(base)}, true},
		{&projection.ItemError{Index: 1, Err: base}, false},
		{fmt.Errorf("%w: bad", events.ErrDecode), true},
		{fmt.Errorf("%w: bad", events.ErrUnknownTopic), true},
		{projection.ErrHeaders, true},
		{store.ErrInvalidItem, true},
		{projection.Permanent(context.Canceled), false},
		{projection.Permanent(fmt.Errorf("query: %w", context.DeadlineExceeded)), false},
		{store.ErrTrackingConflict, false},
		{&store.ConflictError{}, false},
	} {
		if got := projection.IsPermanent(tc.err); got != tc.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if projection.Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}

func TestItemOf(t *testing.T) {
	t.Parallel()
	n := store.Notification{ID: 42, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Position: 3, Topic: "example.Created", State: []byte(`{}`), Codec: "json+zstd"}}
	rec := projection.RecordOf(n, "eventlog.events.example", 2, 9)
	it, err := projection.ItemOf(&rec)
	if err != nil {
		t.Fatal(err)
	}
	if it.SequencedItem.SequenceID != n.SequenceID || it.Position != 3 || it.Topic != n.Topic || it.Codec != n.Codec ||
		string(it.State) != "{}" || it.NotificationID != 42 || it.Record != &rec {
		t.Errorf("ItemOf = %+v", it)
	}
	if string(rec.Key) != n.SequenceID.String() {
		t.Errorf("key %q", rec.Key)
	}
	for i := range 4 { // each required header missing
		bad := rec
		bad.Headers = append(append([]wire.Header(nil), rec.Headers[:i]...), rec.Headers[i+1:]...)
		if _, err := projection.ItemOf(&bad); !errors.Is(err, projection.ErrHeaders) {
			t.Errorf("without %s: %v", rec.Headers[i].Key, err)
		}
	}
}
