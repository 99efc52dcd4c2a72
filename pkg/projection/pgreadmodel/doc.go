// Package pgreadmodel keeps the read model of the generic entity in
// PostgreSQL: a table per entity type, current with the events, queried by id
// or by attribute, and rebuilt from the store's notification log without
// stopping queries.
//
// # Tables
//
// Each entity type gets <schema>.<prefix><type> (schema and prefix
// configurable, validated and quoted; a name longer than PostgreSQL's 63
// bytes is cut and suffixed with a hash):
//
//	id         uuid        PRIMARY KEY
//	version    bigint      -- events applied: 1 + position of the last
//	attributes jsonb       -- GIN index (jsonb_path_ops)
//	discarded  boolean
//	updated_at timestamptz -- timestamp of the last event applied
//
// Every value comes from the events, so a rebuilt table equals the live one.
//
// # Writing
//
// A ReadModel is a projection.Policy, projection.Positions and
// projection.DecodingPolicy. Run it with a projection.Runner whose target is
// a *postgres.Recorder on the database that holds the tables: Apply and
// LastPositions reach the pgx transaction under the recorder's through its
// PgxTx method (a one-method interface the package declares, so it does not
// import the store), and the rows, the parked events, the dead letters and
// the tracking commit
// together.
//
// The version column is the position guard. LastPositions reads the versions
// of a batch's entities in one statement. Apply folds the batch's events into
// one change per entity and writes them with one upsert statement per entity
// type (unnest of column arrays), all sent in one round trip; the upsert
// merges attributes and moves the version forward only (WHERE version <
// excluded.version). An event that is not an entity event of a kept type, or
// sets an attribute with an invalid name, is a permanent *projection.ItemError:
// the runner parks its entity (its row stays as it was before that event;
// see package projection). Database errors are transient.
//
// # Reading
//
// Get reads one entity (store.ErrNotFound for unknown and discarded ones, as
// the repository does). List selects by attributes with jsonb containment
// (attributes @> filter, served by the GIN index), in id order, paged by the
// last id (a cursor), at most readmodel.MaxLimit rows a page.
//
// # Rebuild
//
// Rebuild replays the notification log (not Kafka) into shadow tables and
// swaps them in in one transaction; see its documentation for how it keeps
// queries and the live runner going, and why the result holds everything the
// live runner applied. It keeps to the live projection's parked sequences:
// parked and skipped events stay out, and what fails again is parked, in
// the swap's transaction. Progress is reported through a callback.
//
// # Not guaranteed
//
//   - One runner (one projection name) per read model. Runners of different
//     names writing the same tables race; the version guard keeps rows from
//     going back, but dead letters and tracking are per name.
//   - The throughput of one runner is bounded by the row writes: each entity
//     a batch touches costs one updated row and its index entries. Batches
//     whose events concentrate on fewer entities (commands that set several
//     attributes) fold into fewer rows. Options.AsyncCommit and
//     Options.NoAttributeIndex trade commit latency and the attribute index
//     for speed.
//
// A ReadModel is safe for concurrent use.
package pgreadmodel
