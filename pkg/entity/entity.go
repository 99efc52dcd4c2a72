// Package entity is the generic attribute entity: the stand-alone example's Example
// entity, generalised to any entity type. An entity has a type ("example",
// "customer", ...), an id, a version and named attributes whose values are JSON.
//
// Its events are Created (the initial attributes), AttributeChanged (one attribute's
// new value) and Discarded. Their topics are "<type>.Created",
// "<type>.AttributeChanged" and "<type>.Discarded"; Register adds them to a
// registry for one entity type.
//
// Commands validate before they trigger anything: an update or discard of a
// discarded entity fails with events.ErrDiscarded, and an empty or malformed
// attribute name or a value that is not JSON fails with ErrInvalid. Input is
// bounded by Limits (by default DefaultLimits: MaxAttributes attributes per
// command, MaxValueBytes bytes per value): a command over a limit fails with a
// *LimitError, an ErrInvalid naming the limit. A failed command leaves the
// entity unchanged. An Entity is not safe for concurrent use.
package entity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// ErrInvalid reports a command with invalid input. It is events.ErrInvalid,
// so command.ErrInvalid too: the writer gives such a command an invalid
// result.
var ErrInvalid = events.ErrInvalid

// Event names, appended to the entity type to form topics. Snapshots of the
// entity have the topic "<type>.Snapshot", every entity type's default
// (events.SnapshotTopic).
const (
	CreatedName          = "Created"
	AttributeChangedName = "AttributeChanged"
	DiscardedName        = "Discarded"
	SnapshotName         = events.SnapshotName
)

var typeRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// ValidType reports whether typ can name an entity type: 1 to 63 lower-case letters,
// digits, '_' or '-', starting with a letter. The type becomes part of topics and
// Kafka topic names.
// "eventlog" is reserved for the platform's own items.
func ValidType(typ string) bool { return typeRE.MatchString(typ) && typ != "eventlog" }

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$`)

// ValidName reports whether name can name an attribute: 1 to 128 letters, digits,
// '_', '.' or '-', not starting with a digit or punctuation other than '_'.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Created is the event that creates an entity with its initial attributes.
type Created struct {
	events.Meta
	Type       string                     `json:"-"`
	Attributes map[string]json.RawMessage `json:"attributes"`
}

// EventTopic implements events.Topicer.
func (e *Created) EventTopic() string { return e.Type + "." + CreatedName }

// AttributeChanged is the event that sets one attribute.
type AttributeChanged struct {
	events.Meta
	Type  string          `json:"-"`
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value"`
}

// EventTopic implements events.Topicer.
func (e *AttributeChanged) EventTopic() string { return e.Type + "." + AttributeChangedName }

// Discarded is the event that discards an entity.
type Discarded struct {
	events.Meta
	Type string `json:"-"`
}

// EventTopic implements events.Topicer.
func (e *Discarded) EventTopic() string { return e.Type + "." + DiscardedName }

// Register adds the topics of entity type typ to reg.
func Register(reg *events.Registry, typ string) error {
	if !ValidType(typ) {
		return fmt.Errorf("%w: entity type %q must be 1 to 63 of a-z, 0-9, '_', '-', starting with a letter", ErrInvalid, typ)
	}
	return errors.Join(
		reg.Register(typ+"."+CreatedName, func() events.Event { return &Created{Type: typ} }),
		reg.Register(typ+"."+AttributeChangedName, func() events.Event { return &AttributeChanged{Type: typ} }),
		reg.Register(typ+"."+DiscardedName, func() events.Event { return &Discarded{Type: typ} }),
	)
}

// Entity is a generic entity. Its exported fields are its snapshot state.
type Entity struct {
	events.Aggregate
	Type       string                     `json:"type"`
	Attributes map[string]json.RawMessage `json:"attributes"`
}

// New returns a zero entity of type typ, ready to replay events or restore a
// snapshot into.
func New(typ string) *Entity { return &Entity{Type: typ} }

// Create returns a new entity of type typ with id and the given initial
// attributes. Its Created event is pending.
func Create(typ string, id uuid.UUID, attrs map[string]json.RawMessage) (*Entity, error) {
	return DefaultLimits.Create(typ, id, attrs)
}

// Create is Create within l.
func (l Limits) Create(typ string, id uuid.UUID, attrs map[string]json.RawMessage) (*Entity, error) {
	if !ValidType(typ) {
		return nil, fmt.Errorf("%w: entity type %q", ErrInvalid, typ)
	}
	if id == uuid.Nil {
		return nil, fmt.Errorf("%w: entity id is nil", ErrInvalid)
	}
	if err := l.Check(attrs); err != nil {
		return nil, err
	}
	e := New(typ)
	ev := &Created{Type: typ, Attributes: cloneAttrs(attrs)}
	ev.OriginatorID = id
	if err := events.Trigger(e, ev); err != nil {
		return nil, err
	}
	return e, nil
}

// Update sets attributes: one AttributeChanged event for each, in name order. An
// attribute whose value is unchanged gets an event too (it records the command).
func (e *Entity) Update(attrs map[string]json.RawMessage) error {
	return DefaultLimits.Update(e, attrs)
}

// Update is e.Update within l.
func (l Limits) Update(e *Entity, attrs map[string]json.RawMessage) error {
	if err := e.checkLive(); err != nil {
		return err
	}
	if len(attrs) == 0 {
		return fmt.Errorf("%w: update sets no attributes", ErrInvalid)
	}
	if err := l.Check(attrs); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		if err := events.Trigger(e, &AttributeChanged{Type: e.Type, Name: name, Value: clone(attrs[name])}); err != nil {
			return err
		}
	}
	return nil
}

// Set sets one attribute to the JSON encoding of value.
func (e *Entity) Set(name string, value any) error {
	raw, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("%w: attribute %q: %v", ErrInvalid, name, err)
	}
	return e.Update(map[string]json.RawMessage{name: raw})
}

// Discard discards the entity.
func (e *Entity) Discard() error {
	if err := e.checkLive(); err != nil {
		return err
	}
	return events.Trigger(e, &Discarded{Type: e.Type})
}

// Get returns the JSON value of an attribute, and whether it is set.
func (e *Entity) Get(name string) (json.RawMessage, bool) {
	v, ok := e.Attributes[name]
	return v, ok
}

// String returns a string attribute ("" if unset or not a string).
func (e *Entity) String(name string) string {
	var s string
	_ = json.Unmarshal(e.Attributes[name], &s)
	return s
}

func (e *Entity) checkLive() error {
	if e.Version() == 0 {
		return fmt.Errorf("%w: entity %s does not exist", ErrInvalid, e.ID())
	}
	if e.Discarded() {
		return fmt.Errorf("%w: %s %s", events.ErrDiscarded, e.Type, e.ID())
	}
	return nil
}

// Mutate implements events.Root: the mutator of the stand-alone example.
func (e *Entity) Mutate(ev events.Event) error {
	switch ev := ev.(type) {
	case *Created:
		// Events are immutable once made, so their values can be shared; the
		// map is copied because AttributeChanged changes the entity's own.
		e.Type = ev.Type
		e.Attributes = maps.Clone(ev.Attributes)
		if e.Attributes == nil {
			e.Attributes = make(map[string]json.RawMessage)
		}
	case *AttributeChanged:
		if e.Attributes == nil {
			e.Attributes = make(map[string]json.RawMessage)
		}
		e.Attributes[ev.Name] = ev.Value
	case *Discarded:
		e.MarkDiscarded()
	default:
		return fmt.Errorf("entity: unexpected event %T", ev)
	}
	return nil
}

// Default limits of DefaultLimits.
const (
	// MaxAttributes bounds the attributes one command may set: each becomes
	// an event of the command's transaction. (A command's encoded size is
	// bounded by the writer as well: wire.MaxCommandSize, or the writer's
	// -max-command-bytes.)
	MaxAttributes = 1000
	// MaxValueBytes bounds the JSON encoding of one attribute value: the
	// default command size, so that by default only the command's size binds.
	MaxValueBytes = 1 << 20
)

// DefaultLimits are the limits of Create and Entity.Update.
var DefaultLimits = Limits{MaxAttributes: MaxAttributes, MaxValueBytes: MaxValueBytes}

// Limits bound the input of one command. A zero field takes its default
// (MaxAttributes, MaxValueBytes).
type Limits struct {
	// MaxAttributes is the most attributes one create or update may set
	// (the writer's -max-attributes).
	MaxAttributes int
	// MaxValueBytes is the most bytes of one attribute's JSON value (the
	// writer's -max-attribute-bytes).
	MaxValueBytes int
}

// Validate reports limits that cannot work.
func (l Limits) Validate() error {
	if l.MaxAttributes < 0 || l.MaxValueBytes < 0 {
		return fmt.Errorf("entity: limits must not be negative (max attributes %d, max value bytes %d)", l.MaxAttributes, l.MaxValueBytes)
	}
	return nil
}

func (l Limits) withDefaults() Limits {
	if l.MaxAttributes <= 0 {
		l.MaxAttributes = MaxAttributes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = MaxValueBytes
	}
	return l
}

// Limit names of a LimitError.
const (
	LimitAttributes = "max-attributes"
	LimitValueBytes = "max-attribute-bytes"
)

// A LimitError reports a command over a limit. It is an ErrInvalid.
type LimitError struct {
	// Limit is LimitAttributes or LimitValueBytes.
	Limit string
	// Max is the limit, Got what the command had.
	Max, Got int
	// Attribute names the attribute whose value is too large.
	Attribute string
}

func (e *LimitError) Error() string {
	if e.Limit == LimitValueBytes {
		return fmt.Sprintf("%v: the value of attribute %q is %d bytes, more than the limit of %d (%s)", ErrInvalid, e.Attribute, e.Got, e.Max, e.Limit)
	}
	return fmt.Sprintf("%v: %d attributes, more than the limit of %d per command (%s)", ErrInvalid, e.Got, e.Max, e.Limit)
}

// Unwrap makes a LimitError an ErrInvalid.
func (e *LimitError) Unwrap() error { return ErrInvalid }

// Check validates the attributes of one command: names, JSON values, and l.
func (l Limits) Check(attrs map[string]json.RawMessage) error {
	l = l.withDefaults()
	if len(attrs) > l.MaxAttributes {
		return &LimitError{Limit: LimitAttributes, Max: l.MaxAttributes, Got: len(attrs)}
	}
	for _, name := range slices.Sorted(maps.Keys(attrs)) { // the first bad name, always the same
		v := attrs[name]
		if !ValidName(name) {
			return fmt.Errorf("%w: attribute name %q must be 1 to 128 of letters, digits, '_', '.', '-', not starting with a digit", ErrInvalid, name)
		}
		if len(v) > l.MaxValueBytes {
			return &LimitError{Limit: LimitValueBytes, Max: l.MaxValueBytes, Got: len(v), Attribute: name}
		}
		if !json.Valid(v) {
			return fmt.Errorf("%w: attribute %q is not valid JSON", ErrInvalid, name)
		}
	}
	return nil
}

func cloneAttrs(attrs map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(attrs))
	for k, v := range attrs {
		out[k] = clone(v)
	}
	return out
}

// clone copies a JSON value in its compact form.
func clone(v json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return bytes.Clone(v)
	}
	return b.Bytes()
}
