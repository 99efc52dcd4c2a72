package command_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Input the entity finds malformed is invalid, as the wire contract says:
// too many attributes, a value over the limit, a bad attribute name, a value
// that is not JSON. A refusal by the entity's state stays rejected.
func TestEntityInputIsInvalid(t *testing.T) {
	reg := command.NewRegistry(events.NewRegistry())
	if err := command.RegisterEntityLimits(reg, "example", entity.Limits{MaxAttributes: 2, MaxValueBytes: 8}); err != nil {
		t.Fatal(err)
	}
	rec := memory.New()
	w, err := command.NewWriter(rec, reg, events.NewMapper(reg.Events()), command.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, rec: &hookRecorder{Recorder: rec}, offset: map[int32]int64{}}
	live := uuid.New()
	e.handle(w, e.record(0, cmd("create", "example", live, `{"a": 1}`)))

	for _, tc := range []struct {
		name   string
		c      wire.Command
		status wire.Status
		says   string
	}{
		{"too many attributes", cmd("create", "example", uuid.New(), `{"a": 1, "b": 2, "c": 3}`), wire.StatusInvalid, "3 attributes, more than the limit of 2 per command (max-attributes)"},
		{"too many attributes in an update", cmd("update", "example", live, `{"a": 1, "b": 2, "c": 3}`), wire.StatusInvalid, "(max-attributes)"},
		{"value too large", cmd("update", "example", live, `{"a": "123456789"}`), wire.StatusInvalid, "(max-attribute-bytes)"},
		{"bad attribute name", cmd("create", "example", uuid.New(), `{"1bad": 1}`), wire.StatusInvalid, `attribute name "1bad"`},
		{"no attributes in an update", cmd("update", "example", live, `{}`), wire.StatusInvalid, "sets no attributes"},
		{"update of a missing entity", cmd("update", "example", uuid.New(), `{"a": 1}`), wire.StatusRejected, "does not exist"},
		{"create of an existing entity", cmd("create", "example", live, `{"a": 1}`), wire.StatusRejected, "already exists"},
	} {
		e.handle(w, e.record(0, tc.c))
		r := e.result(tc.c.CommandID)
		if r.Status != tc.status || !strings.Contains(r.Error, tc.says) {
			t.Errorf("%s: %s %q, want %s saying %q", tc.name, r.Status, r.Error, tc.status, tc.says)
		}
	}
	if n := e.eventCount(live); n != 1 {
		t.Fatalf("refused commands stored events: %d events", n)
	}

	// The sentinels are one value, so domain code that imports only package
	// events makes a command invalid too.
	_, err = entity.Limits{MaxAttributes: 1}.Create("example", uuid.New(), map[string]json.RawMessage{"a": json.RawMessage("1"), "b": json.RawMessage("2")})
	var le *entity.LimitError
	if !errors.Is(err, command.ErrInvalid) || !errors.Is(err, events.ErrInvalid) || !errors.As(err, &le) {
		t.Fatalf("entity limit error %v: not a command.ErrInvalid", err)
	}
	if !errors.Is(fmt.Errorf("x: %w", events.ErrInvalid), command.ErrInvalid) || !errors.Is(command.ErrUnknownEntity, entity.ErrInvalid) {
		t.Fatal("events.ErrInvalid, entity.ErrInvalid and command.ErrInvalid differ")
	}
}
