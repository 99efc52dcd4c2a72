package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// Restart test settings. The test runs only when asked. By default it creates
// a throwaway cluster of the machine's PostgreSQL version (pg_createcluster, as
// root) and crashes that one, so that tests of other packages running at the
// same time on the shared server are not disturbed; the cluster is dropped at
// the end. With EVENTLOG_TEST_PG_RESTART_CMD it instead restarts the test
// server (pgtest.DSN) with that command, for example
//
//	pg_ctlcluster --skip-systemctl-redirect 15 main restart -m immediate
//
// and then runs alone in this package (Go runs parallel tests after the
// sequential ones); run it with no other package's tests in that mode.
const (
	envRestart    = "EVENTLOG_TEST_PG_RESTART"     // "1" enables TestServerRestart
	envRestartCmd = "EVENTLOG_TEST_PG_RESTART_CMD" // restart the shared test server with this
)

func run(t *testing.T, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return errors.New(strings.Join(args, " ") + ": " + err.Error() + ": " + string(out))
	}
	return nil
}

// restartTarget returns the DSN of a server to crash and the command that
// restarts it.
func restartTarget(t *testing.T) (dsn string, restart []string) {
	t.Helper()
	if c := os.Getenv(envRestartCmd); c != "" {
		dsn := pgtest.DSN(t)
		t.Cleanup(func() { // leave the shared server running, whatever happened
			if run(t, "pg_isready", "-d", dsn) != nil {
				entries, _ := os.ReadDir("/etc/postgresql")
				for _, e := range entries {
					_ = run(t, "pg_ctlcluster", "--skip-systemctl-redirect", e.Name(), "main", "start")
				}
			}
		})
		return dsn, []string{"sh", "-c", c}
	}
	t.Parallel() // a cluster of its own disturbs nobody
	entries, err := os.ReadDir("/etc/postgresql")
	if _, lerr := exec.LookPath("pg_createcluster"); err != nil || len(entries) == 0 || lerr != nil || os.Geteuid() != 0 {
		t.Fatalf("%s=1 needs root and Debian's pg_createcluster to make a throwaway cluster (or set %s to restart the test server instead)",
			envRestart, envRestartCmd)
	}
	version := entries[len(entries)-1].Name()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	name := fmt.Sprintf("evt_restart_%d", os.Getpid())
	if err := run(t, "pg_createcluster", version, name, "-p", strconv.Itoa(port), "--start-conf=manual", "--start",
		"--", "--auth=trust", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run(t, "pg_dropcluster", "--stop", version, name); err != nil {
			t.Errorf("drop the throwaway cluster: %v", err)
		}
	})
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		[]string{"pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart", "-m", "immediate"}
}

// TestServerRestart restarts PostgreSQL (immediate shutdown: a crash) while
// goroutines append. Every append reported successful is there afterwards, and
// the pool recovers without help.
func TestServerRestart(t *testing.T) {
	if os.Getenv(envRestart) != "1" {
		t.Skipf("restarts the PostgreSQL server; set %s=1 to run it", envRestart)
	}
	dsn, restart := restartTarget(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	schema := "restart_test"
	if os.Getenv(envRestartCmd) != "" {
		schema = pgtest.Schema(t)
	}
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })

	type result struct {
		ok        []store.SequencedItem
		ambiguous int
		afterOK   int // successes after the restart finished
	}
	var (
		restarted = make(chan struct{})
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		results   []result
	)
	for w := range 6 {
		wg.Go(func() {
			var res result
			id := uuid.New()
			pos := int64(0)
			for {
				select {
				case <-stop:
					mu.Lock()
					results = append(results, res)
					mu.Unlock()
					return
				default:
				}
				items := storetest.Items(id, pos, 1+w%3)
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := rec.InsertEvents(actx, items)
				cancel()
				var ce *store.ConflictError
				switch {
				case err == nil:
					res.ok = append(res.ok, items...)
					select {
					case <-restarted:
						res.afterOK++
					default:
					}
					pos += int64(len(items))
				case errors.As(err, &ce):
					// An earlier try committed although it reported an error
					// (the connection died after the commit): move on.
					res.ambiguous++
					pos += int64(len(items))
				default:
					time.Sleep(20 * time.Millisecond) // server down: retry the same positions
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	t.Log("restarting the server")
	if err := run(t, restart...); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	close(restarted)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

	total, after, ambiguous := 0, 0, 0
	for _, res := range results {
		total += len(res.ok)
		after += res.afterOK
		ambiguous += res.ambiguous
		for _, it := range res.ok {
			got, err := rec.SelectEvents(ctx, it.SequenceID, store.Query{After: ptr(it.Position - 1), UpTo: ptr(it.Position)})
			if err != nil {
				t.Fatalf("select after the restart: %v", err)
			}
			if len(got) != 1 || string(got[0].State) != string(it.State) {
				t.Fatalf("%s/%d was reported appended but is not stored", it.SequenceID, it.Position)
			}
		}
	}
	if after == 0 {
		t.Fatal("no append succeeded after the restart: the pool did not recover")
	}
	if total == after {
		t.Fatal("no append succeeded before the restart: the test did not test a restart during appends")
	}
	// And the notification log holds them all.
	want := 0
	for _, res := range results {
		want += len(res.ok)
	}
	var n int
	waitFor(t, "the log to hold every append", func() bool {
		all := 0
		after := int64(0)
		for {
			page, err := rec.SelectNotifications(ctx, after, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			all += len(page)
			after = page[len(page)-1].ID
		}
		n = all
		return all >= want
	})
	t.Logf("%d items appended (%d after the restart, %d ambiguous retries found committed); the log holds %d", total, after, ambiguous, n)
}

func ptr(v int64) *int64 { return &v }
