package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/wire"
)

// attrFlag collects --attr name=value; a value that is valid JSON is taken as
// JSON, anything else as a string.
type attrFlag map[string]json.RawMessage

func (a attrFlag) String() string { return "" }

func (a attrFlag) Set(v string) error {
	name, val, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=value, got %q", v)
	}
	if json.Valid([]byte(val)) {
		a[name] = json.RawMessage(val)
	} else {
		b, _ := json.Marshal(val)
		a[name] = b
	}
	return nil
}

// Send builds a command from flags and produces it to Kafka.
func (p Program) Send(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("send"), "Send a command over Kafka. Example:\n  "+p.name("send")+" --type create --entity example --attr foo=bar --wait", env.Stderr)
	var (
		k        kafkaFlags
		typ, ent string
		id       string
		expected int64
		wait     bool
		timeout  time.Duration
		asJSON   bool
		attrs    = attrFlag{}
		data     string
	)
	k.register(fs, "127.0.0.1:9092")
	fs.StringVar(&typ, "type", "create", "command type: create, update, discard or a custom one")
	fs.StringVar(&ent, "entity", "example", "entity type")
	fs.StringVar(&id, "id", "", "entity id (if empty, a new one, except for update and discard)")
	fs.Var(attrs, "attr", "attribute name=value of the generic entity (repeatable); JSON values are kept as JSON, others are strings")
	fs.StringVar(&data, "data", "", "the command's data, a JSON object (for commands of your own aggregates)")
	fs.Int64Var(&expected, "expected-version", -1, "apply only if the entity is at this version (0: must not exist)")
	fs.BoolVar(&wait, "wait", true, "wait for the command's result")
	fs.DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for the result")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.Local("type", "entity", "id", "attr", "data", "expected-version", "wait", "timeout", "json")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := k.check(); err != nil {
		return UsageError{err}
	}
	cmd := wire.Command{CommandID: uuid.New(), Type: typ, Entity: ent}
	switch {
	case id != "":
		u, err := uuid.Parse(id)
		if err != nil {
			return UsageError{fmt.Errorf("-id %q is not a UUID: %v", id, err)}
		}
		cmd.EntityID = u
	case typ == wire.TypeUpdate || typ == wire.TypeDiscard:
		return UsageError{fmt.Errorf("-id is required for a %s command", typ)}
	default:
		cmd.EntityID = uuid.New()
	}
	if expected >= 0 {
		cmd.ExpectedVersion = &expected
	}
	switch {
	case len(attrs) > 0 && data != "":
		return UsageError{errors.New("give -attr or -data, not both")}
	case len(attrs) > 0:
		cmd.Data, _ = json.Marshal(map[string]json.RawMessage(attrs))
	case data != "":
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(data), &obj); err != nil || obj == nil {
			return UsageError{fmt.Errorf("-data must be a JSON object, for example '{\"amount\": 100}': %q", data)}
		}
		cmd.Data = json.RawMessage(data)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := k.ping(ctx); err != nil {
		return err
	}
	cl, err := kgo.NewClient(k.clientOptions(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	topics := wire.Topics{Prefix: k.prefix}
	if !wait {
		b, _ := json.Marshal(cmd)
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(cmd.EntityID.String()), Value: b}).FirstErr(); err != nil {
			return fmt.Errorf("cannot send to Kafka at %s: %w (is the broker running? start one with: %s)", k.brokers, err, p.name("dev"))
		}
		return printSent(env, cmd, asJSON)
	}
	c, err := kafka.NewCommander(cl, kafka.CommanderConfig{Topics: topics, ClientOptions: k.clientOptions()})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	res, err := c.Do(ctx, cmd)
	stop()
	<-done
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no result for command %s within %s: is a writer running? (%s runs one)", cmd.CommandID, timeout, p.name("dev"))
		}
		return fmt.Errorf("cannot send to Kafka at %s: %w (is the broker running? start one with: %s)", k.brokers, err, p.name("dev"))
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(res)
	}
	fmt.Fprintf(env.Stdout, "%s: %s %s %s, version %d", res.Status, typ, ent, res.EntityID, res.Version)
	if len(res.Positions) > 0 {
		fmt.Fprintf(env.Stdout, ", events at positions %v", res.Positions)
	}
	if res.Error != "" {
		fmt.Fprintf(env.Stdout, "\n  reason: %s", res.Error)
	}
	fmt.Fprintln(env.Stdout)
	if res.Status != wire.StatusAccepted {
		return fmt.Errorf("command %s", res.Status)
	}
	return nil
}

func printSent(env Env, cmd wire.Command, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(cmd)
	}
	fmt.Fprintf(env.Stdout, "sent %s %s %s (command %s)\n", cmd.Type, cmd.Entity, cmd.EntityID, cmd.CommandID)
	return nil
}

// apiGet GETs a path of the HTTP API into v, with the bearer token if one
// is given.
func apiGet(ctx context.Context, base, token, path string, v any) error {
	return callAPI(ctx, apiEndpoint{base: base, token: token, flag: "-http-addr",
		unreachable: "the HTTP API at %s: %v (is a dev or writer service running? check -http-addr)"}, "GET", path, nil, v)
}

// apiEndpoint is an eventlog HTTP API the CLI calls: its address, the bearer
// token, the flag that sets the address and what to say when it is down
// (a format of the address and the error).
type apiEndpoint struct {
	base, token, flag, unreachable string
}

// apiError is the message of an API's answer other than 200.
type apiError string

func (e apiError) Error() string { return string(e) }

// callAPI sends body (as JSON, if not nil) to the path of the endpoint and
// decodes a 200 answer into out (if not nil). Any other status is an
// apiError with the API's message.
func callAPI(ctx context.Context, a apiEndpoint, method, path string, body, out any) error {
	base := a.base
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return UsageError{fmt.Errorf("%s: %v", a.flag, err)}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	setToken(req, a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach "+a.unreachable, base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(b, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return apiError(e.Error)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func entityArgs(fs *config.FlagSet) (string, uuid.UUID, error) {
	if fs.NArg() != 2 {
		return "", uuid.Nil, UsageError{errors.New("want <entity> <id>, for example: example 5b0c93e4-1f6e-4c1b-9a1e-2f7d3c8b9a10")}
	}
	id, err := uuid.Parse(fs.Arg(1))
	if err != nil {
		return "", uuid.Nil, UsageError{fmt.Errorf("entity id %q is not a UUID: %v", fs.Arg(1), err)}
	}
	return fs.Arg(0), id, nil
}

// parseWithArgs parses flags that may come before, between or after positional
// arguments ("get example <id> --version 2").
func parseWithArgs(fs *config.FlagSet, args []string, env Env) error {
	fs.Positional = true
	var pos, flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && !isBoolFlag(fs, a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return parse(fs, append(append(flags, "--"), pos...), env)
}

func isBoolFlag(fs *config.FlagSet, arg string) bool {
	f := fs.Lookup(strings.TrimLeft(arg, "-"))
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// minVersionUsage is the usage of get's and events' -min-version.
const minVersionUsage = "wait (a few seconds at most) until the entity has reached this version where the API reads it (a replica may lag): the version a command's result reported, to read your own write"

// Get shows an entity rebuilt from its events.
func (p Program) Get(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("get")+" <entity> <id>", "Show an entity rebuilt from its events (through the HTTP API).", env.Stderr)
	var (
		addr    string
		token   string
		version int64
		minV    int64
		asJSON  bool
	)
	fs.StringVar(&addr, "http-addr", "127.0.0.1:8080", "the writer's HTTP API")
	registerToken(fs, &token)
	fs.Int64Var(&version, "version", 0, "show the entity as it was at this version")
	fs.Int64Var(&minV, "min-version", 0, minVersionUsage)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.Local("version", "min-version", "json")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	typ, id, err := entityArgs(fs)
	if err != nil {
		return err
	}
	q := url.Values{}
	if version > 0 {
		q.Set("version", strconv.FormatInt(version, 10))
	}
	if minV > 0 {
		q.Set("min_version", strconv.FormatInt(minV, 10))
	}
	path := "/v1/entities/" + url.PathEscape(typ) + "/" + id.String()
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var e service.EntityView
	if err := apiGet(ctx, addr, token, path, &e); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(e)
	}
	fmt.Fprintf(env.Stdout, "%s %s  version %d\n", e.Entity, e.ID, e.Version)
	if e.State != nil {
		var b bytes.Buffer
		if json.Indent(&b, e.State, "  ", "  ") == nil {
			fmt.Fprintf(env.Stdout, "  %s\n", b.String())
		}
		return nil
	}
	names := make([]string, 0, len(e.Attributes))
	for n := range e.Attributes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(env.Stdout, "  %s = %s\n", n, e.Attributes[n])
	}
	return nil
}

// Events lists the stored events of one entity.
func (p Program) Events(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("events")+" <entity> <id>", "List the stored events of one entity (through the HTTP API).", env.Stderr)
	var (
		addr   string
		token  string
		minV   int64
		asJSON bool
	)
	fs.StringVar(&addr, "http-addr", "127.0.0.1:8080", "the writer's HTTP API")
	registerToken(fs, &token)
	fs.Int64Var(&minV, "min-version", 0, minVersionUsage)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.Local("min-version", "json")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	typ, id, err := entityArgs(fs)
	if err != nil {
		return err
	}
	var out struct {
		Events []httpapi.EventJSON `json:"events"`
	}
	path := "/v1/entities/" + url.PathEscape(typ) + "/" + id.String() + "/events"
	if minV > 0 {
		path += "?min_version=" + strconv.FormatInt(minV, 10)
	}
	if err := apiGet(ctx, addr, token, path, &out); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(out)
	}
	for _, e := range out.Events {
		fmt.Fprintf(env.Stdout, "%3d  %-28s %s\n", e.Position, e.Topic, e.State)
	}
	return nil
}

// Tail follows events live from Kafka.
func (p Program) Tail(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("tail"), "Follow events live from Kafka (every entity type, or one).", env.Stderr)
	var (
		k         kafkaFlags
		ent       string
		fromStart bool
		limit     int
		asJSON    bool
	)
	k.register(fs, "127.0.0.1:9092")
	fs.StringVar(&ent, "entity", "", "only this entity type")
	fs.BoolVar(&fromStart, "from-start", false, "start at the oldest event instead of now")
	fs.IntVar(&limit, "n", 0, "stop after this many events (0: follow until interrupted)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per event")
	fs.Local("entity", "from-start", "n", "json")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := k.check(); err != nil {
		return UsageError{err}
	}
	topics := wire.Topics{Prefix: k.prefix}
	if err := k.ping(ctx); err != nil {
		return err
	}
	// read_committed: the relay publishes in transactions; records of
	// aborted ones are not events.
	opts := k.clientOptions(kgo.MetadataMinAge(time.Second), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if ent != "" {
		opts = append(opts, kgo.ConsumeTopics(topics.Events(ent)))
	} else {
		opts = append(opts, kgo.ConsumeRegex(), kgo.ConsumeTopics("^"+strings.ReplaceAll(topics.Events(""), ".", `\.`)+".+"))
	}
	if fromStart {
		opts = append(opts, kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	} else {
		opts = append(opts, kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	enc := json.NewEncoder(env.Stdout)
	n := 0
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.Canceled) {
				fmt.Fprintf(env.Stderr, "tail: %s: %v\n", e.Topic, e.Err)
			}
		}
		for _, r := range fetches.Records() {
			no, err := kafka.EventOf(kafka.RecordOf(r))
			if err != nil {
				fmt.Fprintf(env.Stderr, "tail: skipping a record of %s: %v\n", r.Topic, err)
				continue
			}
			if asJSON {
				_ = enc.Encode(httpapi.EventJSON{NotificationID: no.ID, SequenceID: no.SequenceID, Position: no.Position, Topic: no.Topic, Codec: no.Codec, State: jsonOrNull(no.State)})
			} else {
				fmt.Fprintf(env.Stdout, "%-28s %s@%d  %s\n", no.Topic, no.SequenceID, no.Position, printable(no.State))
			}
			if n++; limit > 0 && n >= limit {
				return nil
			}
		}
	}
	return nil
}

func jsonOrNull(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	return json.RawMessage(`null`)
}

func printable(b []byte) string {
	if json.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("(%d bytes, encoded)", len(b))
}
