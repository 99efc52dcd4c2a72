package events

import (
	"fmt"
	"reflect"
	"regexp"
	"sync"
)

// A Registry maps wire topics to event types and back. Build one in main (there is
// no global registry), register every event type that may be stored, and share it:
// after registration it is safe for concurrent use.
//
// A topic names an event type on the wire and in the store for ever: choose names
// like "account.Opened" (entity type, a dot, the event name). Renaming the Go type
// changes nothing stored.
type Registry struct {
	mu        sync.RWMutex
	byTopic   map[string]func() Event
	byType    map[reflect.Type]string
	upcasters map[string][]Upcaster
}

// An Upcaster lifts the stored state of one topic from one schema version to the
// next, in place. State is the decoded JSON object.
type Upcaster func(state map[string]any) error

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		byTopic:   make(map[string]func() Event),
		byType:    make(map[reflect.Type]string),
		upcasters: make(map[string][]Upcaster),
	}
}

var topicRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$`)

// ValidTopic reports whether topic is a usable wire name: 1 to 255 letters, digits,
// '.', '_' or '-', not starting with punctuation.
func ValidTopic(topic string) bool { return topicRE.MatchString(topic) }

// Register maps topic to the event type newEvent returns (a fresh pointer each
// call). A type may be registered under several topics only if it implements
// Topicer, which then picks the topic when the event is stored.
func (r *Registry) Register(topic string, newEvent func() Event) error {
	if !ValidTopic(topic) {
		return fmt.Errorf("events: invalid topic %q", topic)
	}
	if IsForgottenTopic(topic) {
		return fmt.Errorf("events: topic %q: the event name %s is reserved for the tombstone of a forgotten entity", topic, ForgottenName)
	}
	e := newEvent()
	t := reflect.TypeOf(e)
	if t == nil || t.Kind() != reflect.Pointer {
		return fmt.Errorf("events: topic %q: newEvent must return a pointer, got %T", topic, e)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.byTopic[topic]; dup {
		return fmt.Errorf("events: topic %q registered twice", topic)
	}
	if prev, dup := r.byType[t]; dup {
		if _, ok := e.(Topicer); !ok {
			return fmt.Errorf("events: type %s registered as %q and %q; it must implement Topicer", t, prev, topic)
		}
	} else {
		r.byType[t] = topic
	}
	r.byTopic[topic] = newEvent
	return nil
}

// MustRegister is Register that panics, for registration in main or init code
// whose topics are constants.
func (r *Registry) MustRegister(topic string, newEvent func() Event) {
	if err := r.Register(topic, newEvent); err != nil {
		panic(err)
	}
}

// AddUpcaster appends the next step to topic's upcaster chain. The first call's
// upcaster lifts schema version 1 (what was stored before any upcaster existed) to
// 2, the second 2 to 3, and so on; new events are stored at the latest version.
func (r *Registry) AddUpcaster(topic string, up Upcaster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.upcasters[topic] = append(r.upcasters[topic], up)
}

// SchemaVersion returns the schema version new events of topic are stored at.
func (r *Registry) SchemaVersion(topic string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.upcasters[topic]) + 1
}

// Topic returns the topic e is stored under.
func (r *Registry) Topic(e Event) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := e.(Topicer); ok {
		topic := t.EventTopic()
		if _, known := r.byTopic[topic]; !known && !IsForgottenTopic(topic) {
			return "", fmt.Errorf("%w: %q (event type %T)", ErrUnknownTopic, topic, e)
		}
		return topic, nil
	}
	topic, ok := r.byType[reflect.TypeOf(e)]
	if !ok {
		return "", fmt.Errorf("%w: event type %T is not registered", ErrUnknownTopic, e)
	}
	return topic, nil
}

// New returns a new zero event for topic.
func (r *Registry) New(topic string) (Event, error) {
	r.mu.RLock()
	f, ok := r.byTopic[topic]
	r.mu.RUnlock()
	if !ok {
		f, ok = forgottenLookup(topic)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, topic)
	}
	return f(), nil
}

// Topics returns every registered topic.
func (r *Registry) Topics() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byTopic))
	for t := range r.byTopic {
		out = append(out, t)
	}
	return out
}

// lookup returns what decoding an item of topic needs, under one lock.
func (r *Registry) lookup(topic string) (newEvent func() Event, ups []Upcaster, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	newEvent, ok = r.byTopic[topic]
	if !ok {
		newEvent, ok = forgottenLookup(topic)
	}
	return newEvent, r.upcasters[topic], ok
}
