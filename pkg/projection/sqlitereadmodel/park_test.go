package sqlitereadmodel_test

import (
	"testing"

	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

// TestParking: an entity whose event k the read model fails on stays at
// k-1, parked; a retry brings it up to date.
func TestParking(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	projtest.CheckParking(t, projtest.ParkEnv{
		Store: e.rec, Mapper: e.mapper, Policy: e.rm,
		Rows: func(t testing.TB) []readmodel.Row { return e.rows(t) },
		Log:  func(t testing.TB) []store.Notification { return projtest.Notifications(t, e.rec) },
	}, 1)
}
