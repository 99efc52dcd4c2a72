package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// Live streams: Server-Sent Events (text/event-stream) of the notification
// log and of one entity's events, for clients that are not on Kafka.
//
//	GET /v1/notifications/stream[?after=N|end][&entity=T]
//	GET /v1/entities/{entity}/{id}/stream[?after=P]
//
// A stream first sends what the store holds after the starting point
// (catch-up), then what commits later (live), each as
//
//	id: <notification id, or the event's position for one entity>
//	event: notification | event
//	data: <EventJSON>
//
// A client resumes where it stopped with the Last-Event-ID header (which a
// browser's EventSource sends by itself when it reconnects): it takes the
// place of after, and the stream goes on with what follows that id, so
// nothing is missed and nothing is sent twice. A stream ends with one last
// event without an id that says why: "dropped" (the client was too slow),
// "forgotten" (the entity was forgotten), "end" (the server is shutting
// down) or "error" (the store failed); a client that reconnects then
// resumes. Idle streams send a comment line now and then.
//
// Back-pressure: a stream reads from the store at most StreamConfig.Buffer
// events ahead of what it has written to its client; a client that leaves
// them all waiting for StreamConfig.SlowTimeout is dropped, so a stream
// never buffers without bound, and a stalled client never holds one for
// ever.

// StreamConfig bounds the live streams. Fields that are zero (or
// negative) take their defaults.
type StreamConfig struct {
	// Buffer is how many events a stream reads from the store ahead of
	// its client. Default 256.
	Buffer int
	// SlowTimeout: a client that takes no event for this long while Buffer
	// are waiting is dropped, with a final "dropped" event. Default 10s.
	SlowTimeout time.Duration
	// WriteTimeout: a write to the client that does not complete in this
	// long closes the connection (a client that stopped reading). Default
	// 20s.
	WriteTimeout time.Duration
	// PollInterval is how often a caught-up stream reads the store when
	// nothing wakes it: a fallback for lost wake-ups when the store is a
	// store.Notifier (default 1s), else the only way (default 100ms).
	PollInterval time.Duration
	// MinReadInterval bounds how often a caught-up stream reads the store
	// on wake-ups, which come with every commit. Default 50ms.
	MinReadInterval time.Duration
	// Heartbeat is how often an idle stream sends a comment line, so that
	// proxies and clients see it alive. Default 15s.
	Heartbeat time.Duration
	// MaxStreams bounds the streams open at once; more are refused with
	// 503. Default 256.
	MaxStreams int
}

func (c *StreamConfig) setDefaults(notifier bool) {
	if c.Buffer <= 0 {
		c.Buffer = 256
	}
	if c.SlowTimeout <= 0 {
		c.SlowTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 20 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
		if notifier {
			c.PollInterval = time.Second
		}
	}
	if c.MinReadInterval <= 0 {
		c.MinReadInterval = 50 * time.Millisecond
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 256
	}
}

// StreamStats counts the live streams.
type StreamStats struct {
	Open    int   `json:"open"`
	Opened  int64 `json:"opened"`
	Dropped int64 `json:"dropped"` // ended because the client was too slow
	Refused int64 `json:"refused"` // refused: MaxStreams were open
}

// streams is the state of a Server's live streams.
type streams struct {
	once   sync.Once
	ctx    context.Context // ends when the server shuts down
	cancel context.CancelFunc
	mu     sync.Mutex
	stats  StreamStats
}

func (st *streams) init() {
	st.once.Do(func() { st.ctx, st.cancel = context.WithCancel(context.Background()) })
}

// StreamStats returns the counters of the live streams.
func (s *Server) StreamStats() StreamStats {
	s.streams.mu.Lock()
	defer s.streams.mu.Unlock()
	return s.streams.stats
}

// CloseStreams ends every live stream, open or opened later, with an
// "end" event: call it when the server shuts down (http.Server's
// RegisterOnShutdown), whose Shutdown would otherwise wait for them.
func (s *Server) CloseStreams() {
	s.streams.init()
	s.streams.cancel()
}

// errSlow ends the stream of a client that takes too long.
var errSlow = errors.New("the client is too slow")

// errForgottenEnd ends the stream of an entity that was forgotten.
type errForgottenEnd struct {
	typ string
	id  uuid.UUID
}

func (e *errForgottenEnd) Error() string {
	return fmt.Sprintf("%s %s was forgotten: its data key is deleted and its events can no longer be read", e.typ, e.id)
}

// sseEvent is one event of a stream. A control event has no id.
type sseEvent struct {
	id   string
	name string
	data []byte
}

// emitFunc hands an event to the stream's writer. It fails with errSlow
// when the client leaves the buffer full for SlowTimeout.
type emitFunc func(ctx context.Context, ev sseEvent) error

func (s *Server) streamConfig() StreamConfig {
	cfg := s.Streams
	_, notifier := s.Entities.Recorder.(store.Notifier)
	cfg.setDefaults(notifier)
	return cfg
}

// serveStream runs read, which emits events, and writes them to the client
// as Server-Sent Events until read ends, the client goes, or the server
// shuts down.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, read func(ctx context.Context, cfg StreamConfig, emit emitFunc) error) {
	st := &s.streams
	st.init()
	cfg := s.streamConfig()
	st.mu.Lock()
	if st.stats.Open >= cfg.MaxStreams {
		st.stats.Refused++
		st.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "%d live streams are open, the most this server allows: try again later", cfg.MaxStreams)
		return
	}
	st.stats.Open++
	st.stats.Opened++
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.stats.Open--
		st.mu.Unlock()
	}()

	// The server's read and write timeouts bound requests, not streams:
	// writes get deadlines of their own below.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	w.WriteHeader(http.StatusOK)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(st.ctx, cancel)()
	queue := make(chan sseEvent, cfg.Buffer)
	emit := func(ctx context.Context, ev sseEvent) error {
		select {
		case queue <- ev:
			return nil
		default:
		}
		t := time.NewTimer(cfg.SlowTimeout)
		defer t.Stop()
		select {
		case queue <- ev:
			return nil
		case <-t.C:
			st.mu.Lock()
			st.stats.Dropped++
			st.mu.Unlock()
			return errSlow
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan error, 1)
	go func() { done <- read(ctx, cfg, emit) }()
	// On return the reader has stopped: nothing is left running.
	sw := &sseWriter{w: w, rc: rc, timeout: cfg.WriteTimeout}
	defer func() {
		cancel()
		if done != nil {
			<-done
		}
	}()

	hb := time.NewTicker(cfg.Heartbeat)
	defer hb.Stop()
	if sw.comment("eventlog stream") != nil || sw.flush() != nil {
		return
	}
	lastID := ""
	for {
		select {
		case ev := <-queue:
			if sw.event(ev) != nil {
				return
			}
			lastID = ev.id
			if len(queue) == 0 && sw.flush() != nil {
				return
			}
		case <-hb.C:
			if sw.comment("keepalive") != nil || sw.flush() != nil {
				return
			}
		case err := <-done:
			done = nil
			if r.Context().Err() != nil {
				return // the client went
			}
			if !errors.Is(err, errSlow) {
				// Everything read is written before the end.
				for len(queue) > 0 {
					ev := <-queue
					if sw.event(ev) != nil {
						return
					}
					lastID = ev.id
				}
			}
			if final := s.finalEvent(err, lastID, cfg, st.ctx.Err() != nil); final.name != "" {
				_ = sw.event(final)
			}
			_ = sw.flush()
			return
		}
	}
}

// finalEvent says why a stream ended.
func (s *Server) finalEvent(err error, lastID string, cfg StreamConfig, shutdown bool) sseEvent {
	var fe *errForgottenEnd
	data := func(v any) []byte { b, _ := json.Marshal(v); return b }
	switch {
	case errors.Is(err, errSlow):
		return sseEvent{name: "dropped", data: data(map[string]string{
			"reason":        fmt.Sprintf("the client took no event for %s while %d were waiting: dropped; resume with Last-Event-ID", cfg.SlowTimeout, cfg.Buffer),
			"last_event_id": lastID,
		})}
	case errors.As(err, &fe):
		return sseEvent{name: "forgotten", data: data(map[string]string{"error": fe.Error(), "forgotten": fe.id.String()})}
	case shutdown:
		return sseEvent{name: "end", data: data(map[string]string{"reason": "the server is shutting down; resume with Last-Event-ID", "last_event_id": lastID})}
	case err == nil || errors.Is(err, context.Canceled):
		return sseEvent{}
	}
	if s.Log != nil {
		s.Log.Error("live stream", "err", err)
	}
	return sseEvent{name: "error", data: data(map[string]string{"error": "the store is not available; resume with Last-Event-ID", "last_event_id": lastID})}
}

// sseWriter writes the text/event-stream format, each write with a
// deadline.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   bool
	buf     bytes.Buffer
}

func (sw *sseWriter) arm() {
	if !sw.armed {
		_ = sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout))
		sw.armed = true
	}
}

func (sw *sseWriter) event(ev sseEvent) error {
	sw.arm()
	b := &sw.buf
	b.Reset()
	if ev.id != "" {
		b.WriteString("id: ")
		b.WriteString(ev.id)
		b.WriteByte('\n')
	}
	b.WriteString("event: ")
	b.WriteString(ev.name)
	b.WriteByte('\n')
	for line := range bytes.Lines(ev.data) {
		b.WriteString("data: ")
		b.Write(bytes.TrimRight(line, "\r\n"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	_, err := sw.w.Write(b.Bytes())
	return err
}

func (sw *sseWriter) comment(text string) error {
	sw.arm()
	_, err := fmt.Fprintf(sw.w, ": %s\n\n", text)
	return err
}

func (sw *sseWriter) flush() error {
	sw.arm()
	err := sw.rc.Flush()
	sw.armed = false
	return err
}

// follow calls read until it reports no more, then again each time the
// store may hold more: on its wake-ups (at most once per MinReadInterval)
// and, with recheck, again 1, 2, 4 ... MinReadIntervals after a wake-up (a
// commit-order-safe log may show an item only once older transactions end,
// which sends no wake-up), and every PollInterval.
func (s *Server) follow(ctx context.Context, cfg StreamConfig, recheck bool, read func(context.Context) (more bool, err error)) error {
	var wake <-chan struct{}
	if n, ok := s.Entities.Recorder.(store.Notifier); ok {
		wake = n.Notify(ctx) // before the first read: no wake-up is missed
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var (
		fast     time.Duration // the next re-read after a wake-up
		lastWake time.Time     // the last read for a wake-up
	)
	for {
		more, err := read(ctx)
		if err != nil {
			return err
		}
		if more {
			continue
		}
		wait := cfg.PollInterval
		if fast > 0 {
			wait = fast
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-wake:
			if !ok {
				wake = nil // the store closed it: poll
				continue
			}
			if recheck {
				fast = cfg.MinReadInterval
			}
			if d := cfg.MinReadInterval - time.Since(lastWake); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-timer.C:
				}
			}
			lastWake = time.Now()
		case <-timer.C:
			if fast > 0 {
				if fast *= 2; fast >= cfg.PollInterval {
					fast = 0
				}
			}
		}
	}
}

// streamPage is how many items a stream reads from the store at once.
const streamPage = 100

func (s *Server) streamNotifications(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rec := s.Entities.Recorder
	var after int64
	switch v := q.Get("after"); v {
	case "":
	case "end":
		max, err := rec.MaxNotificationID(r.Context())
		if err != nil {
			s.storeError(w, err, "notifications")
			return
		}
		after = max
	default:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "after must be a notification id (a whole number from 0) or end, got %q", v)
			return
		}
		after = n
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "Last-Event-ID must be the id of a notification (a whole number from 0), got %q", v)
			return
		}
		after = n
	}
	typ := q.Get("entity")
	if _, ok := s.Entities.Loaders[typ]; typ != "" && !ok {
		writeError(w, http.StatusNotFound, "unknown entity type %q", typ)
		return
	}
	s.serveStream(w, r, func(ctx context.Context, cfg StreamConfig, emit emitFunc) error {
		pos := after
		return s.follow(ctx, cfg, true, func(ctx context.Context) (bool, error) {
			ns, err := rec.SelectNotifications(ctx, pos, streamPage)
			if err != nil {
				return false, err
			}
			for _, n := range ns {
				pos = n.ID
				if typ != "" && events.EntityOf(n.Topic) != typ {
					continue
				}
				b, err := json.Marshal(s.eventJSON(n.ID, n.SequencedItem))
				if err != nil {
					return false, err
				}
				if err := emit(ctx, sseEvent{id: strconv.FormatInt(n.ID, 10), name: "notification", data: b}); err != nil {
					return false, err
				}
			}
			return len(ns) == streamPage, nil
		})
	})
}

func (s *Server) streamEntity(w http.ResponseWriter, r *http.Request) {
	_, typ, id, ok := s.entityParams(w, r)
	if !ok {
		return
	}
	after := int64(-1)
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			writeError(w, http.StatusBadRequest, "after must be a position of the entity (a whole number from -1), got %q", v)
			return
		}
		after = n
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "Last-Event-ID must be a position of the entity (a whole number from 0), got %q", v)
			return
		}
		after = n
	}
	rec := s.Entities.Recorder
	first, err := rec.SelectEvents(r.Context(), id, store.Query{Limit: 1})
	if err != nil {
		s.storeError(w, err, "events of %s %s", typ, id)
		return
	}
	if len(first) == 0 || events.EntityOf(first[0].Topic) != typ {
		writeError(w, http.StatusNotFound, "%s %s not found", typ, id)
		return
	}
	last, err := rec.SelectEvents(r.Context(), id, store.Query{Desc: true, Limit: 1})
	if err != nil {
		s.storeError(w, err, "events of %s %s", typ, id)
		return
	}
	if len(last) == 1 && events.IsForgottenTopic(last[0].Topic) {
		writeForgotten(w, typ, id)
		return
	}
	s.serveStream(w, r, func(ctx context.Context, cfg StreamConfig, emit emitFunc) error {
		pos := after
		return s.follow(ctx, cfg, false, func(ctx context.Context) (bool, error) {
			items, err := rec.SelectEvents(ctx, id, store.Query{After: &pos, Limit: streamPage})
			if err != nil {
				return false, err
			}
			for _, it := range items {
				pos = it.Position
				b, err := json.Marshal(s.eventJSON(0, it))
				if err != nil {
					return false, err
				}
				if err := emit(ctx, sseEvent{id: strconv.FormatInt(it.Position, 10), name: "event", data: b}); err != nil {
					return false, err
				}
				if events.IsForgottenTopic(it.Topic) {
					return false, &errForgottenEnd{typ: typ, id: id}
				}
			}
			return len(items) == streamPage, nil
		})
	})
}
