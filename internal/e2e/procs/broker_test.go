package procs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestSeparateProcesses runs eventlog as deployed on a machine with no
// Kafka: `eventlog broker`, two writers and two projectors, each a process
// of its own, on one PostgreSQL schema. First the seed scenario goes through
// the writers' HTTP API (create foo=bar on one writer, update foo=baz on the
// other, read it back from both, ?version=1, discard, then 404) and the
// projectors' read model follows it. Then a Kafka client sends commands and,
// a third of the way through, one writer and one projector are SIGKILLed:
// their partitions move to the survivors once their sessions expire (45s,
// franz-go's default: the programs have no flag for it, and the broker is
// `eventlog broker`, not one the test controls). Nothing may be lost or
// applied twice: every command gets an accepted result, every entity has
// the version its commands make, the read model equals the fold of the
// stored events, and no event reaches the read model's policy twice.
//
// The second writer runs with -no-relay: two writers with their relays on
// one PostgreSQL store crash the second at start (see
// TestTwoRelayWritersOnOneStore), so the killed writer is the one without
// the relay.
//
// Bugs it catches: commands that cross processes only in the embedded mode
// (the HTTP commander, results published by another process's relay),
// writers or projectors that resume moved partitions from Kafka's committed
// offsets instead of the store's tracking (commands or events applied twice
// or skipped), a batch lost with a SIGKILLed process, and a read model that
// does not follow a discard.
func TestSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 45s group session timeout; skipped with -short")
	}
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	t0 := time.Now()
	ps := newProcSet(t)
	brokerAddr := freeAddr(t)
	bk := ps.start("broker", append([]string{"broker", "-addr", brokerAddr, "-data-dir", t.TempDir(), "-partitions", "4"}, logFlags...)...)
	waitBroker(t, bk, brokerAddr)
	createTopics(t, brokerAddr, kafka.TopicNames(topics, "example")...)

	type svc struct {
		p    *proc
		addr string
	}
	start := func(name string, args ...string) svc {
		s := svc{addr: freeAddr(t)}
		all := append(append(append([]string{args[0], "-kafka-brokers", brokerAddr, "-http-addr", s.addr, "-partitions", "4"},
			pg.flags(appName(name))...), args[1:]...), logFlags...)
		s.p = ps.start(name, all...)
		return s
	}
	w1, w2 := start("writer-1", "writer"), start("writer-2", "writer", "-no-relay")
	p1, p2 := start("projector-1", "projector"), start("projector-2", "projector")
	for _, s := range []svc{w1, w2, p1, p2} {
		waitReady(t, s.p, s.addr, time.Minute)
	}
	t.Logf("broker, 2 writers and 2 projectors ready after %s", time.Since(t0).Round(time.Millisecond))

	// The seed scenario, through the writers' HTTP API.
	id := uuid.New()
	send := func(w svc, typ string, data string, wantVersion int64) {
		t.Helper()
		body := map[string]any{"type": typ, "entity": "example", "entity_id": id}
		if data != "" {
			body["data"] = json.RawMessage(data)
		}
		var res wire.Result
		code, err := postJSON(ctx, "http://"+w.addr+"/v1/commands", body, &res)
		if err != nil || code != http.StatusOK || res.Status != wire.StatusAccepted || res.Version != wantVersion {
			t.Fatalf("POST /v1/commands %s to %s: %d %v %+v; want accepted at version %d", typ, w.p.name, code, err, res, wantVersion)
		}
	}
	get := func(w svc, query string) (int, map[string]any, int64) {
		t.Helper()
		var e struct {
			Version    int64
			Attributes map[string]any
		}
		code, err := getJSON(ctx, "http://"+w.addr+"/v1/entities/example/"+id.String()+query, &e)
		if err != nil {
			t.Fatal(err)
		}
		return code, e.Attributes, e.Version
	}
	readModel := func(p svc, want string) {
		t.Helper()
		msg, err := poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, string, error) {
			var row struct {
				Version    int64
				Attributes map[string]any
			}
			code, err := getJSON(ctx, "http://"+p.addr+"/v1/read-models/example/"+id.String(), &row)
			got := fmt.Sprintf("%d v%d foo=%v", code, row.Version, row.Attributes["foo"])
			return err == nil && got == want, got, nil
		})
		if err != nil {
			t.Fatalf("%s read model: %v; got %s, want %s", p.p.name, err, msg, want)
		}
	}
	send(w1, wire.TypeCreate, `{"foo":"bar"}`, 1)
	send(w2, wire.TypeUpdate, `{"foo":"baz"}`, 2)
	for _, w := range []svc{w1, w2} {
		if code, attrs, v := get(w, ""); code != http.StatusOK || attrs["foo"] != "baz" || v != 2 {
			t.Fatalf("GET from %s: %d %v version %d; want foo=baz at version 2", w.p.name, code, attrs, v)
		}
		if code, attrs, v := get(w, "?version=1"); code != http.StatusOK || attrs["foo"] != "bar" || v != 1 {
			t.Fatalf("GET ?version=1 from %s: %d %v version %d; want foo=bar at version 1", w.p.name, code, attrs, v)
		}
	}
	for _, p := range []svc{p1, p2} {
		readModel(p, "200 v2 foo=baz")
	}
	var list struct{ Items []struct{ ID uuid.UUID } }
	if code, err := getJSON(ctx, "http://"+p2.addr+`/v1/read-models/example?foo="baz"`, &list); err != nil || code != http.StatusOK || len(list.Items) != 1 || list.Items[0].ID != id {
		t.Fatalf(`GET /v1/read-models/example?foo="baz": %d %v %+v`, code, err, list)
	}
	send(w2, wire.TypeDiscard, "", 3)
	for _, w := range []svc{w1, w2} {
		if code, _, _ := get(w, ""); code != http.StatusNotFound {
			t.Fatalf("GET a discarded entity from %s: %d, want 404", w.p.name, code)
		}
	}
	for _, p := range []svc{p1, p2} {
		readModel(p, "404 v0 foo=<nil>")
	}
	t.Logf("seed scenario done after %s", time.Since(t0).Round(time.Millisecond))

	// Commands flow; a writer and a projector are SIGKILLed.
	wl := newWorkload(envInt("EVENTLOG_PROCS_SEPARATE_ENTITIES", 300), 10)
	results := watchResults(t, brokerAddr)
	prod := client(t, brokerAddr)
	produced := make(chan error, 1)
	go func() { produced <- produceAt(ctx, prod, wl.records(), 100) }()
	results.wait(t, ctx, wl.total()/3)
	tKill := time.Now()
	w2.p.kill()
	p1.p.kill()
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	results.wait(t, ctx, wl.total()+3)
	t.Logf("every command has a result %s after the SIGKILLs", time.Since(tKill).Round(time.Millisecond))
	waitStored(t, ctx, pg, wl.events()+3)
	want, err := pg.storeFold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(client(t, brokerAddr))
	msg, err := poll(ctx, 2*time.Minute, 250*time.Millisecond, func() (bool, string, error) {
		ok, msg, err := pg.caughtUp(ctx, adm)
		if err != nil || !ok {
			return false, msg, nil
		}
		if ok, err := httpLagZero(ctx, p2.addr); err != nil || !ok {
			return false, fmt.Sprintf("%s reports lag (%v)", p2.p.name, err), nil
		}
		got, err := pg.readModel(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		d := diffStates("read model", got, "store", want)
		return len(d) == 0, fmt.Sprintf("%q", d), nil
	})
	if err != nil {
		t.Fatalf("the read model did not catch up: %v (%s)\n%s", err, msg, diagnose(ctx, adm, pg, map[string]string{p2.p.name: p2.addr}))
	}
	t.Logf("the read model caught up %s after the SIGKILLs", time.Since(tKill).Round(time.Millisecond))

	// Every command accepted, once.
	bad := 0
	for cmd, st := range results.statuses() {
		if st != wire.StatusAccepted {
			if bad++; bad <= 5 {
				t.Errorf("command %s: %s", cmd, st)
			}
		}
	}
	we := wl.want()
	for _, id := range wl.ids {
		if s := want[id]; s.String() != we.String() {
			t.Errorf("store: entity %s is %s, want %s", id, s, we)
		}
	}
	ac, err := pg.checkApplyLog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ac.doubleCount > 0 || ac.applied != wl.events() {
		t.Errorf("apply log: %d distinct events applied (want %d), %d double applies: %q", ac.applied, wl.events(), ac.doubleCount, ac.doubles)
	}
	for _, s := range []svc{w1, p2} {
		if code, err := s.p.term(30 * time.Second); err != nil || code != 0 {
			t.Errorf("%s after SIGTERM: exit %d, %v", s.p.name, code, err)
		}
	}
	if p := ps.problems(); len(p) > 0 {
		t.Errorf("child processes reported problems: %q", p)
	}
	t.Logf("total %s", time.Since(t0).Round(time.Millisecond))
}

// TestTwoRelayWritersOnOneStore starts two writer processes, as deployed
// (each with its relay), on one PostgreSQL schema: one relay publishes and
// the other must stand by (DESIGN: "Only one relay per store is active at a
// time (e.g. a Postgres advisory lock)").
//
// Bug it catches, present at the time of writing: the second writer dies at
// start. postgres.Recorder.TryLock answers a lock held elsewhere with (nil,
// nil, nil), while kafka.Locker, which pkg/cli wires the recorder to
// directly (storeFlags.open: Locker: rec), must return an error wrapping
// kafka.ErrLocked. kafka.Relay.Run takes the nil error for success and calls
// lead with a nil context, which panics (nil pointer dereference).
func TestTwoRelayWritersOnOneStore(t *testing.T) {
	pg := newPG(t)
	b := newBroker(t, 0)
	ps := newProcSet(t)
	var ws []*proc
	var addrs []string
	for i := range 2 {
		addr := freeAddr(t)
		p := ps.start(fmt.Sprintf("writer-%d", i+1), append(append([]string{"writer", "-kafka-brokers", b.addr, "-http-addr", addr, "-partitions", "4"},
			pg.flags(appName(fmt.Sprintf("relay-writer-%d", i+1)))...), logFlags...)...)
		ws, addrs = append(ws, p), append(addrs, addr)
	}
	for i, p := range ws {
		if err := ready(t.Context(), p, addrs[i], time.Minute); err != nil {
			t.Fatalf("%v %q", err, p.problems())
		}
	}
	time.Sleep(3 * time.Second) // a standby relay tries the lock at once, then every 500ms
	active := 0.0
	for i, p := range ws {
		if p.exited() {
			t.Errorf("%s exited: %s %q", p.name, p.state(), p.problems())
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		a, err := metric(ctx, addrs[i], "eventlog_relay_active")
		cancel()
		if err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
		active += a
	}
	if active != 1 {
		t.Errorf("%v relays active, want 1", active)
	}
}

// waitBroker waits until the broker at addr answers, and fails t if p exits
// first.
func waitBroker(t testing.TB, p *proc, addr string) {
	t.Helper()
	cl := client(t, addr)
	testutil.Eventually(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := cl.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.exited() {
			t.Fatalf("%s exited: %s\n%s", p.name, p.state(), p.tail(20))
		}
		return fmt.Errorf("broker at %s does not answer: %v", addr, err)
	})
}

// resultWatcher consumes the results topic from its start and keeps the
// first result of every command.
type resultWatcher struct {
	mu      sync.Mutex
	first   map[uuid.UUID]wire.Status
	records int
}

func watchResults(t testing.TB, addr string) *resultWatcher {
	w := &resultWatcher{first: map[uuid.UUID]wire.Status{}}
	cl := client(t, addr, kgo.ConsumeTopics(topics.Results()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				res, err := wire.DecodeResult(r.Value)
				if err != nil {
					return
				}
				w.records++
				if _, ok := w.first[res.CommandID]; !ok {
					w.first[res.CommandID] = res.Status
				}
			})
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// wait waits until n commands have results.
func (w *resultWatcher) wait(t testing.TB, ctx context.Context, n int) {
	t.Helper()
	msg, err := poll(ctx, 3*time.Minute, 100*time.Millisecond, func() (bool, string, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.first) >= n, fmt.Sprintf("results of %d commands, want %d", len(w.first), n), nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("%v (%s)", err, msg)
	}
}

func (w *resultWatcher) statuses() map[uuid.UUID]wire.Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[uuid.UUID]wire.Status, len(w.first))
	for k, v := range w.first {
		out[k] = v
	}
	return out
}
