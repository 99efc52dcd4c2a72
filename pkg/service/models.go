package service

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
)

// runningModel is a domain read model the projector runs.
type runningModel struct {
	model  *sqlmodel.ReadModel
	reader *sqlmodel.Reader
	routes func(mux *http.ServeMux, q *sqlmodel.Reader)
}

// SQL returns a pool on the backend's database, for queries of the tables
// read models keep there, and its dialect.
func (b Backend) SQL() (sqlmodel.Conn, sqlmodel.Dialect, error) {
	switch rec := b.Recorder.(type) {
	case interface{ Pool() *pgxpool.Pool }:
		return sqlmodel.Pgx(rec.Pool()), sqlmodel.Postgres, nil
	case interface{ ReadDB() *sql.DB }:
		return sqlmodel.SQL(rec.ReadDB()), sqlmodel.SQLite, nil
	}
	return nil, "", fmt.Errorf("the store %s keeps no SQL tables: read models need PostgreSQL or SQLite", b.Name)
}

// ModelOf returns the sqlmodel.ReadModel of m on the backend's database.
func (b Backend) ModelOf(m ReadModel) (*sqlmodel.ReadModel, error) {
	return sqlmodel.New(m.Model, sqlmodel.Options{Schema: b.Schema})
}

// openModel makes the tables of m if need be and returns it ready to run.
func openModel(ctx context.Context, b Backend, m ReadModel) (runningModel, error) {
	q, d, err := b.SQL()
	if err != nil {
		return runningModel{}, fmt.Errorf("read model %q: %w", m.Name, err)
	}
	rm, err := b.ModelOf(m)
	if err != nil {
		return runningModel{}, err
	}
	if err := rm.Migrate(ctx, b.Recorder); err != nil {
		return runningModel{}, fmt.Errorf("read model %q: %w", m.Name, err)
	}
	return runningModel{model: rm, reader: rm.NewReader(q, d), routes: m.Routes}, nil
}

// SchemaVersion returns the version the backend's schema is at, for stores
// that count them (PostgreSQL).
func (b Backend) SchemaVersion(ctx context.Context) (int, error) {
	v, ok := b.Recorder.(interface {
		SchemaVersion(ctx context.Context) (int, error)
	})
	if !ok {
		return 0, fmt.Errorf("the store %s has no schema version", b.Name)
	}
	return v.SchemaVersion(ctx)
}
