package interop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"

	"github.com/eventlog/eventlog/internal/e2e/interop"
	"github.com/eventlog/eventlog/pkg/wire"
)

// docURL is where the AsyncAPI document is a schema resource.
const docURL = "file:///eventlog/docs/asyncapi.json"

// contract is docs/asyncapi.yaml, as JSON values, with its schemas compiled.
type contract struct {
	raw map[string]any
	c   *jsonschema.Compiler
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, "docs", "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatalf("docs/asyncapi.yaml: %v", err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("docs/asyncapi.yaml is not JSON-compatible: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7) // AsyncAPI's schema format is a superset of draft 7
	c.AssertFormat()
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	return &contract{raw: doc.(map[string]any), c: c}
}

// schema compiles the schema at JSON pointer ptr of the document.
func (k *contract) schema(t *testing.T, ptr string) *jsonschema.Schema {
	t.Helper()
	sch, err := k.c.Compile(docURL + "#" + ptr)
	if err != nil {
		t.Fatalf("schema %s: %v", ptr, err)
	}
	return sch
}

// at returns the value at JSON pointer ptr (no escapes).
func (k *contract) at(t *testing.T, ptr string) any {
	t.Helper()
	var v any = k.raw
	for _, p := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: no %s", ptr, p)
		}
		if v, ok = m[p]; !ok {
			t.Fatalf("%s: no %s", ptr, p)
		}
	}
	return v
}

// documented returns the property names the schema at ptr describes,
// following $ref and allOf.
func (k *contract) documented(t *testing.T, ptr string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		if ref, ok := m["$ref"].(string); ok {
			walk(k.at(t, strings.TrimPrefix(ref, "#")))
		}
		props, _ := m["properties"].(map[string]any)
		for name := range props {
			out[name] = true
		}
		if all, ok := m["allOf"].([]any); ok {
			for _, s := range all {
				walk(s)
			}
		}
	}
	walk(k.at(t, ptr))
	return out
}

// message is what the document says of one message.
type message struct {
	name             string
	headers, payload *jsonschema.Schema // payload nil: any bytes
	key              *jsonschema.Schema // nil: any key
	headerNames      map[string]bool    // nil: any headers
	fields           map[string]bool    // the payload's documented fields; nil: not an object
}

func (k *contract) message(t *testing.T, name string, anyHeaders bool) message {
	t.Helper()
	base := "/components/messages/" + name
	m := message{name: name, headers: k.schema(t, base+"/headers")}
	if !anyHeaders {
		m.headerNames = k.documented(t, base+"/headers")
	}
	msg := k.at(t, base).(map[string]any)
	if _, ok := msg["payload"]; ok {
		m.payload = k.schema(t, base+"/payload")
		m.fields = k.documented(t, base+"/payload")
	}
	if b, ok := msg["bindings"].(map[string]any); ok {
		if _, ok := b["kafka"].(map[string]any)["key"]; ok {
			m.key = k.schema(t, base+"/bindings/kafka/key")
		}
	}
	return m
}

// check validates a record against m and returns the problems.
func (m message) check(key, value []byte, headers []kgo.RecordHeader) []string {
	var bad []string
	hs := map[string]any{}
	for _, h := range headers {
		if _, dup := hs[h.Key]; dup {
			bad = append(bad, "header "+h.Key+" twice")
		}
		hs[h.Key] = string(h.Value)
		if m.headerNames != nil && !m.headerNames[h.Key] {
			bad = append(bad, "header "+h.Key+" is not in the document")
		}
	}
	if err := m.headers.Validate(hs); err != nil {
		bad = append(bad, fmt.Sprintf("headers %v: %v", hs, err))
	}
	if m.key != nil {
		if err := m.key.Validate(string(key)); err != nil {
			bad = append(bad, fmt.Sprintf("key %q: %v", key, err))
		}
	}
	if m.payload != nil {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
		if err != nil {
			return append(bad, fmt.Sprintf("value %q is not JSON: %v", value, err))
		}
		if err := m.payload.Validate(v); err != nil {
			bad = append(bad, fmt.Sprintf("value %s: %v", value, err))
		}
		if obj, ok := v.(map[string]any); ok {
			for _, f := range slices.Sorted(maps.Keys(obj)) {
				if !m.fields[f] {
					bad = append(bad, fmt.Sprintf("value %s: field %s is not in the document", value, f))
				}
			}
		}
	}
	return bad
}

// The records a running eventlog dev sends, for every kind of command and
// outcome of the generic entity and for bad input, are what
// docs/asyncapi.yaml says: every key, header and value validates against its
// message's schemas, and carries no field or header the document does not
// describe.
func TestContract(t *testing.T) {
	t.Parallel()
	const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	k := loadContract(t)
	var (
		command    = k.message(t, "Command", false)
		result     = k.message(t, "Result", false)
		deadLetter = k.message(t, "DeadLetter", true)
		byEvent    = map[string]message{}
	)
	for _, name := range []string{"Created", "AttributeChanged", "Discarded", "Forgotten"} {
		byEvent[name] = k.message(t, name, false)
	}
	encoded := k.message(t, "EncodedEvent", false)

	d := dev.Get(t)
	a, b := uuid.New(), uuid.New()
	cmd := func(typ string, id uuid.UUID, expected int64, data string) wire.Command {
		c := wire.Command{CommandID: uuid.New(), Type: typ, Entity: interop.Entity, EntityID: id}
		if expected >= 0 {
			c.ExpectedVersion = &expected
		}
		if data != "" {
			c.Data = json.RawMessage(data)
		}
		return c
	}
	cmds := []wire.Command{
		cmd(wire.TypeCreate, a, 0, `{"foo":"bar","list":[1,2],"nested":{"x":null}}`), // accepted: Created
		cmd(wire.TypeUpdate, a, -1, `{"foo":"baz","n":1}`),                           // accepted: two AttributeChanged
		cmd(wire.TypeUpdate, a, 1, `{"foo":"late"}`),                                 // conflict
		cmd(wire.TypeDiscard, a, -1, ""),                                             // accepted: Discarded
		cmd(wire.TypeUpdate, a, -1, `{"foo":"gone"}`),                                // rejected
		cmd("frobnicate", b, -1, ""),                                                 // invalid: no such command type
		cmd(wire.TypeCreate, b, -1, `{"1bad":true}`),                                 // not a command the document allows
	}
	wantStatus := [][]wire.Status{{wire.StatusAccepted}, {wire.StatusAccepted}, {wire.StatusConflict}, {wire.StatusAccepted}, {wire.StatusRejected}, {wire.StatusInvalid},
		{wire.StatusInvalid}}
	// wellFormed says which envelopes the document's Command schema takes.
	wellFormed := []bool{true, true, true, true, true, true, false}
	wantEvents := []string{"Created", "AttributeChanged", "AttributeChanged", "Discarded"}
	badKey1, badKey2 := uuid.NewString(), uuid.NewString()
	var recs []*kgo.Record
	for _, c := range cmds {
		v, _ := json.Marshal(c)
		recs = append(recs, &kgo.Record{Topic: interop.Topics.Commands(), Key: []byte(c.EntityID.String()), Value: v,
			Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(traceParent)}}})
	}
	recs = append(recs,
		&kgo.Record{Topic: interop.Topics.Commands(), Key: []byte(badKey1), Value: []byte("not json"), Headers: []kgo.RecordHeader{{Key: "x-origin", Value: []byte("contract test")}}},
		&kgo.Record{Topic: interop.Topics.Commands(), Key: []byte(badKey2), Value: []byte(`{"type":"create","entity":"example"}`)},
	)
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.Broker), kgo.ProducerLinger(0),
		kgo.ConsumeTopics(interop.Topics.Commands(), interop.Topics.Results(), interop.Topics.Events(interop.Entity), interop.Topics.DeadLetters()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Read everything back: our commands, their results, a's events, the two
	// dead letters.
	var (
		gotCmds, results, evs, dls []*kgo.Record
		ours                       = map[string]bool{a.String(): true, b.String(): true}
	)
	for len(gotCmds) < len(cmds) || len(results) < len(cmds) || len(evs) < len(wantEvents) || len(dls) < 2 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%v: %d commands, %d results, %d events, %d dead letters", ctx.Err(), len(gotCmds), len(results), len(evs), len(dls))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			key := string(r.Key)
			switch {
			case r.Topic == interop.Topics.Commands() && ours[key]:
				gotCmds = append(gotCmds, r)
			case r.Topic == interop.Topics.Results() && ours[key]:
				results = append(results, r)
			case r.Topic == interop.Topics.Events(interop.Entity) && ours[key]:
				evs = append(evs, r)
			case r.Topic == interop.Topics.DeadLetters() && (key == badKey1 || key == badKey2):
				dls = append(dls, r)
			}
		})
	}

	problem := func(what string, r *kgo.Record, bad []string) {
		for _, p := range bad {
			t.Errorf("%s %s/%d@%d (key %s): %s", what, r.Topic, r.Partition, r.Offset, r.Key, p)
		}
		// dev does not trace: what a command's traceparent produced carries it on.
		if what != "command" && what != "dead letter" && !slices.ContainsFunc(r.Headers, func(h kgo.RecordHeader) bool {
			return h.Key == wire.HeaderTraceParent && string(h.Value) == traceParent
		}) {
			t.Errorf("%s %s/%d@%d (key %s): no traceparent header %s, the command's", what, r.Topic, r.Partition, r.Offset, r.Key, traceParent)
		}
	}
	index := map[uuid.UUID]int{}
	for i, c := range cmds {
		index[c.CommandID] = i
	}
	for _, r := range gotCmds {
		var c wire.Command
		if err := json.Unmarshal(r.Value, &c); err != nil {
			t.Fatal(err)
		}
		bad := command.check(r.Key, r.Value, r.Headers)
		if wellFormed[index[c.CommandID]] {
			problem("command", r, bad)
		} else if len(bad) == 0 {
			t.Errorf("command %s passes the document, which is to refuse it", r.Value)
		}
	}
	byCommand := map[uuid.UUID]wire.Result{}
	for _, r := range results {
		problem("result", r, result.check(r.Key, r.Value, r.Headers))
		res, err := wire.DecodeResult(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		byCommand[res.CommandID] = res
	}
	for i, c := range cmds {
		if got := byCommand[c.CommandID]; !slices.Contains(wantStatus[i], got.Status) {
			t.Errorf("command %d (%s): status %q (%s), want one of %q (the scenario no longer covers what it says)", i, c.Type, got.Status, got.Error, wantStatus[i])
		} else {
			t.Logf("command %d (%s %s): %s %q", i, c.Type, c.Data, got.Status, got.Error)
		}
	}
	for i, r := range evs {
		var topic, codec string
		for _, h := range r.Headers {
			switch h.Key {
			case wire.HeaderTopic:
				topic = string(h.Value)
			case wire.HeaderCodec:
				codec = string(h.Value)
			}
		}
		name := strings.TrimPrefix(topic, interop.Entity+".")
		m, ok := byEvent[name]
		if codec != "json" {
			m, ok = encoded, true
		}
		if !ok {
			t.Errorf("event %s/%d@%d: topic header %q names no message of the document", r.Topic, r.Partition, r.Offset, topic)
			continue
		}
		if i < len(wantEvents) && name != wantEvents[i] {
			t.Errorf("event %d is %s, want %s", i, name, wantEvents[i])
		}
		problem(m.name, r, m.check(r.Key, r.Value, r.Headers))
	}
	for _, r := range dls {
		problem("dead letter", r, deadLetter.check(r.Key, r.Value, r.Headers))
		if string(r.Key) == badKey1 && (string(r.Value) != "not json" || !slices.ContainsFunc(r.Headers, func(h kgo.RecordHeader) bool { return h.Key == "x-origin" })) {
			t.Errorf("dead letter %s: value %q, headers %v; want the record unchanged", r.Key, r.Value, r.Headers)
		}
	}
	t.Logf("validated %d commands, %d results, %d events, %d dead letters", len(gotCmds), len(results), len(evs), len(dls))
}

// The document's schemas are not vacuous: its own examples pass, and
// records that break the contract in one way each fail.
func TestContractRejects(t *testing.T) {
	t.Parallel()
	k := loadContract(t)
	for _, name := range []string{"Command", "Result", "Created", "AttributeChanged"} {
		m := k.message(t, name, false)
		examples, _ := k.at(t, "/components/messages/"+name).(map[string]any)["examples"].([]any)
		if len(examples) == 0 {
			t.Errorf("message %s has no examples", name)
		}
		for _, e := range examples {
			ex := e.(map[string]any)
			v, _ := json.Marshal(ex["payload"])
			var hs []kgo.RecordHeader
			for h, hv := range mapOf(ex["headers"]) {
				hs = append(hs, kgo.RecordHeader{Key: h, Value: []byte(hv.(string))})
			}
			key := uuid.NewString()
			if p, ok := ex["payload"].(map[string]any); ok && p["entity_id"] != nil {
				key = p["entity_id"].(string)
			}
			for _, h := range hs {
				if h.Key == wire.HeaderSequenceID {
					key = string(h.Value)
				}
			}
			if bad := m.check([]byte(key), v, hs); len(bad) > 0 {
				t.Errorf("example %v of %s: %v", ex["name"], name, bad)
			}
		}
	}

	id, cid := uuid.NewString(), uuid.NewString()
	evh := func(topic, pos, codec string) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: "sequence-id", Value: []byte(id)}, {Key: "position", Value: []byte(pos)}, {Key: "topic", Value: []byte(topic)},
			{Key: "notification-id", Value: []byte("7")}, {Key: "codec", Value: []byte(codec)}}
	}
	resh := []kgo.RecordHeader{{Key: "notification-id", Value: []byte("8")}}
	good := map[string]struct {
		key, value string
		headers    []kgo.RecordHeader
	}{
		"Command":          {id, `{"command_id":"` + cid + `","type":"update","entity":"example","entity_id":"` + id + `","data":{"foo":"baz"}}`, nil},
		"Result":           {id, `{"command_id":"` + cid + `","entity":"example","entity_id":"` + id + `","status":"accepted","version":2,"positions":[1]}`, resh},
		"Created":          {id, `{"timestamp":"2026-01-02T03:04:05Z","attributes":{"foo":"bar"}}`, evh("example.Created", "0", "json")},
		"AttributeChanged": {id, `{"timestamp":"2026-01-02T03:04:05Z","name":"foo","value":"baz"}`, evh("example.AttributeChanged", "1", "json")},
	}
	for name, g := range good {
		if bad := k.message(t, name, false).check([]byte(g.key), []byte(g.value), g.headers); len(bad) > 0 {
			t.Errorf("the good %s: %v", name, bad)
		}
	}
	for _, c := range []struct {
		why, message string
		key, value   string
		headers      []kgo.RecordHeader
	}{
		{"no entity_id", "Command", id, `{"command_id":"` + cid + `","type":"create","entity":"example"}`, nil},
		{"the nil command id", "Command", id, `{"command_id":"00000000-0000-0000-0000-000000000000","type":"create","entity":"example","entity_id":"` + id + `"}`, nil},
		{"an entity type in capitals", "Command", id, `{"command_id":"` + cid + `","type":"create","entity":"Example","entity_id":"` + id + `"}`, nil},
		{"an update that sets nothing", "Command", id, `{"command_id":"` + cid + `","type":"update","entity":"example","entity_id":"` + id + `","data":{}}`, nil},
		{"a bad attribute name", "Command", id, `{"command_id":"` + cid + `","type":"create","entity":"example","entity_id":"` + id + `","data":{"1x":1}}`, nil},
		{"a negative expected version", "Command", id, `{"command_id":"` + cid + `","type":"create","entity":"example","entity_id":"` + id + `","expected_version":-1}`, nil},
		{"a key that is not a UUID", "Command", "k1", good["Command"].value, nil},
		{"an unknown status", "Result", id, `{"command_id":"` + cid + `","entity":"example","entity_id":"` + id + `","status":"ok","version":1,"positions":[0]}`, resh},
		{"no positions", "Result", id, `{"command_id":"` + cid + `","entity":"example","entity_id":"` + id + `","status":"accepted","version":1}`, resh},
		{"an undocumented field", "Result", id, strings.Replace(good["Result"].value, `"version"`, `"shard":3,"version"`, 1), resh},
		{"no notification-id", "Result", id, good["Result"].value, nil},
		{"no timestamp", "Created", id, `{"attributes":{"foo":"bar"}}`, evh("example.Created", "0", "json")},
		{"a Created not at position 0", "Created", id, good["Created"].value, evh("example.Created", "3", "json")},
		{"the topic of another event", "Created", id, good["Created"].value, evh("example.AttributeChanged", "0", "json")},
		{"a compressed state", "Created", id, good["Created"].value, evh("example.Created", "0", "json+zstd")},
		{"an unknown codec", "EncodedEvent", id, "", evh("example.Created", "0", "json+brotli")},
		{"no codec header", "AttributeChanged", id, good["AttributeChanged"].value, evh("example.AttributeChanged", "1", "json")[:4]},
		{"a position with a leading zero", "AttributeChanged", id, good["AttributeChanged"].value, evh("example.AttributeChanged", "01", "json")},
		{"a sequence id in capitals", "AttributeChanged", strings.ToUpper(id), good["AttributeChanged"].value, evh("example.AttributeChanged", "1", "json")},
		{"no value", "AttributeChanged", id, `{"timestamp":"2026-01-02T03:04:05Z","name":"foo"}`, evh("example.AttributeChanged", "1", "json")},
		{"a timestamp that is not one", "AttributeChanged", id, `{"timestamp":"yesterday","name":"foo","value":1}`, evh("example.AttributeChanged", "1", "json")},
		{"no error header", "DeadLetter", id, "x", []kgo.RecordHeader{{Key: "source-topic", Value: []byte("t")}, {Key: "source-partition", Value: []byte("0")}, {Key: "source-offset", Value: []byte("1")}}},
	} {
		if bad := k.message(t, c.message, false).check([]byte(c.key), []byte(c.value), c.headers); len(bad) == 0 {
			t.Errorf("%s with %s passes the document", c.message, c.why)
		}
	}
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// The document is an AsyncAPI 3.0.0 document (validated against the
// specification's JSON schema, npm's @asyncapi/specs, installed with
// kafkajs in interop/node), and it names the topics and headers of package
// wire.
func TestAsyncAPIDocument(t *testing.T) {
	t.Parallel()
	k := loadContract(t)
	for ch, topic := range map[string]string{
		"commands": interop.Topics.Commands(), "commandResults": interop.Topics.Results(),
		"entityEvents": interop.Topics.Events("{entity}"), "deadLetters": interop.Topics.DeadLetters(),
	} {
		if got := k.at(t, "/channels/"+ch+"/address"); got != topic {
			t.Errorf("channel %s has address %v, package wire says %s", ch, got, topic)
		}
	}
	names := func(ptr string, want ...string) {
		got := k.documented(t, ptr)
		for _, n := range want {
			if !got[n] {
				t.Errorf("%s does not describe the header %s", ptr, n)
			}
		}
	}
	names("/components/schemas/EventHeaders", wire.HeaderSequenceID, wire.HeaderPosition, wire.HeaderTopic, wire.HeaderNotificationID, wire.HeaderCodec, wire.HeaderTraceParent)
	names("/components/schemas/ResultHeaders", wire.HeaderNotificationID, wire.HeaderTraceParent)
	names("/components/schemas/CommandHeaders", wire.HeaderTraceParent)
	names("/components/schemas/DeadLetterHeaders", wire.HeaderError, wire.HeaderSourceTopic, wire.HeaderSourcePartition, wire.HeaderSourceOffset)

	nodeModules(t)
	specPath := repoPath(t, "interop", "node", "node_modules", "@asyncapi", "specs", "schemas", "3.0.0.json")
	f, err := os.Open(specPath)
	if err != nil {
		interop.Unavailable(t, "the AsyncAPI 3.0.0 schema: %v (npm ci in interop/node installs @asyncapi/specs)", err)
	}
	defer f.Close()
	spec, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	const specURL = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
	if err := c.AddResource(specURL, spec); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(specURL)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(specPath), err)
	}
	if err := sch.Validate(any(k.raw)); err != nil {
		t.Errorf("docs/asyncapi.yaml is not a valid AsyncAPI 3.0.0 document: %v", err)
	}
}
