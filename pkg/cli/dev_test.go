package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/cli"
)

func noEnv(string) string { return "" }

type devAddrs struct{ broker, http string }

var bannerRE = regexp.MustCompile(`Kafka broker\s+(\S+)[\s\S]*HTTP API\s+(\S+)`)

// startDev runs `eventlog dev` in process on free ports and returns its addresses.
func startDev(t *testing.T, dataDir string) devAddrs {
	t.Helper()
	return startDevWith(t, dataDir, noEnv)
}

// startDevWith runs `eventlog dev` with an environment and more flags.
func startDevWith(t *testing.T, dataDir string, getenv func(string) string, args ...string) devAddrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &testutil.Buffer{}
	errOut := &testutil.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- cli.Main(ctx, append([]string{"dev", "-data-dir", dataDir, "-broker-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-log-level", "warn"}, args...),
			cli.Env{Getenv: getenv, Stdout: out, Stderr: errOut})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev: %v\n%s", err, errOut)
			}
		case <-time.After(40 * time.Second):
			t.Error("dev did not stop within 40s")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := bannerRE.FindStringSubmatch(out.String()); m != nil {
			return devAddrs{broker: m[1], http: m[2]}
		}
		select {
		case err := <-done:
			t.Fatalf("dev stopped: %v\n%s", err, errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no banner within 30s:\n%s\n%s", out, errOut)
	return devAddrs{}
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cli.Main(ctx, args, cli.Env{Getenv: noEnv, Stdout: &out, Stderr: &errOut})
	return out.String() + errOut.String(), err
}

func kcatPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not installed; .ci/run installs it (apt-get install kcat)")
		}
		t.Skip("kcat is not installed (apt-get install kcat)")
	}
	return p
}

func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcatPath(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitFor polls f until it returns true.
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A new user's first minutes: `eventlog dev`, then a command sent and read back
// with the CLI, and with kcat as a real non-Go Kafka client.
func TestDevWithCLIAndKcat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the embedded mode")
	}
	a := startDev(t, t.TempDir())

	out, err := run(t, "send", "--kafka-brokers", a.broker, "--type", "create", "--entity", "example", "--attr", "foo=bar", "--json")
	if err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	var res struct {
		Status   string
		EntityID uuid.UUID `json:"entity_id"`
		Version  int64
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != "accepted" || res.Version != 1 {
		t.Fatalf("send result %q: %v", out, err)
	}
	out, err = run(t, "get", "example", res.EntityID.String(), "--http-addr", a.http)
	if err != nil || !strings.Contains(out, `foo = "bar"`) || !strings.Contains(out, "version 1") {
		t.Fatalf("get: %v\n%s", err, out)
	}

	// kcat produces a command; its result and its event come back on Kafka.
	cid, eid := uuid.New(), uuid.New()
	cmd := `{"command_id":"` + cid.String() + `","type":"create","entity":"example","entity_id":"` + eid.String() + `","data":{"foo":"from-kcat"}}`
	kcat(t, cmd+"\n", "-P", "-b", a.broker, "-t", "eventlog.commands", "-k", eid.String())
	waitFor(t, "the result on eventlog.command-results", func() bool {
		return strings.Contains(kcat(t, "", "-C", "-b", a.broker, "-t", "eventlog.command-results", "-e", "-q"), `"command_id":"`+cid.String()+`","entity":"example","entity_id":"`+eid.String()+`","status":"accepted","version":1`)
	})
	waitFor(t, "the event on eventlog.events.example", func() bool {
		events := kcat(t, "", "-C", "-b", a.broker, "-t", "eventlog.events.example", "-e", "-q", "-f", "%k|%h|%s\n")
		for _, line := range strings.Split(events, "\n") {
			if strings.HasPrefix(line, eid.String()+"|") && strings.Contains(line, "position=0,topic=example.Created") && strings.Contains(line, `"foo":"from-kcat"`) {
				return true
			}
		}
		return false
	})
	out, err = run(t, "get", "--http-addr", a.http, "--json", "example", eid.String())
	if err != nil || !strings.Contains(out, `"from-kcat"`) {
		t.Fatalf("get after kcat: %v\n%s", err, out)
	}

	// A malformed record reaches the dead letters unchanged, and the writer goes on.
	kcat(t, "not json\n", "-P", "-b", a.broker, "-t", "eventlog.commands")
	waitFor(t, "the dead letter", func() bool {
		dl := kcat(t, "", "-C", "-b", a.broker, "-t", "eventlog.dead-letters", "-e", "-q", "-f", "%h|%s\n")
		return strings.Contains(dl, "error=wire: not a command envelope") && strings.Contains(dl, "|not json")
	})
	if out, err := run(t, "send", "--kafka-brokers", a.broker, "--attr", "after=dead-letter"); err != nil {
		t.Fatalf("send after a dead letter: %v\n%s", err, out)
	}
}

// Bad flags and unreachable servers: one clear line each, and a non-zero exit.
func TestCLIErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"writer", "-partitions", "0"}, 2, "-partitions must be from 1"},
		{[]string{"writer", "-bogus"}, 2, "flag provided but not defined"},
		{[]string{"dev", "-log-level", "loud"}, 2, "-log-level"},
		{[]string{"get", "example"}, 2, "want <entity> <id>"},
		{[]string{"get", "example", uuid.NewString(), "--http-addr", "127.0.0.1:1"}, 1, "cannot reach the HTTP API"},
		{[]string{"send", "--type", "update"}, 2, "-id is required"},
		{[]string{"send", "--kafka-brokers", "127.0.0.1:1", "--timeout", "2s"}, 1, "is the broker running?"},
		{[]string{"migrate"}, 2, "-postgres-dsn is required"},
		{[]string{"migrate", "-postgres-dsn", "postgres://u@127.0.0.1:1/x"}, 1, "server unreachable"},
		{[]string{"writer", "-postgres-dsn", "::nonsense::", "-http-addr", "127.0.0.1:0"}, 1, "invalid DSN"},
		{[]string{"dev", "-cipher-key", "abc"}, 2, "64 hex digits"},
		{[]string{"dev", "-kafka-compression", "brotli"}, 2, `-kafka-compression: kafka: unknown compression codec "brotli": choose none, gzip, snappy, lz4, zstd`},
		{[]string{"send", "-kafka-compression", "snapy"}, 2, `unknown compression codec "snapy"`},
		{[]string{"projector", "-transient-retries", "0"}, 2, "-transient-retries must be -1 (never park on a transient error) or from 1 to 100, got 0"},
		{[]string{"dev", "-retry-backoff", "0s"}, 2, "-retry-backoff must be above 0"},
	}
	for _, c := range cases {
		out, err := run(t, c.args...)
		if got := cli.ExitCode(err); got != c.code || err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("%v: exit %d, err %v, output %q; want exit %d and %q", c.args, got, err, out, c.code, c.want)
		}
	}
}

func TestPortInUse(t *testing.T) {
	a := startDev(t, t.TempDir())
	_, err := run(t, "dev", "-data-dir", t.TempDir(), "-broker-addr", "127.0.0.1:0", "-http-addr", strings.TrimPrefix(a.http, "http://"))
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("HTTP port in use: %v", err)
	}
	_, err = run(t, "dev", "-data-dir", t.TempDir(), "-broker-addr", a.broker, "-http-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("broker port in use: %v", err)
	}
}
