package projection_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

var topics = projtest.Topics

func newMapper(t testing.TB) *events.Mapper { return projtest.NewMapper(t) }

// history writes random histories of generic entities to a new memory
// recorder.
func history(t testing.TB, rng *rand.Rand, mapper *events.Mapper, entities, commands int) *memory.Recorder {
	t.Helper()
	src := memory.New()
	projtest.History(t, rng, mapper, src, entities, commands)
	return src
}

func put(t testing.TB, es *store.EventStore, e *entity.Entity) {
	t.Helper()
	if _, err := es.Put(context.Background(), e.PendingEvents()...); err != nil {
		t.Fatal(err)
	}
	e.CollectEvents()
}

func notifications(t testing.TB, rec store.ApplicationRecorder) []store.Notification {
	return projtest.Notifications(t, rec)
}

func publish(rng *rand.Rand, log []store.Notification, partitions int, dupRate float64) projtest.Stream {
	return projtest.Publish(rng, log, partitions, dupRate)
}

func flatten(s projtest.Stream) []wire.Record { return s.Flatten() }

var markerSpace = uuid.MustParse("4a3e1c2b-8d7f-4e3a-9b1c-2d3e4f5a6b7c")

// counting wraps a policy and records, in the same transaction, one marker
// item per item applied, so that committed applies can be counted per
// (sequence, position) afterwards.
type counting struct {
	projection.Policy
}

func markerID(id uuid.UUID, pos int64) uuid.UUID {
	b := binary.BigEndian.AppendUint64(id[:16:16], uint64(pos))
	return uuid.NewSHA1(markerSpace, b)
}

func (c counting) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	if err := c.Policy.Apply(ctx, tx, items); err != nil {
		return err
	}
	for _, it := range items {
		mid := markerID(it.SequenceID, it.Position)
		got, err := tx.SelectEvents(ctx, mid, store.Query{})
		if err != nil {
			return err
		}
		if _, err := tx.InsertEvents(ctx, []store.SequencedItem{{SequenceID: mid, Position: int64(len(got)), Topic: "test.Applied", Codec: "json", State: []byte("{}")}}); err != nil {
			return err
		}
	}
	return nil
}

func (c counting) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return c.Policy.(projection.Positions).LastPositions(ctx, tx, ids)
}

func (c counting) DecodesEvents() bool {
	d, ok := c.Policy.(projection.DecodingPolicy)
	return ok && d.DecodesEvents()
}

// checkAppliedOnce asserts that every item of log was applied exactly once.
func checkAppliedOnce(t testing.TB, target store.AggregateRecorder, log []store.Notification) {
	t.Helper()
	for _, n := range log {
		got, err := target.SelectEvents(context.Background(), markerID(n.SequenceID, n.Position), store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Errorf("position %d of %s applied %d times, want 1", n.Position, n.SequenceID, len(got))
		}
	}
}

// checkCopy asserts that target holds every sequence of log, item by item.
func checkCopy(t testing.TB, target store.AggregateRecorder, log []store.Notification) {
	t.Helper()
	want := map[uuid.UUID][]store.SequencedItem{}
	for _, n := range log {
		want[n.SequenceID] = append(want[n.SequenceID], n.SequencedItem)
	}
	for id, items := range want {
		got, err := target.SelectEvents(context.Background(), id, store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(items) {
			t.Errorf("sequence %s: %d items copied, want %d", id, len(got), len(items))
			continue
		}
		for i := range got {
			g, w := got[i], items[i]
			if g.Position != w.Position || g.Topic != w.Topic || g.Codec != w.Codec || string(g.State) != string(w.State) {
				t.Errorf("sequence %s item %d: got %+v, want %+v", id, i, g, w)
			}
		}
	}
}

// decodingCopy is the persistence policy that also wants events, and checks
// it gets them.
type decodingCopy struct{ projection.PersistencePolicy }

func (decodingCopy) DecodesEvents() bool { return true }

func (d decodingCopy) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	for _, it := range items {
		if it.Event == nil || it.Event.EventMeta().OriginatorID != it.SequenceID {
			return fmt.Errorf("item %d of %s not decoded", it.Position, it.SequenceID)
		}
	}
	return d.PersistencePolicy.Apply(ctx, tx, items)
}
