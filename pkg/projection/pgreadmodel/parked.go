package pgreadmodel

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

// DefaultProjection is the name a rebuild gives the live projection when
// RebuildOptions.Projection is empty: the name the projector runs the read
// model under.
const DefaultProjection = "readmodel"

// txOfer is a store whose transactions can run in a pgx transaction of the
// caller's (*postgres.Recorder).
type txOfer interface {
	TxOf(ptx pgx.Tx) store.Tx
}

// replay returns the parking a rebuild keeps to, or nil for none (a log
// that keeps no parked sequences, or opts.IgnoreParked).
func (m *ReadModel) replay(ctx context.Context, log Log, opts *RebuildOptions) (*projection.Replay, error) {
	if opts.IgnoreParked {
		return nil, nil
	}
	if opts.Projection == "" {
		opts.Projection = DefaultProjection
	}
	if opts.Parked == nil {
		pr, ok := log.(store.ParkRecorder)
		if !ok {
			return nil, nil
		}
		opts.Parked = pr
	}
	if _, ok := opts.Parked.(txOfer); !ok {
		return nil, fmt.Errorf("pgreadmodel: rebuild: the parked sequences' store %T is not a PostgreSQL recorder (it must park in the swap's transaction); set IgnoreParked to rebuild without them", opts.Parked)
	}
	if _, ok := log.(projection.Source); !ok {
		return nil, fmt.Errorf("pgreadmodel: rebuild: the log %T cannot read one sequence's events (SelectEvents), which parking needs; set IgnoreParked to rebuild without it", log)
	}
	rp, err := projection.NewReplay(ctx, opts.Parked, opts.Projection)
	if err != nil {
		return nil, fmt.Errorf("pgreadmodel: rebuild: %w", err)
	}
	return rp, nil
}

// fold folds a page of the log as the rebuild keeps to rp.
func (m *ReadModel) fold(ns []store.Notification, mapper *events.Mapper, rp *projection.Replay) (changes []readmodel.Change, held, skipped int) {
	if rp == nil {
		changes, skipped = readmodel.FoldNotifications(ns, mapper, m.keeps)
		return changes, 0, skipped
	}
	return readmodel.FoldFiltered(ns, mapper, m.keeps, rp)
}

// refoldAndPark runs in the swap's transaction, the live tables locked: it
// rebuilds again, from their events, the sequences whose parking changed
// while the rebuild ran, and parks those whose events failed.
func (m *ReadModel) refoldAndPark(ctx context.Context, tx pgx.Tx, rp *projection.Replay, log Log, mapper *events.Mapper, parked store.ParkRecorder) (int, error) {
	if rp == nil {
		return 0, nil
	}
	changed, err := rp.Refresh(ctx)
	if err != nil {
		return 0, err
	}
	src := log.(projection.Source)
	for _, id := range changed {
		items, err := src.SelectEvents(ctx, id, store.Query{})
		if err != nil {
			return 0, fmt.Errorf("read the events of %s: %w", id, err)
		}
		ns := make([]store.Notification, len(items))
		for i, it := range items {
			ns[i] = store.Notification{SequencedItem: it}
		}
		changes, _, _ := readmodel.FoldFiltered(ns, mapper, m.keeps, rp)
		for _, typ := range m.types {
			if _, err := tx.Exec(ctx, "DELETE FROM "+m.tables[typ].shadow+" WHERE id = $1", [16]byte(id)); err != nil {
				return 0, fmt.Errorf("rebuild %s again: %w", id, err)
			}
		}
		if err := m.upsert(ctx, tx, changes, true); err != nil {
			return 0, fmt.Errorf("rebuild %s again: %w", id, err)
		}
	}
	n, err := rp.Park(ctx, parked.(txOfer).TxOf(tx), src)
	if err != nil {
		return 0, fmt.Errorf("park: %w", err)
	}
	return n, nil
}
