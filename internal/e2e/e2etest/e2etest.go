// Package e2etest holds what the end-to-end suites share: a logger that writes
// to the test's log, and the body of the child processes they start and kill.
package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"

	"github.com/eventlog/eventlog/pkg/cli"
)

// FailedPrefix starts the line a child writes when its command fails.
const FailedPrefix = "helper: failed:"

// RunChild is the body of a child process (the standard re-exec pattern): if
// the environment variable envVar holds a JSON command line (`<command>
// [flags]`, as after "eventlog"), it runs it with cli.Main until SIGTERM or
// SIGINT and exits with cli.ExitCode; otherwise it skips t.
func RunChild(t *testing.T, envVar string) {
	raw := os.Getenv(envVar)
	if raw == "" {
		t.Skip("runs only as the child process of a test")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: bad", envVar, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// No environment fallbacks: the flags say everything.
	err := cli.Main(ctx, args, cli.Env{Getenv: func(string) string { return "" }, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	code := cli.ExitCode(err)
	if code != 0 {
		fmt.Fprintf(os.Stderr, "%s eventlog %s: %v\n", FailedPrefix, args[0], err)
	}
	os.Exit(code)
}

// Log returns a logger that writes to t's log until t ends.
func Log(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: level}))
}

// Writer returns a writer whose lines go to t's log until t ends (later
// writes are dropped, as testing forbids logging after a test).
func Writer(t testing.TB) io.Writer {
	w := &logWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return w
}

type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}
