package sqlmodel_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

// recorder is what the tests need of a store.
type recorder interface {
	store.ProcessRecorder
}

type backend struct {
	name    string
	open    func(t *testing.T) (recorder, sqlmodel.Conn, sqlmodel.Options)
	dialect sqlmodel.Dialect
}

var backends = []backend{
	{"sqlite", func(t *testing.T) (recorder, sqlmodel.Conn, sqlmodel.Options) {
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
		if err := rec.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Close() })
		return rec, sqlmodel.SQL(db), sqlmodel.Options{}
	}, sqlmodel.SQLite},
	{"postgres", func(t *testing.T) (recorder, sqlmodel.Conn, sqlmodel.Options) {
		pool := pgtest.Pool(t)
		schema := pgtest.Schema(t)
		rec, err := postgres.New(t.Context(), pool, postgres.Options{Schema: schema, Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Close() })
		return rec, sqlmodel.Pgx(pool), sqlmodel.Options{Schema: schema}
	}, sqlmodel.Postgres},
}

// counts keeps, per entity, how many events were applied and the position
// of the last one, and fails (permanently) on an event that does not follow
// the last one: an event applied twice or skipped would show.
func counts(version int) sqlmodel.Model {
	return sqlmodel.Model{
		Name:     "counts",
		Entities: projtest.Types,
		Tables:   []string{"counts"},
		Schema: func(d sqlmodel.Dialect, n sqlmodel.Names) []string {
			id := "TEXT"
			if d == sqlmodel.Postgres {
				id = "uuid"
			}
			extra := ""
			if version > 1 {
				extra = ", created BIGINT NOT NULL DEFAULT 0"
			}
			return []string{
				"CREATE TABLE " + n.Table("counts") + " (id " + id + " PRIMARY KEY, type TEXT NOT NULL, n BIGINT NOT NULL, last BIGINT NOT NULL" + extra + ")",
				"CREATE INDEX " + n.Index("counts", "type") + " ON " + n.Table("counts") + " (type)",
			}
		},
		Apply: func(ctx context.Context, tx *sqlmodel.Tx, items []projection.Item) error {
			for i, it := range items {
				var last int64 = -1
				err := tx.QueryRow(ctx, "SELECT last FROM "+tx.Table("counts")+" WHERE id = $1", it.SequenceID).Scan(&last)
				if err != nil && !errors.Is(err, sqlmodel.ErrNoRows) {
					return err
				}
				if it.Position != last+1 {
					return &projection.ItemError{Index: i, Err: projection.Permanent(fmt.Errorf("%s: position %d after %d", it.SequenceID, it.Position, last))}
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+tx.Table("counts")+" (id, type, n, last) VALUES ($1, $2, 1, $3) "+
					"ON CONFLICT (id) DO UPDATE SET n = "+tx.Table("counts")+".n + 1, last = excluded.last",
					it.SequenceID, events.EntityOf(it.Topic), it.Position); err != nil {
					return err
				}
				if _, ok := it.Event.(*entity.Created); ok {
					// A process application: every creation sends a command.
					if err := tx.Emit(it, wire.Command{Type: "welcome", Entity: "mail", EntityID: it.SequenceID}); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
}

type want struct {
	events  map[uuid.UUID]int64
	created []uuid.UUID
}

// newModel makes the model's tables in rec and a runner of it.
func newModel(t *testing.T, rec recorder, opts sqlmodel.Options, m sqlmodel.Model, mapper *events.Mapper, poison projection.PoisonAction) (*sqlmodel.ReadModel, *projection.Runner) {
	t.Helper()
	rm, err := sqlmodel.New(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	r, err := projection.NewRunner(rec, projection.Config{Name: rm.Name(), Policy: rm, Mapper: mapper, Source: rec, Poison: poison})
	if err != nil {
		t.Fatal(err)
	}
	return rm, r
}

// fullLog returns the whole notification log of rec once it holds every
// event of entities. A PostgreSQL log shows only what no transaction still
// open (anywhere on the server) can precede, so a read may stop short for a
// while.
func fullLog(t *testing.T, rec recorder, entities []*entity.Entity) []store.Notification {
	t.Helper()
	var want int
	for _, e := range entities {
		items, err := rec.SelectEvents(t.Context(), e.ID(), store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		want += len(items)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		log := projtest.Notifications(t, rec)
		if n := len(entityLog(log)); n >= want {
			return log
		} else if time.Now().After(deadline) {
			t.Fatalf("the log shows %d of %d events", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// entityLog returns the entity events of log: what the relay publishes to
// the events topics.
func entityLog(log []store.Notification) []store.Notification {
	var out []store.Notification
	for _, n := range log {
		if slices.Contains(projtest.Types, events.EntityOf(n.Topic)) {
			out = append(out, n)
		}
	}
	return out
}

func expect(log []store.Notification) want {
	w := want{events: map[uuid.UUID]int64{}}
	for _, n := range log {
		if !slices.Contains(projtest.Types, events.EntityOf(n.Topic)) {
			continue
		}
		w.events[n.SequenceID]++
		if n.Position == 0 {
			w.created = append(w.created, n.SequenceID)
		}
	}
	return w
}

func checkCounts(t *testing.T, q sqlmodel.Conn, table string, w want) {
	t.Helper()
	rows, err := q.Query(t.Context(), "SELECT id, n, last FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]int64{}
	for rows.Next() {
		var id uuid.UUID
		var n, last int64
		if err := rows.Scan(&id, &n, &last); err != nil {
			t.Fatal(err)
		}
		if last != n-1 {
			t.Errorf("%s: %d events applied, last position %d", id, n, last)
		}
		got[id] = n
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(w.events) {
		t.Errorf("%d entities in the table, want %d", len(got), len(w.events))
	}
	for id, n := range w.events {
		if got[id] != n {
			t.Errorf("%s: %d events applied, want %d", id, got[id], n)
		}
	}
}

// checkCommands: the outbox holds exactly one command per creation, with the
// id derived from the creating event.
func checkCommands(t *testing.T, rec recorder, w want) {
	t.Helper()
	var cmds []wire.Command
	for _, id := range w.created {
		items, err := rec.SelectEvents(t.Context(), wire.CommandItemID(wire.CausedCommandID("counts", id, 0, 0)), store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			c, err := wire.DecodeCommand(it.State, 0)
			if err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, c)
		}
	}
	if len(cmds) != len(w.created) {
		t.Fatalf("%d commands in the outbox, want %d (one per creation)", len(cmds), len(w.created))
	}
	for _, c := range cmds {
		if c.CommandID != wire.CausedCommandID("counts", c.EntityID, 0, 0) {
			t.Errorf("command %s for %s: not the id derived from its cause", c.CommandID, c.EntityID)
		}
	}
}

func TestModelExactlyOnce(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rec, q, opts := b.open(t)
			rng := rand.New(rand.NewPCG(7, 11))
			mapper := projtest.NewMapper(t)
			ents := projtest.History(t, rng, mapper, rec, 40, 400)
			log := fullLog(t, rec, ents)

			rm, err := sqlmodel.New(counts(1), opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := rm.Migrate(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			if err := rm.Migrate(t.Context(), rec); err != nil { // again: nothing to do
				t.Fatal(err)
			}
			r, err := projection.NewRunner(rec, projection.Config{Name: rm.Name(), Policy: rm, Mapper: mapper, Source: rec, Poison: projection.PoisonStop})
			if err != nil {
				t.Fatal(err)
			}
			// Duplicates and gaps from the relay, redeliveries from Kafka.
			c := projtest.Consumer{T: t, Rng: rng, Handler: r, Name: rm.Name(), MaxBatch: 20, Redeliver: 0.2}
			c.Run(projtest.Publish(rng, log, 3, 0.1))
			w := expect(log)
			checkCounts(t, q, rm.NewReader(q, b.dialect).Table("counts"), w)
			checkCommands(t, rec, w)
		})
	}
}

func TestModelRebuild(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			rec, q, opts := b.open(t)
			rng := rand.New(rand.NewPCG(3, 5))
			mapper := projtest.NewMapper(t)
			ents := projtest.History(t, rng, mapper, rec, 30, 300)

			rm, r := newModel(t, rec, opts, counts(1), mapper, projection.PoisonStop)
			c := projtest.Consumer{T: t, Rng: rng, Handler: r, Name: rm.Name(), MaxBatch: 20}
			first := fullLog(t, rec, ents)
			c.Run(projtest.Publish(rng, entityLog(first), 3, 0))

			// More history arrives and is applied live while a rebuild runs.
			ents = append(ents, projtest.History(t, rng, mapper, rec, 10, 200)...)
			log := fullLog(t, rec, ents)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := projtest.Consumer{T: t, Rng: rand.New(rand.NewPCG(1, 2)), Handler: r, Name: rm.Name(), MaxBatch: 5}
				c.Run(projtest.Publish(rand.New(rand.NewPCG(1, 2)), entityLog(log), 3, 0))
			}()
			var progress []int64
			st, err := rm.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{PageSize: 50, Progress: func(done, total int64) { progress = append(progress, done) }})
			if err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if st.Skipped != 0 || st.Applied < int64(len(expect(first).events)) {
				t.Errorf("rebuild stats %+v", st)
			}
			if !slices.IsSorted(progress) || len(progress) < 2 {
				t.Errorf("progress %v: want it to grow, page by page", progress)
			}
			w := expect(log)
			table := rm.NewReader(q, b.dialect).Table("counts")
			checkCounts(t, q, table, w)
			// The rebuild sent no command again.
			checkCommands(t, rec, w)

			// A second rebuild works (no name of the first is in its way),
			// and a changed schema needs one.
			if _, err := rm.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{}); err != nil {
				t.Fatalf("second rebuild: %v", err)
			}
			rm2, err := sqlmodel.New(counts(2), opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := rm2.Migrate(ctx, rec); !errors.Is(err, sqlmodel.ErrSchemaChanged) {
				t.Fatalf("Migrate with a changed schema = %v, want ErrSchemaChanged", err)
			}
			if _, err := rm2.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := rm2.Migrate(ctx, rec); err != nil {
				t.Fatalf("Migrate after the rebuild: %v", err)
			}
			checkCounts(t, q, table, w)
			var created int64
			if err := q.QueryRow(ctx, "SELECT count(created) FROM "+table).Scan(&created); err != nil {
				t.Fatalf("the new schema's column: %v", err)
			}
		})
	}
}

func TestModelValidate(t *testing.T) {
	ok := counts(1)
	for _, tc := range []struct {
		name string
		edit func(m *sqlmodel.Model)
	}{
		{"bad name", func(m *sqlmodel.Model) { m.Name = "Counts" }},
		{"double underscore", func(m *sqlmodel.Model) { m.Name = "a__b" }},
		{"no entities", func(m *sqlmodel.Model) { m.Entities = nil }},
		{"no apply", func(m *sqlmodel.Model) { m.Apply = nil }},
		{"table twice", func(m *sqlmodel.Model) { m.Tables = []string{"counts", "counts"} }},
		{"eventlog's table", func(m *sqlmodel.Model) { m.Tables = []string{"events"} }},
		{"unknown table in schema", func(m *sqlmodel.Model) { m.Tables = []string{"other"} }},
	} {
		m := ok
		tc.edit(&m)
		if _, err := sqlmodel.New(m, sqlmodel.Options{}); err == nil {
			t.Errorf("%s: New accepted the model", tc.name)
		}
	}
	if _, err := sqlmodel.New(ok, sqlmodel.Options{}); err != nil {
		t.Fatal(err)
	}
}

// A rebuild that goes past the live projection sends the commands of the
// events the live projection then skips, and only those: every creation's
// command is in the outbox once.
func TestRebuildSendsWhatTheLiveProjectionSkips(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			rec, q, opts := b.open(t)
			rng := rand.New(rand.NewPCG(9, 9))
			mapper := projtest.NewMapper(t)
			ents := projtest.History(t, rng, mapper, rec, 20, 100)
			first := entityLog(fullLog(t, rec, ents))
			rm, r := newModel(t, rec, opts, counts(1), mapper, projection.PoisonStop)
			// The live projection has applied the first history when the
			// rebuild runs, and the second (new entities among them) after
			// it: the rebuild must send the second's commands.
			c := projtest.Consumer{T: t, Rng: rng, Handler: r, Name: rm.Name(), MaxBatch: 10}
			c.Run(projtest.Publish(rng, first, 3, 0))
			ents = append(ents, projtest.History(t, rng, mapper, rec, 10, 50)...)
			log := entityLog(fullLog(t, rec, ents))
			if _, err := rm.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{PageSize: 40}); err != nil {
				t.Fatal(err)
			}
			c.Run(projtest.Publish(rand.New(rand.NewPCG(9, 9)), log, 3, 0))
			w := expect(log)
			checkCounts(t, q, rm.NewReader(q, b.dialect).Table("counts"), w)
			checkCommands(t, rec, w)
		})
	}
}

// A model whose Apply fails on an entity's event parks that entity from
// there, through the runner; a rebuild keeps it parked (the new tables hold
// the entity up to the event before), and once the fault is gone a retry
// applies the parked events once, after which the tables equal a fold of
// the whole log.
func TestModelParkingAndRebuild(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			rec, q, opts := b.open(t)
			rng := rand.New(rand.NewPCG(4, 4))
			mapper := projtest.NewMapper(t)
			ents := projtest.History(t, rng, mapper, rec, 10, 150)
			log := entityLog(fullLog(t, rec, ents))
			var bad uuid.UUID
			var badPos int64
			for _, n := range log {
				if n.Position == 3 {
					bad, badPos = n.SequenceID, 3
					break
				}
			}
			broken := true
			m := counts(1)
			apply := m.Apply
			m.Apply = func(ctx context.Context, tx *sqlmodel.Tx, items []projection.Item) error {
				for i, it := range items {
					if broken && it.SequenceID == bad && it.Position == badPos {
						return &projection.ItemError{Index: i, Err: projection.Permanent(errors.New("cannot apply this one"))}
					}
				}
				return apply(ctx, tx, items)
			}
			rm, r := newModel(t, rec, opts, m, mapper, projection.PoisonPark)
			c := projtest.Consumer{T: t, Rng: rng, Handler: r, Name: rm.Name(), MaxBatch: 10}
			c.Run(projtest.Publish(rng, log, 3, 0))
			table := rm.NewReader(q, b.dialect).Table("counts")
			last := func() int64 {
				var l int64
				if err := q.QueryRow(ctx, "SELECT last FROM "+table+" WHERE id = $1", bad).Scan(&l); err != nil {
					t.Fatal(err)
				}
				return l
			}
			if got := last(); got != badPos-1 {
				t.Fatalf("the parked entity is at position %d, want %d", got, badPos-1)
			}
			st, err := rm.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{PageSize: 50})
			if err != nil {
				t.Fatal(err)
			}
			if got := last(); got != badPos-1 || st.Skipped == 0 {
				t.Fatalf("after the rebuild the parked entity is at position %d (stats %+v), want %d", got, st, badPos-1)
			}
			broken = false
			if _, err := r.Retry(ctx, bad); err != nil {
				t.Fatal(err)
			}
			checkCounts(t, q, table, expect(log))
			// A rebuild now holds everything.
			if _, err := rm.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{}); err != nil {
				t.Fatal(err)
			}
			checkCounts(t, q, table, expect(log))
			// A rebuild parks again what fails again.
			broken = true
			st, err = rm.Rebuild(ctx, rec, rec, mapper, sqlmodel.RebuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := last(); got != badPos-1 || st.Parked != 1 {
				t.Fatalf("a rebuild that fails: the entity at position %d, %d parked; want %d, 1", got, st.Parked, badPos-1)
			}
			broken = false
			if _, err := r.Retry(ctx, bad); err != nil {
				t.Fatal(err)
			}
			checkCounts(t, q, table, expect(log))
		})
	}
}
