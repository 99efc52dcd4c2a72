// Package storetest is the conformance suite every store backend must pass.
//
// A backend's test calls Run with a function that returns a fresh, empty
// recorder for each subtest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.ProcessRecorder {
//			return memory.New()
//		})
//	}
//
// Run checks, for every backend alike: inserting and selecting sequenced items
// (after, up to, descending, limit); that an append is atomic and that a taken
// position fails with a *store.ConflictError naming it; that invalid items are
// refused with store.ErrInvalidItem before anything is written; the notification
// log (ids strictly increasing in log order, returned by InsertEvents, paging,
// a sequence's items in position order, MaxNotificationID); tracking that only
// moves forward and fails the whole transaction otherwise; transactions that
// commit or roll back whole; many goroutines racing for one position; a tailer
// that receives every item exactly once while writers append concurrently;
// snapshots, when the recorder (or a factory passed with WithSnapshots) provides
// them; wake-ups, when the recorder implements store.Notifier; and reads of
// many sequences in one call that return what SelectEvents does for each, on
// the recorder and inside a transaction, when they implement
// store.SequencesReader; tracking records set several at a time, when a
// transaction implements store.TrackingsSetter; and, when the recorder is a
// store.KeyRecorder, data keys (created once, the first stored key winning a
// race) and Forget (the tombstone appended in the log, the key and the
// snapshots gone, other sequences intact, idempotent, no key ever again);
// and, when the recorder is a store.ParkRecorder, parked sequences (rows and
// events round-trip per projection name, listed in order and paged, counted;
// events taken in position order, a rolled back take keeping them; a row
// with nothing parked kept only while it has skipped positions; a parked
// position refused a second time, the transaction still usable; invalid
// input refused; the trail of retries and skips; and transactions that read
// a parked sequence and extend it taking turns, none losing an extension;
// and, where a transaction is a store.TrackingParkTx, tracking and parked rows
// in one call).
//
// Subtests run in parallel, so newRecorder must be safe to call from several
// goroutines, and the recorders it returns must not share data.
//
// The notification log is read with "eventually" semantics: a backend may hold
// back items committed behind a transaction still open elsewhere (PostgreSQL
// does, cluster-wide), so the suite polls, up to a deadline, until what it
// expects is visible; it never accepts an item that should not be there.
//
// Bench measures a recorder's hot paths for `go test -bench`.
package storetest
