-- 0005: the shard layout of a sharded store.
--
-- One row at most: this database's shard index and the shard count of the
-- store it belongs to, recorded the first time it is opened as a shard and
-- checked every time after (Recorder.CheckShard), so that a database is
-- never used as another shard or in another count. No row: a store of one
-- database that was never opened as a shard.
CREATE TABLE {{.ShardLayout}} (
	singleton   boolean NOT NULL DEFAULT true CHECK (singleton),
	shard_index integer NOT NULL CHECK (shard_index >= 0),
	shard_count integer NOT NULL CHECK (shard_count > shard_index),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT {{name "shard_layout_pkey"}} PRIMARY KEY (singleton)
);
