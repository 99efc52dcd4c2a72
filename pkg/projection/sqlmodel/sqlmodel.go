package sqlmodel

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A Model is a read model (or a process application) in tables of its own.
type Model struct {
	// Name names the projection: its tracking, its consumer group, the
	// positions table <Name>__positions. 1 to 40 of a-z, 0-9 and '_',
	// starting with a letter, without "__".
	Name string
	// Entities are the entity types whose events the model applies: their
	// events topics are what the projection consumes. At least one.
	Entities []string
	// Tables are the names of the tables the model owns, as Schema and Apply
	// refer to them (Names.Table). The same rule as Name. A process
	// application without state may have none.
	Tables []string
	// Schema returns the statements that create the tables (and their
	// indexes) for the dialect, naming each through n: n.Table("balances"),
	// n.Index("balances", "owner"). Statements are run in order, in one
	// transaction; they must create exactly Tables.
	Schema func(d Dialect, n Names) []string
	// Apply applies a batch of decoded events (projection.Item.Event set) to
	// the tables through tx: the items of one entity in position order,
	// each once. An error the same items can never get past should be
	// wrapped with projection.Permanent, ideally in a *projection.ItemError
	// naming the item; any other error is retried.
	Apply func(ctx context.Context, tx *Tx, items []projection.Item) error
}

// Options configures a ReadModel.
type Options struct {
	// Schema is the PostgreSQL schema of the tables (default "public"); the
	// store's schema, so that the tables sit beside its own. Unused on
	// SQLite.
	Schema string
}

var (
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)
	schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// reserved are table names the stores and the built-in read models use.
var reserved = []string{"events", "snapshots", "tracking", "entity_keys", "schema_version", "dead_letters"}

// ValidName reports whether s is a usable model or table name.
func ValidName(s string) bool {
	return nameRE.MatchString(s) && !strings.Contains(s, "__") && !strings.HasSuffix(s, "_")
}

// Validate reports a model that cannot run, naming the mistake.
func (m *Model) Validate() error {
	switch {
	case !ValidName(m.Name):
		return fmt.Errorf("sqlmodel: model name %q: want 1 to 40 of a-z, 0-9 and '_', starting with a letter, without \"__\" or a trailing '_'", m.Name)
	case len(m.Entities) == 0:
		return fmt.Errorf("sqlmodel: model %q reads no entity type", m.Name)
	case m.Apply == nil:
		return fmt.Errorf("sqlmodel: model %q has no Apply", m.Name)
	case len(m.Tables) > 0 && m.Schema == nil:
		return fmt.Errorf("sqlmodel: model %q has tables but no Schema", m.Name)
	}
	seen := map[string]bool{}
	for _, t := range m.Tables {
		switch {
		case !ValidName(t):
			return fmt.Errorf("sqlmodel: model %q: table name %q: want 1 to 40 of a-z, 0-9 and '_', starting with a letter, without \"__\" or a trailing '_'", m.Name, t)
		case seen[t]:
			return fmt.Errorf("sqlmodel: model %q names table %q twice", m.Name, t)
		case slices.Contains(reserved, t) || strings.HasPrefix(t, "eventlog_") || strings.HasPrefix(t, "readmodel_") || strings.HasPrefix(t, "sqlite_"):
			return fmt.Errorf("sqlmodel: model %q: table name %q is eventlog's own; choose another", m.Name, t)
		}
		seen[t] = true
	}
	for _, e := range m.Entities {
		if !events.ValidTopic(e) || strings.Contains(e, ".") {
			return fmt.Errorf("sqlmodel: model %q: invalid entity type %q", m.Name, e)
		}
	}
	return nil
}

// OwnTables returns the tables a model of this name keeps besides its own
// Tables: its positions table. A process that runs several models checks
// that no two claim the same table.
func (m *Model) OwnTables() []string { return append(slices.Clone(m.Tables), m.Name+"__positions") }

// Names names the tables of one build of a model: the live ones, or those a
// rebuild fills.
type Names struct {
	dialect Dialect
	schema  string // unquoted
	suffix  string // "" for the live tables
	tables  []string
	unknown *[]string
}

func (n Names) qualify(table string) string {
	if n.dialect == Postgres {
		return pgx.Identifier{n.schema, table}.Sanitize()
	}
	return pgx.Identifier{table}.Sanitize()
}

// Table returns the quoted (on PostgreSQL, schema-qualified) name of one of
// the model's tables in this build.
func (n Names) Table(name string) string {
	if !slices.Contains(n.tables, name) && n.unknown != nil {
		*n.unknown = append(*n.unknown, name)
	}
	return n.qualify(name + n.suffix)
}

// Index returns a quoted index name for an index of table, unique to this
// build: use it in CREATE INDEX, so that a rebuild's new tables do not take
// the live tables' index names.
func (n Names) Index(table, name string) string {
	return pgx.Identifier{table + n.suffix + "_" + name}.Sanitize()
}

// Dialect returns the dialect of the tables.
func (n Names) Dialect() Dialect { return n.dialect }

// A Tx is the runner's transaction as Apply sees it.
type Tx struct {
	// Conn runs statements in the transaction.
	Conn
	names      Names
	model      string
	rebuilding bool
	store      store.Tx
	emitted    []emission
	counts     map[cause]int
}

// emission is a command emitted and the event that caused it.
type emission struct {
	cmd   wire.Command
	cause cause
	trace string // the trace context of the event that caused it
}

type cause struct {
	id  uuid.UUID
	pos int64
}

// Table returns the name of one of the model's tables, as Names.Table.
func (t *Tx) Table(name string) string { return t.names.Table(name) }

// Dialect returns the dialect of the tables.
func (t *Tx) Dialect() Dialect { return t.names.dialect }

// Rebuilding reports that the transaction belongs to a rebuild.
func (t *Tx) Rebuilding() bool { return t.rebuilding }

// Emit sends cmd in reaction to the event of item: it is stored in the
// outbox with the transaction, and the relay produces it to the commands
// topic. Its command id, unless cmd has one, is derived from the item and
// the number of commands emitted for it so far in this transaction
// (wire.CausedCommandID), so applying the same events again emits the same
// commands. A command whose id is already in the outbox is not stored
// again. During a rebuild, only the commands of events the live projection
// has not applied when the rebuild swaps its tables in are sent: those it
// will skip. The command carries the trace context of item (its
// TraceParent: the runner's apply span when the projector traces, the
// event record's traceparent otherwise), so the writer continues the
// event's trace.
func (t *Tx) Emit(item projection.Item, cmd wire.Command) error {
	k := cause{item.SequenceID, item.Position}
	if cmd.CommandID == uuid.Nil {
		if t.counts == nil {
			t.counts = map[cause]int{}
		}
		cmd.CommandID = wire.CausedCommandID(t.model, item.SequenceID, item.Position, t.counts[k])
		t.counts[k]++
	}
	if _, err := wire.CommandItem(cmd); err != nil {
		return projection.Permanent(fmt.Errorf("sqlmodel: %s: emit %s %s: %w", t.model, cmd.Entity, cmd.Type, err))
	}
	t.emitted = append(t.emitted, emission{cmd, k, item.TraceParent})
	return nil
}

// ErrSchemaChanged reports tables made by a Schema other than the model's:
// rebuild the model to make them anew.
var ErrSchemaChanged = errors.New("sqlmodel: the model's schema changed since its tables were made")

// A ReadModel runs a Model: it is the projection.Policy that applies events
// to the model's tables (decoding them, with the per-entity position guard),
// and it creates the tables (Migrate) and rebuilds them (Rebuild). Build it
// with New. It is safe for concurrent use.
type ReadModel struct {
	m           Model
	opts        Options
	entities    map[string]bool
	fingerprint string
}

var (
	_ projection.Policy         = (*ReadModel)(nil)
	_ projection.Positions      = (*ReadModel)(nil)
	_ projection.DecodingPolicy = (*ReadModel)(nil)
)

// New returns the read model of m. It does no I/O.
func New(m Model, opts Options) (*ReadModel, error) {
	if opts.Schema == "" {
		opts.Schema = "public"
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if !schemaRE.MatchString(opts.Schema) {
		return nil, fmt.Errorf("sqlmodel: schema %q: want lower-case letters, digits and '_'", opts.Schema)
	}
	r := &ReadModel{m: m, opts: opts, entities: map[string]bool{}}
	for _, e := range m.Entities {
		r.entities[e] = true
	}
	// The fingerprint covers both dialects' statements, so it is the same
	// whichever database computes it.
	h := sha256.New()
	for _, d := range []Dialect{Postgres, SQLite} {
		stmts, err := r.schema(r.names(d, ""))
		if err != nil {
			return nil, err
		}
		for _, s := range stmts {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
	}
	r.fingerprint = hex.EncodeToString(h.Sum(nil))[:16]
	return r, nil
}

// Name returns the model's name.
func (r *ReadModel) Name() string { return r.m.Name }

// Model returns the model.
func (r *ReadModel) Model() Model { return r.m }

// Entities returns the entity types the model reads.
func (r *ReadModel) Entities() []string { return slices.Clone(r.m.Entities) }

// DecodesEvents implements projection.DecodingPolicy: Apply gets domain
// events.
func (r *ReadModel) DecodesEvents() bool { return true }

func (r *ReadModel) names(d Dialect, suffix string) Names {
	return Names{dialect: d, schema: r.opts.Schema, suffix: suffix, tables: r.m.Tables}
}

// Live returns the names of the live tables on dialect d, for queries.
func (r *ReadModel) Live(d Dialect) Names { return r.names(d, "") }

// schema returns the model's statements for n and the positions table.
func (r *ReadModel) schema(n Names) ([]string, error) {
	var stmts []string
	if r.m.Schema != nil {
		var unknown []string
		n.unknown = &unknown
		stmts = r.m.Schema(n.dialect, n)
		if len(unknown) > 0 {
			return nil, fmt.Errorf("sqlmodel: model %q: Schema names table %q, which is not in Tables", r.m.Name, unknown[0])
		}
	}
	idType := "TEXT"
	if n.dialect == Postgres {
		idType = "uuid"
	}
	return append(stmts, "CREATE TABLE "+r.positions(n)+" (sequence_id "+idType+" PRIMARY KEY, position BIGINT NOT NULL)"), nil
}

func (r *ReadModel) positions(n Names) string { return n.qualify(r.m.Name + "__positions" + n.suffix) }

func (r *ReadModel) meta(n Names) string { return n.qualify("eventlog_sqlmodels") }

// LastPositions implements projection.Positions from the positions table.
func (r *ReadModel) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	c, d, err := connOf(tx)
	if err != nil {
		return nil, err
	}
	if err := r.lockWrite(ctx, c, d); err != nil {
		return nil, err
	}
	return lastPositions(ctx, c, r.positions(r.names(d, "")), d, ids)
}

// lockWrite takes, on PostgreSQL, the lock a writer of the live tables holds
// until it commits, before it reads or writes any of them: ROW EXCLUSIVE on
// the positions table. A rebuild's swap locks the positions table first, so
// the two wait for each other in one order and cannot deadlock.
func (r *ReadModel) lockWrite(ctx context.Context, c Conn, d Dialect) error {
	if d != Postgres {
		return nil
	}
	if _, err := c.Exec(ctx, "LOCK TABLE "+r.positions(r.names(d, ""))+" IN ROW EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("sqlmodel: lock %s: %w", r.m.Name, err)
	}
	return nil
}

func lastPositions(ctx context.Context, c Conn, table string, d Dialect, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	out := make(map[uuid.UUID]int64, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows Rows
	var err error
	if d == Postgres {
		rows, err = c.Query(ctx, "SELECT sequence_id, position FROM "+table+" WHERE sequence_id = ANY($1)", ids)
	} else {
		rows, err = c.Query(ctx, "SELECT sequence_id, position FROM "+table+" WHERE sequence_id IN (SELECT value FROM json_each($1))", jsonIDs(ids))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlmodel: read positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		var pos int64
		if err := rows.Scan(&id, &pos); err != nil {
			return nil, fmt.Errorf("sqlmodel: read positions: %w", err)
		}
		out[id] = pos
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlmodel: read positions: %w", err)
	}
	return out, nil
}

func jsonIDs(ids []uuid.UUID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// setPositions records the last position of each sequence of items.
func setPositions(ctx context.Context, c Conn, table string, d Dialect, items []projection.Item) error {
	last := map[uuid.UUID]int64{}
	for _, it := range items {
		last[it.SequenceID] = max(last[it.SequenceID], it.Position)
	}
	ids := make([]uuid.UUID, 0, len(last))
	for id := range last {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return cmp.Compare(a.String(), b.String()) })
	pos := make([]int64, len(ids))
	for i, id := range ids {
		pos[i] = last[id]
	}
	var err error
	if d == Postgres {
		_, err = c.Exec(ctx, "INSERT INTO "+table+" (sequence_id, position) SELECT * FROM unnest($1::uuid[], $2::bigint[]) "+
			"ON CONFLICT (sequence_id) DO UPDATE SET position = excluded.position WHERE "+table+".position < excluded.position", ids, pos)
	} else {
		pairs := make([][2]any, len(ids))
		for i := range ids {
			pairs[i] = [2]any{ids[i].String(), pos[i]}
		}
		b, _ := json.Marshal(pairs)
		_, err = c.Exec(ctx, "INSERT INTO "+table+" (sequence_id, position) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($1) WHERE true "+
			"ON CONFLICT (sequence_id) DO UPDATE SET position = excluded.position WHERE position < excluded.position", string(b))
	}
	if err != nil {
		return fmt.Errorf("sqlmodel: record positions: %w", err)
	}
	return nil
}

// Apply implements projection.Policy: the model's Apply, the commands it
// emitted and the positions, in tx.
func (r *ReadModel) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	c, d, err := connOf(tx)
	if err != nil {
		return projection.Permanent(err)
	}
	if err := r.lockWrite(ctx, c, d); err != nil {
		return err
	}
	emitted, err := r.apply(ctx, c, tx, r.names(d, ""), false, items)
	if err != nil {
		return err
	}
	return storeCommands(ctx, tx, emitted)
}

// apply runs the model's Apply and records the positions; it returns the
// commands Apply emitted.
func (r *ReadModel) apply(ctx context.Context, c Conn, stx store.Tx, n Names, rebuilding bool, items []projection.Item) ([]emission, error) {
	if len(items) == 0 {
		return nil, nil
	}
	for i := range items {
		if e := events.EntityOf(items[i].Topic); !r.entities[e] {
			return nil, &projection.ItemError{Index: i, Err: projection.Permanent(fmt.Errorf("sqlmodel: %s reads no %s events (topic %s)", r.m.Name, e, items[i].Topic))}
		}
	}
	t := &Tx{Conn: c, names: n, model: r.m.Name, rebuilding: rebuilding, store: stx}
	if err := r.m.Apply(ctx, t, items); err != nil {
		return nil, err
	}
	return t.emitted, setPositions(ctx, c, r.positions(n), n.dialect, items)
}

// storeCommands inserts into the outbox the commands not already there.
func storeCommands(ctx context.Context, tx store.Tx, emitted []emission) error {
	if len(emitted) == 0 {
		return nil
	}
	cmds := make([]wire.Command, len(emitted))
	for i, e := range emitted {
		cmds[i] = e.cmd
	}
	have := map[uuid.UUID]bool{} // by outbox item id
	if sr, ok := tx.(store.SequencesReader); ok {
		q := make(map[uuid.UUID]store.Query, len(cmds))
		for _, c := range cmds {
			q[wire.CommandItemID(c.CommandID)] = store.Query{Limit: 1}
		}
		got, err := sr.SelectSequences(ctx, q)
		if err != nil {
			return fmt.Errorf("sqlmodel: read the outbox: %w", err)
		}
		for id := range got {
			have[id] = true
		}
	} else {
		for _, c := range cmds {
			id := wire.CommandItemID(c.CommandID)
			got, err := tx.SelectEvents(ctx, id, store.Query{Limit: 1})
			if err != nil {
				return fmt.Errorf("sqlmodel: read the outbox: %w", err)
			}
			have[id] = len(got) > 0
		}
	}
	var items []store.SequencedItem
	for i, c := range cmds {
		id := wire.CommandItemID(c.CommandID)
		if have[id] {
			continue
		}
		have[id] = true // emitted twice in this batch
		it, err := wire.CommandItem(c)
		if err != nil {
			return projection.Permanent(err)
		}
		it.TraceParent = emitted[i].trace
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil
	}
	if _, err := tx.InsertEvents(ctx, items); err != nil {
		return fmt.Errorf("sqlmodel: store emitted commands: %w", err)
	}
	return nil
}

// A Target is the store a model's tables live in: every PostgreSQL and
// SQLite recorder is one.
type Target interface {
	InTx(ctx context.Context, fn func(store.Tx) error) error
}

// Migrate creates the model's tables if they do not exist, in one
// transaction, and fails with ErrSchemaChanged if they were made by another
// Schema. Concurrent calls are safe.
func (r *ReadModel) Migrate(ctx context.Context, target Target) error {
	return target.InTx(ctx, func(tx store.Tx) error {
		c, d, err := connOf(tx)
		if err != nil {
			return err
		}
		n := r.names(d, "")
		have, err := r.begin(ctx, c, n)
		if err != nil {
			return err
		}
		switch {
		case have == r.fingerprint:
			return nil
		case have != "":
			return fmt.Errorf("%w: model %q (fingerprint %s, tables made by %s): rebuild it", ErrSchemaChanged, r.m.Name, r.fingerprint, have)
		}
		stmts, err := r.schema(n)
		if err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := c.Exec(ctx, s); err != nil {
				return fmt.Errorf("sqlmodel: model %q: create tables: %s: %w", r.m.Name, firstLine(s), err)
			}
		}
		if _, err := c.Exec(ctx, "INSERT INTO "+r.meta(n)+" (name, fingerprint) VALUES ($1, $2)", r.m.Name, r.fingerprint); err != nil {
			return fmt.Errorf("sqlmodel: model %q: record its schema: %w", r.m.Name, err)
		}
		return nil
	})
}

// begin serialises schema changes of the model (on PostgreSQL, an advisory
// lock for the rest of the transaction), makes the table of models if need
// be, and returns the fingerprint recorded for the model ("" if none).
func (r *ReadModel) begin(ctx context.Context, c Conn, n Names) (string, error) {
	if n.dialect == Postgres {
		if _, err := c.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(r.opts.Schema, "sqlmodel-schema")); err != nil {
			return "", fmt.Errorf("sqlmodel: lock: %w", err)
		}
	}
	if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+r.meta(n)+" (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)"); err != nil {
		return "", fmt.Errorf("sqlmodel: create the table of models: %w", err)
	}
	var have string
	err := c.QueryRow(ctx, "SELECT fingerprint FROM "+r.meta(n)+" WHERE name = $1", r.m.Name).Scan(&have)
	if err != nil && !errors.Is(err, ErrNoRows) {
		return "", fmt.Errorf("sqlmodel: model %q: read its schema: %w", r.m.Name, err)
	}
	return have, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	return s
}

// lockKey maps a name to an advisory lock key.
func lockKey(schema, name string) int64 {
	h := sha256.Sum256([]byte(schema + "\x00" + name))
	var k int64
	for _, b := range h[:8] {
		k = k<<8 | int64(b)
	}
	return k
}

// A Reader reads a model's live tables, for the query handlers a service
// mounts.
type Reader struct {
	// Conn runs queries on the store's database (a pool, not a transaction).
	Conn
	names Names
}

// NewReader returns a reader of r's live tables through c, a pool on the
// database of the runner's target.
func (r *ReadModel) NewReader(c Conn, d Dialect) *Reader {
	return &Reader{Conn: c, names: r.names(d, "")}
}

// Table returns the quoted name of one of the model's live tables.
func (q *Reader) Table(name string) string { return q.names.Table(name) }

// Dialect returns the dialect of the tables.
func (q *Reader) Dialect() Dialect { return q.names.dialect }
