package command

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// decide adds one record's outcome to b.
func (w *Writer) decide(ctx context.Context, b *batch, x *input, lookups map[uuid.UUID]lookup) error {
	if x.err != nil {
		x.traced(outcomeDeadLetter, 0, 0)
		return deadLetter(b, x, x.err.Error(), lookups[wire.DeadLetterID(x.rec.Topic, x.rec.Partition, x.rec.Offset)])
	}
	c := x.cmd.CommandID
	a, ok := b.results[c]
	if !ok {
		if lk := lookups[c]; lk.found {
			if lk.item.Topic != wire.ResultItemTopic {
				return w.collision(ctx, b, x, fmt.Sprintf("command_id %s names a stored sequence of topic %q", c, lk.item.Topic))
			}
			a = &answered{state: lk.item.State, codec: lk.item.Codec, next: lk.item.Position + 1}
			b.results[c] = a
		}
	}
	if a != nil { // a duplicate: publish the original result again
		b.items = append(b.items, store.SequencedItem{
			SequenceID: c, Position: a.next, Topic: wire.ResultItemTopic, State: a.state, Codec: a.codec, TraceParent: x.trace,
		})
		a.next++
		x.traced(outcomeDuplicate, 0, 0)
		b.stats.Duplicates++
		return nil
	}
	if t, ok := b.writtenBy[c]; ok {
		return w.collision(ctx, b, x, fmt.Sprintf("command_id %s is the id of a %s written in the same batch", c, t))
	}
	res, evItems, err := w.execute(ctx, b, x)
	if err != nil {
		return err
	}
	it, err := wire.ResultItem(res)
	if err != nil {
		return fmt.Errorf("encode result of %s: %w", c, err)
	}
	it.TraceParent = x.trace
	for i := range evItems {
		evItems[i].TraceParent = x.trace
	}
	x.traced(string(res.Status), res.Version, len(evItems))
	b.items = append(b.items, evItems...)
	b.items = append(b.items, it)
	b.results[c] = &answered{state: it.State, codec: it.Codec, next: 1}
	b.stats.add(res.Status)
	b.stats.Events += len(evItems)
	return nil
}

// execute decides one command's outcome. It returns an error only if the batch
// cannot go on.
func (w *Writer) execute(ctx context.Context, b *batch, x *input) (wire.Result, []store.SequencedItem, error) {
	cmd := x.cmd
	res := wire.Result{CommandID: cmd.CommandID, Entity: cmd.Entity, EntityID: cmd.EntityID}
	fail := func(s wire.Status, version int64, err error) (wire.Result, []store.SequencedItem, error) {
		res.Status, res.Version, res.Error = s, version, err.Error()
		return res, nil, nil
	}
	k, ok := w.kinds[cmd.Entity]
	if !ok {
		return fail(wire.StatusInvalid, 0, fmt.Errorf("%w %q", ErrUnknownEntity, cmd.Entity))
	}
	h, ok := k.commands[cmd.Type]
	if !ok {
		return fail(wire.StatusInvalid, 0, fmt.Errorf("%w %q for entity type %q", ErrUnknownCommand, cmd.Type, cmd.Entity))
	}
	if _, ok := b.results[cmd.EntityID]; ok {
		return fail(wire.StatusRejected, 0, fmt.Errorf("command: entity id %s is the id of a command result", cmd.EntityID))
	}
	if t, ok := b.writtenBy[cmd.EntityID]; ok && t != cmd.Entity {
		return fail(wire.StatusRejected, 0, fmt.Errorf("command: entity %s is a %s, not a %s", cmd.EntityID, t, cmd.Entity))
	}
	wk := b.working[aggKey{cmd.Entity, cmd.EntityID}]
	if wk.reject != nil {
		return fail(wire.StatusRejected, 0, wk.reject)
	}
	wk.read = true
	version := wk.agg.Base().Version()
	if ev := cmd.ExpectedVersion; ev != nil && *ev != version {
		return fail(wire.StatusConflict, version, fmt.Errorf("command: expected version %d, %s %s is at version %d", *ev, cmd.Entity, cmd.EntityID, version))
	}
	if wk.agg.Base().Discarded() {
		return fail(wire.StatusRejected, version, fmt.Errorf("%w: %s %s", events.ErrDiscarded, cmd.Entity, cmd.EntityID))
	}

	panicked, err := w.call(ctx, h, wk.agg, cmd)
	evs := wk.agg.Base().CollectEvents()
	var items []store.SequencedItem
	if err == nil {
		items, err = w.encode(k, wk, cmd, evs, x.at)
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return res, nil, ctxErr
		}
		if panicked || len(evs) > 0 || wk.agg.Base().Version() != version {
			if err := w.rebuild(ctx, wk); err != nil {
				return res, nil, err
			}
		}
		status := wire.StatusRejected
		if errors.Is(err, ErrInvalid) {
			status = wire.StatusInvalid
		}
		return fail(status, wk.agg.Base().Version(), err)
	}
	wk.applied = append(wk.applied, evs...)
	res.Status = wire.StatusAccepted
	res.Version = wk.agg.Base().Version()
	res.Positions = make([]int64, len(items))
	for i, it := range items {
		res.Positions[i] = it.Position
	}
	if len(items) > 0 {
		b.writtenBy[cmd.EntityID] = cmd.Entity
	}
	return res, items, nil
}

// call runs a handler, turning a panic into an error (and a log record with the
// stack, which the result does not carry).
func (w *Writer) call(ctx context.Context, h handler, agg events.Root, cmd wire.Command) (panicked bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked, err = true, fmt.Errorf("command: %s %s handler panicked: %v", cmd.Entity, cmd.Type, p)
			w.log.ErrorContext(ctx, "command: handler panicked; the command is rejected",
				logKeyCommand, cmd.CommandID, logKeyError, err, logKeyStack, string(debug.Stack()))
		}
	}()
	return false, h(ctx, agg, cmd)
}

// encode stamps a command's events with its time and maps them to items.
func (w *Writer) encode(k *writerKind, wk *working, cmd wire.Command, evs []events.Event, at time.Time) ([]store.SequencedItem, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	if id := wk.agg.Base().ID(); id != cmd.EntityID {
		return nil, fmt.Errorf("command: %s %s handler made events of %s, not of entity_id %s", cmd.Entity, cmd.Type, id, cmd.EntityID)
	}
	items := make([]store.SequencedItem, len(evs))
	for i, e := range evs {
		e.EventMeta().Timestamp = at
		it, err := w.mapper.ToItem(e)
		if err != nil {
			return nil, fmt.Errorf("command: %s %s: %w", cmd.Entity, cmd.Type, err)
		}
		if events.EntityOf(it.Topic) != k.name {
			return nil, fmt.Errorf("command: %s %s made an event of topic %q, not a topic of entity type %q", cmd.Entity, cmd.Type, it.Topic, k.name)
		}
		items[i] = it
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, fmt.Errorf("command: %s %s: %w", cmd.Entity, cmd.Type, err)
	}
	return items, nil
}

// collision dead-letters a command whose result cannot be stored because its
// command id names another sequence.
func (w *Writer) collision(ctx context.Context, b *batch, x *input, reason string) error {
	lk, err := w.lastItem(ctx, wire.DeadLetterID(x.rec.Topic, x.rec.Partition, x.rec.Offset))
	if err != nil {
		return err
	}
	x.traced(outcomeDeadLetter, 0, 0)
	return deadLetter(b, x, reason, lk)
}

// deadLetter adds the dead letter of x, unless lk shows it is stored already
// (the record was applied before its tracking was lost).
func deadLetter(b *batch, x *input, reason string, lk lookup) error {
	if lk.found {
		return nil
	}
	r := x.rec
	d := wire.DeadLetter{
		Reason: reason, SourceTopic: r.Topic, SourcePartition: r.Partition, SourceOffset: r.Offset,
		Key: r.Key, Value: r.Value, Headers: r.Headers,
	}
	it, err := wire.DeadLetterItem(d)
	if err == nil && len(it.State) > store.MaxStateSize {
		d.Reason += fmt.Sprintf(" (key, value and headers of %d bytes omitted: too large to store)", len(it.State))
		d.Key, d.Value, d.Headers = nil, nil, nil
		it, err = wire.DeadLetterItem(d)
	}
	if err != nil {
		return fmt.Errorf("encode dead letter of %s/%d/%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	it.TraceParent = x.trace
	b.items = append(b.items, it)
	b.stats.DeadLetters++
	b.dead = append(b.dead, deadNote{r, reason})
	return nil
}
