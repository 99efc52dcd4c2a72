package pgreadmodel_test

import (
	"math/rand/v2"

	"testing"

	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

// TestParking: an entity whose event k the read model fails on stays at
// k-1, parked, through a rebuild; a retry brings it up to date.
func TestParking(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	projtest.CheckParking(t, projtest.ParkEnv{
		Store: e.rec, Mapper: e.mapper, Policy: e.rm,
		Rows: func(t testing.TB) []readmodel.Row { return e.rows(t) },
		Log:  func(t testing.TB) []store.Notification { return e.log(t) },
		Rebuild: func(t testing.TB) {
			if _, err := e.rm.Rebuild(t.Context(), e.rec, e.mapper, pgreadmodel.RebuildOptions{PageSize: 50}); err != nil {
				t.Fatal(err)
			}
		},
	}, 1)
}

// TestRetryDuringRebuild retries a parked sequence while a rebuild runs: the
// rebuild, which read the sequence as parked, reads the parking again at the
// swap and rebuilds the sequence from its events.
func TestRetryDuringRebuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(21, 21))
	ents := projtest.History(t, rng, e.mapper, e.rec, 6, 300)
	log := e.log(t)
	x := ents[0]
	k := x.Version() / 2
	f := projtest.NewFault(x.ID(), k)
	r := e.runner(t, projtest.Faulty(e.rm, f))
	(&projtest.Consumer{T: t, Rng: rng, Handler: r, Name: name, MaxBatch: 40}).Run(projtest.Publish(rng, log, 2, 0))
	e.check(t, projtest.Without(log, x.ID(), k))
	f.On.Store(false)
	var retried bool
	st, err := e.rm.Rebuild(ctx, e.rec, e.mapper, pgreadmodel.RebuildOptions{PageSize: 20, Progress: func(done, total int64) {
		if retried || done == 0 {
			return
		}
		retried = true
		if res, err := r.Retry(ctx, x.ID()); err != nil || res.Parked {
			t.Errorf("retry during the rebuild: %+v, %v", res, err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !retried || st.Held == 0 {
		t.Fatalf("the retry did not happen while the rebuild held the sequence: %+v", st)
	}
	e.check(t, log)
}
