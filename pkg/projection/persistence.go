package projection

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// PersistencePolicy stores every item it is given, unchanged, in the runner's
// target: the stand-alone example's persistence policy, across the network.
// Run it with the second store (another PostgreSQL schema or database, a
// SQLite file) as the runner's Target, so that the copies and the tracking
// commit there together.
//
// Its position guard is the target's own copy of each sequence: an item whose
// position the copy already has is skipped by the runner before it reaches
// Apply, and a gap is filled from the runner's Source, so the copy of every
// sequence stays complete and in order. A conflict on insert is therefore
// never expected; if one happens (someone else writes the same sequences into
// the target) it is returned as a transient error and the batch is retried
// with fresh positions, not swallowed.
//
// Copies are byte for byte: state encrypted with an entity's own data key
// (events.EntityCipher) stays encrypted in the target, and becomes unreadable
// there too when the entity is forgotten; the tombstone is copied like any
// item and records that it was.
type PersistencePolicy struct{}

var _ Positions = PersistencePolicy{}

// Apply inserts the items in one call. An item the target refuses as invalid
// (store.ErrInvalidItem) is permanent.
func (PersistencePolicy) Apply(ctx context.Context, tx store.Tx, items []Item) error {
	sis := make([]store.SequencedItem, len(items))
	for i := range items {
		sis[i] = items[i].SequencedItem
	}
	if _, err := tx.InsertEvents(ctx, sis); err != nil {
		if errors.Is(err, store.ErrInvalidItem) {
			return Permanent(fmt.Errorf("projection: persist: %w", err))
		}
		return fmt.Errorf("projection: persist: %w", err)
	}
	return nil
}

// LastPositions reads the last position of each sequence in the target.
func (PersistencePolicy) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return LastItemPositions(ctx, tx, ids, nil)
}

// LastItemPositions is a Positions implementation for policies that record
// each event they apply as an item of a sequence in the target store: it
// returns the position of the last item of each sequence, read through tx,
// one query per sequence. mapID, if not nil, maps an event's sequence id to
// the id of the sequence that records it.
func LastItemPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID, mapID func(uuid.UUID) uuid.UUID) (map[uuid.UUID]int64, error) {
	out := make(map[uuid.UUID]int64, len(ids))
	for _, id := range ids {
		sid := id
		if mapID != nil {
			sid = mapID(id)
		}
		items, err := tx.SelectEvents(ctx, sid, store.Query{Desc: true, Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(items) > 0 {
			out[id] = items[0].Position
		}
	}
	return out, nil
}
