package projection

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

var (
	// ErrNotParked reports a retry or skip of a sequence the projection has
	// not parked (never, or no longer: retried or skipped already).
	ErrNotParked = errors.New("projection: sequence not parked")
	// ErrNoReason reports a skip without a reason: a skip is recorded with
	// the reason given, never silent.
	ErrNoReason = errors.New("projection: a skip needs a reason")
	// ErrNotParking reports a retry or skip through a runner whose Poison
	// is not PoisonPark.
	ErrNotParking = errors.New("projection: the runner does not park sequences")
)

// A RetryResult says what a retry of a parked sequence did.
type RetryResult struct {
	Projection string
	SequenceID uuid.UUID
	Entity     string
	// Positions are the parked positions tried, Events the events taken.
	Positions store.PositionRange
	Events    int
	// Applied counts the events the policy applied (the others were
	// duplicates the position guard skipped, or are parked again).
	Applied int
	// Parked reports that the retry failed on an event: it and the later
	// events are parked again, from position First, with Reason.
	Parked bool
	First  int64
	Reason string
}

// A SkipResult says what a skip of a parked sequence did.
type SkipResult struct {
	Projection string
	SequenceID uuid.UUID
	Entity     string
	// Positions are the positions skipped, Events the parked events dropped.
	Positions store.PositionRange
	Events    int
	Reason    string
}

// Retry applies the parked events of sequence seq, in position order,
// through the policy, in one transaction of the target: the events are taken
// out of the parked ones, passed through the position guard (an event the
// policy already has is skipped, a gap before them filled from the source),
// applied, and the retry recorded (store.ParkRetried), or nothing is.
//
// The transaction first locks the sequence's parked row, as every batch of
// the runner does for the sequences it holds, so a retry and a batch of the
// live consumer (in this process or another, before or after a rebalance)
// take turns: the one that comes second sees what the first committed, and
// no event is applied twice. Two retries of one sequence take turns too: the
// second finds nothing parked (ErrNotParked).
//
// If the policy fails an event again (permanently, or transiently more often
// than Config.TransientRetries), the events before it are applied and it and
// the later ones stay parked with the new reason (RetryResult.Parked; the
// failed retry is recorded as store.ParkRetryFailed). Retry fails with
// ErrNotParked for a sequence not parked, and returns any other error after
// rolling back: the events are then still parked as they were.
func (r *Runner) Retry(ctx context.Context, seq uuid.UUID) (RetryResult, error) {
	if !r.park {
		return RetryResult{}, fmt.Errorf("%w: projection %q runs with Poison %v", ErrNotParking, r.cfg.Name, r.cfg.Poison)
	}
	b := newBatch(0)
	b.ids = []uuid.UUID{seq}
	b.retry = &retryJob{id: seq}
	out, err := r.process(ctx, b, nil)
	if err != nil {
		return RetryResult{}, err
	}
	r.committed(0, out)
	rt := out.retry
	res := RetryResult{Projection: r.cfg.Name, SequenceID: seq, Entity: rt.prev.Entity,
		Positions: store.PositionRange{From: rt.prev.First, To: rt.prev.Last}, Events: rt.taken, Applied: out.applied}
	r.parkedEventsNow.Add(-int64(rt.taken))
	log := r.cfg.Logger
	if rt.now != nil && rt.now.parked() {
		res.Parked, res.First, res.Reason = true, rt.now.row.First, rt.now.row.Reason
		r.retryFailures.Add(1)
		r.parkedEventsNow.Add(int64(len(rt.now.added)))
		log.Warn("projection: retry failed: the sequence stays parked", logKeyProjection, r.cfg.Name, logKeyEntity, res.Entity,
			logKeySequence, seq.String(), logKeyPosition, res.First, logKeyReason, res.Reason, logKeyCount, res.Applied)
		return res, nil
	}
	r.retried.Add(1)
	r.retriedEvents.Add(int64(out.applied))
	r.parkedNow.Add(-1)
	log.Info("projection: parked sequence retried", logKeyProjection, r.cfg.Name, logKeyEntity, res.Entity,
		logKeySequence, seq.String(), logKeyPosition, res.Positions.From, logKeyCount, res.Applied)
	return res, nil
}

// takeParked makes a retry's attempt: it takes the parked events of the
// sequence out of the target and makes them the batch, with the sequence
// not parked while they are tried.
func (r *Runner) takeParked(ctx context.Context, ptx store.ParkTx, b *batch, parks map[uuid.UUID]*seqPark, out *outcome) error {
	id := b.retry.id
	sp := parks[id]
	if sp == nil || !sp.parked() {
		return fmt.Errorf("%w: projection %q, sequence %s", ErrNotParked, r.cfg.Name, id)
	}
	evs, err := ptx.TakeParkedEvents(ctx, r.cfg.Name, id)
	if err != nil {
		return fmt.Errorf("projection %q: take the parked events of %s: %w", r.cfg.Name, id, err)
	}
	b.entries = make([]entry, len(evs))
	for i, ev := range evs {
		b.entries[i] = r.parkedEntry(ev)
	}
	prev := sp.row
	row := prev
	row.First, row.Last, row.Count, row.Reason = -1, -1, 0, ""
	parks[id] = &seqPark{row: row, storedFirst: 0, storedLast: -1, changed: true}
	out.retry = &retryOutcome{prev: prev, taken: len(evs)}
	return nil
}

// parkedEntry is the entry of a parked event: its record as the relay
// published it (but for the Kafka timestamp), decoded again.
func (r *Runner) parkedEntry(ev store.ParkedEvent) entry {
	e := entry{item: Item{SequencedItem: ev.SequencedItem, NotificationID: ev.NotificationID}, parsed: true}
	if ev.RecordPartition >= 0 {
		rec := RecordOf(store.Notification{ID: ev.NotificationID, SequencedItem: ev.SequencedItem}, ev.RecordTopic, ev.RecordPartition, ev.RecordOffset)
		e.rec = &rec
		e.item.Record = e.rec
	}
	if r.decode {
		e.item.Event, e.err = r.cfg.Mapper.FromItem(ev.SequencedItem)
	}
	return e
}

// Skip drops the parked events of sequence seq without applying them, in
// one transaction of the target: the positions they span are recorded as
// skipped (the runner counts them as applied from then on, so the next
// event of the sequence is applied after them, and a gap is never filled
// with them), and the skip is recorded with reason (store.ParkSkipped),
// which must not be empty. Like Retry it locks the sequence's parked row
// first. It fails with ErrNotParked for a sequence not parked.
func (r *Runner) Skip(ctx context.Context, seq uuid.UUID, reason string) (SkipResult, error) {
	if !r.park {
		return SkipResult{}, fmt.Errorf("%w: projection %q runs with Poison %v", ErrNotParking, r.cfg.Name, r.cfg.Poison)
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return SkipResult{}, ErrNoReason
	}
	var res SkipResult
	err := r.target.InTx(ctx, func(tx store.Tx) error {
		res = SkipResult{}
		ptx, err := store.ParkTxOf(tx)
		if err != nil {
			return fmt.Errorf("projection %q: %w", r.cfg.Name, err)
		}
		rows, err := ptx.ParkedSequences(ctx, r.cfg.Name, []uuid.UUID{seq})
		if err != nil {
			return fmt.Errorf("projection %q: parked sequences: %w", r.cfg.Name, err)
		}
		row, ok := rows[seq]
		if !ok || !row.Parked() {
			return fmt.Errorf("%w: projection %q, sequence %s", ErrNotParked, r.cfg.Name, seq)
		}
		evs, err := ptx.TakeParkedEvents(ctx, r.cfg.Name, seq)
		if err != nil {
			return fmt.Errorf("projection %q: take the parked events of %s: %w", r.cfg.Name, seq, err)
		}
		now := time.Now().UTC()
		span := store.PositionRange{From: row.First, To: row.Last}
		res = SkipResult{Projection: r.cfg.Name, SequenceID: seq, Entity: row.Entity, Positions: span, Events: len(evs), Reason: reason}
		row.Skipped = store.AddSkipped(row.Skipped, span)
		row.First, row.Last, row.Count, row.Reason, row.UpdatedAt = -1, -1, 0, "", now
		if err := ptx.PutParkedSequence(ctx, row); err != nil {
			return fmt.Errorf("projection %q: skip %s: %w", r.cfg.Name, seq, err)
		}
		return ptx.RecordParkAction(ctx, store.ParkAction{Name: r.cfg.Name, SequenceID: seq, Entity: row.Entity, Action: store.ParkSkipped,
			Positions: span, Count: int64(len(evs)), Reason: reason, At: now})
	})
	if err != nil {
		return SkipResult{}, err
	}
	r.skipped.Add(1)
	r.skippedEvents.Add(int64(res.Events))
	r.parkedNow.Add(-1)
	r.parkedEventsNow.Add(-int64(res.Events))
	r.cfg.Logger.Warn("projection: parked sequence skipped: its parked events are never applied", logKeyProjection, r.cfg.Name,
		logKeyEntity, res.Entity, logKeySequence, seq.String(), logKeyPosition, span(res), logKeyCount, res.Events, logKeyReason, reason)
	return res, nil
}

func span(s SkipResult) string { return fmt.Sprintf("%d-%d", s.Positions.From, s.Positions.To) }

// CountParked counts the sequences and events of the projection parked in
// the target, and sets Stats.ParkedNow and Stats.ParkedEventsNow to them.
func (r *Runner) CountParked(ctx context.Context) (store.ParkedCount, error) {
	c := store.ParkedCount{Name: r.cfg.Name}
	pr, ok := r.target.(store.ParkRecorder)
	if !ok || !r.park {
		return c, nil
	}
	counts, err := pr.CountParked(ctx)
	if err != nil {
		return c, fmt.Errorf("projection %q: count parked: %w", r.cfg.Name, err)
	}
	for _, n := range counts {
		if n.Name == r.cfg.Name {
			c = n
		}
	}
	r.parkedNow.Store(c.Sequences)
	r.parkedEventsNow.Store(c.Events)
	return c, nil
}
