package entity_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
)

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func TestCommandsValidate(t *testing.T) {
	id := uuid.New()
	bad := []struct {
		name  string
		typ   string
		id    uuid.UUID
		attrs map[string]json.RawMessage
	}{
		{"bad type", "Example!", id, nil},
		{"reserved type", "eventlog", id, nil},
		{"nil id", "example", uuid.Nil, nil},
		{"empty name", "example", id, map[string]json.RawMessage{"": raw(`1`)}},
		{"name with space", "example", id, map[string]json.RawMessage{"a b": raw(`1`)}},
		{"not JSON", "example", id, map[string]json.RawMessage{"a": raw(`{`)}},
	}
	for _, c := range bad {
		if _, err := entity.Create(c.typ, c.id, c.attrs); !errors.Is(err, entity.ErrInvalid) {
			t.Errorf("%s: %v", c.name, err)
		}
	}

	e, err := entity.Create("example", id, map[string]json.RawMessage{"foo": raw(` "bar" `)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Update(nil); !errors.Is(err, entity.ErrInvalid) {
		t.Errorf("empty update: %v", err)
	}
	if err := e.Update(map[string]json.RawMessage{"": raw(`1`)}); !errors.Is(err, entity.ErrInvalid) || e.Version() != 1 {
		t.Errorf("empty attribute name: %v (version %d)", err, e.Version())
	}
	// One AttributeChanged per attribute, in name order.
	if err := e.Update(map[string]json.RawMessage{"b": raw(`2`), "a": raw(`[1, 2]`)}); err != nil {
		t.Fatal(err)
	}
	p := e.PendingEvents()
	if len(p) != 3 || p[1].(*entity.AttributeChanged).Name != "a" || p[2].(*entity.AttributeChanged).Name != "b" {
		t.Fatalf("pending %v", p)
	}
	if string(e.Attributes["a"]) != "[1,2]" || e.String("foo") != "bar" || e.Version() != 3 {
		t.Fatalf("state %s version %d", e.Attributes, e.Version())
	}
	if err := e.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := e.Set("foo", "x"); !errors.Is(err, events.ErrDiscarded) {
		t.Errorf("update after discard: %v", err)
	}
	if err := e.Discard(); !errors.Is(err, events.ErrDiscarded) {
		t.Errorf("discard twice: %v", err)
	}
	if err := entity.New("example").Set("a", 1); !errors.Is(err, entity.ErrInvalid) {
		t.Errorf("update of a never-created entity: %v", err)
	}
}

func TestTopicsPerEntityType(t *testing.T) {
	reg := events.NewRegistry()
	for _, typ := range []string{"example", "customer"} {
		if err := entity.Register(reg, typ); err != nil {
			t.Fatal(err)
		}
	}
	if err := entity.Register(reg, "example"); err == nil {
		t.Fatal("registered a type twice")
	}
	m := events.NewMapper(reg)
	c, _ := entity.Create("customer", uuid.New(), map[string]json.RawMessage{"name": raw(`"ann"`)})
	it, err := m.ToItem(c.PendingEvents()[0])
	if err != nil || it.Topic != "customer.Created" {
		t.Fatalf("topic %q %v", it.Topic, err)
	}
	back, err := m.FromItem(it)
	if err != nil || back.(*entity.Created).Type != "customer" {
		t.Fatalf("decoded %+v %v", back, err)
	}
	// Replaying the decoded events rebuilds the entity.
	r := entity.New("customer")
	if err := events.Apply(r, back); err != nil || r.String("name") != "ann" || r.Version() != 1 {
		t.Fatalf("replay: %v %+v", err, r)
	}
}

// A command sets at most MaxAttributes attributes: one more fails with
// ErrInvalid, says the limit, and changes nothing.
func TestAttributeCountLimit(t *testing.T) {
	attrs := func(n int) map[string]json.RawMessage {
		m := make(map[string]json.RawMessage, n)
		for i := range n {
			m[fmt.Sprintf("a%d", i)] = json.RawMessage(`1`)
		}
		return m
	}
	e, err := entity.Create("example", uuid.New(), attrs(entity.MaxAttributes))
	if err != nil {
		t.Fatalf("create with MaxAttributes attributes: %v", err)
	}
	_, err = entity.Create("example", uuid.New(), attrs(entity.MaxAttributes+1))
	if !errors.Is(err, entity.ErrInvalid) || !strings.Contains(err.Error(), "more than the limit of 1000") {
		t.Fatalf("create with one attribute too many: %v", err)
	}
	v := e.Version()
	if err := e.Update(attrs(entity.MaxAttributes + 1)); !errors.Is(err, entity.ErrInvalid) || e.Version() != v {
		t.Fatalf("update with one attribute too many: %v, version %d -> %d", err, v, e.Version())
	}
	if err := e.Update(attrs(entity.MaxAttributes)); err != nil || e.Version() != v+entity.MaxAttributes {
		t.Fatalf("update with MaxAttributes attributes: %v", err)
	}
}
