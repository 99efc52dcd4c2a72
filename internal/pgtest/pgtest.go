// Package pgtest gives tests a PostgreSQL server, and each test a schema of
// its own that is dropped when the test ends.
//
// The server is, in order:
//
//  1. the one at EVENTLOG_TEST_POSTGRES_DSN, if set;
//  2. otherwise the local server at LocalDSN, if it answers within a second
//     (so that `make test` on a machine with PostgreSQL runs every test);
//  3. otherwise a testcontainers-go PostgreSQL container, started once per
//     test binary, if a Docker engine answers within a second (the container is
//     removed by testcontainers' reaper when the binary exits);
//  4. otherwise none: the test is skipped with a message saying how to set the
//     DSN, or fails if EVENTLOG_REQUIRE_POSTGRES=1 (as in CI).
//
// Schemas are named after the process id (evt_<pid>_<random>_<test>), so tests
// of several packages can run in parallel against one database, and Main can
// check that a test binary left none of its own behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Environment variables.
const (
	EnvDSN     = "EVENTLOG_TEST_POSTGRES_DSN"
	EnvRequire = "EVENTLOG_REQUIRE_POSTGRES"
	// ContainerImage is the image started where a Docker engine answers.
	ContainerImage = "postgres:16-alpine"
	// LocalDSN is the server tried when EnvDSN is not set.
	LocalDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&connect_timeout=1"
)

var (
	serverOnce sync.Once
	serverDSN  string
	serverWhy  string // why there is no server
)

// DSN returns the test server's DSN, or skips t (fails it if
// EVENTLOG_REQUIRE_POSTGRES=1) when there is none.
func DSN(t testing.TB) string {
	t.Helper()
	serverOnce.Do(findServer)
	if serverDSN == "" {
		msg := "no PostgreSQL for this test: " + serverWhy +
			"; set " + EnvDSN + "=postgres://postgres@127.0.0.1:5432/test?sslmode=disable (any database the user may create schemas in)"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg + " (" + EnvRequire + "=1 turns this skip into a failure)")
		}
		t.Skip(msg)
	}
	return serverDSN
}

func findServer() {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		serverDSN = dsn
		return
	}
	if answers(LocalDSN) {
		serverDSN = LocalDSN
		return
	}
	host, ok := dockerEngine()
	if !ok {
		serverWhy = EnvDSN + " is not set and no Docker engine answers for testcontainers"
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := tcpostgres.Run(ctx, ContainerImage,
		tcpostgres.WithDatabase("test"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		testcontainers.WithWaitStrategy(wait.ForAll(
			wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
			wait.ForListeningPort("5432/tcp"),
		).WithDeadline(2*time.Minute)),
	)
	if err != nil {
		serverWhy = fmt.Sprintf("%s is not set and starting a PostgreSQL container on %s failed: %v", EnvDSN, host, err)
		return
	}
	dsn, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		serverWhy = fmt.Sprintf("PostgreSQL container started but has no connection string: %v", err)
		return
	}
	serverDSN = dsn
}

// answers reports whether a PostgreSQL server at dsn takes a connection
// within a second or two.
func answers(dsn string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

// dockerEngine reports a Docker engine that answers /_ping within a second, on
// DOCKER_HOST or one of the usual sockets. It is a fast pre-check, so that
// machines without Docker skip at once instead of waiting on testcontainers.
func dockerEngine() (string, bool) {
	var candidates []string
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		candidates = append(candidates, h)
	}
	if h := os.Getenv("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE"); h != "" {
		candidates = append(candidates, "unix://"+h)
	}
	home, _ := os.UserHomeDir()
	if home != "" {
		if b, err := os.ReadFile(filepath.Join(home, ".testcontainers.properties")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "docker.host"); ok {
					candidates = append(candidates, strings.TrimSpace(strings.TrimLeft(v, " =:")))
				}
			}
		}
	}
	socks := []string{"/var/run/docker.sock"}
	if home != "" {
		socks = append(socks, filepath.Join(home, ".docker/run/docker.sock"), filepath.Join(home, ".docker/desktop/docker.sock"))
	}
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
		socks = append(socks, filepath.Join(xdg, "docker.sock"), filepath.Join(xdg, "podman/podman.sock"))
	}
	for _, s := range socks {
		candidates = append(candidates, "unix://"+s)
	}
	for _, c := range candidates {
		if ping(c) {
			return c, true
		}
	}
	return "", false
}

func ping(host string) bool {
	network, addr, ok := strings.Cut(host, "://")
	if !ok {
		return false
	}
	switch network {
	case "unix":
		if _, err := os.Stat(addr); err != nil {
			return false
		}
	case "tcp":
	default:
		return false
	}
	client := &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://docker/_ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Pool returns a pool on the test server, closed when t ends. Its sessions'
// application_name is the test's name, so that pg_stat_activity tells which
// test a session belongs to (see Holders).
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dsn := DSN(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	name := "pgtest " + t.Name()
	if len(name) > 63 {
		name = name[:63]
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Holders describes the sessions and prepared transactions, in every
// database of the server, that hold a transaction id: they hold back the
// xmin horizon, and with it every tailer of a PostgreSQL notification log. Log
// it when a test that waits for the log times out.
func Holders(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) string {
	rows, err := q.Query(ctx, `SELECT format('pid %s, db %s, app %L, %s, xid %s, for %s: %s', pid, datname, application_name, state,
		backend_xid, date_trunc('second', now() - xact_start), left(query, 120))
	FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
	UNION ALL
	SELECT format('prepared transaction %L, xid %s, db %s, since %s', gid, transaction, database, prepared) FROM pg_prepared_xacts`)
	if err != nil {
		return "cannot list: " + err.Error()
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "cannot list: " + err.Error()
	}
	if len(lines) == 0 {
		return "none"
	}
	return strings.Join(lines, "\n")
}

var nameRE = regexp.MustCompile(`[^a-z0-9]+`)

// schemaPrefix starts every schema this process creates.
func schemaPrefix() string { return fmt.Sprintf("evt_%d_", os.Getpid()) }

// Schema creates a fresh, empty schema for t and drops it (with everything
// in it) when t ends. It returns the schema's name, a plain lower-case
// identifier.
func Schema(t testing.TB) string {
	t.Helper()
	dsn := DSN(t)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	tn := strings.Trim(nameRE.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	name := schemaPrefix() + hex.EncodeToString(rnd[:]) + "_" + tn
	if len(name) > 63 {
		name = name[:63]
	}
	name = strings.TrimRight(name, "_")
	if err := exec(t.Context(), dsn, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
		defer cancel()
		if err := exec(ctx, dsn, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return name
}

func exec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// databasePrefix starts every database this process creates.
func databasePrefix() string { return fmt.Sprintf("evtdb_%d_", os.Getpid()) }

// Databases creates n fresh, empty databases on the test server for t (the
// shards of a sharded store, say) and drops them when t ends. It returns
// their DSNs, the server's DSN with the database replaced.
func Databases(t testing.TB, n int) []string {
	t.Helper()
	dsn := DSN(t)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	dsns := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("%s%s_%d", databasePrefix(), hex.EncodeToString(rnd[:]), i)
		if err := exec(t.Context(), dsn, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			t.Fatalf("pgtest: create database %s: %v", name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
			defer cancel()
			if err := exec(ctx, dsn, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Errorf("pgtest: drop database %s: %v", name, err)
			}
		})
		d, err := withDatabase(dsn, name)
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		dsns[i] = d
	}
	return dsns
}

// withDatabase returns dsn naming database db instead of its own.
func withDatabase(dsn, db string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse the server DSN: %w", err)
		}
		u.Path = "/" + db
		return u.String(), nil
	}
	return dsn + " dbname=" + db, nil
}

// Leftovers returns the schemas and databases this process created and did
// not drop.
func Leftovers(ctx context.Context) ([]string, error) {
	if serverDSN == "" {
		return nil, nil
	}
	conn, err := pgx.Connect(ctx, serverDSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)
	UNION ALL SELECT datname FROM pg_database WHERE starts_with(datname, $2) ORDER BY 1`, schemaPrefix(), databasePrefix())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Main runs a package's tests (call it from TestMain) and then fails the run if
// they left schemas behind.
func Main(m *testing.M) {
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left, err := Leftovers(ctx)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "pgtest: cannot check for leftover schemas: %v\n", err)
		code = max(code, 1)
	case len(left) > 0:
		fmt.Fprintf(os.Stderr, "pgtest: tests left %d schemas behind: %s\n", len(left), strings.Join(left, ", "))
		code = max(code, 1)
	}
	os.Exit(code)
}
