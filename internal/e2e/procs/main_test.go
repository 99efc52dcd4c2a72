package procs

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// envArgs carries, JSON-encoded, the command line (`eventlog <command>
// [flags]`, without "eventlog") that a child process runs.
const envArgs = "EVENTLOG_PROCS_ARGS"

// TestHelperProcess is not a test: it is the body of the child processes the
// tests start, running the command line in EVENTLOG_PROCS_ARGS (see
// e2etest.RunChild).
func TestHelperProcess(t *testing.T) { e2etest.RunChild(t, envArgs) }

// proc is an eventlog program running in a child process. Its stdout and
// stderr go to one file.
type proc struct {
	name    string
	args    []string
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{}
	waitErr error // set before done is closed
}

// procSet starts child processes for one test and cleans up after them: when
// the test ends, every child still running is SIGKILLed (a stopped one too),
// and if the test failed the end of every child's log is logged.
type procSet struct {
	t   testing.TB
	dir string

	mu    sync.Mutex
	procs []*proc
}

func newProcSet(t testing.TB) *procSet {
	dir := t.TempDir()
	if keep := os.Getenv("EVENTLOG_PROCS_LOG_DIR"); keep != "" {
		// Keep the children's logs for a look after the run.
		dir = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+"-"+time.Now().Format("150405"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ps := &procSet{t: t, dir: dir}
	t.Cleanup(func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		for _, p := range ps.procs {
			if !p.exited() {
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
				<-p.done
			}
		}
		if t.Failed() {
			for _, p := range ps.procs {
				t.Logf("--- last lines of %s (%s, %s):\n%s", p.name, strings.Join(p.args, " "), p.state(), p.tail(15))
			}
		}
	})
	return ps
}

// start starts `eventlog <args...>` as a child process called name (unique
// within the test; it names the log file).
func (ps *procSet) start(name string, args ...string) *proc {
	ps.t.Helper()
	raw, _ := json.Marshal(args)
	logPath := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		ps.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envArgs+"="+string(raw))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		ps.t.Fatal(err)
	}
	p := &proc{name: name, args: args, cmd: cmd, logPath: logPath, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.procs = append(ps.procs, p)
	ps.mu.Unlock()
	return p
}

// problems returns the lines of every child's output that report a crash, a
// data race, or a failure to start or run.
func (ps *procSet) problems() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []string
	for _, p := range ps.procs {
		for _, l := range p.problems() {
			out = append(out, p.name+": "+l)
		}
	}
	return out
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// pause SIGSTOPs the process; resume SIGCONTs it.
func (p *proc) pause()  { _ = p.cmd.Process.Signal(syscall.SIGSTOP) }
func (p *proc) resume() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }

// term sends SIGTERM and waits up to timeout for the process to exit. It
// returns the exit code, or an error if the process did not exit in time (it
// is then killed).
func (p *proc) term(timeout time.Duration) (int, error) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		return -1, fmt.Errorf("%s: no exit within %s of SIGTERM", p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0, nil
	case errors.As(p.waitErr, &ee):
		return ee.ExitCode(), nil
	}
	return -1, p.waitErr
}

// state says whether the process runs or how it ended.
func (p *proc) state() string {
	if !p.exited() {
		return "running"
	}
	if p.waitErr == nil {
		return "exited 0"
	}
	return p.waitErr.Error()
}

// problems returns the lines of the process's output that report a crash, a
// data race, or a command that failed.
func (p *proc) problems() []string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "panic:") || strings.Contains(l, "WARNING: DATA RACE") ||
			strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, e2etest.FailedPrefix) || strings.HasPrefix(l, "--- FAIL") {
			out = append(out, l)
		}
	}
	return out
}

// tail returns the last n lines of the process's output.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns 127.0.0.1:<port> with a port that was free a moment ago:
// the parent picks every child's ports, so that it knows where to reach the
// child and a restarted child can take the same ones.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// logFlags make a child log warnings and errors as JSON
// (EVENTLOG_PROCS_LOG_LEVEL overrides the level, to debug a failure).
var logFlags = []string{"-log-format", "json", "-log-level", cmp.Or(os.Getenv("EVENTLOG_PROCS_LOG_LEVEL"), "warn")}
