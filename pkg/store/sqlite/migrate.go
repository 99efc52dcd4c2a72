package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/eventlog/eventlog/pkg/store"
)

// migrationFS holds the schema, one file per version: NNNN_name.sql, numbered
// from 1 without gaps. A released file is never edited; a change is a new one.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	ms := make([]migration, 0, len(names))
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("sqlite: migration %s: name must be NNNN_name.sql", base)
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("sqlite: migration %s: expected version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this package writes and understands:
// the number of embedded migrations (a test checks they agree).
const SchemaVersion = 4

// Migrate switches the database to WAL mode (a lasting property of the
// file), brings its schema up to SchemaVersion in one transaction, and fails with ErrSchemaTooNew if the database was migrated
// by a newer binary. It is idempotent and safe against other processes
// migrating the same file at the same time. Open calls it; a Recorder made
// by New needs it once before use.
func (r *Recorder) Migrate(ctx context.Context) error {
	if r.closed.Load() {
		return store.ErrClosed
	}
	ms, err := migrations()
	if err == nil && len(ms) != SchemaVersion {
		err = fmt.Errorf("sqlite: %d migrations embedded, SchemaVersion is %d", len(ms), SchemaVersion)
	}
	if err != nil {
		return err
	}
	err = r.writeConn(ctx, func(conn *sql.Conn) error {
		// journal_mode cannot change inside a transaction. WAL is a property
		// of the file: once set, every connection uses it. An in-memory
		// database stays in mode "memory".
		var mode string
		err := retryBusy(ctx, func() error {
			return queryRow(ctx, conn, "PRAGMA journal_mode=WAL", nil, &mode)
		})
		if err != nil {
			return fmt.Errorf("sqlite: migrate: set WAL mode: %w", describe(ctx, err))
		}
		r.journalMode = strings.ToLower(mode)
		return r.inTx(ctx, conn, func(conn *sql.Conn) error { return migrate(ctx, conn, ms, r.log) })
	})
	if err != nil {
		return err
	}
	r.migrated.Store(true)
	return nil
}

func migrate(ctx context.Context, conn *sql.Conn, ms []migration, log *slog.Logger) error {
	_, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS eventlog_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TEXT NOT NULL
		) STRICT`)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", describe(ctx, err))
	}
	var current int
	if err := queryRow(ctx, conn, `SELECT COALESCE(MAX(version), 0) FROM eventlog_migrations`, nil, &current); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", describe(ctx, err))
	}
	if current > len(ms) {
		return fmt.Errorf("%w: the database is at schema version %d, this binary knows versions up to %d; upgrade it before opening this database",
			ErrSchemaTooNew, current, len(ms))
	}
	for _, m := range ms[current:] {
		if _, err := conn.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, describe(ctx, err))
		}
		_, err := conn.ExecContext(ctx, `INSERT INTO eventlog_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.version, m.name, time.Now().UTC().Format(time.RFC3339Nano))
		if err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, describe(ctx, err))
		}
		log.InfoContext(ctx, "sqlite: applied migration", slogMigration, m.name)
	}
	return nil
}

const slogMigration = "migration"
