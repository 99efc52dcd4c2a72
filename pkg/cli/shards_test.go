package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/store/shard"
)

// Mistakes in the shard flags are refused before anything is opened.
func TestShardFlagErrors(t *testing.T) {
	a, b, c := "postgres://u@127.0.0.1:1/a", "postgres://u@127.0.0.1:1/b", "postgres://u@127.0.0.1:1/c"
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"writer", "-postgres-dsn", a, "-postgres-dsn", b, "-postgres-dsn", c, "-partitions", "4", "-http-addr", "127.0.0.1:0"}, nil,
			"-partitions 4: shard: layout mismatch: the commands topic has 4 partitions, which is not a multiple of the 3 shards: give it a multiple of 3 partitions (3 or 6, say)"},
		{[]string{"writer", "-partitions", "4", "-http-addr", "127.0.0.1:0"}, map[string]string{"EVENTLOG_POSTGRES_SHARDS": a + "," + b + "," + c},
			"not a multiple of the 3 shards"},
		{[]string{"dev", "-postgres-dsn", a, "-postgres-dsn", b, "-partitions", "3"}, nil, "-partitions 3: shard: layout mismatch"},
		{[]string{"writer", "-postgres-dsn", a, "-postgres-shards", a + "," + b, "-http-addr", "127.0.0.1:0"}, nil,
			"-postgres-dsn and -postgres-shards both name the store"},
		{[]string{"migrate", "-postgres-shards", a + "," + a}, nil, "shards 0 and 1 have the same DSN"},
		{[]string{"writer", "-postgres-dsn", a, "-postgres-dsn", b, "-postgres-read-dsn", c, "-http-addr", "127.0.0.1:0"}, nil,
			"-postgres-read-dsn names the replica of one database; a sharded store has none"},
	}
	for _, c := range cases {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cli.Main(ctx, c.args, cli.Env{Getenv: func(k string) string { return c.env[k] }, Stdout: &out, Stderr: &out})
		cancel()
		if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v (env %v): exit %d, %v; want exit 2 and %q", c.args, c.env, cli.ExitCode(err), err, c.want)
		}
	}
}

// TestShardedCLI migrates two databases as the shards of one store, refuses
// them in another layout, and runs dev over them: entities of both shards
// are written and read back through the HTTP API.
func TestShardedCLI(t *testing.T) {
	dsns := pgtest.Databases(t, 2)
	out, err := run(t, "migrate", "-postgres-dsn", dsns[0], "-postgres-dsn", dsns[1])
	if err != nil || !strings.Contains(out, "shard 0 of 2: schema \"public\" is at version") || !strings.Contains(out, "shard 1 of 2") {
		t.Fatalf("migrate of 2 shards: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "-postgres-dsn", dsns[1], "-postgres-dsn", dsns[0]}, "is shard 1 of 2, not shard 0 of 2"},
		{[]string{"migrate", "-postgres-dsn", dsns[0]}, "is shard 0 of a store of 2 shards, not a store of its own"},
		{[]string{"migrate", "-postgres-shards", dsns[0] + "," + dsns[1] + "," + pgtest.Databases(t, 1)[0]}, "is shard 0 of 2, not shard 0 of 3"},
	} {
		if out, err := run(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v\n%s; want %q", c.args[1:3], err, out, c.want)
		}
	}

	a := startDevWith(t, t.TempDir(), noEnv, "-postgres-dsn", dsns[0], "-postgres-dsn", dsns[1], "-partitions", "4")
	seen := map[int]bool{}
	sent := 0
	for i := 0; i < 8 || len(seen) < 2; i++ {
		if i > 40 {
			t.Fatalf("no entity on both shards after %d", i)
		}
		out, err := run(t, "send", "--kafka-brokers", a.broker, "--type", "create", "--entity", "example", "--attr", "foo=bar", "--json")
		if err != nil || !strings.Contains(out, `"status":"accepted"`) {
			t.Fatalf("send: %v\n%s", err, out)
		}
		id := between(out, `"entity_id":"`, `"`)
		seen[shard.ShardOf(uuid.MustParse(id), 2)] = true
		if out, err := run(t, "get", "--http-addr", a.http, "example", id); err != nil || !strings.Contains(out, "bar") {
			t.Fatalf("get %s: %v\n%s", id, err, out)
		}
		sent++
	}
	// rebuild reads every shard's log.
	out, err = run(t, "rebuild", "-postgres-dsn", dsns[0], "-postgres-dsn", dsns[1], "-json")
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	var res []cli.RebuildResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || res[0].Applied != int64(sent) || res[0].Notifications < int64(sent) {
		t.Fatalf("rebuild of %d entities over 2 shards: %v %s", sent, err, out)
	}
}

// rebuild on a store of one database, as before shards.
func TestRebuildOneDatabase(t *testing.T) {
	dsn := pgtest.Databases(t, 1)[0]
	a := startDevWith(t, t.TempDir(), noEnv, "-postgres-dsn", dsn)
	for range 3 {
		if out, err := run(t, "send", "--kafka-brokers", a.broker, "--type", "create", "--entity", "example", "--attr", "foo=bar", "--json"); err != nil || !strings.Contains(out, `"status":"accepted"`) {
			t.Fatalf("send: %v\n%s", err, out)
		}
	}
	out, err := run(t, "rebuild", "-postgres-dsn", dsn, "-json")
	var res []cli.RebuildResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || res[0].Applied != 3 {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
}
