package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Meta is the metadata every event carries. Event types embed it:
//
//	type Renamed struct {
//		events.Meta
//		Name string `json:"name"`
//	}
//
// OriginatorID and OriginatorVersion are not part of the stored state: they are the
// item's sequence id and position, and the mapper restores them from there.
type Meta struct {
	OriginatorID      uuid.UUID `json:"-"`
	OriginatorVersion int64     `json:"-"`
	Timestamp         time.Time `json:"timestamp"`
}

// EventMeta returns m. Through embedding it makes any struct with a Meta an Event.
func (m *Meta) EventMeta() *Meta { return m }

// An Event is a domain event: a pointer to a struct that embeds Meta.
type Event interface {
	EventMeta() *Meta
}

// A Topicer names its own topic. Event types shared by several entity types (the
// generic entity's events, for example) implement it; others are named by the
// registry from their Go type.
type Topicer interface {
	EventTopic() string
}

var (
	// ErrInvalid reports a command whose input is malformed: data of the
	// wrong shape, a bad attribute name, input over a limit. It is the one
	// sentinel of invalid input that domain code (package entity, a user's
	// aggregates) and the command writer share: command.ErrInvalid and
	// entity.ErrInvalid are this value, and a handler error wrapping it makes
	// the command's result invalid rather than rejected.
	ErrInvalid = errors.New("invalid command")
	// ErrDiscarded reports an event or command for a discarded aggregate.
	ErrDiscarded = errors.New("events: aggregate is discarded")
	// ErrVersion reports an event whose originator version is not the aggregate's
	// version. Errors wrapping it are *VersionError values.
	ErrVersion = errors.New("events: event does not follow the aggregate's version")
	// ErrUnknownTopic reports a topic, or an event type, the registry does not know.
	ErrUnknownTopic = errors.New("events: unknown topic")
	// ErrDecode reports stored state that cannot be decoded: corrupt bytes, an
	// unknown codec, a wrong or missing key.
	ErrDecode = errors.New("events: cannot decode item")
)

// A VersionError reports an event applied out of order.
type VersionError struct {
	ID       uuid.UUID
	Expected int64 // the aggregate's version
	Got      int64 // the event's originator version
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("events: aggregate %s is at version %d, event has originator version %d", e.ID, e.Expected, e.Got)
}

// Is reports ErrVersion.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }
