package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"net/http/httptest"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/metrics"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/shard"
	"github.com/eventlog/eventlog/pkg/wire"
)

// pgShards opens n scratch databases as the shards of one store.
func pgShards(t testing.TB, n int) []service.Backend {
	t.Helper()
	ctx := t.Context()
	var out []service.Backend
	for i, dsn := range pgtest.Databases(t, n) {
		pool, err := postgres.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		rec, err := postgres.New(ctx, pool, postgres.Options{Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Close() })
		if err := rec.CheckShard(ctx, i, n); err != nil {
			t.Fatal(err)
		}
		out = append(out, service.Backend{Recorder: rec, Snapshots: rec, Locker: rec, Name: fmt.Sprintf("postgres shard %d", i), Schema: "public"})
	}
	return out
}

// startWriter starts a writer service; stop stops it and waits.
func startWriter(t *testing.T, cfg service.WriterConfig) (w *service.Writer, stop func()) {
	t.Helper()
	return startWriterAfter(t, cfg, nil)
}

// startWriterAfter is startWriter that calls before, if set, once the
// writer made its topics and before it runs.
func startWriterAfter(t *testing.T, cfg service.WriterConfig, before func()) (w *service.Writer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // if before fails the test
	w, err := service.NewWriter(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before()
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	}
	t.Cleanup(stop)
	return w, stop
}

// TestShardedStore runs the writer over 2 and 3 PostgreSQL databases through
// Kafka: every command is applied once (none lost across a writer restart,
// none doubled by a redelivered command id), each entity lives on its shard
// only, in position order, and each shard's relay publishes its events once,
// in order per entity.
func TestShardedStore(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d shards", n), func(t *testing.T) { shardedConformance(t, n, nil) })
	}
	// A batch whose part on one shard fails while the other shard's part
	// commits is handed again: the shard that stored its part skips it.
	t.Run("2 shards, one failing now and then", func(t *testing.T) {
		shardedConformance(t, 2, func(i int, b service.Backend) service.Backend {
			if i == 1 {
				b.Recorder = &flakyRecorder{Recorder: b.Recorder.(*postgres.Recorder), topic: wire.Topics{Prefix: "eventlog"}.Commands(), every: 2}
			}
			return b
		})
	})
}

// flakyRecorder fails every every-th transaction of the command writer (one
// that records the tracking of a partition of topic) once the writer has
// written its part in it, so that the part is rolled back. The relay's
// transactions on the same recorder (its store id, its checkpoints, as many
// as time allows) pass and are not counted: counted, they took the failures
// at random.
type flakyRecorder struct {
	*postgres.Recorder
	topic string
	every int64
	calls atomic.Int64
	fails atomic.Int64
}

func (f *flakyRecorder) InTx(ctx context.Context, fn func(store.Tx) error) error {
	return f.Recorder.InTx(ctx, func(tx store.Tx) error {
		wt := &watchedTx{Tx: tx, topic: f.topic}
		if err := fn(wt); err != nil {
			return err
		}
		if wt.writer && f.calls.Add(1)%f.every == 0 {
			f.fails.Add(1)
			return errors.New("injected failure")
		}
		return nil
	})
}

// watchedTx is a PostgreSQL transaction that notes whether it records the
// tracking of a partition of topic.
type watchedTx struct {
	store.Tx
	topic  string
	writer bool
}

func (t *watchedTx) note(ts ...store.Tracking) {
	for _, tr := range ts {
		t.writer = t.writer || tr.Topic == t.topic
	}
}

func (t *watchedTx) SetTracking(ctx context.Context, tr store.Tracking) error {
	t.note(tr)
	return t.Tx.SetTracking(ctx, tr)
}

func (t *watchedTx) SetTrackings(ctx context.Context, ts []store.Tracking) error {
	t.note(ts...)
	return t.Tx.(store.TrackingsSetter).SetTrackings(ctx, ts)
}

func (t *watchedTx) SelectSequences(ctx context.Context, queries map[uuid.UUID]store.Query) (map[uuid.UUID][]store.SequencedItem, error) {
	return t.Tx.(store.SequencesReader).SelectSequences(ctx, queries)
}

func shardedConformance(t *testing.T, n int, wrap func(int, service.Backend) service.Backend) {
	const (
		entities = 30
		updates  = 4 // commands per entity: a create and this many updates
	)
	k := startBroker(t)
	shards := pgShards(t, n)
	if wrap != nil {
		for i := range shards {
			shards[i] = wrap(i, shards[i])
		}
	}
	b, err := service.ShardedBackend(shards)
	if err != nil {
		t.Fatal(err)
	}
	topics := wire.Topics{Prefix: "eventlog"}
	cfg := service.WriterConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: topics, Partitions: int32(2 * n), ReplicationFactor: -1},
		Entities: []string{"example"}, Log: quietLog(),
	}
	ids := make([]uuid.UUID, entities)
	for i := range ids {
		ids[i] = uuid.New()
	}
	cmds := make([][]wire.Command, entities) // per entity, in order
	for i, id := range ids {
		for v := 0; v <= updates; v++ {
			typ := "update"
			if v == 0 {
				typ = "create"
			}
			cmds[i] = append(cmds[i], wire.Command{CommandID: uuid.New(), Type: typ, Entity: "example", EntityID: id,
				Data: json.RawMessage(fmt.Sprintf(`{"foo":"v%d"}`, v))})
		}
	}
	prod, err := kgo.NewClient(k...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(cs []wire.Command) {
		t.Helper()
		var recs []*kgo.Record
		for _, c := range cs {
			v, _ := json.Marshal(c)
			recs = append(recs, &kgo.Record{Topic: topics.Commands(), Key: []byte(c.EntityID.String()), Value: v})
		}
		if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	results, err := kgo.NewClient(append(k, kgo.ConsumeTopics(topics.Results()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer results.Close()
	got := map[uuid.UUID][]wire.Result{}
	count := 0
	await := func(want int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		for count < want && ctx.Err() == nil {
			results.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				var res wire.Result
				if err := json.Unmarshal(r.Value, &res); err != nil {
					t.Errorf("result %s: %v", r.Value, err)
				}
				got[res.CommandID] = append(got[res.CommandID], res)
				count++
			})
		}
		if count < want {
			t.Fatalf("%d results, want %d", count, want)
		}
	}

	// The first half of each entity's commands, then a new writer (a restart)
	// for the rest and a redelivery of some commands already answered. Each
	// writer finds its commands waiting, on every partition, so that its
	// batches span the shards.
	var first, rest, again []wire.Command
	for i := range cmds {
		first = append(first, cmds[i][:3]...)
		rest = append(rest, cmds[i][3:]...)
		if i%3 == 0 {
			again = append(again, cmds[i][1])
		}
	}
	w1, stop := startWriterAfter(t, cfg, func() { produce(first) })
	await(len(first))
	stop()
	skipped := w1.Stats().Skipped
	w, _ := startWriterAfter(t, cfg, func() { produce(append(rest, again...)) })
	await(len(first) + len(rest) + len(again))
	// The relay may publish a batch's results before the writer has counted
	// the batch: wait for the counts.
	testutil.Eventually(t, time.Minute, func() error {
		if st, want := w.Stats(), len(rest)+len(again); st.Accepted+st.Duplicates < int64(want) {
			return fmt.Errorf("the second writer counted %d accepted and %d duplicates of %d commands", st.Accepted, st.Duplicates, want)
		}
		return nil
	})

	for i := range cmds {
		for j, c := range cmds[i] {
			rs := got[c.CommandID]
			want := 1
			if i%3 == 0 && j == 1 {
				want = 2 // redelivered: the same result again
			}
			if len(rs) != want {
				t.Fatalf("command %d of entity %d: %d results, want %d", j, i, len(rs), want)
			}
			for _, r := range rs {
				if r.Status != wire.StatusAccepted || r.Version != int64(j+1) {
					t.Fatalf("command %d of entity %d: %+v", j, i, r)
				}
			}
		}
	}
	if st := w.Stats(); st.Duplicates != int64(len(again)) {
		t.Errorf("second writer: %d duplicates, want %d", st.Duplicates, len(again))
	}
	for i, s := range shards {
		if f, ok := s.Recorder.(*flakyRecorder); ok {
			skipped += w.Stats().Skipped
			t.Logf("shard %d: %d transactions failed on purpose; %d records skipped as stored already", i, f.fails.Load(), skipped)
			if f.fails.Load() == 0 || skipped == 0 {
				t.Errorf("shard %d: %d transactions failed, %d records skipped on the batches handed again; want both", i, f.fails.Load(), skipped)
			}
		}
	}

	// Each entity's events are on its shard only, complete and in order.
	router, err := shard.NewRouter(2*n, n)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	perShard := make([]int, n)
	for _, id := range ids {
		home := router.Shard(id)
		perShard[home]++
		for i, s := range shards {
			items, err := s.Recorder.SelectEvents(ctx, id, store.Query{})
			if err != nil {
				t.Fatal(err)
			}
			if i != home {
				if len(items) > 0 {
					t.Fatalf("entity %s of shard %d has %d events on shard %d", id, home, len(items), i)
				}
				continue
			}
			if len(items) != updates+1 {
				t.Fatalf("entity %s: %d events on its shard, want %d", id, len(items), updates+1)
			}
			for p, it := range items {
				if it.Position != int64(p) || !strings.Contains(string(it.State), fmt.Sprintf(`"v%d"`, p)) {
					t.Fatalf("entity %s: event %d is position %d, state %s", id, p, it.Position, it.State)
				}
			}
		}
	}
	for i, c := range perShard {
		if c == 0 {
			t.Logf("shard %d got no entity of %d (unlikely, but possible)", i, entities)
		}
	}

	// Each shard's relay published its events once, in order per entity.
	evc, err := kgo.NewClient(append(k, kgo.ConsumeTopics(topics.Events("example")), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer evc.Close()
	positions := map[string][]int64{}
	total := 0
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for total < entities*(updates+1) && pctx.Err() == nil {
		evc.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == wire.HeaderPosition {
					p, _ := strconv.ParseInt(string(h.Value), 10, 64)
					positions[string(r.Key)] = append(positions[string(r.Key)], p)
				}
			}
			total++
		})
	}
	if total != entities*(updates+1) {
		t.Fatalf("%d event records, want %d", total, entities*(updates+1))
	}
	for _, id := range ids {
		ps := positions[id.String()]
		if fmt.Sprint(ps) != "[0 1 2 3 4]" {
			t.Fatalf("entity %s: event records at positions %v", id, ps)
		}
	}

	// The API reads each entity from its shard.
	s := &httpapi.Server{Log: quietLog()}
	w.API(s)
	a := api{t: t, url: serve(t, s)}
	for _, id := range ids[:5] {
		code, ent := a.do("GET", "/v1/entities/example/"+id.String(), nil)
		if code != 200 || ent["version"] != float64(updates+1) || ent["attributes"].(map[string]any)["foo"] != fmt.Sprintf("v%d", updates) {
			t.Fatalf("get %s: %d %v", id, code, ent)
		}
		if code, ent = a.do("GET", "/v1/entities/example/"+id.String()+"?version=2", nil); code != 200 || ent["attributes"].(map[string]any)["foo"] != "v1" {
			t.Fatalf("get %s at version 2: %d %v", id, code, ent)
		}
	}
	// The notification log is per shard: the API says so.
	if code, body := a.do("GET", "/v1/notifications?after=0&limit=10", nil); code != 501 || !strings.Contains(fmt.Sprint(body["error"]), "each with a notification log of its own") {
		t.Fatalf("notifications of a sharded store: %d %v", code, body)
	}
}

// TestShardedWriterRefusesPartitions checks that a commands topic whose
// partition count is not a multiple of the shard count is refused at start.
func TestShardedWriterRefusesPartitions(t *testing.T) {
	k := startBroker(t)
	b, err := service.ShardedBackend(pgShards(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	_, err = service.NewWriter(t.Context(), service.WriterConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: wire.Topics{Prefix: "eventlog"}, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, Log: quietLog(),
	})
	if !errors.Is(err, shard.ErrLayout) || !strings.Contains(err.Error(), "4 partitions, which is not a multiple of the 3 shards: grow it to 6 (kafka-topics --alter --topic eventlog.commands --partitions 6;") {
		t.Fatalf("NewWriter over 3 shards and 4 partitions: %v", err)
	}
}

// serve serves s until t ends and returns its URL.
func serve(t *testing.T, s *httpapi.Server) string {
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestShardedProjectorFillsGapsFromTheEntitysShard checks that a projector
// over a sharded store, which commits on the home shard, fills a gap of an
// entity of another shard from that entity's shard.
func TestShardedProjectorFillsGapsFromTheEntitysShard(t *testing.T) {
	ctx := t.Context()
	k := startBroker(t)
	shards := pgShards(t, 2)
	b, err := service.ShardedBackend(shards)
	if err != nil {
		t.Fatal(err)
	}
	topics := wire.Topics{Prefix: "eventlog"}
	kcfg := service.Kafka{ClientOptions: k, Topics: topics, Partitions: 4, ReplicationFactor: -1}
	id := uuid.New()
	for shard.ShardOf(id, 2) != 1 {
		id = uuid.New()
	}

	// Two events of the entity on shard 1, stored without a relay.
	_, stop := startWriter(t, service.WriterConfig{Backend: b, Kafka: kcfg, Entities: []string{"example"}, NoRelay: true, Log: quietLog()})
	prod, err := kgo.NewClient(k...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for v, typ := range []string{"create", "update"} {
		c, _ := json.Marshal(wire.Command{CommandID: uuid.New(), Type: typ, Entity: "example", EntityID: id, Data: json.RawMessage(fmt.Sprintf(`{"foo":"v%d"}`, v))})
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(id.String()), Value: c}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var last store.Notification
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ns, err := shards[1].Recorder.SelectNotifications(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.SequenceID == id && n.Position == 1 {
				last = n
			}
		}
		if last.SequenceID == id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the entity's events are not stored on shard 1: %v", ns)
		}
	}
	stop()

	// Only the second event reaches Kafka: the projector has a gap to fill.
	var hs []kgo.RecordHeader
	for _, h := range wire.EventHeaders(last.SequencedItem, last.ID) {
		hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topics.Events("example"), Key: []byte(id.String()), Value: last.State, Headers: hs}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	home := shards[0].Recorder.(*postgres.Recorder)
	rm, err := pgreadmodel.New(home.Pool(), pgreadmodel.Options{Types: []string{"example"}, Schema: home.Options().Schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	p, err := service.NewProjector(pctx, service.ProjectorConfig{Backend: b, Kafka: kcfg, Entities: []string{"example"}, ReadModel: rm, Log: quietLog()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projector: %v", err)
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		row, err := rm.Get(ctx, "example", id)
		if err == nil && row.Version == 2 && string(row.Attributes["foo"]) == `"v1"` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read model of %s (shard 1): %+v, %v; want version 2 with the gap filled from shard 1 (stats %+v)", id, row, err, p.Stats())
		}
	}
}

// TestShardedRelayMetrics checks that each shard's relay has metrics of its
// own: two writers that each hold the lock of one shard both show a relay
// active, where a sum over the shards showed none anywhere.
func TestShardedRelayMetrics(t *testing.T) {
	k := startBroker(t)
	b, err := service.ShardedBackend(pgShards(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	reg := metrics.New()
	w, _ := startWriter(t, service.WriterConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: wire.Topics{Prefix: "eventlog"}, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, Log: quietLog(), Metrics: reg,
	})
	active := func() map[string]float64 {
		out := map[string]float64{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "eventlog_relay_active" {
				continue
			}
			for _, m := range mf.GetMetric() {
				shardOf := ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "shard" {
						shardOf = l.GetValue()
					}
				}
				out[shardOf] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	for deadline := time.Now().Add(20 * time.Second); !w.RelayStats().Active; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relays did not become active")
		}
	}
	if got := active(); len(got) != 2 || got["0"] != 1 || got["1"] != 1 {
		t.Fatalf("eventlog_relay_active by shard: %v, want shards 0 and 1 at 1", got)
	}
}

// TestShardedWriterSaysTheTopicGrewOutOfLayout checks that a sharded writer
// whose commands topic grows to a partition count that does not fit the
// shards says so, with the count to grow it to, when it finds a command on
// another shard's partition.
func TestShardedWriterSaysTheTopicGrewOutOfLayout(t *testing.T) {
	ctx := t.Context()
	k := startBroker(t)
	b, err := service.ShardedBackend(pgShards(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	topics := wire.Topics{Prefix: "eventlog"}
	var logs testutil.Buffer
	startWriter(t, service.WriterConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: topics, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, NoRelay: true, Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	cl, err := kgo.NewClient(append(k, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if resp, err := adm.CreatePartitions(ctx, 1, topics.Commands()); err != nil || resp.Error() != nil {
		t.Fatal(err, resp.Error())
	}
	if n, err := kafka.TopicPartitions(ctx, adm, topics.Commands()); err != nil || n != 5 {
		t.Fatalf("the commands topic has %d partitions (%v), want 5", n, err)
	}
	// Entities of shard 1 on partition 2 (shard 0's), where a producer that
	// knows the 5 partitions puts some, until the writer, whose metadata may
	// be a few seconds old, says why.
	want := "has grown to 5 partitions, which is not a multiple of the 2 shards"
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the writer did not say %q; it logged:\n%s", want, logs.String())
		}
		id := uuid.New()
		for shard.ShardOf(id, 2) != 1 {
			id = uuid.New()
		}
		c, _ := json.Marshal(wire.Command{CommandID: uuid.New(), Type: "create", Entity: "example", EntityID: id, Data: json.RawMessage(`{"foo":"bar"}`)})
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands(), Partition: 2, Key: []byte(id.String()), Value: c}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(logs.String(), "grow it to 6 at once") {
		t.Fatalf("the writer did not say what to grow the topic to:\n%s", logs.String())
	}
}

// TestShardedWriterDeadLettersMisroutedCommands produces commands on a
// partition of another shard than their entity's (a producer with another
// partitioner than Kafka's default): each is dead-lettered on the partition's
// shard with what to fix, and no shard stores an event of its entity; the
// same command on the right partition is accepted.
func TestShardedWriterDeadLettersMisroutedCommands(t *testing.T) {
	ctx := t.Context()
	k := startBroker(t)
	shards := pgShards(t, 2)
	b, err := service.ShardedBackend(shards)
	if err != nil {
		t.Fatal(err)
	}
	topics := wire.Topics{Prefix: "eventlog"}
	startWriter(t, service.WriterConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: topics, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, NoRelay: true,
	})
	cl, err := kgo.NewClient(append(k, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id := uuid.New()
	for shard.ShardOf(id, 2) != 1 {
		id = uuid.New()
	}
	produce := func(partition int32) *kgo.Record {
		c, _ := json.Marshal(wire.Command{CommandID: uuid.New(), Type: "create", Entity: "example", EntityID: id, Data: json.RawMessage(`{"foo":"bar"}`)})
		r := &kgo.Record{Topic: topics.Commands(), Partition: partition, Key: []byte(id.String()), Value: c}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Partition 2 is shard 0's (2 mod 2); the entity is shard 1's.
	wrong := produce(2)
	dl := wire.DeadLetterID(wrong.Topic, wrong.Partition, wrong.Offset)
	var letters []store.SequencedItem
	for deadline := time.Now().Add(20 * time.Second); len(letters) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the misrouted command was not dead-lettered on its partition's shard")
		}
		letters, err = shards[0].Recorder.SelectEvents(ctx, dl, store.Query{})
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := string(letters[0].State); !strings.Contains(s, "belongs to shard 1 of 2") || !strings.Contains(s, "murmur2") {
		t.Errorf("dead letter %s does not say where the entity belongs and what to fix", s)
	}
	for i, s := range shards {
		if items, err := s.Recorder.SelectEvents(ctx, id, store.Query{}); err != nil || len(items) != 0 {
			t.Fatalf("shard %d holds %d events of the misrouted entity (%v), want none", i, len(items), err)
		}
	}
	produce(1) // shard 1's partition
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		items, err := shards[1].Recorder.SelectEvents(ctx, id, store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command on the entity's own shard's partition was not stored: %d events", len(items))
		}
	}
}
