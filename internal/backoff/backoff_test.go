package backoff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eventlog/eventlog/internal/backoff"
)

// Delays stay in the upper half of steps that double from Min up to Max, and
// are spread (jitter); Reset starts over.
func TestBackoff(t *testing.T) {
	b := backoff.New(10*time.Millisecond, 80*time.Millisecond)
	for round := range 2 {
		for i, step := range []time.Duration{10, 20, 40, 80, 80, 80} {
			step *= time.Millisecond
			if d := b.Next(); d < step/2 || d > step {
				t.Fatalf("round %d, delay %d = %s, want within [%s, %s]", round, i, d, step/2, step)
			}
		}
		b.Reset()
	}
	seen := map[time.Duration]bool{}
	for range 100 {
		b.Reset()
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("100 first delays took %d values: no jitter", len(seen))
	}
	if d := backoff.New(0, 0).Next(); d < 0 || d > time.Nanosecond {
		t.Fatalf("a zero back-off waits %s", d)
	}
	if d := backoff.New(time.Second, time.Millisecond).Next(); d > time.Second || d < time.Second/2 {
		t.Fatalf("Max below Min: %s", d)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := backoff.New(time.Hour, time.Hour).Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context = %v", err)
	}
	if err := backoff.Sleep(context.Background(), time.Microsecond); err != nil {
		t.Fatal(err)
	}
}
