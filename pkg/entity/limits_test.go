package entity_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
)

func attrs(n int, value string) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, n)
	for i := range n {
		m[fmt.Sprintf("a%d", i)] = json.RawMessage(value)
	}
	return m
}

func TestLimits(t *testing.T) {
	l := entity.Limits{MaxAttributes: 3, MaxValueBytes: 10}
	id := uuid.New()
	e, err := l.Create("example", id, attrs(3, `"12345678"`)) // 10 bytes each: at the limits
	if err != nil {
		t.Fatalf("at the limits: %v", err)
	}
	for _, tc := range []struct {
		name   string
		attrs  map[string]json.RawMessage
		limit  string
		max    int
		got    int
		phrase string
	}{
		{"too many", attrs(4, `1`), entity.LimitAttributes, 3, 4, "4 attributes, more than the limit of 3 per command (max-attributes)"},
		{"value too large", map[string]json.RawMessage{"big": json.RawMessage(`"123456789"`)}, entity.LimitValueBytes, 10, 11,
			`the value of attribute "big" is 11 bytes, more than the limit of 10 (max-attribute-bytes)`},
	} {
		for what, err := range map[string]error{
			"create": func() error { _, err := l.Create("example", uuid.New(), tc.attrs); return err }(),
			"update": l.Update(e, tc.attrs),
		} {
			var le *entity.LimitError
			if !errors.As(err, &le) || !errors.Is(err, entity.ErrInvalid) || le.Limit != tc.limit || le.Max != tc.max || le.Got != tc.got {
				t.Fatalf("%s, %s: %v, want a *LimitError %s %d/%d", tc.name, what, err, tc.limit, tc.got, tc.max)
			}
			if !strings.Contains(err.Error(), tc.phrase) {
				t.Fatalf("%s, %s: %q does not say %q", tc.name, what, err, tc.phrase)
			}
		}
	}
	if e.Version() != 1 || len(e.PendingEvents()) != 1 {
		t.Fatalf("a refused update changed the entity: version %d", e.Version())
	}
	// The defaults: MaxAttributes attributes, MaxValueBytes a value.
	if _, err := entity.Create("example", uuid.New(), attrs(entity.MaxAttributes+1, `1`)); !errors.Is(err, entity.ErrInvalid) {
		t.Fatalf("default attribute limit: %v", err)
	}
	big := json.RawMessage(`"` + strings.Repeat("x", entity.MaxValueBytes) + `"`)
	if _, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{"x": big}); !errors.Is(err, entity.ErrInvalid) {
		t.Fatalf("default value limit: %v", err)
	}
	if err := (entity.Limits{MaxAttributes: -1}).Validate(); err == nil {
		t.Fatal("negative limit validated")
	}
}
