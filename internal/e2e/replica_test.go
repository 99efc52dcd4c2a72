package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestReadReplica runs the writer with -postgres-read-dsn on a streaming
// standby of its store. A client that reads its own write with
// ?min_version=N (N the version its command's result reported) always gets
// that version; with the standby's replay paused, such a read waits and then
// answers 503 with Retry-After, and gets the version once replay resumes.
// It logs how often a plain read (no min_version) right after a command
// showed an older version: the replica's lag, which min_version is for.
func TestReadReplica(t *testing.T) {
	t.Parallel()
	pair := pgtest.NewReplicated(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	addr := freeAddr(t)
	w := runProgram(t, t.TempDir(), "writer", []string{"-kafka-brokers", b.addrs[0], "-http-addr", addr,
		"-postgres-dsn", pair.Primary.DSN(), "-postgres-read-dsn", pair.Standby.DSN()})
	w.waitReady(t, ctx, time.Minute)
	base := "http://" + addr

	id := uuid.New()
	const commands = 40
	stale, retries := 0, 0
	for k := range commands {
		typ, data := wire.TypeUpdate, fmt.Sprintf(`{"n":%d}`, k)
		if k == 0 {
			typ = wire.TypeCreate
		}
		res := postCommand(t, ctx, base, wire.Command{Type: typ, Entity: "example", EntityID: id, Data: json.RawMessage(data)})
		if res.Status != wire.StatusAccepted || res.Version != int64(k+1) {
			t.Fatalf("command %d: %+v", k, res)
		}
		var plain struct{ Version int64 }
		if code, _ := getJSON(ctx, fmt.Sprintf("%s/v1/entities/example/%s", base, id), &plain); code != http.StatusOK || plain.Version < res.Version {
			stale++
		}
		v, retried := readMinVersion(t, ctx, fmt.Sprintf("%s/v1/entities/example/%s?min_version=%d", base, id, res.Version))
		if v < res.Version {
			t.Fatalf("read your write of command %d: version %d, want %d", k, v, res.Version)
		}
		retries += retried
	}
	t.Logf("%d commands: a plain read right after the command showed an older version %d times; with min_version, never (%d answers said to retry, the standby behind by more than the wait)", commands, stale, retries)

	// The standby stops replaying: a read of a newer version waits, then
	// says to retry.
	standby, err := pgx.Connect(ctx, pair.Standby.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close(context.WithoutCancel(ctx))
	if _, err := standby.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	res := postCommand(t, ctx, base, wire.Command{Type: wire.TypeUpdate, Entity: "example", EntityID: id, Data: json.RawMessage(`{"n":"paused"}`)})
	if res.Status != wire.StatusAccepted {
		t.Fatalf("command while the standby's replay is paused: %+v", res)
	}
	url := fmt.Sprintf("%s/v1/entities/example/%s?min_version=%d", base, id, res.Version)
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("min_version=%d with replay paused: HTTP %d, Retry-After %q; want 503 with Retry-After", res.Version, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	t.Logf("with the standby's replay paused, min_version=%d answered 503 after %s (Retry-After %s)", res.Version, time.Since(t0).Round(time.Millisecond), resp.Header.Get("Retry-After"))
	if _, err := standby.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	if v, _ := readMinVersion(t, ctx, url); v != res.Version {
		t.Fatalf("min_version=%d after replay resumed: version %d", res.Version, v)
	}
	w.stop(t, 30*time.Second)
}

// readMinVersion GETs an entity with ?min_version=N and returns the version
// it shows, retrying, as a client does, while the answer is 503 with
// Retry-After: the standby may lag by more than the writer's wait on a
// loaded machine, and saying so is the API's answer then, not a stale read.
// It returns how many times it retried; any other answer fails t.
func readMinVersion(t testing.TB, ctx context.Context, url string) (version int64, retries int) {
	t.Helper()
	for {
		var e struct{ Version int64 }
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		retryAfter := resp.Header.Get("Retry-After")
		if resp.StatusCode == http.StatusOK {
			err = json.NewDecoder(resp.Body).Decode(&e)
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK && err == nil:
			return e.Version, retries
		case resp.StatusCode != http.StatusServiceUnavailable || retryAfter == "":
			t.Fatalf("GET %s: HTTP %d, Retry-After %q (%v)", url, resp.StatusCode, retryAfter, err)
		}
		secs, err := strconv.Atoi(retryAfter)
		if err != nil {
			t.Fatalf("GET %s: Retry-After %q: %v", url, retryAfter, err)
		}
		retries++
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s: still 503 after %d retries: %v", url, retries, ctx.Err())
		case <-time.After(time.Duration(secs) * time.Second):
		}
	}
}

// With a second connection to the store's own database as the "replica",
// the writer serves entities from it; and a -postgres-read-dsn that is
// wrong fails the writer at start, saying what to fix.
func TestReadDSN(t *testing.T) {
	t.Parallel()
	st := pgStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	dsn := st.flags[1]
	start := func(args ...string) error {
		var out bytes.Buffer
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		args = append([]string{"writer", "-kafka-brokers", b.addrs[0], "-http-addr", "127.0.0.1:0"}, args...)
		return cli.Main(cctx, args, cli.Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &out})
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no primary", []string{"-postgres-read-dsn", dsn}, []string{"-postgres-read-dsn needs -postgres-dsn"}},
		{"unreachable", append([]string{"-postgres-read-dsn", "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"}, st.flags...),
			[]string{"-postgres-read-dsn", "unreachable", "127.0.0.1:1"}},
		{"not a DSN", append([]string{"-postgres-read-dsn", "postgres://[::1"}, st.flags...), []string{"-postgres-read-dsn", "invalid DSN"}},
	}
	// A database without the store's schema: another database of the server.
	if u, err := neturl.Parse(dsn); err == nil && u.Scheme != "" {
		u.Path = "/postgres"
		cases = append(cases, struct {
			name string
			args []string
			want []string
		}{"no tables", append([]string{"-postgres-read-dsn", u.String()}, st.flags...), []string{"-postgres-read-dsn", "no eventlog tables"}})
	}
	for _, c := range cases {
		err := start(c.args...)
		if err == nil {
			t.Errorf("%s: the writer started", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.name, err, w)
			}
		}
	}

	addr := freeAddr(t)
	w := runProgram(t, t.TempDir(), "writer", append([]string{"-kafka-brokers", b.addrs[0], "-http-addr", addr, "-postgres-read-dsn", st.flags[1]}, st.flags...))
	w.waitReady(t, ctx, time.Minute)
	if log, _ := os.ReadFile(w.logPath); !strings.Contains(string(log), "names a server that is not a standby") {
		t.Errorf("the writer did not warn that its read DSN is a primary; it logged:\n%s", log)
	}
	res := postCommand(t, ctx, "http://"+addr, wire.Command{Type: wire.TypeCreate, Entity: "example", EntityID: uuid.New(), Data: json.RawMessage(`{"a":1}`)})
	var e struct{ Version int64 }
	if code, err := getJSON(ctx, fmt.Sprintf("http://%s/v1/entities/example/%s?min_version=1", addr, res.EntityID), &e); err != nil || code != http.StatusOK || e.Version != 1 {
		t.Fatalf("GET through the read DSN: HTTP %d, version %d (%v)", code, e.Version, err)
	}
	w.stop(t, 30*time.Second)
}

// postCommand sends cmd through POST /v1/commands and returns its result.
func postCommand(t testing.TB, ctx context.Context, base string, cmd wire.Command) wire.Result {
	t.Helper()
	body, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.CommandID == uuid.Nil {
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		delete(m, "command_id")
		body, _ = json.Marshal(m)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/commands", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res wire.Result
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/commands: HTTP %d, %v", resp.StatusCode, err)
	}
	return res
}
