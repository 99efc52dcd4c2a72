package shard_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/shard"
)

func TestMergedLog(t *testing.T) {
	ctx := t.Context()
	s, _ := shard.New(memory.New(), memory.New(), memory.New())
	want := map[uuid.UUID]int{}
	for i := range 30 {
		id := idOn(i%3, 3)
		if i == 2 {
			id = idOn(0, 3) // shard 2 gets fewer
		}
		for p := range 3 {
			if _, err := s.InsertEvents(ctx, []store.SequencedItem{item(id, int64(p))}); err != nil {
				t.Fatal(err)
			}
		}
		want[id] = 3
	}
	m := shard.NewMergedLog(s)
	read := func(after int64) (map[uuid.UUID][]int64, int64, []int64) {
		got := map[uuid.UUID][]int64{}
		var ends []int64
		for {
			ns, err := m.SelectNotifications(ctx, after, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) == 0 {
				return got, after, ends
			}
			for _, n := range ns {
				if n.ID != after+1 {
					t.Fatalf("id %d after %d", n.ID, after)
				}
				after = n.ID
				got[n.SequenceID] = append(got[n.SequenceID], n.Position)
			}
			ends = append(ends, after)
		}
	}
	got, last, ends := read(0)
	if last != 90 || len(got) != len(want) {
		t.Fatalf("read %d notifications of %d sequences, want 90 of %d", last, len(got), len(want))
	}
	for id, ps := range got {
		if len(ps) != 3 || ps[0] != 0 || ps[1] != 1 || ps[2] != 2 {
			t.Fatalf("%s: positions %v", id, ps)
		}
	}
	if n, err := m.MaxNotificationID(ctx); err != nil || n != 90 {
		t.Fatalf("MaxNotificationID at the end: %d, %v", n, err)
	}
	// Items appended later are read after the end.
	late := idOn(1, 3)
	if _, err := s.InsertEvents(ctx, []store.SequencedItem{item(late, 0)}); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.MaxNotificationID(ctx); n != 91 {
		t.Fatalf("MaxNotificationID with one more: %d", n)
	}
	// Going back to a page end reads the same again, and the new item.
	back := ends[len(ends)-3]
	again, last2, _ := read(back)
	n := 0
	for _, ps := range again {
		n += len(ps)
	}
	if last2 != 91 || n != int(91-back) || len(again[late]) != 1 {
		t.Fatalf("read again from %d: up to %d, %d items, late %v", back, last2, n, again[late])
	}
	if _, err := m.SelectNotifications(ctx, 5, 10); err == nil && ends[0] != 5 {
		t.Fatal("a read after an id that ends no page was accepted")
	}
}
