package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/projection/readmodel"
	"github.com/eventlog/eventlog/pkg/store"
)

// Mux is the router the routes are added to.
type Mux = http.ServeMux

// A ReadModelQuerier answers read-model queries.
type ReadModelQuerier interface {
	Get(ctx context.Context, typ string, id uuid.UUID) (readmodel.Row, error)
	List(ctx context.Context, typ string, q readmodel.Query) ([]readmodel.Row, error)
}

// ReadModels serves the projector's API: read-model rows, filtered lists, and
// the projections' tracking positions and lag.
type ReadModels struct {
	Log   *slog.Logger
	Model ReadModelQuerier // nil: no read-model routes
	// Types are the entity types the read model keeps.
	Types []string
	// Lag and Stats return what GET /v1/projections shows.
	Lag, Stats func() any
	// Forgotten, if set, tells a forgotten entity (410 Gone) from an unknown
	// one (404) when the read model has no row for it; see ForgottenIn.
	Forgotten func(ctx context.Context, id uuid.UUID) (bool, error)
}

// Routes adds the routes to mux.
func (rm *ReadModels) Routes(mux *Mux) {
	if rm.Model != nil {
		mux.HandleFunc("GET /v1/read-models/{entity}/{id}", rm.get)
		mux.HandleFunc("GET /v1/read-models/{entity}", rm.list)
	}
	mux.HandleFunc("GET /v1/projections", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"lag": rm.Lag(), "stats": rm.Stats()})
	})
}

func (rm *ReadModels) knownType(w http.ResponseWriter, typ string) bool {
	if !slices.Contains(rm.Types, typ) {
		writeError(w, http.StatusNotFound, "the read model keeps no entity type %q", typ)
		return false
	}
	return true
}

func (rm *ReadModels) get(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("entity")
	if !rm.knownType(w, typ) {
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "entity id %q is not a UUID", r.PathValue("id"))
		return
	}
	row, err := rm.Model.Get(r.Context(), typ, id)
	if errors.Is(err, store.ErrNotFound) && rm.Forgotten != nil {
		if gone, ferr := rm.Forgotten(r.Context(), id); ferr == nil && gone {
			err = forgottenError(id)
		}
	}
	switch {
	case err == nil && !row.Discarded:
		writeJSON(w, http.StatusOK, row)
	case errors.Is(err, store.ErrForgotten):
		writeForgotten(w, typ, id)
	case err == nil || errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "%s %s not found in the read model", typ, id)
	default:
		rm.fail(w, r, err)
	}
}

// list: GET /v1/read-models/{entity}?<attr>=<value>&limit=N&after=<id>.
// A value that is valid JSON is compared as JSON (?n=3 matches the number 3,
// ?foo="3" the string); anything else as a string.
func (rm *ReadModels) list(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("entity")
	if !rm.knownType(w, typ) {
		return
	}
	q := readmodel.Query{Where: make(map[string]json.RawMessage)}
	for k, vs := range r.URL.Query() {
		v := vs[0]
		switch k {
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "limit must be a whole number, got %q", v)
				return
			}
			q.Limit = n
		case "after":
			id, err := uuid.Parse(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "after must be the last id of the previous page, got %q", v)
				return
			}
			q.After = id
		case "include_discarded":
			q.IncludeDiscarded = v == "true" || v == "1"
		default:
			q.Where[k] = readmodel.ParseValue(v)
		}
	}
	if err := q.Normalize(); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	rows, err := rm.Model.List(r.Context(), typ, q)
	if err != nil {
		rm.fail(w, r, err)
		return
	}
	out := map[string]any{"items": rows}
	if len(rows) == q.Limit && len(rows) > 0 {
		out["next_after"] = rows[len(rows)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

func (rm *ReadModels) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, readmodel.ErrQuery):
		writeError(w, http.StatusBadRequest, "%v", err)
	default:
		if rm.Log != nil {
			rm.Log.ErrorContext(r.Context(), "read model", "err", err)
		}
		writeError(w, http.StatusServiceUnavailable, "the read model is not available")
	}
}
