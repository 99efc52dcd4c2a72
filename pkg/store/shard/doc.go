// Package shard spreads a store over a fixed set of databases (shards),
// aligned with the Kafka partitions of the commands topic.
//
// An entity's shard is the partition Kafka's default partitioner gives its id
// (murmur2 of the id's text, as franz-go's and the Java client's default
// partitioners compute it) modulo the shard count. The partition count must be
// a multiple of the shard count (NewRouter refuses any other): then the
// shard is the key hash modulo the shard count whatever the partition count,
// so an entity keeps its shard when the topic grows to a multiple of its
// partitions, and every record of one partition belongs to one shard. The
// writer's batch for a partition therefore touches one database and keeps
// its one-transaction guarantee.
//
// A Store routes the operations of one entity (events, snapshots) to its
// shard; an operation that would span shards fails with ErrCrossShard. What
// is not an entity's stays where it is written:
//
//   - the notification log is per shard: each shard's relay publishes its
//     own log, so events keep their per-entity order (an entity lives on one
//     shard) but there is no order across shards. Store.SelectNotifications
//     on more than one shard fails with ErrCrossShard: read Shard(i).
//     A MergedLog reads every shard's log as one, for a one-pass reader
//     such as a read model's rebuild.
//   - the tracking of the writer's command offsets lives on the shard of the
//     partition it tracks (the writer uses each shard's recorder directly);
//     Store.Tracking and Store.InTx, for the tracking of projections, use the
//     home shard (shard 0), which also holds read models.
//
// The shard layout (index and count) is recorded in each shard's database
// and checked when it is opened (postgres.Recorder.CheckShard), so that a
// database is never used as another shard or in another count. Changing the
// count (resharding) is not supported; the README describes how it would be
// done.
//
// A Store is safe for concurrent use if its shards are.
package shard
