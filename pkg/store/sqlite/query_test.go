package sqlite_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

func p(v int64) *int64 { return &v }

// TestQuery checks Query options on a sequence with gaps (positions need not
// be contiguous in a store), first by hand, then every combination against a
// model, through the Recorder and inside a Tx.
func TestQuery(t *testing.T) {
	r := open(t, sqlite.Options{})
	ctx := t.Context()
	id := uuid.New()
	positions := []int64{0, 1, 2, 5, 8, 13}
	var items []store.SequencedItem
	for _, pos := range positions {
		items = append(items, storetest.Item(id, pos))
	}
	if _, err := r.InsertEvents(ctx, items); err != nil {
		t.Fatal(err)
	}
	// Neighbours that must never show up.
	if _, err := r.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 20)); err != nil {
		t.Fatal(err)
	}

	hand := []struct {
		name string
		q    store.Query
		want []int64
	}{
		{"zero value", store.Query{}, positions},
		{"after a gap", store.Query{After: p(3)}, []int64{5, 8, 13}},
		{"after an existing position", store.Query{After: p(5)}, []int64{8, 13}},
		{"after -1 is everything", store.Query{After: p(-1)}, positions},
		{"after the last", store.Query{After: p(13)}, nil},
		{"upto a gap", store.Query{UpTo: p(7)}, []int64{0, 1, 2, 5}},
		{"upto an existing position includes it", store.Query{UpTo: p(8)}, []int64{0, 1, 2, 5, 8}},
		{"upto -1 is nothing", store.Query{UpTo: p(-1)}, nil},
		{"after = upto is nothing", store.Query{After: p(5), UpTo: p(5)}, nil},
		{"after > upto is nothing", store.Query{After: p(8), UpTo: p(2)}, nil},
		{"window", store.Query{After: p(1), UpTo: p(8)}, []int64{2, 5, 8}},
		{"limit", store.Query{Limit: 2}, []int64{0, 1}},
		{"negative limit is no limit", store.Query{Limit: -3}, positions},
		{"desc", store.Query{Desc: true}, []int64{13, 8, 5, 2, 1, 0}},
		{"desc limit 1 is the last item", store.Query{Desc: true, Limit: 1}, []int64{13}},
		{"desc upto limit is the latest at or before", store.Query{Desc: true, UpTo: p(7), Limit: 1}, []int64{5}},
		{"window desc limit", store.Query{After: p(0), UpTo: p(13), Desc: true, Limit: 2}, []int64{13, 8}},
		{"window limit", store.Query{After: p(0), UpTo: p(13), Limit: 2}, []int64{1, 2}},
	}
	for _, tc := range hand {
		got, err := r.SelectEvents(ctx, id, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if gotPos := positionsOf(got); !slices.Equal(gotPos, tc.want) {
			t.Errorf("%s: positions %v, want %v", tc.name, gotPos, tc.want)
		}
	}

	// Every combination, against a model.
	bounds := []*int64{nil, p(-1), p(0), p(3), p(5), p(12), p(13), p(99)}
	var queries []store.Query
	for _, after := range bounds {
		for _, upTo := range bounds {
			for _, desc := range []bool{false, true} {
				for _, limit := range []int{-1, 0, 1, 2, 6} {
					queries = append(queries, store.Query{After: after, UpTo: upTo, Desc: desc, Limit: limit})
				}
			}
		}
	}
	check := func(via string, sel func(store.Query) ([]store.SequencedItem, error)) error {
		for _, q := range queries {
			got, err := sel(q)
			if err != nil {
				return fmt.Errorf("%s %s: %w", via, show(q), err)
			}
			want := model(positions, q)
			if gotPos := positionsOf(got); !slices.Equal(gotPos, want) {
				return fmt.Errorf("%s %s: positions %v, want %v", via, show(q), gotPos, want)
			}
			for _, it := range got {
				if want := storetest.Item(id, it.Position); string(it.State) != string(want.State) || it.SequenceID != id ||
					it.Topic != want.Topic || it.Codec != want.Codec {
					return fmt.Errorf("%s %s: item %+v, want %+v", via, show(q), it, want)
				}
			}
		}
		return nil
	}
	if err := check("Recorder", func(q store.Query) ([]store.SequencedItem, error) { return r.SelectEvents(ctx, id, q) }); err != nil {
		t.Fatal(err)
	}
	err := r.InTx(ctx, func(tx store.Tx) error {
		return check("Tx", func(q store.Query) ([]store.SequencedItem, error) { return tx.SelectEvents(ctx, id, q) })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d query combinations checked twice", len(queries))
}

func model(positions []int64, q store.Query) []int64 {
	var out []int64
	for _, pos := range positions {
		if (q.After == nil || pos > *q.After) && (q.UpTo == nil || pos <= *q.UpTo) {
			out = append(out, pos)
		}
	}
	if q.Desc {
		slices.Reverse(out)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out
}

func positionsOf(items []store.SequencedItem) []int64 {
	var out []int64
	for _, it := range items {
		out = append(out, it.Position)
	}
	return out
}

func show(q store.Query) string {
	f := func(v *int64) string {
		if v == nil {
			return "nil"
		}
		return fmt.Sprint(*v)
	}
	return fmt.Sprintf("{After:%s UpTo:%s Desc:%v Limit:%d}", f(q.After), f(q.UpTo), q.Desc, q.Limit)
}

func TestSelectNotificationsLimit(t *testing.T) {
	r := open(t, sqlite.Options{})
	ctx := t.Context()
	ids, err := r.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 5))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 0, ids},          // no limit
		{0, -1, ids},         // no limit
		{ids[1], 0, ids[2:]}, // no limit, after an id
		{0, 2, ids[:2]},
		{ids[3], 10, ids[4:]},
		{ids[4], 10, nil},
		{-5, 1, ids[:1]},
	} {
		ns, err := r.SelectNotifications(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, n := range ns {
			got = append(got, n.ID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("SelectNotifications(%d, %d) = ids %v, want %v", tc.after, tc.limit, got, tc.want)
		}
	}
}
