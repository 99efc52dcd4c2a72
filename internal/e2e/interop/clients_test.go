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

// allCodecs: a client that reads every codec.
var allCodecs = map[string]bool{"none": true, "gzip": true, "snappy": true, "lz4": true, "zstd": true}

// script returns a reader that runs a client script (node client.cjs,
// python3 client.py: see interop/) with the plan.
func script(env []string, name string, args ...string) interop.Reader {
	return func(ctx context.Context, plan *interop.Plan) ([]interop.Record, error) {
		dir, err := os.MkdirTemp("", "eventlog-interop-client-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		planPath, err := plan.Write(dir)
		if err != nil {
			return nil, err
		}
		outPath := filepath.Join(dir, "records.jsonl")
		cmd := exec.CommandContext(ctx, name, append(args, planPath, outPath)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %s", filepath.Base(args[len(args)-1]), err, strings.TrimSpace(string(out)))
		}
		return interop.ReadRecords(outPath)
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
// there, each run going on from the offsets the one before committed. It
// reads every codec.
func TestKcat(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		interop.Unavailable(t, "kcat is not installed (apt-get install kcat)")
	}
	read := func(ctx context.Context, plan *interop.Plan) ([]interop.Record, error) {
		return kcatRead(ctx, kcat, plan)
	}
	d := dev.Get(t)
	interop.Seed(t, d, "kcat", read)
	interop.Codecs(t, d, "kcat", read, allCodecs, "")
}

func kcatRead(ctx context.Context, kcat string, plan *interop.Plan) ([]interop.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(plan.TimeoutMs)*time.Millisecond)
	defer cancel()
	if len(plan.Commands) > 0 {
		var in bytes.Buffer
		for _, c := range plan.Commands {
			v, _ := json.Marshal(c.Value)
			fmt.Fprintf(&in, "%s\t%s\n", c.Key, v)
		}
		produce := exec.CommandContext(ctx, kcat, "-P", "-b", plan.Brokers[0], "-t", plan.CommandsTopic, "-K", "\t")
		produce.Stdin = &in
		if out, err := produce.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("kcat -P: %w\n%s", err, out)
		}
	}
	var recs []interop.Record
	progress := plan.Progress()
	for runs := 1; !progress.Done(); runs++ {
		// The group reads from the start of the topics: a new group's default
		// is their end.
		args := append([]string{"-b", plan.Brokers[0], "-G", plan.Group, "-X", "auto.offset.reset=earliest", "-J", "-e", "-q"}, plan.ReadTopics...)
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, kcat, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if ctx.Err() != nil {
			return recs, fmt.Errorf("after %d kcat runs: %s; %s", runs, progress, stderr.String())
		}
		if err != nil {
			return recs, fmt.Errorf("kcat %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
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
				return recs, fmt.Errorf("kcat -J printed %q: %w", sc.Text(), err)
			}
			if m.Key == nil || !progress.Mine(*m.Key) {
				continue
			}
			r := interop.Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: *m.Key, Value: m.Payload}
			for i := 0; i+1 < len(m.Headers); i += 2 {
				r.Headers = append(r.Headers, []string{m.Headers[i], m.Headers[i+1]})
			}
			recs = append(recs, r)
			progress.Add(r)
		}
		if !progress.Done() {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return recs, nil
}

// kafkajs 2.2.4 from npm (interop/node), with its default settings: the
// producer's default (murmur2) partitioner, a consumer group, read_committed.
// It reads only uncompressed and gzip batches with no codec plugin.
func TestKafkaJS(t *testing.T) {
	t.Parallel()
	read := script([]string{"KAFKAJS_NO_PARTITIONER_WARNING=1"}, kafkajs(t), repoPath(t, "interop", "node", "client.cjs"))
	d := dev.Get(t)
	interop.Seed(t, d, "kafkajs", read)
	interop.Codecs(t, d, "kafkajs", read, map[string]bool{"none": true, "gzip": true}, "compression not implemented")
}

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
// auto.offset.reset=earliest, so that a new group reads from the start. It
// reads every codec.
func TestConfluentKafkaPython(t *testing.T) {
	t.Parallel()
	read := script(nil, confluentKafka(t), repoPath(t, "interop", "python", "client.py"))
	d := dev.Get(t)
	interop.Seed(t, d, "confluent-kafka-python", read)
	interop.Codecs(t, d, "confluent-kafka-python", read, allCodecs, "")
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
