package httpapi

import (
	"net/http"
	"slices"

	"github.com/eventlog/eventlog/internal/console"
)

// Info says what a service serves, for the console and for scripts: GET
// /v1/info. It holds names only: no address of a store, no key, no token.
type Info struct {
	// Program is the name of the program ("eventlog", or a user's own).
	Program string `json:"program"`
	// Service is what runs: "dev", "writer" or "projector".
	Service string `json:"service"`
	// Types are the entity types, with the commands they take where the
	// service takes commands.
	Types []TypeInfo `json:"entity_types"`
	// ReadModelTypes are the generic entity types the built-in read model
	// keeps: found by attribute at GET /v1/read-models/{entity}?attr=value.
	ReadModelTypes []string `json:"read_model_types,omitempty"`
	// Projections are the projections the service runs.
	Projections []string `json:"projections,omitempty"`
	// APIs are the parts of the API this service serves (filled in by the
	// Server): entities, notifications, streams, commands, read_models,
	// projections, dead_letters.
	APIs map[string]bool `json:"apis"`
}

// TypeInfo is one entity type.
type TypeInfo struct {
	Name string `json:"name"`
	// Kind is "attributes" for the generic attribute entity, "aggregate"
	// for a domain's own aggregate.
	Kind     string   `json:"kind"`
	Commands []string `json:"commands,omitempty"`
}

// Entity kinds of TypeInfo.
const (
	KindAttributes = "attributes"
	KindAggregate  = "aggregate"
)

// AddTypes adds types not there yet, and the commands of those there
// without.
func (i *Info) AddTypes(types ...TypeInfo) {
	for _, t := range types {
		at := slices.IndexFunc(i.Types, func(x TypeInfo) bool { return x.Name == t.Name })
		switch {
		case at < 0:
			i.Types = append(i.Types, t)
		case len(i.Types[at].Commands) == 0:
			i.Types[at].Commands = t.Commands
		}
	}
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	out := s.Info
	out.APIs = map[string]bool{
		"entities":      s.Entities != nil,
		"notifications": s.Entities != nil,
		"streams":       s.Entities != nil,
		"commands":      s.Commands != nil,
		"read_models":   len(s.Info.ReadModelTypes) > 0,
		"projections":   s.Info.Projections != nil,
		"dead_letters":  s.Info.Projections != nil,
	}
	if out.Types == nil {
		out.Types = []TypeInfo{}
	}
	writeJSON(w, http.StatusOK, out)
}

// consoleRoutes serves the console at /ui/, and sends / and /ui there.
func consoleRoutes(mux *Mux) {
	mux.Handle("GET /ui/", console.New())
	toUI := func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) }
	mux.HandleFunc("GET /ui", toUI)
	mux.HandleFunc("GET /{$}", toUI)
}
