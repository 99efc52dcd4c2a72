// Package browser tests the operations console in a real browser: headless
// Chromium driven by Playwright (testdata/console.test.mjs, run with node)
// against `eventlog dev`, built from ./cmd/eventlog and run as a process on
// free loopback ports with a data directory of its own.
//
// Where node, playwright-core (npm ci in testdata) or Chromium is missing
// the test skips, saying what to install; EVENTLOG_REQUIRE_BROWSER=1 (set by
// .ci/run) turns the skip into a failure. On a failure the screenshots of
// every page are kept and their directory is logged (EVENTLOG_CONSOLE_SHOTS
// keeps them in a directory of one's choice). With
// EVENTLOG_README_SCREENSHOT=1 the test writes docs/console.png again.
package browser

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
)

// need skips the test, or fails it under EVENTLOG_REQUIRE_BROWSER=1.
func need(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("EVENTLOG_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + " (EVENTLOG_REQUIRE_BROWSER=1)")
	}
	t.Skip(msg)
}

// tools finds node, the script's node_modules and Chromium.
func tools(t *testing.T) (node, chromium string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		need(t, "node is not installed: apt-get install -y nodejs npm")
	}
	if _, err := os.Stat(filepath.Join("testdata", "node_modules", "playwright-core")); err != nil {
		need(t, "playwright-core is not installed: (cd internal/e2e/browser/testdata && npm ci)")
	}
	chromium = os.Getenv("EVENTLOG_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		need(t, "chromium is not installed at %s: apt-get install -y chromium (or set EVENTLOG_CHROMIUM)", chromium)
	}
	return node, chromium
}

// build builds ./cmd/eventlog into dir.
func build(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "eventlog")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/eventlog/eventlog/cmd/eventlog")
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running eventlog process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// startProc starts bin with args; the test stops it when it ends.
func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: args[0], cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "EVENTLOG_HTTP_TOKEN=", "EVENTLOG_HTTP_BASIC_AUTH_FILE=")
	p.cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s %v:\n%s", p.name, args, p.logs())
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *proc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// stop stops the process with SIGINT, as Ctrl-C does.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 40s of SIGINT", p.name)
	}
}

// until waits for cond, failing with what the process logged.
func (p *proc) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s:\n%s\n%s", p.name, what, p.out(), p.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within 60s:\n%s\n%s", p.name, what, p.out(), p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthy waits until the service at addr answers /healthz.
func (p *proc) healthy(t *testing.T, addr string) {
	t.Helper()
	p.until(t, "answer on "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// dev is a running `eventlog dev`.
type dev struct {
	*proc
	banner       string
	broker, http string // host:port
}

var bannerRE = regexp.MustCompile(`Kafka broker\s+(\S+)[\s\S]*HTTP API\s+http://(\S+)`)

// startDev starts bin dev and waits for its banner.
func startDev(t *testing.T, bin, dataDir, broker, httpAddr string, extra ...string) *dev {
	t.Helper()
	p := startProc(t, bin, append([]string{"dev", "-data-dir", dataDir, "-broker-addr", broker, "-http-addr", httpAddr}, extra...)...)
	p.until(t, "banner", func() bool { return strings.Contains(p.out(), "Stop with Ctrl-C") })
	d := &dev{proc: p, banner: p.out()}
	m := bannerRE.FindStringSubmatch(d.banner)
	if m == nil {
		t.Fatalf("no addresses in the banner:\n%s", d.banner)
	}
	d.broker, d.http = m[1], m[2]
	return d
}

// freeAddr returns a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// phase runs one phase of the browser script and returns what it printed
// last.
func phase(t *testing.T, node, chromium, name, baseURL, shots string, env ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.test.mjs")
	cmd.Dir = "testdata"
	cmd.Env = append(os.Environ(), append([]string{"PHASE=" + name, "BASE_URL=" + baseURL, "SHOTS_DIR=" + shots, "CHROMIUM=" + chromium}, env...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("phase %s: %s\n%s", name, time.Since(start).Round(time.Millisecond), stderr.String())
	if err != nil {
		t.Fatalf("phase %s: %v\n%s", name, err, stdout.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	out := map[string]string{}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("phase %s printed %q: %v", name, stdout.String(), err)
	}
	return out
}

// shotsDir is where the pages' screenshots go: kept, and logged, if the
// test fails; EVENTLOG_CONSOLE_SHOTS names a directory to keep them in
// anyway.
func shotsDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("EVENTLOG_CONSOLE_SHOTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "eventlog-console-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots of the console's pages: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// TestConsole: with `eventlog dev`, create an entity with the console's
// form, see it, open its history, watch a second command appear live, see
// it parked (an event encrypted with a key dev does not have) and, once dev
// runs with the key, retry it from the console. The banner's commands work
// as printed on the way.
func TestConsole(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("the browser test runs on Linux and macOS")
	}
	if testing.Short() {
		t.Skip("builds eventlog and runs it with a browser for half a minute")
	}
	node, chromium := tools(t)
	dir := t.TempDir()
	bin := build(t, dir)
	data := filepath.Join(dir, "data")
	shots := shotsDir(t)

	d := startDev(t, bin, data, "127.0.0.1:0", "127.0.0.1:0")
	base := "http://" + d.http
	bannerCommandsWork(t, d)

	out := phase(t, node, chromium, "live", base, shots)
	id, err := uuid.Parse(out["id"])
	if err != nil {
		t.Fatalf("the live phase gave no entity id: %v", out)
	}

	// Park it: its next event, encrypted with a key dev does not have,
	// goes into the store as a writer with the key would put it.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "cipher.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	insertSealed(t, filepath.Join(data, "eventlog.db"), key, id)
	waitParked(t, base, id, true)
	phase(t, node, chromium, "parked", base, shots, "ENTITY_ID="+id.String())

	// With the key the projector can read it: retry it from the console.
	d.stop(t)
	d = startDev(t, bin, data, d.broker, d.http, "-cipher-key-file", keyFile)
	env := []string{"ENTITY_ID=" + id.String()}
	if os.Getenv("EVENTLOG_README_SCREENSHOT") == "1" {
		readme, err := filepath.Abs(filepath.Join("..", "..", "..", "docs", "console.png"))
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "README_SHOT="+readme)
	}
	phase(t, node, chromium, "retried", base, shots, env...)
	waitParked(t, base, id, false)
	if strings.Contains(d.logs(), "level=ERROR") {
		t.Errorf("dev logged errors:\n%s", d.logs())
	}

	// A writer and a projector apart, on the same broker and store: each
	// console serves what its service has and says what it has not.
	d.stop(t)
	b := startProc(t, bin, "broker", "-addr", d.broker, "-data-dir", data)
	b.until(t, "listening", func() bool { return strings.Contains(b.out(), "listening on") })
	common := []string{"-kafka-brokers", d.broker, "-sqlite-path", filepath.Join(data, "eventlog.db"), "-cipher-key-file", keyFile}
	wAddr, pAddr := freeAddr(t), freeAddr(t)
	w := startProc(t, bin, append([]string{"writer", "-http-addr", wAddr}, common...)...)
	p := startProc(t, bin, append([]string{"projector", "-http-addr", pAddr}, common...)...)
	w.healthy(t, wAddr)
	p.healthy(t, pAddr)
	phase(t, node, chromium, "split", "http://"+wAddr, shots, "ENTITY_ID="+id.String(), "PROJECTOR_URL=http://"+pAddr)

	// With a token, the console asks for it, and then works as before.
	w.stop(t)
	p.stop(t)
	b.stop(t)
	const token = "c0ffee0123456789abcdef"
	tokenFile := filepath.Join(dir, "http.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startDev(t, bin, filepath.Join(dir, "data2"), "127.0.0.1:0", "127.0.0.1:0", "-http-token-file", tokenFile)
	if !strings.Contains(s.banner, "bearer token") {
		t.Errorf("the banner does not say the API asks for a token:\n%s", s.banner)
	}
	phase(t, node, chromium, "signin", "http://"+s.http, shots, "TOKEN="+token)
}

// insertSealed appends position 2 of entity id (which has 2 events), an
// attribute "secret", encrypted with key.
func insertSealed(t *testing.T, path string, key []byte, id uuid.UUID) {
	t.Helper()
	ctx := t.Context()
	rec, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	ciph, err := events.NewAESCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed := events.NewMapper(reg, events.WithCipher(ciph))
	e, err := entity.Create("example", id, map[string]json.RawMessage{"foo": json.RawMessage(`"bar"`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Set("foo", "baz"); err != nil {
		t.Fatal(err)
	}
	if err := e.Set("secret", "kept"); err != nil {
		t.Fatal(err)
	}
	pending := e.PendingEvents()
	ev := pending[len(pending)-1]
	ev.EventMeta().Timestamp = time.Now()
	it, err := sealed.ToItem(ev)
	if err != nil {
		t.Fatal(err)
	}
	if it.Position != 2 {
		t.Fatalf("the sealed event is at position %d, want 2", it.Position)
	}
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{it}); err != nil {
		t.Fatal(err)
	}
}

// waitParked waits until the projector's dead letters show id parked, or
// not.
func waitParked(t *testing.T, base string, id uuid.UUID, parked bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/dead-letters")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), id.String()) == parked {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not parked=%v within 60s", id, parked)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bannerCommandsWork runs the banner's example commands as printed, in a
// shell: send prints an id, get shows it, curl finds it in the read model,
// and the kcat lines work where kcat is installed.
func bannerCommandsWork(t *testing.T, d *dev) {
	t.Helper()
	var cmds []string
	var vars string // the shell assignments the kcat lines use (id=...)
	for _, l := range strings.Split(d.banner, "\n") {
		l = strings.TrimSpace(l)
		if regexp.MustCompile(`^[a-z]+=\$\(`).MatchString(l) {
			vars += l + "; "
			continue
		}
		if strings.HasPrefix(l, d.cmd.Path+" ") || strings.HasPrefix(l, "curl ") || strings.HasPrefix(l, "kcat ") || strings.HasPrefix(l, "echo ") || strings.HasPrefix(l, "| kcat") {
			cmds = append(cmds, l)
		}
	}
	if len(cmds) < 3 || !strings.HasPrefix(cmds[0], d.cmd.Path+" send ") || !strings.Contains(cmds[1], " get ") {
		t.Fatalf("the banner's commands are not what this test knows:\n%s", d.banner)
	}
	sh := func(line string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "sh", "-c", line).CombinedOutput()
		if err != nil {
			t.Fatalf("the banner's %q: %v\n%s", line, err, out)
		}
		return string(out)
	}
	sent := sh(cmds[0])
	m := regexp.MustCompile(`accepted: create example ([0-9a-f-]{36})`).FindStringSubmatch(sent)
	if m == nil {
		t.Fatalf("the banner's send printed %q", sent)
	}
	if got := sh(strings.Replace(cmds[1], "<the id it printed>", m[1], 1)); !strings.Contains(got, `foo = "bar"`) {
		t.Fatalf("the banner's get printed %q", got)
	}
	var curl string
	for _, c := range cmds {
		if strings.HasPrefix(c, "curl ") {
			curl = c
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(sh(curl), m[1]) {
		if time.Now().After(deadline) {
			t.Fatalf("the banner's %q does not find %s", curl, m[1])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Log("kcat is not installed: the banner's kcat lines are not tried")
		return
	}
	var produce string
	for i, c := range cmds {
		if strings.HasPrefix(c, "echo ") && i+1 < len(cmds) {
			produce = vars + strings.TrimSuffix(c, `\`) + " " + cmds[i+1]
		}
	}
	sh(produce)
	for _, c := range cmds {
		if strings.HasPrefix(c, "kcat -C") {
			if out := sh(c); !strings.Contains(out, "example") {
				t.Fatalf("the banner's %q printed %q", c, out)
			}
		}
	}
}
