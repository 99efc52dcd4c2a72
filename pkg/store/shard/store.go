package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// ErrCrossShard reports an operation that would span shards: an append of
// items of entities on different shards, a transaction or a notification
// log read over a store of more than one shard.
var ErrCrossShard = errors.New("shard: the operation spans shards")

// A Recorder is one shard's store.
type Recorder interface {
	store.ProcessRecorder
	store.SnapshotRecorder
}

// A Store is a store spread over shards: it routes each entity's events and
// snapshots to the entity's shard (ShardOf), and keeps the tracking of
// projections on the home shard, shard 0. With one shard it is that shard.
// It implements store.ProcessRecorder, store.SequencesReader,
// store.SnapshotRecorder, store.KeyRecorder and store.Notifier.
type Store struct {
	shards []Recorder
}

var (
	_ store.ProcessRecorder  = (*Store)(nil)
	_ store.SequencesReader  = (*Store)(nil)
	_ store.SnapshotRecorder = (*Store)(nil)
	_ store.KeyRecorder      = (*Store)(nil)
	_ store.Notifier         = (*Store)(nil)
)

// New returns a store over shards, in shard order.
func New(shards ...Recorder) (*Store, error) {
	if len(shards) < 1 || len(shards) > MaxShards {
		return nil, fmt.Errorf("shard: a store needs from 1 to %d shards, got %d", MaxShards, len(shards))
	}
	for i, s := range shards {
		if s == nil {
			return nil, fmt.Errorf("shard: shard %d is nil", i)
		}
	}
	return &Store{shards: shards}, nil
}

// Len returns the shard count.
func (s *Store) Len() int { return len(s.shards) }

// Shard returns shard i.
func (s *Store) Shard(i int) Recorder { return s.shards[i] }

// Home returns the home shard (shard 0).
func (s *Store) Home() Recorder { return s.shards[0] }

// ShardOf returns the shard index of entity id.
func (s *Store) ShardOf(id uuid.UUID) int {
	if len(s.shards) == 1 {
		return 0
	}
	return ShardOf(id, len(s.shards))
}

func (s *Store) of(id uuid.UUID) Recorder { return s.shards[s.ShardOf(id)] }

// InsertEvents appends items to their entities' shard: they must all belong to
// one shard, else it fails with ErrCrossShard and appends nothing.
func (s *Store) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	if len(items) == 0 || len(s.shards) == 1 {
		return s.shards[0].InsertEvents(ctx, items)
	}
	first := s.ShardOf(items[0].SequenceID)
	for _, it := range items[1:] {
		if i := s.ShardOf(it.SequenceID); i != first {
			return nil, fmt.Errorf("%w: %s is on shard %d, %s on shard %d: append them separately", ErrCrossShard, items[0].SequenceID, first, it.SequenceID, i)
		}
	}
	return s.shards[first].InsertEvents(ctx, items)
}

// SelectEvents reads the items of sequenceID from its shard.
func (s *Store) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	return s.of(sequenceID).SelectEvents(ctx, sequenceID, q)
}

// SelectSequences reads each sequence from its shard: one call per shard
// involved.
func (s *Store) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	byShard := make(map[int]map[uuid.UUID]store.Query)
	for id, q := range queries {
		i := s.ShardOf(id)
		if byShard[i] == nil {
			byShard[i] = make(map[uuid.UUID]store.Query)
		}
		byShard[i][id] = q
	}
	out := make(map[uuid.UUID][]store.SequencedItem, len(queries))
	for i, qs := range byShard {
		if sr, ok := s.shards[i].(store.SequencesReader); ok {
			got, err := sr.SelectSequences(ctx, qs)
			if err != nil {
				return nil, err
			}
			for id, items := range got {
				out[id] = items
			}
			continue
		}
		for id, q := range qs {
			items, err := s.shards[i].SelectEvents(ctx, id, q)
			if err != nil {
				return nil, err
			}
			if len(items) > 0 {
				out[id] = items
			}
		}
	}
	return out, nil
}

// SelectNotifications reads the notification log. Each shard has a log of its
// own, with no order between them: over more than one shard it fails with
// ErrCrossShard (read each Shard's log).
func (s *Store) SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	if len(s.shards) > 1 {
		return nil, s.crossLog()
	}
	return s.shards[0].SelectNotifications(ctx, after, limit)
}

// MaxNotificationID is ApplicationRecorder.MaxNotificationID; over more than
// one shard it fails with ErrCrossShard, as SelectNotifications does.
func (s *Store) MaxNotificationID(ctx context.Context) (int64, error) {
	if len(s.shards) > 1 {
		return 0, s.crossLog()
	}
	return s.shards[0].MaxNotificationID(ctx)
}

func (s *Store) crossLog() error {
	return fmt.Errorf("%w: the store has %d shards, each with a notification log of its own: read each shard's log (or the events topics, which carry every shard's events)", ErrCrossShard, len(s.shards))
}

// InTx runs fn in a transaction on the home shard, where the tracking of
// projections is kept. Items that fn appends must belong to the home shard
// (InsertEvents fails with ErrCrossShard for others).
func (s *Store) InTx(ctx context.Context, fn func(store.Tx) error) error {
	if len(s.shards) == 1 {
		return s.shards[0].InTx(ctx, fn)
	}
	return s.shards[0].InTx(ctx, func(tx store.Tx) error { return fn(homeTx{tx, s}) })
}

// Tracking reads a tracking record of the home shard.
func (s *Store) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	return s.shards[0].Tracking(ctx, name, topic, partition)
}

// InsertSnapshot stores a snapshot on its entity's shard.
func (s *Store) InsertSnapshot(ctx context.Context, item store.SequencedItem) error {
	return s.of(item.SequenceID).InsertSnapshot(ctx, item)
}

// LatestSnapshot reads a snapshot from its entity's shard.
func (s *Store) LatestSnapshot(ctx context.Context, sequenceID uuid.UUID, upTo int64) (store.SequencedItem, error) {
	return s.of(sequenceID).LatestSnapshot(ctx, sequenceID, upTo)
}

// homeTx is a transaction of the home shard that refuses entities of others.
type homeTx struct {
	store.Tx
	s *Store
}

func (t homeTx) check(id uuid.UUID) error {
	if i := t.s.ShardOf(id); i != 0 {
		return fmt.Errorf("%w: %s is on shard %d, and a transaction runs on the home shard 0", ErrCrossShard, id, i)
	}
	return nil
}

func (t homeTx) InsertEvents(ctx context.Context, items []store.SequencedItem) ([]int64, error) {
	for _, it := range items {
		if err := t.check(it.SequenceID); err != nil {
			return nil, err
		}
	}
	return t.Tx.InsertEvents(ctx, items)
}

func (t homeTx) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	if err := t.check(sequenceID); err != nil {
		return nil, err
	}
	return t.Tx.SelectEvents(ctx, sequenceID, q)
}

// keysOf returns the store.KeyRecorder of entity seq's shard.
func (s *Store) keysOf(seq uuid.UUID) (store.KeyRecorder, error) {
	i := s.ShardOf(seq)
	kr, ok := s.shards[i].(store.KeyRecorder)
	if !ok {
		return nil, fmt.Errorf("shard: shard %d (%T) keeps no data keys", i, s.shards[i])
	}
	return kr, nil
}

// DataKey implements store.KeyRecorder on seq's shard.
func (s *Store) DataKey(ctx context.Context, seq uuid.UUID) (store.WrappedKey, error) {
	kr, err := s.keysOf(seq)
	if err != nil {
		return store.WrappedKey{}, err
	}
	return kr.DataKey(ctx, seq)
}

// CreateDataKey implements store.KeyRecorder on k.SequenceID's shard.
func (s *Store) CreateDataKey(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error) {
	kr, err := s.keysOf(k.SequenceID)
	if err != nil {
		return store.WrappedKey{}, err
	}
	return kr.CreateDataKey(ctx, k)
}

// Forget implements store.KeyRecorder on seq's shard.
func (s *Store) Forget(ctx context.Context, seq uuid.UUID) (int64, error) {
	kr, err := s.keysOf(seq)
	if err != nil {
		return 0, err
	}
	return kr.Forget(ctx, seq)
}

// Notify implements store.Notifier over the shards that are Notifiers: the
// channel receives a value after items may have committed on any of them, and
// is closed when ctx ends (and the shards' channels are).
func (s *Store) Notify(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for _, sh := range s.shards {
		n, ok := sh.(store.Notifier)
		if !ok {
			continue
		}
		ch := n.Notify(ctx)
		wg.Go(func() {
			for range ch {
				select {
				case out <- struct{}{}:
				default: // coalesced
				}
			}
		})
	}
	go func() {
		<-ctx.Done()
		wg.Wait()
		close(out)
	}()
	return out
}
