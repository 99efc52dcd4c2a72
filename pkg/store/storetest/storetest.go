package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// An Option changes how Run tests a backend.
type Option func(*config)

type config struct {
	goroutines   int
	writers      int
	newSnapshots func(t *testing.T, rec store.ProcessRecorder) store.SnapshotRecorder
	wait         time.Duration
}

func (c *config) setDefaults() {
	if c.goroutines <= 0 {
		c.goroutines = 1000
	}
	if c.writers <= 0 {
		c.writers = 16
	}
	if c.wait <= 0 {
		c.wait = 20 * time.Second
	}
}

// Goroutines sets how many goroutines race to append the same position of one
// sequence (default 1000). Exactly one of them must win.
func Goroutines(n int) Option { return func(c *config) { c.goroutines = n } }

// Writers sets how many goroutines append to sequences of their own while a
// tailer follows the notification log (default 16).
func Writers(n int) Option { return func(c *config) { c.writers = n } }

// WithSnapshots tests snapshots with the SnapshotRecorder that f returns for the
// recorder under test. Without it Run tests snapshots only if the recorder itself
// implements store.SnapshotRecorder.
func WithSnapshots(f func(t *testing.T, rec store.ProcessRecorder) store.SnapshotRecorder) Option {
	return func(c *config) { c.newSnapshots = f }
}

// Wait sets how long the suite waits for something that must eventually happen:
// committed items becoming visible in the notification log, a wake-up (default 20s).
func Wait(d time.Duration) Option { return func(c *config) { c.wait = d } }

// Run runs the conformance suite. newRecorder must return a fresh, empty recorder
// each time it is called, and release it in t.Cleanup.
func Run(t *testing.T, newRecorder func(t *testing.T) store.ProcessRecorder, opts ...Option) {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	c.setDefaults()
	s := &suite{cfg: c, newRecorder: newRecorder}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"InsertSelect", s.testInsertSelect},
		{"SelectQuery", s.testSelectQuery},
		{"SequencesReader", s.testSequencesReader},
		{"EmptyBatch", s.testEmptyBatch},
		{"ConflictAtomic", s.testConflictAtomic},
		{"DuplicateInBatch", s.testDuplicateInBatch},
		{"InvalidItems", s.testInvalidItems},
		{"Notifications", s.testNotifications},
		{"TraceParent", s.testTraceParent},
		{"NotificationPaging", s.testNotificationPaging},
		{"UnorderedBatchLogOrder", s.testUnorderedBatch},
		{"TxCommit", s.testTxCommit},
		{"TxRollback", s.testTxRollback},
		{"TxConflictKeepsTx", s.testTxConflictKeepsTx},
		{"Tracking", s.testTracking},
		{"TrackingConflictRollsBack", s.testTrackingRollsBack},
		{"TrackingConflictSwallowed", s.testTrackingSwallowed},
		{"TrackingsSetter", s.testTrackingsSetter},
		{"RaceSamePosition", s.testRaceSamePosition},
		{"OptimisticAppends", s.testOptimisticAppends},
		{"ConcurrentTail", s.testConcurrentTail},
		{"Snapshots", s.testSnapshots},
		{"Notifier", s.testNotifier},
		{"DataKeys", s.testDataKeys},
		{"DataKeyRace", s.testDataKeyRace},
		{"Forget", s.testForget},
		{"Parked", s.testParked},
		{"ParkedTake", s.testParkedTake},
		{"ParkedConflict", s.testParkedConflict},
		{"ParkActions", s.testParkActions},
		{"ParkedLock", s.testParkedLock},
		{"ParkedTracking", s.testParkedTracking},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	cfg         config
	newRecorder func(t *testing.T) store.ProcessRecorder
}

const testTopic = "storetest.Happened"

// Item returns a valid item for sequence id at pos; its state names both, so a
// test can tell items apart.
func Item(id uuid.UUID, pos int64) store.SequencedItem {
	return store.SequencedItem{
		SequenceID: id,
		Position:   pos,
		Topic:      testTopic,
		State:      fmt.Appendf(nil, `{"seq":%q,"pos":%d}`, id, pos),
		Codec:      "json",
	}
}

// Items returns items for positions from, from+1, ..., from+n-1 of sequence id.
func Items(id uuid.UUID, from int64, n int) []store.SequencedItem {
	items := make([]store.SequencedItem, n)
	for i := range items {
		items[i] = Item(id, from+int64(i))
	}
	return items
}

func ptr(v int64) *int64 { return &v }

// mustInsert appends items and checks that it returns one id for each.
func mustInsert(t testing.TB, rec store.AggregateRecorder, items []store.SequencedItem) []int64 {
	t.Helper()
	ids, err := rec.InsertEvents(t.Context(), items)
	if err != nil {
		t.Fatalf("InsertEvents(%d items): %v", len(items), err)
	}
	if len(ids) != len(items) {
		t.Fatalf("InsertEvents(%d items) returned %d notification ids", len(items), len(ids))
	}
	return ids
}

func selectAll(t testing.TB, rec store.AggregateRecorder, id uuid.UUID) []store.SequencedItem {
	t.Helper()
	got, err := rec.SelectEvents(t.Context(), id, store.Query{})
	if err != nil {
		t.Fatalf("SelectEvents(%s): %v", id, err)
	}
	return got
}

func sameItem(a, b store.SequencedItem) bool {
	return a.SequenceID == b.SequenceID && a.Position == b.Position && a.Topic == b.Topic &&
		a.Codec == b.Codec && bytes.Equal(a.State, b.State)
}

func describe(items []store.SequencedItem) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%s/%d", it.SequenceID.String()[:8], it.Position)
	}
	sb.WriteByte(']')
	return sb.String()
}

func checkItems(t testing.TB, what string, got, want []store.SequencedItem) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d items %s, want %d %s", what, len(got), describe(got), len(want), describe(want))
	}
	for i := range got {
		if !sameItem(got[i], want[i]) {
			t.Fatalf("%s: item %d = %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// allNotifications reads the whole visible log, a page at a time.
func allNotifications(t testing.TB, rec store.ApplicationRecorder, after int64) []store.Notification {
	t.Helper()
	var all []store.Notification
	for {
		page, err := rec.SelectNotifications(t.Context(), after, 1000)
		if err != nil {
			t.Fatalf("SelectNotifications(%d, 1000): %v", after, err)
		}
		if len(page) == 0 {
			return all
		}
		for _, n := range page {
			if n.ID <= after {
				t.Fatalf("SelectNotifications(after %d) returned id %d, not greater than after", after, n.ID)
			}
			after = n.ID
		}
		all = append(all, page...)
	}
}

// waitNotifications polls until the log after `after` holds at least n items,
// and returns what it holds.
func (s *suite) waitNotifications(t testing.TB, rec store.ApplicationRecorder, after int64, n int) []store.Notification {
	t.Helper()
	deadline := time.Now().Add(s.cfg.wait)
	for {
		all := allNotifications(t, rec, after)
		if len(all) >= n || time.Now().After(deadline) {
			if len(all) < n {
				t.Fatalf("after %v the notification log holds %d items after id %d, want %d "+
					"(a backend may hold items back behind a transaction still open elsewhere: PostgreSQL's horizon is cluster-wide)",
					s.cfg.wait, len(all), after, n)
			}
			return all
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *suite) testInsertSelect(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a, b := uuid.New(), uuid.New()

	if got := selectAll(t, rec, a); len(got) != 0 {
		t.Fatalf("SelectEvents of an unknown sequence = %s, want empty", describe(got))
	}

	wantA := Items(a, 0, 3)
	wantA[1].State = nil // an empty state round-trips
	wantA[1].Codec = ""  // and so does an empty codec
	wantA[2].State = bytes.Repeat([]byte{0, 1, 2, 0xff}, 64<<10/4)
	wantA[2].Topic = strings.Repeat("t", store.MaxTopicLen) // longest valid topic
	wantA[2].Codec = strings.Repeat("c", store.MaxCodecLen) // longest valid codec
	mustInsert(t, rec, wantA[:1])
	mustInsert(t, rec, wantA[1:])
	wantB := Items(b, 0, 2)
	mustInsert(t, rec, wantB)

	checkItems(t, "sequence a", selectAll(t, rec, a), wantA)
	checkItems(t, "sequence b", selectAll(t, rec, b), wantB)

	// The returned state must be the caller's to keep.
	got, err := rec.SelectEvents(ctx, b, store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	got[0].State[0] = 'X'
	checkItems(t, "sequence b after changing a returned state", selectAll(t, rec, b), wantB)
}

func (s *suite) testSelectQuery(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	id := uuid.New()
	all := Items(id, 0, 10)
	mustInsert(t, rec, all[:4])
	mustInsert(t, rec, all[4:])
	mustInsert(t, rec, Items(uuid.New(), 0, 3)) // another sequence must not show up

	rev := func(items []store.SequencedItem) []store.SequencedItem {
		out := make([]store.SequencedItem, len(items))
		for i := range items {
			out[len(items)-1-i] = items[i]
		}
		return out
	}
	tests := []struct {
		name string
		q    store.Query
		want []store.SequencedItem
	}{
		{"zero", store.Query{}, all},
		{"after 3", store.Query{After: ptr(3)}, all[4:]},
		{"after -1", store.Query{After: ptr(-1)}, all},
		{"after last", store.Query{After: ptr(9)}, nil},
		{"upto 4", store.Query{UpTo: ptr(4)}, all[:5]},
		{"upto 0", store.Query{UpTo: ptr(0)}, all[:1]},
		{"upto past end", store.Query{UpTo: ptr(100)}, all},
		{"after 2 upto 6", store.Query{After: ptr(2), UpTo: ptr(6)}, all[3:7]},
		{"after 6 upto 2", store.Query{After: ptr(6), UpTo: ptr(2)}, nil},
		{"limit 3", store.Query{Limit: 3}, all[:3]},
		{"limit past end", store.Query{Limit: 50}, all},
		{"desc", store.Query{Desc: true}, rev(all)},
		{"desc limit 1", store.Query{Desc: true, Limit: 1}, all[9:]},
		{"desc upto 5 limit 2", store.Query{Desc: true, UpTo: ptr(5), Limit: 2}, rev(all[4:6])},
		{"desc after 7", store.Query{Desc: true, After: ptr(7)}, rev(all[8:])},
		{"after 1 upto 8 limit 3", store.Query{After: ptr(1), UpTo: ptr(8), Limit: 3}, all[2:5]},
		{"after 1 upto 8 desc limit 3", store.Query{After: ptr(1), UpTo: ptr(8), Desc: true, Limit: 3}, rev(all[6:9])},
	}
	for _, tc := range tests {
		got, err := rec.SelectEvents(ctx, id, tc.q)
		if err != nil {
			t.Fatalf("%s: SelectEvents: %v", tc.name, err)
		}
		checkItems(t, tc.name, got, tc.want)
	}
	got, err := rec.SelectEvents(ctx, uuid.New(), store.Query{Desc: true, Limit: 5, After: ptr(1)})
	if err != nil || len(got) != 0 {
		t.Fatalf("SelectEvents of an unknown sequence with a query = %s, %v; want empty, nil", describe(got), err)
	}
}

// selectQueries are queries of every shape, for a sequence of 10 items.
var selectQueries = []store.Query{
	{},
	{After: ptr(3)},
	{After: ptr(-1)},
	{After: ptr(9)},
	{UpTo: ptr(4)},
	{UpTo: ptr(0)},
	{After: ptr(2), UpTo: ptr(6)},
	{After: ptr(6), UpTo: ptr(2)},
	{Limit: 3},
	{Limit: 50},
	{Desc: true},
	{Desc: true, Limit: 1},
	{Desc: true, UpTo: ptr(5), Limit: 2},
	{Desc: true, After: ptr(7)},
	{After: ptr(1), UpTo: ptr(8), Limit: 3},
	{After: ptr(1), UpTo: ptr(8), Desc: true, Limit: 3},
}

func describeQuery(q store.Query) string {
	var sb strings.Builder
	if q.After != nil {
		fmt.Fprintf(&sb, " after %d", *q.After)
	}
	if q.UpTo != nil {
		fmt.Fprintf(&sb, " upto %d", *q.UpTo)
	}
	if q.Desc {
		sb.WriteString(" desc")
	}
	if q.Limit > 0 {
		fmt.Fprintf(&sb, " limit %d", q.Limit)
	}
	if sb.Len() == 0 {
		return "zero"
	}
	return sb.String()[1:]
}

// checkSequences compares a SelectSequences result with what SelectEvents
// returns for each query (through sel).
func checkSequences(t testing.TB, what string, got map[uuid.UUID][]store.SequencedItem, queries map[uuid.UUID]store.Query,
	sel func(uuid.UUID, store.Query) ([]store.SequencedItem, error)) {
	t.Helper()
	for id, q := range queries {
		want, err := sel(id, q)
		if err != nil {
			t.Fatalf("%s: SelectEvents(%s): %v", what, id, err)
		}
		items, ok := got[id]
		if ok && len(items) == 0 {
			t.Fatalf("%s: sequence %s (%s) has a key and no items; want no key", what, id, describeQuery(q))
		}
		checkItems(t, fmt.Sprintf("%s: sequence %s (%s)", what, id.String()[:8], describeQuery(q)), items, want)
	}
	for id := range got {
		if _, ok := queries[id]; !ok {
			t.Fatalf("%s: result holds sequence %s, which was not asked for", what, id)
		}
	}
}

// testSequencesReader: SelectSequences returns, for each sequence, what
// SelectEvents returns for its query, on the recorder and inside a Tx.
func (s *suite) testSequencesReader(t *testing.T) {
	rec := s.newRecorder(t)
	sr, ok := rec.(store.SequencesReader)
	if !ok {
		t.Skipf("%T does not implement store.SequencesReader", rec)
	}
	ctx := t.Context()
	sel := func(id uuid.UUID, q store.Query) ([]store.SequencedItem, error) { return rec.SelectEvents(ctx, id, q) }

	got, err := sr.SelectSequences(ctx, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("SelectSequences(nil) = %d sequences, %v; want none, nil", len(got), err)
	}

	// Sequences of 10 items (written in two appends), one of 1, unknown ones.
	var ids []uuid.UUID
	for range len(selectQueries) {
		id := uuid.New()
		ids = append(ids, id)
		all := Items(id, 0, 10)
		mustInsert(t, rec, all[:6])
		mustInsert(t, rec, all[6:])
	}
	single := uuid.New()
	mustInsert(t, rec, Items(single, 0, 1))

	// Each shape of query alone, on a known and an unknown sequence, with a
	// sequence that must not show up.
	for i, q := range selectQueries {
		queries := map[uuid.UUID]store.Query{ids[i]: q, uuid.New(): q}
		got, err := sr.SelectSequences(ctx, queries)
		if err != nil {
			t.Fatalf("SelectSequences(%s): %v", describeQuery(q), err)
		}
		checkSequences(t, "one query", got, queries, sel)
	}

	// Every shape at once, each on a sequence of its own, plus the short and
	// unknown sequences under every shape too.
	queries := map[uuid.UUID]store.Query{single: {Desc: true, Limit: 1}}
	for i, q := range selectQueries {
		queries[ids[i]] = q
		queries[uuid.New()] = q
	}
	got, err = sr.SelectSequences(ctx, queries)
	if err != nil {
		t.Fatalf("SelectSequences(%d queries): %v", len(queries), err)
	}
	checkSequences(t, "all queries", got, queries, sel)

	// The returned states are the caller's.
	for _, items := range got {
		for _, it := range items {
			if len(it.State) > 0 {
				it.State[0] = 'X'
			}
		}
	}
	got, err = sr.SelectSequences(ctx, queries)
	if err != nil {
		t.Fatal(err)
	}
	checkSequences(t, "after changing returned states", got, queries, sel)

	// Many sequences in one call.
	many := map[uuid.UUID]store.Query{}
	var batch []store.SequencedItem
	for i := range 500 {
		id := uuid.New()
		batch = append(batch, Items(id, 0, 1+i%3)...)
		many[id] = store.Query{Desc: true, Limit: 1}
		if i%2 == 0 {
			many[id] = store.Query{After: ptr(0)}
		}
	}
	mustInsert(t, rec, batch)
	got, err = sr.SelectSequences(ctx, many)
	if err != nil {
		t.Fatalf("SelectSequences(%d queries): %v", len(many), err)
	}
	checkSequences(t, "500 sequences", got, many, sel)

	// Inside a transaction: its own writes are seen, a failed call's are not.
	fresh, ext := uuid.New(), ids[0]
	err = rec.InTx(ctx, func(tx store.Tx) error {
		tsr, ok := tx.(store.SequencesReader)
		if !ok {
			t.Logf("the Tx of %T does not implement store.SequencesReader", rec)
			return nil
		}
		if _, err := tx.InsertEvents(ctx, append(Items(fresh, 0, 2), Item(ext, 10))); err != nil {
			return err
		}
		if _, err := tx.InsertEvents(ctx, []store.SequencedItem{Item(single, 1), Item(single, 0)}); !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("tx.InsertEvents of a taken position = %v, want a conflict", err)
		}
		queries := map[uuid.UUID]store.Query{
			fresh: {}, ext: {After: ptr(8)}, single: {}, ids[1]: {Desc: true, Limit: 1}, uuid.New(): {},
		}
		got, err := tsr.SelectSequences(ctx, queries)
		if err != nil {
			return fmt.Errorf("tx.SelectSequences: %w", err)
		}
		checkSequences(t, "inside a tx", got, queries, func(id uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
			return tx.SelectEvents(ctx, id, q)
		})
		if n := len(got[fresh]) + len(got[ext]) + len(got[single]); n != 5 {
			return fmt.Errorf("inside the tx, %d items of the tx's sequences, want 5", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
}

func (s *suite) testEmptyBatch(t *testing.T) {
	rec := s.newRecorder(t)
	ids, err := rec.InsertEvents(t.Context(), nil)
	if err != nil || len(ids) != 0 {
		t.Fatalf("InsertEvents(nil) = %v, %v; want no ids, nil", ids, err)
	}
	err = rec.InTx(t.Context(), func(tx store.Tx) error {
		ids, err := tx.InsertEvents(t.Context(), []store.SequencedItem{})
		if err != nil || len(ids) != 0 {
			return fmt.Errorf("tx.InsertEvents(empty) = %v, %v; want no ids, nil", ids, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkConflict asserts err is a conflict naming (id, pos).
func checkConflict(t testing.TB, err error, id uuid.UUID, pos int64) {
	t.Helper()
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("error = %v, want one wrapping store.ErrConflict", err)
	}
	var ce *store.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *store.ConflictError", err, err)
	}
	if ce.SequenceID != id || ce.Position != pos {
		t.Fatalf("conflict names %s/%d, want %s/%d", ce.SequenceID, ce.Position, id, pos)
	}
}

func maxID(t testing.TB, rec store.ApplicationRecorder) int64 {
	t.Helper()
	id, err := rec.MaxNotificationID(t.Context())
	if err != nil {
		t.Fatalf("MaxNotificationID: %v", err)
	}
	return id
}

func (s *suite) testConflictAtomic(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	mustInsert(t, rec, Items(a, 0, 2))
	s.waitNotifications(t, rec, 0, 2)
	before := maxID(t, rec)

	for _, batch := range [][]store.SequencedItem{
		// the taken position in the middle of the batch
		{Item(b, 0), Item(b, 1), Item(a, 1), Item(c, 0)},
		// first
		{Item(a, 1), Item(b, 0)},
		// last
		{Item(b, 0), Item(c, 0), Item(c, 1), Item(a, 1)},
	} {
		_, err := rec.InsertEvents(ctx, batch)
		checkConflict(t, err, a, 1)
		for _, id := range []uuid.UUID{b, c} {
			if got := selectAll(t, rec, id); len(got) != 0 {
				t.Fatalf("after a failed append of %s, sequence %s holds %s", describe(batch), id, describe(got))
			}
		}
		checkItems(t, "sequence a after a failed append", selectAll(t, rec, a), Items(a, 0, 2))
	}

	// Nothing of the failed batches reached the log: a later append is the only
	// thing after what was there before.
	mustInsert(t, rec, []store.SequencedItem{Item(c, 0)})
	got := s.waitNotifications(t, rec, before, 1)
	if len(got) != 1 || got[0].SequenceID != c {
		t.Fatalf("log after failed appends and one good one = %d items, want just %s/0", len(got), c)
	}
	// The failed positions are still free.
	mustInsert(t, rec, Items(b, 0, 2))
}

func (s *suite) testDuplicateInBatch(t *testing.T) {
	rec := s.newRecorder(t)
	a, b := uuid.New(), uuid.New()
	_, err := rec.InsertEvents(t.Context(), []store.SequencedItem{Item(a, 0), Item(b, 0), Item(b, 1), Item(b, 0)})
	checkConflict(t, err, b, 0)
	for _, id := range []uuid.UUID{a, b} {
		if got := selectAll(t, rec, id); len(got) != 0 {
			t.Fatalf("after a batch with a duplicate, sequence %s holds %s", id, describe(got))
		}
	}
	if got := allNotifications(t, rec, 0); len(got) != 0 {
		t.Fatalf("after a batch with a duplicate, the log holds %d items", len(got))
	}
}

func (s *suite) testInvalidItems(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	good := uuid.New()
	tests := []struct {
		name   string
		mutate func(*store.SequencedItem)
	}{
		{"nil sequence id", func(it *store.SequencedItem) { it.SequenceID = uuid.Nil }},
		{"negative position", func(it *store.SequencedItem) { it.Position = -1 }},
		{"empty topic", func(it *store.SequencedItem) { it.Topic = "" }},
		{"oversized topic", func(it *store.SequencedItem) { it.Topic = strings.Repeat("x", store.MaxTopicLen+1) }},
		{"oversized codec", func(it *store.SequencedItem) { it.Codec = strings.Repeat("x", store.MaxCodecLen+1) }},
		{"oversized state", func(it *store.SequencedItem) { it.State = make([]byte, store.MaxStateSize+1) }},
	}
	for _, tc := range tests {
		bad := Item(uuid.New(), 0)
		tc.mutate(&bad)
		batch := []store.SequencedItem{Item(good, 0), bad}
		_, err := rec.InsertEvents(ctx, batch)
		if !errors.Is(err, store.ErrInvalidItem) {
			t.Fatalf("%s: InsertEvents = %v, want store.ErrInvalidItem", tc.name, err)
		}
		err = rec.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.InsertEvents(ctx, batch)
			return err
		})
		if !errors.Is(err, store.ErrInvalidItem) {
			t.Fatalf("%s: tx.InsertEvents = %v, want store.ErrInvalidItem", tc.name, err)
		}
		if got := selectAll(t, rec, good); len(got) != 0 {
			t.Fatalf("%s: the valid item of a rejected batch was written", tc.name)
		}
	}
	if got := allNotifications(t, rec, 0); len(got) != 0 {
		t.Fatalf("after rejected batches, the log holds %d items", len(got))
	}
}

func (s *suite) testNotifications(t *testing.T) {
	rec := s.newRecorder(t)
	if got := allNotifications(t, rec, 0); len(got) != 0 {
		t.Fatalf("a new recorder's log holds %d items", len(got))
	}
	if id := maxID(t, rec); id != 0 {
		t.Fatalf("MaxNotificationID of an empty log = %d, want 0", id)
	}
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	batches := [][]store.SequencedItem{
		{Item(a, 0)},
		{Item(b, 0), Item(b, 1), Item(c, 0)},
		{Item(a, 1), Item(c, 1), Item(a, 2)},
	}
	var want []store.Notification
	last := int64(0)
	for _, batch := range batches {
		ids := mustInsert(t, rec, batch)
		for i, id := range ids {
			if id <= last {
				t.Fatalf("notification ids %v of %s do not increase past %d", ids, describe(batch), last)
			}
			last = id
			want = append(want, store.Notification{ID: id, SequencedItem: batch[i]})
		}
	}
	// A Tx's appends get ids too, increasing across its calls.
	err := rec.InTx(t.Context(), func(tx store.Tx) error {
		for _, batch := range [][]store.SequencedItem{{Item(b, 2)}, {Item(c, 2), Item(b, 3)}} {
			ids, err := tx.InsertEvents(t.Context(), batch)
			if err != nil {
				return err
			}
			if len(ids) != len(batch) {
				return fmt.Errorf("tx.InsertEvents(%d items) returned %d ids", len(batch), len(ids))
			}
			for i, id := range ids {
				if id <= last {
					return fmt.Errorf("tx notification ids %v do not increase past %d", ids, last)
				}
				last = id
				want = append(want, store.Notification{ID: id, SequencedItem: batch[i]})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	got := s.waitNotifications(t, rec, 0, len(want))
	if len(got) != len(want) {
		t.Fatalf("log holds %d items, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].ID || !sameItem(got[i].SequencedItem, want[i].SequencedItem) {
			t.Fatalf("notification %d = %d %+v, want %d %+v", i, got[i].ID, got[i].SequencedItem, want[i].ID, want[i].SequencedItem)
		}
	}
	if id := maxID(t, rec); id != last {
		t.Fatalf("MaxNotificationID = %d, want the last id %d", id, last)
	}
	if got := allNotifications(t, rec, last); len(got) != 0 {
		t.Fatalf("SelectNotifications after the last id returned %d items", len(got))
	}
}

// testTraceParent: an item's trace context is stored with it, outside its
// state, and comes back with its notification; an item without one comes
// back without one, in the same batch too, whether appended alone or in a
// transaction.
func (s *suite) testTraceParent(t *testing.T) {
	rec := s.newRecorder(t)
	const (
		tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	)
	a, b := uuid.New(), uuid.New()
	batch := Items(a, 0, 3)
	batch[0].TraceParent = tp1
	batch[2].TraceParent = tp2
	want := map[int64]string{}
	ids := mustInsert(t, rec, batch)
	for i, id := range ids {
		want[id] = batch[i].TraceParent
	}
	plain := Items(b, 0, 2) // a batch in which no item has one
	for i, id := range mustInsert(t, rec, plain) {
		want[id] = plain[i].TraceParent
	}
	inTx := []store.SequencedItem{Item(b, 2), Item(a, 3)}
	inTx[1].TraceParent = tp1
	err := rec.InTx(t.Context(), func(tx store.Tx) error {
		ids, err := tx.InsertEvents(t.Context(), inTx)
		for i, id := range ids {
			want[id] = inTx[i].TraceParent
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got := s.waitNotifications(t, rec, 0, len(want))
	if len(got) != len(want) {
		t.Fatalf("log holds %d items, want %d", len(got), len(want))
	}
	for _, n := range got {
		tp, ok := want[n.ID]
		if !ok {
			t.Fatalf("notification %d was not appended here", n.ID)
		}
		if n.TraceParent != tp {
			t.Fatalf("notification %d (%s/%d) has trace context %q, want %q", n.ID, n.SequenceID, n.Position, n.TraceParent, tp)
		}
	}
	// The state is the item's own: the trace context is not in it.
	checkItems(t, "sequence a", selectAll(t, rec, a), append(batch, inTx[1]))
}

func (s *suite) testNotificationPaging(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	var ids []int64
	for range 5 {
		id := uuid.New()
		ids = append(ids, mustInsert(t, rec, Items(id, 0, 3))...)
	}
	s.waitNotifications(t, rec, 0, len(ids))
	for _, limit := range []int{1, 2, 4, 7, 15, 16, 100} {
		var got []int64
		after := int64(0)
		for pages := 0; ; pages++ {
			if pages > len(ids)+1 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			page, err := rec.SelectNotifications(ctx, after, limit)
			if err != nil {
				t.Fatalf("SelectNotifications(%d, %d): %v", after, limit, err)
			}
			if len(page) > limit {
				t.Fatalf("SelectNotifications(%d, %d) returned %d items", after, limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, n := range page {
				got = append(got, n.ID)
			}
			after = page[len(page)-1].ID
		}
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("limit %d: paged ids %v, want %v", limit, got, ids)
		}
	}
	// after between two ids
	mid := ids[4]
	page, err := rec.SelectNotifications(ctx, mid, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 3 || page[0].ID != ids[5] || page[2].ID != ids[7] {
		t.Fatalf("SelectNotifications(%d, 3) = %d items, want ids %v", mid, len(page), ids[5:8])
	}
}

// testUnorderedBatch: a batch whose items of one sequence are not in position
// order must still enter the log in position order (invariant 3).
func (s *suite) testUnorderedBatch(t *testing.T) {
	rec := s.newRecorder(t)
	a, b := uuid.New(), uuid.New()
	batch := []store.SequencedItem{Item(a, 2), Item(b, 1), Item(a, 0), Item(b, 0), Item(a, 1)}
	ids := mustInsert(t, rec, batch)
	for i := range batch {
		for j := range batch {
			if batch[i].SequenceID == batch[j].SequenceID && batch[i].Position < batch[j].Position && ids[i] >= ids[j] {
				t.Fatalf("batch %s got ids %v: position %d of a sequence does not come before position %d",
					describe(batch), ids, batch[i].Position, batch[j].Position)
			}
		}
	}
	got := s.waitNotifications(t, rec, 0, len(batch))
	next := map[uuid.UUID]int64{}
	for _, n := range got {
		if n.Position != next[n.SequenceID] {
			t.Fatalf("log order puts %s/%d where position %d is due", n.SequenceID, n.Position, next[n.SequenceID])
		}
		next[n.SequenceID]++
	}
	checkItems(t, "sequence a", selectAll(t, rec, a), Items(a, 0, 3))
}

func (s *suite) testTxCommit(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a := uuid.New()
	mustInsert(t, rec, Items(a, 0, 1))
	var txIDs []int64
	err := rec.InTx(ctx, func(tx store.Tx) error {
		ids, err := tx.InsertEvents(ctx, Items(a, 1, 2))
		if err != nil {
			return err
		}
		txIDs = ids
		// A Tx reads its own writes.
		got, err := tx.SelectEvents(ctx, a, store.Query{})
		if err != nil {
			return err
		}
		if len(got) != 3 {
			return fmt.Errorf("inside the tx, sequence holds %s, want 3 items", describe(got))
		}
		got, err = tx.SelectEvents(ctx, a, store.Query{After: ptr(0), Desc: true, Limit: 1})
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0].Position != 2 {
			return fmt.Errorf("inside the tx, last item is %s, want position 2", describe(got))
		}
		return tx.SetTracking(ctx, store.Tracking{Name: "p", Topic: "t", Partition: 3, Position: 42})
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	checkItems(t, "after commit", selectAll(t, rec, a), Items(a, 0, 3))
	if pos, err := rec.Tracking(ctx, "p", "t", 3); err != nil || pos != 42 {
		t.Fatalf("Tracking after commit = %d, %v; want 42", pos, err)
	}
	got := s.waitNotifications(t, rec, 0, 3)
	if len(got) != 3 || got[1].ID != txIDs[0] || got[2].ID != txIDs[1] {
		t.Fatalf("log after commit holds %d items; want the tx's ids %v last", len(got), txIDs)
	}
}

func (s *suite) testTxRollback(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a := uuid.New()
	boom := errors.New("boom")
	err := rec.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.InsertEvents(ctx, Items(a, 0, 2)); err != nil {
			return err
		}
		if err := tx.SetTracking(ctx, store.Tracking{Name: "p", Position: 7}); err != nil {
			return err
		}
		return fmt.Errorf("fn failed: %w", boom)
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want the error fn returned", err)
	}
	if got := selectAll(t, rec, a); len(got) != 0 {
		t.Fatalf("after rollback sequence holds %s", describe(got))
	}
	if pos, err := rec.Tracking(ctx, "p", "", 0); err != nil || pos != -1 {
		t.Fatalf("Tracking after rollback = %d, %v; want -1", pos, err)
	}
	if got := allNotifications(t, rec, 0); len(got) != 0 {
		t.Fatalf("after rollback the log holds %d items", len(got))
	}
	// The recorder is still usable, and the rolled back positions are free.
	mustInsert(t, rec, Items(a, 0, 2))
}

// testTxConflictKeepsTx: a conflict inside a Tx fails that InsertEvents call
// (atomically) but not the transaction, so that one conflicting command of a
// group commit does not fail the others.
func (s *suite) testTxConflictKeepsTx(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	mustInsert(t, rec, Items(a, 0, 1))
	err := rec.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.InsertEvents(ctx, Items(b, 0, 1)); err != nil {
			return err
		}
		_, err := tx.InsertEvents(ctx, []store.SequencedItem{Item(c, 0), Item(a, 0)})
		var ce *store.ConflictError
		if !errors.As(err, &ce) || ce.SequenceID != a || ce.Position != 0 {
			return fmt.Errorf("conflicting tx.InsertEvents = %v, want a conflict naming %s/0", err, a)
		}
		_, err = tx.InsertEvents(ctx, []store.SequencedItem{Item(b, 0)})
		if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("tx.InsertEvents of a position the tx took = %v, want a conflict", err)
		}
		if _, err := tx.InsertEvents(ctx, Items(b, 1, 1)); err != nil {
			return fmt.Errorf("tx.InsertEvents after a conflict: %w", err)
		}
		got, err := tx.SelectEvents(ctx, c, store.Query{})
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("inside the tx, the failed call's items are visible: %s", describe(got))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	checkItems(t, "sequence b", selectAll(t, rec, b), Items(b, 0, 2))
	if got := selectAll(t, rec, c); len(got) != 0 {
		t.Fatalf("the failed call's items were committed: %s", describe(got))
	}
	got := s.waitNotifications(t, rec, 0, 3)
	if len(got) != 3 {
		t.Fatalf("log holds %d items, want 3", len(got))
	}
}

func checkTrackingConflict(t testing.TB, err error, want store.Tracking, stored int64) {
	t.Helper()
	if !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("error = %v, want one wrapping store.ErrTrackingConflict", err)
	}
	var tc *store.TrackingConflictError
	if !errors.As(err, &tc) {
		t.Fatalf("error %v (%T) is not a *store.TrackingConflictError", err, err)
	}
	if tc.Tracking != want {
		t.Fatalf("tracking conflict names %+v, want %+v", tc.Tracking, want)
	}
	if tc.Stored != stored && tc.Stored != -1 {
		t.Fatalf("tracking conflict says stored %d, want %d (or -1, unknown)", tc.Stored, stored)
	}
}

func setTracking(ctx context.Context, rec store.ProcessRecorder, tr store.Tracking) error {
	return rec.InTx(ctx, func(tx store.Tx) error { return tx.SetTracking(ctx, tr) })
}

func (s *suite) testTracking(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	get := func(name, topic string, part int32) int64 {
		t.Helper()
		pos, err := rec.Tracking(ctx, name, topic, part)
		if err != nil {
			t.Fatalf("Tracking(%q, %q, %d): %v", name, topic, part, err)
		}
		return pos
	}
	if pos := get("proj", "orders", 0); pos != -1 {
		t.Fatalf("Tracking of an unknown key = %d, want -1", pos)
	}
	tr := store.Tracking{Name: "proj", Topic: "orders", Partition: 0, Position: 0}
	if err := setTracking(ctx, rec, tr); err != nil {
		t.Fatalf("first SetTracking at 0: %v", err)
	}
	if pos := get("proj", "orders", 0); pos != 0 {
		t.Fatalf("Tracking = %d, want 0", pos)
	}
	for _, p := range []int64{1, 5, 1000} {
		tr.Position = p
		if err := setTracking(ctx, rec, tr); err != nil {
			t.Fatalf("SetTracking forward to %d: %v", p, err)
		}
	}
	for _, p := range []int64{1000, 999, 0} {
		tr.Position = p
		checkTrackingConflict(t, setTracking(ctx, rec, tr), tr, 1000)
	}
	if pos := get("proj", "orders", 0); pos != 1000 {
		t.Fatalf("Tracking after refused moves = %d, want 1000", pos)
	}
	// Keys are independent.
	for _, k := range []store.Tracking{
		{Name: "proj", Topic: "orders", Partition: 1, Position: 3},
		{Name: "proj", Topic: "users", Partition: 0, Position: 4},
		{Name: "other", Topic: "orders", Partition: 0, Position: 5},
		{Name: "proj", Topic: "", Partition: 0, Position: 6},
	} {
		if pos := get(k.Name, k.Topic, k.Partition); pos != -1 {
			t.Fatalf("Tracking(%+v) before set = %d, want -1", k, pos)
		}
		if err := setTracking(ctx, rec, k); err != nil {
			t.Fatalf("SetTracking(%+v): %v", k, err)
		}
		if pos := get(k.Name, k.Topic, k.Partition); pos != k.Position {
			t.Fatalf("Tracking(%+v) = %d", k, pos)
		}
	}
	if pos := get("proj", "orders", 0); pos != 1000 {
		t.Fatalf("Tracking changed by other keys: %d, want 1000", pos)
	}
	// Moving twice forward inside one tx is fine; the later move wins.
	err := rec.InTx(ctx, func(tx store.Tx) error {
		if err := tx.SetTracking(ctx, store.Tracking{Name: "two", Position: 1}); err != nil {
			return err
		}
		return tx.SetTracking(ctx, store.Tracking{Name: "two", Position: 2})
	})
	if err != nil || get("two", "", 0) != 2 {
		t.Fatalf("two forward moves in one tx: %v, tracking %d; want nil, 2", err, get("two", "", 0))
	}
}

func (s *suite) testTrackingRollsBack(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a, b := uuid.New(), uuid.New()
	if err := setTracking(ctx, rec, store.Tracking{Name: "w", Topic: "cmds", Partition: 2, Position: 10}); err != nil {
		t.Fatal(err)
	}
	for _, pos := range []int64{10, 9} {
		tr := store.Tracking{Name: "w", Topic: "cmds", Partition: 2, Position: pos}
		err := rec.InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.InsertEvents(ctx, Items(a, 0, 2)); err != nil {
				return err
			}
			if err := tx.SetTracking(ctx, store.Tracking{Name: "w", Topic: "other", Position: 1}); err != nil {
				return err
			}
			if err := tx.SetTracking(ctx, tr); err != nil {
				return err
			}
			_, err := tx.InsertEvents(ctx, Items(b, 0, 1))
			return err
		})
		checkTrackingConflict(t, err, tr, 10)
		for _, id := range []uuid.UUID{a, b} {
			if got := selectAll(t, rec, id); len(got) != 0 {
				t.Fatalf("tracking conflict at %d: events of the tx were committed: %s", pos, describe(got))
			}
		}
		if p, _ := rec.Tracking(ctx, "w", "other", 0); p != -1 {
			t.Fatalf("tracking conflict at %d: other tracking of the tx was committed: %d", pos, p)
		}
		if p, _ := rec.Tracking(ctx, "w", "cmds", 2); p != 10 {
			t.Fatalf("tracking after conflict = %d, want 10", p)
		}
	}
	if got := allNotifications(t, rec, 0); len(got) != 0 {
		t.Fatalf("after rolled back txs the log holds %d items", len(got))
	}
}

// testTrackingSwallowed: a consumer that ignores the tracking conflict (a zombie)
// must still not commit: the transaction fails whole.
func (s *suite) testTrackingSwallowed(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	a := uuid.New()
	tr := store.Tracking{Name: "zombie", Topic: "t", Position: 5}
	if err := setTracking(ctx, rec, tr); err != nil {
		t.Fatal(err)
	}
	err := rec.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.InsertEvents(ctx, Items(a, 0, 1)); err != nil {
			return err
		}
		_ = tx.SetTracking(ctx, tr) // ignored on purpose
		return nil
	})
	if !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("InTx whose fn ignored a tracking conflict = %v, want store.ErrTrackingConflict", err)
	}
	if got := selectAll(t, rec, a); len(got) != 0 {
		t.Fatalf("a tx whose fn ignored a tracking conflict committed %s", describe(got))
	}
}

// testTrackingsSetter: SetTrackings does what SetTracking does for each record,
// in order, and a conflict fails the transaction whole.
func (s *suite) testTrackingsSetter(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	supported := true
	setAll := func(ts []store.Tracking) error {
		return rec.InTx(ctx, func(tx store.Tx) error {
			st, ok := tx.(store.TrackingsSetter)
			if !ok {
				supported = false
				return nil
			}
			return st.SetTrackings(ctx, ts)
		})
	}
	if err := setAll(nil); err != nil {
		t.Fatalf("SetTrackings(nil): %v", err)
	}
	if !supported {
		t.Skipf("the Tx of %T does not implement store.TrackingsSetter", rec)
	}
	at := func(topic string, partition int32, pos int64) store.Tracking {
		return store.Tracking{Name: "w", Topic: topic, Partition: partition, Position: pos}
	}
	check := func(what string, want map[store.Tracking]int64) {
		t.Helper()
		for k, pos := range want {
			got, err := rec.Tracking(ctx, k.Name, k.Topic, k.Partition)
			if err != nil || got != pos {
				t.Fatalf("%s: Tracking(%s/%d) = %d, %v; want %d", what, k.Topic, k.Partition, got, err, pos)
			}
		}
	}
	// Several keys, one of them moved twice: each ends at its last position.
	if err := setAll([]store.Tracking{at("t", 0, 3), at("t", 0, 7), at("t", 1, 2), at("", 0, 1)}); err != nil {
		t.Fatalf("SetTrackings: %v", err)
	}
	check("after SetTrackings", map[store.Tracking]int64{at("t", 0, 0): 7, at("t", 1, 0): 2, at("", 0, 0): 1})
	if err := setAll([]store.Tracking{at("t", 1, 3)}); err != nil {
		t.Fatalf("SetTrackings of one record: %v", err)
	}
	check("after SetTrackings of one record", map[store.Tracking]int64{at("t", 1, 0): 3})

	// A record that would not move forward fails the call, naming it, and the
	// transaction whole, even if fn ignores the error.
	a := uuid.New()
	bad := at("t", 0, 7)
	for _, ignore := range []bool{false, true} {
		var callErr error
		err := rec.InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.InsertEvents(ctx, Items(a, 0, 1)); err != nil {
				return err
			}
			callErr = tx.(store.TrackingsSetter).SetTrackings(ctx, []store.Tracking{at("t", 1, 4), bad, at("t", 0, 9), at("t", 2, 1)})
			if ignore {
				return nil
			}
			return callErr
		})
		checkTrackingConflict(t, callErr, bad, 7)
		checkTrackingConflict(t, err, bad, 7)
		check(fmt.Sprintf("after a conflict (ignored %v)", ignore), map[store.Tracking]int64{at("t", 0, 0): 7, at("t", 1, 0): 3, at("t", 2, 0): -1})
		if got := selectAll(t, rec, a); len(got) != 0 {
			t.Fatalf("a tx that failed SetTrackings committed %s", describe(got))
		}
	}
}

func (s *suite) testRaceSamePosition(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	id := uuid.New()
	mustInsert(t, rec, Items(id, 0, 1))
	n := s.cfg.goroutines
	var (
		start   = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []int
		others  []error
		wrong   []error
	)
	for g := range n {
		wg.Go(func() {
			it := Item(id, 1)
			it.State = fmt.Appendf(nil, `{"goroutine":%d}`, g)
			<-start
			_, err := rec.InsertEvents(ctx, []store.SequencedItem{it, Item(id, 2)})
			mu.Lock()
			defer mu.Unlock()
			var ce *store.ConflictError
			switch {
			case err == nil:
				winners = append(winners, g)
			case errors.As(err, &ce) && ce.SequenceID == id && (ce.Position == 1 || ce.Position == 2):
				others = append(others, err)
			default:
				wrong = append(wrong, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d of %d racing appends failed with something other than a conflict naming %s/1 or /2, e.g. %v",
			len(wrong), n, id, wrong[0])
	}
	if len(winners) != 1 || len(others) != n-1 {
		t.Fatalf("%d racing appends: %d won, %d conflicts; want exactly 1 winner", n, len(winners), len(others))
	}
	got := selectAll(t, rec, id)
	for i, it := range got {
		if it.Position != int64(i) {
			t.Fatalf("positions after the race are not contiguous: %s", describe(got))
		}
	}
	if len(got) != 3 || string(got[1].State) != fmt.Sprintf(`{"goroutine":%d}`, winners[0]) {
		t.Fatalf("after the race sequence holds %s with state %q, want 3 items, the winner's (%d) at 1",
			describe(got), got[1].State, winners[0])
	}
	s.waitNotifications(t, rec, 0, 3)
	if all := allNotifications(t, rec, 0); len(all) != 3 {
		t.Fatalf("after the race the log holds %d items, want 3", len(all))
	}
}

// testOptimisticAppends: writers append to one sequence by reading its version
// and retrying on conflict; every one of their items lands once, and positions
// are contiguous.
func (s *suite) testOptimisticAppends(t *testing.T) {
	rec := s.newRecorder(t)
	ctx := t.Context()
	id := uuid.New()
	writers, each := min(s.cfg.goroutines, 8), 5
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for k := 0; k < each; {
				last, err := rec.SelectEvents(ctx, id, store.Query{Desc: true, Limit: 1})
				if err != nil {
					errs <- err
					return
				}
				next := int64(0)
				if len(last) > 0 {
					next = last[0].Position + 1
				}
				it := Item(id, next)
				it.State = fmt.Appendf(nil, `{"w":%d,"k":%d}`, w, k)
				_, err = rec.InsertEvents(ctx, []store.SequencedItem{it})
				switch {
				case err == nil:
					k++
				case errors.Is(err, store.ErrConflict):
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("optimistic append: %v", err)
	}
	got := selectAll(t, rec, id)
	if len(got) != writers*each {
		t.Fatalf("sequence holds %d items, want %d", len(got), writers*each)
	}
	seen := map[string]bool{}
	for i, it := range got {
		if it.Position != int64(i) {
			t.Fatalf("positions are not contiguous: %s", describe(got))
		}
		if seen[string(it.State)] {
			t.Fatalf("item %s stored twice", it.State)
		}
		seen[string(it.State)] = true
	}
	log := s.waitNotifications(t, rec, 0, writers*each)
	for i, n := range log {
		if n.Position != int64(i) {
			t.Fatalf("the log has position %d where %d is due", n.Position, i)
		}
	}
}

func (s *suite) testConcurrentTail(t *testing.T) {
	rec := s.newRecorder(t)
	ctx, cancel := context.WithTimeout(t.Context(), s.cfg.wait+30*time.Second)
	defer cancel()
	writers, batches := s.cfg.writers, 15
	type key struct {
		id  uuid.UUID
		pos int64
	}
	var (
		mu        sync.Mutex
		committed = map[key]int64{} // item -> notification id
	)
	errs := make(chan error, writers+1)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			id := uuid.New()
			pos := int64(0)
			for b := range batches {
				n := 1 + (w+b)%4
				items := Items(id, pos, n)
				var ids []int64
				var err error
				if b%3 == 2 {
					err = rec.InTx(ctx, func(tx store.Tx) error {
						ids, err = tx.InsertEvents(ctx, items[:1])
						if err != nil {
							return err
						}
						more, err := tx.InsertEvents(ctx, items[1:])
						ids = append(ids, more...)
						return err
					})
				} else {
					ids, err = rec.InsertEvents(ctx, items)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				mu.Lock()
				for i, it := range items {
					committed[key{it.SequenceID, it.Position}] = ids[i]
				}
				mu.Unlock()
				pos += int64(n)
			}
		})
	}
	total := 0
	for w := range writers {
		for b := range batches {
			total += 1 + (w+b)%4
		}
	}

	// The tailer: small pages, continues from the last id it got.
	got := map[key]int64{}
	next := map[uuid.UUID]int64{}
	tailDone := make(chan struct{})
	go func() {
		defer close(tailDone)
		after := int64(0)
		deadline := time.Now().Add(s.cfg.wait + 20*time.Second)
		for len(got) < total {
			if time.Now().After(deadline) {
				errs <- fmt.Errorf("tailer: got %d of %d items before the deadline", len(got), total)
				return
			}
			page, err := rec.SelectNotifications(ctx, after, 7)
			if err != nil {
				errs <- fmt.Errorf("tailer: %w", err)
				return
			}
			if len(page) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			for _, n := range page {
				if n.ID <= after {
					errs <- fmt.Errorf("tailer: id %d after %d", n.ID, after)
					return
				}
				after = n.ID
				k := key{n.SequenceID, n.Position}
				if _, dup := got[k]; dup {
					errs <- fmt.Errorf("tailer: %s/%d received twice", n.SequenceID, n.Position)
					return
				}
				if n.Position != next[n.SequenceID] {
					errs <- fmt.Errorf("tailer: %s/%d received where position %d is due", n.SequenceID, n.Position, next[n.SequenceID])
					return
				}
				next[n.SequenceID]++
				got[k] = n.ID
			}
		}
	}()
	wg.Wait()
	<-tailDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(committed) != total || len(got) != total {
		t.Fatalf("committed %d items, tailer received %d, want %d", len(committed), len(got), total)
	}
	for k, id := range committed {
		if got[k] != id {
			t.Fatalf("%s/%d committed with id %d, received with id %d", k.id, k.pos, id, got[k])
		}
	}
	if rest := allNotifications(t, rec, maxOf(got)); len(rest) != 0 {
		t.Fatalf("the log holds %d items beyond what was committed", len(rest))
	}
}

func maxOf[K comparable](m map[K]int64) int64 {
	var v int64
	for _, x := range m {
		v = max(v, x)
	}
	return v
}

func (s *suite) snapshots(t *testing.T) (store.ProcessRecorder, store.SnapshotRecorder) {
	rec := s.newRecorder(t)
	if s.cfg.newSnapshots != nil {
		return rec, s.cfg.newSnapshots(t, rec)
	}
	snap, ok := rec.(store.SnapshotRecorder)
	if !ok {
		t.Skipf("%T does not implement store.SnapshotRecorder and no WithSnapshots option was given", rec)
	}
	return rec, snap
}

func (s *suite) testSnapshots(t *testing.T) {
	rec, snap := s.snapshots(t)
	ctx := t.Context()
	id := uuid.New()
	if _, err := snap.LatestSnapshot(ctx, id, -1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LatestSnapshot of an unknown sequence = %v, want store.ErrNotFound", err)
	}
	snapAt := func(pos int64, state string) store.SequencedItem {
		return store.SequencedItem{SequenceID: id, Position: pos, Topic: "storetest.Snapshot", State: []byte(state), Codec: "json"}
	}
	for _, pos := range []int64{5, 2, 9} {
		if err := snap.InsertSnapshot(ctx, snapAt(pos, fmt.Sprintf(`{"v":%d}`, pos))); err != nil {
			t.Fatalf("InsertSnapshot at %d: %v", pos, err)
		}
	}
	// A snapshot at a taken position succeeds and keeps the stored one.
	if err := snap.InsertSnapshot(ctx, snapAt(5, `{"v":"new"}`)); err != nil {
		t.Fatalf("InsertSnapshot at a taken position = %v, want nil", err)
	}
	for _, tc := range []struct{ upTo, want int64 }{{-1, 9}, {100, 9}, {9, 9}, {8, 5}, {5, 5}, {4, 2}, {2, 2}} {
		got, err := snap.LatestSnapshot(ctx, id, tc.upTo)
		if err != nil {
			t.Fatalf("LatestSnapshot(upTo %d): %v", tc.upTo, err)
		}
		if want := snapAt(tc.want, fmt.Sprintf(`{"v":%d}`, tc.want)); !sameItem(got, want) {
			t.Fatalf("LatestSnapshot(upTo %d) = %+v (state %s), want %+v", tc.upTo, got, got.State, want)
		}
	}
	for _, upTo := range []int64{1, 0} {
		if _, err := snap.LatestSnapshot(ctx, id, upTo); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("LatestSnapshot(upTo %d) before the first snapshot = %v, want store.ErrNotFound", upTo, err)
		}
	}
	if _, err := snap.LatestSnapshot(ctx, uuid.New(), 5); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LatestSnapshot of another sequence = %v, want store.ErrNotFound", err)
	}
	// Snapshots live apart from events.
	if got := selectAll(t, rec, id); len(got) != 0 {
		t.Fatalf("snapshots show up as events: %s", describe(got))
	}
	if got := allNotifications(t, rec, 0); len(got) != 0 {
		t.Fatalf("snapshots show up in the notification log: %d items", len(got))
	}
	mustInsert(t, rec, Items(id, 0, 1)) // and do not take event positions
}

func (s *suite) testNotifier(t *testing.T) {
	rec := s.newRecorder(t)
	n, ok := rec.(store.Notifier)
	if !ok {
		t.Skipf("%T does not implement store.Notifier", rec)
	}
	ctx, cancel := context.WithCancel(t.Context())
	wake := n.Notify(ctx)
	// drain whatever a fresh subscription may deliver at once
	drain := func() {
		for {
			select {
			case _, ok := <-wake:
				if !ok {
					t.Fatal("the Notify channel closed while its context is live")
				}
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	drain()
	// A wake-up may be lost, so append until one arrives; it must arrive.
	waitWake := func(what string, appendFn func(pos int64) error) {
		t.Helper()
		deadline := time.After(s.cfg.wait)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		pos := int64(0)
		if err := appendFn(pos); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for {
			select {
			case _, ok := <-wake:
				if !ok {
					t.Fatalf("%s: the Notify channel closed while its context is live", what)
				}
				return
			case <-tick.C:
				pos++
				if err := appendFn(pos); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			case <-deadline:
				t.Fatalf("%s: no wake-up within %v", what, s.cfg.wait)
			}
		}
	}
	a := uuid.New()
	waitWake("InsertEvents", func(int64) error {
		_, err := rec.InsertEvents(ctx, []store.SequencedItem{Item(uuid.New(), 0)})
		return err
	})
	drain()
	waitWake("InTx", func(pos int64) error {
		return rec.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.InsertEvents(ctx, []store.SequencedItem{Item(a, pos)})
			return err
		})
	})
	// A second subscriber is woken too.
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	wake2 := n.Notify(ctx2)
	_, err := rec.InsertEvents(ctx, []store.SequencedItem{Item(uuid.New(), 0)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake2:
	case <-time.After(s.cfg.wait):
		t.Fatalf("second subscriber: no wake-up within %v", s.cfg.wait)
	}
	cancel()
	select {
	case <-closed(wake):
	case <-time.After(s.cfg.wait):
		t.Fatal("Notify channel not closed after its context ended")
	}
	// The second subscription outlives the first.
	waitWake2 := time.After(s.cfg.wait)
	for woken := false; !woken; {
		if _, err := rec.InsertEvents(t.Context(), []store.SequencedItem{Item(uuid.New(), 0)}); err != nil {
			t.Fatal(err)
		}
		select {
		case _, ok := <-wake2:
			if !ok {
				t.Fatal("second Notify channel closed when the first subscription ended")
			}
			woken = true
		case <-time.After(500 * time.Millisecond):
		case <-waitWake2:
			t.Fatal("second subscriber: no wake-up after the first subscription ended")
		}
	}
	cancel2()
	select {
	case <-closed(wake2):
	case <-time.After(s.cfg.wait):
		t.Fatal("second Notify channel not closed after its context ended")
	}
}

// closed returns a channel closed once ch is closed, draining ch meanwhile.
func closed(ch <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for range ch {
		}
		close(done)
	}()
	return done
}
