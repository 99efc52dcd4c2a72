package projection

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// ErrUnknownProjection reports a projection name DeadLetters has no runner
// for.
var ErrUnknownProjection = errors.New("projection: unknown projection")

// DeadLetters is what an operator does with the parked sequences of a set of
// runners (a projector's): list them, show one with its events and its
// trail of retries and skips, retry one or all, skip one. It reads each
// runner's target and acts through the runner, so that retries go through
// the runner's policy, position guard and locks. It is safe for concurrent
// use.
type DeadLetters struct {
	runners map[string]*Runner
	names   []string // sorted
}

// NewDeadLetters returns the dead letters of runners, which must have
// distinct names. Runners that do not park (Poison is not PoisonPark) are
// listed as having nothing parked.
func NewDeadLetters(runners ...*Runner) (*DeadLetters, error) {
	d := &DeadLetters{runners: make(map[string]*Runner, len(runners))}
	for _, r := range runners {
		if r == nil {
			return nil, errors.New("projection: dead letters of a nil runner")
		}
		if _, dup := d.runners[r.Name()]; dup {
			return nil, fmt.Errorf("projection: two runners named %q", r.Name())
		}
		d.runners[r.Name()] = r
		d.names = append(d.names, r.Name())
	}
	slices.Sort(d.names)
	return d, nil
}

// Projections returns the names of the runners, sorted.
func (d *DeadLetters) Projections() []string { return slices.Clone(d.names) }

func (d *DeadLetters) runner(name string) (*Runner, error) {
	r, ok := d.runners[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownProjection, name, d.names)
	}
	return r, nil
}

// recorder is the runner's target as a store.ParkRecorder, or nil.
func (r *Runner) recorder() store.ParkRecorder {
	if !r.park {
		return nil
	}
	pr, _ := r.target.(store.ParkRecorder)
	return pr
}

// A ListQuery selects parked sequences for DeadLetters.List.
type ListQuery struct {
	// Projection and Entity, if set, select one projection and one entity
	// type.
	Projection, Entity string
	// AfterProjection and After are the cursor: the projection and sequence
	// id of the last sequence of the previous page.
	AfterProjection string
	After           uuid.UUID
	// Limit bounds the sequences returned (default and at most 1000).
	Limit int
}

// MaxListLimit bounds a page of DeadLetters.List.
const MaxListLimit = 1000

// List returns parked sequences, ordered by projection and sequence id.
func (d *DeadLetters) List(ctx context.Context, q ListQuery) ([]store.ParkedSequence, error) {
	if q.Limit <= 0 || q.Limit > MaxListLimit {
		q.Limit = MaxListLimit
	}
	if q.Projection != "" {
		if _, err := d.runner(q.Projection); err != nil {
			return nil, err
		}
	}
	out := []store.ParkedSequence{}
	for _, name := range d.names {
		if (q.Projection != "" && name != q.Projection) || name < q.AfterProjection {
			continue
		}
		pr := d.runners[name].recorder()
		if pr == nil {
			continue
		}
		sq := store.ParkedQuery{Name: name}
		if name == q.AfterProjection {
			sq.AfterName, sq.After = name, q.After
		}
		for len(out) < q.Limit {
			sq.Limit = q.Limit - len(out)
			page, err := pr.ListParked(ctx, sq)
			if err != nil {
				return nil, fmt.Errorf("projection %q: list parked: %w", name, err)
			}
			for _, s := range page {
				if q.Entity == "" || s.Entity == q.Entity {
					out = append(out, s)
				}
			}
			if len(page) < sq.Limit {
				break
			}
			sq.AfterName, sq.After = name, page[len(page)-1].SequenceID
		}
		if len(out) >= q.Limit {
			break
		}
	}
	return out, nil
}

// A ParkedDetail is one parked sequence with its parked events and its
// trail of retries and skips.
type ParkedDetail struct {
	Sequence store.ParkedSequence
	Events   []store.ParkedEvent
	Actions  []store.ParkAction
}

// Show returns the parked sequence id of projection, with its events and
// actions. entity, if set, must be the sequence's entity type. A sequence
// with nothing parked is shown if it has actions (it was retried or skipped:
// Sequence.Count is 0), and is ErrNotParked otherwise.
func (d *DeadLetters) Show(ctx context.Context, projection, entity string, id uuid.UUID) (ParkedDetail, error) {
	r, err := d.runner(projection)
	if err != nil {
		return ParkedDetail{}, err
	}
	pr := r.recorder()
	if pr == nil {
		return ParkedDetail{}, fmt.Errorf("%w: projection %q does not park", ErrNotParked, projection)
	}
	rows, err := pr.ListParked(ctx, store.ParkedQuery{Name: projection, SequenceID: id, WithSkipped: true})
	if err != nil {
		return ParkedDetail{}, fmt.Errorf("projection %q: show %s: %w", projection, id, err)
	}
	det := ParkedDetail{Sequence: store.ParkedSequence{Name: projection, SequenceID: id, First: -1, Last: -1}}
	if len(rows) == 1 {
		det.Sequence = rows[0]
	}
	if det.Sequence.Parked() {
		if det.Events, err = pr.ParkedEvents(ctx, projection, id, -1, 0); err != nil {
			return ParkedDetail{}, fmt.Errorf("projection %q: show %s: %w", projection, id, err)
		}
	}
	if det.Actions, err = pr.ParkActions(ctx, projection, id, 0); err != nil {
		return ParkedDetail{}, fmt.Errorf("projection %q: show %s: %w", projection, id, err)
	}
	if det.Sequence.Entity == "" {
		for _, a := range det.Actions {
			det.Sequence.Entity = cmp.Or(det.Sequence.Entity, a.Entity)
		}
	}
	if (!det.Sequence.Parked() && len(det.Actions) == 0) || (entity != "" && det.Sequence.Entity != entity) {
		return ParkedDetail{}, fmt.Errorf("%w: projection %q, %s %s", ErrNotParked, projection, entity, id)
	}
	return det, nil
}

// check fails with ErrNotParked unless id is parked by r, as entity if set.
func (d *DeadLetters) check(ctx context.Context, r *Runner, entity string, id uuid.UUID) error {
	if entity == "" {
		return nil
	}
	pr := r.recorder()
	if pr == nil {
		return fmt.Errorf("%w: projection %q does not park", ErrNotParking, r.Name())
	}
	rows, err := pr.ListParked(ctx, store.ParkedQuery{Name: r.Name(), SequenceID: id})
	if err != nil {
		return fmt.Errorf("projection %q: %w", r.Name(), err)
	}
	if len(rows) != 1 || rows[0].Entity != entity {
		return fmt.Errorf("%w: projection %q, %s %s", ErrNotParked, r.Name(), entity, id)
	}
	return nil
}

// Retry retries the parked sequence id of projection: see Runner.Retry.
// entity, if set, must be the sequence's entity type.
func (d *DeadLetters) Retry(ctx context.Context, projection, entity string, id uuid.UUID) (RetryResult, error) {
	r, err := d.runner(projection)
	if err != nil {
		return RetryResult{}, err
	}
	if err := d.check(ctx, r, entity, id); err != nil {
		return RetryResult{}, err
	}
	return r.Retry(ctx, id)
}

// RetryAll retries every parked sequence of projection (of every
// projection, if it is empty), of entity type entity if set, one at a time,
// in the order of List. A retry that fails on an event is a result with
// Parked set, not an error; RetryAll stops at the first error (the store is
// unreachable, ctx ended) and returns it with the results so far. A
// sequence retried by someone else meanwhile is left out.
func (d *DeadLetters) RetryAll(ctx context.Context, projection, entity string) ([]RetryResult, error) {
	results := []RetryResult{}
	q := ListQuery{Projection: projection, Entity: entity}
	for {
		page, err := d.List(ctx, q)
		if err != nil {
			return results, err
		}
		for _, s := range page {
			res, err := d.runners[s.Name].Retry(ctx, s.SequenceID)
			switch {
			case errors.Is(err, ErrNotParked):
				continue
			case err != nil:
				return results, err
			}
			results = append(results, res)
		}
		if len(page) < MaxListLimit {
			return results, nil
		}
		last := page[len(page)-1]
		q.AfterProjection, q.After = last.Name, last.SequenceID
	}
}

// Skip skips the parked sequence id of projection with reason: see
// Runner.Skip. entity, if set, must be the sequence's entity type.
func (d *DeadLetters) Skip(ctx context.Context, projection, entity string, id uuid.UUID, reason string) (SkipResult, error) {
	r, err := d.runner(projection)
	if err != nil {
		return SkipResult{}, err
	}
	if err := d.check(ctx, r, entity, id); err != nil {
		return SkipResult{}, err
	}
	return r.Skip(ctx, id, reason)
}

// Count counts the parked sequences and events of every projection, and
// sets each runner's Stats.ParkedNow and ParkedEventsNow.
func (d *DeadLetters) Count(ctx context.Context) ([]store.ParkedCount, error) {
	out := make([]store.ParkedCount, 0, len(d.names))
	var errs []error
	for _, name := range d.names {
		c, err := d.runners[name].CountParked(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}
