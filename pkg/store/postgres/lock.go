package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/eventlog/eventlog/pkg/store"
)

// ErrLockLost is the cause (context.Cause) of a TryLock context that ended
// because the connection holding the lock failed.
var ErrLockLost = errors.New("postgres: advisory lock lost: its connection failed")

// errLockReleased is the cause of a TryLock context ended by release.
var errLockReleased = errors.New("postgres: advisory lock released")

// TryLock tries to take the session-level advisory lock called name, private to
// this store (schema and table prefix), for leader election: only one holder in
// all processes at a time.
//
// If another session holds it, TryLock returns nil, nil, nil. Otherwise held is
// a context, derived from ctx, that stays live while the lock is held, and
// release gives the lock up (it is safe to call more than once, and returns once
// the lock is free). The lock lives on a connection taken out of the pool for
// it, checked every Options.LockCheckInterval: if that connection fails the
// lock is gone (the server releases it when the session ends), so held is
// cancelled with cause ErrLockLost. A holder must stop acting as leader as soon
// as held is done, and call release. Cancelling ctx or closing the recorder
// releases the lock too.
//
// Between the loss and the check there is a window in which another process
// may take the lock while this holder still believes it leads; work done under
// the lock must tolerate that (idempotent writes, fencing by tracking
// positions).
//
// In a consumer, declare the method as an interface:
//
//	type Locker interface {
//		TryLock(ctx context.Context, name string) (held context.Context, release func(), err error)
//	}
func (r *Recorder) TryLock(ctx context.Context, name string) (held context.Context, release func(), err error) {
	if r.closed.Load() {
		return nil, nil, fmt.Errorf("postgres: try lock %q: %w", name, store.ErrClosed)
	}
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: try lock %q: %w", name, err)
	}
	conn := pc.Hijack()
	closeConn := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		_ = conn.Close(cctx) // ending the session releases the lock
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.n.lockKey("lock", name)).Scan(&ok); err != nil {
		closeConn()
		return nil, nil, fmt.Errorf("postgres: try lock %q: %w", name, err)
	}
	if !ok {
		closeConn()
		return nil, nil, nil
	}

	heldCtx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		defer closeConn()
		tick := time.NewTicker(r.opts.LockCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-heldCtx.Done():
				return
			case <-r.bg.Done():
				cancel(store.ErrClosed)
				return
			case <-tick.C:
				pctx, pcancel := context.WithTimeout(heldCtx, r.opts.LockCheckInterval)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil && heldCtx.Err() == nil {
					r.opts.Logger.LogAttrs(heldCtx, slog.LevelWarn, "advisory lock lost", slog.String(logKeyLock, name), slog.Any(logKeyError, err))
					cancel(fmt.Errorf("%w: %w", ErrLockLost, err))
					return
				}
			}
		}
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			cancel(errLockReleased)
			<-done
		})
	}
	return heldCtx, release, nil
}
