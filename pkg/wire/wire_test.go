package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/wire"
)

func TestDecodeCommand(t *testing.T) {
	id, cid := uuid.New(), uuid.New()
	good := `{"command_id":"` + cid.String() + `","type":"create","entity":"example","entity_id":"` + id.String() + `","expected_version":0,"data":{"foo":"bar"},"future_field":1}`
	c, err := wire.DecodeCommand([]byte(good), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.CommandID != cid || c.EntityID != id || c.Type != "create" || c.Entity != "example" || *c.ExpectedVersion != 0 || string(c.Data) != `{"foo":"bar"}` {
		t.Fatalf("decoded %+v", c)
	}
	bad := map[string]string{
		"not JSON":          `nope`,
		"array":             `[]`,
		"no command id":     strings.Replace(good, `"command_id"`, `"x"`, 1),
		"no type":           strings.Replace(good, `"type":"create"`, `"type":""`, 1),
		"no entity":         strings.Replace(good, `"entity":"example"`, `"entity":""`, 1),
		"no entity id":      strings.Replace(good, `"entity_id"`, `"y"`, 1),
		"bad uuid":          strings.Replace(good, cid.String(), "123", 1),
		"negative version":  strings.Replace(good, `"expected_version":0`, `"expected_version":-1`, 1),
		"data not object":   strings.Replace(good, `{"foo":"bar"}`, `[1]`, 1),
		"too big":           good + strings.Repeat(" ", 100),
		"version not a int": strings.Replace(good, `"expected_version":0`, `"expected_version":"1"`, 1),
	}
	for name, b := range bad {
		max := 0
		if name == "too big" {
			max = len(good) + 10
		}
		if _, err := wire.DecodeCommand([]byte(b), max); !errors.Is(err, wire.ErrEnvelope) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestTopics(t *testing.T) {
	tp := wire.Topics{Prefix: wire.DefaultPrefix}
	if tp.Commands() != "eventlog.commands" || tp.Results() != "eventlog.command-results" ||
		tp.DeadLetters() != "eventlog.dead-letters" || tp.Events("example") != "eventlog.events.example" {
		t.Fatal("topic names differ from the contract")
	}
	for _, p := range []string{"", "a b", ".x", strings.Repeat("x", 102)} {
		if (wire.Topics{Prefix: p}).Validate() == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

func TestOutboxItems(t *testing.T) {
	r := wire.Result{CommandID: uuid.New(), Entity: "example", EntityID: uuid.New(), Status: wire.StatusAccepted, Version: 1}
	it, err := wire.ResultItem(r)
	if err != nil || it.SequenceID != r.CommandID || it.Position != 0 || it.Topic != wire.ResultItemTopic {
		t.Fatalf("result item %+v %v", it, err)
	}
	back, err := wire.DecodeResult(it.State)
	if err != nil || back.Status != r.Status || back.Positions == nil {
		t.Fatalf("result %+v %v", back, err)
	}
	var m map[string]any
	_ = json.Unmarshal(it.State, &m)
	for _, k := range []string{"command_id", "entity", "entity_id", "status", "version", "positions"} {
		if _, ok := m[k]; !ok {
			t.Errorf("result JSON lacks %q: %s", k, it.State)
		}
	}
	d := wire.DeadLetter{Reason: "bad", SourceTopic: "eventlog.commands", SourcePartition: 2, SourceOffset: 9, Key: []byte("k"), Value: []byte{0xff}}
	a, _ := wire.DeadLetterItem(d)
	b, _ := wire.DeadLetterItem(d)
	d.SourceOffset = 10
	c, _ := wire.DeadLetterItem(d)
	if a.SequenceID != b.SequenceID || a.SequenceID == c.SequenceID {
		t.Fatal("dead-letter ids must be the same for one source record and differ otherwise")
	}
	got, err := wire.DecodeDeadLetter(a.State)
	if err != nil || string(got.Value) != "\xff" || got.SourceOffset != 9 {
		t.Fatalf("dead letter %+v %v", got, err)
	}
}

// FuzzDecodeCommand: any bytes give a command or an error wrapping ErrEnvelope,
// never a panic; a decoded command always has its required fields.
func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"command_id":"` + uuid.NewString() + `","type":"update","entity":"example","entity_id":"` + uuid.NewString() + `","data":{"a":1}}`))
	f.Add([]byte(`{"command_id":null}`))
	f.Add([]byte(`{"data":[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := wire.DecodeCommand(b, 4096)
		if err != nil {
			if !errors.Is(err, wire.ErrEnvelope) {
				t.Fatalf("error does not wrap ErrEnvelope: %v", err)
			}
			return
		}
		if c.CommandID == uuid.Nil || c.EntityID == uuid.Nil || c.Type == "" || c.Entity == "" {
			t.Fatalf("accepted incomplete command %+v", c)
		}
	})
}

func TestEventHeadersRoundTrip(t *testing.T) {
	it := events.SequencedItem{SequenceID: uuid.New(), Position: 7, Topic: "example.Created", Codec: "json+zstd"}
	got, id, err := wire.DecodeEventHeaders(wire.EventHeaders(it, 42))
	if err != nil || id != 42 || got.SequenceID != it.SequenceID || got.Position != 7 || got.Topic != it.Topic || got.Codec != it.Codec {
		t.Fatalf("round trip: %+v %d %v", got, id, err)
	}
	good := wire.EventHeaders(it, 42)
	for i := range 4 { // each required header missing in turn
		hs := append(append([]wire.Header{}, good[:i]...), good[i+1:]...)
		if _, _, err := wire.DecodeEventHeaders(hs); !errors.Is(err, wire.ErrHeaders) {
			t.Errorf("without %s: %v", good[i].Key, err)
		}
	}
	for _, bad := range []wire.Header{
		{Key: wire.HeaderSequenceID, Value: []byte("nope")},
		{Key: wire.HeaderPosition, Value: []byte("-1")},
		{Key: wire.HeaderTopic, Value: []byte("")},
		{Key: wire.HeaderNotificationID, Value: []byte("x")},
	} {
		if _, _, err := wire.DecodeEventHeaders(append(append([]wire.Header{}, good...), bad)); !errors.Is(err, wire.ErrHeaders) {
			t.Errorf("bad %s %q: %v", bad.Key, bad.Value, err)
		}
	}
}

// An id that does not decode is named in the error.
func TestDecodeCommandNamesTheField(t *testing.T) {
	for field, body := range map[string]string{
		"entity_id":  `{"command_id":"` + uuid.NewString() + `","type":"create","entity":"example","entity_id":"not-a-uuid"}`,
		"command_id": `{"command_id":"1234","type":"create","entity":"example","entity_id":"` + uuid.NewString() + `"}`,
	} {
		_, err := wire.DecodeCommand([]byte(body), 0)
		if !errors.Is(err, wire.ErrEnvelope) || !strings.Contains(err.Error(), field+": invalid UUID length") {
			t.Errorf("bad %s: %v", field, err)
		}
	}
}
