package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

func init() {
	extra["forget"] = command{Forget, "forget an entity: delete its data key, so its events can no longer be read (crypto-shredding)"}
}

// Forget forgets one entity in the store: in one transaction it deletes the
// entity's data key, deletes its snapshots and appends a tombstone that the
// relay publishes and the projectors apply (the read-model row goes). Events
// written with -cipher-per-entity become unreadable everywhere they were
// stored or copied; the entity's id and type stay in the log.
func Forget(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog forget <entity> <id>", "Forget an entity: delete its data key (crypto-shredding); its events, snapshots and copies can no longer be read.", env.Stderr)
	var (
		s      storeFlags
		asJSON bool
	)
	s.register(fs, ".eventlog/eventlog.db")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON for scripts")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	typ, id, err := entityArgs(fs)
	if err != nil {
		return err
	}
	backend, closeStore, err := s.open(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer closeStore()
	kr, ok := backend.Recorder.(store.KeyRecorder)
	if !ok {
		return fmt.Errorf("the store %s keeps no data keys", backend.Name)
	}
	first, err := backend.Recorder.SelectEvents(ctx, id, store.Query{Limit: 1})
	if err != nil {
		return err
	}
	if len(first) == 0 {
		return fmt.Errorf("%s %s: %w", typ, id, store.ErrNotFound)
	}
	if got := events.EntityOf(first[0].Topic); got != typ {
		return fmt.Errorf("%s is a %s, not a %s: nothing forgotten", id, got, typ)
	}
	pos, err := kr.Forget(ctx, id)
	if errors.Is(err, store.ErrConflict) {
		pos, err = kr.Forget(ctx, id) // an append raced it: once more
	}
	if err != nil {
		return fmt.Errorf("forget %s %s: %w", typ, id, err)
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(map[string]any{"entity": typ, "id": id, "tombstone_position": pos})
	}
	fmt.Fprintf(env.Stdout, "forgot %s %s: its data key is deleted; tombstone at position %d\n", typ, id, pos)
	return nil
}
