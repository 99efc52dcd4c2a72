package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/shard"
)

// shardFlags name the shards of a sharded PostgreSQL store: -postgres-dsn
// repeated, or -postgres-shards. One DSN is a store of one database, as
// always.
type shardFlags struct {
	more []string    // -postgres-dsn after the first, in order
	list config.List // -postgres-shards
}

// dsnFlag is -postgres-dsn: its first value goes to *first (what a single
// store reads), the next ones to more.
type dsnFlag struct {
	first *string
	more  *[]string
	set   bool
}

func (f *dsnFlag) String() string {
	if f.first == nil {
		return ""
	}
	return *f.first
}

func (f *dsnFlag) Set(v string) error {
	if !f.set {
		*f.first, f.set = v, true
		return nil
	}
	*f.more = append(*f.more, v)
	return nil
}

// registerDSN registers -postgres-dsn, storing the first into *dsn.
func (f *shardFlags) registerDSN(fs *config.FlagSet, dsn *string, usage string) {
	fs.Var(&dsnFlag{first: dsn, more: &f.more}, "postgres-dsn", usage)
}

func (f *shardFlags) register(fs *config.FlagSet) {
	fs.Var(&f.list, "postgres-shards", "the PostgreSQL DSNs of a sharded store, comma-separated, shard 0 first (instead of repeating -postgres-dsn; a multi-host DSN, which has commas, must be given with -postgres-dsn)")
	fs.Secret("postgres-shards")
}

// dsns returns the DSNs given, in shard order (none for SQLite).
func (f *shardFlags) dsns(first string) ([]string, error) {
	var out []string
	if first != "" {
		out = append(out, first)
	}
	out = append(out, f.more...)
	if len(f.list) > 0 {
		if len(out) > 0 {
			return nil, errors.New("-postgres-dsn and -postgres-shards both name the store: give the shards with one of them")
		}
		out = append(out, f.list...)
	}
	if len(out) > shard.MaxShards {
		return nil, fmt.Errorf("%d shards: at most %d", len(out), shard.MaxShards)
	}
	seen := make(map[string]int, len(out))
	for i, d := range out {
		if d = strings.TrimSpace(d); d == "" {
			return nil, fmt.Errorf("the DSN of shard %d is empty", i)
		}
		if j, dup := seen[d]; dup {
			return nil, fmt.Errorf("shards %d and %d have the same DSN: each shard is a database of its own", j, i)
		}
		seen[d] = i
	}
	return out, nil
}

// sharded reports whether the flags name more than one shard.
func (f *shardFlags) sharded(first string) bool {
	d, err := f.dsns(first)
	return err == nil && len(d) > 1
}

// openShards opens a store of one PostgreSQL database per DSN, checking
// each one's recorded shard layout (and recording it the first time).
func (s *storeFlags) openShards(ctx context.Context, log *slog.Logger, dsns []string) (b service.Backend, _ func(), err error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	shards := make([]service.Backend, len(dsns))
	for i, dsn := range dsns {
		pool, err := postgres.Connect(ctx, dsn)
		if err != nil {
			return b, nil, fmt.Errorf("shard %d: -postgres-dsn: %w", i, err)
		}
		closers = append(closers, pool.Close)
		rec, err := postgres.New(ctx, pool, postgres.Options{Schema: s.schema, Migrate: s.migrate, Logger: log.With("shard", i)})
		if err != nil {
			return b, nil, fmt.Errorf("shard %d: %w", i, err)
		}
		closers = append(closers, func() { rec.Close() })
		if err := rec.CheckShard(ctx, i, len(dsns)); err != nil {
			return b, nil, fmt.Errorf("shard %d: %w", i, err)
		}
		shards[i] = service.Backend{Recorder: rec, Snapshots: rec, Locker: rec, Name: fmt.Sprintf("postgres shard %d", i), Schema: rec.Options().Schema}
	}
	b, err = service.ShardedBackend(shards)
	if err != nil {
		return b, nil, err
	}
	b.Name = fmt.Sprintf("postgres (%d shards)", len(dsns))
	return b, closeAll, nil
}

// checkPartitions refuses a -partitions that is not a multiple of the shard
// count before anything is created with it. (The writer checks the commands
// topic itself at start, which may exist with another count.)
func (s *storeFlags) checkPartitions(partitions int) error {
	dsns, err := s.shards.dsns(s.dsn)
	if err != nil || len(dsns) < 2 {
		return err
	}
	if _, err := shard.NewRouter(partitions, len(dsns)); err != nil {
		return fmt.Errorf("-partitions %d: %w", partitions, err)
	}
	return nil
}
