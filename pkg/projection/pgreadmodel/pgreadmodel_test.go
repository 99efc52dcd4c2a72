package pgreadmodel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/internal/projtest"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/wire"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const name = "readmodel"

// env is a PostgreSQL store and a read model in one fresh schema.
type env struct {
	pool   *pgxpool.Pool
	schema string
	rec    *postgres.Recorder
	rm     *pgreadmodel.ReadModel
	mapper *events.Mapper
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := t.Context()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t)
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rec.Close() })
	rm, err := pgreadmodel.New(pool, pgreadmodel.Options{Schema: schema, TablePrefix: "rm_", Types: projtest.Types})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{pool: pool, schema: schema, rec: rec, rm: rm, mapper: projtest.NewMapper(t)}
}

func (e *env) runner(t testing.TB, policy projection.Policy, mod ...func(*projection.Config)) *projection.Runner {
	t.Helper()
	cfg := projection.Config{Name: name, Policy: policy, Mapper: e.mapper, Source: e.rec}
	for _, f := range mod {
		f(&cfg)
	}
	r, err := projection.NewRunner(e.rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const markerTopic = "test.Marker"

// log returns the whole notification log, without the markers it writes. The
// store's log shows only what no open transaction can precede, and other
// tests' transactions hold that horizon back for a moment; so log appends a
// marker and reads until it sees it, to be sure it has every item committed
// before the call.
func (e *env) log(t testing.TB) []store.Notification {
	t.Helper()
	ids, err := e.rec.InsertEvents(t.Context(), []store.SequencedItem{{SequenceID: uuid.New(), Topic: markerTopic, Codec: "json", State: []byte("{}")}})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Notification
	var after int64
	for deadline := time.Now().Add(30 * time.Second); after < ids[0]; {
		ns, err := e.rec.SelectNotifications(t.Context(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the log did not reach id %d", ids[0])
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		for _, n := range ns {
			if n.Topic != markerTopic {
				out = append(out, n)
			}
		}
		after = ns[len(ns)-1].ID
	}
	return out
}

// rows returns every row of the read model, discarded ones too.
func (e *env) rows(t testing.TB) []readmodel.Row {
	t.Helper()
	var out []readmodel.Row
	for _, typ := range projtest.Types {
		var after uuid.UUID
		for {
			page, err := e.rm.List(t.Context(), typ, readmodel.Query{After: after, Limit: readmodel.MaxLimit, IncludeDiscarded: true})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, page...)
			if len(page) < readmodel.MaxLimit {
				break
			}
			after = page[len(page)-1].ID
		}
	}
	return out
}

func (e *env) check(t testing.TB, log []store.Notification) {
	t.Helper()
	if diffs := projtest.CompareRows(e.rows(t), projtest.Fold(t, e.mapper, log)); len(diffs) > 0 {
		t.Fatalf("read model differs from the fold of the log in %d rows:\n%s", len(diffs), strings.Join(diffs[:min(len(diffs), 10)], "\n"))
	}
}

// counted wraps the read model and records every item it applies in a table
// without a unique key, in the same transaction, so that double applies can
// be counted.
type counted struct {
	*pgreadmodel.ReadModel
	table string
}

func newCounted(t testing.TB, e *env) *counted {
	t.Helper()
	table := pgx.Identifier{e.schema, "applied"}.Sanitize()
	if _, err := e.pool.Exec(t.Context(), "CREATE TABLE "+table+" (sequence_id uuid NOT NULL, position bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return &counted{e.rm, table}
}

func (c *counted) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	if err := c.ReadModel.Apply(ctx, tx, items); err != nil {
		return err
	}
	ptx, _ := postgres.PgxTx(tx)
	ids := make([][16]byte, len(items))
	pos := make([]int64, len(items))
	for i, it := range items {
		ids[i], pos[i] = it.SequenceID, it.Position
	}
	_, err := ptx.Exec(ctx, "INSERT INTO "+c.table+" SELECT * FROM unnest($1::uuid[], $2::bigint[])", ids, pos)
	return err
}

// checkOnce asserts that each item of log was applied exactly once.
func (c *counted) checkOnce(t testing.TB, pool *pgxpool.Pool, log []store.Notification) {
	t.Helper()
	var kept int
	for _, n := range log {
		if events.EntityOf(n.Topic) != "" && events.EntityOf(n.Topic) != "eventlog" {
			kept++
		}
	}
	var distinct, twice int
	err := pool.QueryRow(t.Context(), `SELECT count(*), count(*) FILTER (WHERE n > 1)
		FROM (SELECT count(*) AS n FROM `+c.table+` GROUP BY sequence_id, position) c`).Scan(&distinct, &twice)
	if err != nil {
		t.Fatal(err)
	}
	if twice != 0 || distinct != kept {
		t.Fatalf("%d items applied, %d of them more than once; want %d, each once", distinct, twice, kept)
	}
}

// TestEqualsFold feeds the read model random batch splits of a relay stream
// with duplicates and gaps, and redelivered batches, and compares it with the
// fold of the stored events.
func TestEqualsFold(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rng := rand.New(rand.NewPCG(seed, 42))
			projtest.History(t, rng, e.mapper, e.rec, 40, 600)
			log := e.log(t)
			policy := newCounted(t, e)
			r := e.runner(t, policy)
			c := &projtest.Consumer{T: t, Rng: rng, Handler: r, Name: name, MaxBatch: 1 + rng.IntN(60), Redeliver: 0.15}
			c.Run(projtest.Publish(rng, log, 3, 0.1))
			e.check(t, log)
			policy.checkOnce(t, e.pool, log)
			st := r.Stats()
			if st.Duplicates == 0 || st.Repaired == 0 {
				t.Errorf("stats %+v: the stream had no duplicates or no gaps", st)
			}
		})
	}
}

// TestZombie runs two runners of the same name on the same partitions at the
// same time: for each batch one commits and the other fails with
// store.ErrTrackingConflict, and nothing is applied twice.
func TestZombie(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(9, 9))
	projtest.History(t, rng, e.mapper, e.rec, 20, 300)
	log := e.log(t)
	recs := projtest.Publish(rng, log, 2, 0).Flatten()
	policy := newCounted(t, e)
	runners := []*projection.Runner{e.runner(t, policy), e.runner(t, policy)}
	ctx := t.Context()
	for i := 0; i < len(recs); {
		batch := recs[i:min(len(recs), i+1+rng.IntN(50))]
		i += len(batch)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for k, r := range runners {
			wg.Go(func() {
				<-start
				errs[k] = r.HandleBatch(ctx, batch)
			})
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrTrackingConflict):
			default:
				t.Fatalf("HandleBatch: %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("batch at %d: %d runners committed (errors %v), want exactly 1", i, ok, errs)
		}
	}
	// The late runner of a batch changes nothing.
	before := e.rows(t)
	if err := runners[0].HandleBatch(ctx, recs[:10]); !errors.Is(err, store.ErrTrackingConflict) {
		t.Fatalf("late batch: got %v, want store.ErrTrackingConflict", err)
	}
	if diffs := projtest.CompareRows(e.rows(t), rowMap(before)); len(diffs) > 0 {
		t.Fatalf("a late batch changed the read model: %v", diffs)
	}
	e.check(t, log)
	policy.checkOnce(t, e.pool, log)
}

func rowMap(rows []readmodel.Row) map[uuid.UUID]readmodel.Row {
	m := map[uuid.UUID]readmodel.Row{}
	for _, r := range rows {
		m[r.ID] = r
	}
	return m
}

// poison returns records of fresh entities that cannot be applied: state
// that does not decode, an unknown topic, an invalid attribute name (refused
// by the fold), and no headers at all.
func poison() []wire.Record {
	rec := func(topic, state string) wire.Record {
		n := store.Notification{ID: 1, SequencedItem: store.SequencedItem{SequenceID: uuid.New(), Topic: topic, State: []byte(state), Codec: "json"}}
		return projection.RecordOf(n, "t", 0, 0)
	}
	return []wire.Record{
		rec("example.Created", `{"attributes": {`),
		rec("unknown.Created", `{"attributes": {}}`),
		rec("example.Created", `{"attributes": {"1bad name": 1}}`),
		{Value: []byte(`{"attributes": {}}`)},
	}
}

// mix puts the poison records at random places of one partition.
func mix(rng *rand.Rand, good, bad []wire.Record) []wire.Record {
	out := append([]wire.Record(nil), good...)
	for _, p := range bad {
		i := rng.IntN(len(out) + 1)
		out = append(out[:i], append([]wire.Record{p}, out[i:]...)...)
	}
	for i := range out {
		out[i].Topic, out[i].Partition, out[i].Offset = projtest.Topics.Events("example"), 0, int64(i)
	}
	return out
}

func TestPoisonDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(5, 5))
	projtest.History(t, rng, e.mapper, e.rec, 10, 150)
	log := e.log(t)
	bad := poison()
	recs := mix(rng, projtest.Publish(rng, log, 1, 0).Flatten(), bad)
	policy := newCounted(t, e)
	r := e.runner(t, policy)
	for i := 0; i < len(recs); {
		batch := recs[i:min(len(recs), i+1+rng.IntN(40))]
		if err := r.HandleBatch(t.Context(), batch); err != nil {
			t.Fatalf("batch at %d: %v", i, err)
		}
		i += len(batch)
	}
	e.check(t, log)
	policy.checkOnce(t, e.pool, log)
	var dead []wire.DeadLetter
	for _, n := range e.log(t) {
		if n.Topic == wire.DeadLetterItemTopic {
			d, err := wire.DecodeDeadLetter(n.State)
			if err != nil {
				t.Fatal(err)
			}
			dead = append(dead, d)
		}
	}
	if len(dead) != len(bad) || r.Stats().DeadLetters != int64(len(bad)) {
		t.Fatalf("%d dead letters stored, %d counted; want %d", len(dead), r.Stats().DeadLetters, len(bad))
	}
	for _, d := range dead {
		if string(d.Value) != string(recs[d.SourceOffset].Value) || d.Reason == "" {
			t.Errorf("dead letter %+v does not carry its record", d)
		}
	}
}

func TestPoisonStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(6, 6))
	projtest.History(t, rng, e.mapper, e.rec, 5, 30)
	good := projtest.Publish(rng, e.log(t), 1, 0).Flatten()
	r := e.runner(t, e.rm, func(c *projection.Config) { c.Poison = projection.PoisonStop })
	for _, bad := range poison() {
		recs := mix(rng, good, []wire.Record{bad})
		err := r.HandleBatch(t.Context(), recs)
		if !errors.Is(err, projection.ErrPoison) {
			t.Fatalf("got %v, want ErrPoison", err)
		}
		if rows := e.rows(t); len(rows) != 0 {
			t.Fatalf("%d rows after a stopped batch, want none", len(rows))
		}
		if pos, _ := r.Tracking(t.Context(), name, recs[0].Topic, 0); pos != -1 {
			t.Fatalf("tracking %d after a stopped batch", pos)
		}
	}
}

// failOnce fails the first Apply after the read model wrote its rows.
type failOnce struct {
	*pgreadmodel.ReadModel
	failed atomic.Bool
}

func (f *failOnce) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	if err := f.ReadModel.Apply(ctx, tx, items); err != nil {
		return err
	}
	if !f.failed.Swap(true) {
		return errors.New("connection reset by peer")
	}
	return nil
}

func TestTransientError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(7, 7))
	projtest.History(t, rng, e.mapper, e.rec, 5, 50)
	log := e.log(t)
	recs := projtest.Publish(rng, log, 1, 0).Flatten()
	r := e.runner(t, &failOnce{ReadModel: e.rm})
	err := r.HandleBatch(t.Context(), recs)
	if err == nil || projection.IsPermanent(err) {
		t.Fatalf("got %v, want the transient error", err)
	}
	if rows := e.rows(t); len(rows) != 0 {
		t.Fatalf("%d rows after a failed batch, want none", len(rows))
	}
	if err := r.HandleBatch(t.Context(), recs); err != nil {
		t.Fatalf("retry: %v", err)
	}
	e.check(t, log)
}

func TestGetList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	es := store.NewEventStore(e.mapper, e.rec)
	var ids []uuid.UUID
	for i := range 25 {
		ent, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{
			"color": json.RawMessage(fmt.Sprintf(`"%s"`, []string{"red", "blue"}[i%2])),
			"size":  json.RawMessage(fmt.Sprint(i)),
			"tags":  json.RawMessage(`["x", "y"]`),
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			if err := ent.Discard(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := es.Put(ctx, ent.CollectEvents()...); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ent.ID())
	}
	r := e.runner(t, e.rm)
	if err := r.HandleBatch(ctx, projtest.Publish(rand.New(rand.NewPCG(1, 1)), e.log(t), 1, 0).Flatten()); err != nil {
		t.Fatal(err)
	}

	row, err := e.rm.Get(ctx, "example", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if row.Version != 1 || string(row.Attributes["color"]) != `"red"` || row.Type != "example" || row.ID != ids[0] || row.UpdatedAt.IsZero() {
		t.Errorf("Get = %+v", row)
	}
	if _, err := e.rm.Get(ctx, "example", ids[4]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a discarded entity: %v, want store.ErrNotFound", err)
	}
	if _, err := e.rm.Get(ctx, "example", uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of an unknown entity: %v, want store.ErrNotFound", err)
	}
	if _, err := e.rm.Get(ctx, "nosuch", ids[0]); !errors.Is(err, pgreadmodel.ErrUnknownType) {
		t.Errorf("Get of an unknown type: %v, want ErrUnknownType", err)
	}

	list := func(q readmodel.Query) []readmodel.Row {
		t.Helper()
		rows, err := e.rm.List(ctx, "example", q)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	red := list(readmodel.Query{Where: map[string]json.RawMessage{"color": readmodel.ParseValue("red")}})
	if len(red) != 10 { // 13 red, 3 of them discarded
		t.Errorf("%d red entities, want 10", len(red))
	}
	for _, r := range red {
		if string(r.Attributes["color"]) != `"red"` || r.Discarded {
			t.Errorf("listed %+v", r)
		}
	}
	if n := len(list(readmodel.Query{Where: map[string]json.RawMessage{"color": readmodel.ParseValue("red")}, IncludeDiscarded: true})); n != 13 {
		t.Errorf("%d red entities with discarded ones, want 13", n)
	}
	if n := len(list(readmodel.Query{Where: map[string]json.RawMessage{"size": readmodel.ParseValue("3"), "color": readmodel.ParseValue("blue")}})); n != 1 {
		t.Errorf("size 3 and blue: %d, want 1", n)
	}
	if n := len(list(readmodel.Query{Where: map[string]json.RawMessage{"tags": json.RawMessage(`["y"]`)}})); n != 20 {
		t.Errorf("tags containing y: %d, want 20", n)
	}
	// Pages of 3 cover every live entity once, in id order.
	var all []readmodel.Row
	var after uuid.UUID
	for {
		page := list(readmodel.Query{After: after, Limit: 3})
		all = append(all, page...)
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].ID
	}
	if len(all) != 20 {
		t.Errorf("paged through %d entities, want 20", len(all))
	}
	for i := 1; i < len(all); i++ {
		if strings.Compare(all[i-1].ID.String(), all[i].ID.String()) >= 0 {
			t.Fatalf("pages not in id order at %d", i)
		}
	}
	for _, q := range []readmodel.Query{
		{Limit: readmodel.MaxLimit + 1},
		{Where: map[string]json.RawMessage{"1x": json.RawMessage(`1`)}},
		{Where: map[string]json.RawMessage{"x": json.RawMessage(`{`)}},
	} {
		if _, err := e.rm.List(ctx, "example", q); !errors.Is(err, readmodel.ErrQuery) {
			t.Errorf("List(%+v): %v, want ErrQuery", q, err)
		}
	}

	// The attribute filter can use the GIN index.
	table, _ := e.rm.Table("example")
	var plan string
	err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "EXPLAIN (FORMAT TEXT) SELECT id FROM "+table+` WHERE attributes @> '{"color": "red"}'`)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		plan = strings.Join(lines, "\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "rm_example_attributes") {
		t.Errorf("containment query does not use the index: %s", plan)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	pool := &pgxpool.Pool{}
	for _, o := range []pgreadmodel.Options{
		{},
		{Types: []string{"Bad"}},
		{Types: []string{"eventlog"}},
		{Types: []string{"example"}, Schema: "Public"},
		{Types: []string{"example"}, Schema: "a;b"},
		{Types: []string{"example"}, TablePrefix: "x-"},
		{Types: []string{"example"}, TablePrefix: strings.Repeat("p", 33)},
	} {
		if _, err := pgreadmodel.New(pool, o); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
	long1, long2 := strings.Repeat("a", 62)+"1", strings.Repeat("a", 62)+"2"
	rm, err := pgreadmodel.New(pool, pgreadmodel.Options{Types: []string{long1, long2, "with-dash"}})
	if err != nil {
		t.Fatal(err)
	}
	t1, _ := rm.Table(long1)
	t2, _ := rm.Table(long2)
	t3, _ := rm.Table("with-dash")
	if t1 == t2 || len(t1) > len(`"public".""`)+63 {
		t.Errorf("long types give tables %s and %s", t1, t2)
	}
	if t3 != `"public"."readmodel_with-dash"` {
		t.Errorf("table %s", t3)
	}
}

// TestPersistenceIntoPostgres copies one PostgreSQL store into another (a
// second schema) with the persistence policy: the copy equals the source.
func TestPersistenceIntoPostgres(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	target, err := postgres.New(t.Context(), e.pool, postgres.Options{Schema: pgtest.Schema(t), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Close() })
	rng := rand.New(rand.NewPCG(13, 13))
	projtest.History(t, rng, e.mapper, e.rec, 20, 300)
	log := e.log(t)
	r, err := projection.NewRunner(target, projection.Config{Name: "replica", Policy: projection.PersistencePolicy{}, Source: e.rec})
	if err != nil {
		t.Fatal(err)
	}
	(&projtest.Consumer{T: t, Rng: rng, Handler: r, Name: "replica", MaxBatch: 40, Redeliver: 0.2}).Run(projtest.Publish(rng, log, 3, 0.1))
	bySeq := map[uuid.UUID][]store.SequencedItem{}
	for _, n := range log {
		bySeq[n.SequenceID] = append(bySeq[n.SequenceID], n.SequencedItem)
	}
	for id, want := range bySeq {
		got, err := target.SelectEvents(t.Context(), id, store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("sequence %s: %d items copied, want %d", id, len(got), len(want))
		}
		for i := range got {
			if got[i].Position != want[i].Position || got[i].Topic != want[i].Topic || string(got[i].State) != string(want[i].State) || got[i].Codec != want[i].Codec {
				t.Fatalf("sequence %s item %d: got %+v, want %+v", id, i, got[i], want[i])
			}
		}
	}
	if st := r.Stats(); st.Applied != int64(len(log)) || st.Duplicates == 0 {
		t.Errorf("stats %+v", st)
	}
}
