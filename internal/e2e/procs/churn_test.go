package procs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
)

// TestProjectorsUnderChurn runs the projector program as three child
// processes on one PostgreSQL schema, behind a writer process, and every two
// seconds SIGKILLs one (at a moment it is inside a database transaction, when
// it can catch one within a second), starts a new one, or SIGSTOPs one for
// longer than its session timeout and then SIGCONTs it, keeping one to three
// alive, while 28,000 commands make 100,000 events (10,000 with -short).
// Exact copies of event records already on the events topic (relay
// duplicates: same partition, key, value and headers) are produced into it
// throughout, and once more at the end.
//
// At the end the read model must equal the fold of the stored events, every
// event must have reached the read model's policy exactly once (a trigger on
// the read-model table logs every upsert in the projection's transaction,
// and every event sets an attribute of its own, so an event applied twice
// shows up twice in the log even where the read model's version guard makes
// the second upsert a no-op), and the projectors' duplicates counter must
// have grown by exactly the number of copies injected at the end (the
// position guard fired, rather than the copies being applied or lost).
//
// Bugs it catches: a projector that resumes a partition from the group's
// committed offset instead of its own tracking (events applied twice, or
// skipped, after a rebalance), a policy effect and tracking committed in
// separate transactions (a SIGKILL between them applies a batch twice or
// loses it), a position guard that lets a relay duplicate through (a double
// apply in the log) or drops events, a batch split across a rebalance, a
// zombie (the SIGSTOPped projector) whose late batch commits after its
// partitions moved, gap repair that applies an event twice, and a projector
// that cannot start against a schema other processes are using.
//
// Group members' session timeouts are shortened to 6s by the test's broker
// (see newBroker), so that a killed projector's partitions move within
// seconds instead of 45. The broker's groups are watched as the embedded
// broker's are (broker.Groups): before that, a rebalance that waited for a
// dead member expired the live ones waiting with it (they hung for 70s), and
// a member killed while it waited in JoinGroup kept a partition that no one
// consumed, which this test caught as a projection that never caught up.
func TestProjectorsUnderChurn(t *testing.T) {
	var (
		// 4,000 entities × (a create and 6 updates of 4 attributes) =
		// 100,000 events from 28,000 commands (10,000 from 2,800 with
		// -short): the projectors' work is per event, the writer's mostly
		// per command.
		entities = envInt("EVENTLOG_PROCS_CHURN_ENTITIES", scaled(4000, 400))
		steps    = envInt("EVENTLOG_PROCS_CHURN_STEPS", 7)
		per      = envInt("EVENTLOG_PROCS_CHURN_ATTRS", 4)
		rate     = envInt("EVENTLOG_PROCS_CHURN_RATE", scaled(600, 250)) // commands a second
		session  = 6 * time.Second
		tick     = 2 * time.Second
	)
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	b := newBroker(t, session)
	adm := kadm.NewClient(b.client(t))
	ps := newProcSet(t)
	t0 := time.Now()

	wAddr := freeAddr(t)
	w := ps.start("writer", append(append([]string{"writer", "-kafka-brokers", b.addr, "-http-addr", wAddr, "-partitions", "4"},
		pg.flags(appName("writer"))...), logFlags...)...)

	seed := testutil.Seed(t)
	c := &churn{t: t, ps: ps, b: b, pg: pg, rng: rand.New(rand.NewPCG(seed, 1))}
	for range 3 {
		c.startProjector()
	}
	waitReady(t, w, wAddr, time.Minute)
	for _, p := range c.alive {
		waitReady(t, p.p, p.addr, time.Minute)
	}
	t.Logf("writer and 3 projectors ready after %s", time.Since(t0).Round(time.Millisecond))

	dups := newDuplicator(t, b, seed)
	wl := newWorkloadN(entities, steps, per)
	prod := b.client(t)
	produced := make(chan error, 1)
	tFlow := time.Now()
	go func() { produced <- produceAt(ctx, prod, wl.records(), rate) }()

	// Churn until the writer has stored every event.
	injected := 0
	prodDone := false
	for {
		select {
		case err := <-produced:
			if err != nil {
				t.Fatal(err)
			}
			prodDone = true
			produced = nil
		case <-time.After(tick):
			c.step(ctx)
			injected += dups.inject(ctx, 25)
		case <-ctx.Done():
			t.Fatalf("timed out: %v", ctx.Err())
		}
		if prodDone {
			n, err := pg.storedEvents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n >= wl.events() {
				break
			}
		}
	}
	flow := time.Since(tFlow)
	c.settle(ctx)
	t.Logf("%d commands (%d events) stored in %s (%.0f events/s); churn: %d SIGKILLs (%d inside a transaction), %d starts, %d SIGSTOP/SIGCONT; %d duplicates injected during the flow",
		wl.total(), wl.events(), flow.Round(time.Millisecond), float64(wl.events())/flow.Seconds(), c.kills, c.killsInTx, c.starts, c.pauses, injected)

	// Every alive projector has caught up, and the read model equals the store.
	tCatch := time.Now()
	want, err := pg.storeFold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.waitCaughtUp(ctx, adm, want)
	t.Logf("caught up %s after the last event was stored", time.Since(tCatch).Round(time.Millisecond))

	// Duplicates injected now, with no churn, must each be counted by the
	// guard of exactly one projector.
	before := c.sumMetric(ctx, "eventlog_projection_duplicates_total")
	final := dups.inject(ctx, 200)
	c.waitCaughtUp(ctx, adm, want)
	var after float64
	if _, err := poll(ctx, 20*time.Second, 200*time.Millisecond, func() (bool, string, error) {
		after = c.sumMetric(ctx, "eventlog_projection_duplicates_total")
		return after-before == float64(final), fmt.Sprintf("duplicates counter grew by %.0f, want %d", after-before, final), nil
	}); err != nil {
		t.Errorf("the position guard did not count the %d duplicates injected at the end: %v", final, err)
	}
	t.Logf("duplicates counter of the %d projectors alive: %.0f before and %.0f after %d copies injected at the end; tracking conflicts (zombie or redelivered batches): %.0f",
		len(c.alive), before, after, final, c.sumMetric(ctx, "eventlog_consumer_tracking_conflicts_total"))

	// The store holds what the commands made, exactly once.
	wantEntity := wl.want()
	if len(want) != len(wl.ids) {
		t.Errorf("the store holds %d entities, want %d", len(want), len(wl.ids))
	}
	bad := 0
	for _, id := range wl.ids {
		if s := want[id]; s.String() != wantEntity.String() {
			if bad++; bad <= 5 {
				t.Errorf("store: entity %s is %s, want %s", id, s, wantEntity)
			}
		}
	}
	// The read model equals the fold of the stored events.
	got, err := pg.readModel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffStates("read model", got, "store", want) {
		t.Error(d)
	}
	// Every event reached the policy exactly once.
	ac, err := pg.checkApplyLog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply log: %d upserts carried %d distinct events; %d events applied more than once", ac.rows, ac.applied, ac.doubleCount)
	if ac.doubleCount > 0 {
		t.Errorf("%d double applies, for example: %q", ac.doubleCount, ac.doubles)
	}
	if ac.applied != wl.events() {
		t.Errorf("the policy was given %d distinct events, want %d", ac.applied, wl.events())
	}
	// The projectors' HTTP API agrees, for a sample.
	for _, id := range wl.ids[:min(10, len(wl.ids))] {
		var row struct{ Version int64 }
		addr := c.alive[c.rng.IntN(len(c.alive))].addr
		if code, err := getJSON(ctx, "http://"+addr+"/v1/read-models/example/"+id.String(), &row); err != nil || code != http.StatusOK || row.Version != wantEntity.Version {
			t.Errorf("GET /v1/read-models/example/%s: %d %v, version %d, want %d", id, code, err, row.Version, wantEntity.Version)
		}
	}
	if p := ps.problems(); len(p) > 0 {
		t.Errorf("child processes reported problems: %q", p)
	}
	t.Logf("total %s", time.Since(t0).Round(time.Millisecond))
}

// churn keeps one to three projector processes alive and changes them.
type churn struct {
	t   testing.TB
	ps  *procSet
	b   *broker
	pg  *pgEnv
	rng *rand.Rand

	n     int // projectors started so far
	alive []*projectorProc
	// wg waits for the SIGCONT of paused projectors.
	wg                               sync.WaitGroup
	kills, killsInTx, starts, pauses int
}

type projectorProc struct {
	p      *proc
	addr   string
	app    string
	mu     sync.Mutex
	paused bool
}

func (pp *projectorProc) isPaused() bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.paused
}

// projectorArgs are the flags of a projector process.
func projectorArgs(brokers, addr string, pg []string) []string {
	args := append([]string{"projector", "-kafka-brokers", brokers, "-http-addr", addr, "-partitions", "4"}, pg...)
	return append(args, logFlags...)
}

func (c *churn) startProjector() *projectorProc {
	c.n++
	name := fmt.Sprintf("projector-%d", c.n)
	pp := &projectorProc{addr: freeAddr(c.t), app: appName(name)}
	pp.p = c.ps.start(name, projectorArgs(c.b.addr, pp.addr, c.pg.flags(pp.app))...)
	c.alive = append(c.alive, pp)
	return pp
}

// step makes one change.
func (c *churn) step(ctx context.Context) {
	active := 0
	for _, p := range c.alive {
		if !p.isPaused() {
			active++
		}
	}
	switch r := c.rng.IntN(3); {
	case len(c.alive) < 3 && (len(c.alive) == 1 || r == 0):
		c.startProjector()
		c.starts++
	case active >= 2 && r == 1:
		c.pause(c.pickActive())
	default:
		if len(c.alive) > 1 {
			i := c.rng.IntN(len(c.alive))
			if active == 1 && !c.alive[i].isPaused() {
				// Kill a paused one rather than leave none consuming.
				for j, p := range c.alive {
					if p.isPaused() {
						i = j
					}
				}
			}
			c.kill(ctx, i)
		}
	}
}

func (c *churn) pickActive() *projectorProc {
	var ps []*projectorProc
	for _, p := range c.alive {
		if !p.isPaused() {
			ps = append(ps, p)
		}
	}
	return ps[c.rng.IntN(len(ps))]
}

// kill SIGKILLs projector i, inside a database transaction if one comes
// within a second.
func (c *churn) kill(ctx context.Context, i int) {
	pp := c.alive[i]
	if !pp.isPaused() {
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			var inTx bool
			err := c.pg.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1
				AND xact_start IS NOT NULL AND state IN ('active', 'idle in transaction'))`, pp.app).Scan(&inTx)
			if err == nil && inTx {
				c.killsInTx++
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	pp.p.kill()
	c.kills++
	c.alive = append(c.alive[:i], c.alive[i+1:]...)
}

// pause SIGSTOPs pp for longer than the session timeout, then SIGCONTs it.
func (c *churn) pause(pp *projectorProc) {
	pp.mu.Lock()
	pp.paused = true
	pp.mu.Unlock()
	pp.p.pause()
	c.pauses++
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		time.Sleep(9 * time.Second)
		pp.p.resume()
		pp.mu.Lock()
		pp.paused = false
		pp.mu.Unlock()
	}()
}

// settle waits for paused projectors to be resumed, and makes sure at least
// two projectors are alive.
func (c *churn) settle(ctx context.Context) {
	c.wg.Wait()
	for len(c.alive) < 2 {
		c.startProjector()
		c.starts++
	}
	for _, p := range c.alive {
		waitReady(c.t, p.p, p.addr, time.Minute)
	}
}

// waitCaughtUp waits until the read model's tracking is at the end of every
// partition, every alive projector says so over HTTP, and the read model
// equals want.
func (c *churn) waitCaughtUp(ctx context.Context, adm *kadm.Client, want map[uuid.UUID]entityState) {
	c.t.Helper()
	msg, err := poll(ctx, 3*time.Minute, 250*time.Millisecond, func() (bool, string, error) {
		ok, msg, err := c.pg.caughtUp(ctx, adm)
		if err != nil || !ok {
			return false, msg, nil
		}
		for _, p := range c.alive {
			if p.p.exited() {
				return false, "", fmt.Errorf("%s exited: %s", p.p.name, p.p.state())
			}
			ok, err := httpLagZero(ctx, p.addr)
			if err != nil || !ok {
				return false, fmt.Sprintf("%s reports lag (%v)", p.p.name, err), nil
			}
		}
		got, err := c.pg.readModel(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		if d := diffStates("read model", got, "store", want); len(d) > 0 {
			return false, fmt.Sprintf("read model differs from the store: %q", d), nil
		}
		return true, "", nil
	})
	if err != nil {
		addrs := map[string]string{}
		for _, p := range c.alive {
			addrs[p.p.name] = p.addr
		}
		c.t.Fatalf("projectors did not catch up: %v (%s)\n%s", err, msg, diagnose(ctx, adm, c.pg, addrs))
	}
}

// sumMetric sums a metric over the alive projectors.
func (c *churn) sumMetric(ctx context.Context, name string) float64 {
	var sum float64
	for _, p := range c.alive {
		v, err := metric(ctx, p.addr, name)
		if err != nil {
			c.t.Errorf("%s: %v", p.p.name, err)
		}
		sum += v
	}
	return sum
}

// duplicator produces exact copies of event records already on the events
// topic, as a relay that republishes after a crash does: same partition, key,
// value and headers, at a new offset.
type duplicator struct {
	t    testing.TB
	prod *kgo.Client
	mu   sync.Mutex
	seen []*kgo.Record // a sample of the records read
	n    int
	rng  *rand.Rand
}

func newDuplicator(t testing.TB, b *broker, seed uint64) *duplicator {
	d := &duplicator{t: t, prod: b.client(t, kgo.RecordPartitioner(kgo.ManualPartitioner())),
		rng: rand.New(rand.NewPCG(seed, 2))}
	cons := b.client(t, kgo.ConsumeTopics(eventsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			d.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				// Reservoir sampling keeps 2,000 records of the whole topic.
				d.n++
				if len(d.seen) < 2000 {
					d.seen = append(d.seen, r)
				} else if j := d.rng.IntN(d.n); j < len(d.seen) {
					d.seen[j] = r
				}
			})
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// inject produces copies of n records seen so far (fewer if fewer were
// seen) and returns how many the broker acknowledged.
func (d *duplicator) inject(ctx context.Context, n int) int {
	d.mu.Lock()
	var recs []*kgo.Record
	for range min(n, len(d.seen)) {
		r := d.seen[d.rng.IntN(len(d.seen))]
		recs = append(recs, &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	d.mu.Unlock()
	if len(recs) == 0 {
		return 0
	}
	if err := d.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		d.t.Errorf("inject duplicates: %v", err)
		return 0
	}
	return len(recs)
}
