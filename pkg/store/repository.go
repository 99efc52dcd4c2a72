package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// RepositoryConfig configures a Repository. The zero value replays every event on
// every Get, takes no snapshots and caches nothing.
type RepositoryConfig struct {
	// Snapshots, with SnapshotEvery > 0, stores a snapshot whenever a Get replayed
	// at least SnapshotEvery events past the latest snapshot.
	Snapshots     SnapshotRecorder
	SnapshotEvery int64
	// SnapshotTopic names snapshot items (for example "example.Snapshot",
	// events.SnapshotTopic). A stored snapshot of another topic (an older
	// encoding of the aggregate, say) is not used: Get replays from the
	// start, and then stores a snapshot of this topic.
	SnapshotTopic string
	// CacheSize, if positive, keeps the state of that many aggregates in memory.
	// A cached aggregate is always brought up to date from the store before it is
	// returned, so the cache never returns an older version than the store holds.
	CacheSize int
}

// Validate reports a configuration that cannot work.
func (c RepositoryConfig) Validate() error {
	if c.SnapshotEvery > 0 {
		if c.Snapshots == nil {
			return errors.New("store: SnapshotEvery is set but Snapshots is nil")
		}
		if !events.ValidTopic(c.SnapshotTopic) {
			return fmt.Errorf("store: invalid snapshot topic %q", c.SnapshotTopic)
		}
	}
	if c.SnapshotEvery < 0 || c.CacheSize < 0 {
		return errors.New("store: SnapshotEvery and CacheSize must not be negative")
	}
	return nil
}

// A Repository rebuilds aggregates of type T by replaying their events, from the
// latest snapshot if there is one: the stand-alone example's event-sourced
// repository. It is safe for concurrent use; each Get returns a new T.
type Repository[T events.Root] struct {
	store  *EventStore
	newT   func() T
	config RepositoryConfig
	cache  *lru[cached] // nil without CacheSize
}

// NewRepository returns a repository that builds aggregates with newAggregate (a
// new zero T each call). The aggregates must encode to JSON if snapshots or the
// cache are configured.
func NewRepository[T events.Root](s *EventStore, newAggregate func() T, config RepositoryConfig) (*Repository[T], error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	r := &Repository[T]{store: s, newT: newAggregate, config: config}
	if config.CacheSize > 0 {
		r.cache = newLRU[cached](config.CacheSize)
	}
	return r, nil
}

// Get returns the current state of aggregate id. It returns an error wrapping
// ErrNotFound if the aggregate has no events or is discarded.
func (r *Repository[T]) Get(ctx context.Context, id uuid.UUID) (T, error) {
	return r.get(ctx, id, -1)
}

// GetAt returns the state of aggregate id at version (the number of events
// applied: 1 is the state right after creation). It returns an error wrapping
// ErrNotFound if the aggregate did not exist at that version or was discarded by it.
func (r *Repository[T]) GetAt(ctx context.Context, id uuid.UUID, version int64) (T, error) {
	if version < 1 {
		var zero T
		return zero, fmt.Errorf("%w: %s at version %d", ErrNotFound, id, version)
	}
	return r.get(ctx, id, version)
}

// Contains reports whether aggregate id exists and is not discarded.
func (r *Repository[T]) Contains(ctx context.Context, id uuid.UUID) (bool, error) {
	_, err := r.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// get rebuilds id at version (-1: latest).
func (r *Repository[T]) get(ctx context.Context, id uuid.UUID, version int64) (T, error) {
	var zero T
	release, err := r.store.Mapper.PrepareKeys(ctx, []uuid.UUID{id}, false)
	defer release()
	if err != nil {
		return zero, err
	}
	agg := r.newT()
	var fromSnapshot int64 // version restored from a snapshot or the cache
	restored := false
	if version < 0 && r.cache != nil {
		if c, ok := r.cache.get(id); ok {
			if c.discarded {
				agg.Base().Restore(id, c.version)
				agg.Base().MarkDiscarded()
			} else if err := json.Unmarshal(c.state, agg); err == nil {
				agg.Base().Restore(id, c.version)
			} else {
				agg = r.newT()
			}
			fromSnapshot, restored = agg.Base().Version(), true
		}
	}
	if !restored && r.config.SnapshotEvery > 0 {
		upTo := int64(-1)
		if version > 0 {
			upTo = version - 1
		}
		it, err := r.config.Snapshots.LatestSnapshot(ctx, id, upTo)
		switch {
		case err == nil && it.Topic != r.config.SnapshotTopic:
			// Another encoding's: replay from the start.
		case err == nil:
			if err := r.store.Mapper.RestoreSnapshot(it, agg); err != nil {
				return zero, err
			}
			fromSnapshot = agg.Base().Version()
		case !errors.Is(err, ErrNotFound):
			return zero, err
		}
	}
	q := Query{}
	if v := agg.Base().Version(); v > 0 {
		after := v - 1
		q.After = &after
	}
	if version > 0 {
		upTo := version - 1
		q.UpTo = &upTo
	}
	items, err := r.store.Recorder.SelectEvents(ctx, id, q)
	if err != nil {
		return zero, err
	}
	if err := r.store.Replay(agg, id, items); err != nil {
		return zero, err
	}
	base := agg.Base()
	if base.Version() == 0 || (version > 0 && base.Version() < version) {
		return zero, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if version < 0 {
		r.remember(ctx, agg, fromSnapshot, len(items))
	}
	if base.Discarded() {
		return zero, fmt.Errorf("%w: %s is discarded", ErrNotFound, id)
	}
	return agg, nil
}

// Replay rebuilds aggregate id from items, the whole history of its sequence
// in position order, read by the caller (many sequences in one
// store.SequencesReader call, say): what Get does after its read, with the
// same errors, without the cache or snapshots. It does no I/O: with a
// per-entity cipher, prepare the sequence's key first
// (events.Mapper.PrepareKeys).
func (r *Repository[T]) Replay(id uuid.UUID, items []SequencedItem) (T, error) {
	var zero T
	agg := r.newT()
	if err := r.store.Replay(agg, id, items); err != nil {
		return zero, err
	}
	switch base := agg.Base(); {
	case base.Version() == 0:
		return zero, fmt.Errorf("%w: %s", ErrNotFound, id)
	case base.Discarded():
		return zero, fmt.Errorf("%w: %s is discarded", ErrNotFound, id)
	}
	return agg, nil
}

// remember caches agg and takes a snapshot if enough events were replayed. Both
// are optimisations: a failure only means the next Get replays more.
func (r *Repository[T]) remember(ctx context.Context, agg T, fromVersion int64, replayed int) {
	base := agg.Base()
	if replayed == 0 && r.cache != nil {
		return // the cache already holds this version
	}
	if base.Discarded() {
		if r.cache != nil {
			c := cached{version: base.Version(), discarded: true}
			r.cache.put(base.ID(), c, c.newer)
		}
		return
	}
	if r.cache != nil {
		if state, err := json.Marshal(agg); err == nil {
			c := cached{version: base.Version(), state: state}
			r.cache.put(base.ID(), c, c.newer)
		}
	}
	if r.config.SnapshotEvery > 0 && base.Version()-fromVersion >= r.config.SnapshotEvery {
		ctx := context.WithoutCancel(ctx)
		release, err := r.store.Mapper.PrepareKeys(ctx, []uuid.UUID{base.ID()}, true)
		defer release()
		if err != nil {
			return
		}
		if it, err := r.store.Mapper.SnapshotItem(agg, r.config.SnapshotTopic); err == nil {
			_ = r.config.Snapshots.InsertSnapshot(ctx, it)
		}
	}
}
