package sqlmodel

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventlog/eventlog/pkg/store"
)

// A Dialect is the SQL database a model's tables live in.
type Dialect string

// Dialects.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// A Conn runs SQL: in Apply, the runner's transaction; in queries, a pool.
// Placeholders are $1, $2, ... on both dialects.
type Conn interface {
	// Exec runs a statement and returns the number of rows it affected.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	// QueryRow runs a query for one row; Scan reports ErrNoRows if there is
	// none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Rows are the rows of a query. Close them.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// A Row is the one row of QueryRow.
type Row interface {
	Scan(dest ...any) error
}

// ErrNoRows is what Row.Scan returns when the query selected nothing, on both
// dialects.
var ErrNoRows = errors.New("sqlmodel: no rows")

// pgxQuerier is what pgx.Tx, *pgx.Conn and *pgxpool.Pool have in common.
type pgxQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Pgx returns a Conn over a pgx transaction, connection or pool.
func Pgx(q pgxQuerier) Conn { return pgxConn{q} }

type pgxConn struct{ q pgxQuerier }

func (c pgxConn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := c.q.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (c pgxConn) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := c.q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgxRows{rows}, nil
}

func (c pgxConn) QueryRow(ctx context.Context, query string, args ...any) Row {
	return pgxRow{c.q.QueryRow(ctx, query, args...)}
}

type pgxRows struct{ pgx.Rows }

func (r pgxRows) Close() error {
	r.Rows.Close()
	return r.Rows.Err()
}

type pgxRow struct{ r pgx.Row }

func (r pgxRow) Scan(dest ...any) error {
	if err := r.r.Scan(dest...); errors.Is(err, pgx.ErrNoRows) {
		return ErrNoRows
	} else {
		return err
	}
}

// sqlQuerier is what *sql.DB, *sql.Tx, *sql.Conn and the SQLite store's Tx
// have in common.
type sqlQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// SQL returns a Conn over a database/sql database, connection or
// transaction.
func SQL(q sqlQuerier) Conn { return sqlConn{q} }

type sqlConn struct{ q sqlQuerier }

func (c sqlConn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (c sqlConn) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := c.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (c sqlConn) QueryRow(ctx context.Context, query string, args ...any) Row {
	rows, err := c.q.QueryContext(ctx, query, args...)
	return sqlRow{rows: rows, err: err}
}

type sqlRow struct {
	rows *sql.Rows
	err  error
}

func (r sqlRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	return r.rows.Close()
}

// pgxTxer is a store.Tx of the PostgreSQL store.
type pgxTxer interface{ PgxTx() pgx.Tx }

// connOf returns a Conn over the transaction under tx, and its dialect.
func connOf(tx store.Tx) (Conn, Dialect, error) {
	switch t := tx.(type) {
	case pgxTxer:
		return pgxConn{t.PgxTx()}, Postgres, nil
	case sqlQuerier:
		return sqlConn{t}, SQLite, nil
	}
	return nil, "", fmt.Errorf("%w: %T", ErrNotSQL, tx)
}

// ErrNotSQL reports a runner whose target's transactions run no SQL: the
// target must be a PostgreSQL or SQLite recorder.
var ErrNotSQL = errors.New("sqlmodel: the target's transaction runs no SQL (want a PostgreSQL or SQLite store)")
