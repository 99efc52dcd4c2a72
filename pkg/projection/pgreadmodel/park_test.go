package pgreadmodel_test

import (
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
