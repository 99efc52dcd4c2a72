package projection

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Log keys.
const (
	logKeyProjection = "projection"
	logKeyTopic      = "topic"
	logKeyPartition  = "partition"
	logKeyOffset     = "offset"
	logKeySequence   = "sequence_id"
	logKeyPosition   = "position"
	logKeyReason     = "reason"
	logKeyCount      = "count"
)

// PoisonAction says what a runner does with a poison event: a record whose
// headers do not parse, an item that does not decode, or one the policy fails
// with a permanent error.
type PoisonAction int

const (
	// PoisonDeadLetter records the poison event as a dead letter
	// (wire.DeadLetterItem) in the same transaction as the rest of the batch,
	// and goes on: the offsets advance, the event is not lost, and the relay
	// of the target store publishes it to the dead-letters topic.
	PoisonDeadLetter PoisonAction = iota
	// PoisonStop makes HandleBatch fail with a *PoisonError and commit nothing
	// of the batch. The consumer retries the batch, and so the projection
	// stops at the poison event until an operator intervenes.
	PoisonStop
)

func (a PoisonAction) String() string {
	switch a {
	case PoisonDeadLetter:
		return "dead-letter"
	case PoisonStop:
		return "stop"
	}
	return "PoisonAction(" + strconv.Itoa(int(a)) + ")"
}

// Config configures a Runner.
type Config struct {
	// Name is the projection's name: its tracking records are stored under it
	// in the target, and the Kafka consumer must be configured with the same
	// name. Required.
	Name string
	// Policy applies the events. Required. Unless Unguarded is set it must
	// implement Positions.
	Policy Policy
	// Mapper decodes items for a DecodingPolicy. Required for one, unused
	// otherwise.
	Mapper *events.Mapper
	// Source is the store the events came from. A gap (an item more than one
	// position past the last applied of its sequence) is filled by reading
	// the missing items from it, in the same transaction. Without a Source a
	// gap fails the batch with a *GapError. If Source is the target itself,
	// the missing items are read through the transaction.
	Source Source
	// Poison overrides the default, PoisonDeadLetter.
	Poison PoisonAction
	// Unguarded runs a policy that does not implement Positions, without the
	// per-sequence position guard: an event the relay published twice is
	// applied twice, and gaps go unnoticed. Offsets are still tracked, so
	// redelivered records are not applied again.
	Unguarded bool
	// Logger receives dead letters and repaired gaps, after they commit.
	// Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration a runner cannot work with.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("projection: Name is required")
	case c.Policy == nil:
		return errors.New("projection: Policy is required")
	case c.Poison != PoisonDeadLetter && c.Poison != PoisonStop:
		return fmt.Errorf("projection: unknown Poison action %d", int(c.Poison))
	}
	if _, ok := c.Policy.(Positions); !ok && !c.Unguarded {
		return fmt.Errorf("projection %q: policy %T does not implement Positions; set Unguarded to run it without the per-sequence position guard", c.Name, c.Policy)
	}
	if d, ok := c.Policy.(DecodingPolicy); ok && d.DecodesEvents() && c.Mapper == nil {
		return fmt.Errorf("projection %q: policy %T decodes events: Mapper is required", c.Name, c.Policy)
	}
	return nil
}

// Stats counts what a runner committed since it was built.
type Stats struct {
	Batches     int64 `json:"batches"`      // batches committed
	Records     int64 `json:"records"`      // records in those batches
	Applied     int64 `json:"applied"`      // items passed to the policy in committed transactions
	Duplicates  int64 `json:"duplicates"`   // items skipped by the position guard
	Repaired    int64 `json:"repaired"`     // items read from the source to fill gaps
	DeadLetters int64 `json:"dead_letters"` // poison events recorded as dead letters
	Retries     int64 `json:"retries"`      // transactions rolled back to take a poison event out
}

// A Runner applies batches of event records to a policy, exactly once in
// effect: see the package documentation. It is the handler a Kafka consumer
// calls (HandleBatch) and the tracking it resumes from (Tracking). Build it
// with NewRunner. It is safe for concurrent use; concurrent batches should
// cover different partitions.
type Runner struct {
	target Target
	cfg    Config
	guard  Positions // nil: unguarded
	decode bool
	// sourceIsTarget: gaps are read through the transaction.
	sourceIsTarget bool

	batches, records, applied, duplicates, repaired, dead, retries atomic.Int64
}

// NewRunner returns a runner that commits to target.
func NewRunner(target Target, cfg Config) (*Runner, error) {
	if target == nil {
		return nil, errors.New("projection: nil target")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{target: target, cfg: cfg}
	if !cfg.Unguarded {
		r.guard = cfg.Policy.(Positions)
	}
	if d, ok := cfg.Policy.(DecodingPolicy); ok {
		r.decode = d.DecodesEvents()
	}
	r.sourceIsTarget = cfg.Source != nil && same(cfg.Source, target)
	return r, nil
}

// same reports whether a and b are the same comparable value.
func same(a, b any) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta != nil && ta.Comparable() && a == b
}

// Name returns the projection's name.
func (r *Runner) Name() string { return r.cfg.Name }

// Stats returns what the runner committed so far.
func (r *Runner) Stats() Stats {
	return Stats{
		Batches: r.batches.Load(), Records: r.records.Load(), Applied: r.applied.Load(),
		Duplicates: r.duplicates.Load(), Repaired: r.repaired.Load(), DeadLetters: r.dead.Load(),
		Retries: r.retries.Load(),
	}
}

// Tracking returns the offset of the last record of (topic, partition) the
// runner committed, or -1 if none: the Kafka consumer resumes after it on
// partition assignment. name must be the runner's name.
func (r *Runner) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	if name != r.cfg.Name {
		return 0, fmt.Errorf("projection %q: asked for the tracking of %q: configure the consumer with the runner's name", r.cfg.Name, name)
	}
	return r.target.Tracking(ctx, name, topic, partition)
}

// entry is one record of a batch, or one item read from the source.
type entry struct {
	rec  *wire.Record // nil: read from the source to fill a gap
	item Item
	// err says why the entry cannot be applied: its headers do not parse
	// (parsed is false) or its item does not decode.
	err    error
	parsed bool
}

type seqPos struct {
	id  uuid.UUID
	pos int64
}

// batch is what HandleBatch works out once and every attempt shares.
type batch struct {
	entries  []entry
	tracking []store.Tracking // first then last offset of each partition, sorted
	ids      []uuid.UUID      // distinct sequence ids, sorted
	// poisoned holds items the policy failed permanently in earlier attempts.
	poisoned map[seqPos]error
	// single makes the next attempt apply items one at a time, to find the
	// one a permanent error without an ItemError came from.
	single bool
}

// outcome is what one attempt did, counted once it commits.
type outcome struct {
	applied, duplicates, repaired int
	dead                          []deadNote
}

type deadNote struct {
	e      *entry
	reason error
	stored bool // already recorded before (a redelivery or an earlier batch)
}

// poisonFound rolls back an attempt whose policy failed permanently on key.
type poisonFound struct {
	key seqPos
	err error
}

func (p *poisonFound) Error() string {
	return fmt.Sprintf("projection: position %d of %s is poison: %v", p.key.pos, p.key.id, p.err)
}

// bisect rolls back an attempt whose policy failed permanently on a group of
// items, to apply them one at a time.
type bisect struct{ err error }

func (b *bisect) Error() string { return "projection: permanent error in a batch: " + b.err.Error() }

// HandleBatch applies records, consumed from Kafka in offset order within
// each partition, in one transaction of the target: the policy's effect, the
// dead letters and the tracking of every (topic, partition) in records. It
// returns nil only when that transaction committed.
//
// An error means nothing was committed: a store.ErrTrackingConflict (another
// runner of the same name applied some of these offsets; seek past the
// tracking), a *GapError, a *PoisonError under PoisonStop, or a transient
// error of the store or the policy. Calling it again with the same records is
// always safe.
func (r *Runner) HandleBatch(ctx context.Context, records []wire.Record) error {
	if len(records) == 0 {
		return nil
	}
	b := r.prepare(records)
	// Each retry takes out one more poison item, or switches to applying one
	// item at a time (which then finds one), so the batch settles.
	for {
		var out outcome
		err := r.target.InTx(ctx, func(tx store.Tx) error {
			out = outcome{}
			return r.attempt(ctx, tx, b, &out)
		})
		if err == nil {
			r.committed(records, &out)
			return nil
		}
		var found *poisonFound
		var bis *bisect
		switch {
		case errors.As(err, &found):
			if r.cfg.Poison == PoisonStop {
				return r.poisonError(b, found)
			}
			if _, again := b.poisoned[found.key]; again {
				return fmt.Errorf("projection %q: %w (reported again after it was taken out)", r.cfg.Name, found)
			}
			b.poisoned[found.key] = found.err
			b.single = false
		case errors.As(err, &bis) && !b.single:
			b.single = true
		default:
			if bis != nil {
				return bis.err
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r.retries.Add(1)
	}
}

// prepare parses the records' headers, decodes their items if the policy
// wants events, and works out the tracking.
func (r *Runner) prepare(records []wire.Record) *batch {
	b := &batch{entries: make([]entry, len(records)), poisoned: map[seqPos]error{}}
	type tp struct {
		topic     string
		partition int32
	}
	offsets := map[tp][2]int64{}
	seen := map[uuid.UUID]struct{}{}
	for i := range records {
		rec := &records[i]
		e := &b.entries[i]
		e.rec = rec
		k := tp{rec.Topic, rec.Partition}
		if o, ok := offsets[k]; ok {
			offsets[k] = [2]int64{min(o[0], rec.Offset), max(o[1], rec.Offset)}
		} else {
			offsets[k] = [2]int64{rec.Offset, rec.Offset}
		}
		it, err := ItemOf(rec)
		if err != nil {
			e.err = err
			continue
		}
		e.item, e.parsed = it, true
		if _, ok := seen[it.SequenceID]; !ok {
			seen[it.SequenceID] = struct{}{}
			b.ids = append(b.ids, it.SequenceID)
		}
		if r.decode {
			e.item.Event, e.err = r.cfg.Mapper.FromItem(it.SequencedItem)
		}
	}
	slices.SortFunc(b.ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	keys := make([]tp, 0, len(offsets))
	for k := range offsets {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tp) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	for _, k := range keys {
		o := offsets[k]
		b.tracking = append(b.tracking, store.Tracking{Name: r.cfg.Name, Topic: k.topic, Partition: k.partition, Position: o[0]})
		if o[1] != o[0] {
			b.tracking = append(b.tracking, store.Tracking{Name: r.cfg.Name, Topic: k.topic, Partition: k.partition, Position: o[1]})
		}
	}
	return b
}

// attempt is one transaction's work. Tracking comes first, so that a zombie
// waits on (PostgreSQL) or fails at its first statement, before it reads the
// positions or applies anything.
func (r *Runner) attempt(ctx context.Context, tx store.Tx, b *batch, out *outcome) error {
	for _, t := range b.tracking {
		if err := tx.SetTracking(ctx, t); err != nil {
			return err
		}
	}
	var last map[uuid.UUID]int64
	if r.guard != nil && len(b.ids) > 0 {
		got, err := r.guard.LastPositions(ctx, tx, b.ids)
		if err != nil {
			return fmt.Errorf("projection %q: last positions: %w", r.cfg.Name, err)
		}
		last = make(map[uuid.UUID]int64, len(b.ids))
		for _, id := range b.ids {
			if p, ok := got[id]; ok {
				last[id] = p
			} else {
				last[id] = -1
			}
		}
	}
	var apply []*entry
	// take decides what happens to an entry that passed the guard.
	take := func(e *entry) error {
		err := e.err
		if err == nil {
			err = b.poisoned[seqPos{e.item.SequenceID, e.item.Position}]
		}
		if err == nil {
			apply = append(apply, e)
			return nil
		}
		if r.cfg.Poison == PoisonStop {
			return r.stopError(e, err)
		}
		out.dead = append(out.dead, deadNote{e: e, reason: err})
		return nil
	}
	for i := range b.entries {
		e := &b.entries[i]
		if !e.parsed {
			if err := take(e); err != nil {
				return err
			}
			continue
		}
		if last != nil {
			id, pos := e.item.SequenceID, e.item.Position
			l := last[id]
			if pos <= l {
				out.duplicates++
				continue
			}
			if pos > l+1 {
				filled, err := r.repair(ctx, tx, id, l, pos)
				if err != nil {
					return err
				}
				out.repaired += len(filled)
				for _, f := range filled {
					if err := take(f); err != nil {
						return err
					}
				}
			}
			last[id] = pos
		}
		if err := take(e); err != nil {
			return err
		}
	}
	out.applied = len(apply)
	if len(apply) > 0 {
		if err := r.applyItems(ctx, tx, b, apply); err != nil {
			return err
		}
	}
	return r.storeDeadLetters(ctx, tx, out.dead)
}

// applyItems calls the policy, on all items at once or, after a permanent
// error it could not attribute, one at a time.
func (r *Runner) applyItems(ctx context.Context, tx store.Tx, b *batch, apply []*entry) error {
	items := make([]Item, len(apply))
	for i, e := range apply {
		items[i] = e.item
	}
	key := func(i int) seqPos { return seqPos{items[i].SequenceID, items[i].Position} }
	if b.single {
		for i := range items {
			if err := r.cfg.Policy.Apply(ctx, tx, items[i:i+1]); err != nil {
				if IsPermanent(err) && ctx.Err() == nil {
					return &poisonFound{key(i), err}
				}
				return err
			}
		}
		return nil
	}
	err := r.cfg.Policy.Apply(ctx, tx, items)
	if err == nil {
		return nil
	}
	if !IsPermanent(err) || ctx.Err() != nil {
		return err
	}
	var ie *ItemError
	switch {
	case errors.As(err, &ie) && ie.Index >= 0 && ie.Index < len(items):
		return &poisonFound{key(ie.Index), err}
	case len(items) == 1:
		return &poisonFound{key(0), err}
	}
	return &bisect{err}
}

// repair reads positions last+1 to pos-1 of id from the source.
func (r *Runner) repair(ctx context.Context, tx store.Tx, id uuid.UUID, last, pos int64) ([]*entry, error) {
	if r.cfg.Source == nil {
		return nil, &GapError{SequenceID: id, Last: last, Position: pos, Reason: "no source store is configured to read the missing items from"}
	}
	after, upTo := last, pos-1
	q := store.Query{After: &after, UpTo: &upTo}
	var (
		items []store.SequencedItem
		err   error
	)
	if r.sourceIsTarget {
		items, err = tx.SelectEvents(ctx, id, q)
	} else {
		items, err = r.cfg.Source.SelectEvents(ctx, id, q)
	}
	if err != nil {
		return nil, fmt.Errorf("projection %q: read positions %d to %d of %s from the source: %w", r.cfg.Name, last+1, pos-1, id, err)
	}
	want := pos - 1 - last
	for i, it := range items {
		if it.Position != last+1+int64(i) {
			items = items[:i]
			break
		}
	}
	if int64(len(items)) != want {
		return nil, &GapError{SequenceID: id, Last: last, Position: pos,
			Reason: fmt.Sprintf("the source returned %d of the %d missing items in order", len(items), want)}
	}
	out := make([]*entry, len(items))
	for i, it := range items {
		e := &entry{item: Item{SequencedItem: it}, parsed: true}
		if r.decode {
			e.item.Event, e.err = r.cfg.Mapper.FromItem(it)
		}
		out[i] = e
	}
	return out, nil
}

// storeDeadLetters inserts the dead letters of an attempt. A dead letter whose
// id is taken is already stored (its record was dead-lettered before), and is
// not stored again.
func (r *Runner) storeDeadLetters(ctx context.Context, tx store.Tx, dead []deadNote) error {
	if len(dead) == 0 {
		return nil
	}
	items := make([]store.SequencedItem, len(dead))
	for i := range dead {
		it, err := r.deadLetterItem(dead[i].e, dead[i].reason)
		if err != nil {
			return err
		}
		items[i] = it
	}
	_, err := tx.InsertEvents(ctx, items)
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("projection %q: store dead letters: %w", r.cfg.Name, err)
	}
	// Some are stored already (or one item appears twice): one at a time.
	for i := range items {
		_, err := tx.InsertEvents(ctx, items[i:i+1])
		var ce *store.ConflictError
		switch {
		case err == nil:
		case errors.As(err, &ce) && ce.SequenceID == items[i].SequenceID:
			dead[i].stored = true
		default:
			return fmt.Errorf("projection %q: store dead letter: %w", r.cfg.Name, err)
		}
	}
	return nil
}

// deadLetterItem returns the outbox item of a poison entry: its record
// unchanged, or, for an item read from the source, the item as an event
// record would carry it, with source topic the sequence id, partition -1 and
// offset the position (so that it is stored once however often it is read).
func (r *Runner) deadLetterItem(e *entry, reason error) (store.SequencedItem, error) {
	d := wire.DeadLetter{Reason: "projection " + r.cfg.Name + ": " + reason.Error()}
	if e.rec != nil {
		d.SourceTopic, d.SourcePartition, d.SourceOffset = e.rec.Topic, e.rec.Partition, e.rec.Offset
		d.Key, d.Value, d.Headers = e.rec.Key, e.rec.Value, e.rec.Headers
	} else {
		it := &e.item
		d.Reason += " (read from the source store to fill a gap)"
		d.SourceTopic, d.SourcePartition, d.SourceOffset = it.SequenceID.String(), -1, it.Position
		d.Key, d.Value, d.Headers = []byte(it.SequenceID.String()), it.State, EventHeaders(it.SequencedItem, -1)
	}
	it, err := wire.DeadLetterItem(d)
	if err == nil && len(it.State) > store.MaxStateSize {
		d.Reason += fmt.Sprintf(" (key, value and headers of %d bytes omitted: too large to store)", len(it.State))
		d.Key, d.Value, d.Headers = nil, nil, nil
		it, err = wire.DeadLetterItem(d)
	}
	if err != nil {
		return store.SequencedItem{}, fmt.Errorf("projection %q: encode dead letter: %w", r.cfg.Name, err)
	}
	return it, nil
}

func (r *Runner) stopError(e *entry, err error) error {
	pe := &PoisonError{Err: err, Partition: -1}
	if e.rec != nil {
		pe.Topic, pe.Partition, pe.Offset = e.rec.Topic, e.rec.Partition, e.rec.Offset
	}
	if e.parsed {
		pe.SequenceID, pe.Position = e.item.SequenceID, e.item.Position
	}
	return pe
}

// poisonError returns the *PoisonError of a policy's permanent failure.
func (r *Runner) poisonError(b *batch, f *poisonFound) error {
	for i := range b.entries {
		e := &b.entries[i]
		if e.parsed && e.item.SequenceID == f.key.id && e.item.Position == f.key.pos {
			return r.stopError(e, f.err)
		}
	}
	return r.stopError(&entry{item: Item{SequencedItem: store.SequencedItem{SequenceID: f.key.id, Position: f.key.pos}}, parsed: true}, f.err)
}

func (r *Runner) committed(records []wire.Record, out *outcome) {
	r.batches.Add(1)
	r.records.Add(int64(len(records)))
	r.applied.Add(int64(out.applied))
	r.duplicates.Add(int64(out.duplicates))
	r.repaired.Add(int64(out.repaired))
	log := r.cfg.Logger
	if out.repaired > 0 {
		log.Info("projection: filled gaps from the source store", logKeyProjection, r.cfg.Name, logKeyCount, out.repaired)
	}
	for _, d := range out.dead {
		if d.stored {
			continue
		}
		r.dead.Add(1)
		attrs := []any{logKeyProjection, r.cfg.Name, logKeyReason, d.reason.Error()}
		if d.e.rec != nil {
			attrs = append(attrs, logKeyTopic, d.e.rec.Topic, logKeyPartition, d.e.rec.Partition, logKeyOffset, d.e.rec.Offset)
		}
		if d.e.parsed {
			attrs = append(attrs, logKeySequence, d.e.item.SequenceID.String(), logKeyPosition, d.e.item.Position)
		}
		log.Warn("projection: poison event dead-lettered", attrs...)
	}
}

// ItemOf reads the item an event record carries: sequence id, position,
// topic, notification id and codec from its headers (package wire), state from
// its value (not copied). A record with a missing or malformed sequence-id,
// position, topic or notification-id header fails with an error wrapping
// ErrHeaders; a missing codec header gives an empty codec, which means JSON.
func ItemOf(rec *wire.Record) (Item, error) {
	it, id, err := wire.DecodeEventHeaders(rec.Headers)
	if err != nil {
		return Item{}, err
	}
	it.State = rec.Value
	return Item{SequencedItem: it, NotificationID: id, Record: rec}, nil
}

// EventHeaders returns the headers of the event record of it, as the relay
// writes them (package wire); a negative notification id is left out.
func EventHeaders(it store.SequencedItem, notificationID int64) []wire.Header {
	return wire.EventHeaders(it, notificationID)
}

// RecordOf returns the event record the relay publishes for n, at the given
// Kafka coordinates: key the sequence id, value the state, headers per package
// wire. Tests and tools that feed a Runner without Kafka use it.
func RecordOf(n store.Notification, topic string, partition int32, offset int64) wire.Record {
	return wire.Record{
		Topic: topic, Partition: partition, Offset: offset,
		Key: []byte(n.SequenceID.String()), Value: n.State,
		Headers: EventHeaders(n.SequencedItem, n.ID),
	}
}
