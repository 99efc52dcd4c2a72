package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/e2e/interop"
	// The test runs eventlog built from this checkout (interop.StartDev): the
	// import makes the go command's cached result depend on eventlog's code.
	_ "github.com/eventlog/eventlog/pkg/cli"
)

// dev is the one `eventlog dev` of this package's tests, with its default
// settings.
var dev interop.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	if err := dev.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// entities is the number of entities of each client's scenario.
const entities = 4

// clientTimeout bounds one client's run.
const clientTimeout = 2 * time.Minute

// runClient runs a client script with the plan and returns the records it
// consumed. It fails t if the script fails.
func runClient(t *testing.T, plan *interop.Plan, env []string, name string, args ...string) []interop.Record {
	t.Helper()
	dir := t.TempDir()
	planPath, err := plan.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "records.jsonl")
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append(args, planPath, outPath)...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	recs, err := interop.ReadRecords(outPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d records in %s", filepath.Base(args[len(args)-1]), len(recs), time.Since(start).Round(time.Millisecond))
	return recs
}

// runClientErr runs a client script that is to fail, and returns its output
// and error.
func runClientErr(t *testing.T, plan *interop.Plan, env []string, name string, args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	planPath, err := plan.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append(args, planPath, filepath.Join(dir, "records.jsonl"))...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func check(t *testing.T, plan *interop.Plan, recs []interop.Record) {
	t.Helper()
	if errs := plan.Check(recs); len(errs) > 0 {
		t.Errorf("%d problems in what the client read:%s", len(errs), interop.Errors(errs))
	}
}

// repoPath returns a path inside the repository.
func repoPath(t *testing.T, elem ...string) string {
	t.Helper()
	root, err := interop.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// kcat (librdkafka 2.x) as a person at a terminal uses it: commands from
// stdin as key<TAB>value lines, then the results and events read in a
// balanced consumer group (-G) as JSON (-J), run again until everything is
// there, each run going on from the offsets the one before committed.
func TestKcat(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		interop.Unavailable(t, "kcat is not installed (apt-get install kcat)")
	}
	d := dev.Get(t)
	plan := interop.NewPlan("kcat", d.Broker, entities)
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()

	var in bytes.Buffer
	for _, c := range plan.Commands {
		v, _ := json.Marshal(c.Value)
		fmt.Fprintf(&in, "%s\t%s\n", c.Key, v)
	}
	produce := exec.CommandContext(ctx, kcat, "-P", "-b", d.Broker, "-t", plan.CommandsTopic, "-K", "\t")
	produce.Stdin = &in
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}

	mine := map[string]bool{}
	for _, id := range plan.Entities {
		mine[id] = true
	}
	var recs []interop.Record
	results, events := map[string]bool{}, map[string]int{}
	done := func() bool {
		for _, id := range plan.WantResults {
			if !results[id] {
				return false
			}
		}
		for _, id := range plan.Entities {
			if events[id] < plan.WantEvents[id] {
				return false
			}
		}
		return true
	}
	for runs := 1; !done(); runs++ {
		if ctx.Err() != nil {
			t.Fatalf("after %d kcat runs: %d results, events %v", runs, len(results), events)
		}
		args := append([]string{"-b", d.Broker, "-G", plan.Group, "-X", "auto.offset.reset=earliest", "-J", "-e", "-q"}, plan.ReadTopics...)
		out, err := exec.CommandContext(ctx, kcat, args...).Output()
		if err != nil {
			t.Fatalf("kcat %s: %v", strings.Join(args, " "), err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var m struct {
				Topic     string   `json:"topic"`
				Partition int32    `json:"partition"`
				Offset    int64    `json:"offset"`
				Headers   []string `json:"headers"` // name, value, name, value, ...
				Key       *string  `json:"key"`
				Payload   string   `json:"payload"`
			}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("kcat -J printed %q: %v", sc.Text(), err)
			}
			if m.Key == nil || !mine[*m.Key] {
				continue
			}
			r := interop.Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: *m.Key, Value: m.Payload}
			for i := 0; i+1 < len(m.Headers); i += 2 {
				r.Headers = append(r.Headers, []string{m.Headers[i], m.Headers[i+1]})
			}
			recs = append(recs, r)
			switch r.Topic {
			case plan.ResultsTopic:
				var res struct {
					CommandID string `json:"command_id"`
				}
				_ = json.Unmarshal([]byte(r.Value), &res)
				results[res.CommandID] = true
			case plan.EventsTopic:
				events[r.Key]++
			}
		}
		if !done() {
			time.Sleep(200 * time.Millisecond)
		}
	}
	check(t, plan, recs)
}

// kafkajs 2.2.4 from npm (interop/node), with its default settings: the
// producer's default (murmur2) partitioner, a consumer group, read_committed.
func TestKafkaJS(t *testing.T) {
	t.Parallel()
	node := kafkajs(t)
	d := dev.Get(t)
	plan := interop.NewPlan("kafkajs", d.Broker, entities)
	script := repoPath(t, "interop", "node", "client.cjs")
	recs := runClient(t, plan, kafkajsEnv, node, script)
	check(t, plan, recs)

	// The negative control: the same client fails on a batch compressed
	// with snappy, franz-go's default, the relay's before -kafka-compression.
	topic := "interop.snappy-" + plan.Group
	key := plan.Entities[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.Broker), kgo.AllowAutoTopicCreation(), kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var batch []*kgo.Record
	for range 20 {
		batch = append(batch, &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(`{"timestamp":"2026-01-01T00:00:00Z","name":"foo","value":"bazbazbazbazbazbazbaz"}`)})
	}
	if err := cl.ProduceSync(t.Context(), batch...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	snappy := &interop.Plan{Brokers: plan.Brokers, EventsTopic: topic, ReadTopics: []string{topic}, Group: plan.Group + "-snappy",
		Entities: []string{key}, WantEvents: map[string]int{key: len(batch)}, TimeoutMs: 30_000}
	out, err := runClientErr(t, snappy, kafkajsEnv, node, script)
	if err == nil || !strings.Contains(out, "Snappy compression not implemented") {
		t.Errorf("kafkajs read a snappy batch: %v\n%s\nwant KafkaJSNotImplemented: the negative control no longer tells", err, out)
	}
}

// kafkajsEnv silences kafkajs's notice that v2 changed its default partitioner.
var kafkajsEnv = []string{"KAFKAJS_NO_PARTITIONER_WARNING=1"}

// kafkajs returns node, with kafkajs installed in interop/node, or skips t.
func kafkajs(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		interop.Unavailable(t, "node is not installed (apt-get install nodejs npm)")
	}
	nodeModules(t)
	return node
}

var (
	npmOnce sync.Once
	npmErr  error
)

// nodeModules installs interop/node's packages (kafkajs, @asyncapi/specs)
// with npm ci, from its lock file, unless they are there; it skips t if they
// cannot be installed.
func nodeModules(t *testing.T) {
	t.Helper()
	dir := repoPath(t, "interop", "node")
	npmOnce.Do(func() {
		installed := true
		for _, p := range []string{"kafkajs", "@asyncapi/specs"} {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", p, "package.json")); err != nil {
				installed = false
			}
		}
		if installed {
			return
		}
		npm, err := exec.LookPath("npm")
		if err != nil {
			npmErr = fmt.Errorf("the packages of %s are not installed and npm is not installed (apt-get install npm)", dir)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if npmErr != nil {
		interop.Unavailable(t, "%v", npmErr)
	}
}

// confluent-kafka-python (librdkafka), with its default settings but for
// auto.offset.reset=earliest, so that a new group reads from the start.
func TestConfluentKafkaPython(t *testing.T) {
	t.Parallel()
	python := confluentKafka(t)
	d := dev.Get(t)
	plan := interop.NewPlan("confluent-kafka-python", d.Broker, entities)
	recs := runClient(t, plan, nil, python, repoPath(t, "interop", "python", "client.py"))
	check(t, plan, recs)
}

// confluentKafka returns a python3 that imports confluent_kafka (Debian's
// python3-confluent-kafka installs it for /usr/bin/python3), or skips t.
func confluentKafka(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "-c", "import confluent_kafka; print(confluent_kafka.version()[0], confluent_kafka.libversion()[0])").CombinedOutput()
		if err == nil {
			t.Logf("%s: confluent-kafka, librdkafka %s", path, strings.TrimSpace(string(out)))
			return path
		}
		tried = append(tried, path)
	}
	interop.Unavailable(t, "no python3 imports confluent_kafka (tried %v; apt-get install python3-confluent-kafka)", tried)
	return ""
}
