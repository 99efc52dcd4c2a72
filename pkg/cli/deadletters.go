package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Header of a command re-sent from the dead letters: where its original lies.
const headerResentFrom = "resent-from"

const deadLettersUsage = `Look at and act on dead letters.

A projection that cannot apply an event parks the event's entity: it and the
entity's later events wait, in order, while other entities flow. These
commands talk to a projector's HTTP API (-projector-url):

  eventlog dead-letters list                            parked entities of every projection
  eventlog dead-letters show  <projection> <entity> <id> the parked events, retries and skips
  eventlog dead-letters retry <projection> <entity> <id> apply the parked events (after the fix)
  eventlog dead-letters retry -all [-projection P]       retry every parked entity
  eventlog dead-letters skip  <projection> <entity> <id> -reason "..."   drop them, recorded

Records that could not be parsed at all (malformed commands, from the writer)
are on the dead-letters topic in Kafka:

  eventlog dead-letters list -topic                      reason, source and record of each
  eventlog dead-letters resend -file fixed.json [-from P/O]  send a corrected command

Run "eventlog dead-letters <subcommand> -h" for the flags.`

// DeadLetters runs `eventlog dead-letters <subcommand>`.
func (p Program) DeadLetters(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.Stderr, deadLettersUsage)
		if len(args) == 0 {
			return UsageError{errors.New("dead-letters: no subcommand given (list, show, retry, skip, resend)")}
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "list":
		return deadLettersList(ctx, rest, env)
	case "show":
		return deadLettersShow(ctx, rest, env)
	case "retry":
		return deadLettersRetry(ctx, rest, env)
	case "skip":
		return deadLettersSkip(ctx, rest, env)
	case "resend":
		return deadLettersResend(ctx, rest, env)
	}
	fmt.Fprintln(env.Stderr, deadLettersUsage)
	return UsageError{fmt.Errorf("dead-letters: unknown subcommand %q (list, show, retry, skip, resend)", sub)}
}

// projectorAPI is the projector's HTTP API, from -projector-url.
type projectorAPI struct{ base, token string }

func (p *projectorAPI) register(fs *config.FlagSet) {
	fs.StringVar(&p.base, "projector-url", "http://127.0.0.1:8081", "the projector's HTTP API (eventlog dev serves it on its -http-addr, 127.0.0.1:8080)")
	registerToken(fs, &p.token)
}

// do sends a request to the projector and decodes a 200 answer into out. A
// 404 is ErrNotFound-like: the message says what is missing.
func (p *projectorAPI) do(ctx context.Context, method, path string, body, out any) error {
	err := callAPI(ctx, apiEndpoint{base: p.base, token: p.token, flag: "-projector-url",
		unreachable: "the projector's HTTP API at %s: %v (is a projector, or eventlog dev, running? check -projector-url)"}, method, path, body, out)
	var answer apiError
	if errors.As(err, &answer) {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return err
}

// sequenceArgs reads <projection> <entity> <id>.
func sequenceArgs(fs *config.FlagSet) (string, string, uuid.UUID, error) {
	if fs.NArg() != 3 {
		return "", "", uuid.Nil, UsageError{errors.New("want <projection> <entity> <id>, as `eventlog dead-letters list` shows them, for example: readmodel example 5b0c93e4-1f6e-4c1b-9a1e-2f7d3c8b9a10")}
	}
	id, err := uuid.Parse(fs.Arg(2))
	if err != nil {
		return "", "", uuid.Nil, UsageError{fmt.Errorf("%q is not an entity id (a UUID)", fs.Arg(2))}
	}
	return fs.Arg(0), fs.Arg(1), id, nil
}

func sequencePath(projection, entity string, id uuid.UUID) string {
	return "/v1/dead-letters/" + url.PathEscape(projection) + "/" + url.PathEscape(entity) + "/" + id.String()
}

func deadLettersList(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog dead-letters list", "List parked entities (from a projector), or with -topic the records on Kafka's dead-letters topic.", env.Stderr)
	var (
		api                projectorAPI
		k                  kafkaFlags
		topic, asJSON      bool
		projection, entity string
		limit              int
	)
	api.register(fs)
	k.register(fs, "127.0.0.1:9092")
	fs.BoolVar(&topic, "topic", false, "list the records on the dead-letters topic (malformed commands, records the relay could not route, poison events) instead")
	fs.StringVar(&projection, "projection", "", "only this projection (readmodel, persistence, ...)")
	fs.StringVar(&entity, "entity", "", "only this entity type")
	fs.IntVar(&limit, "n", 0, "at most this many (0: all)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per line")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	if topic {
		if err := k.check(); err != nil {
			return UsageError{err}
		}
		return listDeadLetterTopic(ctx, &k, limit, asJSON, env)
	}
	enc := json.NewEncoder(env.Stdout)
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "PROJECTION\tENTITY\tID\tFIRST\tCOUNT\tFIRST PARKED\tLAST PARKED\tREASON")
	}
	after, n := "", 0
	for {
		q := url.Values{}
		if projection != "" {
			q.Set("projection", projection)
		}
		if entity != "" {
			q.Set("entity", entity)
		}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Items     []httpapi.ParkedJSON `json:"items"`
			NextAfter string               `json:"next_after"`
		}
		if err := api.do(ctx, "GET", "/v1/dead-letters?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		for _, s := range page.Items {
			if limit > 0 && n >= limit {
				break
			}
			n++
			if asJSON {
				_ = enc.Encode(s)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.Projection, s.Entity, s.ID, s.FirstPosition, s.Count,
				s.FirstParkedAt.Format(time.RFC3339), s.LastParkedAt.Format(time.RFC3339), oneLine(s.Reason))
		}
		if page.NextAfter == "" || (limit > 0 && n >= limit) {
			break
		}
		after = page.NextAfter
	}
	if !asJSON {
		if err := tw.Flush(); err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintln(env.Stdout, "nothing is parked")
		}
	}
	return nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func deadLettersShow(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog dead-letters show", "Show a parked entity: its parked events, and its retries and skips.", env.Stderr)
	var (
		api    projectorAPI
		asJSON bool
	)
	api.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	projection, entity, id, err := sequenceArgs(fs)
	if err != nil {
		return err
	}
	var det httpapi.ParkedDetailJSON
	if err := api.do(ctx, "GET", sequencePath(projection, entity, id), nil, &det); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(det)
	}
	if det.Parked {
		fmt.Fprintf(env.Stdout, "%s %s %s: %d events parked, positions %d to %d, since %s (%d failed retries)\n  reason: %s\n",
			projection, entity, id, det.Count, det.FirstPosition, det.LastPosition, det.FirstParkedAt.Format(time.RFC3339), det.FailedRetries, det.Reason)
	} else {
		fmt.Fprintf(env.Stdout, "%s %s %s: nothing parked\n", projection, entity, id)
	}
	for _, e := range det.Events {
		where := "read from the store"
		if e.Record != nil {
			where = fmt.Sprintf("%s/%d/%d", e.Record.Topic, e.Record.Partition, e.Record.Offset)
		}
		state := string(e.State)
		if len(e.State) == 0 {
			state = fmt.Sprintf("(%d bytes, %s)", len(e.StateBase64), e.Codec)
		}
		fmt.Fprintf(env.Stdout, "  %6d  %-28s %s  %s\n", e.Position, e.Topic, where, state)
	}
	for _, a := range det.Actions {
		fmt.Fprintf(env.Stdout, "  %s %s positions %d to %d (%d events)", a.At.Format(time.RFC3339), a.Action, a.FirstPosition, a.LastPosition, a.Count)
		if a.Reason != "" {
			fmt.Fprintf(env.Stdout, ": %s", a.Reason)
		}
		fmt.Fprintln(env.Stdout)
	}
	return nil
}

func deadLettersRetry(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog dead-letters retry", "Apply an entity's parked events, in order, once, now that the cause is fixed. On a failure they stay parked with the new reason.", env.Stderr)
	var (
		api                projectorAPI
		all, asJSON        bool
		projection, entity string
	)
	api.register(fs)
	fs.BoolVar(&all, "all", false, "retry every parked entity (of -projection and -entity, if given)")
	fs.StringVar(&projection, "projection", "", "with -all: only this projection")
	fs.StringVar(&entity, "entity", "", "with -all: only this entity type")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	var results []httpapi.RetryJSON
	if all {
		if fs.NArg() != 0 {
			return UsageError{errors.New("-all takes no <projection> <entity> <id>")}
		}
		q := url.Values{}
		if projection != "" {
			q.Set("projection", projection)
		}
		if entity != "" {
			q.Set("entity", entity)
		}
		var out struct {
			Results []httpapi.RetryJSON `json:"results"`
		}
		if err := api.do(ctx, "POST", "/v1/dead-letters/retry?"+q.Encode(), nil, &out); err != nil {
			return err
		}
		results = out.Results
	} else {
		p, e, id, err := sequenceArgs(fs)
		if err != nil {
			return err
		}
		var res httpapi.RetryJSON
		if err := api.do(ctx, "POST", sequencePath(p, e, id)+"/retry", nil, &res); err != nil {
			return err
		}
		results = []httpapi.RetryJSON{res}
	}
	failed := 0
	for _, r := range results {
		if r.Parked {
			failed++
		}
		if asJSON {
			_ = json.NewEncoder(env.Stdout).Encode(r)
			continue
		}
		if r.Parked {
			fmt.Fprintf(env.Stdout, "still parked: %s %s %s: %d of %d events applied, parked again from position %d\n  reason: %s\n",
				r.Projection, r.Entity, r.ID, r.Applied, r.Events, *r.ParkedFrom, r.Reason)
			continue
		}
		fmt.Fprintf(env.Stdout, "retried: %s %s %s: positions %d to %d, %d events applied\n", r.Projection, r.Entity, r.ID, r.FirstPosition, r.LastPosition, r.Applied)
	}
	if all && len(results) == 0 && !asJSON {
		fmt.Fprintln(env.Stdout, "nothing was parked")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d retries failed: the events stay parked (eventlog dead-letters show ... says why)", failed, len(results))
	}
	return nil
}

func deadLettersSkip(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog dead-letters skip", "Drop an entity's parked events: they are never applied, the entity's later events are. The skip is recorded with its reason.", env.Stderr)
	var (
		api    projectorAPI
		reason string
		asJSON bool
	)
	api.register(fs)
	fs.StringVar(&reason, "reason", "", "why the events are skipped, and by whom (required; it is recorded)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseWithArgs(fs, args, env); err != nil {
		return err
	}
	p, e, id, err := sequenceArgs(fs)
	if err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return UsageError{errors.New(`-reason is required: say why the events are skipped, and who decided (it is recorded), for example -reason "import bug, ticket OPS-12, ana"`)}
	}
	var res httpapi.SkipJSON
	if err := api.do(ctx, "POST", sequencePath(p, e, id)+"/skip", httpapi.SkipRequest{Reason: reason}, &res); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(res)
	}
	fmt.Fprintf(env.Stdout, "skipped: %s %s %s: positions %d to %d, %d events, never applied (%s)\n", res.Projection, res.Entity, res.ID, res.FirstPosition, res.LastPosition, res.Events, res.Reason)
	return nil
}

// TopicDeadLetterJSON is a record of the dead-letters topic, as list -topic
// -json prints it: Value is the record's value when it is JSON, ValueBase64
// otherwise.
type TopicDeadLetterJSON struct {
	Partition       int32           `json:"partition"`
	Offset          int64           `json:"offset"`
	Timestamp       time.Time       `json:"timestamp"`
	Reason          string          `json:"reason"`
	SourceTopic     string          `json:"source_topic"`
	SourcePartition string          `json:"source_partition"`
	SourceOffset    string          `json:"source_offset"`
	Key             string          `json:"key,omitempty"`
	Value           json.RawMessage `json:"value,omitempty"`
	ValueBase64     []byte          `json:"value_base64,omitempty"`
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// listDeadLetterTopic prints the dead-letters topic from its start to its
// end now (read committed), and stops.
func listDeadLetterTopic(ctx context.Context, k *kafkaFlags, limit int, asJSON bool, env Env) error {
	if err := k.ping(ctx); err != nil {
		return err
	}
	topic := wire.Topics{Prefix: k.prefix}.DeadLetters()
	cl, err := kgo.NewClient(k.clientOptions(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("dead-letters topic %s: %w", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	enc := json.NewEncoder(env.Stdout)
	n := 0
	for len(want) > 0 && (limit <= 0 || n < limit) {
		// A partition whose last records are an aborted transaction's never
		// shows a record at its end offset: stop once a poll stays empty.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fetches := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		got := 0
		for _, e := range fetches.Errors() {
			if errors.Is(e.Err, context.DeadlineExceeded) {
				continue
			}
			return fmt.Errorf("read %s: %w", e.Topic, e.Err)
		}
		for _, r := range fetches.Records() {
			got++
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if limit > 0 && n >= limit {
				continue
			}
			n++
			d := TopicDeadLetterJSON{Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp, Key: string(r.Key),
				Reason: headerValue(r, wire.HeaderError), SourceTopic: headerValue(r, wire.HeaderSourceTopic),
				SourcePartition: headerValue(r, wire.HeaderSourcePartition), SourceOffset: headerValue(r, wire.HeaderSourceOffset)}
			if json.Valid(r.Value) {
				d.Value = r.Value
			} else {
				d.ValueBase64 = r.Value
			}
			if asJSON {
				_ = enc.Encode(d)
				continue
			}
			fmt.Fprintf(env.Stdout, "%d/%d  %s  from %s/%s/%s\n  reason: %s\n  value:  %s\n", r.Partition, r.Offset, r.Timestamp.Format(time.RFC3339),
				d.SourceTopic, d.SourcePartition, d.SourceOffset, oneLine(d.Reason), oneLine(printable(r.Value)))
		}
		if got == 0 {
			break
		}
	}
	if n == 0 && !asJSON {
		fmt.Fprintf(env.Stdout, "%s is empty\n", topic)
	}
	return nil
}

func deadLettersResend(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog dead-letters resend", "Send a corrected command (a JSON command envelope) to the commands topic, and wait for its result. The dead letter it corrects stays on the dead-letters topic as it was.", env.Stderr)
	var (
		k       kafkaFlags
		file    string
		from    string
		newID   bool
		wait    bool
		timeout time.Duration
		asJSON  bool
	)
	k.register(fs, "127.0.0.1:9092")
	fs.StringVar(&file, "file", "", "the corrected command envelope, JSON (required; - reads standard input)")
	fs.StringVar(&from, "from", "", "the dead letter it corrects, <partition>/<offset> on the dead-letters topic, recorded in a resent-from header")
	fs.BoolVar(&newID, "new-id", false, "give the command a new command_id (one is made anyway if the file has none)")
	fs.BoolVar(&wait, "wait", true, "wait for the command's result")
	fs.DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for the result")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := k.check(); err != nil {
		return UsageError{err}
	}
	if file == "" {
		return UsageError{errors.New("-file is required: the corrected command, for example {\"type\":\"update\",\"entity\":\"example\",\"entity_id\":\"...\",\"data\":{\"foo\":\"bar\"}}")}
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, wire.MaxCommandSize+1))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return UsageError{fmt.Errorf("-file: %v", err)}
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return UsageError{fmt.Errorf("-file %s is not a JSON object: %v", file, err)}
	}
	if _, ok := probe["command_id"]; !ok || newID {
		probe["command_id"], _ = json.Marshal(uuid.New())
		b, _ = json.Marshal(probe)
	}
	cmd, err := wire.DecodeCommand(b, 0)
	if err != nil {
		return UsageError{fmt.Errorf("-file %s is still not a valid command: %v", file, err)}
	}
	var headers []kgo.RecordHeader
	if from != "" {
		p, o, ok := strings.Cut(from, "/")
		_, perr := strconv.ParseInt(p, 10, 32)
		_, oerr := strconv.ParseInt(o, 10, 64)
		if !ok || perr != nil || oerr != nil {
			return UsageError{fmt.Errorf("-from %q: want <partition>/<offset> of the dead letter, as list -topic shows it", from)}
		}
		headers = append(headers, kgo.RecordHeader{Key: headerResentFrom, Value: []byte(wire.Topics{Prefix: k.prefix}.DeadLetters() + "/" + from)})
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
	value, _ := json.Marshal(cmd)
	rec := &kgo.Record{Topic: topics.Commands(), Key: []byte(cmd.EntityID.String()), Value: value, Headers: headers}
	if !wait {
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return fmt.Errorf("cannot send to Kafka at %s: %w", k.brokers, err)
		}
		return printSent(env, cmd, asJSON)
	}
	// Watch the results topic from its end before the command goes out, so
	// that its result cannot pass unseen.
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics.Results())
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("results topic %s: %w", topics.Results(), err)
	}
	start := map[string]map[int32]kgo.Offset{topics.Results(): {}}
	ends.Each(func(o kadm.ListedOffset) { start[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	rc, err := kgo.NewClient(k.clientOptions(kgo.ConsumePartitions(start), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("cannot send to Kafka at %s: %w", k.brokers, err)
	}
	res, err := awaitResult(ctx, rc, cmd.CommandID)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no result for command %s within %s: is a writer running?", cmd.CommandID, timeout)
		}
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(res)
	}
	fmt.Fprintf(env.Stdout, "%s: %s %s %s (command %s), version %d\n", res.Status, cmd.Type, cmd.Entity, cmd.EntityID, cmd.CommandID, res.Version)
	if res.Error != "" {
		fmt.Fprintf(env.Stdout, "  reason: %s\n", res.Error)
	}
	if res.Status != wire.StatusAccepted {
		return fmt.Errorf("command %s", res.Status)
	}
	return nil
}

// awaitResult reads results from rc until the one of commandID.
func awaitResult(ctx context.Context, rc *kgo.Client, commandID uuid.UUID) (wire.Result, error) {
	for {
		fetches := rc.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return wire.Result{}, err
		}
		for _, e := range fetches.Errors() {
			return wire.Result{}, fmt.Errorf("read %s: %w", e.Topic, e.Err)
		}
		for _, r := range fetches.Records() {
			if res, err := wire.DecodeResult(r.Value); err == nil && res.CommandID == commandID {
				return res, nil
			}
		}
	}
}
