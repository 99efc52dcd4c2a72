package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
)

// DeadLetters serves the projector's parked sequences (its projections'
// sequenced dead letters) and what an operator does with them:
//
//	GET  /v1/dead-letters[?projection=P&entity=E&limit=N&after=P/ID]
//	GET  /v1/dead-letters/{projection}/{entity}/{id}
//	POST /v1/dead-letters/{projection}/{entity}/{id}/retry
//	POST /v1/dead-letters/{projection}/{entity}/{id}/skip   {"reason": "..."}
//	POST /v1/dead-letters/retry[?projection=P&entity=E]     (every parked sequence)
//
// Bodies are JSON with snake_case keys. An unknown projection, or a
// sequence that is not parked, is 404; a skip without a reason 400.
type DeadLetters struct {
	Log     *slog.Logger
	Letters *projection.DeadLetters
}

// Routes adds the routes to mux.
func (d *DeadLetters) Routes(mux *Mux) {
	mux.HandleFunc("GET /v1/dead-letters", d.list)
	mux.HandleFunc("POST /v1/dead-letters/retry", d.retryAll)
	mux.HandleFunc("GET /v1/dead-letters/{projection}/{entity}/{id}", d.show)
	mux.HandleFunc("POST /v1/dead-letters/{projection}/{entity}/{id}/retry", d.retry)
	mux.HandleFunc("POST /v1/dead-letters/{projection}/{entity}/{id}/skip", d.skip)
}

// ParkedJSON is how a parked sequence is shown.
type ParkedJSON struct {
	Projection    string                `json:"projection"`
	Entity        string                `json:"entity"`
	ID            uuid.UUID             `json:"id"`
	FirstPosition int64                 `json:"first_position"`
	LastPosition  int64                 `json:"last_position"`
	Count         int64                 `json:"count"`
	Reason        string                `json:"reason"`
	FirstParkedAt time.Time             `json:"first_parked_at"`
	LastParkedAt  time.Time             `json:"last_parked_at"`
	FailedRetries int                   `json:"failed_retries"`
	Skipped       []store.PositionRange `json:"skipped,omitempty"`
}

// ParkedEventJSON is how a parked event is shown: State is its JSON state
// when it is plain JSON, StateBase64 its bytes otherwise (compressed or
// encrypted).
type ParkedEventJSON struct {
	Position       int64           `json:"position"`
	Topic          string          `json:"topic"`
	Codec          string          `json:"codec"`
	NotificationID int64           `json:"notification_id,omitempty"`
	Record         *RecordJSON     `json:"record,omitempty"`
	ParkedAt       time.Time       `json:"parked_at"`
	State          json.RawMessage `json:"state,omitempty"`
	StateBase64    []byte          `json:"state_base64,omitempty"`
}

// RecordJSON locates the Kafka record an event came in.
type RecordJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// ParkActionJSON is a retry or skip of a parked sequence.
type ParkActionJSON struct {
	Action        string    `json:"action"`
	FirstPosition int64     `json:"first_position"`
	LastPosition  int64     `json:"last_position"`
	Count         int64     `json:"count"`
	Reason        string    `json:"reason,omitempty"`
	At            time.Time `json:"at"`
}

// ParkedDetailJSON is one parked sequence with its events and actions.
type ParkedDetailJSON struct {
	ParkedJSON
	Parked  bool              `json:"parked"`
	Events  []ParkedEventJSON `json:"events"`
	Actions []ParkActionJSON  `json:"actions"`
}

// RetryJSON is what a retry did.
type RetryJSON struct {
	Projection    string    `json:"projection"`
	Entity        string    `json:"entity"`
	ID            uuid.UUID `json:"id"`
	FirstPosition int64     `json:"first_position"`
	LastPosition  int64     `json:"last_position"`
	Events        int       `json:"events"`
	Applied       int       `json:"applied"`
	// Parked: the retry failed on an event, parked again from
	// ParkedFrom with Reason.
	Parked     bool   `json:"parked"`
	ParkedFrom *int64 `json:"parked_from,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// SkipJSON is what a skip did.
type SkipJSON struct {
	Projection    string    `json:"projection"`
	Entity        string    `json:"entity"`
	ID            uuid.UUID `json:"id"`
	FirstPosition int64     `json:"first_position"`
	LastPosition  int64     `json:"last_position"`
	Events        int       `json:"events"`
	Reason        string    `json:"reason"`
}

// SkipRequest is the body of a skip.
type SkipRequest struct {
	Reason string `json:"reason"`
}

func parkedJSON(s store.ParkedSequence) ParkedJSON {
	return ParkedJSON{
		Projection: s.Name, Entity: s.Entity, ID: s.SequenceID, FirstPosition: s.First, LastPosition: s.Last, Count: s.Count,
		Reason: s.Reason, FirstParkedAt: s.ParkedAt, LastParkedAt: s.UpdatedAt, FailedRetries: s.Retries, Skipped: s.Skipped,
	}
}

func retryJSON(r projection.RetryResult) RetryJSON {
	out := RetryJSON{Projection: r.Projection, Entity: r.Entity, ID: r.SequenceID, FirstPosition: r.Positions.From, LastPosition: r.Positions.To,
		Events: r.Events, Applied: r.Applied, Parked: r.Parked, Reason: r.Reason}
	if r.Parked {
		out.ParkedFrom = &r.First
	}
	return out
}

// list: GET /v1/dead-letters. The next page starts after next_after.
func (d *DeadLetters) list(w http.ResponseWriter, r *http.Request) {
	q := projection.ListQuery{Projection: r.URL.Query().Get("projection"), Entity: r.URL.Query().Get("entity"), Limit: 100}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > projection.MaxListLimit {
			writeError(w, http.StatusBadRequest, "limit must be a whole number from 1 to %d, got %q", projection.MaxListLimit, v)
			return
		}
		q.Limit = n
	}
	if v := r.URL.Query().Get("after"); v != "" {
		name, id, ok := strings.Cut(v, "/")
		u, err := uuid.Parse(id)
		if !ok || err != nil {
			writeError(w, http.StatusBadRequest, "after must be <projection>/<id> of the last sequence of the previous page, got %q", v)
			return
		}
		q.AfterProjection, q.After = name, u
	}
	seqs, err := d.Letters.List(r.Context(), q)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	items := make([]ParkedJSON, len(seqs))
	for i, s := range seqs {
		items[i] = parkedJSON(s)
	}
	out := map[string]any{"items": items}
	if len(seqs) == q.Limit {
		last := seqs[len(seqs)-1]
		out["next_after"] = last.Name + "/" + last.SequenceID.String()
	}
	writeJSON(w, http.StatusOK, out)
}

// target reads {projection}, {entity} and {id}.
func target(w http.ResponseWriter, r *http.Request) (projectionName, entity string, id uuid.UUID, ok bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "id %q is not a UUID", r.PathValue("id"))
		return "", "", uuid.Nil, false
	}
	return r.PathValue("projection"), r.PathValue("entity"), id, true
}

func (d *DeadLetters) show(w http.ResponseWriter, r *http.Request) {
	name, entity, id, ok := target(w, r)
	if !ok {
		return
	}
	det, err := d.Letters.Show(r.Context(), name, entity, id)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	out := ParkedDetailJSON{ParkedJSON: parkedJSON(det.Sequence), Parked: det.Sequence.Parked(),
		Events: make([]ParkedEventJSON, len(det.Events)), Actions: make([]ParkActionJSON, len(det.Actions))}
	for i, e := range det.Events {
		ej := ParkedEventJSON{Position: e.Position, Topic: e.Topic, Codec: e.Codec, NotificationID: e.NotificationID, ParkedAt: e.ParkedAt}
		if e.RecordPartition >= 0 {
			ej.Record = &RecordJSON{Topic: e.RecordTopic, Partition: e.RecordPartition, Offset: e.RecordOffset}
		}
		if (e.Codec == "" || e.Codec == events.CodecJSON) && json.Valid(e.State) {
			ej.State = e.State
		} else {
			ej.StateBase64 = e.State
		}
		out.Events[i] = ej
	}
	for i, a := range det.Actions {
		out.Actions[i] = ParkActionJSON{Action: string(a.Action), FirstPosition: a.Positions.From, LastPosition: a.Positions.To, Count: a.Count, Reason: a.Reason, At: a.At}
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *DeadLetters) retry(w http.ResponseWriter, r *http.Request) {
	name, entity, id, ok := target(w, r)
	if !ok {
		return
	}
	res, err := d.Letters.Retry(r.Context(), name, entity, id)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, retryJSON(res))
}

func (d *DeadLetters) retryAll(w http.ResponseWriter, r *http.Request) {
	results, err := d.Letters.RetryAll(r.Context(), r.URL.Query().Get("projection"), r.URL.Query().Get("entity"))
	out := make([]RetryJSON, len(results))
	for i, res := range results {
		out[i] = retryJSON(res)
	}
	if err != nil {
		if len(results) == 0 {
			d.fail(w, r, err)
			return
		}
		// Some were retried: say which, and why the rest were not.
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"results": out, "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

func (d *DeadLetters) skip(w http.ResponseWriter, r *http.Request) {
	name, entity, id, ok := target(w, r)
	if !ok {
		return
	}
	var req SkipRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, `the body must be {"reason": "why the events are skipped"}: %v`, err)
		return
	}
	res, err := d.Letters.Skip(r.Context(), name, entity, id, req.Reason)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, SkipJSON{Projection: res.Projection, Entity: res.Entity, ID: res.SequenceID,
		FirstPosition: res.Positions.From, LastPosition: res.Positions.To, Events: res.Events, Reason: res.Reason})
}

func (d *DeadLetters) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, projection.ErrUnknownProjection), errors.Is(err, projection.ErrNotParked):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, projection.ErrNoReason):
		writeError(w, http.StatusBadRequest, `%v: send {"reason": "..."}`, err)
	case errors.Is(err, projection.ErrNotParking):
		writeError(w, http.StatusConflict, "%v", err)
	default:
		if d.Log != nil {
			d.Log.ErrorContext(r.Context(), "dead letters", "err", err)
		}
		writeError(w, http.StatusServiceUnavailable, "the dead letters are not available (the projector logs why)")
	}
}
