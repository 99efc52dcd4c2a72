package cli

import (
	"fmt"
	"time"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/projection"
)

// parkFlags set when a projection takes an event as poison and parks its
// sequence: after how many transient failures, and how long it waits between.
type parkFlags struct {
	retries int
	backoff time.Duration
}

func (f *parkFlags) register(fs *config.FlagSet) {
	fs.IntVar(&f.retries, "transient-retries", projection.DefaultTransientRetries,
		"times a batch is tried again, with back-off, when a policy fails an event with a transient error, before the event's sequence is parked (-1: never park on a transient error, retry for ever)")
	fs.DurationVar(&f.backoff, "retry-backoff", projection.DefaultRetryBackoff,
		"wait before the first of those tries, doubled for each next one up to 5s")
}

func (f *parkFlags) check() error {
	if f.retries == 0 || f.retries < -1 || f.retries > 100 {
		return fmt.Errorf("-transient-retries must be -1 (never park on a transient error) or from 1 to 100, got %d", f.retries)
	}
	if f.backoff <= 0 || f.backoff > time.Minute {
		return fmt.Errorf("-retry-backoff must be above 0 and at most 1m, got %s", f.backoff)
	}
	return nil
}
