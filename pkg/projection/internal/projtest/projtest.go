// Package projtest holds what the tests of package projection and its read
// models share: random histories of generic entities, a fake relay that
// publishes them with duplicates and gaps, a fake consumer that hands random
// batches to a runner, and the reference fold of a log.
package projtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Topics are the Kafka topics the fake relay publishes to.
var Topics = wire.Topics{Prefix: wire.DefaultPrefix}

// Types are the entity types of the histories.
var Types = []string{"customer", "example"}

// NewMapper returns a mapper for the generic entity of every type in Types.
func NewMapper(t testing.TB) *events.Mapper {
	t.Helper()
	reg := events.NewRegistry()
	for _, typ := range Types {
		if err := entity.Register(reg, typ); err != nil {
			t.Fatal(err)
		}
	}
	return events.NewMapper(reg)
}

// History appends random histories of generic entities to rec: entities
// created, then commands on random ones, each stored as it is made, so that
// the log interleaves the entities. Timestamps are distinct and increasing.
func History(t testing.TB, rng *rand.Rand, mapper *events.Mapper, rec store.AggregateRecorder, entities, commands int) []*entity.Entity {
	t.Helper()
	es := store.NewEventStore(mapper, rec)
	clock := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(1e6)) * time.Second)
	put := func(e *entity.Entity) {
		t.Helper()
		for _, ev := range e.PendingEvents() {
			clock = clock.Add(time.Millisecond + time.Duration(rng.IntN(1000))*time.Nanosecond)
			ev.EventMeta().Timestamp = clock
		}
		if _, err := es.Put(context.Background(), e.PendingEvents()...); err != nil {
			t.Fatal(err)
		}
		e.CollectEvents()
	}
	var live []*entity.Entity
	for range entities {
		typ := Types[rng.IntN(len(Types))]
		e, err := entity.Create(typ, uuid.New(), map[string]json.RawMessage{
			"foo": json.RawMessage(`"bar"`), "n": json.RawMessage(`0`), "tags": json.RawMessage(`["a", "b"]`),
		})
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, e)
		put(e)
	}
	for i := range commands {
		e := live[rng.IntN(len(live))]
		if e.Discarded() {
			continue
		}
		var err error
		switch rng.IntN(25) {
		case 0:
			err = e.Discard()
		case 1, 2:
			err = e.Update(map[string]json.RawMessage{
				"foo": json.RawMessage(fmt.Sprintf(`"v%d"`, i%7)), "n": json.RawMessage(fmt.Sprint(i)),
				"nested": json.RawMessage(fmt.Sprintf(`{"k": %d, "null": null}`, i%3)),
			})
		default:
			err = e.Set(fmt.Sprintf("a%d", rng.IntN(4)), i)
		}
		if err != nil {
			t.Fatal(err)
		}
		put(e)
	}
	return live
}

// Notifications returns the whole log of rec.
func Notifications(t testing.TB, rec store.ApplicationRecorder) []store.Notification {
	t.Helper()
	var out []store.Notification
	for {
		var after int64
		if len(out) > 0 {
			after = out[len(out)-1].ID
		}
		ns, err := rec.SelectNotifications(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) == 0 {
			return out
		}
		out = append(out, ns...)
	}
}

func partitionOf(id uuid.UUID, partitions int) int32 {
	h := fnv.New32a()
	h.Write(id[:])
	return int32(h.Sum32() % uint32(partitions))
}

// A TP is a Kafka topic and partition.
type TP struct {
	Topic     string
	Partition int32
}

func cmpTP(a, b TP) int {
	return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// A Stream is what the relay published: one slice of records per topic and
// partition, in offset order.
type Stream map[TP][]wire.Record

// Publish turns a log into event records, keyed into partitions by sequence
// id, as the relay does. With dupRate > 0 the relay "fails" now and then: it
// publishes a few items, skipping one or two, and then the run again from an
// earlier item. That gives exact duplicates at new offsets, and gaps where a
// skipped item belongs to a sequence published ahead.
func Publish(rng *rand.Rand, log []store.Notification, partitions int, dupRate float64) Stream {
	s := Stream{}
	add := func(n store.Notification) {
		k := TP{Topics.Events(events.EntityOf(n.Topic)), partitionOf(n.SequenceID, partitions)}
		s[k] = append(s[k], projection.RecordOf(n, k.Topic, k.Partition, int64(len(s[k]))))
	}
	for i := 0; i < len(log); i++ {
		if dupRate > 0 && i > 0 && rng.Float64() < dupRate {
			from := max(0, i-rng.IntN(5))
			skip := 1 + rng.IntN(2)
			ahead := min(len(log), i+skip+1+rng.IntN(3))
			for _, n := range log[min(i+skip, ahead):ahead] {
				add(n)
			}
			for _, n := range log[from:ahead] {
				add(n)
			}
			i = ahead - 1
			continue
		}
		add(log[i])
	}
	return s
}

// Partitions returns the keys of s in order.
func (s Stream) Partitions() []TP {
	ps := make([]TP, 0, len(s))
	for p := range s {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, cmpTP)
	return ps
}

// Flatten returns every record of s, partition by partition.
func (s Stream) Flatten() []wire.Record {
	var out []wire.Record
	for _, p := range s.Partitions() {
		out = append(out, s[p]...)
	}
	return out
}

// A Handler is what a Consumer drives: a projection.Runner.
type Handler interface {
	HandleBatch(ctx context.Context, records []wire.Record) error
	Tracking(ctx context.Context, name, topic string, partition int32) (int64, error)
}

// A Consumer plays the Kafka consumer: it hands random slices of several
// partitions to a handler, re-delivers overlapping ranges now and then, and
// after every batch seeks each partition past the handler's tracking, as the
// real consumer does after a conflict or an assignment.
type Consumer struct {
	T       testing.TB
	Rng     *rand.Rand
	Handler Handler
	Name    string
	// MaxBatch bounds the records taken from one partition per batch.
	MaxBatch int
	// Redeliver is the probability that a partition's slice starts before
	// the consumer's position (a redelivery, which must conflict).
	Redeliver float64
	// Retry reports errors the consumer retries; other errors fail the test.
	Retry func(error) bool
}

// Run consumes s to its end.
func (c *Consumer) Run(s Stream) {
	c.T.Helper()
	ctx := context.Background()
	next := map[TP]int{}
	ps := s.Partitions()
	for rounds := 0; ; rounds++ {
		if rounds > 1_000_000 {
			c.T.Fatal("projtest: consumer did not finish")
		}
		done := true
		for _, p := range ps {
			done = done && next[p] >= len(s[p])
		}
		if done {
			return
		}
		var batch []wire.Record
		for _, p := range ps {
			if len(ps) > 1 && c.Rng.IntN(3) == 0 {
				continue
			}
			from := next[p]
			if from > 0 && c.Redeliver > 0 && c.Rng.Float64() < c.Redeliver {
				from = max(0, from-1-c.Rng.IntN(5))
			}
			to := min(len(s[p]), from+1+c.Rng.IntN(c.MaxBatch))
			batch = append(batch, s[p][from:to]...)
		}
		if len(batch) == 0 {
			continue
		}
		err := c.Handler.HandleBatch(ctx, batch)
		switch {
		case err == nil, errors.Is(err, store.ErrTrackingConflict):
		case c.Retry != nil && c.Retry(err):
			continue
		default:
			c.T.Fatalf("projtest: HandleBatch: %v", err)
		}
		for _, p := range ps {
			pos, err := c.Handler.Tracking(ctx, c.Name, p.Topic, p.Partition)
			if err != nil {
				c.T.Fatal(err)
			}
			next[p] = int(pos + 1)
		}
	}
}

// Fold returns the rows a read model of log must hold, by replaying each
// entity's events through the entity's own mutator.
func Fold(t testing.TB, mapper *events.Mapper, log []store.Notification) map[uuid.UUID]readmodel.Row {
	t.Helper()
	ents := map[uuid.UUID]*entity.Entity{}
	out := map[uuid.UUID]readmodel.Row{}
	for _, n := range log {
		typ := events.EntityOf(n.Topic)
		if !slices.Contains(Types, typ) {
			continue
		}
		e, err := mapper.FromItem(n.SequencedItem)
		if err != nil {
			t.Fatal(err)
		}
		ent := ents[n.SequenceID]
		if ent == nil {
			ent = entity.New(typ)
			ents[n.SequenceID] = ent
		}
		if err := events.Apply(ent, e); err != nil {
			t.Fatal(err)
		}
		out[n.SequenceID] = readmodel.Row{
			Type: typ, ID: n.SequenceID, Version: ent.Version(), Attributes: ent.Attributes,
			Discarded: ent.Discarded(), UpdatedAt: e.EventMeta().Timestamp,
		}
	}
	return out
}

// CompareRows reports the differences between rows a read model holds and
// the rows it should hold. Attribute values compare as JSON values;
// timestamps to the microsecond.
func CompareRows(got []readmodel.Row, want map[uuid.UUID]readmodel.Row) []string {
	var diffs []string
	seen := map[uuid.UUID]bool{}
	for _, g := range got {
		seen[g.ID] = true
		w, ok := want[g.ID]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s %s: unexpected row", g.Type, g.ID))
			continue
		}
		if g.Type != w.Type || g.Version != w.Version || g.Discarded != w.Discarded ||
			!g.UpdatedAt.Truncate(time.Microsecond).Equal(w.UpdatedAt.Truncate(time.Microsecond)) ||
			!sameJSON(g.Attributes, w.Attributes) {
			diffs = append(diffs, fmt.Sprintf("%s %s:\n\tgot  v%d discarded=%v %s %s\n\twant v%d discarded=%v %s %s",
				g.Type, g.ID, g.Version, g.Discarded, g.UpdatedAt.Format(time.RFC3339Nano), readmodel.EncodeAttributes(g.Attributes),
				w.Version, w.Discarded, w.UpdatedAt.Format(time.RFC3339Nano), readmodel.EncodeAttributes(w.Attributes)))
		}
	}
	for id, w := range want {
		if !seen[id] {
			diffs = append(diffs, fmt.Sprintf("%s %s: missing row", w.Type, id))
		}
	}
	slices.Sort(diffs)
	return diffs
}

func sameJSON(a, b map[string]json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(readmodel.EncodeAttributes(a), &x) != nil || json.Unmarshal(readmodel.EncodeAttributes(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// A Fault makes a policy fail on one event: permanently while On, and
// transiently (attributed with an *ItemError) Transient times first.
type Fault struct {
	ID        uuid.UUID
	Pos       atomic.Int64
	On        atomic.Bool
	Transient atomic.Int64
	// Unattributed fails without an *ItemError (the runner then applies the
	// items one at a time to find the failing one).
	Unattributed bool
	// Hits counts the times the event reached the policy.
	Hits atomic.Int64
}

// NewFault returns a fault, on, at position pos of sequence id.
func NewFault(id uuid.UUID, pos int64) *Fault {
	f := &Fault{ID: id}
	f.Pos.Store(pos)
	f.On.Store(true)
	return f
}

func (f *Fault) check(items []projection.Item) error {
	for i, it := range items {
		if it.SequenceID != f.ID || it.Position != f.Pos.Load() {
			continue
		}
		f.Hits.Add(1)
		if f.Transient.Load() > 0 {
			f.Transient.Add(-1)
			return &projection.ItemError{Index: i, Err: errors.New("i/o timeout")}
		}
		if f.On.Load() {
			err := projection.Permanent(fmt.Errorf("event %d of %s refused", it.Position, it.SequenceID))
			if f.Unattributed {
				return err
			}
			return &projection.ItemError{Index: i, Err: err}
		}
	}
	return nil
}

// Faulty returns policy (with its position guard and decoding) failing as f
// says.
func Faulty(policy projection.Policy, f *Fault) projection.Policy { return faulty{policy, f} }

type faulty struct {
	projection.Policy
	f *Fault
}

func (p faulty) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	if err := p.f.check(items); err != nil {
		return err
	}
	return p.Policy.Apply(ctx, tx, items)
}

func (p faulty) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return p.Policy.(projection.Positions).LastPositions(ctx, tx, ids)
}

func (p faulty) DecodesEvents() bool {
	d, ok := p.Policy.(projection.DecodingPolicy)
	return ok && d.DecodesEvents()
}

// Without returns log without the events of sequence id from position from
// on: what a read model holds while they are parked.
func Without(log []store.Notification, id uuid.UUID, from int64) []store.Notification {
	out := make([]store.Notification, 0, len(log))
	for _, n := range log {
		if n.SequenceID != id || n.Position < from {
			out = append(out, n)
		}
	}
	return out
}

// A ParkEnv is a read model on a store that is its runner's target and
// source, for CheckParking.
type ParkEnv struct {
	Store interface {
		store.ProcessRecorder
		store.ParkRecorder
	}
	Mapper *events.Mapper
	// Policy is the read model.
	Policy projection.Policy
	// Rows returns every row of the read model, discarded ones too; Log the
	// store's whole log.
	Rows func(t testing.TB) []readmodel.Row
	Log  func(t testing.TB) []store.Notification
	// Rebuild, if set, rebuilds the read model from the store's log.
	Rebuild func(t testing.TB)
}

// CheckParking checks a read model's parking: a policy failing on event k of
// entity x parks x's events k..n, the row of x stays as it was after event
// k-1 while every other entity is applied in full (through duplicates, gaps
// and redeliveries), a rebuild keeps it so, and once the fault is gone a
// retry brings x's row up to date.
func CheckParking(t *testing.T, e ParkEnv, seed uint64) {
	t.Helper()
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(seed, 77))
	ents := History(t, rng, e.Mapper, e.Store, 8, 200)
	log := e.Log(t)
	var x *entity.Entity
	for _, en := range ents {
		if x == nil || en.Version() > x.Version() {
			x = en
		}
	}
	n := x.Version() - 1
	k := 1 + rng.Int64N(n-1)
	f := NewFault(x.ID(), k)
	const name = "readmodel"
	r, err := projection.NewRunner(e.Store, projection.Config{Name: name, Policy: Faulty(e.Policy, f), Mapper: e.Mapper, Source: e.Store})
	if err != nil {
		t.Fatal(err)
	}
	(&Consumer{T: t, Rng: rng, Handler: r, Name: name, MaxBatch: 25, Redeliver: 0.15}).Run(Publish(rng, log, 2, 0.1))

	behind := Fold(t, e.Mapper, Without(log, x.ID(), k))
	check := func(what string, want map[uuid.UUID]readmodel.Row) {
		t.Helper()
		if diffs := CompareRows(e.Rows(t), want); len(diffs) > 0 {
			t.Fatalf("%s: %d rows differ (x is %s, parked from %d of %d):\n%s", what, len(diffs), x.ID(), k, n, strings.Join(diffs[:min(10, len(diffs))], "\n"))
		}
	}
	checkParked := func(what string) {
		t.Helper()
		rows, err := e.Store.ListParked(ctx, store.ParkedQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].SequenceID != x.ID() || rows[0].First != k || rows[0].Last != n || rows[0].Count != n-k+1 {
			t.Fatalf("%s: parked %+v, want %s from %d to %d", what, rows, x.ID(), k, n)
		}
	}
	check("parked", behind)
	checkParked("parked")
	if e.Rebuild != nil {
		e.Rebuild(t)
		check("rebuilt while parked", behind)
		checkParked("rebuilt while parked")
	}
	f.On.Store(false)
	res, err := r.Retry(ctx, x.ID())
	if err != nil {
		t.Fatal(err)
	}
	if res.Parked || res.Applied != int(n-k+1) {
		t.Fatalf("retry %+v, want %d events applied", res, n-k+1)
	}
	check("retried", Fold(t, e.Mapper, log))
	if e.Rebuild != nil {
		e.Rebuild(t)
		check("rebuilt after the retry", Fold(t, e.Mapper, log))
	}
	if rows, err := e.Store.ListParked(ctx, store.ParkedQuery{}); err != nil || len(rows) != 0 {
		t.Fatalf("parked after the retry: %+v, %v", rows, err)
	}
}
