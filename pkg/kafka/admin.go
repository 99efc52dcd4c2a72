package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventlog/eventlog/pkg/wire"
)

// MaxTopicNameLen is the longest topic name Kafka accepts.
const MaxTopicNameLen = 249

// ValidTopicName reports whether Kafka accepts name as a topic name: 1 to 249
// of ASCII letters, digits, '.', '_' and '-', and neither "." nor "..".
func ValidTopicName(name string) bool {
	if name == "" || len(name) > MaxTopicNameLen || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// TopicNames returns the topics of t that eventlog uses: commands, command
// results, dead letters and the events topic of each entity type, in that
// order and without duplicates.
func TopicNames(t wire.Topics, entities ...string) []string {
	names := []string{t.Commands(), t.Results(), t.DeadLetters()}
	for _, e := range entities {
		names = append(names, t.Events(e))
	}
	return uniq(names)
}

func uniq(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// EnsureTopics creates the topics of names that do not exist yet, each with
// partitions partitions and replicationFactor replicas (-1 for either takes the
// broker's default). Topics that exist already are left as they are, whatever
// their partition count. It returns the first error other than
// TOPIC_ALREADY_EXISTS, wrapped with the topic's name.
func EnsureTopics(ctx context.Context, adm *kadm.Client, names []string, partitions int32, replicationFactor int16) error {
	names = uniq(names)
	for _, n := range names {
		if !ValidTopicName(n) {
			return fmt.Errorf("kafka: invalid topic name %q", n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	resps, err := adm.CreateTopics(ctx, partitions, replicationFactor, nil, names...)
	if err != nil {
		return fmt.Errorf("kafka: create topics: %w", err)
	}
	for _, n := range names {
		r, ok := resps[n]
		if !ok {
			return fmt.Errorf("kafka: create topic %s: no answer from the broker", n)
		}
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			if r.ErrMessage != "" {
				return fmt.Errorf("kafka: create topic %s: %w (%s)", n, r.Err, r.ErrMessage)
			}
			return fmt.Errorf("kafka: create topic %s: %w", n, r.Err)
		}
	}
	return nil
}

// TopicPartitions returns the partition count of topic as the brokers report
// it.
func TopicPartitions(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: describe topic %s: %w", topic, err)
	}
	d, ok := details[topic]
	switch {
	case !ok:
		return 0, fmt.Errorf("kafka: describe topic %s: no answer from the broker", topic)
	case d.Err != nil:
		return 0, fmt.Errorf("kafka: describe topic %s: %w", topic, d.Err)
	}
	return len(d.Partitions), nil
}

// TopicLimits holds the largest record batch each topic takes: its
// max.message.bytes as the brokers report it (Learn), or a default for topics
// not learned. A producer client built with its ClientOption bounds each
// topic's batches by it, and a Relay given it (RelayConfig.TopicLimits)
// learns every destination topic's limit before its first record to the topic
// and routes a record larger than that to the dead letters without its value.
//
// franz-go reads a topic's limit once, when the client first produces to one
// of its partitions, so a limit must be learned before that, and a topic whose
// max.message.bytes changes later keeps the old limit until the client is
// built again. It is safe for concurrent use.
type TopicLimits struct {
	def int32

	mu      sync.RWMutex
	learned map[string]int32
}

// Bounds franz-go accepts for a batch limit.
const (
	minBatchBytes = 512
	maxBatchBytes = 1 << 30
)

// NewTopicLimits returns limits that are def for every topic until learned.
// def is clamped to franz-go's bounds (512 bytes to 1 GiB).
func NewTopicLimits(def int32) *TopicLimits {
	return &TopicLimits{def: clampBatchBytes(int64(def)), learned: make(map[string]int32)}
}

func clampBatchBytes(n int64) int32 {
	return int32(min(max(n, minBatchBytes), maxBatchBytes))
}

// BatchMaxBytes returns the limit of topic: the learned one, or the default.
func (l *TopicLimits) BatchMaxBytes(topic string) int32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n, ok := l.learned[topic]; ok {
		return n
	}
	return l.def
}

// Learned reports whether topic's limit has been learned.
func (l *TopicLimits) Learned(topic string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.learned[topic]
	return ok
}

// Set records n as the limit of topic (clamped to franz-go's bounds).
func (l *TopicLimits) Set(topic string, n int64) {
	l.mu.Lock()
	l.learned[topic] = clampBatchBytes(n)
	l.mu.Unlock()
}

// ClientOption returns the producer option that bounds a client's batches by
// these limits: kgo.ProducerBatchMaxBytesFn(l.BatchMaxBytes). Pass it after
// RelayClientOptions, whose static limit it replaces.
func (l *TopicLimits) ClientOption() kgo.Opt {
	return kgo.ProducerBatchMaxBytesFn(l.BatchMaxBytes)
}

// Learn asks the brokers for the max.message.bytes of each topic not learned
// yet and records it. A topic the client is not authorized to describe keeps
// the default and counts as learned; any other error is returned, and the
// topics it concerns stay unlearned.
func (l *TopicLimits) Learn(ctx context.Context, adm *kadm.Client, topics ...string) error {
	var todo []string
	for _, t := range uniq(topics) {
		if !l.Learned(t) {
			todo = append(todo, t)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, todo...)
	if err != nil && len(rcs) == 0 {
		return fmt.Errorf("kafka: describe configs of %v: %w", todo, err)
	}
	var errs []error
	if err != nil { // some brokers answered
		errs = append(errs, fmt.Errorf("kafka: describe configs: %w", err))
	}
	for _, t := range todo {
		rc, err := rcs.On(t, nil)
		if err == nil {
			err = rc.Err
		}
		switch {
		case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			l.Set(t, int64(l.def))
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("kafka: describe configs of %s: %w", t, err))
			continue
		}
		n, ok := maxMessageBytes(rc.Configs)
		if !ok {
			n = int64(l.def)
		}
		l.Set(t, n)
	}
	return errors.Join(errs...)
}

// maxMessageBytes returns the record batch limit a topic's description says:
// its own max.message.bytes override, else the broker's message.max.bytes if
// the description lists it (kfake does, where Kafka folds it into the
// topic's value), else the topic's max.message.bytes as reported.
func maxMessageBytes(cfgs []kadm.Config) (int64, bool) {
	value := func(key string, topicOnly bool) (int64, bool) {
		for _, c := range cfgs {
			if c.Key != key || c.Value == nil || (topicOnly && c.Source != kmsg.ConfigSourceDynamicTopicConfig) {
				continue
			}
			n, err := strconv.ParseInt(*c.Value, 10, 64)
			return n, err == nil && n > 0
		}
		return 0, false
	}
	if n, ok := value("max.message.bytes", true); ok {
		return n, true
	}
	if n, ok := value("message.max.bytes", false); ok {
		return n, true
	}
	return value("max.message.bytes", false)
}
