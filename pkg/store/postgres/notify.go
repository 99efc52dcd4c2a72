package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/internal/backoff"
)

// listener owns the LISTEN connection and the Notify subscriptions.
type listener struct {
	mu      sync.Mutex
	subs    map[chan struct{}]struct{}
	started bool
	closed  bool
	ready   chan struct{} // closed once the first LISTEN succeeded (or at Close)
}

// readyWait bounds how long Notify waits for the LISTEN connection.
const readyWait = 5 * time.Second

// Notify returns a channel that receives a value (sends coalesce) after an
// append may have committed, and is closed when ctx is done or the recorder is
// closed. Every append, alone or in InTx, sends pg_notify in its transaction, so
// the wake-up comes at commit; the recorder LISTENs on one dedicated
// connection, reconnecting when it drops, and wakes every subscriber after a
// reconnect, since notifications may have been lost meanwhile.
//
// The first call starts the connection and waits (up to a few seconds, or until
// ctx is done) until it listens, so a commit after Notify returns wakes the
// channel unless the connection drops. Tailers must still poll now and then: a
// wake-up is a hint that shortens the wait, not a guarantee.
func (r *Recorder) Notify(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	l := &r.lis
	l.mu.Lock()
	if l.closed || r.closed.Load() {
		l.mu.Unlock()
		close(ch)
		return ch
	}
	if !l.started {
		if !r.spawn(r.listen) {
			l.mu.Unlock()
			close(ch)
			return ch
		}
		l.started = true
		l.ready = make(chan struct{})
	}
	l.subs[ch] = struct{}{}
	ready := l.ready
	l.mu.Unlock()

	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.subs[ch]; ok {
			delete(l.subs, ch)
			close(ch)
		}
	})
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-t.C:
	}
	return ch
}

func (l *listener) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (l *listener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for ch := range l.subs {
		delete(l.subs, ch)
		close(ch)
	}
	if l.ready != nil {
		select {
		case <-l.ready:
		default:
			close(l.ready)
		}
	}
}

func (l *listener) markReady() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.ready:
	default:
		close(l.ready)
	}
}

// listen keeps a connection LISTENing until the recorder is closed.
func (r *Recorder) listen() {
	ctx := r.bg
	log := r.opts.Logger.With(slog.String(logKeyChannel, r.n.channel))
	wait := backoff.New(50*time.Millisecond, r.opts.ReconnectDelay)
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, func() {
			wait.Reset()
			r.lis.markReady()
			r.lis.wakeAll() // anything may have committed while we were away
		})
		if ctx.Err() != nil {
			return
		}
		delay := wait.Next()
		log.LogAttrs(ctx, slog.LevelWarn, "LISTEN connection lost; reconnecting", slog.Any(logKeyError, err), slog.Duration("retry_in", delay))
		if backoff.Sleep(ctx, delay) != nil {
			return
		}
	}
}

// listenOnce takes a connection out of the pool, LISTENs, calls listening and
// wakes subscribers on every notification until the connection fails.
func (r *Recorder) listenOnce(ctx context.Context, listening func()) error {
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // dedicated: the pool forgets it, we close it
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.n.channel}.Sanitize()); err != nil {
		return err
	}
	listening()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		r.lis.wakeAll()
	}
}
