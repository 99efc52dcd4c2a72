package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

func TestOpenMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "events.db")
	_, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open in a missing directory = %v, want an error saying the directory does not exist", err)
	}
}

func TestOpenDirectoryIsAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(t.Context(), filepath.Join(file, "events.db"), sqlite.Options{})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Open under a regular file = %v, want an error saying it is not a directory", err)
	}
}

func TestOpenUnwritableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: permission bits do not stop writes")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	_, err := sqlite.Open(t.Context(), filepath.Join(dir, "events.db"), sqlite.Options{})
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("Open in a read-only directory = %v, want an error saying it is not writable", err)
	}
}

func TestOpenBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		opts       sqlite.Options
		want       string
	}{
		{"empty path", "", sqlite.Options{}, "empty path"},
		{"URI", "file:events.db?mode=ro", sqlite.Options{}, "not a URI"},
		{"synchronous OFF", "x.db", sqlite.Options{Synchronous: "OFF"}, "not durable"},
		{"negative readers", "x.db", sqlite.Options{MaxReaders: -1}, "MaxReaders"},
	} {
		_, err := sqlite.Open(t.Context(), tc.path, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestOpenNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(t.Context(), path, sqlite.Options{}); err == nil {
		t.Fatal("Open of a file that is not a database succeeded")
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	ctx := t.Context()
	r, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	ids, err := r.InsertEvents(ctx, storetest.Items(id, 0, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.InTx(ctx, func(tx store.Tx) error {
		return tx.SetTracking(ctx, store.Tracking{Name: "p", Position: 9})
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.InsertSnapshot(ctx, storetest.Item(id, 2)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer r.Close()
	got, err := r.SelectEvents(ctx, id, store.Query{})
	if err != nil || len(got) != 3 {
		t.Fatalf("after reopen SelectEvents = %d items, %v; want 3", len(got), err)
	}
	if max, err := r.MaxNotificationID(ctx); err != nil || max != ids[2] {
		t.Fatalf("after reopen MaxNotificationID = %d, %v; want %d", max, err, ids[2])
	}
	if pos, err := r.Tracking(ctx, "p", "", 0); err != nil || pos != 9 {
		t.Fatalf("after reopen Tracking = %d, %v; want 9", pos, err)
	}
	if _, err := r.LatestSnapshot(ctx, id, -1); err != nil {
		t.Fatalf("after reopen LatestSnapshot: %v", err)
	}
	// New ids continue past the old ones.
	more, err := r.InsertEvents(ctx, storetest.Items(id, 3, 1))
	if err != nil || more[0] <= ids[2] {
		t.Fatalf("after reopen InsertEvents = %v, %v; want an id past %d", more, err, ids[2])
	}
}

func TestSchemaNewerThanBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	ctx := t.Context()
	r, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	// A later binary migrated the file.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO eventlog_migrations (version, name, applied_at) VALUES (?, 'from_the_future', '')`,
		sqlite.SchemaVersion+1)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	_, err = sqlite.Open(ctx, path, sqlite.Options{})
	if !errors.Is(err, sqlite.ErrSchemaTooNew) {
		t.Fatalf("Open of a newer schema = %v, want sqlite.ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("error %q does not say what to do", err)
	}
}

func TestMemory(t *testing.T) {
	ctx := t.Context()
	r, err := sqlite.Open(ctx, sqlite.MemoryPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	id := uuid.New()
	if _, err := r.InsertEvents(ctx, storetest.Items(id, 0, 5)); err != nil {
		t.Fatal(err)
	}
	// Two in-memory recorders are two databases.
	r2, err := sqlite.Open(ctx, sqlite.MemoryPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if got, _ := r2.SelectEvents(ctx, id, store.Query{}); len(got) != 0 {
		t.Fatalf("a second in-memory recorder sees %d items of the first", len(got))
	}
	// The database survives the pool's idle handling: reads see the writes.
	for range 3 {
		got, err := r.SelectEvents(ctx, id, store.Query{})
		if err != nil || len(got) != 5 {
			t.Fatalf("in-memory SelectEvents = %d items, %v; want 5", len(got), err)
		}
	}
}

func TestMemoryConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) store.ProcessRecorder {
		r, err := sqlite.Open(t.Context(), sqlite.MemoryPath, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}, storetest.Goroutines(100))
}

func TestNew(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	db, err := sql.Open("sqlite", sqlite.DSN(path, sqlite.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := sqlite.New(db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 1)); err == nil || !strings.Contains(err.Error(), "Migrate") {
		t.Fatalf("InsertEvents before Migrate = %v, want an error asking for Migrate", err)
	}
	if err := r.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := r.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if _, err := r.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 1)); err != nil {
		t.Fatal(err)
	}
	// A Tx runs the caller's SQL in the same transaction.
	if _, err := db.ExecContext(ctx, `CREATE TABLE read_model (id TEXT PRIMARY KEY, n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	err = r.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.(*sqlite.Tx).ExecContext(ctx, `INSERT INTO read_model VALUES ('a', 1)`); err != nil {
			return err
		}
		return tx.SetTracking(ctx, store.Tracking{Name: "rm", Position: 0})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = r.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.(*sqlite.Tx).ExecContext(ctx, `UPDATE read_model SET n = n + 1`); err != nil {
			return err
		}
		return tx.SetTracking(ctx, store.Tracking{Name: "rm", Position: 0}) // a redelivery
	})
	if !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("redelivered InTx = %v, want store.ErrTrackingConflict", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT n FROM read_model`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("read model n = %d, %v; want 1 (the redelivery rolled back)", n, err)
	}
	// Close leaves the caller's pool open.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("db after Recorder.Close: %v", err)
	}
}

func TestNewPoolWithoutBusyTimeout(t *testing.T) {
	// A pool without busy_timeout and with several connections: SQLITE_BUSY
	// must not reach the caller.
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	var recs []*sqlite.Recorder
	for range 2 {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		r, err := sqlite.New(db, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	raceSamePosition(t, recs, 40)
}

func TestClose(t *testing.T) {
	ctx := t.Context()
	r, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wake := r.Notify(ctx)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case _, ok := <-wake:
		if ok {
			t.Fatal("Notify channel delivered instead of closing")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close left a Notify channel open")
	}
	if _, ok := <-r.Notify(ctx); ok {
		t.Fatal("Notify after Close returned an open channel")
	}
	id := uuid.New()
	for name, err := range map[string]error{
		"InsertEvents": func() error { _, err := r.InsertEvents(ctx, storetest.Items(id, 0, 1)); return err }(),
		"SelectEvents": func() error { _, err := r.SelectEvents(ctx, id, store.Query{}); return err }(),
		"SelectNotifications": func() error {
			_, err := r.SelectNotifications(ctx, 0, 10)
			return err
		}(),
		"MaxNotificationID": func() error { _, err := r.MaxNotificationID(ctx); return err }(),
		"Tracking":          func() error { _, err := r.Tracking(ctx, "a", "", 0); return err }(),
		"InTx":              r.InTx(ctx, func(store.Tx) error { return nil }),
		"InsertSnapshot":    r.InsertSnapshot(ctx, storetest.Item(id, 0)),
		"LatestSnapshot":    func() error { _, err := r.LatestSnapshot(ctx, id, -1); return err }(),
		"Migrate":           r.Migrate(ctx),
	} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want store.ErrClosed", name, err)
		}
	}
}

func TestContext(t *testing.T) {
	r := open(t, sqlite.Options{})
	ctx := t.Context()
	id := uuid.New()

	// A context that ends before commit: nothing is kept.
	cctx, cancel := context.WithCancel(ctx)
	err := r.InTx(cctx, func(tx store.Tx) error {
		if _, err := tx.InsertEvents(cctx, storetest.Items(id, 0, 2)); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("InTx whose context ended = %v, want context.Canceled", err)
	}
	if got, _ := r.SelectEvents(ctx, id, store.Query{}); len(got) != 0 {
		t.Fatalf("a transaction whose context ended committed %d items", len(got))
	}

	// A writer waiting for the write lock gives up when its context ends.
	locked, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- r.InTx(ctx, func(store.Tx) error {
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer tcancel()
	_, err = r.InsertEvents(tctx, storetest.Items(id, 0, 1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("InsertEvents waiting for the write lock = %v, want context.DeadlineExceeded", err)
	}
	// Reads do not wait for the writer.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	if _, err := r.SelectEvents(rctx, id, store.Query{}); err != nil {
		t.Fatalf("SelectEvents during a write transaction: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := r.InsertEvents(ctx, storetest.Items(id, 0, 1)); err != nil {
		t.Fatalf("InsertEvents after the lock was released: %v", err)
	}
}

func TestTxAfterInTx(t *testing.T) {
	r := open(t, sqlite.Options{})
	ctx := t.Context()
	var kept store.Tx
	if err := r.InTx(ctx, func(tx store.Tx) error { kept = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.InsertEvents(ctx, storetest.Items(uuid.New(), 0, 1)); err == nil {
		t.Fatal("InsertEvents on a finished Tx succeeded")
	}
	if err := kept.SetTracking(ctx, store.Tracking{Name: "x", Position: 1}); err == nil {
		t.Fatal("SetTracking on a finished Tx succeeded")
	}
}

func TestPanicInTx(t *testing.T) {
	r := open(t, sqlite.Options{})
	ctx := t.Context()
	id := uuid.New()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic did not propagate")
			}
		}()
		r.InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.InsertEvents(ctx, storetest.Items(id, 0, 1)); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if got, _ := r.SelectEvents(ctx, id, store.Query{}); len(got) != 0 {
		t.Fatal("a panicking transaction committed")
	}
	if _, err := r.InsertEvents(ctx, storetest.Items(id, 0, 1)); err != nil {
		t.Fatalf("InsertEvents after a panicking transaction: %v", err)
	}
}

func TestEmptyState(t *testing.T) {
	r := open(t, sqlite.Options{})
	ctx := t.Context()
	id := uuid.New()
	items := storetest.Items(id, 0, 2)
	items[0].State, items[1].State = nil, []byte{}
	if _, err := r.InsertEvents(ctx, items); err != nil {
		t.Fatal(err)
	}
	got, err := r.SelectEvents(ctx, id, store.Query{})
	if err != nil || len(got) != 2 || len(got[0].State) != 0 || len(got[1].State) != 0 {
		t.Fatalf("empty states read back as %+v, %v", got, err)
	}
}

func TestDSNRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("sub", 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", sqlite.DSN("sub/x.db", sqlite.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (x)"); err != nil {
		t.Fatalf("relative path: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "x.db")); err != nil {
		t.Fatal(err)
	}
}
