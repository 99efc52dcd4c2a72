package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/internal/testutil"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// envHelperArgs carries, JSON-encoded, the command line of the writer a child
// process runs (see TestHelperWriterProcess).
const envHelperArgs = "EVENTLOG_E2E_WRITER_ARGS"

// TestHelperWriterProcess is not a test: it is the body of the child
// processes the tests start, running `writer` with the flags in
// EVENTLOG_E2E_WRITER_ARGS (see e2etest.RunChild).
func TestHelperWriterProcess(t *testing.T) { e2etest.RunChild(t, envHelperArgs) }

// proc is a writer running in a child process.
type proc struct {
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{}
	waitErr error
}

// startProc starts a writer process with args; its output goes to a file in
// dir. The process is killed when t ends if it is still running.
func startProc(t testing.TB, dir, name string, args []string) *proc {
	t.Helper()
	raw, _ := json.Marshal(append([]string{"writer"}, args...))
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriterProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperArgs+"="+string(raw))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logPath: logPath, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLog waits until the process's output has a line containing s, and
// fails t if the process exits first or timeout passes.
func (p *proc) waitLog(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		if b, err := os.ReadFile(p.logPath); err == nil && strings.Contains(string(b), s) {
			return nil
		}
		if p.exited() {
			t.Fatalf("the process exited before it logged %q:\n%s", s, p.tail(30))
		}
		return fmt.Errorf("the process did not log %q:\n%s", s, p.tail(30))
	})
}

// kill SIGKILLs the process and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and waits up to timeout for the process to exit. It
// returns the exit code, or an error if the process did not exit in time (it
// is then killed).
func (p *proc) term(timeout time.Duration) (time.Duration, int, error) {
	t0 := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		return time.Since(t0), -1, fmt.Errorf("no exit within %s of SIGTERM", timeout)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		code = ee.ExitCode()
	} else if p.waitErr != nil {
		return time.Since(t0), -1, p.waitErr
	}
	return time.Since(t0), code, nil
}

// problems returns the lines of the process's output that report a crash, a
// data race, or a failure to start.
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
			strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "writer:") || strings.HasPrefix(l, "--- FAIL") {
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
