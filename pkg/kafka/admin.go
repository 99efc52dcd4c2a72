package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

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
