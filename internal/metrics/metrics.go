// Package metrics exposes eventlog's components to Prometheus. Each function
// registers collectors that read a component's concurrent-safe stats when
// scraped, so the hot paths only bump their own counters.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/wire"
)

// New returns a registry with the Go runtime and process collectors.
func New() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves r.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{Registry: r})
}

func counter(r prometheus.Registerer, name, help string, labels prometheus.Labels, f func() float64) {
	r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f))
}

func gauge(r prometheus.Registerer, name, help string, labels prometheus.Labels, f func() float64) {
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f))
}

// Writer registers the writer's metrics and returns the OnBatch hook that feeds
// its histograms.
func Writer(r prometheus.Registerer, w func() command.Stats) func(command.BatchStats) {
	for _, s := range []struct {
		status string
		get    func(command.Stats) int64
	}{
		{"accepted", func(s command.Stats) int64 { return s.Accepted }},
		{"rejected", func(s command.Stats) int64 { return s.Rejected }},
		{"conflict", func(s command.Stats) int64 { return s.Conflict }},
		{"invalid", func(s command.Stats) int64 { return s.Invalid }},
		{"duplicate", func(s command.Stats) int64 { return s.Duplicates }},
		{"dead_letter", func(s command.Stats) int64 { return s.DeadLetters }},
	} {
		get := s.get
		counter(r, "eventlog_writer_commands_total", "Commands handled, by outcome.", prometheus.Labels{"status": s.status},
			func() float64 { return float64(get(w())) })
	}
	counter(r, "eventlog_writer_events_total", "Entity events stored.", nil, func() float64 { return float64(w().Events) })
	counter(r, "eventlog_writer_batches_total", "Batches committed.", nil, func() float64 { return float64(w().Batches) })
	counter(r, "eventlog_writer_batch_failures_total", "Batches that failed and will be retried.", nil, func() float64 { return float64(w().Failures) })
	counter(r, "eventlog_writer_conflict_retries_total", "Batches retried after a store conflict.", nil, func() float64 { return float64(w().Retries) })
	size := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "eventlog_writer_batch_size", Help: "Records per batch (group commit).",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8),
	})
	appendLatency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "eventlog_writer_append_seconds", Help: "Time in the batch's store transaction.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	r.MustRegister(size, appendLatency)
	return func(b command.BatchStats) {
		if b.Err != nil {
			return
		}
		size.Observe(float64(b.Records))
		appendLatency.Observe(b.Append.Seconds())
	}
}

// Relay registers a relay's metrics, with labels (nil for none): a sharded
// store's relays, one per shard, each with its "shard" label.
func Relay(r prometheus.Registerer, labels prometheus.Labels, stats func() kafka.RelayStats) {
	counter(r, "eventlog_relay_published_total", "Records the broker acknowledged.", labels, func() float64 { return float64(stats().Published) })
	counter(r, "eventlog_relay_failures_total", "Failed reads, publishes and checkpoints.", labels, func() float64 { return float64(stats().Failures) })
	counter(r, "eventlog_relay_dead_lettered_total", "Items the relay could not route.", labels, func() float64 { return float64(stats().DeadLettered) })
	counter(r, "eventlog_relay_transactions_total", "Kafka transactions the relay committed (transactional mode).", labels, func() float64 { return float64(stats().Transactions) })
	counter(r, "eventlog_relay_aborted_total", "Kafka transactions the relay aborted or could not commit.", labels, func() float64 { return float64(stats().Aborted) })
	counter(r, "eventlog_relay_fenced_total", "Times another relay of the store fenced this one's transactional id.", labels, func() float64 { return float64(stats().Fenced) })
	gauge(r, "eventlog_relay_lag", "Notifications stored but not yet checkpointed as published.", labels, func() float64 { return float64(stats().Lag) })
	gauge(r, "eventlog_relay_checkpoint", "The relay's checkpoint (a notification id).", labels, func() float64 { return float64(stats().Checkpoint) })
	gauge(r, "eventlog_relay_active", "1 if this relay holds the lock and publishes.", labels, func() float64 {
		if stats().Active {
			return 1
		}
		return 0
	})
}

// Consumer registers a consumer's metrics, labelled with its role ("writer",
// "projector") and name (its tracking name).
func Consumer(r prometheus.Registerer, role, name string, stats func() kafka.ConsumerStats) {
	l := prometheus.Labels{"role": role, "name": name}
	counter(r, "eventlog_consumer_batches_total", "Batches handled.", l, func() float64 { return float64(stats().Batches) })
	counter(r, "eventlog_consumer_records_total", "Records handled.", l, func() float64 { return float64(stats().Records) })
	counter(r, "eventlog_consumer_retries_total", "Failed batch attempts retried.", l, func() float64 { return float64(stats().Retries) })
	counter(r, "eventlog_consumer_tracking_conflicts_total", "Tracking conflicts (zombie or duplicate) that made the consumer seek.", l, func() float64 { return float64(stats().Conflicts) })
	counter(r, "eventlog_consumer_lost_commits_total", "Partitions whose stored tracking went back behind what the consumer handled (commits a crash or failover took back), fetched again.", l, func() float64 { return float64(stats().LostCommits) })
}

// Since returns seconds since t, or 0 for the zero time.
func Since(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return time.Since(t).Seconds()
}

// Projection registers a projection runner's metrics. The function it
// returns observes a committed batch: the latency of each record, from its
// timestamp (when its event was made) to the commit at.
func Projection(r prometheus.Registerer, name string, stats func() projection.Stats) func(records []wire.Record, at time.Time) {
	l := prometheus.Labels{"projection": name}
	counter(r, "eventlog_projection_applied_total", "Events applied to the policy.", l, func() float64 { return float64(stats().Applied) })
	counter(r, "eventlog_projection_duplicates_total", "Events skipped by the position guard (already applied).", l, func() float64 { return float64(stats().Duplicates) })
	counter(r, "eventlog_projection_repaired_total", "Events read from the store to fill gaps.", l, func() float64 { return float64(stats().Repaired) })
	counter(r, "eventlog_projection_dead_letters_total", "Poison events dead-lettered.", l, func() float64 { return float64(stats().DeadLetters) })
	counter(r, "eventlog_projection_batches_total", "Batches committed.", l, func() float64 { return float64(stats().Batches) })
	counter(r, "eventlog_projection_parks_total", "Sequences parked: a poison event and the later events of its entity wait.", l, func() float64 { return float64(stats().Parked) })
	counter(r, "eventlog_projection_parked_events_total", "Events parked (poison ones and those that followed).", l, func() float64 { return float64(stats().ParkedEvents) })
	counter(r, "eventlog_projection_retries_total", "Parked sequences retried and applied.", l, func() float64 { return float64(stats().Retried) })
	counter(r, "eventlog_projection_retried_events_total", "Events applied by retries of parked sequences.", l, func() float64 { return float64(stats().RetriedEvents) })
	counter(r, "eventlog_projection_retry_failures_total", "Retries of parked sequences that failed again.", l, func() float64 { return float64(stats().RetryFailures) })
	counter(r, "eventlog_projection_skips_total", "Parked sequences skipped by an operator.", l, func() float64 { return float64(stats().Skipped) })
	counter(r, "eventlog_projection_skipped_events_total", "Parked events skipped by an operator, never applied.", l, func() float64 { return float64(stats().SkippedEvents) })
	gauge(r, "eventlog_projection_parked_sequences", "Sequences parked now (counted in the store every few seconds).", l, func() float64 { return float64(stats().ParkedNow) })
	gauge(r, "eventlog_projection_parked_events", "Events parked now (counted in the store every few seconds).", l, func() float64 { return float64(stats().ParkedEventsNow) })
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "eventlog_projection_event_latency_seconds", Help: "From an event's timestamp to the commit of its batch.",
		ConstLabels: l, Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	r.MustRegister(latency)
	return func(records []wire.Record, at time.Time) {
		for i := range records {
			if ts := records[i].Timestamp; !ts.IsZero() {
				latency.Observe(at.Sub(ts).Seconds())
			}
		}
	}
}

// PartitionLag is one projection's lag on one partition.
type PartitionLag struct {
	Projection, Topic string
	Partition         int32
	Lag               int64
	Seconds           float64
}

type lagCollector struct {
	lag              func() []PartitionLag
	offsets, seconds *prometheus.Desc
}

// Lag registers per-partition lag gauges, in records and in seconds.
func Lag(r prometheus.Registerer, lag func() []PartitionLag) {
	labels := []string{"projection", "topic", "partition"}
	r.MustRegister(&lagCollector{
		lag:     lag,
		offsets: prometheus.NewDesc("eventlog_projection_lag_records", "Records on the partition not yet applied.", labels, nil),
		seconds: prometheus.NewDesc("eventlog_projection_lag_seconds", "How long the partition has had lag without progress.", labels, nil),
	})
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.offsets; ch <- c.seconds }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.lag() {
		p := strconv.Itoa(int(l.Partition))
		ch <- prometheus.MustNewConstMetric(c.offsets, prometheus.GaugeValue, float64(l.Lag), l.Projection, l.Topic, p)
		ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.GaugeValue, l.Seconds, l.Projection, l.Topic, p)
	}
}
