package kafka

import (
	"context"
	"errors"
	"sync"
)

// ErrLocked reports that a lock is held by another holder. TryLock returns it
// (possibly wrapped) when it did nothing wrong but could not take the lock.
var ErrLocked = errors.New("kafka: lock held by another holder")

// A Locker grants named locks, each to one holder at a time. The relay uses one
// to make sure a single relay per store is active.
//
// TryLock takes the lock called name without waiting. If another holder has it,
// TryLock returns an error wrapping ErrLocked, or a nil held and a nil error
// (the PostgreSQL recorder's way), which the relay treats the same. Any other
// error means the locker itself failed (a lost connection, say), and the
// caller tries again later.
// On success it returns held, a context that is cancelled as soon as the lock is
// lost or released or ctx ends, and release, which gives the lock up; release
// may be called more than once and is safe for concurrent use.
//
// The holder must stop acting as the owner as soon as held is done. A lock that
// outlives its holder's process (for example a PostgreSQL session advisory lock
// taken on a dedicated connection: the lock is lost when that connection dies,
// which is what cancels held) is what makes fail-over safe across processes.
type Locker interface {
	TryLock(ctx context.Context, name string) (held context.Context, release func(), err error)
}

// LocalLock is a Locker within one process, for stores that only one process
// uses (the memory and SQLite recorders). The zero value is ready to use, and a
// LocalLock must not be copied after first use. A lock taken with ctx is
// released when ctx ends.
type LocalLock struct {
	mu   sync.Mutex
	held map[string]*localHold
}

type localHold struct{}

var _ Locker = (*LocalLock)(nil)

// NewLocalLock returns an empty LocalLock.
func NewLocalLock() *LocalLock { return &LocalLock{} }

// TryLock implements Locker.
func (l *LocalLock) TryLock(ctx context.Context, name string) (context.Context, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[name]; ok {
		return nil, nil, ErrLocked
	}
	if l.held == nil {
		l.held = make(map[string]*localHold)
	}
	h := &localHold{}
	l.held[name] = h
	held, cancel := context.WithCancel(ctx)
	var once sync.Once
	release := func() {
		once.Do(func() {
			cancel()
			l.mu.Lock()
			if l.held[name] == h {
				delete(l.held, name)
			}
			l.mu.Unlock()
		})
	}
	context.AfterFunc(held, release)
	return held, release, nil
}
