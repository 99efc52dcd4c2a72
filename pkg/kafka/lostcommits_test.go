package kafka_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// forgetfulStore is a handler and its tracking over a store that can lose
// its last commits, as PostgreSQL with synchronous_commit off does in a crash
// or a failover to a standby: lose takes the tracking and the applied records
// back to an earlier offset, after the handler had returned for them.
type forgetfulStore struct {
	mu       sync.Mutex
	tracking map[int32]int64
	applied  map[int32][]int64
	failNext int // attempts to fail, as while the store is down
}

func newForgetfulStore() *forgetfulStore {
	return &forgetfulStore{tracking: map[int32]int64{}, applied: map[int32][]int64{}}
}

func (s *forgetfulStore) HandleBatch(_ context.Context, recs []wire.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNext > 0 {
		s.failNext--
		return errors.New("database unavailable")
	}
	for _, r := range recs { // the tracking guard: nothing applied twice
		if stored, ok := s.tracking[r.Partition]; ok && r.Offset <= stored {
			return &store.TrackingConflictError{Tracking: store.Tracking{Name: "projector", Topic: r.Topic, Partition: r.Partition, Position: r.Offset}, Stored: stored}
		}
	}
	for _, r := range recs {
		s.applied[r.Partition] = append(s.applied[r.Partition], r.Offset)
		s.tracking[r.Partition] = r.Offset
	}
	return nil
}

func (s *forgetfulStore) Tracking(_ context.Context, _, _ string, p int32) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos, ok := s.tracking[p]; ok {
		return pos, nil
	}
	return -1, nil
}

// lose takes partition p back to offset to, and fails the next fails
// attempts.
func (s *forgetfulStore) lose(p int32, to int64, fails int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tracking[p] = to
	s.applied[p] = slices.DeleteFunc(s.applied[p], func(o int64) bool { return o > to })
	s.failNext = fails
}

func (s *forgetfulStore) offsets(p int32) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.applied[p])
}

// TestConsumerRefetchesLostCommits: the store loses the last ten records a
// consumer handled, then fails (the server restarting, or a standby being
// promoted) or stays quiet (it came back while no batch was tried). With
// VerifyTracking the consumer fetches the lost records again, so the store
// ends with every offset once and in order; without it, it would go on after
// the records it had handled and leave a gap.
func TestConsumerRefetchesLostCommits(t *testing.T) {
	for _, c := range []struct {
		name  string
		fails int
	}{{"after a failed batch", 3}, {"after an idle spell", 0}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cl := newTopicCluster(t, 1)
			prod := manualProducer(t, cl)
			produceN(t, prod, 20, 0)
			s := newForgetfulStore()
			cfg := consumerConfig(t, cl, "g-lost")
			cfg.VerifyTracking = true
			cons := newConsumer(t, cfg, s, s)
			runConsumer(t, cons)
			// The consumer's stats count a batch after it noted the batch's
			// end, from which it measures its idle spell: waiting for them,
			// not for the store, the sleep below is a spell it sees whole.
			waitFor(t, 15*time.Second, "offsets 0..19 applied", func() bool {
				return len(s.offsets(0)) == 20 && cons.Stats().Records == 20
			})
			s.lose(0, 9, c.fails)
			if c.fails == 0 {
				time.Sleep(kafka.VerifyIdle + 50*time.Millisecond)
			}
			produceN(t, prod, 20, 0)
			waitFor(t, 15*time.Second, "offset 39 applied", func() bool {
				o := s.offsets(0)
				return len(o) > 0 && o[len(o)-1] == 39
			})
			if got := s.offsets(0); !slices.Equal(got, seq(0, 40)) {
				t.Fatalf("the store holds offsets %v, want 0..39 once each, in order", got)
			}
			if st := cons.Stats(); st.LostCommits != 1 {
				t.Errorf("stats %+v, want LostCommits 1", st)
			}
		})
	}
}
