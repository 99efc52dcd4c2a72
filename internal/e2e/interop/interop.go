// Package interop checks eventlog's wire contract with the Kafka clients
// people use, each with its default settings, against `eventlog dev` run as a
// program (built from this checkout, on a temporary data directory and free
// ports, one per test package):
//
//   - kcat (librdkafka), confluent-kafka-python (librdkafka) and kafkajs, in
//     this package's tests (the scripts are under interop/ at the root of the
//     repository);
//   - sarama, a Go client other than franz-go, in the module interop/go, so
//     that eventlog's own module does not depend on it.
//
// Every client plays the seed scenario (Plan): for a few entities it produces
// a create with foo=bar and an update with foo=baz, keyed by entity id; in a
// consumer group it reads the results and the events topics from their
// start; and it hands back every record of its entities, with their headers,
// in the order it got them. Plan.Check then checks what the client saw: one
// accepted result per command at the right version, and for each entity its
// events in position order, none missing and none twice, with the headers
// sequence-id, position, topic, notification-id and codec and the JSON
// values the contract (docs/asyncapi.yaml) describes (Seed).
//
// Every client also reads a batch of each producer compression codec as
// eventlog's producers compress it (Codecs), and must read it or, for a
// codec it cannot read without a plugin (kafkajs: snappy, lz4, zstd), fail
// saying so: the README's compression table, tested.
//
// What the tests do not cover: the separate-process setup (writer,
// projector, `eventlog broker`), whose Kafka side is the same code; Kafka
// transactions and aborted records, which the relay does not write yet; the
// traceparent header, which nothing sets yet.
//
// The wire contract is also a document, docs/asyncapi.yaml (AsyncAPI 3.0).
// This package's TestContract sends dev every kind of command and bad input
// and validates each record that comes back (commands, results, events, dead
// letters: keys, headers, JSON values) against the document's schemas, with
// no field or header the document does not describe; TestContractRejects
// shows the schemas refuse records that break the contract, and
// TestAsyncAPIDocument validates the document against the AsyncAPI 3.0.0
// schema (npm's @asyncapi/specs) and package wire's topic and header names.
//
// A client that cannot be had (kcat, node or python3 not installed, kafkajs
// not installable with npm, confluent_kafka not importable) skips its test
// with a message saying how to install it; EVENTLOG_REQUIRE_CLIENTS=1, as set
// by .ci/run, turns the skip into a failure.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/wire"
)

// EnvRequire names the variable that turns a missing client into a failure.
const EnvRequire = "EVENTLOG_REQUIRE_CLIENTS"

// Topics are the topics of `eventlog dev`.
var Topics = wire.Topics{Prefix: wire.DefaultPrefix}

// Entity is the entity type of the scenario.
const Entity = "example"

// Unavailable skips t, saying why a client cannot be had, or fails it when
// EVENTLOG_REQUIRE_CLIENTS=1.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s (%s=1: every client must run; .ci/run installs them)", msg, EnvRequire)
	}
	t.Skipf("%s (skipped; %s=1 makes this a failure)", msg, EnvRequire)
}

// RepoRoot returns the directory of eventlog's module, as the go command of
// the current directory resolves it (the checkout, from this module or from
// one that replaces it with the checkout): where the client scripts are.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/eventlog/eventlog").Output()
	if err != nil {
		return "", fmt.Errorf("interop: go list eventlog's module: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ---------------------------------------------------------------------------
// eventlog dev as a program

// Dev is `eventlog dev` running as a child process.
type Dev struct {
	Broker string // the embedded broker's address
	HTTP   string // the API's base URL

	dir  string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, set before done is closed
}

// StartDev builds eventlog from this checkout (with the race detector if
// the test binary has it) and runs `eventlog dev` with a data directory of
// its own on free ports, with extra flags after its own. It returns once the
// API answers /readyz.
//
// The go command does not know that a test's result depends on the binary it
// builds: a package that uses StartDev imports eventlog's commands
// (pkg/cli), or is run with -count=1, so that a cached result is never one of
// older code.
func StartDev(ctx context.Context, extra ...string) (*Dev, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "eventlog-interop-")
	if err != nil {
		return nil, err
	}
	d := &Dev{dir: dir, log: filepath.Join(dir, "dev.log"), done: make(chan struct{})}
	bin := filepath.Join(dir, "eventlog")
	buildArgs := []string{"build", "-o", bin}
	if raceEnabled() {
		buildArgs = append(buildArgs, "-race")
	}
	build := exec.CommandContext(ctx, "go", append(buildArgs, "./cmd/eventlog")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("interop: build eventlog: %w\n%s", err, out)
	}
	broker, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	d.Broker, d.HTTP = broker, "http://"+httpAddr
	f, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	args := append([]string{"dev", "-data-dir", filepath.Join(dir, "data"), "-broker-addr", broker, "-http-addr", httpAddr, "-log-level", "warn"}, extra...)
	d.cmd = exec.Command(bin, args...)
	// No EVENTLOG_* variables: the flags say everything.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EVENTLOG_") {
			d.cmd.Env = append(d.cmd.Env, kv)
		}
	}
	d.cmd.Stdout, d.cmd.Stderr = f, f
	d.cmd.SysProcAttr = childAttr() // dies with the test binary, even one killed at its timeout
	if err := d.cmd.Start(); err != nil {
		f.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("interop: start eventlog dev: %w", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		f.Close()
		close(d.done)
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-d.done:
			err := fmt.Errorf("interop: eventlog dev exited at start: %v\n%s", d.err, d.Tail(30))
			d.Close()
			return nil, err
		case <-ctx.Done():
			d.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if ready(d.HTTP) {
			return d, nil
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("interop: eventlog dev not ready within 2 minutes\n%s", d.Tail(30))
			d.Close()
			return nil, err
		}
	}
}

// raceEnabled reports whether this binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

func ready(api string) bool {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(api + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Tail returns the last n lines of dev's output.
func (d *Dev) Tail(n int) string {
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close stops dev (SIGTERM, SIGKILL after 30s) and removes its directory. It
// returns an error if dev did not exit cleanly.
func (d *Dev) Close() error {
	var err error
	select {
	case <-d.done:
		err = fmt.Errorf("interop: eventlog dev had exited: %v", d.err)
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
			if d.err != nil {
				err = fmt.Errorf("interop: eventlog dev: %v\n%s", d.err, d.Tail(20))
			}
		case <-time.After(30 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			err = errors.New("interop: eventlog dev did not stop within 30s of SIGTERM")
		}
	}
	os.RemoveAll(d.dir)
	return err
}

// Shared is one `eventlog dev` for the tests of a package, started by the
// first test that asks for it.
type Shared struct {
	Extra []string // flags of eventlog dev

	once sync.Once
	dev  *Dev
	err  error
}

// Get returns the shared dev, starting it if need be; it fails t if dev
// cannot start.
func (s *Shared) Get(t testing.TB) *Dev {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s.dev, s.err = StartDev(ctx, s.Extra...)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.dev
}

// Close stops the shared dev, if it was started. Call it from TestMain after
// the tests.
func (s *Shared) Close() error {
	if s.dev == nil {
		return nil
	}
	return s.dev.Close()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// ---------------------------------------------------------------------------
// The seed scenario

// A Plan is what one client does, as the client scripts read it (JSON).
type Plan struct {
	Brokers       []string `json:"brokers"`
	CommandsTopic string   `json:"commands_topic"`
	ResultsTopic  string   `json:"results_topic"`
	EventsTopic   string   `json:"events_topic"`
	// ReadTopics are the topics the client's consumer group subscribes to,
	// from their start.
	ReadTopics []string `json:"read_topics"`
	Group      string   `json:"group"`
	// Commands are the records to produce, in this order: key the entity id,
	// value the envelope (a JSON object the client encodes itself).
	Commands []CommandRecord `json:"commands"`
	// Entities are the keys whose records the client keeps.
	Entities []string `json:"entities"`
	// The client is done when it has a result of each of WantResults (command
	// ids) and WantEvents[id] events of each entity.
	WantResults []string       `json:"want_results"`
	WantEvents  map[string]int `json:"want_events"`
	TimeoutMs   int            `json:"timeout_ms"`

	// What Check expects: the command of each command id and, per entity,
	// the values of its events.
	cmds map[string]wire.Command
	seed map[string][]string // entity id -> the attribute foo of each event
}

// A CommandRecord is a command to produce.
type CommandRecord struct {
	Key   string       `json:"key"`
	Value wire.Command `json:"value"`
}

// Seed attributes.
const (
	seedAttr    = "foo"
	seedCreated = "bar"
	seedUpdated = "baz"
)

// NewPlan returns the seed scenario of client (a name for its consumer group)
// against broker: n entities, each created with foo=bar and then updated with
// foo=baz, both commands produced at once, in that order, keyed by the
// entity's id.
func NewPlan(client, broker string, n int) *Plan {
	p := &Plan{
		Brokers: []string{broker}, CommandsTopic: Topics.Commands(), ResultsTopic: Topics.Results(), EventsTopic: Topics.Events(Entity),
		ReadTopics: []string{Topics.Results(), Topics.Events(Entity)},
		Group:      "interop-" + client + "-" + randHex(4),
		WantEvents: map[string]int{}, TimeoutMs: 90_000,
		cmds: map[string]wire.Command{}, seed: map[string][]string{},
	}
	for range n {
		id := uuid.New()
		p.Entities = append(p.Entities, id.String())
		p.WantEvents[id.String()] = 2
		p.seed[id.String()] = []string{seedCreated, seedUpdated}
		for i, c := range []struct{ typ, foo string }{{wire.TypeCreate, seedCreated}, {wire.TypeUpdate, seedUpdated}} {
			cmd := wire.Command{CommandID: uuid.New(), Type: c.typ, Entity: Entity, EntityID: id,
				Data: json.RawMessage(`{"` + seedAttr + `":"` + c.foo + `"}`)}
			if i == 0 {
				zero := int64(0)
				cmd.ExpectedVersion = &zero // the entity must not exist yet
			}
			p.Commands = append(p.Commands, CommandRecord{Key: id.String(), Value: cmd})
			p.WantResults = append(p.WantResults, cmd.CommandID.String())
			p.cmds[cmd.CommandID.String()] = cmd
		}
	}
	return p
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Write writes the plan as JSON to a file in dir and returns its path.
func (p *Plan) Write(dir string) (string, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "plan.json")
	return path, os.WriteFile(path, b, 0o644)
}

// A Record is a record a client consumed, as the client scripts write it
// (one JSON object a line).
type Record struct {
	Topic     string     `json:"topic"`
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	Key       string     `json:"key"`
	Headers   [][]string `json:"headers"` // [name, value] pairs, in the record's order
	Value     string     `json:"value"`
}

// Header returns the value of the header name and whether there is one; more
// than one is an error.
func (r Record) Header(name string) (string, bool, error) {
	var v string
	var n int
	for _, h := range r.Headers {
		if len(h) == 2 && h[0] == name {
			v, n = h[1], n+1
		}
	}
	if n > 1 {
		return "", false, fmt.Errorf("%d %s headers", n, name)
	}
	return v, n == 1, nil
}

// ReadRecords reads the records a client script wrote to path.
func ReadRecords(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("interop: %s: %q: %w", path, sc.Text(), err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

var decimal = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

// Check checks the records a client consumed against the plan and returns
// every problem found (none: the client completed the scenario):
//
//   - every command has exactly one result, keyed by its entity id, accepted,
//     at version 1 for the create and 2 for the update, with the position of
//     its event;
//   - every entity has exactly its two events, in position order 0, 1 on one
//     partition at increasing offsets, keyed by its id, with the headers
//     sequence-id (its id), position, topic (example.Created, then
//     example.AttributeChanged), notification-id (a number, increasing) and
//     codec (json), and plain JSON values: attributes {"foo":"bar"}, then
//     name foo, value "baz";
//   - folding the events gives foo=baz.
func (p *Plan) Check(recs []Record) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	results := map[string]int{}
	evs := map[string][]Record{}
	for _, r := range recs {
		switch r.Topic {
		case p.ResultsTopic:
			var res wire.Result
			if err := json.Unmarshal([]byte(r.Value), &res); err != nil {
				bad("result %s/%d@%d: %v: %s", r.Topic, r.Partition, r.Offset, err, r.Value)
				continue
			}
			id := res.CommandID.String()
			results[id]++
			cmd, ok := p.cmds[id]
			if !ok {
				bad("a result of command %s, which the client did not send: %s", id, r.Value)
				continue
			}
			wantVersion, wantPos := int64(1), int64(0)
			if cmd.Type == wire.TypeUpdate {
				wantVersion, wantPos = 2, 1
			}
			if r.Key != cmd.EntityID.String() || res.Status != wire.StatusAccepted || res.Entity != Entity || res.EntityID != cmd.EntityID ||
				res.Version != wantVersion || len(res.Positions) != 1 || res.Positions[0] != wantPos || res.Error != "" {
				bad("result of %s %s: key %s, %s; want key %s, accepted, version %d, positions [%d]", cmd.Type, id, r.Key, r.Value, cmd.EntityID, wantVersion, wantPos)
			}
		case p.EventsTopic:
			evs[r.Key] = append(evs[r.Key], r)
		default:
			bad("a record of topic %s, which the client was not to read", r.Topic)
		}
	}
	for _, id := range p.WantResults {
		if n := results[id]; n != 1 {
			bad("command %s (%s): %d results, want 1", id, p.cmds[id].Type, n)
		}
	}
	for _, id := range p.Entities {
		errs = append(errs, p.checkEvents(id, evs[id])...)
	}
	return errs
}

func (p *Plan) checkEvents(id string, evs []Record) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("entity %s: "+format, append([]any{id}, args...)...))
	}
	want := p.seed[id]
	if len(evs) != len(want) {
		bad("%d events, want %d (positions 0 to %d, each once)", len(evs), len(want), len(want)-1)
	}
	lastNID := int64(-1)
	state := map[string]json.RawMessage{}
	for i, r := range evs {
		at := fmt.Sprintf("event %d (%s/%d@%d)", i, r.Topic, r.Partition, r.Offset)
		if i > 0 && (r.Partition != evs[0].Partition || r.Offset <= evs[i-1].Offset) {
			bad("%s after %s/%d@%d: want one partition, increasing offsets", at, evs[i-1].Topic, evs[i-1].Partition, evs[i-1].Offset)
		}
		h := map[string]string{}
		for _, name := range []string{wire.HeaderSequenceID, wire.HeaderPosition, wire.HeaderTopic, wire.HeaderNotificationID, wire.HeaderCodec} {
			v, ok, err := r.Header(name)
			switch {
			case err != nil:
				bad("%s: %v", at, err)
			case !ok:
				bad("%s has no %s header (headers %v)", at, name, r.Headers)
			}
			h[name] = v
		}
		wantTopic := Entity + "." + "AttributeChanged"
		if i == 0 {
			wantTopic = Entity + "." + "Created"
		}
		if h[wire.HeaderSequenceID] != id || h[wire.HeaderPosition] != strconv.Itoa(i) || h[wire.HeaderTopic] != wantTopic || h[wire.HeaderCodec] != events.CodecJSON {
			bad("%s: headers %v; want sequence-id %s, position %d, topic %s, codec %s", at, r.Headers, id, i, wantTopic, events.CodecJSON)
		}
		if nid, err := strconv.ParseInt(h[wire.HeaderNotificationID], 10, 64); err != nil || !decimal.MatchString(h[wire.HeaderNotificationID]) || nid <= lastNID {
			bad("%s: notification-id %q; want a number above %d", at, h[wire.HeaderNotificationID], lastNID)
		} else {
			lastNID = nid
		}
		var v struct {
			Timestamp  time.Time                  `json:"timestamp"`
			Attributes map[string]json.RawMessage `json:"attributes"`
			Name       string                     `json:"name"`
			Value      json.RawMessage            `json:"value"`
		}
		if err := json.Unmarshal([]byte(r.Value), &v); err != nil || v.Timestamp.IsZero() {
			bad("%s: value %q is not the JSON of an event with a timestamp: %v", at, r.Value, err)
			continue
		}
		switch {
		case i == 0 && len(v.Attributes) == 1 && v.Name == "":
			maps.Copy(state, v.Attributes)
		case i > 0 && v.Attributes == nil && v.Name != "":
			state[v.Name] = v.Value
		default:
			bad("%s: value %s is not a %s", at, r.Value, wantTopic)
			continue
		}
		if i < len(want) && string(state[seedAttr]) != `"`+want[i]+`"` {
			bad("%s: foo is %s after it, want %q", at, state[seedAttr], want[i])
		}
	}
	return errs
}

// Errors joins the problems Check found, one a line.
func Errors(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Compression codecs

// CodecBatch is the number of records ProduceCompressed produces.
const CodecBatch = 20

// ProduceCompressed produces CodecBatch records of JSON that compresses well
// to topic at broker, keyed by key, in batches compressed with codec as
// eventlog's producers compress them (kafka.ProducerCompression). It returns
// the plan of a client that is to read them back: ReadTopics and EventsTopic
// the topic, WantEvents[key] CodecBatch, no commands.
func ProduceCompressed(ctx context.Context, broker, topic, key, codec string) (*Plan, error) {
	opt, err := kafka.ProducerCompression(codec)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.AllowAutoTopicCreation(), kgo.ProducerLinger(time.Second), opt)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range CodecBatch {
		v := fmt.Sprintf(`{"timestamp":"2026-01-02T03:04:05Z","name":"foo","value":"%s%d"}`, strings.Repeat("baz", 20), i)
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(v)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, fmt.Errorf("interop: produce %s batches to %s: %w", codec, topic, err)
	}
	return &Plan{
		Brokers: []string{broker}, EventsTopic: topic, ReadTopics: []string{topic}, Group: "interop-codec-" + randHex(4),
		Commands: []CommandRecord{}, Entities: []string{key}, WantResults: []string{}, WantEvents: map[string]int{key: CodecBatch},
		TimeoutMs: 30_000,
	}, nil
}

// A Reader runs a client on a plan: it produces the plan's commands, reads
// the plan's topics in the plan's consumer group until it has what the plan
// waits for (Plan.Progress), and returns the records it kept, or why it
// failed.
type Reader func(ctx context.Context, plan *Plan) ([]Record, error)

// SeedEntities is the number of entities of each client's seed scenario.
const SeedEntities = 4

// ClientTimeout bounds one run of a client.
const ClientTimeout = 2 * time.Minute

// Seed plays the seed scenario (NewPlan) with a client against d and checks
// what it read (Plan.Check).
func Seed(t *testing.T, d *Dev, client string, read Reader) {
	t.Helper()
	plan := NewPlan(client, d.Broker, SeedEntities)
	ctx, cancel := context.WithTimeout(t.Context(), ClientTimeout)
	defer cancel()
	start := time.Now()
	recs, err := read(ctx, plan)
	if err != nil {
		t.Fatalf("%s: %v", client, err)
	}
	t.Logf("%s: the seed scenario, %d records read in %s", client, len(recs), time.Since(start).Round(time.Millisecond))
	if errs := plan.Check(recs); len(errs) > 0 {
		t.Errorf("%d problems in what %s read:%s", len(errs), client, Errors(errs))
	}
}

// Codecs checks which producer compression codecs a client reads with its
// default settings: for each codec (kafka.CompressionNames), a batch as
// eventlog's producers compress it, to a topic of its own
// (ProduceCompressed), which the client reads back, or fails on, as readable
// says; a failure must say unreadable, so that one for another reason does
// not pass. So the README's compression table is a test, and a client that
// cannot read a codec is the negative control of the default.
func Codecs(t *testing.T, d *Dev, client string, read Reader, readable map[string]bool, unreadable string) {
	t.Helper()
	for _, codec := range kafka.CompressionNames() {
		t.Run("compression="+codec, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), ClientTimeout)
			defer cancel()
			plan, err := ProduceCompressed(ctx, d.Broker, "interop.codec."+client+"."+codec+"."+randHex(4), uuid.NewString(), codec)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := read(ctx, plan)
			switch {
			case readable[codec] && err != nil:
				t.Errorf("%s cannot read %s batches: %v", client, codec, err)
			case readable[codec] && len(recs) != CodecBatch:
				t.Errorf("%s read %d records of %s batches, want %d", client, len(recs), codec, CodecBatch)
			case !readable[codec] && err == nil:
				t.Errorf("%s read %s batches, which it is not to read with no plugin: update the README's compression table", client, codec)
			case !readable[codec] && !strings.Contains(err.Error(), unreadable):
				t.Errorf("%s failed on %s batches, but not saying %q: %v", client, codec, unreadable, err)
			case !readable[codec]:
				msg := strings.TrimSpace(err.Error())
				t.Logf("%s cannot read %s batches, as expected: %s", client, codec, msg[strings.LastIndex(msg, "\n")+1:])
			}
		})
	}
}

// Progress tracks what a client has read of a plan.
type Progress struct {
	plan    *Plan
	results map[string]bool
	events  map[string]int
	mine    map[string]bool
}

// Progress returns a tracker of what a client has read of p.
func (p *Plan) Progress() *Progress {
	g := &Progress{plan: p, results: map[string]bool{}, events: map[string]int{}, mine: map[string]bool{}}
	for _, id := range p.Entities {
		g.mine[id] = true
	}
	return g
}

// Mine reports whether a record of key is one the client keeps.
func (g *Progress) Mine(key string) bool { return g.mine[key] }

// Add counts a record the client kept.
func (g *Progress) Add(r Record) {
	switch r.Topic {
	case g.plan.ResultsTopic:
		var res struct {
			CommandID string `json:"command_id"`
		}
		_ = json.Unmarshal([]byte(r.Value), &res)
		g.results[res.CommandID] = true
	case g.plan.EventsTopic:
		g.events[r.Key]++
	}
}

// Done reports whether the client has read everything the plan waits for.
func (g *Progress) Done() bool {
	for _, id := range g.plan.WantResults {
		if !g.results[id] {
			return false
		}
	}
	for _, id := range g.plan.Entities {
		if g.events[id] < g.plan.WantEvents[id] {
			return false
		}
	}
	return true
}

func (g *Progress) String() string {
	return fmt.Sprintf("results %d of %d, events %v", len(g.results), len(g.plan.WantResults), g.events)
}
