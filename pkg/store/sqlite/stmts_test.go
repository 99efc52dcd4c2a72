package sqlite

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
)

// Reads use statements prepared once, at most maxCachedStatements of them;
// past that, and after Close, queries still answer or fail as before.
func TestStatementCache(t *testing.T) {
	ctx := t.Context()
	r, err := Open(ctx, filepath.Join(t.TempDir(), "events.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	items := []store.SequencedItem{{SequenceID: id, Position: 0, Topic: "example.Created", State: []byte(`{}`)},
		{SequenceID: id, Position: 1, Topic: "example.AttributeChanged", State: []byte(`{}`)}}
	if _, err := r.InsertEvents(ctx, items); err != nil {
		t.Fatal(err)
	}
	after := int64(0)
	for range 3 {
		got, err := r.SelectEvents(ctx, id, store.Query{After: &after})
		if err != nil || len(got) != 1 || got[0].Position != 1 {
			t.Fatalf("select after 0: %v, %v", got, err)
		}
	}
	if n := len(r.reads.stmts); n != 1 {
		t.Fatalf("%d statements cached after one query three times", n)
	}
	for i := range maxCachedStatements + 10 {
		rows, err := r.reads.QueryContext(ctx, fmt.Sprintf("SELECT count(*) + %d FROM events", i))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		rows.Close()
		if n != 2+i {
			t.Fatalf("query %d: %d", i, n)
		}
	}
	if n := len(r.reads.stmts); n != maxCachedStatements {
		t.Fatalf("%d statements cached, want at most %d", n, maxCachedStatements)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.reads.stmts) != 0 {
		t.Fatal("statements left open after Close")
	}
	if _, err := r.SelectEvents(ctx, id, store.Query{}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("select after Close: %v", err)
	}
}
