package kafka

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// ErrHeaders reports a consumed event record whose headers are missing or
// malformed.
var ErrHeaders = wire.ErrHeaders

// router maps notifications to Kafka records as the wire contract says.
type router struct {
	topics wire.Topics
	// unrouted is where items of no entity type go; "" skips them.
	unrouted string
	// maxBytes bounds the size of one record (the producer's batch limit);
	// 0 means no bound.
	maxBytes int
}

// recordOverhead is more than a record's framing inside a batch, plus the
// batch header, so that a record within maxBytes fits a batch of its own.
const recordOverhead = 128

// size estimates a record's size in a batch.
func size(rec *kgo.Record) int {
	n := recordOverhead + len(rec.Key) + len(rec.Value)
	for _, h := range rec.Headers {
		n += len(h.Key) + len(h.Value) + 10
	}
	return n
}

// route returns the record for n, or kind routeSkip and a nil record. A record
// too large for the producer goes to the dead letters without its value (the
// item stays in the store, found by its notification id), rather than failing
// the relay again and again.
func (rt *router) route(n *store.Notification) (*kgo.Record, routeKind) {
	rec, kind := rt.route1(n)
	if rec != nil && rt.maxBytes > 0 && size(rec) > rt.maxBytes {
		rec = rt.bad(n, fmt.Errorf("record of about %d bytes for %s is larger than the producer's limit of %d bytes", size(rec), rec.Topic, rt.maxBytes))
		rec.Value = nil
		kind = routeBad
	}
	return rec, kind
}

// routeKind says what route returned.
type routeKind int

const (
	routeEvent routeKind = iota
	routeResult
	routeDeadLetter
	routeCommand
	routeUnrouted
	// routeBad: an outbox item that does not decode, or an entity whose topic
	// name Kafka would refuse. It goes to the dead letters, so that bad data
	// never stops the relay.
	routeBad
	// routeSkip: an item of no entity type and no unrouted topic configured.
	routeSkip
)

func (rt *router) route1(n *store.Notification) (*kgo.Record, routeKind) {
	switch n.Topic {
	case wire.ResultItemTopic:
		res, err := wire.DecodeResult(n.State)
		if err != nil || res.EntityID == uuid.Nil {
			if err == nil {
				err = errors.New("result has no entity_id")
			}
			return rt.bad(n, err), routeBad
		}
		return &kgo.Record{
			Topic:   rt.topics.Results(),
			Key:     []byte(res.EntityID.String()),
			Value:   n.State,
			Headers: outboxHeaders(n),
		}, routeResult
	case wire.CommandItemTopic:
		c, err := wire.DecodeCommand(n.State, 0)
		if err != nil {
			return rt.bad(n, err), routeBad
		}
		return &kgo.Record{
			Topic:   rt.topics.Commands(),
			Key:     []byte(c.EntityID.String()),
			Value:   n.State,
			Headers: outboxHeaders(n),
		}, routeCommand
	case wire.DeadLetterItemTopic:
		d, err := wire.DecodeDeadLetter(n.State)
		if err != nil {
			return rt.bad(n, err), routeBad
		}
		hs := make([]kgo.RecordHeader, 0, len(d.Headers)+4)
		for _, h := range d.Headers {
			hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		hs = append(hs,
			kgo.RecordHeader{Key: wire.HeaderError, Value: []byte(d.Reason)},
			kgo.RecordHeader{Key: wire.HeaderSourceTopic, Value: []byte(d.SourceTopic)},
			kgo.RecordHeader{Key: wire.HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(d.SourcePartition), 10)},
			kgo.RecordHeader{Key: wire.HeaderSourceOffset, Value: strconv.AppendInt(nil, d.SourceOffset, 10)},
		)
		return &kgo.Record{Topic: rt.topics.DeadLetters(), Key: d.Key, Value: d.Value, Headers: hs}, routeDeadLetter
	}
	entity := events.EntityOf(n.Topic)
	var topic string
	kind := routeEvent
	switch {
	case entity != "":
		topic = rt.topics.Events(entity)
		if !ValidTopicName(topic) {
			return rt.bad(n, fmt.Errorf("entity type %q makes the invalid topic name %q", entity, topic)), routeBad
		}
	case rt.unrouted != "":
		topic, kind = rt.unrouted, routeUnrouted
	default:
		return nil, routeSkip
	}
	return &kgo.Record{Topic: topic, Key: []byte(n.SequenceID.String()), Value: n.State, Headers: eventHeaders(n)}, kind
}

// bad returns the dead-letter record of an item the relay cannot route: its
// state unchanged, keyed by its sequence id, with the event headers and why.
// Its source is the notification log: topic the item's topic, partition 0,
// offset the notification id.
func (rt *router) bad(n *store.Notification, err error) *kgo.Record {
	hs := append(eventHeaders(n),
		kgo.RecordHeader{Key: wire.HeaderError, Value: []byte("relay: " + err.Error())},
		kgo.RecordHeader{Key: wire.HeaderSourceTopic, Value: []byte(n.Topic)},
		kgo.RecordHeader{Key: wire.HeaderSourcePartition, Value: []byte("0")},
		kgo.RecordHeader{Key: wire.HeaderSourceOffset, Value: strconv.AppendInt(nil, n.ID, 10)},
	)
	return &kgo.Record{Topic: rt.topics.DeadLetters(), Key: []byte(n.SequenceID.String()), Value: n.State, Headers: hs}
}

// outboxHeaders returns the headers of a result or a command a process
// sent: notification-id and, if the item has one, traceparent.
func outboxHeaders(n *store.Notification) []kgo.RecordHeader {
	nid := kgo.RecordHeader{Key: wire.HeaderNotificationID, Value: strconv.AppendInt(nil, n.ID, 10)}
	if n.TraceParent == "" {
		return []kgo.RecordHeader{nid}
	}
	return []kgo.RecordHeader{nid, {Key: wire.HeaderTraceParent, Value: []byte(n.TraceParent)}}
}

func eventHeaders(n *store.Notification) []kgo.RecordHeader {
	hs := wire.EventHeaders(n.SequencedItem, n.ID)
	out := make([]kgo.RecordHeader, len(hs))
	for i, h := range hs {
		out[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	return out
}

// EventOf decodes a consumed event record (of a "<prefix>.events.<entity>"
// topic) back into the notification it was published from. The state is the
// record's value, not copied. A record with a missing or malformed
// sequence-id, position, topic or notification-id header fails with an error
// wrapping ErrHeaders; a missing codec header gives an empty codec.
func EventOf(rec wire.Record) (store.Notification, error) {
	it, id, err := wire.DecodeEventHeaders(rec.Headers)
	if err != nil {
		return store.Notification{}, err
	}
	it.State = rec.Value
	return store.Notification{ID: id, SequencedItem: it}, nil
}

// RecordOf converts a fetched franz-go record into the wire form that
// BatchHandlers get. It shares the record's key, value and header values.
func RecordOf(r *kgo.Record) wire.Record {
	var hs []wire.Header
	if len(r.Headers) > 0 {
		hs = make([]wire.Header, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = wire.Header{Key: h.Key, Value: h.Value}
		}
	}
	return wire.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp}
}
