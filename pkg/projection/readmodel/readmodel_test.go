package readmodel_test

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

func item(id uuid.UUID, pos int64, e events.Event) projection.Item {
	m := e.EventMeta()
	m.OriginatorID, m.OriginatorVersion = id, pos
	m.Timestamp = time.Unix(1000+pos, 0).UTC()
	return projection.Item{SequencedItem: store.SequencedItem{SequenceID: id, Position: pos, Topic: "x"}, Event: e}
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func TestFold(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	items := []projection.Item{
		item(a, 0, &entity.Created{Type: "example", Attributes: map[string]json.RawMessage{"foo": raw(`"bar"`), "n": raw(`1`)}}),
		item(b, 4, &entity.AttributeChanged{Type: "customer", Name: "x", Value: raw(`null`)}),
		item(a, 1, &entity.AttributeChanged{Type: "example", Name: "foo", Value: raw(`"baz"`)}),
		item(b, 5, &entity.Discarded{Type: "customer"}),
		item(a, 2, &entity.AttributeChanged{Type: "example", Name: "m", Value: raw(`[1]`)}),
	}
	cs, err := readmodel.Fold(items, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != a || cs[1].ID != b {
		t.Fatalf("changes %+v", cs)
	}
	ca, cb := cs[0], cs[1]
	if !ca.Created || ca.Version != 3 || ca.Discarded || string(readmodel.EncodeAttributes(ca.Attributes)) != `{"foo":"baz","m":[1],"n":1}` ||
		!ca.UpdatedAt.Equal(time.Unix(1002, 0)) || ca.Type != "example" {
		t.Errorf("change of a: %+v", ca)
	}
	if cb.Created || cb.Version != 6 || !cb.Discarded || string(readmodel.EncodeAttributes(cb.Attributes)) != `{"x":null}` {
		t.Errorf("change of b: %+v", cb)
	}

	// Applied to stored rows.
	var rb readmodel.Row
	rb.Attributes = map[string]json.RawMessage{"old": raw(`true`)}
	rb.Version = 4
	cb.ApplyTo(&rb)
	if rb.Version != 6 || !rb.Discarded || string(readmodel.EncodeAttributes(rb.Attributes)) != `{"old":true,"x":null}` || rb.ID != b {
		t.Errorf("row of b: %+v", rb)
	}
	var ra readmodel.Row
	ca.ApplyTo(&ra)
	if ra.Version != 3 || len(ra.Attributes) != 3 {
		t.Errorf("row of a: %+v", ra)
	}
}

func TestFoldRefuses(t *testing.T) {
	id := uuid.New()
	type ev = projection.Item
	for _, tc := range []struct {
		what  string
		items []ev
		keep  func(string) bool
	}{
		{"not decoded", []ev{{SequencedItem: store.SequencedItem{SequenceID: id, Topic: "example.Created"}}}, nil},
		{"other event", []ev{item(id, 0, &struct{ events.Meta }{})}, nil},
		{"bad name", []ev{item(id, 0, &entity.AttributeChanged{Type: "example", Name: "1x", Value: raw(`1`)})}, nil},
		{"bad name at creation", []ev{item(id, 0, &entity.Created{Type: "example", Attributes: map[string]json.RawMessage{"a b": raw(`1`)}})}, nil},
		{"no value", []ev{item(id, 0, &entity.AttributeChanged{Type: "example", Name: "x"})}, nil},
		{"type not kept", []ev{item(id, 0, &entity.Discarded{Type: "example"})}, func(t string) bool { return t == "customer" }},
	} {
		good := item(uuid.New(), 0, &entity.Created{Type: "example"})
		_, err := readmodel.Fold(append([]ev{good}, tc.items...), tc.keep)
		var ie *projection.ItemError
		if tc.what == "type not kept" {
			// The good item is of type example too.
			if !errors.As(err, &ie) || ie.Index != 0 || !projection.IsPermanent(err) {
				t.Errorf("%s: %v", tc.what, err)
			}
			continue
		}
		if !errors.As(err, &ie) || ie.Index != 1 || !projection.IsPermanent(err) {
			t.Errorf("%s: got %v, want a permanent ItemError at 1", tc.what, err)
		}
	}
}

func TestFoldNotifications(t *testing.T) {
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	m := events.NewMapper(reg)
	e, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{"a": raw(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Set("b", 2); err != nil {
		t.Fatal(err)
	}
	var ns []store.Notification
	for i, ev := range e.CollectEvents() {
		it, err := m.ToItem(ev)
		if err != nil {
			t.Fatal(err)
		}
		ns = append(ns, store.Notification{ID: int64(i + 1), SequencedItem: it})
	}
	ns = append(ns,
		store.Notification{ID: 10, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: "example.Created", State: []byte(`{`)}},
		store.Notification{ID: 11, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: "example.AttributeChanged", State: []byte(`{"name": "1", "value": 1}`)}},
		store.Notification{ID: 12, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: "eventlog.DeadLetter", State: []byte(`{}`)}},
		store.Notification{ID: 13, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: "other.Created", State: []byte(`{}`)}},
	)
	cs, skipped := readmodel.FoldNotifications(ns, m, func(t string) bool { return t == "example" })
	if skipped != 2 || len(cs) != 1 || cs[0].Version != 2 || len(cs[0].Attributes) != 2 {
		t.Errorf("changes %+v, skipped %d", cs, skipped)
	}
}

func TestQuery(t *testing.T) {
	q := readmodel.Query{}
	if err := q.Normalize(); err != nil || q.Limit != readmodel.DefaultLimit {
		t.Errorf("zero query: %v, limit %d", err, q.Limit)
	}
	for _, bad := range []readmodel.Query{
		{Limit: -1}, {Limit: readmodel.MaxLimit + 1},
		{Where: map[string]json.RawMessage{"": raw(`1`)}},
		{Where: map[string]json.RawMessage{"a": raw(`{`)}},
	} {
		if err := bad.Normalize(); !errors.Is(err, readmodel.ErrQuery) {
			t.Errorf("Normalize(%+v) = %v", bad, err)
		}
	}
	for in, want := range map[string]string{"bar": `"bar"`, "5": `5`, `"5"`: `"5"`, "true": `true`, `{"a":1}`: `{"a":1}`, "": `""`, "a b": `"a b"`} {
		if got := string(readmodel.ParseValue(in)); got != want {
			t.Errorf("ParseValue(%q) = %s, want %s", in, got, want)
		}
	}
	if got := string(readmodel.EncodeAttributes(nil)); got != "{}" {
		t.Errorf("EncodeAttributes(nil) = %s", got)
	}
	if got := string(readmodel.EncodeAttributes(map[string]json.RawMessage{`q"k`: raw(`1`), "a": raw(`2`)})); got != `{"a":2,"q\"k":1}` {
		t.Errorf("EncodeAttributes = %s", got)
	}
}

// TestDependencies keeps the core and the shared read-model code free of
// drivers and Kafka clients: those live in the backend subpackages and in
// package kafka.
func TestDependencies(t *testing.T) {
	for _, pkg := range []string{"github.com/eventlog/eventlog/pkg/projection", "github.com/eventlog/eventlog/pkg/projection/readmodel", "github.com/eventlog/eventlog/pkg/projection/sqlitereadmodel"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"github.com/twmb/franz-go", "github.com/jackc/pgx", "modernc.org/sqlite", "github.com/eventlog/eventlog/pkg/kafka", "github.com/eventlog/eventlog/pkg/store/"} {
				if strings.HasPrefix(dep, banned) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
