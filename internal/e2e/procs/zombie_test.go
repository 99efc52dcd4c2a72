package procs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestZombieProjector: a projector that stops in the middle of a batch (as a
// SIGSTOPped process does) for longer than its session timeout, while events
// keep coming; its partitions move to the other member, which applies them;
// then it goes on with the batch it held.
//
// The projector program has no flag for the group session timeout (it uses
// franz-go's default of 45s), so the two members are built in process, as
// cli.Projector builds them (a kafka.Consumer driving a projection.Runner of
// the PostgreSQL read model, each on its own pool), with a session timeout
// of 1.5s; "SIGSTOP" is a hook that blocks until the test releases it, and
// SIGCONT is the release. (TestProjectorsUnderChurn SIGSTOPs real projector
// processes, without control over where in a batch they stop.)
//
// Two places to stop:
//
//   - "before its transaction": the member holds a polled batch and has not
//     begun to apply it. After its partitions moved and the live member
//     applied past the batch, the late transaction must fail with
//     store.ErrTrackingConflict, and the read model and the apply log must be
//     exactly as they were before it ran.
//   - "inside its transaction": the member stops in the policy's Apply,
//     after its transaction moved the tracking rows of the batch's partitions
//     (and so holds their row locks). The live member's transaction on those
//     partitions must wait for it rather than apply the same records; once
//     released, the zombie's transaction commits and the live member's fails
//     with a tracking conflict, so each event is applied once.
//
// Bugs it catches: tracking that is not checked in the effect's transaction
// (the zombie's batch applied a second time), a tracking check that lets an
// overlapping batch through (it must move to the batch's first offset before
// its last), a consumer that resumes a moved partition from Kafka's
// committed offsets, and a consumer that skips or re-applies records after a
// tracking conflict. In both cases the read model must end equal to the fold
// of the stored events, with no event applied twice.
func TestZombieProjector(t *testing.T) {
	t.Run("before its transaction", func(t *testing.T) { zombieTest(t, false) })
	t.Run("inside its transaction", func(t *testing.T) { zombieTest(t, true) })
}

func zombieTest(t *testing.T, insideTx bool) {
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t, 0)
	adm := kadm.NewClient(b.client(t))
	log := e2etest.Log(t, slog.LevelWarn)
	startWriter(t, b, pg, log)
	wl := newWorkload(scaled(200, 100), 10)
	recs := wl.records()
	prod := b.client(t)
	t0 := time.Now()

	// The zombie starts alone and holds its first batch.
	g := newGate()
	zombie := newMember(t, b, pg, "zombie", log, g, insideTx)
	if err := produceAt(ctx, prod, recs[:len(wl.ids)], 0); err != nil { // the creates
		t.Fatal(err)
	}
	select {
	case <-g.holding:
	case <-ctx.Done():
		t.Fatal("the zombie never got a batch")
	}
	held := zombie.held()
	t.Logf("the zombie holds a batch of %d records %s (%s)", zombie.heldCount(), held, map[bool]string{false: "before its transaction", true: "inside its transaction"}[insideTx])
	tHold := time.Now()

	// The live member joins; the zombie cannot rejoin while it holds the
	// batch, so after the rebalance timeout it is out and the live member
	// has every partition.
	live := newMember(t, b, pg, "live", log, nil, false)
	produced := make(chan error, 1)
	go func() { produced <- produceAt(ctx, prod, recs[len(wl.ids):], 1000) }()

	if !insideTx {
		// The live member applies the held records and everything after them.
		if err := <-produced; err != nil {
			t.Fatal(err)
		}
		waitStored(t, ctx, pg, wl.events())
		pg.waitReadModel(t, ctx, adm, time.Minute)
		tr, _ := pg.tracking(ctx)
		for p, last := range held {
			if tr[p] < last[1] {
				t.Fatalf("partition %d: tracking %d, below the held batch's last offset %d", p, tr[p], last[1])
			}
		}
		t.Logf("the live member applied the zombie's partitions and everything after them %s after the zombie stopped", time.Since(tHold).Round(time.Millisecond))
	} else {
		// The live member's transaction waits for the zombie's row locks.
		if msg, err := poll(ctx, time.Minute, 50*time.Millisecond, func() (bool, string, error) {
			var waiting bool
			err := pg.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock')`,
				live.app).Scan(&waiting)
			return waiting, "the live member's session is not waiting for a lock", err
		}); err != nil {
			t.Fatalf("%v (%s)", err, msg)
		}
		tr, _ := pg.tracking(ctx)
		for p := range held {
			if tr[p] >= 0 {
				t.Errorf("partition %d: tracking %d while the zombie's transaction holds it uncommitted", p, tr[p])
			}
		}
		t.Logf("the live member waits for the zombie's tracking rows %s after the zombie stopped", time.Since(tHold).Round(time.Millisecond))
	}
	snap := func() (map[uuid.UUID]entityState, int) {
		rm, err := pg.readModel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, err := pg.applyLogRows(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rm, n
	}
	var (
		before    map[uuid.UUID]entityState
		logBefore int
	)
	if !insideTx {
		before, logBefore = snap()
	}

	// The zombie has been stopped for longer than its session timeout, and
	// the live member has every partition.
	if d := 3*time.Second - time.Since(tHold); d > 0 {
		time.Sleep(d)
	}
	if members := groupMembers(t, ctx, adm); len(members) != 1 || len(members["live"]) != partitions {
		t.Fatalf("group members and their partitions while the zombie is stopped: %v; want only the live member, with all %d", members, partitions)
	}

	// SIGCONT.
	g.release()
	var zerr error
	select {
	case zerr = <-zombie.result:
	case <-ctx.Done():
		t.Fatal("the zombie's batch did not finish")
	}
	if !insideTx {
		if !errors.Is(zerr, store.ErrTrackingConflict) {
			t.Fatalf("the zombie's late transaction: %v, want store.ErrTrackingConflict", zerr)
		}
		t.Logf("the zombie's late transaction failed: %v", zerr)
		// Nothing it did may show, now or after it has rejoined.
		time.Sleep(2 * time.Second)
		after, logAfter := snap()
		if logAfter != logBefore {
			t.Errorf("the apply log has %d rows after the zombie's late batch, %d before", logAfter, logBefore)
		}
		if !reflect.DeepEqual(after, before) {
			t.Errorf("the read model changed after the zombie's late batch (%d rows before, %d after)", len(before), len(after))
		}
	} else {
		if zerr != nil {
			t.Fatalf("the zombie's transaction, which held the tracking rows: %v, want it to commit", zerr)
		}
		if err := <-produced; err != nil {
			t.Fatal(err)
		}
		waitStored(t, ctx, pg, wl.events())
		pg.waitReadModel(t, ctx, adm, time.Minute)
		if c := live.consumer.Stats().Conflicts; c == 0 {
			t.Errorf("the live member's batch that waited for the zombie's rows did not fail with a tracking conflict")
		}
	}

	// The read model equals the store, and no event was applied twice.
	want, err := pg.storeFold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pg.readModel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffStates("read model", got, "store", want) {
		t.Error(d)
	}
	we := wl.want()
	for _, id := range wl.ids {
		if s := want[id]; s.String() != we.String() {
			t.Errorf("store: entity %s is %s, want %s", id, s, we)
			break
		}
	}
	ac, err := pg.checkApplyLog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ac.doubleCount > 0 || ac.applied != wl.events() {
		t.Errorf("apply log: %d distinct events applied (want %d), %d double applies: %q", ac.applied, wl.events(), ac.doubleCount, ac.doubles)
	}
	zs, ls := zombie.consumer.Stats(), live.consumer.Stats()
	t.Logf("zombie: %d batches, %d tracking conflicts; live: %d batches, %d tracking conflicts; %s in all",
		zs.Batches, zs.Conflicts, ls.Batches, ls.Conflicts, time.Since(t0).Round(time.Millisecond))
}

// groupMembers returns the partitions of each member of the projector group,
// by client id.
func groupMembers(t testing.TB, ctx context.Context, adm *kadm.Client) map[string][]int32 {
	t.Helper()
	groups, err := adm.DescribeGroups(ctx, "eventlog-projector-"+readModelName)
	if err != nil {
		t.Fatalf("describe group: %v", err)
	}
	out := map[string][]int32{}
	for _, g := range groups {
		for _, m := range g.Members {
			var parts []int32
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range a.Topics {
					parts = append(parts, tp.Partitions...)
				}
			}
			slices.Sort(parts)
			out[m.ClientID] = append(out[m.ClientID], parts...)
		}
	}
	return out
}

// waitStored waits until the store holds n events of type example.
func waitStored(t testing.TB, ctx context.Context, pg *pgEnv, n int) {
	t.Helper()
	if msg, err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, string, error) {
		got, err := pg.storedEvents(ctx)
		return got >= n, fmt.Sprintf("%d of %d events stored", got, n), err
	}); err != nil {
		t.Fatalf("%v (%s)", err, msg)
	}
}

// startWriter runs a writer service in process on pg, until t ends.
func startWriter(t testing.TB, b *broker, pg *pgEnv, log *slog.Logger) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := service.NewWriter(ctx, service.WriterConfig{
		Backend: service.Backend{Recorder: pg.rec, Snapshots: pg.rec, Locker: pg.rec, Name: "postgres"},
		Kafka: service.Kafka{ClientOptions: []kgo.Opt{kgo.SeedBrokers(b.addr), kgo.WithLogger(kafka.NewLogger(log))},
			Topics: topics, Partitions: partitions, ReplicationFactor: -1},
		Entities: []string{"example"}, Log: log,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	})
}

// gate is where a member stops: the first batch that reaches it blocks until
// release.
type gate struct {
	taken   atomic.Bool
	holding chan struct{} // closed when a batch is held
	once    sync.Once
	rel     chan struct{}
}

func newGate() *gate { return &gate{holding: make(chan struct{}), rel: make(chan struct{})} }

// hold blocks the first caller until release (or ctx ends); it reports
// whether it was the first.
func (g *gate) hold(ctx context.Context) bool {
	if g == nil || !g.taken.CompareAndSwap(false, true) {
		return false
	}
	close(g.holding)
	select {
	case <-g.rel:
	case <-ctx.Done():
	}
	return true
}

func (g *gate) release() { g.once.Do(func() { close(g.rel) }) }

// member is one projector group member in process: a kafka.Consumer driving a
// projection.Runner of the PostgreSQL read model, on its own pool, as
// cli.Projector builds it.
type member struct {
	app      string
	consumer *kafka.Consumer
	runner   *projection.Runner
	// result receives the outcome of the held batch.
	result chan error

	mu       sync.Mutex
	heldRecs []wire.Record
}

// newMember starts a member; g, if not nil, stops its first batch: in the
// policy's Apply if insideTx, else before the runner sees it.
func newMember(t testing.TB, b *broker, pg *pgEnv, role string, log *slog.Logger, g *gate, insideTx bool) *member {
	t.Helper()
	m := &member{app: appName("zombie-" + role), result: make(chan error, 1)}
	cfg, err := pgxpool.ParseConfig(pg.dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = m.app
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := postgres.New(t.Context(), pool, postgres.Options{Schema: pg.schema})
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	rm, err := pgreadmodel.New(pool, pgreadmodel.Options{Types: []string{"example"}, Schema: pg.schema})
	if err != nil {
		t.Fatal(err)
	}
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	var policy projection.Policy = rm
	if insideTx && g != nil {
		policy = &stoppingPolicy{ReadModel: rm, g: g}
	}
	m.runner, err = projection.NewRunner(rec, projection.Config{
		Name: readModelName, Policy: policy, Mapper: events.NewMapper(reg), Source: rec, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	var h kafka.BatchHandler = m.runner
	if g != nil {
		h = kafka.BatchHandlerFunc(func(ctx context.Context, recs []wire.Record) error {
			first := !g.taken.Load()
			if first {
				m.keep(recs)
			}
			if !insideTx && !g.hold(ctx) {
				return m.runner.HandleBatch(ctx, recs)
			}
			// Before its transaction, the gate has been held and released
			// by now; inside it, Apply holds it.
			err := m.runner.HandleBatch(ctx, recs)
			if first {
				m.result <- err
			}
			return err
		})
	}
	m.consumer, err = kafka.NewConsumer(kafka.ConsumerConfig{
		Name: readModelName, Group: "eventlog-projector-" + readModelName, Topics: []string{eventsTopic},
		ClientOptions:  []kgo.Opt{kgo.SeedBrokers(b.addr), kgo.WithLogger(kafka.NewLogger(log)), kgo.ClientID(role)},
		MaxPollRecords: 100, SessionTimeout: 1500 * time.Millisecond, RebalanceTimeout: 1500 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, ShutdownTimeout: 5 * time.Second, Logger: log,
	}, h, m.runner)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.consumer.Run(ctx) }()
	t.Cleanup(func() {
		if g != nil {
			g.release()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s consumer: %v", role, err)
		}
		rec.Close()
		pool.Close()
	})
	return m
}

// keep remembers the records of the batch the member holds.
func (m *member) keep(recs []wire.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heldRecs = slices.Clone(recs)
}

// held returns the first and last offset of each partition in the held batch.
func (m *member) held() heldOffsets {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := heldOffsets{}
	for _, r := range m.heldRecs {
		o, ok := out[r.Partition]
		if !ok {
			o = [2]int64{r.Offset, r.Offset}
		}
		out[r.Partition] = [2]int64{min(o[0], r.Offset), max(o[1], r.Offset)}
	}
	return out
}

func (m *member) heldCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.heldRecs)
}

type heldOffsets map[int32][2]int64

func (h heldOffsets) String() string {
	s := "on"
	for _, p := range slices.Sorted(maps.Keys(h)) {
		s += fmt.Sprintf(" partition %d offsets %d-%d", p, h[p][0], h[p][1])
	}
	return s
}

// stoppingPolicy is the read model, stopped in its first Apply by a gate:
// inside the runner's transaction, after the tracking rows moved.
type stoppingPolicy struct {
	*pgreadmodel.ReadModel
	g *gate
}

func (p *stoppingPolicy) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	p.g.hold(ctx)
	return p.ReadModel.Apply(ctx, tx, items)
}

// TestTrackingConflictReportsStoredPosition: the live member's transaction
// in "inside its transaction" above waits for the zombie's tracking row, and
// then fails with a *store.TrackingConflictError whose Stored position is
// the one its statement's snapshot saw before the wait, not the one that
// made it fail. The consumer logs messages such as "position 43 does not
// move past stored 42", which contradict themselves.
//
// Bug it catches, present at the time of writing: postgres's setTracking
// statement reads the stored position in the same statement as the upsert,
// so under READ COMMITTED the read uses the statement's snapshot, taken
// before the upsert waited for the row lock. Fix: when the upsert changed
// nothing, read the position again in a new statement of the same
// transaction (a new snapshot sees the committed row), in
// pkg/store/postgres's tx.SetTracking.
func TestTrackingConflictReportsStoredPosition(t *testing.T) {
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(pg.dsn)
	if err != nil {
		t.Fatal(err)
	}
	app := appName("tracking-waiter")
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	other, err := postgres.New(ctx, pool, postgres.Options{Schema: pg.schema})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	at := func(pos int64) store.Tracking {
		return store.Tracking{Name: "zombie", Topic: eventsTopic, Partition: 0, Position: pos}
	}
	if err := pg.rec.InTx(ctx, func(tx store.Tx) error { return tx.SetTracking(ctx, at(2)) }); err != nil {
		t.Fatal(err)
	}
	// One transaction moves the tracking to 5 and holds it; another tries 3
	// and waits for the row.
	holding, release, first := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		first <- pg.rec.InTx(ctx, func(tx store.Tx) error {
			if err := tx.SetTracking(ctx, at(5)); err != nil {
				return err
			}
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	second := make(chan error, 1)
	go func() {
		second <- other.InTx(ctx, func(tx store.Tx) error { return tx.SetTracking(ctx, at(3)) })
	}()
	if msg, err := poll(ctx, 30*time.Second, 20*time.Millisecond, func() (bool, string, error) {
		var waiting bool
		err := pg.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock')`, app).Scan(&waiting)
		return waiting, "the second transaction does not wait for the row", err
	}); err != nil {
		t.Fatalf("%v (%s)", err, msg)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	err = <-second
	var tce *store.TrackingConflictError
	if !errors.As(err, &tce) {
		t.Fatalf("the waiting transaction: %v, want a *store.TrackingConflictError", err)
	}
	if tce.Stored != 5 {
		t.Errorf("conflict %q reports stored position %d; the stored position that made it fail is 5", tce, tce.Stored)
	}
}
