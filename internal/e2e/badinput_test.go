package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/pkg/wire"
)

// bigBroker is a broker that takes records of up to 4 MiB, so that a command
// over the writer's 1 MiB limit can reach the writer at all.
func bigBroker(t testing.TB) *broker {
	return newBroker(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(4 << 20)}))
}

// bigProducer is a client that can produce records of up to 4 MiB.
func bigProducer(t testing.TB, b *broker) *kgo.Client {
	return b.client(t, kgo.ProducerBatchMaxBytes(4<<20))
}

// oversizedCommand is a create command of more than wire.MaxCommandSize
// bytes.
func oversizedCommand(t testing.TB) *kgo.Record {
	c := wire.Command{CommandID: uuid.New(), Type: wire.TypeCreate, Entity: "example", EntityID: uuid.New(),
		Data: json.RawMessage(`{"blob":"` + strings.Repeat("x", wire.MaxCommandSize) + `"}`)}
	r := commandRecord(t, c)
	if len(r.Value) <= wire.MaxCommandSize {
		t.Fatalf("oversized command of %d bytes", len(r.Value))
	}
	return r
}

// TestBadInput produces malformed records (not JSON, empty, missing fields,
// data that is not an object, command_id equal to entity_id, a negative
// expected_version, more than 1 MiB) and well-formed commands the writer must
// refuse (an unknown entity type or command type, an update without data or
// of a missing entity, invalid attribute names, a second create, a wrong
// expected_version, an update after discard), interleaved with a workload of
// good commands.
//
// Expected, as the wire contract and pkg/command say: each malformed record
// is on eventlog.dead-letters once, with its key, value and headers
// unchanged, an error header and its source topic, partition and offset; each
// refused command has one result, invalid or rejected or conflict as the
// contract says, and no event; every good command is applied; the writer
// keeps going.
//
// Bugs it catches: a consumer that stops, or retries forever, on bad input;
// a bad record failing the good commands of its batch; a dead letter that
// loses the original bytes or where they came from; statuses that do not
// match the contract; a refused command that stores an event anyway.
func TestBadInput(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(testing.TB) *testStore) {
		st := newStore(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		b := bigBroker(t)
		b.createTopics(t)
		startWriter(t, b, st.backend(t), e2etest.Log(t, slog.LevelError))
		results := watchResults(t, b)
		prod := bigProducer(t, b)
		wl := newWorkload(20, 4)

		// Malformed records: each must become a dead letter.
		env := func(fields map[string]any) *kgo.Record {
			v, _ := json.Marshal(fields)
			key := uuid.New()
			return &kgo.Record{Topic: topics.Commands(), Key: []byte(key.String()), Value: v}
		}
		full := func() map[string]any {
			return map[string]any{"command_id": uuid.New(), "type": "create", "entity": "example", "entity_id": uuid.New(), "data": map[string]any{"a": 1}}
		}
		without := func(field string) *kgo.Record {
			f := full()
			delete(f, field)
			return env(f)
		}
		with := func(field string, v any) *kgo.Record {
			f := full()
			f[field] = v
			return env(f)
		}
		sameID := uuid.New()
		oversized := oversizedCommand(t)
		dead := []*kgo.Record{
			{Topic: topics.Commands(), Key: []byte("not-json"), Value: []byte("this is not JSON {"),
				Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}}},
			{Topic: topics.Commands(), Key: []byte("empty")},
			{Topic: topics.Commands(), Key: []byte("array"), Value: []byte(`[1,2,3]`)},
			without("command_id"), without("type"), without("entity"), without("entity_id"),
			with("data", []int{1, 2}),
			with("expected_version", -1),
			env(map[string]any{"command_id": sameID, "type": "create", "entity": "example", "entity_id": sameID}),
			oversized,
		}

		// Well-formed commands the writer must refuse, each with the status the
		// contract gives it. Some address entities of the workload, so they
		// must come after its creates.
		type refusal struct {
			cmd    wire.Command
			status wire.Status
		}
		e0, e1 := wl.entities[0], wl.entities[1]
		discarded := uuid.New()
		ev := func(n int64) *int64 { return &n }
		cmd := func(typ, ent string, id uuid.UUID, data string) wire.Command {
			c := wire.Command{CommandID: uuid.New(), Type: typ, Entity: ent, EntityID: id}
			if data != "" {
				c.Data = json.RawMessage(data)
			}
			return c
		}
		conflict := cmd(wire.TypeUpdate, "example", e1, `{"other":1}`)
		conflict.ExpectedVersion = ev(7)
		refusals := []refusal{
			{cmd("create", "nosuch", uuid.New(), `{"a":1}`), wire.StatusInvalid},
			{cmd("explode", "example", e0, `{"a":1}`), wire.StatusInvalid},
			{cmd(wire.TypeUpdate, "example", e0, ""), wire.StatusInvalid},
			{cmd(wire.TypeUpdate, "example", uuid.New(), `{"a":1}`), wire.StatusRejected},
			{cmd(wire.TypeCreate, "example", uuid.New(), `{"1bad":1}`), wire.StatusInvalid},
			{cmd(wire.TypeCreate, "example", e0, `{"counter":99}`), wire.StatusRejected},
			{conflict, wire.StatusConflict},
			{cmd(wire.TypeUpdate, "example", discarded, `{"a":2}`), wire.StatusRejected},
		}
		// discarded is created and discarded before its update: two accepted
		// commands outside the workload.
		setup := []wire.Command{cmd(wire.TypeCreate, "example", discarded, `{"a":1}`), cmd(wire.TypeDiscard, "example", discarded, "")}

		// Produce: workload step 0, then the bad records interleaved with
		// steps 1.., one produce call, so they share batches.
		var recs []*kgo.Record
		good := wl.records(t)
		recs = append(recs, good[:len(wl.entities)]...)
		good = good[len(wl.entities):]
		for _, c := range setup {
			recs = append(recs, commandRecord(t, c))
		}
		var bad []*kgo.Record
		bad = append(bad, dead...)
		for _, r := range refusals {
			bad = append(bad, commandRecord(t, r.cmd))
		}
		for i, r := range bad {
			recs = append(recs, r)
			if i < len(good) {
				recs = append(recs, good[i])
			}
		}
		if len(good) > len(bad) {
			recs = append(recs, good[len(bad):]...)
		}
		produce(t, ctx, prod, recs...)
		results.waitDistinct(t, wl.total()+len(setup)+len(refusals), time.Minute)
		waitRelayed(t, st.rec, time.Minute)

		v := readStore(t, ctx, st.rec)
		checkStore(t, v, wl, storeWant{otherSequences: 1, otherResults: len(setup) + len(refusals), deadLetters: len(dead)})
		kv := checkKafka(t, ctx, b, v)

		// Refused commands: one result each, with the contract's status, and
		// no events.
		for i, r := range refusals {
			res, ok := v.firstResult(r.cmd.CommandID)
			if !ok || res.Status != r.status || res.Error == "" || len(res.Positions) != 0 {
				t.Errorf("refusal %d (%s %s): result %+v, want %s with an error and no positions", i, r.cmd.Type, r.cmd.Entity, res, r.status)
			}
			if n := len(v.results[r.cmd.CommandID]); n != 1 {
				t.Errorf("refusal %d: %d result items", i, n)
			}
		}
		if res, _ := v.firstResult(conflict.CommandID); res.Version < 1 || res.Version > int64(wl.steps) {
			t.Errorf("conflict result: version %d, want the entity's version at the time (1 to %d)", res.Version, wl.steps)
		}
		if n := len(v.events[discarded]); n != 2 {
			t.Errorf("discarded entity: %d events, want created and discarded", n)
		}

		// Dead letters: one per malformed record, unchanged, with why and
		// where from. (The oversized one is checked only for presence here;
		// see TestOversizedCommandDeadLetter.)
		if len(kv.dead) != len(dead) {
			t.Errorf("%d dead-letter records, want %d", len(kv.dead), len(dead))
		}
		byKey := map[string][]*kgo.Record{}
		for _, d := range kv.dead {
			byKey[string(d.Key)] = append(byKey[string(d.Key)], d)
		}
		for i, r := range dead {
			if r == oversized {
				continue // its key is not kept either; counted above
			}
			ds := byKey[string(r.Key)]
			if len(ds) != 1 {
				t.Errorf("dead record %d (key %q): %d dead letters, want 1", i, r.Key, len(ds))
				continue
			}
			d := ds[0]
			if header(d, wire.HeaderError) == "" {
				t.Errorf("dead record %d: no error header: %s", i, headers(d))
			}
			if !bytes.Equal(d.Value, r.Value) {
				t.Errorf("dead record %d: value %q, want the original %q", i, d.Value, r.Value)
			}
			if header(d, wire.HeaderSourceTopic) != r.Topic || header(d, wire.HeaderSourcePartition) != fmt.Sprint(r.Partition) ||
				header(d, wire.HeaderSourceOffset) != fmt.Sprint(r.Offset) {
				t.Errorf("dead record %d: headers %s, want source %s/%d@%d", i, headers(d), r.Topic, r.Partition, r.Offset)
			}
			for _, h := range r.Headers {
				if header(d, h.Key) != string(h.Value) {
					t.Errorf("dead record %d: original header %s=%q lost: %s", i, h.Key, h.Value, headers(d))
				}
			}
		}
		// The results the writer published for refusals are on Kafka too.
		for i, r := range refusals {
			if rs := results.get(r.cmd.CommandID); len(rs) == 0 {
				t.Errorf("refusal %d: no result record", i)
			}
		}
	})
}

// TestOversizedCommandDeadLetter produces a command of more than 1 MiB (to a
// broker configured to take it) and expects its dead letter on
// eventlog.dead-letters as the wire contract says: "unchanged, with headers
// saying why and where it came from".
//
// Bug it catches: a relay that bounds records by a fixed producer limit
// (franz-go's 1,000,012 bytes, or Kafka's default message.max.bytes) rather
// than the topic's max.message.bytes. The writer stores the dead letter with
// the original bytes, but such a relay re-routes it as an item it "cannot
// route": the value is dropped, the key becomes the outbox item's sequence
// id, the error header becomes the relay's ("record ... larger than the
// ... limit") instead of the writer's, and source-topic/partition/offset name
// the outbox item (topic "eventlog.DeadLetter", partition 0, its notification
// id) instead of the command record.
func TestOversizedCommandDeadLetter(t *testing.T) {
	t.Parallel()
	st := sqliteStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := bigBroker(t)
	b.createTopics(t)
	startWriter(t, b, st.backend(t), e2etest.Log(t, slog.LevelError))
	prod := bigProducer(t, b)
	r := oversizedCommand(t)
	produce(t, ctx, prod, r)
	waitRelayed(t, st.rec, 30*time.Second)
	ds := readTopic(t, ctx, b, topics.DeadLetters())
	if len(ds) != 1 {
		t.Fatalf("%d dead letters, want 1", len(ds))
	}
	d := ds[0]
	if !bytes.Equal(d.Key, r.Key) || !bytes.Equal(d.Value, r.Value) {
		t.Errorf("dead letter: key %q and %d value bytes, want the original key %q and %d bytes", d.Key, len(d.Value), r.Key, len(r.Value))
	}
	if got := header(d, wire.HeaderError); !strings.Contains(got, "limit") || strings.HasPrefix(got, "relay:") {
		t.Errorf("dead letter error header %q, want the writer's reason (the command is over the size limit)", got)
	}
	if header(d, wire.HeaderSourceTopic) != r.Topic || header(d, wire.HeaderSourcePartition) != fmt.Sprint(r.Partition) ||
		header(d, wire.HeaderSourceOffset) != fmt.Sprint(r.Offset) {
		t.Errorf("dead letter headers %s, want source %s/%d@%d", headers(d), r.Topic, r.Partition, r.Offset)
	}
}

// TestLargeCommandEventReachesEventsTopic sends an update of about 1,000,100
// bytes: within the writer's 1 MiB command limit and within the broker's
// default limit (1,048,588 bytes), so the writer accepts it, and its event
// must reach eventlog.events.example like any other (DESIGN: one record per
// stored event).
//
// Bug it catches, and shows at the time of writing: the writer accepts
// commands whose events the relay cannot publish. The relay's producer keeps
// franz-go's default batch limit of 1,000,012 bytes, so an accepted event of
// about 1 MB goes to the dead letters, without its value, and never to the
// events topic. The writer's MaxCommandSize (1 MiB) and the relay's producer
// limit disagree; RelayClientOptions should set kgo.ProducerBatchMaxBytes to
// at least the largest record the writer can produce (and the broker's
// message.max.bytes must allow it), or the writer should refuse commands whose
// events the relay cannot publish.
func TestLargeCommandEventReachesEventsTopic(t *testing.T) {
	t.Parallel()
	st := sqliteStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := newBroker(t) // default limits
	b.createTopics(t)
	startWriter(t, b, st.backend(t), e2etest.Log(t, slog.LevelError))
	results := watchResults(t, b)
	prod := b.client(t, kgo.ProducerBatchMaxBytes(2<<20))
	id := uuid.New()
	create := wire.Command{CommandID: uuid.New(), Type: wire.TypeCreate, Entity: "example", EntityID: id, Data: json.RawMessage(`{"a":1}`)}
	update := wire.Command{CommandID: uuid.New(), Type: wire.TypeUpdate, Entity: "example", EntityID: id,
		Data: json.RawMessage(`{"blob":"` + strings.Repeat("y", 1_000_000) + `"}`)}
	big := commandRecord(t, update)
	if len(big.Value) >= wire.MaxCommandSize {
		t.Fatalf("the update is %d bytes, not under the command limit", len(big.Value))
	}
	produce(t, ctx, prod, commandRecord(t, create), big)
	results.waitDistinct(t, 2, 30*time.Second)
	if rs := results.get(update.CommandID); len(rs) == 0 {
		t.Fatal("no result for the large update")
	} else if res, _ := wire.DecodeResult(rs[0].Value); res.Status != wire.StatusAccepted {
		t.Fatalf("large update: %+v, want accepted (it is within every configured limit)", res)
	}
	waitRelayed(t, st.rec, 30*time.Second)
	v := readStore(t, ctx, st.rec)
	kv := checkKafka(t, ctx, b, v)
	if len(kv.dead) != 0 {
		t.Errorf("%d dead letters (error %q), want none", len(kv.dead), header(kv.dead[0], wire.HeaderError))
	}
}
