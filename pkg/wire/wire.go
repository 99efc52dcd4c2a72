// Package wire is eventlog's wire contract: what other programs rely on. It names
// the Kafka topics, defines the command envelope and the command result, the
// headers of event records, and the outbox items through which results and dead
// letters reach Kafka. Change it only with a version bump.
//
// Everything eventlog sends to Kafka is first written to the store's notification
// log in the same transaction as the state change it reports; the relay publishes
// the log. Entity events go to "<prefix>.events.<entity>", command results
// (items of topic ResultItemTopic) to "<prefix>.command-results" and dead letters
// (items of topic DeadLetterItemTopic) to "<prefix>.dead-letters". A crash
// between the commit and the publish therefore loses nothing.
//
// Records may carry a W3C traceparent header (HeaderTraceParent), which
// ParseTraceParent and TraceParent read without a tracing library: a
// command's is stored with what it produced and sent on with it.
//
// The package does no I/O.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// DefaultPrefix is the default topic prefix.
const DefaultPrefix = "eventlog"

// MaxCommandSize is the default bound on an encoded command envelope.
const MaxCommandSize = 1 << 20

// Topics names the Kafka topics under one prefix.
type Topics struct {
	Prefix string
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$`)

// Validate reports a prefix that cannot form Kafka topic names.
func (t Topics) Validate() error {
	if !prefixRE.MatchString(t.Prefix) {
		return fmt.Errorf("wire: topic prefix %q must be 1 to 101 of letters, digits, '.', '_', '-'", t.Prefix)
	}
	return nil
}

// Commands is the topic commands arrive on.
func (t Topics) Commands() string { return t.Prefix + ".commands" }

// Results is the topic command results are published to.
func (t Topics) Results() string { return t.Prefix + ".command-results" }

// DeadLetters is the topic of records that could not be parsed or processed.
func (t Topics) DeadLetters() string { return t.Prefix + ".dead-letters" }

// Events is the topic the events of one entity type are published to.
func (t Topics) Events(entity string) string { return t.Prefix + ".events." + entity }

// Headers of event records.
const (
	HeaderSequenceID     = "sequence-id"
	HeaderPosition       = "position"
	HeaderTopic          = "topic"
	HeaderNotificationID = "notification-id"
	HeaderCodec          = "codec"
	// HeaderTraceParent is the W3C trace context (a traceparent header,
	// https://www.w3.org/TR/trace-context/) that commands may carry and that
	// events, results and the commands process applications send carry on:
	// see TraceParentOf.
	HeaderTraceParent = "traceparent"
)

// Headers of dead-letter records.
const (
	HeaderError           = "error"
	HeaderSourceTopic     = "source-topic"
	HeaderSourcePartition = "source-partition"
	HeaderSourceOffset    = "source-offset"
)

// Built-in command types of the generic entity.
const (
	TypeCreate  = "create"
	TypeUpdate  = "update"
	TypeDiscard = "discard"
)

// A Command is the envelope of a command record. Its key on Kafka is EntityID.
type Command struct {
	CommandID uuid.UUID `json:"command_id"`
	Type      string    `json:"type"`
	Entity    string    `json:"entity"`
	EntityID  uuid.UUID `json:"entity_id"`
	// ExpectedVersion, if set, is the version the entity must be at (0: it must
	// not exist yet) for the command to apply; otherwise the result is a conflict.
	ExpectedVersion *int64          `json:"expected_version,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
}

// ErrEnvelope reports a record that is not a command envelope. Such a record goes
// to the dead-letter topic.
var ErrEnvelope = errors.New("wire: not a command envelope")

// DecodeCommand parses and checks an envelope. A record of more than maxSize bytes
// (MaxCommandSize if maxSize <= 0), one that is not a JSON object, or one without a
// command id, type, entity or entity id fails with an error wrapping ErrEnvelope.
// Unknown fields are ignored, so newer producers can add some.
func DecodeCommand(b []byte, maxSize int) (Command, error) {
	if maxSize <= 0 {
		maxSize = MaxCommandSize
	}
	var c Command
	if len(b) > maxSize {
		return c, fmt.Errorf("%w: %d bytes, more than the limit of %d", ErrEnvelope, len(b), maxSize)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrEnvelope, fieldError(b, err))
	}
	switch {
	case c.CommandID == uuid.Nil:
		return c, fmt.Errorf("%w: command_id is missing", ErrEnvelope)
	case c.Type == "":
		return c, fmt.Errorf("%w: type is missing", ErrEnvelope)
	case c.Entity == "":
		return c, fmt.Errorf("%w: entity is missing", ErrEnvelope)
	case c.EntityID == uuid.Nil:
		return c, fmt.Errorf("%w: entity_id is missing", ErrEnvelope)
	case c.ExpectedVersion != nil && *c.ExpectedVersion < 0:
		return c, fmt.Errorf("%w: expected_version %d is negative", ErrEnvelope, *c.ExpectedVersion)
	}
	if len(c.Data) > 0 && !bytes.Equal(c.Data, []byte("null")) {
		if t := firstByte(c.Data); t != '{' {
			return c, fmt.Errorf("%w: data must be a JSON object", ErrEnvelope)
		}
	}
	return c, nil
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// Status is the outcome of a command.
type Status string

// Statuses.
const (
	// StatusAccepted: the command applied; its events are stored.
	StatusAccepted Status = "accepted"
	// StatusRejected: the command was refused by the entity (for example an
	// update of a discarded entity); nothing changed.
	StatusRejected Status = "rejected"
	// StatusConflict: expected_version did not match; nothing changed.
	StatusConflict Status = "conflict"
	// StatusInvalid: the envelope parsed but cannot apply (unknown entity type or
	// command type, malformed data); nothing changed.
	StatusInvalid Status = "invalid"
)

// A Result is the one result of a command. Version is the entity's version after
// the command (for rejected and conflicting commands, its current version; 0 if
// it does not exist). Positions are those of the events the command stored.
type Result struct {
	CommandID uuid.UUID `json:"command_id"`
	Entity    string    `json:"entity"`
	EntityID  uuid.UUID `json:"entity_id"`
	Status    Status    `json:"status"`
	Version   int64     `json:"version"`
	Error     string    `json:"error,omitempty"`
	Positions []int64   `json:"positions"`
}

// Outbox item topics. They are not entity topics: "eventlog" is reserved and is
// never an entity type.
const (
	ResultItemTopic     = "eventlog.CommandResult"
	DeadLetterItemTopic = "eventlog.DeadLetter"
	// CommandItemTopic is the topic of a command a process application
	// emitted; the relay produces it to the commands topic.
	CommandItemTopic = "eventlog.Command"
)

// ResultItem returns the outbox item of r. Its sequence id is the command id, at
// position 0, so storing a second result for the same command conflicts: the
// store itself deduplicates commands.
func ResultItem(r Result) (events.SequencedItem, error) {
	if r.Positions == nil {
		r.Positions = []int64{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return events.SequencedItem{}, err
	}
	return events.SequencedItem{SequenceID: r.CommandID, Position: 0, Topic: ResultItemTopic, State: b, Codec: events.CodecJSON}, nil
}

// CommandItem returns the outbox item of a command to send: the relay
// produces its state, the command's envelope, to the commands topic keyed by
// the entity id. Its sequence id is CommandItemID(c.CommandID), at position
// 0, so the same command stored twice conflicts. (The command id itself is
// the sequence of the command's result.)
func CommandItem(c Command) (events.SequencedItem, error) {
	if c.CommandID == uuid.Nil || c.EntityID == uuid.Nil || c.Type == "" || c.Entity == "" {
		return events.SequencedItem{}, fmt.Errorf("%w: a command to send needs command_id, type, entity and entity_id", ErrEnvelope)
	}
	if c.CommandID == c.EntityID {
		return events.SequencedItem{}, fmt.Errorf("%w: command_id equals entity_id", ErrEnvelope)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return events.SequencedItem{}, err
	}
	return events.SequencedItem{SequenceID: CommandItemID(c.CommandID), Position: 0, Topic: CommandItemTopic, State: b, Codec: events.CodecJSON}, nil
}

// commandItemSpace is the UUID namespace of CommandItemID.
var commandItemSpace = uuid.MustParse("5c0f9a7e-6b1d-4e08-9d2a-7f3e1b4c8a61")

// CommandItemID is the sequence id of the outbox item of the command called
// commandID.
func CommandItemID(commandID uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(commandItemSpace, commandID[:])
}

// commandSpace is the UUID namespace of the command ids CausedCommandID
// derives.
var commandSpace = uuid.MustParse("0b7e3c52-5d0a-4f5e-8f3b-2a9c1e6d4b70")

// CausedCommandID is the id of the n-th command (from 0) that the process
// called process sends in reaction to the event at position of sequence:
// always the same for the same cause, so that a command sent again after a
// redelivery, a retry or a replay is a duplicate the writer answers once.
func CausedCommandID(process string, sequence uuid.UUID, position int64, n int) uuid.UUID {
	return uuid.NewSHA1(commandSpace, []byte(process+"/"+sequence.String()+"/"+strconv.FormatInt(position, 10)+"/"+strconv.Itoa(n)))
}

// DecodeResult parses the state of a result item, or a record of the results topic.
func DecodeResult(b []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("wire: result: %w", err)
	}
	return r, nil
}

// A DeadLetter is a record that could not be parsed or processed, kept unchanged,
// with why and where it came from.
type DeadLetter struct {
	Reason          string   `json:"reason"`
	SourceTopic     string   `json:"source_topic"`
	SourcePartition int32    `json:"source_partition"`
	SourceOffset    int64    `json:"source_offset"`
	Key             []byte   `json:"key"`
	Value           []byte   `json:"value"`
	Headers         []Header `json:"headers,omitempty"`
}

// A Header is a Kafka record header.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// deadLetterSpace is the UUID namespace of dead-letter ids.
var deadLetterSpace = uuid.MustParse("6f1c1f57-36b4-4c4e-9a0c-8f0a1df4d7a1")

// DeadLetterID is the sequence id of the dead letter of one source record: the
// same record dead-lettered twice (after a crash and redelivery) conflicts, so it
// is stored and published once.
func DeadLetterID(topic string, partition int32, offset int64) uuid.UUID {
	return uuid.NewSHA1(deadLetterSpace, []byte(topic+"/"+strconv.Itoa(int(partition))+"/"+strconv.FormatInt(offset, 10)))
}

// DeadLetterItem returns the outbox item of d.
func DeadLetterItem(d DeadLetter) (events.SequencedItem, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return events.SequencedItem{}, err
	}
	return events.SequencedItem{
		SequenceID: DeadLetterID(d.SourceTopic, d.SourcePartition, d.SourceOffset),
		Topic:      DeadLetterItemTopic, State: b, Codec: events.CodecJSON,
	}, nil
}

// DecodeDeadLetter parses the state of a dead-letter item.
func DecodeDeadLetter(b []byte) (DeadLetter, error) {
	var d DeadLetter
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("wire: dead letter: %w", err)
	}
	return d, nil
}

// fieldError names the field of an envelope that did not decode, where the
// decoder's error does not (a UUID's "invalid UUID length: 10").
func fieldError(b []byte, err error) error {
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil {
		return err
	}
	for _, name := range []string{"command_id", "entity_id"} {
		if raw, ok := fields[name]; ok {
			var id uuid.UUID
			if ferr := json.Unmarshal(raw, &id); ferr != nil {
				return fmt.Errorf("%s: %v", name, ferr)
			}
		}
	}
	return err
}

// A Record is a consumed Kafka record, as the Kafka adapter hands it to the code
// that processes it (the writer, a projection) without either importing the other.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	// Timestamp is the record's Kafka timestamp (the zero time if unknown). The
	// writer stamps the events of a command with it, so that processing the same
	// record again produces the same items.
	Timestamp time.Time
}

// ErrHeaders reports an event record whose headers are missing or malformed.
var ErrHeaders = errors.New("wire: bad event record headers")

// EventHeaders returns the headers of the event record of an item: sequence-id,
// position, topic, notification-id (left out if notificationID is negative),
// codec and, if the item has one, traceparent.
func EventHeaders(it events.SequencedItem, notificationID int64) []Header {
	n := 5
	if it.TraceParent != "" {
		n++
	}
	hs := make([]Header, 0, n)
	hs = append(hs,
		Header{Key: HeaderSequenceID, Value: []byte(it.SequenceID.String())},
		Header{Key: HeaderPosition, Value: strconv.AppendInt(nil, it.Position, 10)},
		Header{Key: HeaderTopic, Value: []byte(it.Topic)},
	)
	if notificationID >= 0 {
		hs = append(hs, Header{Key: HeaderNotificationID, Value: strconv.AppendInt(nil, notificationID, 10)})
	}
	hs = append(hs, Header{Key: HeaderCodec, Value: []byte(it.Codec)})
	if it.TraceParent != "" {
		hs = append(hs, Header{Key: HeaderTraceParent, Value: []byte(it.TraceParent)})
	}
	return hs
}

// DecodeEventHeaders reads the item an event record carries from its headers
// (everything but the state, which is the record's value) and its notification
// id. A missing or malformed sequence-id, position, topic or notification-id
// header fails with an error wrapping ErrHeaders; a missing codec header gives
// an empty codec, which means JSON. A well-formed traceparent header sets the
// item's TraceParent (see TraceParent); a malformed one is ignored.
func DecodeEventHeaders(hs []Header) (it events.SequencedItem, notificationID int64, err error) {
	var haveSeq, havePos, haveTopic, haveNID bool
	for _, h := range hs {
		switch h.Key {
		case HeaderSequenceID:
			if it.SequenceID, err = uuid.ParseBytes(h.Value); err != nil || it.SequenceID == uuid.Nil {
				return it, 0, fmt.Errorf("%w: %s header %q is not a sequence id", ErrHeaders, h.Key, h.Value)
			}
			haveSeq = true
		case HeaderPosition:
			if it.Position, err = strconv.ParseInt(string(h.Value), 10, 64); err != nil || it.Position < 0 {
				return it, 0, fmt.Errorf("%w: %s header %q is not a position", ErrHeaders, h.Key, h.Value)
			}
			havePos = true
		case HeaderTopic:
			if !events.ValidTopic(string(h.Value)) {
				return it, 0, fmt.Errorf("%w: %s header %q is not a topic", ErrHeaders, h.Key, h.Value)
			}
			it.Topic, haveTopic = string(h.Value), true
		case HeaderNotificationID:
			if notificationID, err = strconv.ParseInt(string(h.Value), 10, 64); err != nil {
				return it, 0, fmt.Errorf("%w: %s header %q is not a notification id", ErrHeaders, h.Key, h.Value)
			}
			haveNID = true
		case HeaderCodec:
			it.Codec = string(h.Value)
		case HeaderTraceParent:
			it.TraceParent = TraceParent(h.Value)
		}
	}
	for _, missing := range []struct {
		have bool
		name string
	}{{haveSeq, HeaderSequenceID}, {havePos, HeaderPosition}, {haveTopic, HeaderTopic}, {haveNID, HeaderNotificationID}} {
		if !missing.have {
			return it, 0, fmt.Errorf("%w: no %s header", ErrHeaders, missing.name)
		}
	}
	return it, notificationID, nil
}
