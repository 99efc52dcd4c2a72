package cli_test

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/eventlog/eventlog/pkg/cli"
)

// Bad workload flags fail at once with one line naming the flag.
func TestBenchFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-zipf", "1"}, "-zipf must be 0 (uniform) or a finite exponent above 1, got 1"},
		{[]string{"-zipf", "-2"}, "-zipf must be 0 (uniform) or a finite exponent above 1, got -2"},
		{[]string{"-zipf", "NaN"}, "-zipf must be 0"},
		{[]string{"-preload", "-1"}, "-preload must be from 0 to -entities-n (2000), got -1"},
		{[]string{"-preload", "2001"}, "-preload must be from 0 to -entities-n (2000), got 2001"},
		{[]string{"-duration", "-1s"}, "-duration must not be negative, got -1s"},
		{[]string{"-readers", "-1"}, "-readers must be from 0 to 1000, got -1"},
		{[]string{"-read-share", "1.5"}, "-read-share must be from 0 to 1, got 1.5"},
		{[]string{"-cache-size", "-2"}, "-cache-size must be -1 (none), 0 (the default) or a size, got -2"},
		{[]string{"-zipf", "x"}, `invalid value "x" for flag -zipf`},
		{[]string{"-kafka-brokers", "nohost"}, `-kafka-brokers: "nohost" must be host:port`},
	}
	for _, c := range cases {
		out, err := run(t, append([]string{"bench"}, c.args...)...)
		if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bench %v: exit %d, err %v, output %q; want exit 2 and %q", c.args, cli.ExitCode(err), err, out, c.want)
		}
	}
}

// A short mixed phase on the default store: commands flow at the rate while
// readers fetch entities, every read answered, Zipf-distributed over
// preloaded entities, with the process's RSS reported.
func TestBenchMixedPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole benchmark")
	}
	out, err := run(t, "bench", "-json", "-commands", "300", "-entities-n", "100", "-preload", "100", "-latency-for", "0",
		"-zipf", "1.1", "-duration", "2s", "-rate", "200", "-readers", "2", "-read-share", "1", "-cache-size", "50")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var res cli.BenchResult
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):strings.LastIndex(out, "}")+1]), &res); err != nil {
		t.Fatalf("bench -json: %v\n%s", err, out)
	}
	m := res.Mixed
	switch {
	case res.Commands != 300 || res.Preload != 100 || res.Zipf != 1.1:
		t.Errorf("workload %+v", res)
	case m == nil:
		t.Fatalf("no mixed phase in %s", out)
	case m.Commands < 200 || m.Unanswered != 0 || m.CommandP50ms <= 0 || m.CommandP99ms < m.CommandP50ms:
		t.Errorf("mixed phase's commands: %+v", m)
	case m.Reads < 10 || m.ReadErrors != 0 || m.ReadP50ms <= 0 || m.ReadP99ms < m.ReadP50ms || m.Readers != 2:
		t.Errorf("mixed phase's reads: %+v", m)
	case res.Rejected != 0:
		t.Errorf("%d commands rejected: an update went to an entity not created", res.Rejected)
	}
	if runtime.GOOS == "linux" && (res.RSSStart <= 0 || res.RSSEnd <= 0 || res.RSSPeak < res.RSSEnd) {
		t.Errorf("RSS start %d, end %d, peak %d", res.RSSStart, res.RSSEnd, res.RSSPeak)
	}
	if !strings.Contains(out, "RSS at start: ") {
		t.Errorf("the RSS at start is not printed: %s", out)
	}
}
