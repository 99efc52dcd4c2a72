package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// open returns a Recorder on a new database file of the test's own.
func open(t testing.TB, opts sqlite.Options) *sqlite.Recorder {
	t.Helper()
	r, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "events.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.ProcessRecorder {
		return open(t, sqlite.Options{})
	})
}
