package cli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// -max-command-bytes: a command within it applies; a larger one goes to the
// dead letters, unchanged, with an error that states the limit; a command with
// too many attributes is refused with a result that states the limit.
func TestWriterCommandLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a writer")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	broker := cluster.ListenAddrs()[0]
	_, _, _ = startWriter(t, nil, "-kafka-brokers", broker, "-max-command-bytes", "1024")

	if out, err := runEnv(t, nil, 30*time.Second, "send", "--kafka-brokers", broker, "--attr", "small=yes"); err != nil || !strings.HasPrefix(out, "accepted") {
		t.Fatalf("a small command: %v\n%s", err, out)
	}
	big := strings.Repeat("x", 1500)
	if out, err := runEnv(t, nil, 30*time.Second, "send", "--kafka-brokers", broker, "--attr", "big="+big, "--wait=false"); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics("eventlog.dead-letters"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var dead *kgo.Record
	for dead == nil && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { dead = r })
	}
	if dead == nil {
		t.Fatal("no dead letter for the command over -max-command-bytes")
	}
	var reason string
	for _, h := range dead.Headers {
		if h.Key == "error" {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "more than the limit of 1024") || !strings.Contains(string(dead.Value), big) {
		t.Fatalf("dead letter: error %q, value of %d bytes", reason, len(dead.Value))
	}

	args := []string{"send", "--kafka-brokers", broker}
	for i := range 1001 {
		args = append(args, "--attr", fmt.Sprintf("a%d=%d", i, i))
	}
	// 1001 attributes fit in a 1 MiB command, not in 1024 bytes: use a
	// second writer group with the default size limit.
	_, _, _ = startWriter(t, nil, "-kafka-brokers", broker, "-topic-prefix", "wide", "-group", "wide")
	out, err := runEnv(t, nil, 30*time.Second, append(args, "-topic-prefix", "wide")...)
	if err == nil || !strings.Contains(out, "1001 attributes, more than the limit of 1000") {
		t.Fatalf("a command with 1001 attributes: %v\n%s", err, out)
	}
	if out, err := runEnv(t, nil, 10*time.Second, "writer", "-max-command-bytes", "10"); err == nil || !strings.Contains(err.Error(), "-max-command-bytes must be from 256") {
		t.Fatalf("-max-command-bytes 10: %v\n%s", err, out)
	}
}
