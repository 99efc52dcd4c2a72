package postgres

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configures a Recorder. The zero value is valid: tables named
// eventlog_events, eventlog_snapshots, eventlog_tracking and
// eventlog_schema_version in the schema "public", no migration at start.
type Options struct {
	// Schema holds the tables (default "public"). Migrate creates it if it does
	// not exist. Lower-case letters, digits and underscores, not starting with a
	// digit, at most 63 bytes.
	Schema string
	// TablePrefix starts every table, index and constraint name, so several
	// applications can share one schema (default "eventlog_"; set NoTablePrefix
	// for none). Same characters as Schema, at most 32 bytes.
	TablePrefix string
	// NoTablePrefix overrides TablePrefix: table names have no prefix.
	NoTablePrefix bool
	// Migrate applies pending migrations in New. Without it, call Migrate.
	Migrate bool
	// Logger receives what background goroutines (the LISTEN connection, lock
	// monitors) cannot return: reconnects and lost locks. Default: discard.
	Logger *slog.Logger
	// LockCheckInterval is how often a connection holding a TryLock lock is
	// checked (default 1s); a holder learns of a lost lock within about twice
	// this.
	LockCheckInterval time.Duration
	// ReconnectDelay is the longest wait between attempts to re-establish the
	// LISTEN connection (default 5s; the first retry is sooner).
	ReconnectDelay time.Duration
}

const (
	defaultSchema = "public"
	defaultPrefix = "eventlog_"
	maxPrefixLen  = 32
	maxIdentLen   = 63
)

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func (o *Options) setDefaults() {
	if o.Schema == "" {
		o.Schema = defaultSchema
	}
	if o.NoTablePrefix {
		o.TablePrefix = ""
	} else if o.TablePrefix == "" {
		o.TablePrefix = defaultPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LockCheckInterval <= 0 {
		o.LockCheckInterval = time.Second
	}
	if o.ReconnectDelay <= 0 {
		o.ReconnectDelay = 5 * time.Second
	}
}

// Validate reports an identifier that is not a plain lower-case SQL name.
// Identifiers are quoted anyway; the rule keeps names unsurprising in psql.
func (o *Options) Validate() error {
	if !identRE.MatchString(o.Schema) || len(o.Schema) > maxIdentLen {
		return fmt.Errorf("postgres: schema %q: want 1 to %d lower-case letters, digits or underscores, not starting with a digit", o.Schema, maxIdentLen)
	}
	if o.TablePrefix != "" && (!identRE.MatchString(o.TablePrefix) || len(o.TablePrefix) > maxPrefixLen) {
		return fmt.Errorf("postgres: table prefix %q: want at most %d lower-case letters, digits or underscores, not starting with a digit", o.TablePrefix, maxPrefixLen)
	}
	return nil
}

// names are the quoted, schema-qualified names the SQL uses.
type names struct {
	Schema    string // quoted schema
	Events    string // quoted schema.table
	Snapshots string
	Tracking  string
	Keys      string // per-entity data keys
	// Parked sequences of projections (parked.go).
	Parked, ParkedEvents, ParkActions string
	Version                           string
	ShardLayout                       string // the shard layout (shard.go)
	prefix                            string
	channel                           string // LISTEN/NOTIFY channel, unquoted
	lockSpace                         string // distinguishes advisory lock keys of different stores
}

func newNames(o Options) names {
	q := func(table string) string { return pgx.Identifier{o.Schema, o.TablePrefix + table}.Sanitize() }
	space := o.Schema + "." + o.TablePrefix
	return names{
		Schema:       pgx.Identifier{o.Schema}.Sanitize(),
		Events:       q("events"),
		Snapshots:    q("snapshots"),
		Tracking:     q("tracking"),
		Keys:         q("entity_keys"),
		Parked:       q("parked_sequences"),
		ParkedEvents: q("parked_events"),
		ParkActions:  q("park_actions"),
		Version:      q("schema_version"),
		ShardLayout:  q("shard_layout"),
		prefix:       o.TablePrefix,
		channel:      fmt.Sprintf("eventlog_%016x", hash64("notify:"+space)),
		lockSpace:    space,
	}
}

// name quotes an unqualified object name with the table prefix (for indexes and
// constraints, which live in their table's schema).
func (n names) name(s string) string { return pgx.Identifier{n.prefix + s}.Sanitize() }

// lockKey maps a name to a 64-bit advisory lock key private to this store.
func (n names) lockKey(kind, name string) int64 {
	return int64(hash64(kind + ":" + n.lockSpace + ":" + name))
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}
