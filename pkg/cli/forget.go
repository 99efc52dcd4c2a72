package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
)

// Forget forgets one entity in the store: in one transaction it deletes the
// entity's data key, deletes its snapshots and appends a tombstone that the
// relay publishes and the projectors apply (the read-model row goes). Events
// written with -cipher-per-entity become unreadable everywhere they were
// stored or copied; the entity's id and type stay in the log.
func (p Program) Forget(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("forget")+" <entity> <id>", "Forget an entity: delete its data key (crypto-shredding); its events, snapshots and copies can no longer be read.", env.Stderr)
	var (
		s      storeFlags
		asJSON bool
	)
	s.register(fs, ".eventlog/eventlog.db")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON for scripts")
	fs.Local("json")
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
	all, err := backend.Recorder.SelectEvents(ctx, id, store.Query{})
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return fmt.Errorf("%s %s: %w", typ, id, store.ErrNotFound)
	}
	if got := events.EntityOf(all[0].Topic); got != typ {
		return fmt.Errorf("%s is a %s, not a %s: nothing forgotten", id, got, typ)
	}
	// Deleting the data key erases only what it encrypts: refuse to claim
	// an erasure of events stored readable.
	for _, it := range all {
		if events.IsForgottenTopic(it.Topic) {
			continue
		}
		if !strings.HasSuffix(it.Codec, "+"+events.EntityCodec) {
			codec := it.Codec
			if codec == "" {
				codec = events.CodecJSON
			}
			return fmt.Errorf("%s %s cannot be forgotten: its event at position %d is stored as %s, not encrypted with a key of its own, "+
				"so deleting a key would erase nothing. Entities written with -cipher-per-entity (and a cipher key) can be forgotten; "+
				"what was stored before in clear stays readable", typ, id, it.Position, codec)
		}
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
