package postgres_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// TestSelectSequencesPlan: SelectSequences reads each sequence with a scan of
// the primary key, forwards or backwards, and never scans the events table,
// whether the server plans the statement for its arguments or once for all
// (pgx prepares statements, and the server may switch to a generic plan).
func TestSelectSequencesPlan(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rec := newRecorder(t)
	var ids []uuid.UUID
	for range 20 {
		var items []store.SequencedItem
		for range 100 {
			id := uuid.New()
			ids = append(ids, id)
			items = append(items, storetest.Items(id, 0, 10)...)
		}
		if _, err := rec.InsertEvents(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := rec.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "ANALYZE "+rec.EventsTable()); err != nil {
		t.Fatal(err)
	}
	// The arguments of 200 queries, half "the items after position 4", half
	// "the last item", as the literals of an EXECUTE: the sequence ids, after,
	// up to, descending and limit of each.
	var seqs, after, upTo, desc, limit []string
	for i, id := range ids[:200] {
		seqs, upTo = append(seqs, id.String()), append(upTo, "9223372036854775807")
		if i%2 == 0 {
			after, desc, limit = append(after, "4"), append(desc, "f"), append(limit, "9223372036854775807")
		} else {
			after, desc, limit = append(after, "-1"), append(desc, "t"), append(limit, "1")
		}
	}
	lit := func(xs []string) string { return "'{" + strings.Join(xs, ",") + "}'" }
	execute := "EXPLAIN (FORMAT JSON) EXECUTE sel(" + strings.Join([]string{lit(seqs), lit(after), lit(upTo), lit(desc), lit(limit)}, ", ") + ")"
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "PREPARE sel AS "+rec.SelectSequencesSQL()); err != nil {
			t.Fatal(err)
		}
		var raw []byte
		if err := conn.QueryRow(ctx, execute).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "DEALLOCATE sel"); err != nil {
			t.Fatal(err)
		}
		var plan []struct{ Plan planNode }
		if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
			t.Fatalf("%s: plan %s: %v", mode, raw, err)
		}
		scans := map[string]int{}
		plan[0].Plan.walk(func(n *planNode) {
			if n.Relation != "" {
				index := n.Index
				if strings.HasSuffix(index, "events_pkey") {
					index = "pkey"
				}
				scans[strings.TrimSpace(n.Type+" "+n.Direction+" "+index)]++
			}
		})
		for scan := range scans {
			if !strings.HasPrefix(scan, "Index Scan") || !strings.HasSuffix(scan, " pkey") {
				t.Errorf("%s: the plan has a %s of the events table, want only index scans of the primary key:\n%s", mode, scan, raw)
			}
		}
		if scans["Index Scan Forward pkey"] == 0 || scans["Index Scan Backward pkey"] == 0 {
			t.Errorf("%s: the plan has scans %v, want forward and backward scans of the primary key:\n%s", mode, scans, raw)
		}
	}
	if _, err := conn.Exec(ctx, "RESET plan_cache_mode"); err != nil {
		t.Fatal(err)
	}
}

// planNode is a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	Type      string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Index     string     `json:"Index Name"`
	Direction string     `json:"Scan Direction"`
	Plans     []planNode `json:"Plans"`
}

func (n *planNode) walk(fn func(*planNode)) {
	fn(n)
	for i := range n.Plans {
		n.Plans[i].walk(fn)
	}
}
