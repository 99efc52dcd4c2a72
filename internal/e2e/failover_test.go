package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

// TestFailoverToStandby runs the writer (with its relay) and the projector,
// as `eventlog writer` and `eventlog projector` run them, on a PostgreSQL
// primary with a synchronous streaming standby, both reached through one
// multi-host DSN with target_session_attrs=read-write. While commands flow,
// the primary is stopped hard (pg_ctlcluster stop -m immediate) and the
// standby promoted; nobody restarts or reconfigures the programs.
//
// It checks, and logs as figures: no command acknowledged (its result on the
// results topic) is lost, none is applied twice, every command is applied
// exactly once in the end, every stored event reaches Kafka in per-entity
// order, the read model catches up; and the time from the promotion to the
// first command accepted on the new primary. And it proves that the
// notification log stays commit-order safe across the promotion rather than
// assuming it: a transaction id taken on the old primary is below the ids the
// new primary hands out, and every item stored after the promotion has a
// notification id (transaction id << 20 + ordinal) above every item the
// standby held when the primary died, so a relay resuming from its
// checkpoint skips nothing.
//
// It runs only with EVENTLOG_TEST_PG_FAILOVER=1 (as root, with Debian's
// PostgreSQL tools: pgtest.NewReplicated), and drops the clusters it made.
func TestFailoverToStandby(t *testing.T) {
	t.Parallel()
	pair := pgtest.NewReplicated(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	results := watchResults(t, b)
	dsn := pair.MultiHostDSN()
	dir := t.TempDir()

	writerAddr, projAddr := freeAddr(t), freeAddr(t)
	common := []string{"-kafka-brokers", b.addrs[0], "-postgres-dsn", dsn, "-log-level", "info"}
	writer := runProgram(t, dir, "writer", append([]string{"-http-addr", writerAddr}, common...))
	projector := runProgram(t, dir, "projector", append([]string{"-http-addr", projAddr}, common...))
	for _, p := range []*program{writer, projector} {
		p.waitReady(t, ctx, time.Minute)
	}

	wl := newWorkload(scaled(120, 40), scaled(25, 10))
	recs := wl.records(t)
	prod := b.client(t)
	produced := make(chan error, 1)
	go func() { produced <- produceAt(ctx, prod, recs, scaled(200, 100)) }()

	// Commands flow: then the primary dies. Around that moment, entities
	// that get one command each (their only event is in the batches that
	// the failover hits, with no later one to reveal a gap).
	results.waitDistinct(t, len(recs)/4, time.Minute)
	singles := newWorkload(scaled(300, 100), 1)
	singlesDone := make(chan error, 1)
	go func() { singlesDone <- produceAt(ctx, prod, singles.records(t), 100) }()
	time.Sleep(time.Second)
	xidBefore := currentXid(t, ctx, pair.Primary.DSN())
	t0 := time.Now()
	if err := pair.Primary.Ctl(ctx, "stop", "-m", "immediate"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	ackedAtStop := results.distinct()
	// What the standby holds when the primary is gone: every item committed
	// there (read without the log's horizon, which stays behind while the
	// dead primary's open transactions look running to the standby).
	held, heldMax := standbyItems(t, ctx, pair.Standby.DSN())
	promoteStart := time.Now()
	if err := pair.Standby.Ctl(ctx, "promote"); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	xidAfter := currentXid(t, ctx, pair.Standby.DSN())
	t.Logf("primary stopped in %s with %d commands acknowledged; the standby held %d items (max notification id %d); promotion took %s",
		stopped.Sub(t0).Round(time.Millisecond), ackedAtStop, len(held), heldMax, promoted.Sub(promoteStart).Round(time.Millisecond))
	if xidAfter <= xidBefore {
		t.Errorf("transaction id on the new primary %d, not above %d taken on the old primary before it died", xidAfter, xidBefore)
	}

	for _, c := range []chan error{produced, singlesDone} {
		if err := <-c; err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	results.waitDistinct(t, len(recs)+singles.total(), 2*time.Minute)

	// The test's own view of the store, on the new primary.
	pool, err := pgxpool.New(ctx, pair.Standby.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rec, err := postgres.New(ctx, pool, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	waitRelayed(t, rec, time.Minute)
	v := readStore(t, ctx, rec)

	// Lost: acknowledged, not in the store. Doubled: more than one result
	// item, or an entity with more events than commands.
	lost, doubled := 0, 0
	for _, w := range []*workload{wl, singles} {
		for i := range w.entities {
			for _, c := range w.cmds[i] {
				if len(results.get(c.CommandID)) > 0 && len(v.results[c.CommandID]) == 0 {
					lost++
				}
				if len(v.results[c.CommandID]) > 1 {
					doubled++
				}
			}
			if n := len(v.events[w.entities[i]]); n > w.steps {
				doubled += n - w.steps
			}
		}
	}
	// Commit order across the promotion: items not held by the standby at
	// the stop were stored by the new primary, above all it held.
	var firstNew time.Time
	newItems := 0
	for _, n := range v.all {
		if held[seqPos{n.SequenceID, n.Position}] {
			continue
		}
		newItems++
		if n.ID <= heldMax {
			t.Errorf("item %s/%d stored after the promotion has notification id %d, not above %d held before: a relay would skip it", n.SequenceID, n.Position, n.ID, heldMax)
		}
		if xid := uint64(n.ID) >> 20; xid <= xidBefore {
			t.Errorf("item %s/%d stored after the promotion has transaction id %d, not above %d of the old primary", n.SequenceID, n.Position, xid, xidBefore)
		}
	}
	for id, rs := range v.results {
		if len(rs) > 0 && rs[0].ID > heldMax {
			if at, ok := results.firstAt(id); ok && (firstNew.IsZero() || at.Before(firstNew)) {
				firstNew = at
			}
		}
	}
	if newItems == 0 || firstNew.IsZero() {
		t.Fatalf("no command was accepted after the promotion (%d new items): the test did not test a failover while commands flow", newItems)
	}
	t.Logf("failover: %d commands, %d acknowledged before the primary died; acknowledged lost %d, doubled %d; "+
		"first command accepted %.2fs after the promotion (%.2fs after the primary died); xid %d before, %d after; %d items stored after it, all above notification id %d",
		len(recs)+singles.total(), ackedAtStop, lost, doubled, firstNew.Sub(promoted).Seconds(), firstNew.Sub(stopped).Seconds(), xidBefore, xidAfter, newItems, heldMax)
	if lost != 0 || doubled != 0 {
		t.Errorf("acknowledged commands lost: %d, doubled: %d; want 0 and 0", lost, doubled)
	}
	checkStore(t, v, wl, storeWant{otherSequences: singles.total(), otherResults: singles.total()})
	checkStore(t, v, singles, storeWant{otherSequences: len(wl.entities), otherResults: wl.total()})
	kv := checkKafka(t, ctx, b, v)
	t.Logf("Kafka (read uncommitted): %d event records, %d repeated; %d result records, %d repeated", len(kv.events), kv.eventDuplicates, len(kv.results), kv.resultDuplicates)

	// The projector carried on too: its read model holds every entity at its
	// last version.
	testutil.Eventually(t, time.Minute, func() error {
		var missing []string
		for _, w := range []*workload{wl, singles} {
			for i, id := range w.entities {
				var row struct{ Version int64 }
				code, err := getJSON(ctx, "http://"+projAddr+"/v1/read-models/example/"+id.String(), &row)
				if err != nil || code != http.StatusOK || row.Version != int64(w.steps) {
					missing = append(missing, fmt.Sprintf("entity %d of %d: HTTP %d, version %d, want %d (%v)", i, len(w.entities), code, row.Version, w.steps, err))
				}
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("the read model lacks %d entities: %s", len(missing), strings.Join(missing[:min(5, len(missing))], "; "))
		}
		return nil
	})
	for _, p := range []*program{writer, projector} {
		p.stop(t, 30*time.Second)
	}
	if b, err := os.ReadFile(projector.logPath); err == nil {
		t.Logf("the projector found %d partitions whose read-model commits the failover had taken back, and fetched them again",
			strings.Count(string(b), "consumer found the store's tracking behind"))
	}
}

// currentXid returns the transaction id of a write on the server at dsn (a
// row in a table of its own), as the store's appends take theirs: a write's
// commit waits for the synchronous standby. The id of a transaction that
// writes nothing (a bare SELECT pg_current_xact_id()) is committed without
// that wait and may be handed out again after a promotion; the store never
// relies on one.
func currentXid(t testing.TB, ctx context.Context, dsn string) uint64 {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var x uint64
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS failover_xids (xid bigint)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "INSERT INTO failover_xids SELECT pg_current_xact_id()::text::bigint RETURNING xid").Scan(&x); err != nil {
		t.Fatal(err)
	}
	return x
}

// standbyItems reads every item in the events table of a (hot) standby, and
// the largest notification id.
func standbyItems(t testing.TB, ctx context.Context, dsn string) (map[seqPos]bool, int64) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT sequence_id, position, notification_id FROM public.eventlog_events")
	if err != nil {
		t.Fatal(err)
	}
	held := map[seqPos]bool{}
	var maxID int64
	var k seqPos
	var id int64
	_, err = pgx.ForEachRow(rows, []any{&k.seq, &k.pos, &id}, func() error {
		held[k] = true
		maxID = max(maxID, id)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return held, maxID
}

// program is one of eventlog's programs (cli.Main) run in the test process.
type program struct {
	name, addr, logPath string
	cancel              context.CancelFunc
	done                chan error
}

// runProgram runs `eventlog <name> args...` until the test ends, its output
// in a file of dir (shown when the test fails).
func runProgram(t *testing.T, dir, name string, args []string) *program {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedWriter{w: f}
	ctx, cancel := context.WithCancel(context.Background())
	p := &program{name: name, logPath: logPath, cancel: cancel, done: make(chan error, 1)}
	for i, a := range args {
		if a == "-http-addr" && i+1 < len(args) {
			p.addr = args[i+1]
		}
	}
	go func() {
		p.done <- cli.Main(ctx, append([]string{name}, args...), cli.Env{Getenv: func(string) string { return "" }, Stdout: out, Stderr: out})
	}()
	t.Cleanup(func() {
		p.stop(t, 30*time.Second)
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("%s's last lines:\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

// stop ends the program and fails t if it does not return in time or returns
// an error. It may be called more than once.
func (p *program) stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	p.cancel()
	select {
	case err, ok := <-p.done:
		if ok {
			close(p.done)
			if err != nil {
				t.Errorf("%s: %v", p.name, err)
			}
		}
	case <-time.After(timeout):
		t.Errorf("%s did not stop within %s", p.name, timeout)
	}
}

// waitReady waits until the program answers /readyz with 200.
func (p *program) waitReady(t testing.TB, ctx context.Context, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		select {
		case err := <-p.done:
			t.Fatalf("%s exited at start: %v", p.name, err)
		default:
		}
		code, err := getJSON(ctx, "http://"+p.addr+"/readyz", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%s /readyz: %d %v", p.name, code, err)
		}
		return nil
	})
}

// getJSON GETs url and decodes a JSON answer into v (if not nil).
func getJSON(ctx context.Context, url string, v any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if v == nil || resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("decode %s: %w", url, err)
	}
	return resp.StatusCode, nil
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lockedWriter serialises writes of several goroutines to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
