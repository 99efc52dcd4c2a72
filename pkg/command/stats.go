package command

import (
	"sync/atomic"
	"time"

	"github.com/eventlog/eventlog/pkg/wire"
)

// BatchStats describes one HandleBatch call. WriterConfig.OnBatch receives it, for
// metrics that need a distribution (batch sizes, append latency).
type BatchStats struct {
	Records int // records handed in
	Skipped int // records at or below the stored tracking, or repeated in the batch
	// Results by status, counting each command's first result only.
	Accepted, Rejected, Conflict, Invalid int
	Duplicates                            int // results published again for command ids already answered
	DeadLetters                           int // records sent to the dead-letter topic
	Events                                int // entity events stored
	Attempts                              int // transactions tried: 1 plus the retries (0 if none was needed)
	// Append is the time spent in the transaction that committed (or in the last
	// one tried, if none did).
	Append time.Duration
	// Read is the time spent reading what the batch needs before its
	// transaction (trackings, result look-ups, aggregates), and Decide the time
	// spent decoding records and deciding their outcomes, over every attempt.
	Read, Decide time.Duration
	// Duration is the whole call.
	Duration time.Duration
	Err      error // what HandleBatch returned
}

// Count returns the number of first results with status s.
func (b BatchStats) Count(s wire.Status) int {
	switch s {
	case wire.StatusAccepted:
		return b.Accepted
	case wire.StatusRejected:
		return b.Rejected
	case wire.StatusConflict:
		return b.Conflict
	case wire.StatusInvalid:
		return b.Invalid
	}
	return 0
}

func (b *BatchStats) add(s wire.Status) {
	switch s {
	case wire.StatusAccepted:
		b.Accepted++
	case wire.StatusRejected:
		b.Rejected++
	case wire.StatusConflict:
		b.Conflict++
	case wire.StatusInvalid:
		b.Invalid++
	}
}

// Stats are a writer's totals since it was created. Counts of records, results,
// events and dead letters include committed batches only.
type Stats struct {
	Batches  int64 // HandleBatch calls that returned nil
	Failures int64 // HandleBatch calls that returned an error
	Records  int64
	Skipped  int64
	Accepted int64
	Rejected int64
	Conflict int64
	Invalid  int64
	// Duplicates counts results published again for command ids already answered.
	Duplicates  int64
	DeadLetters int64
	Events      int64
	// Retries counts transactions tried again: after a store conflict, or
	// after the tracking the writer remembered turned out to be behind.
	Retries int64
	// AppendTime is the total time spent in committed transactions; AppendTime
	// divided by Batches is the mean append latency.
	AppendTime time.Duration
}

// Add adds o's counters to s (the writers of a sharded store's shards, say).
func (s *Stats) Add(o Stats) {
	s.Batches += o.Batches
	s.Failures += o.Failures
	s.Records += o.Records
	s.Skipped += o.Skipped
	s.Accepted += o.Accepted
	s.Rejected += o.Rejected
	s.Conflict += o.Conflict
	s.Invalid += o.Invalid
	s.Duplicates += o.Duplicates
	s.DeadLetters += o.DeadLetters
	s.Events += o.Events
	s.Retries += o.Retries
	s.AppendTime += o.AppendTime
}

// counters are Stats, updated atomically.
type counters struct {
	batches, failures, records, skipped      atomic.Int64
	accepted, rejected, conflict, invalid    atomic.Int64
	duplicates, deadLetters, events, retries atomic.Int64
	appendNanos                              atomic.Int64
}

func (c *counters) record(b BatchStats) {
	if b.Attempts > 1 {
		c.retries.Add(int64(b.Attempts - 1))
	}
	if b.Err != nil {
		c.failures.Add(1)
		return
	}
	c.batches.Add(1)
	c.records.Add(int64(b.Records))
	c.skipped.Add(int64(b.Skipped))
	c.accepted.Add(int64(b.Accepted))
	c.rejected.Add(int64(b.Rejected))
	c.conflict.Add(int64(b.Conflict))
	c.invalid.Add(int64(b.Invalid))
	c.duplicates.Add(int64(b.Duplicates))
	c.deadLetters.Add(int64(b.DeadLetters))
	c.events.Add(int64(b.Events))
	c.appendNanos.Add(int64(b.Append))
}

func (c *counters) snapshot() Stats {
	return Stats{
		Batches:     c.batches.Load(),
		Failures:    c.failures.Load(),
		Records:     c.records.Load(),
		Skipped:     c.skipped.Load(),
		Accepted:    c.accepted.Load(),
		Rejected:    c.rejected.Load(),
		Conflict:    c.conflict.Load(),
		Invalid:     c.invalid.Load(),
		Duplicates:  c.duplicates.Load(),
		DeadLetters: c.deadLetters.Load(),
		Events:      c.events.Load(),
		Retries:     c.retries.Load(),
		AppendTime:  time.Duration(c.appendNanos.Load()),
	}
}
