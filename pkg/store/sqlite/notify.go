package sqlite

import (
	"context"
	"sync"
)

// notifier fans a "something committed" signal out to Notify channels. It
// owns no goroutine: context.AfterFunc closes a channel when its context ends.
type notifier struct {
	mu     sync.Mutex
	subs   map[chan struct{}]func() bool // channel -> stop its AfterFunc
	closed bool
}

func (n *notifier) subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || ctx.Err() != nil {
		close(ch)
		return ch
	}
	// The AfterFunc may run at once, but it takes n.mu, so it finds ch
	// registered.
	n.subs[ch] = context.AfterFunc(ctx, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if _, ok := n.subs[ch]; ok {
			delete(n.subs, ch)
			close(ch)
		}
	})
	return ch
}

// broadcast wakes every subscriber; a subscriber already holding a wake-up
// keeps just the one.
func (n *notifier) broadcast() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// close closes every channel, now and for later subscribers.
func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for ch, stop := range n.subs {
		stop()
		close(ch)
		delete(n.subs, ch)
	}
}
