package sqlitereadmodel_test

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/projection/sqlitereadmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

const name = "readmodel"

type env struct {
	rec    *sqlite.Recorder
	rm     *sqlitereadmodel.ReadModel
	mapper *events.Mapper
}

// newEnv opens a SQLite file holding both the store and the read model.
func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := t.Context()
	opts := sqlite.Options{Synchronous: sqlite.SyncNormal}
	db, err := sql.Open("sqlite", sqlite.DSN(filepath.Join(t.TempDir(), "eventlog.db"), opts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	rec, err := sqlite.New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rec.Close() })
	rm, err := sqlitereadmodel.New(db, sqlitereadmodel.Options{Types: projtest.Types})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{rec: rec, rm: rm, mapper: projtest.NewMapper(t)}
}

func (e *env) runner(t testing.TB) *projection.Runner {
	t.Helper()
	r, err := projection.NewRunner(e.rec, projection.Config{Name: name, Policy: e.rm, Mapper: e.mapper, Source: e.rec})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) rows(t testing.TB) []readmodel.Row {
	t.Helper()
	var out []readmodel.Row
	for _, typ := range projtest.Types {
		var after uuid.UUID
		for {
			page, err := e.rm.List(t.Context(), typ, readmodel.Query{After: after, Limit: 7, IncludeDiscarded: true})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, page...)
			if len(page) < 7 {
				break
			}
			after = page[len(page)-1].ID
		}
	}
	return out
}

func TestEqualsFold(t *testing.T) {
	t.Parallel()
	for seed := range uint64(2) {
		e := newEnv(t)
		rng := rand.New(rand.NewPCG(seed, 3))
		projtest.History(t, rng, e.mapper, e.rec, 30, 400)
		log := projtest.Notifications(t, e.rec)
		r := e.runner(t)
		(&projtest.Consumer{T: t, Rng: rng, Handler: r, Name: name, MaxBatch: 40, Redeliver: 0.15}).Run(projtest.Publish(rng, log, 3, 0.1))
		if diffs := projtest.CompareRows(e.rows(t), projtest.Fold(t, e.mapper, log)); len(diffs) > 0 {
			t.Fatalf("seed %d: %d rows differ:\n%s", seed, len(diffs), strings.Join(diffs[:min(10, len(diffs))], "\n"))
		}
		if st := r.Stats(); st.Applied != int64(len(log)) || st.Duplicates == 0 || st.Repaired == 0 {
			t.Errorf("seed %d: stats %+v", seed, st)
		}
	}
}

func TestPoison(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(4, 4))
	projtest.History(t, rng, e.mapper, e.rec, 5, 50)
	log := projtest.Notifications(t, e.rec)
	recs := projtest.Publish(rng, log, 1, 0).Flatten()
	bad := store.Notification{ID: 1, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: "example.Created", State: []byte(`{"attributes": {"1x": 1}}`), Codec: "json"}}
	recs = append(recs[:10:10], append([]wire.Record{projection.RecordOf(bad, "t", 0, 0)}, recs[10:]...)...)
	for i := range recs {
		recs[i].Topic, recs[i].Partition, recs[i].Offset = "t", 0, int64(i)
	}
	r := e.runner(t)
	if err := r.HandleBatch(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if diffs := projtest.CompareRows(e.rows(t), projtest.Fold(t, e.mapper, log)); len(diffs) > 0 {
		t.Fatalf("%d rows differ: %v", len(diffs), diffs)
	}
	if n := r.Stats().DeadLetters; n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
}

func TestGetList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	es := store.NewEventStore(e.mapper, e.rec)
	var ids []uuid.UUID
	for i := range 12 {
		ent, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{
			"color": json.RawMessage(fmt.Sprintf(`"%s"`, []string{"red", "blue"}[i%2])),
			"size":  json.RawMessage(fmt.Sprint(i % 3)),
			"a.b":   json.RawMessage(`{"x": [1, 2]}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			if err := ent.Discard(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := es.Put(ctx, ent.CollectEvents()...); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ent.ID())
	}
	if err := e.runner(t).HandleBatch(ctx, projtest.Publish(nil, projtest.Notifications(t, e.rec), 1, 0).Flatten()); err != nil {
		t.Fatal(err)
	}
	row, err := e.rm.Get(ctx, "example", ids[1])
	if err != nil || row.Version != 1 || string(row.Attributes["color"]) != `"blue"` || row.UpdatedAt.IsZero() {
		t.Fatalf("Get = %+v, %v", row, err)
	}
	if _, err := e.rm.Get(ctx, "example", ids[4]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("discarded: %v", err)
	}
	if _, err := e.rm.Get(ctx, "example", uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown: %v", err)
	}
	if _, err := e.rm.Get(ctx, "nosuch", ids[0]); !errors.Is(err, sqlitereadmodel.ErrUnknownType) {
		t.Errorf("unknown type: %v", err)
	}
	for _, tc := range []struct {
		where map[string]string
		want  int
	}{
		{map[string]string{"color": "red"}, 5}, // 6 red, one discarded
		{map[string]string{"color": "red", "size": "0"}, 2},
		{map[string]string{"size": "1"}, 3}, // 1, 4 (discarded), 7, 10
		{map[string]string{"a.b": `{ "x" : [1,2] }`}, 11},
		{map[string]string{"color": "green"}, 0},
	} {
		where := map[string]json.RawMessage{}
		for k, v := range tc.where {
			where[k] = readmodel.ParseValue(v)
		}
		rows, err := e.rm.List(ctx, "example", readmodel.Query{Where: where})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != tc.want {
			t.Errorf("List(%v): %d rows, want %d", tc.where, len(rows), tc.want)
		}
	}
	if rows := e.rows(t); len(rows) != 12 {
		t.Errorf("%d rows with discarded ones, want 12", len(rows))
	}
}
