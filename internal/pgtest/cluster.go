package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvFailover ("1") enables the tests that make PostgreSQL clusters of their
// own, a primary and its streaming standby, and fail the primary over.
const EnvFailover = "EVENTLOG_TEST_PG_FAILOVER"

// firstClusterPort is where the ports of the clusters a test makes start;
// the machine's main cluster (5432) is never used nor touched.
const firstClusterPort = 5440

// A Cluster is a PostgreSQL cluster of the machine's version made by
// pg_createcluster for one test and dropped when the test ends.
type Cluster struct {
	Version string
	Name    string
	Port    int
	DataDir string
}

// DSN is the URL of the cluster's postgres database, as the superuser
// postgres (trust authentication on 127.0.0.1).
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", c.Port)
}

// Ctl runs pg_ctlcluster with action and args (start, stop -m immediate,
// promote...).
func (c *Cluster) Ctl(ctx context.Context, action string, args ...string) error {
	return run(ctx, append([]string{"pg_ctlcluster", "--skip-systemctl-redirect", c.Version, c.Name, action}, args...)...)
}

// Replicated is a primary and a standby that streams from it synchronously
// (synchronous_standby_names names the standby's application_name, and
// synchronous_commit is on): a commit returns once the standby has flushed
// it.
type Replicated struct {
	Primary, Standby *Cluster
	// AppName is the standby's application_name in primary_conninfo.
	AppName string
}

// MultiHostDSN is the key/value DSN that names both clusters, primary first,
// and connects only to the one that takes writes.
func (r *Replicated) MultiHostDSN() string {
	return fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres sslmode=disable target_session_attrs=read-write connect_timeout=2",
		r.Primary.Port, r.Standby.Port)
}

// NewReplicated makes a primary and its synchronous standby for t with
// Debian's tools (pg_createcluster, pg_basebackup -R), starts both, waits
// until the standby streams and is synchronous, and drops both clusters when
// t ends, whatever happened. It skips t unless EVENTLOG_TEST_PG_FAILOVER=1,
// and fails it where the tools are missing or it does not run as root.
func NewReplicated(t testing.TB) *Replicated {
	t.Helper()
	if os.Getenv(EnvFailover) != "1" {
		t.Skipf("makes PostgreSQL clusters of its own (a primary and a streaming standby on ports %d+); set %s=1 to run it", firstClusterPort, EnvFailover)
	}
	version := clusterVersion(t)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 3*time.Minute)
	defer cancel()
	dropOrphans(ctx, t, version)
	base := fmt.Sprintf("evt_%d_%s", os.Getpid(), randHex(3))
	app := base + "_standby"
	primary := createCluster(t, ctx, version, base+"_primary")
	standby := createCluster(t, ctx, version, base+"_standby")

	// The primary: WAL for a standby, the standby's replication connection
	// trusted, and every commit waiting for the standby's flush.
	conf := strings.Join([]string{
		"listen_addresses = '127.0.0.1'",
		"wal_level = replica",
		"max_wal_senders = 5",
		"wal_keep_size = '256MB'",
		"synchronous_commit = on",
		fmt.Sprintf("synchronous_standby_names = '%s'", app),
		"max_connections = 200",
		"",
	}, "\n")
	writeFile(t, filepath.Join("/etc/postgresql", version, primary.Name, "conf.d", "replication.conf"), conf, false)
	hba := filepath.Join("/etc/postgresql", version, primary.Name, "pg_hba.conf")
	writeFile(t, hba, "host replication all 127.0.0.1/32 trust\n", true)
	if err := primary.Ctl(ctx, "start"); err != nil {
		t.Fatal(err)
	}

	// The standby: a base backup of the primary with its recovery settings
	// (-R), streaming under application_name app. Its own configuration has
	// no synchronous_standby_names, so once promoted it commits alone.
	writeFile(t, filepath.Join("/etc/postgresql", version, standby.Name, "conf.d", "standby.conf"),
		"listen_addresses = '127.0.0.1'\nhot_standby = on\nmax_connections = 200\n", false)
	// Empty the standby's data directory (kept: its parent is not
	// postgres's to create in).
	entries, err := os.ReadDir(standby.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(standby.DataDir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(ctx, "runuser", "-u", "postgres", "--", "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres",
		"-D", standby.DataDir, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(standby.DataDir, "postgresql.auto.conf"),
		fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=%s'\n", primary.Port, app), true)
	if err := run(ctx, "chown", "-R", "postgres:postgres", standby.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := standby.Ctl(ctx, "start"); err != nil {
		t.Fatal(err)
	}
	r := &Replicated{Primary: primary, Standby: standby, AppName: app}
	deadline := time.Now().Add(time.Minute)
	for {
		state, sync, err := r.ReplicationState(ctx)
		if err == nil && state == "streaming" && sync == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: the standby %s does not stream synchronously from %s: state %q, sync_state %q (%v)", standby.Name, primary.Name, state, sync, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

// ReplicationState is the standby's state and sync_state in the primary's
// pg_stat_replication ("streaming", "sync" once it is ready).
func (r *Replicated) ReplicationState(ctx context.Context) (state, sync string, err error) {
	conn, err := pgx.Connect(ctx, r.Primary.DSN())
	if err != nil {
		return "", "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = conn.QueryRow(ctx, "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1", r.AppName).Scan(&state, &sync)
	return state, sync, err
}

// clusterVersion returns the machine's PostgreSQL major version (the newest
// under /etc/postgresql), failing t where Debian's cluster tools are missing
// or the test is not root.
func clusterVersion(t testing.TB) string {
	t.Helper()
	entries, err := os.ReadDir("/etc/postgresql")
	var missing []string
	for _, tool := range []string{"pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_basebackup", "runuser"} {
		if _, err := osexec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if err != nil || len(entries) == 0 || len(missing) > 0 || os.Geteuid() != 0 {
		t.Fatalf("pgtest: %s=1 needs root, Debian's PostgreSQL server and its cluster tools (missing: %v; /etc/postgresql: %v)", EnvFailover, missing, err)
	}
	return entries[len(entries)-1].Name()
}

// portMu serialises the choice of ports within the process.
var portMu sync.Mutex

// createCluster makes a cluster called name on a free port from
// firstClusterPort on, not started, and drops it (stopping it first) when t
// ends.
func createCluster(t testing.TB, ctx context.Context, version, name string) *Cluster {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	var lastErr error
	for port := firstClusterPort; port < firstClusterPort+100; port++ {
		if !portFree(port) {
			continue
		}
		err := run(ctx, "pg_createcluster", version, name, "-p", strconv.Itoa(port), "--start-conf=manual",
			"--", "--auth=trust", "--no-sync")
		if err != nil {
			// Another cluster of the machine may have this port in its
			// configuration: try the next one.
			lastErr = err
			_ = run(ctx, "pg_dropcluster", version, name)
			continue
		}
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if err := run(cctx, "pg_dropcluster", "--stop", version, name); err != nil {
				t.Errorf("pgtest: drop the cluster the test made: %v", err)
			}
		})
		return &Cluster{Version: version, Name: name, Port: port, DataDir: filepath.Join("/var/lib/postgresql", version, name)}
	}
	t.Fatalf("pgtest: no free port for a cluster from %d on: %v", firstClusterPort, lastErr)
	return nil
}

// orphanRE matches the clusters NewReplicated makes; its group is the
// process id of the test binary that made it.
var orphanRE = regexp.MustCompile(`^evt_([0-9]+)_[0-9a-f]{6}_(primary|standby)$`)

// dropOrphans drops the clusters that test binaries no longer running left
// behind (a binary killed by its -timeout runs no cleanup).
func dropOrphans(ctx context.Context, t testing.TB, version string) {
	out, err := osexec.CommandContext(ctx, "pg_lsclusters", "--no-header").Output()
	if err != nil {
		return
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != version {
			continue
		}
		m := orphanRE.FindStringSubmatch(f[1])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if err := run(ctx, "pg_dropcluster", "--stop", version, f[1]); err != nil {
			t.Logf("pgtest: drop the orphaned cluster %s: %v", f[1], err)
		} else {
			t.Logf("pgtest: dropped the cluster %s left by process %d", f[1], pid)
		}
	}
}

// portFree reports whether nothing listens on 127.0.0.1:port and no
// cluster of the machine is configured for it.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	out, err := osexec.Command("pg_lsclusters", "--no-header").Output()
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == strconv.Itoa(port) {
			return false
		}
	}
	return true
}

func writeFile(t testing.TB, path, text string, appendTo bool) {
	t.Helper()
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err == nil {
		_, err = f.WriteString(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

func run(ctx context.Context, args ...string) error {
	out, err := osexec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return errors.New(strings.Join(args, " ") + ": " + err.Error() + ": " + strings.TrimSpace(string(out)))
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
