package command

import (
	"container/list"
	"sync"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// aggKey names an aggregate of one entity type.
type aggKey struct {
	typ string
	id  uuid.UUID
}

// aggCache is a least-recently-used set of live aggregates at committed versions.
// A batch takes the aggregates it works on out of the cache and puts them back
// only after its transaction committed, so no two batches share an aggregate and
// the cache never holds a version the store does not. A nil *aggCache caches
// nothing. It is safe for concurrent use.
type aggCache struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *cacheEntry, most recent first
	items map[aggKey]*list.Element
}

type cacheEntry struct {
	key aggKey
	agg events.Root
}

func newAggCache(size int) *aggCache {
	if size <= 0 {
		return nil
	}
	return &aggCache{size: size, order: list.New(), items: make(map[aggKey]*list.Element)}
}

// take removes and returns the aggregate cached for k.
func (c *aggCache) take(k aggKey) (events.Root, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.Remove(el)
	delete(c.items, k)
	return el.Value.(*cacheEntry).agg, true
}

// put caches agg for k unless a later version is cached already.
func (c *aggCache) put(k aggKey, agg events.Root) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*cacheEntry)
		if e.agg.Base().Version() < agg.Base().Version() {
			e.agg = agg
		}
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, agg: agg})
	if c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

// drop forgets k.
func (c *aggCache) drop(k aggKey) {
	c.take(k)
}
