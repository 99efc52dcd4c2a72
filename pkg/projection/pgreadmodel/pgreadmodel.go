package pgreadmodel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

// Defaults of Options.
const (
	DefaultSchema = "public"
	DefaultPrefix = "readmodel_"
)

const (
	maxIdentLen  = 63 // PostgreSQL truncates longer identifiers
	maxPrefixLen = 32
)

// Options configures a ReadModel.
type Options struct {
	// Types are the entity types kept, one table each. At least one is
	// required.
	Types []string
	// Schema holds the tables (default DefaultSchema). Migrate creates it if it
	// does not exist. Lower-case letters, digits and underscores, not
	// starting with a digit, at most 63 bytes.
	Schema string
	// TablePrefix starts every table and index name (default DefaultPrefix).
	// Same characters as Schema, at most 32 bytes.
	TablePrefix string
	// AsyncCommit overrides the server's synchronous_commit for the
	// projection's transactions, setting it off: a commit returns before its
	// WAL is flushed. It costs no correctness: a crash can lose the last
	// commits (up to about three times wal_writer_delay), and so can a
	// failover to a standby, which receives only flushed WAL; but each loses
	// its rows and its tracking together, and a consumer that checks its
	// tracking (kafka.ConsumerConfig.VerifyTracking, as the projector service
	// runs it) fetches those records again. Queries may see rows that a crash
	// then takes back. The default is the server's setting.
	AsyncCommit bool
	// NoAttributeIndex overrides the default GIN index on attributes: the
	// tables get none, and a fillfactor of 80 so that updates can stay on
	// their page (HOT) without touching any index. Writes cost less than
	// half as much; List with a filter then scans the table.
	NoAttributeIndex bool
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func (o *Options) setDefaults() {
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.TablePrefix == "" {
		o.TablePrefix = DefaultPrefix
	}
}

// Validate reports options a ReadModel cannot use. Every name is quoted in
// SQL anyway; the rules keep names unsurprising in psql.
func (o *Options) Validate() error {
	if len(o.Types) == 0 {
		return errors.New("pgreadmodel: no entity types")
	}
	for _, t := range o.Types {
		if !entity.ValidType(t) {
			return fmt.Errorf("pgreadmodel: invalid entity type %q", t)
		}
	}
	if !identRE.MatchString(o.Schema) || len(o.Schema) > maxIdentLen {
		return fmt.Errorf("pgreadmodel: schema %q: want 1 to %d lower-case letters, digits or underscores, not starting with a digit", o.Schema, maxIdentLen)
	}
	if !identRE.MatchString(o.TablePrefix) || len(o.TablePrefix) > maxPrefixLen {
		return fmt.Errorf("pgreadmodel: table prefix %q: want 1 to %d lower-case letters, digits or underscores, not starting with a digit", o.TablePrefix, maxPrefixLen)
	}
	return nil
}

// ErrUnknownType reports an entity type the read model does not keep.
var ErrUnknownType = errors.New("pgreadmodel: entity type not kept")

// table holds the names and statements of one entity type.
type table struct {
	typ string
	// Quoted, schema-qualified tables.
	live, shadow string
	// Unquoted names, for renames.
	liveName, shadowName                 string
	livePK, liveIdx, shadowPK, shadowIdx string
	upsertLive, upsertShadow, get, list  string
	createLive, createShadow, indexLive  string
	indexShadow, dropShadow              string
	// swap replaces the live table with the shadow one.
	swap []string
}

// A ReadModel keeps the generic entity's current state in PostgreSQL: a table
// per entity type (id uuid primary key, version bigint, attributes jsonb,
// discarded boolean, updated_at timestamptz) with a GIN index on attributes.
//
// It is a projection.Policy (with the position guard and event decoding):
// run it with a projection.Runner whose target is a *postgres.Recorder on the
// same database, so that rows and tracking commit together. Get and List read
// through the pool. It is safe for concurrent use.
type ReadModel struct {
	pool   *pgxpool.Pool
	opts   Options
	schema string // quoted
	tables map[string]*table
	types  []string // sorted
	// lastPositions reads the version of ids from every table.
	lastPositions string
	// lockWrite is what a writer takes before it reads (see LastPositions),
	// lockSwap and lockDDL what a rebuild takes to swap tables.
	lockWrite, lockSwap, lockDDL string
	// Advisory lock keys of Migrate and Rebuild.
	migrateKey, rebuildKey int64
}

var (
	_ projection.Policy         = (*ReadModel)(nil)
	_ projection.Positions      = (*ReadModel)(nil)
	_ projection.DecodingPolicy = (*ReadModel)(nil)
)

// New returns a read model on pool. It does no I/O: call Migrate to create
// the tables.
func New(pool *pgxpool.Pool, opts Options) (*ReadModel, error) {
	if pool == nil {
		return nil, errors.New("pgreadmodel: nil pool")
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.Types = slices.Clone(opts.Types)
	slices.Sort(opts.Types)
	opts.Types = slices.Compact(opts.Types)
	m := &ReadModel{
		pool: pool, opts: opts, schema: pgx.Identifier{opts.Schema}.Sanitize(),
		tables: make(map[string]*table, len(opts.Types)), types: opts.Types,
		migrateKey: int64(hash64("pgreadmodel:migrate:" + opts.Schema + "." + opts.TablePrefix)),
		rebuildKey: int64(hash64("pgreadmodel:rebuild:" + opts.Schema + "." + opts.TablePrefix)),
	}
	var union, lives []string
	for _, typ := range opts.Types {
		t := m.newTable(typ)
		m.tables[typ] = t
		// A join on unnest, not id = ANY($1): the statement is prepared once,
		// and the generic plan of = ANY turns into a sequential scan as the
		// table grows, while this one stays an index lookup per id.
		union = append(union, "SELECT t.id, t.version FROM unnest($1::uuid[]) AS u(id) JOIN "+t.live+" AS t ON t.id = u.id")
		lives = append(lives, t.live)
	}
	m.lastPositions = strings.Join(union, " UNION ALL ")
	m.lockWrite = "LOCK TABLE " + strings.Join(lives, ", ") + " IN ROW EXCLUSIVE MODE"
	m.lockSwap = "LOCK TABLE " + strings.Join(lives, ", ") + " IN EXCLUSIVE MODE"
	m.lockDDL = "LOCK TABLE " + strings.Join(lives, ", ") + " IN ACCESS EXCLUSIVE MODE"
	return m, nil
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// ident returns base if PostgreSQL keeps it whole, or a prefix of it with a
// hash of the whole, so that long entity types still get distinct names.
func ident(base string) string {
	if len(base) <= maxIdentLen {
		return base
	}
	return fmt.Sprintf("%s_%016x", base[:maxIdentLen-17], hash64(base))
}

const columns = `(
	id         uuid        NOT NULL,
	version    bigint      NOT NULL,
	attributes jsonb       NOT NULL,
	discarded  boolean     NOT NULL DEFAULT false,
	updated_at timestamptz NOT NULL,
	CONSTRAINT PKEY PRIMARY KEY (id)
)`

// upsert merges changes, one row per entity (see readmodel.Change). Merging
// the attributes a change sets into the stored ones is right for changes
// that start with the creation too: an entity never loses an attribute, so
// its whole state contains every attribute a stored row of it could have.
// The version guard makes a stale change (one the row already has) a no-op.
const upsert = `INSERT INTO TABLE AS t (id, version, attributes, discarded, updated_at)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[], $4::boolean[], $5::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
	version    = excluded.version,
	attributes = t.attributes || excluded.attributes,
	discarded  = t.discarded OR excluded.discarded,
	updated_at = excluded.updated_at
WHERE t.version < excluded.version`

func (m *ReadModel) newTable(typ string) *table {
	q := func(name string) string { return pgx.Identifier{m.opts.Schema, name}.Sanitize() }
	base := m.opts.TablePrefix + typ
	t := &table{
		typ:        typ,
		liveName:   ident(base),
		shadowName: ident(base + "__rebuild"),
		livePK:     ident(base + "_pkey"),
		liveIdx:    ident(base + "_attributes"),
		shadowPK:   ident(base + "__rebuild_pkey"),
		shadowIdx:  ident(base + "__rebuild_attributes"),
	}
	t.live, t.shadow = q(t.liveName), q(t.shadowName)
	qi := func(name string) string { return pgx.Identifier{name}.Sanitize() }
	with := ""
	if m.opts.NoAttributeIndex {
		with = " WITH (fillfactor = 80)"
	}
	t.createLive = "CREATE TABLE IF NOT EXISTS " + t.live + " " + strings.Replace(columns, "PKEY", qi(t.livePK), 1) + with
	t.createShadow = "CREATE TABLE " + t.shadow + " " + strings.Replace(columns, "PKEY", qi(t.shadowPK), 1) + with
	t.dropShadow = "DROP TABLE IF EXISTS " + t.shadow
	t.swap = []string{
		"DROP TABLE " + t.live,
		"ALTER TABLE " + t.shadow + " RENAME TO " + qi(t.liveName),
		"ALTER INDEX " + q(t.shadowPK) + " RENAME TO " + qi(t.livePK),
	}
	if !m.opts.NoAttributeIndex {
		t.indexLive = "CREATE INDEX IF NOT EXISTS " + qi(t.liveIdx) + " ON " + t.live + " USING gin (attributes jsonb_path_ops)"
		t.indexShadow = "CREATE INDEX " + qi(t.shadowIdx) + " ON " + t.shadow + " USING gin (attributes jsonb_path_ops)"
		t.swap = append(t.swap, "ALTER INDEX "+q(t.shadowIdx)+" RENAME TO "+qi(t.liveIdx))
	}
	t.upsertLive = strings.Replace(upsert, "TABLE", t.live, 1)
	t.upsertShadow = strings.Replace(upsert, "TABLE", t.shadow, 1)
	t.get = "SELECT version, attributes, discarded, updated_at FROM " + t.live + " WHERE id = $1"
	t.list = "SELECT id, version, attributes, discarded, updated_at FROM " + t.live +
		" WHERE attributes @> $1 AND id > $2 AND ($3 OR NOT discarded) ORDER BY id LIMIT $4"
	return t
}

// Types returns the entity types kept, sorted.
func (m *ReadModel) Types() []string { return slices.Clone(m.types) }

// Table returns the quoted, schema-qualified table of an entity type, for
// queries of the caller's own.
func (m *ReadModel) Table(typ string) (string, error) {
	t, err := m.table(typ)
	if err != nil {
		return "", err
	}
	return t.live, nil
}

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

// Migrate creates the schema, and the table and index of every type, if they
// do not exist. Concurrent calls wait for each other.
func (m *ReadModel) Migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", m.migrateKey); err != nil {
			return fmt.Errorf("pgreadmodel: migrate: %w", err)
		}
		stmts := []string{"CREATE SCHEMA IF NOT EXISTS " + m.schema}
		for _, typ := range m.types {
			t := m.tables[typ]
			stmts = append(stmts, t.createLive, t.indexLive)
		}
		for _, s := range stmts {
			if s == "" {
				continue
			}
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("pgreadmodel: migrate: %w", err)
			}
		}
		return nil
	})
}

// DecodesEvents implements projection.DecodingPolicy: the read model applies
// entity events.
func (m *ReadModel) DecodesEvents() bool { return true }

// ErrNotPostgres reports a runner whose target is not a PostgreSQL recorder.
var ErrNotPostgres = errors.New("pgreadmodel: the runner's target is not a PostgreSQL recorder (its transaction has no PgxTx method)")

// pgxTxer is what the read model needs of the runner's transaction: the pgx
// transaction under it. The store.Tx of a *postgres.Recorder has it.
type pgxTxer interface {
	PgxTx() pgx.Tx
}

// pgxOf returns the pgx transaction under tx.
func pgxOf(tx store.Tx) (pgx.Tx, bool) {
	if t, ok := tx.(pgxTxer); ok {
		return t.PgxTx(), true
	}
	return nil, false
}

// Apply implements projection.Policy: it folds the items into one change per
// entity and upserts them with one statement per entity type, all sent in
// one round trip. An item that is not an entity event of a kept type, or has
// an invalid attribute, fails with a permanent *projection.ItemError.
func (m *ReadModel) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	ptx, ok := pgxOf(tx)
	if !ok {
		return ErrNotPostgres
	}
	changes, err := readmodel.Fold(items, m.keeps)
	if err != nil {
		return err
	}
	return m.upsert(ctx, ptx, changes, false)
}

// queueSettings queues what the options set for a projection transaction.
func (m *ReadModel) queueSettings(b *pgx.Batch) {
	if m.opts.AsyncCommit {
		b.Queue("SET LOCAL synchronous_commit = off")
	}
}

// batcher is what upsert needs of a transaction or connection.
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// upsert writes changes, to the live tables or the shadow ones.
func (m *ReadModel) upsert(ctx context.Context, q batcher, changes []readmodel.Change, shadow bool) error {
	if len(changes) == 0 {
		return nil
	}
	byType := map[string][]*readmodel.Change{}
	for i := range changes {
		c := &changes[i]
		byType[c.Type] = append(byType[c.Type], c)
	}
	var b pgx.Batch
	if !shadow {
		m.queueSettings(&b) // for runners without the position guard
	}
	for _, typ := range m.types { // in one order, so that writers lock tables alike
		cs := byType[typ]
		if len(cs) == 0 {
			continue
		}
		// A forgotten entity's row is deleted, with nothing of it kept.
		var gone [][16]byte
		cs = slices.DeleteFunc(cs, func(c *readmodel.Change) bool {
			if c.Forgotten {
				gone = append(gone, c.ID)
			}
			return c.Forgotten
		})
		if len(gone) > 0 {
			table := m.tables[typ].live
			if shadow {
				table = m.tables[typ].shadow
			}
			b.Queue("DELETE FROM "+table+" WHERE id = ANY($1::uuid[])", gone)
		}
		if len(cs) == 0 {
			continue
		}
		ids := make([][16]byte, len(cs))
		versions := make([]int64, len(cs))
		attrs := make([][]byte, len(cs))
		discarded := make([]bool, len(cs))
		updated := make([]time.Time, len(cs))
		// Sorted by id, so that concurrent writers lock rows in one order.
		slices.SortFunc(cs, func(a, b *readmodel.Change) int { return cmpUUID(a.ID, b.ID) })
		for i, c := range cs {
			ids[i], versions[i], discarded[i], updated[i] = c.ID, c.Version, c.Discarded, c.UpdatedAt
			attrs[i] = readmodel.EncodeAttributes(c.Attributes)
		}
		sql := m.tables[typ].upsertLive
		if shadow {
			sql = m.tables[typ].upsertShadow
		}
		b.Queue(sql, ids, versions, attrs, discarded, updated)
	}
	if err := q.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("pgreadmodel: upsert: %w", err)
	}
	return nil
}

func cmpUUID(a, b uuid.UUID) int {
	for i := range a {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

// LastPositions implements projection.Positions: the version column, less
// one, of each id that has a row, in one statement over every table.
//
// It first locks the tables in ROW EXCLUSIVE mode (what the upsert takes
// anyway; it does not conflict with other writers or with readers), in the
// same round trip. A transaction that read the tables with a weaker lock and
// then waited to write would deadlock with a rebuild that waits to swap them.
func (m *ReadModel) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	ptx, ok := pgxOf(tx)
	if !ok {
		return nil, ErrNotPostgres
	}
	arg := make([][16]byte, len(ids))
	for i, id := range ids {
		arg[i] = id
	}
	var b pgx.Batch
	m.queueSettings(&b)
	b.Queue(m.lockWrite)
	b.Queue(m.lastPositions, arg)
	br := ptx.SendBatch(ctx, &b)
	defer br.Close()
	for range b.Len() - 1 {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("pgreadmodel: lock tables: %w", err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("pgreadmodel: versions: %w", err)
	}
	out := make(map[uuid.UUID]int64, len(ids))
	var (
		id      [16]byte
		version int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &version}, func() error {
		out[id] = max(out[id], version-1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgreadmodel: versions: %w", err)
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("pgreadmodel: versions: %w", err)
	}
	return out, nil
}

// Get returns the row of an entity. It fails with store.ErrNotFound if the
// entity has no row or is discarded (as a repository does), and with
// ErrUnknownType for a type the read model does not keep.
func (m *ReadModel) Get(ctx context.Context, typ string, id uuid.UUID) (readmodel.Row, error) {
	t, err := m.table(typ)
	if err != nil {
		return readmodel.Row{}, err
	}
	r := readmodel.Row{Type: typ, ID: id}
	var attrs []byte
	err = m.pool.QueryRow(ctx, t.get, [16]byte(id)).Scan(&r.Version, &attrs, &r.Discarded, &r.UpdatedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return readmodel.Row{}, fmt.Errorf("%w: %s %s", store.ErrNotFound, typ, id)
	case err != nil:
		return readmodel.Row{}, fmt.Errorf("pgreadmodel: get %s %s: %w", typ, id, err)
	case r.Discarded:
		return readmodel.Row{}, fmt.Errorf("%w: %s %s is discarded", store.ErrNotFound, typ, id)
	}
	if r.Attributes, err = decodeAttributes(attrs); err != nil {
		return readmodel.Row{}, fmt.Errorf("pgreadmodel: get %s %s: %w", typ, id, err)
	}
	r.UpdatedAt = r.UpdatedAt.UTC()
	return r, nil
}

// List returns the entities of a type that match q, in id order. The next
// page starts after the last id returned. The attribute filter is a jsonb
// containment (attributes @> filter), served by the GIN index.
func (m *ReadModel) List(ctx context.Context, typ string, q readmodel.Query) ([]readmodel.Row, error) {
	t, err := m.table(typ)
	if err != nil {
		return nil, err
	}
	if err := q.Normalize(); err != nil {
		return nil, err
	}
	rows, err := m.pool.Query(ctx, t.list, readmodel.EncodeAttributes(q.Where), [16]byte(q.After), q.IncludeDiscarded, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("pgreadmodel: list %s: %w", typ, err)
	}
	out := []readmodel.Row{}
	var (
		r     readmodel.Row
		id    [16]byte
		attrs []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &r.Version, &attrs, &r.Discarded, &r.UpdatedAt}, func() error {
		row := r
		row.Type, row.ID, row.UpdatedAt = typ, id, r.UpdatedAt.UTC()
		var err error
		row.Attributes, err = decodeAttributes(attrs)
		out = append(out, row)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgreadmodel: list %s: %w", typ, err)
	}
	return out, nil
}
