package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The checkpoint topic of a transactional relay holds, in the transaction of
// every batch, one record keyed by the relay's transactional id whose value is
// the last notification id of the batch, in decimal. What a read_committed
// reader finds last for the key is what the relay has published: records and
// checkpoint commit or abort together. It is what Kafka Connect's exactly-once
// source connectors do with their offsets topic (KIP-618).

// checkpointRecord is the checkpoint record of id at notification id last.
func checkpointRecord(topic, id string, last int64) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(id), Value: strconv.AppendInt(nil, last, 10)}
}

// parseCheckpoint decodes a checkpoint record's value.
func parseCheckpoint(v []byte) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("checkpoint record value %q is not a notification id", v)
	}
	return n, nil
}

// ensureCheckpointTopic creates the checkpoint topic with Admin, if it does
// not exist: one partition, compacted.
func (r *Relay) ensureCheckpointTopic(ctx context.Context) error {
	adm := r.cfg.Admin
	if adm == nil {
		return nil
	}
	compact := "compact"
	topic := r.cfg.CheckpointTopic
	resps, err := adm.CreateTopics(ctx, 1, r.cfg.TopicReplicationFactor, map[string]*string{"cleanup.policy": &compact}, topic)
	if err != nil {
		return fmt.Errorf("create checkpoint topic %s: %w", topic, err)
	}
	resp, ok := resps[topic]
	switch {
	case !ok:
		return fmt.Errorf("create checkpoint topic %s: no answer from the broker", topic)
	case resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists):
		return fmt.Errorf("create checkpoint topic %s: %w", topic, resp.Err)
	}
	return nil
}

// checkpointReader reads a relay's last committed checkpoint back from the
// checkpoint topic, with raw read_committed fetches: it must know when it has
// read every committed record up to a given offset, and a read_committed
// consumer does not say where it is when the records it skips (aborted ones)
// come last.
type checkpointReader struct {
	cl    *kgo.Client
	topic string
	key   string
	// settle bounds the wait for the transactions open on the topic when
	// the read starts; warn is how often the wait is logged.
	settle, warn time.Duration
	logWait      func(partition int32, lso, hwm int64, waited time.Duration)
}

// errNoCheckpointTopic reports a checkpoint topic that does not exist.
var errNoCheckpointTopic = errors.New("kafka: relay: the checkpoint topic does not exist")

// read returns the greatest checkpoint committed for the key, and whether
// there is one.
//
// Every transaction whose records are on the topic when read starts must have
// ended before its records can be read: a committed checkpoint that follows
// the first record of a transaction still open is not yet visible to a
// read_committed reader. So read first waits until each partition's last
// stable offset has reached the high watermark it had at the start (the
// transactions of the caller's own transactional id have ended: its producer
// was initialized, which aborts them). A transaction that never ends (a
// hanging transaction, see the package doc) makes read fail after settle.
func (c *checkpointReader) read(ctx context.Context) (int64, bool, error) {
	adm := kadm.NewClient(c.cl)
	md, err := adm.Metadata(ctx, c.topic)
	if err != nil {
		return 0, false, fmt.Errorf("metadata of %s: %w", c.topic, err)
	}
	td, ok := md.Topics[c.topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return 0, false, fmt.Errorf("%w: create %s (one partition, cleanup.policy=compact) or give the relay an admin client", errNoCheckpointTopic, c.topic)
	}
	if td.Err != nil {
		return 0, false, fmt.Errorf("metadata of %s: %w", c.topic, td.Err)
	}
	hwms, err := listOffsets(ctx, adm.ListEndOffsets, c.topic)
	if err != nil {
		return 0, false, err
	}
	starts, err := listOffsets(ctx, adm.ListStartOffsets, c.topic)
	if err != nil {
		return 0, false, err
	}
	var (
		best  int64
		found bool
	)
	for p, pd := range td.Partitions {
		hwm := hwms[p]
		if hwm <= starts[p] {
			continue
		}
		if err := c.awaitStable(ctx, adm, p, hwm); err != nil {
			return 0, false, err
		}
		// Search back from the end in growing windows: the latest
		// checkpoint of the key is usually among the last records.
		end, window := hwm, int64(256)
		for end > starts[p] {
			from := max(starts[p], end-window)
			v, ok, err := c.scan(ctx, pd.Leader, [16]byte(td.ID), p, from, end)
			if err != nil {
				return 0, false, err
			}
			if ok {
				if !found || v > best {
					best, found = v, true
				}
				break
			}
			end, window = from, window*4
		}
	}
	return best, found, nil
}

// listOffsets returns the offsets list gives for each partition of topic.
func listOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (map[int32]int64, error) {
	lo, err := list(ctx, topic)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := make(map[int32]int64)
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// awaitStable waits until partition p's last stable offset reaches hwm.
func (c *checkpointReader) awaitStable(ctx context.Context, adm *kadm.Client, p int32, hwm int64) error {
	start := time.Now()
	lastLog := start
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		lsos, err := listOffsets(ctx, adm.ListCommittedOffsets, c.topic)
		if err != nil {
			return err
		}
		if lsos[p] >= hwm {
			return nil
		}
		waited := time.Since(start)
		if waited > c.settle {
			return fmt.Errorf("partition %d of %s has had a transaction open since offset %d for %s (high watermark %d): "+
				"a hanging transaction? (kafka-transactions.sh find-hanging, then abort)", p, c.topic, lsos[p], waited.Round(time.Second), hwm)
		}
		if c.logWait != nil && time.Since(lastLog) >= c.warn {
			lastLog = time.Now()
			c.logWait(p, lsos[p], hwm, waited)
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// scan reads partition p from offset from up to end, read_committed, and
// returns the value of the last record of the key.
func (c *checkpointReader) scan(ctx context.Context, leader int32, topicID [16]byte, p int32, from, end int64) (int64, bool, error) {
	var (
		last  int64
		found bool
	)
	for off := from; off < end; {
		fp, next, err := fetchCommitted(ctx, c.cl, leader, c.topic, topicID, p, off)
		if err != nil {
			return 0, false, err
		}
		for _, rec := range fp.Records {
			if string(rec.Key) != c.key {
				continue
			}
			v, err := parseCheckpoint(rec.Value)
			if err != nil {
				return 0, false, fmt.Errorf("%s/%d at %d: %w", c.topic, p, rec.Offset, err)
			}
			last, found = v, true
		}
		if next <= off {
			return 0, false, fmt.Errorf("fetch %s/%d at %d: no progress below offset %d", c.topic, p, off, end)
		}
		off = next
	}
	return last, found, nil
}

// fetchCommitted fetches partition p of topic from offset off, read_committed,
// from its leader, without a fetch session. It returns the records and the
// offset after the last one it processed, records of aborted transactions and
// transaction markers included.
func fetchCommitted(ctx context.Context, cl *kgo.Client, leader int32, topic string, topicID [16]byte, p int32, off int64) (kgo.FetchPartition, int64, error) {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = 100
	req.MinBytes = 1
	req.MaxBytes = 4 << 20
	req.IsolationLevel = 1 // read_committed
	req.SessionEpoch = -1  // no fetch session
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, topicID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = p
	rp.FetchOffset = off
	rp.PartitionMaxBytes = 4 << 20
	rp.CurrentLeaderEpoch = -1
	rp.LogStartOffset = -1
	rp.LastFetchedEpoch = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err == nil && (len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1) {
		err = fmt.Errorf("the broker answered for %d topics", len(resp.Topics))
	}
	if err != nil {
		return kgo.FetchPartition{}, off, fmt.Errorf("fetch %s/%d at %d: %w", topic, p, off, err)
	}
	fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
		Offset: off, IsolationLevel: kgo.ReadCommitted(), Topic: topic, Partition: p,
	}, &resp.Topics[0].Partitions[0], kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		return kgo.FetchPartition{}, off, fmt.Errorf("fetch %s/%d at %d: %w", topic, p, off, fp.Err)
	}
	return fp, next, nil
}

// CaughtUp reports whether partition partition of topic holds no record that
// a read_committed consumer gets at or after offset from and before end: a
// consumer whose last record is at from-1 has then consumed everything below
// end. Transaction markers, and the records of aborted transactions, take
// offsets too, so the partitions a transactional producer (the relay, in
// transactional mode) writes end with an offset that is no record: the end
// offset minus the next offset to consume overstates the lag, by one for a
// caught-up consumer. Lag measures use CaughtUp when that difference is not 0.
// It reads at most a few fetches from from; a partition with more than that
// of aborted records after from counts as not caught up.
func CaughtUp(ctx context.Context, cl *kgo.Client, topic string, partition int32, from, end int64) (bool, error) {
	if from >= end {
		return true, nil
	}
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return false, fmt.Errorf("kafka: metadata of %s: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return false, fmt.Errorf("kafka: metadata of %s: %v", topic, td.Err)
	}
	pd, ok := td.Partitions[partition]
	if !ok || pd.Err != nil {
		return false, fmt.Errorf("kafka: metadata of %s/%d: %v", topic, partition, pd.Err)
	}
	for off, fetches := from, 0; off < end && fetches < 8; fetches++ {
		fp, next, err := fetchCommitted(ctx, cl, pd.Leader, topic, [16]byte(td.ID), partition, off)
		if err != nil {
			return false, fmt.Errorf("kafka: %w", err)
		}
		for _, r := range fp.Records {
			if r.Offset < end {
				return false, nil
			}
		}
		if next <= off {
			// Nothing more to read below the last stable offset: an
			// open transaction's records, not yet records.
			return true, nil
		}
		off = next
		if off >= end {
			return true, nil
		}
	}
	return false, nil
}
