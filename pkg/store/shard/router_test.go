package shard_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/store/shard"
)

// TestPartitionMatchesFranzGo checks the partition of many keys against the
// choice of franz-go's default (Kafka-compatible) key partitioner.
func TestPartitionMatchesFranzGo(t *testing.T) {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("eventlog.commands")
	keys := [][]byte{{}, []byte("a"), []byte("ab"), []byte("abc"), []byte("abcd"), []byte("abcde"), []byte("\xff\xfe\x80")}
	for range 2000 {
		keys = append(keys, []byte(uuid.New().String()))
	}
	for _, n := range []int{1, 2, 3, 4, 6, 7, 12, 64, 1000} {
		for _, k := range keys {
			want := p.Partition(&kgo.Record{Key: k}, n)
			if got := shard.Partition(k, int32(n)); int(got) != want {
				t.Fatalf("partition of %q among %d: got %d, franz-go %d", k, n, got, want)
			}
		}
	}
	// Router.Partition keys by the id's canonical text.
	r, err := shard.NewRouter(12, 3)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		id := uuid.New()
		if got, want := r.Partition(id), p.Partition(&kgo.Record{Key: []byte(id.String())}, 12); int(got) != want {
			t.Fatalf("router partition of %s: got %d, franz-go %d", id, got, want)
		}
	}
}

// TestShardStableWhenTopicGrows checks that an entity keeps its shard when the
// partition count grows to a multiple.
func TestShardStableWhenTopicGrows(t *testing.T) {
	for _, shards := range []int{1, 2, 3} {
		base, _ := shard.NewRouter(shards*2, shards)
		for _, k := range []int{2, 3, 8} {
			grown, err := shard.NewRouter(shards*2*k, shards)
			if err != nil {
				t.Fatal(err)
			}
			for range 500 {
				id := uuid.New()
				if a, b, c := base.Shard(id), grown.Shard(id), shard.ShardOf(id, shards); a != b || a != c {
					t.Fatalf("%s: shard %d with %d partitions, %d with %d, ShardOf %d", id, a, base.Partitions(), b, grown.Partitions(), c)
				}
				if p := grown.Partition(id); grown.ShardOfPartition(p) != grown.Shard(id) {
					t.Fatalf("%s: partition %d is not owned by its shard", id, p)
				}
			}
		}
	}
}

func TestNewRouterRefuses(t *testing.T) {
	for _, c := range []struct {
		partitions, shards int
		want               string
	}{
		{4, 3, "give it a multiple of 3 partitions (3 or 6, say)"},
		{2, 3, "give it a multiple of 3 partitions (3, say)"},
		{5, 2, "not a multiple of the 2 shards"},
		{4, 0, "shard count must be from 1"},
		{0, 2, "partition count must be positive"},
	} {
		_, err := shard.NewRouter(c.partitions, c.shards)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewRouter(%d, %d): %v, want %q", c.partitions, c.shards, err, c.want)
		}
		if c.partitions > 0 && c.shards > 0 && !errors.Is(err, shard.ErrLayout) {
			t.Errorf("NewRouter(%d, %d): %v is not ErrLayout", c.partitions, c.shards, err)
		}
	}
	for _, c := range [][2]int{{1, 1}, {4, 2}, {6, 3}, {12, 4}} {
		if _, err := shard.NewRouter(c[0], c[1]); err != nil {
			t.Errorf("NewRouter(%d, %d): %v", c[0], c[1], err)
		}
	}
}

func ExampleRouter() {
	r, _ := shard.NewRouter(4, 2)
	id := uuid.MustParse("6f1c2c0e-8f4a-4a53-9b1e-3f2a9d4c7b10")
	fmt.Println(r.Partition(id)%2 == int32(r.Shard(id)))
	// Output: true
}

func BenchmarkShard(b *testing.B) {
	r, _ := shard.NewRouter(12, 3)
	id := uuid.New()
	for b.Loop() {
		_ = r.Shard(id)
	}
}
