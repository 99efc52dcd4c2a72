package command

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// bypassAll in the bypass set of a batch makes it load every aggregate from the
// store, past the cache.
var bypassAll = uuid.Nil

// input is one record of a batch, decoded.
type input struct {
	rec *wire.Record
	cmd wire.Command
	err error     // why the record is not a usable envelope
	at  time.Time // the time its events are stamped with
	dup bool      // the same (topic, partition, offset) came earlier in the batch
	// trace is the trace context its items carry: the record's traceparent
	// header or, when the writer traces, that of the record's span.
	trace string
	// span, when the writer traces, is the record's span and the outcome
	// the last attempt decided for it.
	span *cmdSpan
}

type partitionKey struct {
	topic     string
	partition int32
}

type offsetKey struct {
	partitionKey
	offset int64
}

func (w *Writer) decode(records []wire.Record) []input {
	now := w.cfg.Now().UTC()
	in := make([]input, len(records))
	seen := make(map[offsetKey]struct{}, len(records))
	for i := range records {
		r := &records[i]
		x := &in[i]
		x.rec = r
		x.at = r.Timestamp.UTC()
		if r.Timestamp.IsZero() {
			x.at = now
		}
		k := offsetKey{partitionKey{r.Topic, r.Partition}, r.Offset}
		if _, dup := seen[k]; dup {
			x.dup = true
			continue
		}
		seen[k] = struct{}{}
		x.trace = wire.TraceParentOf(r.Headers)
		x.cmd, x.err = wire.DecodeCommand(r.Value, w.cfg.MaxCommandSize)
		if x.err == nil && x.cmd.CommandID == x.cmd.EntityID {
			x.err = fmt.Errorf("%w: command_id equals entity_id (the result would share the entity's sequence)", wire.ErrEnvelope)
		}
		if x.err == nil && w.cfg.Admit != nil {
			x.err = w.cfg.Admit(r, &x.cmd)
		}
	}
	return in
}

// working is an aggregate a batch works on.
type working struct {
	key     aggKey
	kind    *writerKind
	agg     events.Root
	base    int64          // version when loaded
	applied []events.Event // events of the batch's accepted commands, in order
	reject  error          // if set, every command for the aggregate is rejected
	read    bool           // a command's outcome depended on its state
}

// answered is a command id with a result: the original result's item state.
type answered struct {
	state []byte
	codec string
	next  int64 // position of the next copy
}

// lookup is the last item of a sequence, if any.
type lookup struct {
	found bool
	item  store.SequencedItem
}

// batch is what one attempt at a batch will commit.
type batch struct {
	tracking  []store.Tracking
	items     []store.SequencedItem
	working   map[aggKey]*working
	results   map[uuid.UUID]*answered // command ids answered, stored or in this batch
	writtenBy map[uuid.UUID]string    // entity ids with events in this batch -> entity type
	validate  []*working
	dead      []deadNote // dead letters, logged once the batch commits
	stats     BatchStats
	// remembered reports that the tracking of a partition was not read but
	// remembered (see Writer.remembered).
	remembered bool
	// keys release the data keys the plan prepared (events.Mapper.PrepareKeys).
	keys []func()
}

// releaseKeys releases the data keys the plan holds: once it is decided, its
// items are encoded.
func (b *batch) releaseKeys() {
	for _, release := range b.keys {
		release()
	}
	b.keys = nil
}

type deadNote struct {
	rec    *wire.Record
	reason string
}

func (b *batch) empty() bool { return len(b.tracking) == 0 && len(b.items) == 0 }

// plan reads what the batch needs and decides every record's outcome. With
// readTracking it reads the tracking of every partition rather than use the
// one it remembers; with readResults it reads the result sequences of its
// commands and the sequences of its dead letters (see prefetch).
func (w *Writer) plan(ctx context.Context, in []input, bypass map[uuid.UUID]bool, readTracking, readResults bool) (*batch, error) {
	b := &batch{
		working:   make(map[aggKey]*working),
		results:   make(map[uuid.UUID]*answered),
		writtenBy: make(map[uuid.UUID]string),
	}
	for i := range in {
		if s := in[i].span; s != nil {
			s.outcome = "" // what an earlier attempt decided
		}
	}
	t0 := time.Now()
	live, err := w.skipApplied(ctx, b, in, readTracking)
	if err != nil || len(live) == 0 {
		b.stats.Read = time.Since(t0)
		return b, err
	}
	b.items = make([]store.SequencedItem, 0, 2*len(live))
	defer b.releaseKeys()
	lookups, err := w.prefetch(ctx, b, live, bypass, readResults)
	if err == nil {
		err = w.prepareKeys(ctx, b)
	}
	t1 := time.Now()
	b.stats.Read = t1.Sub(t0)
	if err != nil {
		return b, err
	}
	for _, x := range live {
		if err := w.decide(ctx, b, x, lookups); err != nil {
			b.stats.Decide = time.Since(t1)
			return b, err
		}
	}
	b.stats.Decide = time.Since(t1)
	for _, wk := range b.working {
		if wk.read && wk.reject == nil && len(wk.applied) == 0 {
			b.validate = append(b.validate, wk)
		}
	}
	return b, nil
}

// prepareKeys makes ready, under ctx, the data keys of the aggregates the
// batch may append to (events.Mapper.PrepareKeys, creating those that have
// none), so that encoding their events does no I/O. An aggregate that
// cannot take events (rejected, discarded) needs none. With no per-entity
// cipher it does nothing.
func (w *Writer) prepareKeys(ctx context.Context, b *batch) error {
	ids := make([]uuid.UUID, 0, len(b.working))
	for _, wk := range b.working {
		if wk.reject == nil && wk.agg != nil && !wk.agg.Base().Discarded() {
			ids = append(ids, wk.key.id)
		}
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	release, err := w.mapper.PrepareKeys(ctx, ids, true)
	b.keys = append(b.keys, release)
	if err != nil {
		return fmt.Errorf("prepare the data keys of %d entities: %w", len(ids), err)
	}
	return nil
}
