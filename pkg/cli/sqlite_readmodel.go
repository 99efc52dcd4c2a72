package cli

import (
	"context"
	"database/sql"
	"errors"

	"github.com/eventlog/eventlog/pkg/projection/sqlitereadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
)

// sqliteReadModel returns the read model kept in a SQLite store's file. Its
// queries go through a connection pool of their own on that file.
func sqliteReadModel(ctx context.Context, b service.Backend, entities []string) (service.EntityReadModel, func(), error) {
	if b.SQLitePath == "" {
		return nil, nil, errors.New("the read model needs PostgreSQL or a SQLite file")
	}
	db, err := sql.Open("sqlite", sqlite.DSN(b.SQLitePath, sqlite.Options{}))
	if err != nil {
		return nil, nil, err
	}
	close := func() { db.Close() }
	rm, err := sqlitereadmodel.New(db, sqlitereadmodel.Options{Types: entities})
	if err != nil {
		close()
		return nil, nil, err
	}
	if err := rm.Migrate(ctx); err != nil {
		close()
		return nil, nil, err
	}
	return rm, close, nil
}
