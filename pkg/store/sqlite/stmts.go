package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStatements bounds the statements a Recorder keeps prepared on its
// read pool. The reads' SQL comes from a few fixed shapes (with or without a
// bound, a limit, an order), well below it; past it a query is prepared each
// time, as without the cache.
const maxCachedStatements = 64

// stmtCache is a queryer over the read pool that prepares each query once:
// SQLite parses and plans a statement at every prepare, which for a short
// read (an entity's events after the version cached) is most of its cost.
// database/sql prepares the statement again on each connection it runs on.
// It is safe for concurrent use.
type stmtCache struct {
	db     *sql.DB
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	closed bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: make(map[string]*sql.Stmt)}
}

// QueryContext runs query on the pool with a prepared statement.
func (c *stmtCache) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return c.db.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// stmt returns the statement of query, preparing it if it is new; nil if
// the cache is full or closed.
func (c *stmtCache) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	st, ok := c.stmts[query]
	full := c.closed || len(c.stmts) >= maxCachedStatements
	c.mu.Unlock()
	if ok || full {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.stmts[query]; ok || c.closed { // prepared meanwhile, or closed
		_ = st.Close()
		return old, nil
	}
	c.stmts[query] = st
	return st, nil
}

// close closes the statements; later queries are prepared each time.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var err error
	for q, st := range c.stmts {
		err = errors.Join(err, st.Close())
		delete(c.stmts, q)
	}
	return err
}
