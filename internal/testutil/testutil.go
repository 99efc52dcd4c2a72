// Package testutil holds the helpers every test suite of the module shares:
// waiting for a condition (Eventually) rather than sleeping and then
// asserting, and the seed of randomized tests (Seed), logged so that a failure
// can be replayed with EVENTLOG_TEST_SEED. It imports only the standard
// library, so that any package's tests can use it.
package testutil

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// SeedEnv names the environment variable that fixes the seed of randomized
// tests (a decimal uint64), to replay a failure.
const SeedEnv = "EVENTLOG_TEST_SEED"

// Eventually calls cond until it returns nil, and fails t with cond's last
// error if timeout passes first. cond returns an error describing what it is
// still waiting for ("3 of 10 events relayed"), so that a timeout says where
// things stood. It polls at once, then every millisecond, backing off to
// every 50 ms. Call it from the test's goroutine, as t.Fatal requires.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not the case after %s: %v", timeout, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, 50*time.Millisecond)
	}
}

// Seed returns the seed of a randomized test, and logs it: the value of
// EVENTLOG_TEST_SEED if it is set (t fails if it does not parse), else a new
// random one. Rerun a failed test with the seed it logged to draw the same
// choices.
func Seed(t testing.TB) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv(SeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: want a decimal uint64: %v", SeedEnv, s, err)
		}
	}
	t.Logf("random seed %d (replay: %s=%d go test -run '^%s$')", seed, SeedEnv, seed, t.Name())
	return seed
}

// Rand returns a generator seeded with Seed(t) and stream: tests that need
// several independent generators give each its own stream.
func Rand(t testing.TB, stream uint64) *rand.Rand {
	t.Helper()
	return rand.New(rand.NewPCG(Seed(t), stream))
}
