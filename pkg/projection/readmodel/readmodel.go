// Package readmodel holds what the read models of the generic entity share,
// whatever database keeps them: the row, the list query, and the fold of
// entity events into changes. pgreadmodel (PostgreSQL) and sqlitereadmodel
// (SQLite) store them.
//
// A read model keeps one row per entity: id, version (the number of events
// applied, as everywhere in eventlog), attributes, discarded, and the
// timestamp of the last event applied. Every value in a row comes from the
// events, never from the clock, so a read model rebuilt from the store's log
// equals the one kept live.
//
// The tombstone of a forgotten entity (events.Forgotten) deletes its row:
// nothing of a forgotten entity stays in a read model.
//
// The package does no I/O.
package readmodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
)

// A Row is one entity in a read model.
type Row struct {
	Type string    `json:"type"`
	ID   uuid.UUID `json:"id"`
	// Version is the number of events applied: one plus the position of the
	// last.
	Version    int64                      `json:"version"`
	Attributes map[string]json.RawMessage `json:"attributes"`
	Discarded  bool                       `json:"discarded"`
	// UpdatedAt is the timestamp of the last event applied.
	UpdatedAt time.Time `json:"updated_at"`
}

// A Change is the net effect of consecutive events of one entity.
type Change struct {
	Type string
	ID   uuid.UUID
	// Created reports that the events start with the entity's creation:
	// Attributes is then its whole state. Otherwise Attributes holds the
	// attributes the events set, to merge into the stored ones.
	Created    bool
	Attributes map[string]json.RawMessage
	// Discarded reports that the events discard the entity.
	Discarded bool
	// Forgotten reports that the events end with the entity's tombstone
	// (events.Forgotten): its row is deleted, and Attributes is empty.
	Forgotten bool
	// Version is the entity's version after the events.
	Version   int64
	UpdatedAt time.Time
}

// ApplyTo applies c to r, the entity's row before the events (the zero Row
// if there was none).
func (c *Change) ApplyTo(r *Row) {
	r.Type, r.ID = c.Type, c.ID
	if c.Created || r.Attributes == nil {
		r.Attributes = make(map[string]json.RawMessage, len(c.Attributes))
	}
	maps.Copy(r.Attributes, c.Attributes)
	r.Discarded = c.Discarded || (r.Discarded && !c.Created)
	if c.Version > r.Version {
		r.Version, r.UpdatedAt = c.Version, c.UpdatedAt
	}
}

// EncodeAttributes returns attributes as a JSON object, keys sorted.
func EncodeAttributes(attrs map[string]json.RawMessage) []byte {
	if len(attrs) == 0 {
		return []byte("{}")
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(attrs)) {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k) // a string always marshals
		b.Write(kb)
		b.WriteByte(':')
		b.Write(attrs[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// Fold folds decoded entity events into one change per entity, in the order
// of each entity's first event. The tombstone of a forgotten entity
// (*events.Forgotten) makes a change with Forgotten set: the row goes. The items of one entity must be in position
// order, as a projection.Runner hands them to a policy. keep, if not nil,
// says which entity types the read model keeps.
//
// An item that is not an entity event of a kept type, or whose attributes
// are invalid, fails the fold with a permanent *projection.ItemError naming
// it.
func Fold(items []projection.Item, keep func(typ string) bool) ([]Change, error) {
	var out []Change
	at := make(map[uuid.UUID]int, len(items))
	for i := range items {
		it := &items[i]
		typ, err := check(it, keep)
		if err != nil {
			return nil, &projection.ItemError{Index: i, Err: projection.Permanent(err)}
		}
		k, ok := at[it.SequenceID]
		if !ok {
			k = len(out)
			at[it.SequenceID] = k
			out = append(out, Change{Type: typ, ID: it.SequenceID, Attributes: map[string]json.RawMessage{}})
		}
		c := &out[k]
		if c.Type != typ {
			return nil, &projection.ItemError{Index: i, Err: projection.Permanent(
				fmt.Errorf("readmodel: %s event %d of entity %s follows a %s event", typ, it.Position, it.SequenceID, c.Type))}
		}
		switch e := it.Event.(type) {
		case *entity.Created:
			c.Created = true
			c.Attributes = make(map[string]json.RawMessage, len(e.Attributes))
			maps.Copy(c.Attributes, e.Attributes)
			c.Discarded = false
		case *entity.AttributeChanged:
			c.Attributes[e.Name] = e.Value
		case *entity.Discarded:
			c.Discarded = true
		case *events.Forgotten:
			c.Forgotten, c.Discarded, c.Created = true, true, false
			c.Attributes = map[string]json.RawMessage{}
		}
		c.Version = it.Position + 1
		c.UpdatedAt = it.Event.EventMeta().Timestamp
	}
	return out, nil
}

// check returns the entity type of a decoded entity event, or why it cannot
// be applied.
func check(it *projection.Item, keep func(string) bool) (string, error) {
	var typ string
	switch e := it.Event.(type) {
	case nil:
		return "", fmt.Errorf("readmodel: position %d of %s (%s) was not decoded", it.Position, it.SequenceID, it.Topic)
	case *entity.Created:
		typ = e.Type
		for name, v := range e.Attributes {
			if err := checkAttribute(name, v); err != nil {
				return "", err
			}
		}
	case *entity.AttributeChanged:
		typ = e.Type
		if err := checkAttribute(e.Name, e.Value); err != nil {
			return "", err
		}
	case *entity.Discarded:
		typ = e.Type
	case *events.Forgotten:
		typ = e.Entity
	default:
		return "", fmt.Errorf("readmodel: %s (%T) is not an event of the generic entity", it.Topic, it.Event)
	}
	if keep != nil && !keep(typ) {
		return "", fmt.Errorf("readmodel: entity type %q is not kept by this read model", typ)
	}
	return typ, nil
}

// checkAttribute checks an attribute of a decoded event. Its value was
// parsed as part of the event's JSON, so it is valid JSON unless it is
// missing.
func checkAttribute(name string, v json.RawMessage) error {
	if !entity.ValidName(name) {
		return fmt.Errorf("readmodel: invalid attribute name %q", name)
	}
	if len(v) == 0 {
		return fmt.Errorf("readmodel: attribute %q has no value", name)
	}
	return nil
}

// FoldNotifications decodes and folds a page of the notification log, for a
// rebuild. Items of types keep refuses, and items that do not decode or fold
// (which a live projection dead-letters), are left out; skipped counts the
// latter.
func FoldNotifications(ns []store.Notification, mapper *events.Mapper, keep func(string) bool) (changes []Change, skipped int) {
	items := make([]projection.Item, 0, len(ns))
	for _, n := range ns {
		typ := events.EntityOf(n.Topic)
		if typ == "" || (keep != nil && !keep(typ)) {
			continue
		}
		e, err := mapper.FromItem(n.SequencedItem)
		if err != nil {
			skipped++
			continue
		}
		items = append(items, projection.Item{SequencedItem: n.SequencedItem, NotificationID: n.ID, Event: e})
	}
	for {
		changes, err := Fold(items, keep)
		var ie *projection.ItemError
		if !errors.As(err, &ie) {
			return changes, skipped
		}
		items = slices.Delete(items, ie.Index, ie.Index+1)
		skipped++
	}
}

// A Filter says which events a rebuild applies, and learns of those that
// fail; a *projection.Replay is one.
type Filter interface {
	// Keep reports whether the rebuild applies position pos of sequence id.
	Keep(id uuid.UUID, pos int64) bool
	// Fail records that it does not decode or fold: it and the later events
	// of its sequence are left out from then on (Keep reports false).
	Fail(it store.SequencedItem, err error)
}

// FoldFiltered is FoldNotifications for a rebuild that keeps to a
// projection's parked sequences: events f does not keep are left out (held
// counts them), and an event that does not decode or fold is reported to f
// and left out with every later event of its sequence (failed counts those
// reported).
func FoldFiltered(ns []store.Notification, mapper *events.Mapper, keep func(string) bool, f Filter) (changes []Change, held, failed int) {
	items := make([]projection.Item, 0, len(ns))
	for _, n := range ns {
		typ := events.EntityOf(n.Topic)
		if typ == "" || (keep != nil && !keep(typ)) {
			continue
		}
		if !f.Keep(n.SequenceID, n.Position) {
			held++
			continue
		}
		e, err := mapper.FromItem(n.SequencedItem)
		if err != nil {
			f.Fail(n.SequencedItem, projection.Permanent(err))
			failed++
			continue
		}
		items = append(items, projection.Item{SequencedItem: n.SequencedItem, NotificationID: n.ID, Event: e})
	}
	for {
		changes, err := Fold(items, keep)
		var ie *projection.ItemError
		if !errors.As(err, &ie) {
			return changes, held, failed
		}
		bad := items[ie.Index]
		f.Fail(bad.SequencedItem, ie.Err)
		failed++
		n := len(items)
		items = slices.DeleteFunc(items, func(it projection.Item) bool {
			return it.SequenceID == bad.SequenceID && it.Position >= bad.Position
		})
		held += n - len(items) - 1
	}
}

// Limits of a Query.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// A Query selects entities of one type for List, in id order.
type Query struct {
	// Where selects entities whose attributes match: each named attribute
	// equals the given JSON value (for objects and arrays, contains it, as
	// PostgreSQL's jsonb @> does).
	Where map[string]json.RawMessage
	// After is the cursor: only ids greater than After (the last id of the
	// previous page) are listed.
	After uuid.UUID
	// Limit bounds the rows returned: DefaultLimit if zero, at most MaxLimit.
	Limit int
	// IncludeDiscarded lists discarded entities too.
	IncludeDiscarded bool
}

// ErrQuery reports a query that cannot run.
var ErrQuery = errors.New("readmodel: invalid query")

// Normalize checks q and sets its defaults.
func (q *Query) Normalize() error {
	switch {
	case q.Limit < 0 || q.Limit > MaxLimit:
		return fmt.Errorf("%w: limit %d (want 1 to %d)", ErrQuery, q.Limit, MaxLimit)
	case q.Limit == 0:
		q.Limit = DefaultLimit
	}
	for name, v := range q.Where {
		if !entity.ValidName(name) {
			return fmt.Errorf("%w: attribute name %q", ErrQuery, name)
		}
		if !json.Valid(v) {
			return fmt.Errorf("%w: value of %q is not JSON", ErrQuery, name)
		}
	}
	return nil
}

// ParseValue reads a filter value given as text (a URL query parameter): JSON
// if it is valid JSON (5, true, "x", {"a":1}), a JSON string otherwise (bar
// means "bar").
func ParseValue(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}
