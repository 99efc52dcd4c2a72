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

// newer is the repository cache's rule: a state replaces an older one only.
func (c cached) newer(old cached) bool { return old.version < c.version }

// lru is a least-recently-used map by sequence id, safe for concurrent use:
// the repository's aggregate states and DataKeys' data keys.
type lru[V any] struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *lruEntry[V], most recent first
	items map[uuid.UUID]*list.Element
}

type lruEntry[V any] struct {
	id uuid.UUID
	v  V
}

func newLRU[V any](size int) *lru[V] {
	return &lru[V]{size: size, order: list.New(), items: make(map[uuid.UUID]*list.Element, min(size, 1024))}
}

func (c *lru[V]) get(id uuid.UUID) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[id]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[V]).v, true
}

// put stores v for id, unless id has a value already and replaces says v
// must not replace it. Either way id becomes the most recent.
func (c *lru[V]) put(id uuid.UUID, v V, replaces func(old V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		e := el.Value.(*lruEntry[V])
		if replaces(e.v) {
			e.v = v
		}
		c.order.MoveToFront(el)
		return
	}
	c.items[id] = c.order.PushFront(&lruEntry[V]{id: id, v: v})
	if c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry[V]).id)
	}
}

// remove drops id's value, if any.
func (c *lru[V]) remove(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		c.order.Remove(el)
		delete(c.items, id)
	}
}
