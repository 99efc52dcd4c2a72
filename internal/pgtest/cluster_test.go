package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestReplicated makes a primary and its synchronous standby, commits on the
// primary, stops it hard and promotes the standby: the commit is there, a
// multi-host DSN with target_session_attrs=read-write reaches the new
// primary, and the transaction ids it hands out continue above the old
// primary's.
func TestReplicated(t *testing.T) {
	r := NewReplicated(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.MultiHostDSN())
	if err != nil {
		t.Fatal(err)
	}
	var before uint64
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	// The transaction id of a write: its commit waits for the standby. (A
	// read-only transaction's id, from a bare SELECT pg_current_xact_id(),
	// commits without waiting and may be handed out again after the
	// promotion: seen here.)
	if err := conn.QueryRow(ctx, "INSERT INTO t VALUES (1) RETURNING pg_current_xact_id()::text::bigint").Scan(&before); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := r.Primary.Ctl(ctx, "stop", "-m", "immediate"); err != nil {
		t.Fatal(err)
	}
	if err := r.Standby.Ctl(ctx, "promote"); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, r.MultiHostDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var after uint64
	var n int
	if err := conn.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint, (SELECT count(*) FROM t)").Scan(&after, &n); err != nil {
		t.Fatal(err)
	}
	if n != 1 || after <= before {
		t.Fatalf("after the promotion: %d rows (want 1), xid %d (want above %d)", n, after, before)
	}
}
