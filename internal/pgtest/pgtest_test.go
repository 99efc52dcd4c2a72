package pgtest

import (
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestSchemaDroppedAtCleanup(t *testing.T) {
	pool := Pool(t)
	var name string
	t.Run("child", func(t *testing.T) {
		name = Schema(t)
		if !strings.HasPrefix(name, schemaPrefix()) || len(name) > 63 {
			t.Fatalf("schema name %q", name)
		}
		var n int
		if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_namespace WHERE nspname = $1", name).Scan(&n); err != nil || n != 1 {
			t.Fatalf("schema %s exists: %d, %v", name, n, err)
		}
		if _, err := pool.Exec(t.Context(), "CREATE TABLE "+name+".t (x int)"); err != nil {
			t.Fatal(err)
		}
	})
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_namespace WHERE nspname = $1", name).Scan(&n); err != nil || n != 0 {
		t.Fatalf("schema %s left after its test: %d, %v", name, n, err)
	}
}

func TestLongTestNames(t *testing.T) {
	t.Run(strings.Repeat("a very long subtest name ", 8), func(t *testing.T) {
		if name := Schema(t); len(name) > 63 || strings.HasSuffix(name, "_") {
			t.Fatalf("schema name %q", name)
		}
	})
}

func TestDockerProbeIsFast(t *testing.T) {
	start := time.Now()
	_, ok := dockerEngine()
	if d := time.Since(start); !ok && d > 3*time.Second {
		t.Fatalf("finding no Docker engine took %v", d)
	}
}

func TestHolders(t *testing.T) {
	pool := Pool(t)
	schema := Schema(t)
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	if _, err := tx.Exec(t.Context(), "CREATE TABLE "+schema+".x (i int)"); err != nil { // takes an xid
		t.Fatal(err)
	}
	if got := Holders(t.Context(), pool); !strings.Contains(got, "pgtest "+t.Name()) {
		t.Fatalf("Holders does not name this test's open transaction:\n%s", got)
	}
}
