package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// workload is a set of entities, each created and then updated a number of
// times: command k of an entity (k = 0 the create) sets its "counter"
// attribute to k. After every command applied exactly once, an entity is at
// version steps, with counter steps-1, and its event at position k carries k.
type workload struct {
	entities []uuid.UUID
	steps    int
	// cmds[i][k] is command k of entity i.
	cmds [][]wire.Command
	// byID finds a command's entity and step.
	byID map[uuid.UUID][2]int
}

func newWorkload(entities, steps int) *workload {
	w := &workload{steps: steps, byID: make(map[uuid.UUID][2]int, entities*steps)}
	for i := range entities {
		id := uuid.New()
		w.entities = append(w.entities, id)
		cmds := make([]wire.Command, steps)
		for k := range steps {
			c := wire.Command{CommandID: uuid.New(), Type: wire.TypeUpdate, Entity: "example", EntityID: id,
				Data: json.RawMessage(`{"counter":` + strconv.Itoa(k) + `}`)}
			if k == 0 {
				c.Type = wire.TypeCreate
				c.Data = json.RawMessage(fmt.Sprintf(`{"counter":0,"name":"e%d"}`, i))
			}
			cmds[k] = c
			w.byID[c.CommandID] = [2]int{i, k}
		}
		w.cmds = append(w.cmds, cmds)
	}
	return w
}

// total is the number of commands.
func (w *workload) total() int { return len(w.entities) * w.steps }

// records returns the commands' records in produce order: step by step, each
// step over every entity, so that partitions interleave and every entity's
// commands are in order on its partition.
func (w *workload) records(t testing.TB) []*kgo.Record {
	recs := make([]*kgo.Record, 0, w.total())
	for k := range w.steps {
		for i := range w.entities {
			recs = append(recs, commandRecord(t, w.cmds[i][k]))
		}
	}
	return recs
}

// produceAt produces recs at about rate records a second (all at once if rate
// is 0), in chunks, until done or ctx ends. It returns when every record is
// acknowledged.
func produceAt(ctx context.Context, cl *kgo.Client, recs []*kgo.Record, rate int) error {
	const chunk = 50
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(chunk) * time.Second / time.Duration(rate)
	}
	next := time.Now()
	for len(recs) > 0 {
		n := min(chunk, len(recs))
		if err := cl.ProduceSync(ctx, recs[:n]...).FirstErr(); err != nil {
			return err
		}
		recs = recs[n:]
		if interval > 0 {
			next = next.Add(interval)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(next)):
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// The store's view

// storeView is the whole notification log of a store, by kind of item.
type storeView struct {
	all     []store.Notification
	events  map[uuid.UUID][]store.Notification // entity events by sequence, in log order
	results map[uuid.UUID][]store.Notification // result items by command id, in log order
	dead    []store.Notification
	byKey   map[seqPos]store.Notification // entity events
}

type seqPos struct {
	seq uuid.UUID
	pos int64
}

// readStore reads the whole notification log.
func readStore(t testing.TB, ctx context.Context, rec store.ProcessRecorder) *storeView {
	t.Helper()
	v := &storeView{events: map[uuid.UUID][]store.Notification{}, results: map[uuid.UUID][]store.Notification{}, byKey: map[seqPos]store.Notification{}}
	var after int64
	for {
		ns, err := rec.SelectNotifications(ctx, after, 5000)
		if err != nil {
			t.Fatalf("read the notification log: %v", err)
		}
		if len(ns) == 0 {
			return v
		}
		for _, n := range ns {
			if n.ID <= after {
				t.Fatalf("notification ids out of order: %d after %d", n.ID, after)
			}
			after = n.ID
			v.all = append(v.all, n)
			switch n.Topic {
			case wire.ResultItemTopic:
				v.results[n.SequenceID] = append(v.results[n.SequenceID], n)
			case wire.DeadLetterItemTopic:
				v.dead = append(v.dead, n)
			default:
				v.events[n.SequenceID] = append(v.events[n.SequenceID], n)
				v.byKey[seqPos{n.SequenceID, n.Position}] = n
			}
		}
	}
}

// eventCount is the number of entity events.
func (v *storeView) eventCount() int { return len(v.byKey) }

// firstResult decodes the first result item of a command.
func (v *storeView) firstResult(id uuid.UUID) (wire.Result, bool) {
	rs := v.results[id]
	if len(rs) == 0 {
		return wire.Result{}, false
	}
	r, err := wire.DecodeResult(rs[0].State)
	return r, err == nil
}

// checkExactlyOnce checks that the store holds the effect of every command of
// w exactly once, and nothing else. With copiesAllowed, a command may have
// copies of its result (a duplicate delivery republishes it); without, a
// second result item means a record was handled again although its offset was
// tracked.
func checkExactlyOnce(t testing.TB, v *storeView, w *workload, copiesAllowed bool) {
	t.Helper()
	checkStore(t, v, w, storeWant{copiesAllowed: copiesAllowed})
}

// storeWant is what a store may hold besides a workload's effects.
type storeWant struct {
	copiesAllowed bool
	// Sequences with events, results and dead letters not of the workload.
	otherSequences, otherResults, deadLetters int
}

// checkStore checks that the store holds the effect of every command of w
// exactly once, and besides only what want allows.
//
// Bugs it catches: a command applied twice (an entity with more events than
// commands, or a counter value out of place), a command lost (fewer events, a
// missing result), events of a sequence out of position order in the log
// (DESIGN invariant 3), a batch half committed.
func checkStore(t testing.TB, v *storeView, w *workload, want storeWant) {
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(format, args...)
		}
	}
	for i, id := range w.entities {
		evs := v.events[id]
		if len(evs) != w.steps {
			fail("entity %d (%s) has %d events, want %d (one per command)", i, id, len(evs), w.steps)
			continue
		}
		for p, n := range evs {
			if n.Position != int64(p) {
				fail("entity %d: event %d in log order has position %d", i, p, n.Position)
				break
			}
			if want := counterOf(t, n); want != p {
				fail("entity %d: event at position %d sets counter %d, want %d", i, p, want, p)
			}
			if wantTopic := map[bool]string{true: "example.Created", false: "example.AttributeChanged"}[p == 0]; n.Topic != wantTopic {
				fail("entity %d: event at position %d has topic %q, want %q", i, p, n.Topic, wantTopic)
			}
		}
	}
	if len(v.events) != len(w.entities)+want.otherSequences {
		fail("store has events of %d sequences, want %d", len(v.events), len(w.entities)+want.otherSequences)
	}
	for i := range w.entities {
		for k, c := range w.cmds[i] {
			rs := v.results[c.CommandID]
			if len(rs) == 0 {
				fail("command %d of entity %d (%s) has no result", k, i, c.CommandID)
				continue
			}
			if len(rs) > 1 && !want.copiesAllowed {
				fail("command %d of entity %d (%s) has %d result items: its record was handled again", k, i, c.CommandID, len(rs))
			}
			res, ok := v.firstResult(c.CommandID)
			if !ok || res.Status != wire.StatusAccepted || res.Version != int64(k+1) || !slices.Equal(res.Positions, []int64{int64(k)}) {
				fail("command %d of entity %d: result %+v, want accepted at version %d with positions [%d]", k, i, res, k+1, k)
			}
			for j, r := range rs[1:] {
				if !bytes.Equal(r.State, rs[0].State) {
					fail("command %s: copy %d of the result differs from the first: %s vs %s", c.CommandID, j+1, r.State, rs[0].State)
				}
			}
		}
	}
	if len(v.results) != w.total()+want.otherResults {
		fail("store has results of %d commands, want %d", len(v.results), w.total()+want.otherResults)
	}
	if len(v.dead) != want.deadLetters {
		fail("store has %d dead letters, want %d", len(v.dead), want.deadLetters)
	}
	if errs > 20 {
		t.Errorf("... and %d more", errs-20)
	}
}

// counterOf returns the counter value an event of the workload sets (-1 if
// none).
func counterOf(t testing.TB, n store.Notification) int {
	var st struct {
		Attributes map[string]json.RawMessage `json:"attributes"`
		Name       string                     `json:"name"`
		Value      json.RawMessage            `json:"value"`
	}
	if err := json.Unmarshal(n.State, &st); err != nil {
		t.Errorf("event %s/%d: state %q: %v", n.SequenceID, n.Position, n.State, err)
		return -1
	}
	raw := st.Value
	if n.Position == 0 {
		raw = st.Attributes["counter"]
	} else if st.Name != "counter" {
		return -1
	}
	c, err := strconv.Atoi(string(raw))
	if err != nil {
		return -1
	}
	return c
}

// kafkaView is what reached Kafka.
type kafkaView struct {
	events, results, dead []*kgo.Record
	eventDuplicates       int // event records that repeat a (key, position) seen before
	resultDuplicates      int
}

// checkKafka reads the events, results and dead-letter topics to their ends
// and checks them against the store. Call it once the relay has caught up
// (waitRelayed).
//
// Bugs it catches: an event the relay skipped (a commit it read past), an
// event record on Kafka that the store does not hold (a dual write, or an
// event published from a rolled-back transaction), an event record whose
// bytes or headers differ from the stored item, a key whose events arrive out
// of position order, a command without a result record, a result record that
// differs from the stored result.
func checkKafka(t testing.TB, ctx context.Context, b *broker, v *storeView) *kafkaView {
	t.Helper()
	kv := &kafkaView{
		events:  readTopic(t, ctx, b, eventsTopic),
		results: readTopic(t, ctx, b, topics.Results()),
		dead:    readTopic(t, ctx, b, topics.DeadLetters()),
	}
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(format, args...)
		}
	}
	// Events: in partition order, which is the order a consumer sees.
	seen := map[seqPos]bool{}
	next := map[uuid.UUID]int64{} // per key, the position the next first copy must have
	for _, r := range kv.events {
		seq, err := uuid.ParseBytes(r.Key)
		if err != nil {
			fail("event record %s/%d@%d: key %q is not a UUID", r.Topic, r.Partition, r.Offset, r.Key)
			continue
		}
		pos, err := strconv.ParseInt(header(r, wire.HeaderPosition), 10, 64)
		if err != nil || header(r, wire.HeaderSequenceID) != seq.String() {
			fail("event record %d@%d: headers %s do not match key %s", r.Partition, r.Offset, headers(r), seq)
			continue
		}
		k := seqPos{seq, pos}
		n, ok := v.byKey[k]
		switch {
		case !ok:
			fail("event record %s/%d (partition %d offset %d) is not in the store", seq, pos, r.Partition, r.Offset)
			continue
		case !bytes.Equal(r.Value, n.State):
			fail("event record %s/%d: value %q, stored %q", seq, pos, r.Value, n.State)
		case header(r, wire.HeaderTopic) != n.Topic || header(r, wire.HeaderCodec) != n.Codec ||
			header(r, wire.HeaderNotificationID) != strconv.FormatInt(n.ID, 10):
			fail("event record %s/%d: headers %s, stored topic %q codec %q id %d", seq, pos, headers(r), n.Topic, n.Codec, n.ID)
		}
		if seen[k] {
			kv.eventDuplicates++
			continue
		}
		seen[k] = true
		if want := next[seq]; pos != want {
			fail("events of %s reached Kafka out of order: first copy of position %d where %d was due", seq, pos, want)
		}
		next[seq] = pos + 1
	}
	for k := range v.byKey {
		if !seen[k] {
			fail("stored event %s/%d never reached %s", k.seq, k.pos, eventsTopic)
		}
	}
	// Results: the first record of every command is its stored result.
	first := map[uuid.UUID]*kgo.Record{}
	for _, r := range kv.results {
		res, err := wire.DecodeResult(r.Value)
		if err != nil {
			fail("result record %d@%d: %v", r.Partition, r.Offset, err)
			continue
		}
		if string(r.Key) != res.EntityID.String() {
			fail("result record of %s: key %q, want the entity id %s", res.CommandID, r.Key, res.EntityID)
		}
		if _, ok := first[res.CommandID]; ok {
			kv.resultDuplicates++
			continue
		}
		first[res.CommandID] = r
		stored := v.results[res.CommandID]
		if len(stored) == 0 {
			fail("result record of %s is not in the store", res.CommandID)
		} else if !bytes.Equal(stored[0].State, r.Value) {
			fail("result record of %s: %s, stored %s", res.CommandID, r.Value, stored[0].State)
		}
	}
	for id := range v.results {
		if first[id] == nil {
			fail("command %s has a stored result but no result record", id)
		}
	}
	if errs > 20 {
		t.Errorf("... and %d more", errs-20)
	}
	return kv
}
