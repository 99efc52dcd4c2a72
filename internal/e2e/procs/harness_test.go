package procs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	ebroker "github.com/eventlog/eventlog/internal/broker"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/wire"
)

// topics are the wire topics under the default prefix.
var topics = wire.Topics{Prefix: wire.DefaultPrefix}

// eventsTopic is the events topic of the entity type the tests use.
var eventsTopic = topics.Events("example")

// partitions is the partition count of every topic.
const partitions = 4

// readModelName is the projection name of the projector's read model.
const readModelName = "readmodel"

// scaled returns full, or small under -short.
func scaled(full, small int) int {
	if testing.Short() {
		return small
	}
	return full
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// ---------------------------------------------------------------------------
// Kafka

// broker is an in-process Kafka-protocol broker owned by the test; it
// outlives every child process.
type broker struct {
	c    *kfake.Cluster
	addr string
}

// newBroker starts a broker. A positive session timeout overrides the one
// every group member asks for when it joins (franz-go's default is 45s), so
// that a member that was SIGKILLed or SIGSTOPped leaves its group within
// seconds: the broker side of a short session timeout, with the programs
// unchanged. The broker's groups are watched as the embedded broker's are
// (see broker.Groups), so that they behave as Kafka's do when a member dies.
func newBroker(t testing.TB, session time.Duration) *broker {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions),
		kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	g, err := ebroker.WatchGroups(c, session, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close) // before c.Close
	b := &broker{c: c, addr: c.ListenAddrs()[0]}
	b.createTopics(t, kafka.TopicNames(topics, "example")...)
	return b
}

// client returns a client of addr, closed when t ends.
func client(t testing.TB, addr string, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (b *broker) client(t testing.TB, extra ...kgo.Opt) *kgo.Client {
	return client(t, b.addr, extra...)
}

func (b *broker) createTopics(t testing.TB, names ...string) {
	t.Helper()
	createTopics(t, b.addr, names...)
}

// createTopics creates topics with 4 partitions at the broker at addr, so
// that records produced before the first writer starts land on all of them.
func createTopics(t testing.TB, addr string, names ...string) {
	t.Helper()
	cl := client(t, addr)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), names, partitions, -1); err != nil {
		t.Fatal(err)
	}
}

// commandRecord is the record of cmd on the commands topic, keyed by entity id.
func commandRecord(cmd wire.Command) *kgo.Record {
	v, err := json.Marshal(cmd)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: topics.Commands(), Key: []byte(cmd.EntityID.String()), Value: v}
}

// endOffsets returns the end offset of each partition of topic.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var firstErr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && firstErr == nil {
			firstErr = o.Err
		}
		out[o.Partition] = o.Offset
	})
	if firstErr != nil {
		return nil, firstErr
	}
	if len(out) != partitions {
		return nil, fmt.Errorf("%s has %d partitions, want %d", topic, len(out), partitions)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// The generic entity's commands

// workload is a set of entities and, for each, a create followed by updates:
// the create sets attribute "c0" to 0, and update k sets perUpdate
// attributes of its own ("c<k>", or "c<k>_0", "c<k>_1", ... with more than
// one) to k, one event each. So every event sets an attribute of its own,
// and the events a read model was given can be told apart by the attributes
// they set.
type workload struct {
	ids       []uuid.UUID
	steps     int // commands per entity
	perUpdate int // attributes (events) per update
}

func newWorkload(entities, steps int) *workload { return newWorkloadN(entities, steps, 1) }

func newWorkloadN(entities, steps, perUpdate int) *workload {
	w := &workload{ids: make([]uuid.UUID, entities), steps: steps, perUpdate: perUpdate}
	for i := range w.ids {
		w.ids[i] = uuid.New()
	}
	return w
}

// total is the number of commands.
func (w *workload) total() int { return len(w.ids) * w.steps }

// events is the number of events the commands make.
func (w *workload) events() int { return len(w.ids) * int(w.want().Version) }

// attrs returns the attributes command k sets.
func (w *workload) attrs(k int) map[string]any {
	if k == 0 {
		return map[string]any{"c0": float64(0)}
	}
	if w.perUpdate == 1 {
		return map[string]any{"c" + strconv.Itoa(k): float64(k)}
	}
	m := map[string]any{}
	for j := range w.perUpdate {
		m[fmt.Sprintf("c%d_%d", k, j)] = float64(k)
	}
	return m
}

// command returns command k of entity i.
func (w *workload) command(i, k int) wire.Command {
	data, err := json.Marshal(w.attrs(k))
	if err != nil {
		panic(err)
	}
	cmd := wire.Command{CommandID: uuid.New(), Type: wire.TypeUpdate, Entity: "example", EntityID: w.ids[i], Data: data}
	if k == 0 {
		cmd.Type = wire.TypeCreate
	}
	return cmd
}

// records returns every command's record, round by round: every entity's
// create, then every entity's first update, and so on, so that each entity
// lives through the whole run.
func (w *workload) records() []*kgo.Record {
	out := make([]*kgo.Record, 0, w.total())
	for k := range w.steps {
		for i := range w.ids {
			out = append(out, commandRecord(w.command(i, k)))
		}
	}
	return out
}

// want is an entity's state after all of its commands.
func (w *workload) want() entityState {
	s := entityState{Attributes: map[string]any{}}
	for k := range w.steps {
		maps.Copy(s.Attributes, w.attrs(k))
	}
	s.Version = int64(len(s.Attributes))
	return s
}

// produceAt produces recs in order at about rate records a second (0: as fast
// as the client goes), and returns once the broker acknowledged all of them.
func produceAt(ctx context.Context, cl *kgo.Client, recs []*kgo.Record, rate int) error {
	errc := make(chan error, 1)
	start := time.Now()
	for i, r := range recs {
		if rate > 0 && i%50 == 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return fmt.Errorf("produce: %w", err)
	default:
		return nil
	}
}

// ---------------------------------------------------------------------------
// PostgreSQL

// pgEnv is a PostgreSQL schema of the test's own, with the store's and the
// read model's tables in it.
type pgEnv struct {
	dsn, schema string
	pool        *pgxpool.Pool
	rec         *postgres.Recorder
}

// newPG gives t a schema with the store's tables, the read model's table of
// "example", and the apply log (see installApplyLog).
func newPG(t testing.TB) *pgEnv {
	t.Helper()
	e := &pgEnv{dsn: pgtest.DSN(t), schema: pgtest.Schema(t), pool: pgtest.Pool(t)}
	var err error
	e.rec, err = postgres.New(t.Context(), e.pool, postgres.Options{Schema: e.schema, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rec.Close() })
	rm, err := pgreadmodel.New(e.pool, pgreadmodel.Options{Types: []string{"example"}, Schema: e.schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.installApplyLog(t.Context()); err != nil {
		t.Fatal(err)
	}
	return e
}

// flags select the schema on a writer's or projector's command line. app, if
// not empty, becomes the sessions' application_name, so that
// pg_stat_activity tells the test what that process's sessions are doing.
func (e *pgEnv) flags(app string) []string {
	dsn := e.dsn
	if app != "" {
		if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
			q := u.Query()
			q.Set("application_name", app)
			u.RawQuery = q.Encode()
			dsn = u.String()
		}
	}
	return []string{"-postgres-dsn", dsn, "-postgres-schema", e.schema}
}

// appName returns an application_name for a process of this test binary.
func appName(role string) string {
	return fmt.Sprintf("procs-%d-%s", os.Getpid(), role)
}

func (e *pgEnv) table(name string) string { return pgx.Identifier{e.schema, name}.Sanitize() }

// installApplyLog puts a trigger on the read model's table that logs, in the
// transaction of the projection, every row the read model's policy upserts
// (a BEFORE INSERT trigger fires for every row an INSERT ... ON CONFLICT
// proposes, whether it then inserts, updates, or does nothing because the
// stored version is newer). A row carries the attributes the events of that
// upsert set; since every event of a workload sets an attribute of its own,
// the log tells which events the policy was given, in committed
// transactions only. An event given twice is a double apply, even where the
// read model's version guard made the second one a no-op.
func (e *pgEnv) installApplyLog(ctx context.Context) error {
	log, rm := e.table("procs_apply_log"), e.table(pgreadmodel.DefaultPrefix+"example")
	fn := e.table("procs_log_apply")
	_, err := e.pool.Exec(ctx, `
CREATE TABLE `+log+` (
	id         uuid        NOT NULL,
	version    bigint      NOT NULL,
	attributes jsonb       NOT NULL,
	xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
	app        text        NOT NULL DEFAULT current_setting('application_name'),
	at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION `+fn+`() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO `+log+` (id, version, attributes) VALUES (NEW.id, NEW.version, NEW.attributes);
	RETURN NEW;
END $$;
CREATE TRIGGER procs_log_apply BEFORE INSERT ON `+rm+` FOR EACH ROW EXECUTE FUNCTION `+fn+`();`)
	return err
}

// applyCheck is what the apply log says.
type applyCheck struct {
	rows    int // upserts logged
	applied int // (entity, attribute) pairs applied at least once
	// doubles lists (entity, attribute) pairs applied more than once.
	doubles []string
	// doubleCount is the number of extra applications.
	doubleCount int
}

// checkApplyLog reads the apply log. Only the workload's attributes count.
func (e *pgEnv) checkApplyLog(ctx context.Context) (applyCheck, error) {
	var c applyCheck
	log := e.table("procs_apply_log")
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+log).Scan(&c.rows); err != nil {
		return c, err
	}
	rows, err := e.pool.Query(ctx, `SELECT id::text, k, count(*), string_agg(app || '@' || xid::text, ' ')
		FROM `+log+`, jsonb_object_keys(attributes) AS k WHERE k ~ '^c[0-9]+(_[0-9]+)?$' GROUP BY id, k`)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, k, who string
			n          int
		)
		if err := rows.Scan(&id, &k, &n, &who); err != nil {
			return c, err
		}
		c.applied++
		if n > 1 {
			c.doubleCount += n - 1
			if len(c.doubles) < 20 {
				c.doubles = append(c.doubles, fmt.Sprintf("%s %s ×%d (%s)", id, k, n, who))
			}
		}
	}
	return c, rows.Err()
}

// applyLogRows counts the apply log's rows.
func (e *pgEnv) applyLogRows(ctx context.Context) (int, error) {
	var n int
	err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+e.table("procs_apply_log")).Scan(&n)
	return n, err
}

// storedEvents counts the stored events of the entity type example.
func (e *pgEnv) storedEvents(ctx context.Context) (int, error) {
	var n int
	err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+e.table("eventlog_events")+" WHERE topic LIKE 'example.%'").Scan(&n)
	return n, err
}

// tracking returns the read model's tracking of every partition of the
// events topic (-1: none).
func (e *pgEnv) tracking(ctx context.Context) (map[int32]int64, error) {
	out := map[int32]int64{}
	for p := range int32(partitions) {
		pos, err := e.rec.Tracking(ctx, readModelName, eventsTopic, p)
		if err != nil {
			return nil, err
		}
		out[p] = pos
	}
	return out, nil
}

// caughtUp reports whether the read model's tracking is at the end of every
// partition of the events topic, and if not, how far behind it is.
func (e *pgEnv) caughtUp(ctx context.Context, adm *kadm.Client) (bool, string, error) {
	ends, err := endOffsets(ctx, adm, eventsTopic)
	if err != nil {
		return false, "", err
	}
	tr, err := e.tracking(ctx)
	if err != nil {
		return false, "", err
	}
	behind := int64(0)
	var cl *kgo.Client // to look past transaction markers, made when needed
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	for p, end := range ends {
		d := end - (tr[p] + 1)
		// A partition the relay wrote in a transaction ends with its
		// marker, which is no record to apply.
		if d > 0 && d <= 16 {
			if cl == nil {
				if cl, err = brokerClient(ctx, adm); err != nil {
					return false, "", err
				}
			}
			if done, err := kafka.CaughtUp(ctx, cl, eventsTopic, p, tr[p]+1, end); err == nil && done {
				continue
			}
		}
		behind += d
	}
	return behind == 0, fmt.Sprintf("tracking %v, ends %v: %d records behind", tr, ends, behind), nil
}

// brokerClient returns a new client of the brokers adm talks to.
func brokerClient(ctx context.Context, adm *kadm.Client) (*kgo.Client, error) {
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return nil, err
	}
	var seeds []string
	for _, b := range md.Brokers {
		seeds = append(seeds, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
	}
	return kgo.NewClient(kgo.SeedBrokers(seeds...))
}

// waitReadModel waits until the read model equals the fold of the stored
// events and its tracking is at the end of every partition of the events
// topic. (Tracking alone is not enough: the relay may not have published
// every stored event yet.)
func (e *pgEnv) waitReadModel(t testing.TB, ctx context.Context, adm *kadm.Client, timeout time.Duration) {
	t.Helper()
	msg, err := poll(ctx, timeout, 100*time.Millisecond, func() (bool, string, error) {
		want, err := e.storeFold(ctx)
		if err != nil {
			return false, "", err
		}
		got, err := e.readModel(ctx)
		if err != nil {
			return false, "", err
		}
		if d := diffStates("read model", got, "store", want); len(d) > 0 {
			return false, fmt.Sprintf("%q", d), nil
		}
		return e.caughtUp(ctx, adm)
	})
	if err != nil {
		t.Fatalf("the read model did not catch up with the store: %v (%s)", err, msg)
	}
}

// ---------------------------------------------------------------------------
// States

// entityState is an entity as a read model or a fold of its events sees it.
// Attributes are decoded JSON, so that formatting does not matter.
type entityState struct {
	Version    int64
	Attributes map[string]any
	Discarded  bool
}

func (s entityState) String() string {
	keys := slices.Sorted(maps.Keys(s.Attributes))
	var b strings.Builder
	fmt.Fprintf(&b, "v%d", s.Version)
	if s.Discarded {
		b.WriteString(" discarded")
	}
	b.WriteString(" {")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s:%v", k, s.Attributes[k])
	}
	b.WriteString("}")
	return b.String()
}

func decodeAttrs(raw []byte) (map[string]any, error) {
	m := map[string]any{}
	if len(raw) == 0 {
		return m, nil
	}
	err := json.Unmarshal(raw, &m)
	return m, err
}

// storeFold folds the stored events of type example, read from the store's
// notification log, into each entity's state, independently of the read
// model's code: Created sets the initial attributes, AttributeChanged one,
// Discarded discards. It also checks that each entity's positions are 0, 1,
// 2, ... in the log.
func (e *pgEnv) storeFold(ctx context.Context) (map[uuid.UUID]entityState, error) {
	out := map[uuid.UUID]entityState{}
	var after int64
	for {
		ns, err := e.rec.SelectNotifications(ctx, after, 10000)
		if err != nil {
			return nil, err
		}
		if len(ns) == 0 {
			return out, nil
		}
		for _, n := range ns {
			after = n.ID
			typ, name, ok := strings.Cut(n.Topic, ".")
			if !ok || typ != "example" {
				continue
			}
			s, ok := out[n.SequenceID]
			if !ok {
				s.Attributes = map[string]any{}
			}
			if n.Position != s.Version {
				return nil, fmt.Errorf("entity %s: position %d follows version %d in the log", n.SequenceID, n.Position, s.Version)
			}
			if n.Codec != "" && n.Codec != "json" {
				return nil, fmt.Errorf("entity %s position %d: codec %q", n.SequenceID, n.Position, n.Codec)
			}
			if err := foldEvent(&s, name, n.State); err != nil {
				return nil, fmt.Errorf("entity %s position %d: %w", n.SequenceID, n.Position, err)
			}
			out[n.SequenceID] = s
		}
	}
}

// foldEvent applies one event of the generic entity, given its name and JSON
// state, to s.
func foldEvent(s *entityState, name string, state []byte) error {
	switch name {
	case "Created":
		var ev struct {
			Attributes json.RawMessage `json:"attributes"`
		}
		if err := json.Unmarshal(state, &ev); err != nil {
			return err
		}
		attrs, err := decodeAttrs(ev.Attributes)
		if err != nil {
			return err
		}
		s.Attributes = attrs
	case "AttributeChanged":
		var ev struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(state, &ev); err != nil {
			return err
		}
		var v any
		if err := json.Unmarshal(ev.Value, &v); err != nil {
			return err
		}
		s.Attributes[ev.Name] = v
	case "Discarded":
		s.Discarded = true
	default:
		return fmt.Errorf("unknown event %q", name)
	}
	s.Version++
	return nil
}

// readModel reads every row of the read model's table of example.
func (e *pgEnv) readModel(ctx context.Context) (map[uuid.UUID]entityState, error) {
	rows, err := e.pool.Query(ctx, "SELECT id, version, attributes, discarded FROM "+e.table(pgreadmodel.DefaultPrefix+"example"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uuid.UUID]entityState{}
	for rows.Next() {
		var (
			id    uuid.UUID
			s     entityState
			attrs []byte
		)
		if err := rows.Scan(&id, &s.Version, &attrs, &s.Discarded); err != nil {
			return nil, err
		}
		if s.Attributes, err = decodeAttrs(attrs); err != nil {
			return nil, err
		}
		out[id] = s
	}
	return out, rows.Err()
}

// diffStates lists how got differs from want (at most 10 lines, then a count).
func diffStates(gotName string, got map[uuid.UUID]entityState, wantName string, want map[uuid.UUID]entityState) []string {
	var out []string
	n := 0
	add := func(s string) {
		n++
		if len(out) < 10 {
			out = append(out, s)
		}
	}
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			add(fmt.Sprintf("%s: in the %s (%s), not in the %s", id, wantName, w, gotName))
		case !reflect.DeepEqual(g, w):
			add(fmt.Sprintf("%s: %s %s, %s %s", id, gotName, g, wantName, w))
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			add(fmt.Sprintf("%s: in the %s (%s), not in the %s", id, gotName, g, wantName))
		}
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("... %d differences in all", n))
	}
	return out
}

// ---------------------------------------------------------------------------
// HTTP

var httpClient = &http.Client{Timeout: 10 * time.Second}

// getJSON GETs url and decodes a JSON body into out (if not nil). It returns
// the status code.
func getJSON(ctx context.Context, url string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	return doJSON(req, out)
}

// postJSON POSTs body as JSON to url and decodes the response into out.
func postJSON(ctx context.Context, url string, body, out any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	return doJSON(req, out)
}

func doJSON(req *http.Request, out any) (int, error) {
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w in %q", req.Method, req.URL, err, b)
		}
	}
	return resp.StatusCode, nil
}

// waitReady polls http://addr/readyz until it answers 200, and fails t if p
// exits first or timeout passes.
func waitReady(t testing.TB, p *proc, addr string, timeout time.Duration) {
	t.Helper()
	if err := ready(t.Context(), p, addr, timeout); err != nil {
		t.Fatal(err)
	}
}

// ready polls http://addr/readyz until it answers 200; it fails if p exits
// first or timeout passes.
func ready(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		code, err := getJSON(rctx, "http://"+addr+"/readyz", nil)
		cancel()
		if err == nil && code == http.StatusOK {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready: %s\n%s", p.name, p.state(), p.tail(20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready at %s within %s (last: %d %v)\n%s", p.name, addr, timeout, code, err, p.tail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metric sums the samples of a Prometheus metric (every label set) that
// http://addr/metrics serves.
func metric(ctx context.Context, addr, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) {
			continue
		}
		rest := l[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", l, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no metric %s", name)
	}
	return sum, nil
}

// projectionLag is one entry of a projector's GET /v1/projections.
type projectionLag struct {
	Projection string `json:"projection"`
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	Lag        int64  `json:"lag"`
}

// httpLagZero reports whether the projector at addr reports lag 0 on every
// partition of the events topic for its read model.
func httpLagZero(ctx context.Context, addr string) (bool, error) {
	var body struct {
		Lag []projectionLag `json:"lag"`
	}
	code, err := getJSON(ctx, "http://"+addr+"/v1/projections", &body)
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("GET /v1/projections: %d", code)
	}
	n := 0
	for _, l := range body.Lag {
		if l.Projection != readModelName || l.Topic != eventsTopic {
			continue
		}
		n++
		if l.Lag != 0 {
			return false, nil
		}
	}
	return n == partitions, nil
}

// poll calls f every interval until it returns true or an error, or timeout
// passes; it returns the last message f gave.
func poll(ctx context.Context, timeout, interval time.Duration, f func() (bool, string, error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var msg string
	for {
		ok, m, err := f()
		if m != "" {
			msg = m
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return msg, err
		}
		if ok {
			return msg, nil
		}
		select {
		case <-ctx.Done():
			return msg, fmt.Errorf("not within %s: %s", timeout, msg)
		case <-time.After(interval):
		}
	}
}

// diagnose describes, for a failure message, what the projector group and the
// database sessions of this test binary's children are doing, and what each
// projector at addrs reports.
func diagnose(ctx context.Context, adm *kadm.Client, pg *pgEnv, addrs map[string]string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	var b strings.Builder
	groups, err := adm.DescribeGroups(ctx, "eventlog-projector-"+readModelName)
	if err != nil {
		fmt.Fprintf(&b, "describe group: %v\n", err)
	}
	for _, g := range groups.Sorted() {
		fmt.Fprintf(&b, "group %s: state %s, protocol %s, %d members\n", g.Group, g.State, g.Protocol, len(g.Members))
		for _, m := range g.Members {
			var parts []int32
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range a.Topics {
					parts = append(parts, tp.Partitions...)
				}
			}
			fmt.Fprintf(&b, "  member %s (client %s, host %s): partitions %v\n", m.MemberID, m.ClientID, m.ClientHost, parts)
		}
	}
	rows, err := pg.pool.Query(ctx, `SELECT application_name, pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''),
		coalesce(to_char(now() - xact_start, 'HH24:MI:SS'), '-'), left(query, 100)
		FROM pg_stat_activity WHERE application_name LIKE $1 ORDER BY 1`, fmt.Sprintf("procs-%d-%%", os.Getpid()))
	if err == nil {
		for rows.Next() {
			var app, state, wt, we, age, q string
			var pid int
			if err := rows.Scan(&app, &pid, &state, &wt, &we, &age, &q); err == nil {
				fmt.Fprintf(&b, "session %s pid %d: %s %s/%s in tx for %s: %s\n", app, pid, state, wt, we, age, q)
			}
		}
		rows.Close()
	}
	for _, name := range slices.Sorted(maps.Keys(addrs)) {
		addr := addrs[name]
		var body json.RawMessage
		_, err := getJSON(ctx, "http://"+addr+"/v1/projections", &body)
		fmt.Fprintf(&b, "%s /v1/projections: %s %v\n", name, body, err)
		for _, m := range []string{"eventlog_consumer_batches_total", "eventlog_consumer_retries_total", "eventlog_consumer_tracking_conflicts_total"} {
			v, err := metric(ctx, addr, m)
			fmt.Fprintf(&b, "  %s %v %v\n", m, v, err)
		}
	}
	return b.String()
}
