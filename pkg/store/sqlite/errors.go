package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/eventlog/eventlog/internal/backoff"
	"github.com/eventlog/eventlog/pkg/store"
)

var (
	// ErrSchemaTooNew reports a database migrated by a newer version of this
	// package: this binary does not know its schema and refuses to use it.
	ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this binary")

	errNotMigrated = errors.New("sqlite: schema not checked: call Migrate before using a Recorder made by New")
	errTxDone      = errors.New("sqlite: transaction already committed or rolled back")
)

// code returns the SQLite result code of err (extended, as the driver enables
// extended codes), or 0.
func code(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

func isBusy(err error) bool {
	c := code(err) & 0xff
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

func isUnique(err error) bool {
	c := code(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// retryBusy runs fn until it returns something other than SQLITE_BUSY or ctx
// ends. SQLite's busy_timeout already waits inside each call; this covers
// pools opened without one, and waits longer than one.
func retryBusy(ctx context.Context, fn func() error) error {
	wait := backoff.New(time.Millisecond, 100*time.Millisecond)
	for {
		err := fn()
		if err == nil || !isBusy(err) {
			return err
		}
		if err := wait.Wait(ctx); err != nil {
			return fmt.Errorf("database is locked by another connection: %w", err)
		}
	}
}

// describe turns an error from the driver into what a caller can branch on:
// the context's error when the context ended (SQLite reports an interrupted
// statement), store.ErrClosed for a closed pool, err otherwise.
func describe(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if errors.Is(err, sql.ErrConnDone) || (err != nil && err.Error() == "sql: database is closed") {
		return store.ErrClosed
	}
	return err
}
