package shard

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// MaxShards bounds the shard count.
const MaxShards = 1024

// A Router maps entity ids to Kafka partitions and shards. It is immutable
// and safe for concurrent use.
type Router struct {
	partitions int32
	shards     int
}

// NewRouter returns the router for a commands topic of partitions partitions
// over shards shards. It refuses a partition count that is not a positive
// multiple of the shard count: any other would move entities between shards
// when the topic grows, and would mix shards in one partition.
func NewRouter(partitions, shards int) (*Router, error) {
	switch {
	case shards < 1 || shards > MaxShards:
		return nil, fmt.Errorf("shard: the shard count must be from 1 to %d, got %d", MaxShards, shards)
	case partitions < 1:
		return nil, fmt.Errorf("shard: the partition count must be positive, got %d", partitions)
	case partitions%shards != 0:
		lo := partitions / shards * shards
		hint := fmt.Sprintf("%d", lo+shards)
		if lo > 0 {
			hint = fmt.Sprintf("%d or %d", lo, lo+shards)
		}
		return nil, fmt.Errorf("%w: the commands topic has %d partitions, which is not a multiple of the %d shards: give it a multiple of %d partitions (%s, say) or use a shard count that divides %d",
			ErrLayout, partitions, shards, shards, hint, partitions)
	}
	return &Router{partitions: int32(partitions), shards: shards}, nil
}

// ErrLayout reports a partition count, or a database's recorded shard layout,
// that does not fit the shards configured.
var ErrLayout = errors.New("shard: layout mismatch")

// Partitions returns the partition count.
func (r *Router) Partitions() int32 { return r.partitions }

// Shards returns the shard count.
func (r *Router) Shards() int { return r.shards }

// Partition returns the partition of the commands topic that Kafka's default
// partitioner gives a record keyed by id (its canonical text form).
func (r *Router) Partition(id uuid.UUID) int32 {
	var buf [36]byte
	return Partition(keyOf(&buf, id), r.partitions)
}

// Shard returns the shard of entity id.
func (r *Router) Shard(id uuid.UUID) int { return r.ShardOfPartition(r.Partition(id)) }

// ShardOfPartition returns the shard that owns partition p.
func (r *Router) ShardOfPartition(p int32) int { return int(p) % r.shards }

// ShardOf returns the shard of entity id among shards shards, which is the
// same for every partition count that is a multiple of shards: what a reader
// that does not know the partition count (a CLI read, say) routes by.
func ShardOf(id uuid.UUID, shards int) int {
	var buf [36]byte
	return int(Partition(keyOf(&buf, id), int32(shards)))
}

// keyOf writes id's canonical text (what eventlog's producers key commands
// with) into buf and returns it.
func keyOf(buf *[36]byte, id uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	j := 0
	for i, b := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf[j] = '-'
			j++
		}
		buf[j], buf[j+1] = hex[b>>4], hex[b&0xf]
		j += 2
	}
	return buf[:]
}

// Partition returns the partition Kafka's default partitioner gives key
// among n partitions: the positive murmur2 hash of key modulo n.
func Partition(key []byte, n int32) int32 {
	return int32(uint32(Murmur2(key))&0x7fffffff) % n
}

// Murmur2 is the 32-bit murmur2 hash that Kafka's default partitioner uses
// (org.apache.kafka.common.utils.Utils.murmur2, seed 0x9747b28c).
func Murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := n &^ 3
	switch n & 3 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}
