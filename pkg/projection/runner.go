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
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/tracing"
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
	logKeyEntity     = "entity"
)

// PoisonAction says what a runner does with a poison event: a record whose
// headers do not parse, an item that does not decode, or one the policy fails
// with a permanent error (or with a transient one, attributed to it, more
// often than Config.TransientRetries allows).
type PoisonAction int

const (
	// PoisonPark (the default) parks the poison event's sequence for the
	// projection: the event and every later event of the same sequence are
	// stored in the target, in order, in the same transaction as the rest of
	// the batch, and not applied, while the other sequences go on. An
	// operator retries them (Runner.Retry: applied in order, once) or skips
	// them (Runner.Skip: recorded with a reason). The poison event is also
	// recorded once as a dead letter (wire.DeadLetterItem), which the
	// target's relay publishes to the dead-letters topic. A record whose
	// headers do not parse names no sequence: it is only dead-lettered.
	PoisonPark PoisonAction = iota
	// PoisonDeadLetter records the poison event as a dead letter
	// (wire.DeadLetterItem) in the same transaction as the rest of the batch,
	// and goes on: the offsets advance and the event is not lost, but the
	// later events of its sequence are applied without it. Use it only for
	// policies whose effect does not depend on every event of a sequence (a
	// counter, an audit copy that may have holes).
	PoisonDeadLetter
	// PoisonStop makes HandleBatch fail with a *PoisonError and commit nothing
	// of the batch. The consumer retries the batch, and so the projection
	// stops at the poison event until an operator intervenes.
	PoisonStop
)

func (a PoisonAction) String() string {
	switch a {
	case PoisonPark:
		return "park"
	case PoisonDeadLetter:
		return "dead-letter"
	case PoisonStop:
		return "stop"
	}
	return "PoisonAction(" + strconv.Itoa(int(a)) + ")"
}

// Defaults of Config.
const (
	DefaultTransientRetries = 3
	DefaultRetryBackoff     = 100 * time.Millisecond
	maxRetryBackoff         = 5 * time.Second
)

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
	// Poison overrides the default, PoisonPark. Parking needs a target whose
	// transactions implement store.ParkTx (every backend's do).
	Poison PoisonAction
	// TransientRetries is how many times a batch is tried again, within one
	// HandleBatch call and with back-off, when the policy fails one of its
	// items with a transient error it attributes to that item (an *ItemError
	// whose error is not Permanent), before that item is taken as poison
	// (default DefaultTransientRetries; negative: never, the error is
	// returned and the consumer retries the batch for ever). A transient
	// error the policy does not attribute (the database is down) is always
	// returned, never made poison.
	TransientRetries int
	// RetryBackoff is the wait before the first of those tries, doubled for
	// each next one up to 5s (default DefaultRetryBackoff).
	RetryBackoff time.Duration
	// Unguarded runs a policy that does not implement Positions, without the
	// per-sequence position guard: an event the relay published twice is
	// applied twice, and gaps go unnoticed. Offsets are still tracked, so
	// redelivered records are not applied again.
	Unguarded bool
	// Logger receives parked sequences (once each), dead letters, retries,
	// skips and repaired gaps, after they commit. Default: discard.
	Logger *slog.Logger
	// TracerProvider, if set, traces HandleBatch (see package tracing): a
	// span for the batch, one for each transaction tried, and an apply span
	// for each record with a traceparent header, which continues that trace
	// and ends when the batch committed (or failed); the policy then sees
	// the apply span's context as the item's TraceParent, so that what it
	// sends (sqlmodel's Tx.Emit) continues the trace. The default, nil,
	// starts no span: items carry their records' traceparent as it came.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TransientRetries == 0 {
		c.TransientRetries = DefaultTransientRetries
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
}

// Validate reports a configuration a runner cannot work with.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("projection: Name is required")
	case c.Policy == nil:
		return errors.New("projection: Policy is required")
	case c.Poison != PoisonPark && c.Poison != PoisonDeadLetter && c.Poison != PoisonStop:
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

// Stats counts what a runner committed since it was built, and how much is
// parked.
type Stats struct {
	Batches     int64 `json:"batches"`      // batches committed
	Records     int64 `json:"records"`      // records in those batches
	Applied     int64 `json:"applied"`      // items passed to the policy in committed transactions
	Duplicates  int64 `json:"duplicates"`   // items skipped by the position guard
	Repaired    int64 `json:"repaired"`     // items read from the source to fill gaps
	DeadLetters int64 `json:"dead_letters"` // poison events recorded as dead letters
	Retries     int64 `json:"retries"`      // transactions rolled back to take a poison event out

	Parked        int64 `json:"parked"`         // sequences this runner parked
	ParkedEvents  int64 `json:"parked_events"`  // events this runner parked: poison ones and those that followed
	Retried       int64 `json:"retried"`        // parked sequences retried through this runner and applied
	RetriedEvents int64 `json:"retried_events"` // events those retries applied
	RetryFailures int64 `json:"retry_failures"` // retries that failed and left their sequence parked
	Skipped       int64 `json:"skipped"`        // parked sequences skipped through this runner
	SkippedEvents int64 `json:"skipped_events"` // events those skips left out

	// ParkedNow and ParkedEventsNow are the sequences and events of this
	// projection parked in the target, as counted by the last CountParked
	// and moved since by this runner's own parks, retries and skips.
	ParkedNow       int64 `json:"parked_now"`
	ParkedEventsNow int64 `json:"parked_events_now"`
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

	park   bool         // Poison is PoisonPark
	tracer trace.Tracer // nil: no tracing

	batches, records, applied, duplicates, repaired, dead, retries atomic.Int64
	parked, parkedEvents, retried, retriedEvents, retryFailures    atomic.Int64
	skipped, skippedEvents, parkedNow, parkedEventsNow             atomic.Int64
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
	r := &Runner{target: target, cfg: cfg, park: cfg.Poison == PoisonPark, tracer: tracing.Tracer(cfg.TracerProvider)}
	if _, ok := target.(store.ParkRecorder); r.park && !ok {
		return nil, fmt.Errorf("projection %q: target %T cannot park sequences (it is not a store.ParkRecorder): use a store backend, or set Poison", cfg.Name, target)
	}
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
		Parked:  r.parked.Load(), ParkedEvents: r.parkedEvents.Load(), Retried: r.retried.Load(), RetriedEvents: r.retriedEvents.Load(),
		RetryFailures: r.retryFailures.Load(), Skipped: r.skipped.Load(), SkippedEvents: r.skippedEvents.Load(),
		ParkedNow: r.parkedNow.Load(), ParkedEventsNow: r.parkedEventsNow.Load(),
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

// entry is one record of a batch, one item read from the source, or one
// parked event being retried.
type entry struct {
	rec  *wire.Record // nil: read from the source to fill a gap
	item Item
	// err says why the entry cannot be applied: its headers do not parse
	// (parsed is false) or its item does not decode.
	err    error
	parsed bool
	// outcome is what the last attempt did with it, for its span.
	outcome string
}

type seqPos struct {
	id  uuid.UUID
	pos int64
}

// batch is what HandleBatch (or a retry) works out once and every attempt
// shares.
type batch struct {
	entries  []entry
	tracking []store.Tracking // first then last offset of each partition, sorted
	ids      []uuid.UUID      // distinct sequence ids, sorted
	// poisoned holds items the policy failed permanently in earlier attempts
	// (or transiently more often than the budget allows).
	poisoned map[seqPos]error
	// transient counts the attempts each item failed with a transient error.
	transient map[seqPos]int
	// single makes the next attempt apply items one at a time, to find the
	// one a permanent error without an ItemError came from.
	single bool
	// retry, if set, makes the batch the parked events of one sequence,
	// which each attempt takes out of the target itself.
	retry *retryJob
}

// retryJob is a retry's sequence.
type retryJob struct {
	id uuid.UUID
}

// outcome is what one attempt did, counted once it commits.
type outcome struct {
	applied, duplicates, repaired int
	dead                          []deadNote
	parks                         []*seqPark // sequences whose parking changed
	retry                         *retryOutcome
}

type retryOutcome struct {
	prev  store.ParkedSequence
	taken int
	now   *seqPark // the row after the retry
}

type deadNote struct {
	e      *entry
	reason error
	stored bool // already recorded before (a redelivery or an earlier batch)
	parked bool // its sequence was parked too (logged as such)
}

// seqPark is one sequence's parking as an attempt sees and changes it.
type seqPark struct {
	row store.ParkedSequence
	// storedFirst and storedLast are the positions parked before the
	// attempt (storedFirst > storedLast: none).
	storedFirst, storedLast int64
	added                   []store.ParkedEvent
	addedAt                 map[int64]bool
	changed                 bool
	// newly: parked by this attempt (it was not before); failed is the
	// entry that parked it, or moved its first position back.
	newly  bool
	failed *entry
}

func newSeqPark(row store.ParkedSequence) *seqPark {
	sp := &seqPark{row: row, storedFirst: 0, storedLast: -1}
	if row.Parked() {
		sp.storedFirst, sp.storedLast = row.First, row.Last
	}
	return sp
}

func (sp *seqPark) parked() bool { return sp.row.Count > 0 }

// holds reports whether pos is parked already.
func (sp *seqPark) holds(pos int64) bool {
	return (pos >= sp.storedFirst && pos <= sp.storedLast) || sp.addedAt[pos]
}

// advance moves last past the skipped ranges that follow it.
func advance(last int64, skipped []store.PositionRange) int64 {
	for _, r := range skipped {
		if r.From <= last+1 && r.To > last {
			last = r.To
		}
	}
	return last
}

// poisonFound rolls back an attempt whose policy failed permanently on key.
type poisonFound struct {
	key seqPos
	err error
}

func (p *poisonFound) Error() string {
	return fmt.Sprintf("projection: position %d of %s is poison: %v", p.key.pos, p.key.id, p.err)
}

// transientFound rolls back an attempt whose policy failed transiently on
// key, and said so with an *ItemError.
type transientFound struct {
	key seqPos
	err error
}

func (p *transientFound) Error() string { return p.err.Error() }

// bisect rolls back an attempt whose policy failed permanently on a group of
// items, to apply them one at a time.
type bisect struct{ err error }

func (b *bisect) Error() string { return "projection: permanent error in a batch: " + b.err.Error() }

// HandleBatch applies records, consumed from Kafka in offset order within
// each partition, in one transaction of the target: the policy's effect, the
// parked events, the dead letters and the tracking of every (topic,
// partition) in records. It returns nil only when that transaction committed.
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
	tr := r.startTrace(ctx, b)
	out, err := r.process(ctx, b, tr)
	tr.end(b, out, err)
	if err != nil {
		return err
	}
	r.committed(len(records), out)
	return nil
}

// process runs attempts of b until one commits. Each retry takes out one more
// poison item, or switches to applying one item at a time (which then finds
// one), or waits out a transient failure of one item, so the batch settles.
func (r *Runner) process(ctx context.Context, b *batch, tr *batchTrace) (*outcome, error) {
	for n := 1; ; n++ {
		var out outcome
		actx, span := tr.attempt(ctx, n)
		err := r.target.InTx(actx, func(tx store.Tx) error {
			out = outcome{}
			return r.attempt(actx, tx, b, &out)
		})
		endAttempt(span, err)
		if err == nil {
			return &out, nil
		}
		var found *poisonFound
		var tf *transientFound
		var bis *bisect
		switch {
		case errors.As(err, &found):
			if r.cfg.Poison == PoisonStop {
				return nil, r.poisonError(b, found)
			}
			if _, again := b.poisoned[found.key]; again {
				return nil, fmt.Errorf("projection %q: %w (reported again after it was taken out)", r.cfg.Name, found)
			}
			b.poisoned[found.key] = found.err
			b.single = false
		case errors.As(err, &tf):
			if r.cfg.TransientRetries < 0 || ctx.Err() != nil {
				return nil, tf.err
			}
			n := b.transient[tf.key] + 1
			b.transient[tf.key] = n
			if n > r.cfg.TransientRetries {
				if r.cfg.Poison == PoisonStop {
					return nil, r.poisonError(b, &poisonFound{tf.key, tf.err})
				}
				b.poisoned[tf.key] = fmt.Errorf("failed %d times: %w", n, tf.err)
				b.single = false
				break
			}
			wait := min(r.cfg.RetryBackoff<<(n-1), maxRetryBackoff)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		case errors.As(err, &bis) && !b.single:
			b.single = true
		default:
			if bis != nil {
				return nil, bis.err
			}
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.retries.Add(1)
	}
}

// prepare parses the records' headers, decodes their items if the policy
// wants events, and works out the tracking.
func (r *Runner) prepare(records []wire.Record) *batch {
	b := newBatch(len(records))
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

func newBatch(n int) *batch {
	return &batch{entries: make([]entry, n), poisoned: map[seqPos]error{}, transient: map[seqPos]int{}}
}

// attempt is one transaction's work. Tracking comes first, so that a zombie
// waits on (PostgreSQL) or fails at its first statement, before it reads the
// positions or applies anything. The parked rows of the batch's sequences
// come next, locked, and only then the policy's positions: a retry of a
// parked sequence that commits while this transaction waits for its row is
// then seen whole, its row gone and its effect in the positions.
func (r *Runner) attempt(ctx context.Context, tx store.Tx, b *batch, out *outcome) error {
	var ptx store.ParkTx
	parks := map[uuid.UUID]*seqPark{}
	if r.park && len(b.ids) > 0 {
		var err error
		if ptx, err = store.ParkTxOf(tx); err != nil {
			return fmt.Errorf("projection %q: %w", r.cfg.Name, err)
		}
	}
	var rows map[uuid.UUID]store.ParkedSequence
	if tp, ok := ptx.(store.TrackingParkTx); ok && len(b.tracking) > 0 {
		// One round trip for both.
		var err error
		if rows, err = tp.SetTrackingsParked(ctx, b.tracking, r.cfg.Name, b.ids); err != nil {
			if errors.Is(err, store.ErrTrackingConflict) {
				return err
			}
			return fmt.Errorf("projection %q: parked sequences: %w", r.cfg.Name, err)
		}
	} else {
		for _, t := range b.tracking {
			if err := tx.SetTracking(ctx, t); err != nil {
				return err
			}
		}
		if ptx != nil {
			var err error
			if rows, err = ptx.ParkedSequences(ctx, r.cfg.Name, b.ids); err != nil {
				return fmt.Errorf("projection %q: parked sequences: %w", r.cfg.Name, err)
			}
		}
	}
	for id, row := range rows {
		parks[id] = newSeqPark(row)
	}
	if b.retry != nil {
		if err := r.takeParked(ctx, ptx, b, parks, out); err != nil {
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
	now := time.Now().UTC()
	for i := range b.entries {
		b.entries[i].outcome = "" // what an earlier attempt did
	}
	var apply []*entry
	// take decides what happens to an entry that passed the guard.
	take := func(e *entry) error {
		if e.parsed {
			if sp := parks[e.item.SequenceID]; sp != nil && sp.parked() && e.item.Position > sp.row.First {
				if sp.holds(e.item.Position) {
					out.duplicates++
					e.outcome = outcomeDuplicate
				} else {
					r.parkEntry(sp, e, now)
				}
				return nil
			}
		}
		err := e.err
		if err == nil {
			err = b.poisoned[seqPos{e.item.SequenceID, e.item.Position}]
		}
		if err == nil {
			apply = append(apply, e)
			e.outcome = outcomeApplied
			return nil
		}
		switch {
		case r.cfg.Poison == PoisonStop:
			return r.stopError(e, err)
		case r.park && e.parsed:
			id := e.item.SequenceID
			sp := parks[id]
			if sp == nil {
				sp = newSeqPark(store.ParkedSequence{Name: r.cfg.Name, SequenceID: id, First: -1, Last: -1})
				parks[id] = sp
			}
			first, was := sp.row.First, sp.parked()
			r.startPark(sp, e, err, now)
			e.outcome = outcomeParked
			out.dead = append(out.dead, deadNote{e: e, reason: err, parked: true})
			if was && e.item.Position < first {
				// Parked before what was parked already: the events
				// between join them.
				return r.fillParked(ctx, tx, sp, e.item.Position, first, out, now)
			}
			return nil
		}
		out.dead = append(out.dead, deadNote{e: e, reason: err})
		e.outcome = outcomeDeadLetter
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
		id, pos := e.item.SequenceID, e.item.Position
		sp := parks[id]
		if sp != nil && sp.parked() && pos >= sp.row.First {
			// A parked sequence: later events wait behind the first one,
			// with no gap between them (a gap is filled from the source),
			// so that an event is parked at most once.
			if sp.holds(pos) {
				out.duplicates++
				e.outcome = outcomeDuplicate
				continue
			}
			if err := r.fillParked(ctx, tx, sp, sp.row.Last, pos, out, now); err != nil {
				return err
			}
			r.parkEntry(sp, e, now)
			continue
		}
		if sp != nil && sp.row.SkippedAt(pos) {
			// An operator skipped it: it counts as applied.
			out.duplicates++
			e.outcome = outcomeDuplicate
			if last != nil {
				last[id] = max(last[id], pos)
			}
			continue
		}
		if last != nil {
			l := last[id]
			if sp != nil {
				l = advance(l, sp.row.Skipped)
			}
			if pos <= l {
				out.duplicates++
				e.outcome = outcomeDuplicate
				continue
			}
			if pos > l+1 {
				filled, err := r.repair(ctx, tx, id, l, pos)
				if err != nil {
					return err
				}
				out.repaired += len(filled)
				for _, f := range filled {
					if sp != nil && sp.row.SkippedAt(f.item.Position) {
						continue
					}
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
	if ptx != nil {
		if err := r.storeParks(ctx, ptx, b, parks, out, now); err != nil {
			return err
		}
	}
	return r.storeDeadLetters(ctx, tx, out.dead)
}

// parkEntry parks e in sp.
func (r *Runner) parkEntry(sp *seqPark, e *entry, now time.Time) {
	e.outcome = outcomeParked
	it := &e.item
	ev := store.ParkedEvent{Name: r.cfg.Name, SequencedItem: it.SequencedItem, NotificationID: it.NotificationID, ParkedAt: now}
	if e.rec != nil {
		ev.RecordTopic, ev.RecordPartition, ev.RecordOffset = e.rec.Topic, e.rec.Partition, e.rec.Offset
	} else {
		ev.RecordPartition, ev.RecordOffset = -1, it.Position
	}
	sp.added = append(sp.added, ev)
	if sp.addedAt == nil {
		sp.addedAt = map[int64]bool{}
	}
	sp.addedAt[it.Position] = true
	row := &sp.row
	if row.Count == 0 {
		row.First, row.Last = it.Position, it.Position
	} else {
		row.First, row.Last = min(row.First, it.Position), max(row.Last, it.Position)
	}
	row.Count++
	row.UpdatedAt = now
	if row.Entity == "" {
		row.Entity = events.EntityOf(it.Topic)
	}
	sp.changed = true
}

// fillParked parks positions after+1 to before-1 of sp's sequence, read
// from the source, unless they are parked already. A runner without the
// position guard leaves such gaps open, as it does others.
func (r *Runner) fillParked(ctx context.Context, tx store.Tx, sp *seqPark, after, before int64, out *outcome, now time.Time) error {
	if r.guard == nil || before <= after+1 {
		return nil
	}
	filled, err := r.repair(ctx, tx, sp.row.SequenceID, after, before)
	if err != nil {
		return err
	}
	out.repaired += len(filled)
	for _, f := range filled {
		if !sp.holds(f.item.Position) {
			r.parkEntry(sp, f, now)
		}
	}
	return nil
}

// startPark parks sp's sequence at e, which failed with err.
func (r *Runner) startPark(sp *seqPark, e *entry, err error, now time.Time) {
	switch {
	case !sp.parked():
		sp.row.ParkedAt, sp.row.Reason = now, err.Error()
		sp.newly, sp.failed = true, e
	case e.item.Position < sp.row.First:
		sp.row.Reason, sp.failed = err.Error(), e
	}
	r.parkEntry(sp, e, now)
}

// storeParks writes the parked rows and events an attempt changed, and a
// retry's action.
func (r *Runner) storeParks(ctx context.Context, ptx store.ParkTx, b *batch, parks map[uuid.UUID]*seqPark, out *outcome, now time.Time) error {
	var evs []store.ParkedEvent
	ids := make([]uuid.UUID, 0, len(parks))
	for id, sp := range parks {
		if sp.changed {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range ids {
		sp := parks[id]
		if out.retry != nil && id == b.retry.id {
			prev := out.retry.prev
			sp.row.Retries = prev.Retries
			if sp.parked() {
				sp.row.Retries++
				sp.row.ParkedAt = prev.ParkedAt
				if sp.row.Entity == "" {
					sp.row.Entity = prev.Entity
				}
			}
			out.retry.now = sp
		}
		if err := ptx.PutParkedSequence(ctx, sp.row); err != nil {
			return fmt.Errorf("projection %q: park %s: %w", r.cfg.Name, id, err)
		}
		evs = append(evs, sp.added...)
		out.parks = append(out.parks, sp)
	}
	if len(evs) > 0 {
		if err := ptx.ParkEvents(ctx, evs); err != nil {
			return fmt.Errorf("projection %q: park events: %w", r.cfg.Name, err)
		}
	}
	if rt := out.retry; rt != nil {
		a := store.ParkAction{Name: r.cfg.Name, SequenceID: b.retry.id, Entity: rt.prev.Entity, Action: store.ParkRetried,
			Positions: store.PositionRange{From: rt.prev.First, To: rt.prev.Last}, Count: int64(rt.taken), At: now}
		if rt.now != nil && rt.now.parked() {
			a.Action, a.Reason = store.ParkRetryFailed, rt.now.row.Reason
		}
		if err := ptx.RecordParkAction(ctx, a); err != nil {
			return fmt.Errorf("projection %q: record the retry of %s: %w", r.cfg.Name, b.retry.id, err)
		}
	}
	return nil
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
				return attributed(err, items[i:i+1], i, key)
			}
		}
		return nil
	}
	err := r.cfg.Policy.Apply(ctx, tx, items)
	if err == nil {
		return nil
	}
	if !IsPermanent(err) || ctx.Err() != nil {
		return attributed(err, items, 0, key)
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

// attributed returns a transient error of Apply(items) as a *transientFound
// if the policy attributed it to one of items with an *ItemError (base is
// the index of items[0] for key), and as is otherwise.
func attributed(err error, items []Item, base int, key func(int) seqPos) error {
	var ie *ItemError
	if IsPermanent(err) || !errors.As(err, &ie) || ie.Index < 0 || ie.Index >= len(items) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &transientFound{key(base + ie.Index), err}
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

// committed counts and logs what a committed attempt did.
func (r *Runner) committed(records int, out *outcome) {
	if records > 0 {
		r.batches.Add(1)
		r.records.Add(int64(records))
	}
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
		if d.parked {
			continue // the park is logged below
		}
		attrs := []any{logKeyProjection, r.cfg.Name, logKeyReason, d.reason.Error()}
		if d.e.rec != nil {
			attrs = append(attrs, logKeyTopic, d.e.rec.Topic, logKeyPartition, d.e.rec.Partition, logKeyOffset, d.e.rec.Offset)
		}
		if d.e.parsed {
			attrs = append(attrs, logKeySequence, d.e.item.SequenceID.String(), logKeyPosition, d.e.item.Position)
		}
		log.Warn("projection: poison event dead-lettered", attrs...)
	}
	for _, sp := range out.parks {
		if out.retry != nil && out.retry.now == sp {
			continue // counted and logged by the retry
		}
		r.parkedEvents.Add(int64(len(sp.added)))
		r.parkedEventsNow.Add(int64(len(sp.added)))
		if !sp.newly {
			continue
		}
		r.parked.Add(1)
		r.parkedNow.Add(1)
		attrs := []any{logKeyProjection, r.cfg.Name, logKeyEntity, sp.row.Entity, logKeySequence, sp.row.SequenceID.String(),
			logKeyPosition, sp.row.First, logKeyReason, sp.row.Reason}
		if e := sp.failed; e != nil && e.rec != nil {
			attrs = append(attrs, logKeyTopic, e.rec.Topic, logKeyPartition, e.rec.Partition, logKeyOffset, e.rec.Offset)
		}
		log.Warn("projection: sequence parked: its later events wait until it is retried or skipped", attrs...)
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
