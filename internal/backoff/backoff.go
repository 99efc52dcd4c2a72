// Package backoff is the one capped, jittered exponential back-off of the
// module, for every loop that retries after a failure: SQLite's busy
// retries, PostgreSQL's LISTEN reconnects (and, in time, the Kafka consumer
// and relay).
//
// Each delay is drawn at random from the upper half of the current step,
// [step/2, step], so that processes that failed together do not retry
// together; the step starts at Min and doubles up to Max. A Backoff is not
// safe for concurrent use: each retry loop owns one.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// A Backoff yields the delays of one retry loop. Build it with New.
type Backoff struct {
	min, max time.Duration
	step     time.Duration // the next delay's upper bound
}

// New returns a back-off whose steps start at first and double up to limit.
// A limit below first is first.
func New(first, limit time.Duration) *Backoff {
	first = max(first, time.Nanosecond) // a zero step would never grow
	b := &Backoff{min: first, max: max(limit, first)}
	b.Reset()
	return b
}

// Next returns the next delay, in [step/2, step], and doubles the step, up
// to the maximum.
func (b *Backoff) Next() time.Duration {
	d := b.step
	b.step = min(2*b.step, b.max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Reset starts again from the first step: call it after a success.
func (b *Backoff) Reset() { b.step = b.min }

// Wait sleeps for the next delay, or until ctx ends: then it returns ctx's
// error.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Next())
}

// Sleep waits for d, or until ctx ends: then it returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
