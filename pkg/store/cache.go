package store

import (
	"container/list"
	"sync"

	"github.com/google/uuid"
)

// cached is an aggregate's state at a version.
type cached struct {
	version   int64
	discarded bool
	state     []byte // JSON
}

// lru is a least-recently-used map of aggregate states, safe for concurrent use.
type lru struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *entry, most recent first
	items map[uuid.UUID]*list.Element
}

type entry struct {
	id uuid.UUID
	cached
}

func newLRU(size int) *lru {
	return &lru{size: size, order: list.New(), items: make(map[uuid.UUID]*list.Element, size)}
}

func (c *lru) get(id uuid.UUID) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[id]
	if !ok {
		return cached{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*entry).cached, true
}

// put stores v unless a newer version is cached already.
func (c *lru) put(id uuid.UUID, v cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		e := el.Value.(*entry)
		if e.version < v.version {
			e.cached = v
		}
		c.order.MoveToFront(el)
		return
	}
	c.items[id] = c.order.PushFront(&entry{id: id, cached: v})
	if c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*entry).id)
	}
}
