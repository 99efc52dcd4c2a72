// Package httpapi serves eventlog's HTTP API (the wire contract's HTTP half):
// entities rebuilt from their events, the events of one entity, the notification
// log, commands, live streams of the log and of one entity (Server-Sent
// Events, see stream.go), what the service serves (GET /v1/info), the
// operations console (/ui/, package console), and the operational endpoints
// /healthz, /readyz and /metrics.
//
// Every response but the streams and the console is JSON. Errors are
// {"error": "..."} with a status that says what happened: 400 for bad input,
// 401 without the credentials Auth asks for, 404 for unknown (and discarded)
// entities, 410 Gone for forgotten entities (crypto-shredded: their data key
// is deleted), 503 when a dependency is down or too many streams are open,
// 504 when a command's result did not come in time.
//
// Auth guards every route but /healthz, /readyz, /metrics and the console's
// static files; the mains wrap Server.Handler with it. A stream never
// buffers more than StreamConfig.Buffer events for its client, and
// CloseStreams ends them all when the server shuts down.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/shard"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// MaxBodySize bounds request bodies.
const MaxBodySize = 1 << 20

// A CommandSender sends a command and waits for its result.
type CommandSender interface {
	Send(ctx context.Context, cmd wire.Command) (wire.Result, error)
}

// A ReadinessCheck reports whether a dependency is usable (nil) or why not.
type ReadinessCheck func(ctx context.Context) error

// Entities rebuilds entities of the registered types.
type Entities struct {
	Store    *store.EventStore
	Recorder store.ApplicationRecorder
	// Loaders load the entities of each type: the current state if version
	// is 0, else the state at that version. They fail wrapping
	// store.ErrNotFound for an unknown entity, *events.ForgottenError for a
	// forgotten one, *VersionError for a version not reached.
	Loaders map[string]EntityLoader
	// Reads, if set, is the recorder the Loaders read (a streaming replica of
	// Recorder's database): GET /v1/entities/{entity}/{id}/events and the
	// min_version wait read it too. The log and the streams stay on
	// Recorder.
	Reads store.AggregateRecorder
	// MinVersionWait bounds how long ?min_version=N waits for the entity to
	// reach version N where it is read (default DefaultMinVersionWait).
	MinVersionWait time.Duration
}

// DefaultMinVersionWait is how long ?min_version=N waits at most before it
// answers 503 with a Retry-After header.
const DefaultMinVersionWait = 5 * time.Second

// reads is the recorder entities are read from.
func (e *Entities) reads() store.AggregateRecorder {
	if e.Reads != nil {
		return e.Reads
	}
	return e.Recorder
}

// An EntityLoader returns what GET /v1/entities/{entity}/{id} shows.
type EntityLoader func(ctx context.Context, id uuid.UUID, version int64) (any, error)

// A VersionError reports a version the entity has not reached: 404 with
// its message.
type VersionError struct{ Err error }

func (e *VersionError) Error() string { return e.Err.Error() }
func (e *VersionError) Unwrap() error { return e.Err }

// EventJSON is how a stored event is shown. State is the decoded JSON state.
type EventJSON struct {
	NotificationID int64           `json:"notification_id,omitempty"`
	SequenceID     uuid.UUID       `json:"sequence_id"`
	Position       int64           `json:"position"`
	Topic          string          `json:"topic"`
	Codec          string          `json:"codec"`
	State          json.RawMessage `json:"state"`
}

// Server holds what the handlers need. Nil parts turn their routes off.
type Server struct {
	Log      *slog.Logger
	Entities *Entities
	Commands CommandSender
	// CommandTimeout bounds POST /v1/commands (default 10 s).
	CommandTimeout time.Duration
	Ready          []ReadinessCheck
	Metrics        http.Handler
	// Extra routes (the projector's read models, for example).
	Extra func(mux *Mux)
	// Streams bounds the live streams (see StreamConfig).
	Streams StreamConfig
	// Info says what the service serves (GET /v1/info).
	Info Info

	streams streams
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics)
	}
	mux.HandleFunc("GET /v1/info", s.info)
	consoleRoutes(mux)
	if s.Entities != nil {
		mux.HandleFunc("GET /v1/entities/{entity}/{id}", s.getEntity)
		mux.HandleFunc("GET /v1/entities/{entity}/{id}/events", s.getEvents)
		mux.HandleFunc("GET /v1/notifications", s.getNotifications)
		mux.HandleFunc("GET /v1/notifications/stream", s.streamNotifications)
		mux.HandleFunc("GET /v1/entities/{entity}/{id}/stream", s.streamEntity)
	}
	if s.Commands != nil {
		mux.HandleFunc("POST /v1/commands", s.postCommand)
	}
	if s.Extra != nil {
		s.Extra(mux)
	}
	return mux
}

// NewHTTPServer returns an http.Server with timeouts suitable for the API.
func NewHTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	for _, check := range s.Ready {
		if err := check(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, "not ready: %v", err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) entityParams(w http.ResponseWriter, r *http.Request) (EntityLoader, string, uuid.UUID, bool) {
	typ := r.PathValue("entity")
	load, ok := s.Entities.Loaders[typ]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown entity type %q", typ)
		return nil, "", uuid.Nil, false
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "entity id %q is not a UUID: %v", r.PathValue("id"), err)
		return nil, "", uuid.Nil, false
	}
	return load, typ, id, true
}

func (s *Server) getEntity(w http.ResponseWriter, r *http.Request) {
	load, typ, id, ok := s.entityParams(w, r)
	if !ok {
		return
	}
	var version int64
	if v := r.URL.Query().Get("version"); v != "" {
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "version must be a whole number from 1, got %q", v)
			return
		}
		version = n
	}
	if !s.waitMinVersion(w, r, typ, id) {
		return
	}
	e, err := load(r.Context(), id, version)
	if ve := (*VersionError)(nil); errors.As(err, &ve) {
		writeError(w, http.StatusNotFound, "%v", ve)
		return
	}
	if err != nil {
		s.storeError(w, err, "%s %s", typ, id)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	_, typ, id, ok := s.entityParams(w, r)
	if !ok {
		return
	}
	if !s.waitMinVersion(w, r, typ, id) {
		return
	}
	items, err := s.Entities.reads().SelectEvents(r.Context(), id, store.Query{})
	if err != nil {
		s.storeError(w, err, "events of %s %s", typ, id)
		return
	}
	if len(items) == 0 || events.EntityOf(items[0].Topic) != typ {
		writeError(w, http.StatusNotFound, "%s %s not found", typ, id)
		return
	}
	if events.IsForgottenTopic(items[len(items)-1].Topic) {
		writeForgotten(w, typ, id)
		return
	}
	out := make([]EventJSON, len(items))
	for i, it := range items {
		out[i] = s.eventJSON(0, it)
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out})
}

// waitMinVersion handles ?min_version=N (read your writes: N is the version
// a command's result reported): it waits until the store the entities are
// read from holds the entity's event at position N-1, up to
// Entities.MinVersionWait. It reports whether to go on; if not, it has
// answered 400 for a bad N, or 503 with Retry-After when the wait ran out
// (a replica behind, or a version that no command made yet).
func (s *Server) waitMinVersion(w http.ResponseWriter, r *http.Request, typ string, id uuid.UUID) bool {
	v := r.URL.Query().Get("min_version")
	if v == "" {
		return true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		writeError(w, http.StatusBadRequest, "min_version must be a whole number from 1, got %q", v)
		return false
	}
	wait := s.Entities.MinVersionWait
	if wait <= 0 {
		wait = DefaultMinVersionWait
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	after, upTo := n-2, n-1
	pause := 5 * time.Millisecond
	for {
		items, err := s.Entities.reads().SelectEvents(ctx, id, store.Query{After: &after, UpTo: &upTo, Limit: 1})
		switch {
		case err == nil && len(items) > 0:
			return true
		case r.Context().Err() != nil:
			return false // the client has gone
		case err != nil && ctx.Err() == nil:
			s.storeError(w, err, "%s %s", typ, id)
			return false
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "%s %s has not reached version %d where it is read within %s (a replica behind the primary, or no such version yet): retry later", typ, id, n, wait)
			return false
		case <-t.C:
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, limit := int64(0), 100
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "after must be a notification id (a whole number from 0), got %q", v)
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "limit must be from 1 to 10000, got %q", v)
			return
		}
		limit = n
	}
	ns, err := s.Entities.Recorder.SelectNotifications(r.Context(), after, limit)
	if err != nil {
		s.storeError(w, err, "notifications")
		return
	}
	out := make([]EventJSON, len(ns))
	next := after
	for i, n := range ns {
		out[i] = s.eventJSON(n.ID, n.SequencedItem)
		next = n.ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": out, "next_after": next})
}

func (s *Server) eventJSON(id int64, it store.SequencedItem) EventJSON {
	ej := EventJSON{NotificationID: id, SequenceID: it.SequenceID, Position: it.Position, Topic: it.Topic, Codec: it.Codec}
	if state, err := s.Entities.Store.Mapper.DecodeState(it); err == nil && json.Valid(state) {
		ej.State = state
	} else {
		ej.State = json.RawMessage(`null`)
	}
	return ej
}

func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, MaxBodySize)
	b, err := io.ReadAll(body)
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "body is more than the limit of %d bytes", MaxBodySize)
		return
	} else if err != nil {
		writeError(w, http.StatusBadRequest, "cannot read the body: %v", err)
		return
	}
	var raw json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		writeError(w, http.StatusBadRequest, "body must be one JSON command envelope: %v", err)
		return
	}
	// A convenience: the server fills in a missing command id, and a missing
	// entity id of a command that is not an update or a discard (a new
	// entity), as `eventlog send` does.
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) == nil && m != nil {
		changed := false
		if _, ok := m["command_id"]; !ok {
			m["command_id"], _ = json.Marshal(uuid.New())
			changed = true
		}
		var typ string
		_ = json.Unmarshal(m["type"], &typ)
		if _, ok := m["entity_id"]; !ok && typ != "" && typ != wire.TypeUpdate && typ != wire.TypeDiscard {
			m["entity_id"], _ = json.Marshal(uuid.New())
			changed = true
		}
		if changed {
			raw, _ = json.Marshal(m)
		}
	}
	cmd, err := wire.DecodeCommand(raw, MaxBodySize)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	timeout := s.CommandTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if tp := wire.TraceParent([]byte(r.Header.Get(wire.HeaderTraceParent))); tp != "" {
		// The command record carries the request's trace context on.
		ctx = tracing.WithParent(ctx, tp)
	}
	res, err := s.Commands.Send(ctx, cmd)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "no result for command %s within %s; it may still apply (send it again with the same command_id to learn its result)", cmd.CommandID, timeout)
		return
	case err != nil:
		s.Log.ErrorContext(r.Context(), "send command", "command_id", cmd.CommandID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "cannot send the command: %v", err)
		return
	}
	status := http.StatusOK
	switch res.Status {
	case wire.StatusRejected, wire.StatusInvalid:
		status = http.StatusUnprocessableEntity
	case wire.StatusConflict:
		status = http.StatusConflict
	}
	writeJSON(w, status, res)
}

func (s *Server) storeError(w http.ResponseWriter, err error, format string, args ...any) {
	what := fmt.Sprintf(format, args...)
	var fe *events.ForgottenError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusGone, map[string]string{"error": fmt.Sprintf("%s: the entity was forgotten (its data key is deleted)", what), "forgotten": fe.SequenceID.String()})
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "%s not found", what)
	case errors.Is(err, events.ErrDecode):
		writeError(w, http.StatusInternalServerError, "%s: %v", what, err)
	case errors.Is(err, shard.ErrCrossShard):
		writeError(w, http.StatusNotImplemented, "%s: %v", what, err)
	default:
		if s.Log != nil {
			s.Log.Error("store", "what", what, "err", err)
		}
		writeError(w, http.StatusServiceUnavailable, "%s: the store is not available", what)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}
