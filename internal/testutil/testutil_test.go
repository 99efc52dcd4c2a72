package testutil_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventlog/eventlog/internal/testutil"
)

// recorder is a testing.TB that records failures instead of stopping.
type recorder struct {
	testing.TB
	failed atomic.Bool
	msg    string
	logs   []string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed.Store(true)
	r.msg = fmt.Sprintf(format, args...)
	panic(r)
}
func (r *recorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}
func (r *recorder) Name() string { return "TestX" }

func run(r *recorder, f func()) {
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
	}()
	f()
}

func TestEventually(t *testing.T) {
	n := 0
	testutil.Eventually(t, time.Minute, func() error {
		if n++; n < 5 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	if n != 5 {
		t.Fatalf("cond called %d times, want 5", n)
	}
	r := &recorder{TB: t}
	run(r, func() { testutil.Eventually(r, 0, func() error { return errors.New("3 of 10 relayed") }) })
	if !r.failed.Load() || !strings.Contains(r.msg, "3 of 10 relayed") {
		t.Fatalf("a condition never met: failed %v, %q", r.failed.Load(), r.msg)
	}
}

func TestSeed(t *testing.T) {
	t.Setenv(testutil.SeedEnv, "42")
	r := &recorder{TB: t}
	if s := testutil.Seed(r); s != 42 || len(r.logs) != 1 || !strings.Contains(r.logs[0], "EVENTLOG_TEST_SEED=42") {
		t.Fatalf("Seed = %d, logs %q", s, r.logs)
	}
	a, b := testutil.Rand(r, 1).Uint64(), testutil.Rand(r, 1).Uint64()
	if a != b {
		t.Fatal("the same seed and stream drew different numbers")
	}
	t.Setenv(testutil.SeedEnv, "x")
	run(r, func() { testutil.Seed(r) })
	if !r.failed.Load() {
		t.Fatal("a seed that does not parse was taken")
	}
}
