package events

import (
	"strings"

	"github.com/google/uuid"
)

// A SequencedItem is a stored event: the archetype persistence model. SequenceID is
// the aggregate id, Position the event's place in that sequence (0 for the event that
// created the aggregate), Topic the wire-stable event name, State the encoded payload
// and Codec how State was encoded ("json", "json+zstd", "json+zstd+aes256gcm", ...),
// so that a reader can always decode it.
//
// TraceParent, outside the state, is the W3C trace context (a traceparent
// header value) of what produced the item, usually the command; empty if
// none. The writer sets it, recorders store it with the item and return it
// with its notification, and the relay sends it on as the record's
// traceparent header. It is no part of the event: the mapper neither reads
// nor writes it, and reads of a sequence (a replay) need not return it.
type SequencedItem struct {
	SequenceID  uuid.UUID
	Position    int64
	Topic       string
	State       []byte
	Codec       string
	TraceParent string
}

// EntityOf returns the entity type a topic belongs to: the part before the first dot
// ("example" for "example.Created"). Topics without a dot belong to no entity type
// and EntityOf returns "".
func EntityOf(topic string) string {
	i := strings.IndexByte(topic, '.')
	if i <= 0 {
		return ""
	}
	return topic[:i]
}
