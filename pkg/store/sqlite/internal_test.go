package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestMigrationsEmbedded(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || SchemaVersion != len(ms) {
		t.Fatalf("%d migrations, SchemaVersion %d", len(ms), SchemaVersion)
	}
}

// TestConnectionSettings checks what the writer and the readers run with.
// The settings come from the DSN, so connections database/sql opens later
// get them too.
func TestConnectionSettings(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		sync int
		busy int64
	}{
		{Options{}, 2, DefaultBusyTimeout.Milliseconds()},
		{Options{Synchronous: "normal", BusyTimeout: 1500 * time.Millisecond}, 1, 1500},
	} {
		r, err := Open(t.Context(), filepath.Join(t.TempDir(), "events.db"), tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		check := func(reader bool, pragma string, want any) {
			t.Helper()
			db, who := r.wdb, "writer"
			if reader {
				db, who = r.rdb, "reader"
			}
			var got any
			if err := db.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatalf("%s PRAGMA %s: %v", who, pragma, err)
			}
			if b, ok := got.([]byte); ok {
				got = string(b)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%+v: %s PRAGMA %s = %v, want %v", tc.opts, who, pragma, got, want)
			}
		}
		for _, reader := range []bool{false, true} {
			check(reader, "journal_mode", "wal")
			check(reader, "busy_timeout", tc.busy)
			check(reader, "synchronous", tc.sync)
		}
		check(false, "query_only", 0)
		check(true, "query_only", 1)
		if _, err := r.rdb.ExecContext(t.Context(), "DELETE FROM events"); err == nil {
			t.Error("a reader connection can write")
		}
	}
}
