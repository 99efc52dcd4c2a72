package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/eventlog/eventlog/pkg/store"
)

// Synchronous is a value of SQLite's PRAGMA synchronous.
type Synchronous string

const (
	// SyncFull syncs the write-ahead log on every commit: an acknowledged
	// append survives a process crash, an OS crash and a power failure.
	SyncFull Synchronous = "FULL"
	// SyncNormal syncs the write-ahead log only at checkpoints: an acknowledged
	// append survives a process crash, but the last commits may be lost on an OS
	// crash or power failure. The database file is never corrupted either way.
	SyncNormal Synchronous = "NORMAL"
)

// Defaults applied by Options.setDefaults.
const (
	DefaultBusyTimeout = 5 * time.Second
	DefaultMaxReaders  = 4
)

// Options configures a Recorder. The zero value is ready to use.
type Options struct {
	// BusyTimeout overrides how long one SQLite call waits for a lock another
	// connection holds (usually another process with the same file) before
	// SQLite reports the database busy; the recorder then keeps retrying until
	// the caller's context ends, so a busy database never surfaces as an error.
	// Zero means DefaultBusyTimeout. Used by Open only: New uses the *sql.DB as
	// it was configured.
	BusyTimeout time.Duration
	// Synchronous overrides PRAGMA synchronous. Zero means SyncFull. Used by
	// Open only.
	Synchronous Synchronous
	// MaxReaders overrides the size of the read connection pool. Zero means
	// DefaultMaxReaders. Used by Open only, and ignored for in-memory databases,
	// which have exactly one connection.
	MaxReaders int
	// Logger overrides where the recorder logs migrations and failed rollbacks.
	// Nil discards those messages.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.Synchronous == "" {
		o.Synchronous = SyncFull
	}
	if o.MaxReaders == 0 {
		o.MaxReaders = DefaultMaxReaders
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports options that cannot be used.
func (o Options) Validate() error {
	switch {
	case o.BusyTimeout < 0:
		return fmt.Errorf("sqlite: negative BusyTimeout %v", o.BusyTimeout)
	case o.MaxReaders < 0:
		return fmt.Errorf("sqlite: negative MaxReaders %d", o.MaxReaders)
	}
	switch Synchronous(strings.ToUpper(string(o.Synchronous))) {
	case "", SyncFull, SyncNormal:
	default:
		return fmt.Errorf("sqlite: Synchronous %q is not durable enough for an event store (use FULL or NORMAL)", o.Synchronous)
	}
	return nil
}

// MemoryPath, given to Open, selects a private in-memory database that lives
// as long as the Recorder. It has a single connection, so a read waits for an
// open write transaction to end; it is meant for tests and throwaway use.
const MemoryPath = ":memory:"

// A Recorder is a store.ProcessRecorder, store.SnapshotRecorder and
// store.Notifier on one SQLite database. It is safe for concurrent use.
type Recorder struct {
	// wdb runs write transactions, rdb everything else. They are the same pool
	// for New and for in-memory databases.
	wdb, rdb *sql.DB
	// reads runs the queries of rdb with statements prepared once.
	reads *stmtCache
	// wsem (capacity 1) admits one write transaction of this Recorder at a
	// time, in Go and under the caller's context, rather than in SQLite's busy
	// handler.
	wsem chan struct{}
	// owned reports that Close closes wdb and rdb (Open made them).
	owned bool

	log      *slog.Logger
	notifier notifier

	// journalMode is what PRAGMA journal_mode=WAL returned in Migrate.
	journalMode string

	migrated  atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var (
	_ store.ProcessRecorder  = (*Recorder)(nil)
	_ store.SnapshotRecorder = (*Recorder)(nil)
	_ store.Notifier         = (*Recorder)(nil)
)

// Open opens (creating it if needed) the SQLite database file at path,
// migrates its schema and returns a Recorder that owns the connections: one
// write connection and a pool of read connections. The file is put in WAL
// mode. The directory holding path must exist and be writable, since SQLite
// keeps its -wal and -shm files next to the database.
//
// Path MemoryPath (":memory:") opens a private in-memory database instead.
//
// ctx bounds opening and migrating only; it is not retained.
func Open(ctx context.Context, path string, opts Options) (*Recorder, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.Synchronous = Synchronous(strings.ToUpper(string(opts.Synchronous)))

	if path == MemoryPath {
		// Every connection to ":memory:" is a database of its own, so there
		// is exactly one, for reads and writes alike, and it must never be
		// closed while the Recorder lives.
		db, err := sql.Open("sqlite", ":memory:?"+pragmas(opts, false))
		if err != nil {
			return nil, fmt.Errorf("sqlite: open in-memory database: %w", err)
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
		r := newRecorder(db, db, opts, true)
		if err := r.Migrate(ctx); err != nil {
			db.Close()
			return nil, err
		}
		return r, nil
	}

	abs, err := checkPath(path)
	if err != nil {
		return nil, err
	}
	base := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()

	wdb, err := sql.Open("sqlite", base+"?"+pragmas(opts, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	rdb, err := sql.Open("sqlite", base+"?"+pragmas(opts, true))
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(opts.MaxReaders)
	rdb.SetMaxIdleConns(opts.MaxReaders)

	r := newRecorder(wdb, rdb, opts, true)
	if err := r.open(ctx, path); err != nil {
		wdb.Close()
		rdb.Close()
		return nil, err
	}
	return r, nil
}

// open migrates the file, checking it is in WAL mode.
func (r *Recorder) open(ctx context.Context, path string) error {
	if err := r.Migrate(ctx); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if r.journalMode != "wal" {
		return fmt.Errorf("sqlite: open %s: cannot use WAL mode (journal mode is %q); is the file on a network file system?", path, r.journalMode)
	}
	return nil
}

// New returns a Recorder on db, a pool opened with the "sqlite" driver of
// modernc.org/sqlite, for callers that keep their own tables (read models, for
// example) in the same database. New does no I/O: call Migrate before using
// the Recorder; until then every method fails.
//
// The Recorder uses db as configured, so its DSN decides per-connection
// PRAGMAs such as busy_timeout and synchronous; DSN returns the settings
// Open uses. Migrate switches the file to WAL mode. Every connection of db must reach the same database: for an in-memory
// one, call db.SetMaxOpenConns(1). Writes still run one at a time, under
// BEGIN IMMEDIATE. Close does not close db.
func New(db *sql.DB, opts Options) (*Recorder, error) {
	if db == nil {
		return nil, errors.New("sqlite: New with a nil *sql.DB")
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return newRecorder(db, db, opts, false), nil
}

// DSN returns the data source name Open uses for the write connection of the
// database file at path, for callers who open their own pool and pass it to
// New. It sets busy_timeout and synchronous; Migrate sets WAL mode.
func DSN(path string, opts Options) string {
	opts.setDefaults()
	// A relative path would read as a URI authority ("file://dir/..."): make
	// it absolute.
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String() + "?" + pragmas(opts, false)
}

func newRecorder(wdb, rdb *sql.DB, opts Options, owned bool) *Recorder {
	return &Recorder{
		wdb:      wdb,
		rdb:      rdb,
		reads:    newStmtCache(rdb),
		wsem:     make(chan struct{}, 1),
		owned:    owned,
		log:      opts.Logger,
		notifier: notifier{subs: make(map[chan struct{}]func() bool)},
	}
}

// pragmas returns the DSN query that configures each new connection.
func pragmas(opts Options, readOnly bool) string {
	ms := opts.BusyTimeout.Milliseconds()
	if ms == 0 && opts.BusyTimeout > 0 {
		ms = 1
	}
	q := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=synchronous(%s)", ms, strings.ToUpper(string(opts.Synchronous)))
	if readOnly {
		q += "&_pragma=query_only(1)"
	}
	return q
}

// checkPath explains, better than SQLite's "unable to open database file",
// why a database file could not be used, and returns its absolute path.
func checkPath(path string) (string, error) {
	if path == "" {
		return "", errors.New("sqlite: open: empty path (use sqlite.MemoryPath for an in-memory database)")
	}
	if strings.HasPrefix(path, "file:") {
		return "", fmt.Errorf("sqlite: open %s: Open takes a file path, not a URI; open a *sql.DB yourself and use New", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	dir := filepath.Dir(abs)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("sqlite: open %s: directory %s does not exist: %w", path, dir, fs.ErrNotExist)
	case err != nil:
		return "", fmt.Errorf("sqlite: open %s: %w", path, err)
	case !fi.IsDir():
		return "", fmt.Errorf("sqlite: open %s: %s is not a directory", path, dir)
	}
	// SQLite creates path-wal and path-shm next to the file, so the directory
	// must be writable even when the file exists.
	probe, err := os.CreateTemp(dir, ".eventlog-probe-*")
	if err != nil {
		return "", fmt.Errorf("sqlite: open %s: directory %s is not writable (SQLite keeps its -wal and -shm files there): %w", path, dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	fi, err = os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return abs, nil
	case err != nil:
		return "", fmt.Errorf("sqlite: open %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("sqlite: open %s: not a regular file", path)
	}
	f, err := os.OpenFile(abs, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("sqlite: open %s: file is not writable: %w", path, err)
	}
	f.Close()
	return abs, nil
}

// Close closes the Recorder: it closes every Notify channel and, if Open
// created the connections, waits for running queries and closes them. Methods
// called after Close fail with store.ErrClosed. Close is idempotent.
func (r *Recorder) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.notifier.close()
		r.closeErr = r.reads.close()
		if r.owned {
			if r.rdb != r.wdb {
				r.closeErr = errors.Join(r.closeErr, r.rdb.Close())
			}
			r.closeErr = errors.Join(r.closeErr, r.wdb.Close())
		}
		if r.closeErr != nil {
			r.closeErr = fmt.Errorf("sqlite: close: %w", r.closeErr)
		}
	})
	return r.closeErr
}

// Notify implements store.Notifier. The channel receives a value after each
// commit of this Recorder that appended events; writes by other processes to
// the same file are not seen, so a tailer must still poll.
func (r *Recorder) Notify(ctx context.Context) <-chan struct{} {
	return r.notifier.subscribe(ctx)
}

// usable reports why the Recorder cannot be used now, if it cannot.
func (r *Recorder) usable() error {
	if r.closed.Load() {
		return store.ErrClosed
	}
	if !r.migrated.Load() {
		return errNotMigrated
	}
	return nil
}

// ReadDB returns the Recorder's pool of read connections, for queries of
// tables kept in the same file (read models). It belongs to the Recorder:
// do not close it, and do not write through it.
func (r *Recorder) ReadDB() *sql.DB { return r.rdb }
