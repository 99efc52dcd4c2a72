package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/pkg/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrSchemaTooNew reports a schema migrated by a newer program than this one.
var ErrSchemaTooNew = errors.New("postgres: schema is newer than this program")

// ErrLogAhead reports stored notification ids above any this server can
// assign: the data was restored (pg_dump) into a cluster whose transaction ids
// are lower than the original's, and new items would sort before old ones.
var ErrLogAhead = errors.New("postgres: notification log is ahead of the server's transaction ids")

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations, rendered for n, in version order.
// Files are named NNNN_description.sql and numbered from 1 without gaps.
func migrations(n names) ([]migration, error) {
	files, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for i, f := range files { // fs.Glob returns sorted names
		base := path.Base(f)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != i+1 {
			return nil, fmt.Errorf("postgres: migration %s: want name %04d_description.sql", base, i+1)
		}
		text, err := migrationFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(base).Option("missingkey=error").
			Funcs(template.FuncMap{"name": n.name}).Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("postgres: migration %s: %w", base, err)
		}
		var sb strings.Builder
		if err := tmpl.Execute(&sb, n); err != nil {
			return nil, fmt.Errorf("postgres: migration %s: %w", base, err)
		}
		out = append(out, migration{version: v, name: base, sql: sb.String()})
	}
	return out, nil
}

// SchemaVersion is the schema version this program migrates to.
func SchemaVersion() int {
	files, _ := fs.Glob(migrationFS, "migrations/*.sql")
	return len(files)
}

// Migrate creates the schema if needed and applies the migrations it has not
// applied yet, each in its own transaction. Concurrent calls, from this process
// or others, are serialised with an advisory lock; calling it again is a no-op.
// A schema at a version newer than this program knows fails with
// ErrSchemaTooNew and is left alone.
func (r *Recorder) Migrate(ctx context.Context) (err error) {
	if r.closed.Load() {
		return store.ErrClosed
	}
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Release()
	key := r.n.lockKey("migrate", "")
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return fmt.Errorf("postgres: migrate: take lock: %w", err)
	}
	defer func() {
		// Unlock even if ctx is done; if that fails, closing the session
		// releases the lock.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", key); uerr != nil {
			_ = conn.Conn().Close(uctx)
		}
	}()

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", r.opts.Schema).Scan(&exists); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+r.n.Schema); err != nil {
			return fmt.Errorf("postgres: migrate: create schema %s: %w", r.opts.Schema, err)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+r.n.Version+
		" (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	current, err := schemaVersion(ctx, conn.Conn(), r.n)
	if err != nil {
		return err
	}
	if current > len(r.migrations) {
		return fmt.Errorf("%w: schema %q is at version %d, this program knows versions up to %d: upgrade the program (or point it at another schema)",
			ErrSchemaTooNew, r.opts.Schema, current, len(r.migrations))
	}
	for _, m := range r.migrations[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+r.n.Version+" (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migrate: apply %s: %w", m.name, err)
		}
		r.opts.Logger.LogAttrs(ctx, slog.LevelInfo, "applied migration", slog.String(logKeySchema, r.opts.Schema), slog.String(logKeyMigration, m.name))
	}
	return r.checkLogAhead(ctx, conn.Conn())
}

// checkLogAhead refuses a log whose ids are not below every id the server
// can still assign (pg_snapshot_xmax is the next transaction id).
func (r *Recorder) checkLogAhead(ctx context.Context, conn *pgx.Conn) error {
	var maxID, next int64
	err := conn.QueryRow(ctx, "SELECT coalesce(max(notification_id), 0), pg_snapshot_xmax(pg_current_snapshot())::text::bigint FROM "+r.n.Events).
		Scan(&maxID, &next)
	if err != nil {
		return fmt.Errorf("postgres: migrate: check notification ids: %w", err)
	}
	if maxID>>ordBits >= next {
		return fmt.Errorf("%w: the greatest stored id belongs to transaction %d, the server's next is %d (restored from a dump?): "+
			"advance the server's transaction id past %d (pg_resetwal -x on a stopped server) before appending",
			ErrLogAhead, maxID>>ordBits, next, maxID>>ordBits)
	}
	return nil
}

// SchemaVersion returns the version the store's schema is at: 0 before Migrate,
// SchemaVersion() once migrated by this program.
func (r *Recorder) SchemaVersion(ctx context.Context) (int, error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: schema version: %w", err)
	}
	defer conn.Release()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", r.n.Version).Scan(&exists); err != nil {
		return 0, fmt.Errorf("postgres: schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	return schemaVersion(ctx, conn.Conn(), r.n)
}

func schemaVersion(ctx context.Context, conn *pgx.Conn, n names) (int, error) {
	var v int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+n.Version).Scan(&v); err != nil {
		return 0, fmt.Errorf("postgres: read schema version: %w", err)
	}
	return v, nil
}
