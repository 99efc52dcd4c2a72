// Package sqlitereadmodel keeps the generic entity's read model in SQLite, for
// the embedded mode: a table per entity type in the same database file as the
// SQLite store, written in the store's transactions through database/sql.
//
// A ReadModel is a projection.Policy with the position guard (its version
// column) and event decoding. Run it with a projection.Runner whose target is
// a *sqlite.Recorder on the file that holds the tables: the runner's
// transaction is the recorder's, reached through the ExecContext and
// QueryContext methods of the store.Tx it passes (sqlite.Tx has them), so
// rows and tracking commit together. The package imports no SQLite driver and
// no store backend; the caller opens the database.
//
// Rows are read, folded and written back in Go (SQLite serialises writers, so
// nothing can change them between the read and the write). Get and List read
// through a *sql.DB on the same file and see committed rows only (WAL).
//
// Differences from pgreadmodel: List compares each filtered attribute for
// equality as JSON text (so an array matches only the same array, not one
// that contains it), and scans the table; there is no Rebuild.
package sqlitereadmodel

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

// DefaultPrefix starts table names unless Options.TablePrefix says otherwise.
const DefaultPrefix = "readmodel_"

// Options configures a ReadModel.
type Options struct {
	// Types are the entity types kept, one table each. At least one is
	// required.
	Types []string
	// TablePrefix starts every table name (default DefaultPrefix):
	// lower-case letters, digits and underscores, not starting with a digit.
	TablePrefix string
}

var prefixRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,31}$`)

// ErrUnknownType reports an entity type the read model does not keep.
var ErrUnknownType = errors.New("sqlitereadmodel: entity type not kept")

// ErrNotSQL reports a runner whose transaction does not run SQL (its target
// is not a SQLite recorder).
var ErrNotSQL = errors.New("sqlitereadmodel: the runner's transaction does not run SQL (want a *sqlite.Recorder target)")

// sqlTx is what the read model needs of the runner's transaction: sqlite.Tx
// has it.
type sqlTx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type table struct {
	typ, name                       string // name is quoted
	create, selectRows, upsert, get string
	list, versionsHead              string
}

// ReadModel is the read model in SQLite. It is safe for concurrent use.
type ReadModel struct {
	db     *sql.DB
	tables map[string]*table
	types  []string
}

var (
	_ projection.Policy         = (*ReadModel)(nil)
	_ projection.Positions      = (*ReadModel)(nil)
	_ projection.DecodingPolicy = (*ReadModel)(nil)
)

// New returns a read model whose Get and List read through db, a pool on
// the database file of the runner's target (the *sql.DB given to sqlite.New,
// or one opened on the same file). It does no I/O: call Migrate.
func New(db *sql.DB, opts Options) (*ReadModel, error) {
	if db == nil {
		return nil, errors.New("sqlitereadmodel: nil *sql.DB")
	}
	if opts.TablePrefix == "" {
		opts.TablePrefix = DefaultPrefix
	}
	if !prefixRE.MatchString(opts.TablePrefix) {
		return nil, fmt.Errorf("sqlitereadmodel: table prefix %q: want 1 to 32 lower-case letters, digits or underscores, not starting with a digit", opts.TablePrefix)
	}
	if len(opts.Types) == 0 {
		return nil, errors.New("sqlitereadmodel: no entity types")
	}
	m := &ReadModel{db: db, tables: map[string]*table{}}
	for _, typ := range opts.Types {
		if !entity.ValidType(typ) {
			return nil, fmt.Errorf("sqlitereadmodel: invalid entity type %q", typ)
		}
		if _, dup := m.tables[typ]; dup {
			continue
		}
		m.types = append(m.types, typ)
		m.tables[typ] = newTable(typ, `"`+opts.TablePrefix+typ+`"`) // both parts are plain: no quote to escape
	}
	slices.Sort(m.types)
	return m, nil
}

func newTable(typ, name string) *table {
	const cols = "id, version, attributes, discarded, updated_at"
	return &table{
		typ: typ, name: name,
		create: "CREATE TABLE IF NOT EXISTS " + name + ` (
	id         TEXT    NOT NULL PRIMARY KEY,
	version    INTEGER NOT NULL,
	attributes TEXT    NOT NULL,
	discarded  INTEGER NOT NULL DEFAULT 0,
	updated_at TEXT    NOT NULL
) STRICT, WITHOUT ROWID`,
		selectRows:   "SELECT " + cols + " FROM " + name + " WHERE id IN ",
		versionsHead: "SELECT id, version FROM " + name + " WHERE id IN ",
		upsert: "INSERT INTO " + name + " (" + cols + ") VALUES (?, ?, ?, ?, ?)" +
			" ON CONFLICT (id) DO UPDATE SET version = excluded.version, attributes = excluded.attributes," +
			" discarded = excluded.discarded, updated_at = excluded.updated_at WHERE version < excluded.version",
		get:  "SELECT " + cols + " FROM " + name + " WHERE id = ?",
		list: "SELECT " + cols + " FROM " + name + " WHERE id > ?",
	}
}

// Types returns the entity types kept, sorted.
func (m *ReadModel) Types() []string { return slices.Clone(m.types) }

func (m *ReadModel) table(typ string) (*table, error) {
	t, ok := m.tables[typ]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, typ)
	}
	return t, nil
}

func (m *ReadModel) keeps(typ string) bool {
	_, ok := m.tables[typ]
	return ok
}

// Migrate creates the tables that do not exist.
func (m *ReadModel) Migrate(ctx context.Context) error {
	for _, typ := range m.types {
		if _, err := m.db.ExecContext(ctx, m.tables[typ].create); err != nil {
			return fmt.Errorf("sqlitereadmodel: migrate %s: %w", typ, err)
		}
	}
	return nil
}

// DecodesEvents implements projection.DecodingPolicy.
func (m *ReadModel) DecodesEvents() bool { return true }

// maxParams bounds the ids of one IN list (SQLite allows 32,766 parameters).
const maxParams = 500

func inList(n int) string {
	return "(" + strings.TrimSuffix(strings.Repeat("?,", n), ",") + ")"
}

// LastPositions implements projection.Positions: the version column, less
// one, of each id with a row.
func (m *ReadModel) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	q, ok := tx.(sqlTx)
	if !ok {
		return nil, ErrNotSQL
	}
	out := make(map[uuid.UUID]int64, len(ids))
	for chunk := range slices.Chunk(ids, maxParams) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id.String()
		}
		parts := make([]string, len(m.types))
		all := make([]any, 0, len(args)*len(m.types))
		for i, typ := range m.types {
			parts[i] = m.tables[typ].versionsHead + inList(len(chunk))
			all = append(all, args...)
		}
		rows, err := q.QueryContext(ctx, strings.Join(parts, " UNION ALL "), all...)
		if err != nil {
			return nil, fmt.Errorf("sqlitereadmodel: versions: %w", err)
		}
		for rows.Next() {
			var (
				s       string
				version int64
			)
			if err := rows.Scan(&s, &version); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlitereadmodel: versions: %w", err)
			}
			id, err := uuid.Parse(s)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlitereadmodel: versions: bad id %q", s)
			}
			out[id] = max(out[id], version-1)
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("sqlitereadmodel: versions: %w", err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sqlitereadmodel: versions: %w", err)
		}
	}
	return out, nil
}

// Apply implements projection.Policy: it folds the items into one change per
// entity, reads the rows they change, applies the changes in Go and writes
// the rows back, all in the runner's transaction.
func (m *ReadModel) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	q, ok := tx.(sqlTx)
	if !ok {
		return ErrNotSQL
	}
	changes, err := readmodel.Fold(items, m.keeps)
	if err != nil {
		return err
	}
	byType := map[string][]*readmodel.Change{}
	for i := range changes {
		byType[changes[i].Type] = append(byType[changes[i].Type], &changes[i])
	}
	for _, typ := range m.types {
		if cs := byType[typ]; len(cs) > 0 {
			if err := m.write(ctx, q, m.tables[typ], cs); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *ReadModel) write(ctx context.Context, q sqlTx, t *table, cs []*readmodel.Change) error {
	rows := make(map[uuid.UUID]*readmodel.Row, len(cs))
	var ids []any
	for _, c := range cs {
		if !c.Created {
			ids = append(ids, c.ID.String())
		}
	}
	for chunk := range slices.Chunk(ids, maxParams) {
		rs, err := q.QueryContext(ctx, t.selectRows+inList(len(chunk)), chunk...)
		if err != nil {
			return fmt.Errorf("sqlitereadmodel: read %s: %w", t.typ, err)
		}
		err = scanRows(rs, t.typ, func(r readmodel.Row) error {
			rows[r.ID] = &r
			return nil
		})
		if err != nil {
			return fmt.Errorf("sqlitereadmodel: read %s: %w", t.typ, err)
		}
	}
	for _, c := range cs {
		if c.Forgotten {
			// A forgotten entity's row is deleted, with nothing of it kept.
			if _, err := q.ExecContext(ctx, "DELETE FROM "+t.name+" WHERE id = ?", c.ID.String()); err != nil {
				return fmt.Errorf("sqlitereadmodel: delete forgotten %s %s: %w", t.typ, c.ID, err)
			}
			continue
		}
		r := rows[c.ID]
		if r == nil {
			r = &readmodel.Row{}
		}
		c.ApplyTo(r)
		_, err := q.ExecContext(ctx, t.upsert, r.ID.String(), r.Version, string(readmodel.EncodeAttributes(r.Attributes)),
			boolInt(r.Discarded), formatTime(r.UpdatedAt))
		if err != nil {
			return fmt.Errorf("sqlitereadmodel: write %s %s: %w", t.typ, r.ID, err)
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// timeLayout has a fixed width, so that stored times sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// scanRows reads rows of the table's columns, in order, and closes them.
func scanRows(rs *sql.Rows, typ string, fn func(readmodel.Row) error) error {
	defer rs.Close()
	for rs.Next() {
		var (
			id, attrs, updated string
			discarded          int
			r                  = readmodel.Row{Type: typ}
			err                error
		)
		if err := rs.Scan(&id, &r.Version, &attrs, &discarded, &updated); err != nil {
			return err
		}
		if r.ID, err = uuid.Parse(id); err != nil {
			return fmt.Errorf("bad id %q", id)
		}
		if err := json.Unmarshal([]byte(attrs), &r.Attributes); err != nil {
			return fmt.Errorf("attributes of %s: %w", id, err)
		}
		if r.UpdatedAt, err = time.Parse(timeLayout, updated); err != nil {
			return fmt.Errorf("updated_at of %s: %w", id, err)
		}
		r.Discarded = discarded != 0
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rs.Close(); err != nil {
		return err
	}
	return rs.Err()
}

// Get returns the row of an entity. It fails with store.ErrNotFound if the
// entity has no row or is discarded, and with ErrUnknownType for a type the
// read model does not keep.
func (m *ReadModel) Get(ctx context.Context, typ string, id uuid.UUID) (readmodel.Row, error) {
	t, err := m.table(typ)
	if err != nil {
		return readmodel.Row{}, err
	}
	rs, err := m.db.QueryContext(ctx, t.get, id.String())
	if err != nil {
		return readmodel.Row{}, fmt.Errorf("sqlitereadmodel: get %s %s: %w", typ, id, err)
	}
	var (
		row   readmodel.Row
		found bool
	)
	err = scanRows(rs, typ, func(r readmodel.Row) error {
		row, found = r, true
		return nil
	})
	switch {
	case err != nil:
		return readmodel.Row{}, fmt.Errorf("sqlitereadmodel: get %s %s: %w", typ, id, err)
	case !found:
		return readmodel.Row{}, fmt.Errorf("%w: %s %s", store.ErrNotFound, typ, id)
	case row.Discarded:
		return readmodel.Row{}, fmt.Errorf("%w: %s %s is discarded", store.ErrNotFound, typ, id)
	}
	return row, nil
}

// List returns the entities of a type that match q, in id order. The next
// page starts after the last id returned. Each filtered attribute must equal
// the given JSON value.
func (m *ReadModel) List(ctx context.Context, typ string, q readmodel.Query) ([]readmodel.Row, error) {
	t, err := m.table(typ)
	if err != nil {
		return nil, err
	}
	if err := q.Normalize(); err != nil {
		return nil, err
	}
	var sb strings.Builder
	sb.WriteString(t.list)
	args := []any{q.After.String()}
	if !q.IncludeDiscarded {
		sb.WriteString(" AND discarded = 0")
	}
	for _, name := range slices.Sorted(maps.Keys(q.Where)) {
		// -> gives the value as minified JSON text, json() minifies the
		// filter the same way. Names cannot hold a quote.
		sb.WriteString(` AND attributes -> ? = json(?)`)
		args = append(args, `$."`+name+`"`, string(q.Where[name]))
	}
	sb.WriteString(" ORDER BY id LIMIT ?")
	args = append(args, q.Limit)
	rs, err := m.db.QueryContext(ctx, sb.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlitereadmodel: list %s: %w", typ, err)
	}
	out := []readmodel.Row{}
	if err := scanRows(rs, typ, func(r readmodel.Row) error {
		out = append(out, r)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("sqlitereadmodel: list %s: %w", typ, err)
	}
	return out, nil
}
