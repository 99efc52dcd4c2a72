package cli_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/cli"
)

// The arguments of one invocation have no environment fallback: a
// service's EVENTLOG_VERSION or EVENTLOG_ID must not change what `get` or
// `send` does in its environment. Service settings still do fall back.
func TestInvocationFlagsIgnoreTheEnvironment(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.String())
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"entity":"example","id":"` + uuid.Nil.String() + `","version":2,"attributes":{}}`))
	}))
	defer srv.Close()
	env := map[string]string{
		"EVENTLOG_VERSION":   "1.4.2",                                // a service's own version
		"EVENTLOG_JSON":      "true",                                 // would change the output
		"EVENTLOG_HTTP_ADDR": strings.TrimPrefix(srv.URL, "http://"), // a service setting: used
	}
	var out bytes.Buffer
	id := uuid.NewString()
	err := cli.Main(context.Background(), []string{"get", "example", id}, cli.Env{Getenv: func(k string) string { return env[k] }, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("get with EVENTLOG_VERSION=1.4.2 in the environment: %v\n%s", err, out.String())
	}
	if len(asked) != 1 || asked[0] != "/v1/entities/example/"+id {
		t.Fatalf("get asked for %v, want the current version of the entity", asked)
	}
	if strings.HasPrefix(strings.TrimSpace(out.String()), "{") {
		t.Fatalf("EVENTLOG_JSON changed the output: %s", out.String())
	}
}

// A bad flag is reported once, in one line, naming where to look.
func TestFlagErrorOnce(t *testing.T) {
	var out bytes.Buffer
	err := cli.Main(context.Background(), []string{"writer", "-bogus"}, cli.Env{Getenv: noEnv, Stdout: &out, Stderr: &out})
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "flag provided but not defined: -bogus (see eventlog writer -h)") {
		t.Fatalf("err %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("the flag error was also printed:\n%s", out.String())
	}
	out.Reset()
	_ = cli.Main(context.Background(), []string{"writer", "-h"}, cli.Env{Getenv: noEnv, Stdout: &out, Stderr: &out})
	if !strings.HasPrefix(out.String(), "Usage: eventlog writer [flags]") {
		t.Fatalf("writer -h: %.80s", out.String())
	}
}

// forget refuses an entity whose events are stored readable: deleting a
// data key would erase nothing.
func TestForgetRefusesUnencrypted(t *testing.T) {
	dir := t.TempDir()
	a := startDev(t, dir)
	out, err := run(t, "send", "--kafka-brokers", a.broker, "--type", "create", "--entity", "example", "--attr", "email=ada@example.com", "--json")
	if err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	id := between(out, `"entity_id":"`, `"`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var msg bytes.Buffer
	err = cli.Main(ctx, []string{"forget", "-sqlite-path", filepath.Join(dir, "eventlog.db"), "example", id}, cli.Env{Getenv: noEnv, Stdout: &msg, Stderr: &msg})
	if err == nil || !strings.Contains(err.Error(), "cannot be forgotten") || !strings.Contains(err.Error(), "-cipher-per-entity") {
		t.Fatalf("forget of an entity stored in clear: %v\n%s", err, msg.String())
	}
	if strings.Contains(msg.String(), "forgot") {
		t.Fatalf("forget claimed an erasure: %s", msg.String())
	}
	// Nothing changed: the entity is still readable and writable.
	if out, err := run(t, "get", "--http-addr", a.http, "example", id); err != nil || !strings.Contains(out, "ada@example.com") {
		t.Fatalf("get after the refused forget: %v\n%s", err, out)
	}
}

func between(s, from, to string) string {
	_, rest, _ := strings.Cut(s, from)
	v, _, _ := strings.Cut(rest, to)
	return v
}
