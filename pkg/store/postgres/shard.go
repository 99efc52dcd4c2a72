package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventlog/eventlog/pkg/store"
)

// ErrShardLayout reports a database whose recorded shard layout is not the
// one it is opened with.
var ErrShardLayout = errors.New("postgres: shard layout mismatch")

// ShardLayout returns the shard layout recorded in the database (index and
// count), or ok false if none is (or the schema predates the layout table).
func (r *Recorder) ShardLayout(ctx context.Context) (index, count int, ok bool, err error) {
	if r.closed.Load() {
		return 0, 0, false, store.ErrClosed
	}
	err = r.pool.QueryRow(ctx, "SELECT shard_index, shard_count FROM "+r.n.ShardLayout).Scan(&index, &count)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, 0, false, nil
	case errors.As(err, &pgErr) && pgErr.Code == "42P01":
		// A schema not migrated to 0005 yet records no layout.
		return 0, 0, false, nil
	case err != nil:
		return 0, 0, false, fmt.Errorf("postgres: read the shard layout: %w", err)
	}
	return index, count, true, nil
}

// CheckShard checks that the database may be opened as shard index of count
// shards, and records that layout if the database has none yet and holds no
// events (one that does is a store of one database, and stays one). A store of one
// database (count 1) records nothing: it only fails if the database was
// recorded as a shard of a larger store. A mismatch fails with an error
// wrapping ErrShardLayout that says what the database holds. It needs the
// schema migrated.
func (r *Recorder) CheckShard(ctx context.Context, index, count int) error {
	if count < 1 || index < 0 || index >= count {
		return fmt.Errorf("postgres: shard %d of %d is not a shard", index, count)
	}
	if count > 1 {
		if r.closed.Load() {
			return store.ErrClosed
		}
		// A database that holds events and no layout is a store of one
		// database: recording a layout would make it a shard, and its
		// entities of the other shards would be lost to reads (and created
		// again by commands on their shards).
		_, err := r.pool.Exec(ctx, "INSERT INTO "+r.n.ShardLayout+" (shard_index, shard_count) SELECT $1, $2 WHERE NOT EXISTS (SELECT FROM "+r.n.Events+") ON CONFLICT (singleton) DO NOTHING", index, count)
		if err != nil {
			return fmt.Errorf("postgres: record the shard layout (is the schema migrated? run eventlog migrate): %w", err)
		}
	}
	gotIndex, gotCount, ok, err := r.ShardLayout(ctx)
	switch {
	case err != nil:
		return err
	case !ok && count == 1:
		return nil
	case !ok:
		return fmt.Errorf("%w: schema %q holds the events of a store of one database, and cannot become shard %d of %d (the shard count of a store cannot change; see Resharding in the README): give it alone as -postgres-dsn, or make a sharded store of empty databases",
			ErrShardLayout, r.opts.Schema, index, count)
	case gotIndex != index || gotCount != count:
		if count == 1 {
			return fmt.Errorf("%w: schema %q is shard %d of a store of %d shards, not a store of its own: give every shard's DSN, in order (-postgres-dsn once per shard)",
				ErrShardLayout, r.opts.Schema, gotIndex, gotCount)
		}
		return fmt.Errorf("%w: schema %q is shard %d of %d, not shard %d of %d: give the shards' DSNs in their order, all %d of them (the shard count cannot change)",
			ErrShardLayout, r.opts.Schema, gotIndex, gotCount, index, count, gotCount)
	}
	return nil
}
