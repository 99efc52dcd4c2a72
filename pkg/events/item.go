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
type SequencedItem struct {
	SequenceID uuid.UUID
	Position   int64
	Topic      string
	State      []byte
	Codec      string
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
