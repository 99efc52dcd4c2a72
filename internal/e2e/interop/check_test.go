package interop_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/eventlog/eventlog/internal/e2e/interop"
	"github.com/eventlog/eventlog/pkg/wire"
)

// records returns what a client of plan reads when eventlog does everything
// right: each command's result, and each entity's events.
func records(plan *interop.Plan) []interop.Record {
	var out []interop.Record
	nid := int64(0)
	for i, c := range plan.Commands {
		pos := int64(i % 2)
		nid++
		topic, value := "example.Created", `{"timestamp":"2026-01-02T03:04:05Z","attributes":{"foo":"bar"}}`
		if pos == 1 {
			topic, value = "example.AttributeChanged", `{"timestamp":"2026-01-02T03:04:05Z","name":"foo","value":"baz"}`
		}
		out = append(out, interop.Record{Topic: plan.EventsTopic, Partition: int32(i / 2 % 4), Offset: int64(i), Key: c.Key, Value: value,
			Headers: [][]string{{"sequence-id", c.Key}, {"position", fmt.Sprint(pos)}, {"topic", topic}, {"notification-id", fmt.Sprint(nid)}, {"codec", "json"}}})
		nid++
		res, _ := json.Marshal(wire.Result{CommandID: c.Value.CommandID, Entity: "example", EntityID: c.Value.EntityID, Status: wire.StatusAccepted, Version: pos + 1, Positions: []int64{pos}})
		out = append(out, interop.Record{Topic: plan.ResultsTopic, Partition: int32(i / 2 % 4), Offset: int64(i), Key: c.Key, Value: string(res),
			Headers: [][]string{{"notification-id", fmt.Sprint(nid)}}})
	}
	return out
}

// Check finds nothing wrong in what eventlog sends, and something in each
// way it could go wrong.
func TestCheck(t *testing.T) {
	plan := interop.NewPlan("check", "127.0.0.1:1", 3)
	good := records(plan)
	if errs := plan.Check(good); len(errs) > 0 {
		t.Fatalf("the records eventlog sends: %s", interop.Errors(errs))
	}
	isEvent := func(r interop.Record) bool { return r.Topic == plan.EventsTopic }
	firstEvent := slices.IndexFunc(good, isEvent)
	setHeader := func(r *interop.Record, name, v string) {
		for _, h := range r.Headers {
			if h[0] == name {
				h[1] = v
			}
		}
	}
	for _, c := range []struct {
		name   string
		mutate func([]interop.Record) []interop.Record
		want   string
	}{
		{"an event missing", func(rs []interop.Record) []interop.Record { return slices.Delete(rs, firstEvent, firstEvent+1) }, "1 events, want 2"},
		{"an event twice", func(rs []interop.Record) []interop.Record { return slices.Insert(rs, firstEvent, rs[firstEvent]) }, "3 events, want 2"},
		{"events out of order", func(rs []interop.Record) []interop.Record {
			i := firstEvent + 2 // the same entity's update
			rs[firstEvent], rs[i] = rs[i], rs[firstEvent]
			return rs
		}, "want sequence-id"},
		{"no codec header", func(rs []interop.Record) []interop.Record {
			rs[firstEvent].Headers = rs[firstEvent].Headers[:4]
			return rs
		}, "no codec header"},
		{"a compressed state", func(rs []interop.Record) []interop.Record {
			setHeader(&rs[firstEvent], "codec", "json+zstd")
			return rs
		}, "codec json"},
		{"a notification id going back", func(rs []interop.Record) []interop.Record {
			setHeader(&rs[firstEvent+2], "notification-id", "0")
			return rs
		}, "notification-id"},
		{"a wrong value", func(rs []interop.Record) []interop.Record {
			rs[firstEvent+2].Value = strings.Replace(rs[firstEvent+2].Value, "baz", "bar", 1)
			return rs
		}, `want "baz"`},
		{"a value that is not JSON", func(rs []interop.Record) []interop.Record {
			rs[firstEvent].Value = "\x28\xb5\x2f\xfd"
			return rs
		}, "is not the JSON of an event"},
		{"a result missing", func(rs []interop.Record) []interop.Record { return slices.Delete(rs, firstEvent+1, firstEvent+2) }, "0 results, want 1"},
		{"a result twice", func(rs []interop.Record) []interop.Record { return append(rs, rs[firstEvent+1]) }, "2 results, want 1"},
		{"a rejected command", func(rs []interop.Record) []interop.Record {
			rs[firstEvent+1].Value = strings.Replace(rs[firstEvent+1].Value, "accepted", "rejected", 1)
			return rs
		}, "want key"},
		{"an event on another partition", func(rs []interop.Record) []interop.Record {
			rs[firstEvent+2].Partition++
			return rs
		}, "one partition"},
	} {
		recs := c.mutate(records(plan))
		errs := plan.Check(recs)
		if !strings.Contains(interop.Errors(errs), c.want) {
			t.Errorf("%s: Check found %q; want a problem saying %q", c.name, interop.Errors(errs), c.want)
		}
	}
}
