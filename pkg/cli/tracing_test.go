package cli_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/cli"
)

// envOf returns a Getenv over vars.
func envOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// A tracing variable eventlog cannot honour stops the service at start with
// one line naming it.
func TestTracingEnvErrors(t *testing.T) {
	for _, c := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, `OTEL_TRACES_EXPORTER="zipkin": "zipkin" is not an exporter eventlog has: otlp, console or none`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf only"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "is not an http:// or https:// URL"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"}, `OTEL_TRACES_SAMPLER="sometimes"`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "want a ratio from 0 to 1"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_RESOURCE_ATTRIBUTES": "team"}, `OTEL_RESOURCE_ATTRIBUTES: "team" is not key=value`},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := cli.Main(ctx, []string{"writer", "-http-addr", "127.0.0.1:0"}, cli.Env{Getenv: envOf(c.vars), Stdout: &out, Stderr: &out})
		cancel()
		if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: exit %d, %v; want exit 2 and %q", c.vars, cli.ExitCode(err), err, c.want)
		}
	}
}

// collector is an OTLP/HTTP endpoint that keeps what it is sent.
type collector struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "unexpected "+r.URL.Path, http.StatusNotFound)
		return
	}
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.bodies = append(c.bodies, b)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
}

func (c *collector) all() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.bodies, nil)
}

// `eventlog dev` with OTEL_EXPORTER_OTLP_ENDPOINT exports, over OTLP/HTTP,
// the spans of a command sent with a traceparent: the writer's, the
// relay's and the projector's, in the command's trace, under the service
// name of OTEL_SERVICE_NAME. With no OTEL_* variable it exports nothing
// (the other dev tests).
func TestDevExportsTraces(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the embedded mode")
	}
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	env := envOf(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_SERVICE_NAME": "dev-under-test"})

	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &testutil.Buffer{}, &testutil.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- cli.Main(ctx, []string{"dev", "-data-dir", t.TempDir(), "-broker-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-log-level", "info"},
			cli.Env{Getenv: env, Stdout: out, Stderr: errOut})
	}()
	var httpAddr string
	waitFor(t, "the banner", func() bool {
		if m := bannerRE.FindStringSubmatch(out.String()); m != nil {
			httpAddr = m[2]
			return true
		}
		return false
	})
	if !strings.Contains(errOut.String(), "tracing on") || !strings.Contains(errOut.String(), srv.URL+"/v1/traces") {
		t.Fatalf("no start-up line says tracing is on:\n%s", errOut)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	id := uuid.New()
	req, _ := http.NewRequest("POST", strings.TrimSuffix("http://"+strings.TrimPrefix(httpAddr, "http://"), "/")+"/v1/commands",
		strings.NewReader(`{"type":"create","entity":"example","entity_id":"`+id.String()+`","data":{"foo":"bar"}}`))
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/commands: %s", resp.Status)
	}
	waitFor(t, "the read model", func() bool {
		r, err := http.Get("http://" + strings.TrimPrefix(httpAddr, "http://") + "/v1/read-models/example/" + id.String())
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	cancel() // stopping flushes the spans not exported yet
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev: %v\n%s", err, errOut)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("dev did not stop within 40s")
	}
	got := col.all()
	tid, _ := hex.DecodeString(traceID)
	for _, want := range [][]byte{tid, []byte("dev-under-test"), []byte("eventlog.writer.command"), []byte("eventlog.relay.transaction"), []byte("eventlog.projection.apply")} {
		if !bytes.Contains(got, want) {
			t.Errorf("the collector got %d bytes in %d requests, without %q", len(got), len(col.bodies), want)
		}
	}
}
