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
// the lock is free: another session can take it at once). The lock lives on a connection taken out of the pool for
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
	key := r.n.lockKey("lock", name)
	// free gives the lock up and ends the session. The unlock is what makes
	// the lock free when release returns: a closed connection's backend
	// releases its locks only when it exits, a moment after the client has
	// gone, and another session's TryLock in that moment would fail.
	free := func(unlock bool) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		if unlock {
			_, _ = conn.Exec(cctx, "SELECT pg_advisory_unlock($1)", key)
		}
		_ = conn.Close(cctx) // ending the session releases the lock anyway
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
		free(false)
		return nil, nil, fmt.Errorf("postgres: try lock %q: %w", name, err)
	}
	if !ok {
		free(false)
		return nil, nil, nil
	}

	heldCtx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	watch := func() {
		defer close(done)
		lost := false
		defer func() { free(!lost) }()
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
					lost = true
					r.opts.Logger.LogAttrs(heldCtx, slog.LevelWarn, "advisory lock lost", slog.String(logKeyLock, name), slog.Any(logKeyError, err))
					cancel(fmt.Errorf("%w: %w", ErrLockLost, err))
					return
				}
			}
		}
	}
	if !r.spawn(watch) {
		cancel(store.ErrClosed)
		free(true)
		return nil, nil, fmt.Errorf("postgres: try lock %q: %w", name, store.ErrClosed)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			cancel(errLockReleased)
			<-done
		})
	}
	return heldCtx, release, nil
}
