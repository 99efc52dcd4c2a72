package shard

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// A MergedLog reads the notification logs of every shard of a Store as one
// log, for a reader that reads from the start to the end, each call after
// the last id it got or after the end of a page it read before (a read
// model's rebuild, which may go back to a page boundary when its swap is
// retried). It gives the notifications ids of its own, 1, 2, ... in the
// order it returns them: they mean nothing outside this MergedLog. Each
// shard's items come in that shard's log order, so each entity's in position
// order (an entity lives on one shard); the shards' logs are interleaved in
// no particular order. It reads one sequence's events (SelectEvents) from its
// shard. It is safe for concurrent use, but readers share its position.
type MergedLog struct {
	s *Store

	mu     sync.Mutex
	last   int64             // the last id given
	at     []int64           // per shard, the last notification id read
	starts map[int64][]int64 // per page end given (and 0), the shards' positions there
}

// NewMergedLog returns a merged log of s's shards, at the start of each.
func NewMergedLog(s *Store) *MergedLog {
	at := make([]int64, len(s.shards))
	return &MergedLog{s: s, at: at, starts: map[int64][]int64{0: slices.Clone(at)}}
}

// SelectNotifications returns up to limit notifications after after, which
// must be 0, or the last id of a page this log returned.
func (m *MergedLog) SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if after != m.last {
		at, ok := m.starts[after]
		if !ok {
			return nil, fmt.Errorf("shard: merged log: no page ends at %d (it reads forward from 0 or from the end of a page it returned)", after)
		}
		m.at, m.last = slices.Clone(at), after
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []store.Notification
	for i, sh := range m.s.shards {
		if len(out) >= limit {
			break
		}
		ns, err := sh.SelectNotifications(ctx, m.at[i], limit-len(out))
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		if len(ns) == 0 {
			continue
		}
		m.at[i] = ns[len(ns)-1].ID
		for _, n := range ns {
			m.last++
			n.ID = m.last
			out = append(out, n)
		}
	}
	if len(out) > 0 {
		m.starts[m.last] = slices.Clone(m.at)
	}
	return out, nil
}

// MaxNotificationID returns the last id given, plus one if some shard has
// notifications not read yet: the merged log cannot know how many.
func (m *MergedLog) MaxNotificationID(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, sh := range m.s.shards {
		n, err := sh.MaxNotificationID(ctx)
		if err != nil {
			return 0, fmt.Errorf("shard %d: %w", i, err)
		}
		if n > m.at[i] {
			return m.last + 1, nil
		}
	}
	return m.last, nil
}

// SelectEvents reads one sequence's events from its shard.
func (m *MergedLog) SelectEvents(ctx context.Context, sequenceID uuid.UUID, q store.Query) ([]store.SequencedItem, error) {
	return m.s.SelectEvents(ctx, sequenceID, q)
}
