package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// writeForgotten answers 410 Gone for a forgotten entity: its id and type
// are all that is left of it.
func writeForgotten(w http.ResponseWriter, typ string, id uuid.UUID) {
	writeJSON(w, http.StatusGone, map[string]string{
		"error":     fmt.Sprintf("%s %s was forgotten: its data key is deleted and its events can no longer be read", typ, id),
		"forgotten": id.String(),
	})
}

func forgottenError(id uuid.UUID) error { return &events.ForgottenError{SequenceID: id} }

// ForgottenIn returns a ReadModels.Forgotten that asks rec: an entity is
// forgotten if the last item of its sequence is a tombstone.
func ForgottenIn(rec store.AggregateRecorder) func(ctx context.Context, id uuid.UUID) (bool, error) {
	return func(ctx context.Context, id uuid.UUID) (bool, error) {
		last, err := rec.SelectEvents(ctx, id, store.Query{Desc: true, Limit: 1})
		if err != nil {
			return false, err
		}
		return len(last) == 1 && events.IsForgottenTopic(last[0].Topic), nil
	}
}
