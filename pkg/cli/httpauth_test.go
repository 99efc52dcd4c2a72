package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/eventlog/eventlog/pkg/cli"
)

// On an address beyond loopback a service with no authentication refuses
// to start, with one line saying what to set; -http-insecure is the
// explicit opt-out. A bad token or users file stops it too.
func TestHTTPAuthStartRules(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("ana:plain\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"writer", "-http-addr", "0.0.0.0:0"}, "reachable beyond this machine and the HTTP API has no authentication: set -http-token-file (or EVENTLOG_HTTP_TOKEN) or -http-basic-auth-file, or -http-insecure"},
		{[]string{"projector", "-http-addr", ":0"}, "has no authentication"},
		{[]string{"dev", "-data-dir", dir, "-broker-addr", "127.0.0.1:0", "-http-addr", "[::]:0"}, "has no authentication"},
		{[]string{"writer", "-http-addr", "127.0.0.1:0", "-http-token", "short"}, "openssl rand -hex 32"},
		{[]string{"writer", "-http-addr", "0.0.0.0:0", "-http-basic-auth-file", users}, `line 1: the password of "ana" is not a bcrypt hash`},
		{[]string{"writer", "-http-addr", "127.0.0.1:0", "-http-token", "0123456789abcdef", "-http-token-file", users}, "both set"},
	} {
		out, err := run(t, c.args...)
		if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: exit %d, %v\n%s\nwant %q", c.args, cli.ExitCode(err), err, out, c.want)
		}
	}
}

func httpStatus(t *testing.T, method, url, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"type":"create","entity":"example","data":{"foo":"bar"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// On loopback the API is open; with a token every route but the probes,
// the metrics and the console's files asks for it, and the CLI tools send
// it from EVENTLOG_HTTP_TOKEN, as the service reads it.
func TestHTTPAuthToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the embedded mode twice")
	}
	open := startDev(t, t.TempDir())
	if code, body := httpStatus(t, "GET", open.http+"/v1/notifications", ""); code != 200 {
		t.Fatalf("loopback with no auth: %d %s", code, body)
	}
	// ... to this machine's names only (DNS rebinding).
	req, _ := http.NewRequest("GET", open.http+"/v1/notifications", nil)
	req.Host = "rebound.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the open API asked for as rebound.example: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	const token = "5f0c2a1e9d7b4c3a8e6f"
	env := func(k string) string {
		if k == "EVENTLOG_HTTP_TOKEN" {
			return token
		}
		return ""
	}
	a := startDevWith(t, t.TempDir(), env)
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/ui/"} {
		if code, body := httpStatus(t, "GET", a.http+p, ""); code != 200 {
			t.Errorf("GET %s without the token: %d %.100s", p, code, body)
		}
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/notifications"}, {"GET", "/v1/notifications/stream"}, {"POST", "/v1/commands"},
		{"GET", "/v1/projections"}, {"GET", "/v1/dead-letters"}, {"GET", "/v1/read-models/example?foo=bar"},
	} {
		if code, body := httpStatus(t, c.method, a.http+c.path, ""); code != 401 || !strings.Contains(body, "needs a bearer token") {
			t.Errorf("%s %s without the token: %d %s", c.method, c.path, code, body)
		}
		if code, _ := httpStatus(t, c.method, a.http+c.path, "Bearer wrong-token-0123456789"); code != 401 {
			t.Errorf("%s %s with a wrong token: %d", c.method, c.path, code)
		}
	}
	code, body := httpStatus(t, "POST", a.http+"/v1/commands", "Bearer "+token)
	if code != 200 {
		t.Fatalf("POST /v1/commands with the token: %d %s", code, body)
	}
	var res struct {
		EntityID string `json:"entity_id"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cli.Main(ctx, []string{"get", "--http-addr", a.http, "example", res.EntityID}, cli.Env{Getenv: env, Stdout: &out, Stderr: &out}); err != nil || !strings.Contains(out.String(), `foo = "bar"`) {
		t.Fatalf("get with EVENTLOG_HTTP_TOKEN: %v\n%s", err, out.String())
	}
	if _, err := run(t, "get", "--http-addr", a.http, "example", res.EntityID); err == nil || !strings.Contains(err.Error(), "needs a bearer token") {
		t.Fatalf("get without the token: %v", err)
	}
	out.Reset()
	if err := cli.Main(ctx, []string{"dead-letters", "list", "-projector-url", a.http}, cli.Env{Getenv: env, Stdout: &out, Stderr: &out}); err != nil {
		t.Fatalf("dead-letters list with EVENTLOG_HTTP_TOKEN: %v\n%s", err, out.String())
	}
}

// Basic auth lets the users of the file in.
func TestHTTPAuthBasicFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the embedded mode")
	}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pa55word"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("ana:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startDevWith(t, filepath.Join(dir, "data"), noEnv, "-http-basic-auth-file", users)
	req, _ := http.NewRequest("GET", a.http+"/v1/notifications", nil)
	req.SetBasicAuth("ana", "pa55word")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("ana's password: %s", resp.Status)
	}
	if code, _ := httpStatus(t, "GET", a.http+"/v1/notifications", ""); code != 401 {
		t.Fatalf("no password: %d", code)
	}
}
