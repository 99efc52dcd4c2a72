package wire_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/wire"
)

const goodTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTraceParent(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"version 00", goodTP, goodTP},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"a later version, read as 00", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-adds", goodTP},
		{"a later version, exactly 55", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", goodTP},
		{"empty", "", ""},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"version 00 with more", goodTP + "-x", ""},
		{"later version, no dash after 55", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", ""},
		{"upper-case hex", strings.ToUpper(goodTP), ""},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"zero span id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""},
		{"short", goodTP[:54], ""},
		{"bad separator", strings.Replace(goodTP, "-", "_", 1), ""},
		{"not hex", strings.Replace(goodTP, "4bf9", "4bg9", 1), ""},
		{"bad flags", goodTP[:53] + "0x", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wire.TraceParent([]byte(tc.in)); got != tc.want {
				t.Fatalf("TraceParent(%q) = %q, want %q", tc.in, got, tc.want)
			}
			_, ok := wire.ParseTraceParent([]byte(tc.in))
			if ok != (tc.want != "") {
				t.Fatalf("ParseTraceParent(%q) ok = %v", tc.in, ok)
			}
		})
	}
	tc, _ := wire.ParseTraceParent([]byte(goodTP))
	if tc.Flags != 1 || tc.TraceID[0] != 0x4b || tc.SpanID[7] != 0xb7 || tc.String() != goodTP {
		t.Fatalf("parsed %+v, String %s", tc, tc.String())
	}
}

func TestTraceParentOf(t *testing.T) {
	hs := []wire.Header{{Key: "x", Value: []byte("y")}, {Key: wire.HeaderTraceParent, Value: []byte(goodTP)}}
	if got := wire.TraceParentOf(hs); got != goodTP {
		t.Fatalf("TraceParentOf = %q", got)
	}
	if got := wire.TraceParentOf(hs[:1]); got != "" {
		t.Fatalf("TraceParentOf without one = %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { wire.TraceParentOf(hs[:1]) }); n != 0 {
		t.Fatalf("TraceParentOf of headers without a traceparent allocates %v times", n)
	}
}

// An item's trace context goes out as the event record's traceparent header
// and comes back from it; an item without one has no such header.
func TestEventHeadersTraceParent(t *testing.T) {
	it := events.SequencedItem{SequenceID: uuid.New(), Position: 3, Topic: "example.Created", Codec: "json"}
	for _, tp := range []string{"", goodTP} {
		it.TraceParent = tp
		hs := wire.EventHeaders(it, 7)
		back, _, err := wire.DecodeEventHeaders(hs)
		if err != nil {
			t.Fatal(err)
		}
		if back.TraceParent != tp {
			t.Fatalf("traceparent %q came back as %q", tp, back.TraceParent)
		}
		has := false
		for _, h := range hs {
			has = has || h.Key == wire.HeaderTraceParent
		}
		if has != (tp != "") {
			t.Fatalf("traceparent %q: header present = %v", tp, has)
		}
	}
	// A malformed header is ignored, not an error: the trace is lost, the event is not.
	hs := append(wire.EventHeaders(it, 7)[:5], wire.Header{Key: wire.HeaderTraceParent, Value: []byte("garbage")})
	back, _, err := wire.DecodeEventHeaders(hs)
	if err != nil || back.TraceParent != "" {
		t.Fatalf("malformed traceparent: %q, %v", back.TraceParent, err)
	}
}

var traceParentRE = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

func FuzzTraceParent(f *testing.F) {
	f.Add([]byte(goodTP))
	f.Add([]byte("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"))
	f.Add([]byte("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	f.Fuzz(func(t *testing.T, v []byte) {
		got := wire.TraceParent(v)
		if got == "" {
			return
		}
		// What is stored and sent on is always a canonical version-00 value
		// that parses to the same context.
		if !traceParentRE.MatchString(got) || strings.HasPrefix(got, "00-00000000000000000000000000000000") {
			t.Fatalf("TraceParent(%q) = %q", v, got)
		}
		a, _ := wire.ParseTraceParent(v)
		b, ok := wire.ParseTraceParent([]byte(got))
		if !ok || a != b {
			t.Fatalf("%q parses to %+v, its canonical form %q to %+v", v, a, got, b)
		}
	})
}
