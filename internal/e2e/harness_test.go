package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	ebroker "github.com/eventlog/eventlog/internal/broker"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

// topics are the wire topics under the default prefix.
var topics = wire.Topics{Prefix: wire.DefaultPrefix}

// eventsTopic is the events topic of the entity type the tests use.
var eventsTopic = topics.Events("example")

// partitions is the partition count of every topic the tests create.
const partitions = 4

// ---------------------------------------------------------------------------
// Kafka

// broker is an in-process Kafka-protocol broker; it outlives any writer the
// test starts, child processes included.
type broker struct {
	c     *kfake.Cluster
	addrs []string
}

func newBroker(t testing.TB, extra ...kfake.Opt) *broker {
	t.Helper()
	opts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions)}, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// As the embedded broker's: groups that behave as Kafka's when a member
	// dies or stops (see broker.Groups).
	g, err := ebroker.WatchGroups(c, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close) // before c.Close
	return &broker{c: c, addrs: c.ListenAddrs()}
}

// slowAcks delays the broker's answer to every produce request for one of
// the given topics by d: a broker whose acknowledgements are slow (acks from
// all in-sync replicas, one of them lagging), so that a producer has records
// in flight for a while. The topics must exist.
func (b *broker) slowAcks(t testing.TB, d time.Duration, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	md, err := kadm.NewClient(b.client(t)).Metadata(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[[16]byte]bool{}
	for _, td := range md.Topics {
		ids[td.ID] = true
	}
	b.c.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr, ok := req.(*kmsg.ProduceRequest)
		if !ok {
			return nil, nil, false
		}
		for _, pt := range pr.Topics {
			if slices.Contains(names, pt.Topic) || ids[pt.TopicID] {
				b.c.SleepControl(func() { time.Sleep(d) })
				break
			}
		}
		return nil, nil, false
	})
}

// opts are the connection options of a client of the broker.
func (b *broker) opts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(b.addrs...)} }

// client returns a client closed when t ends.
func (b *broker) client(t testing.TB, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(b.opts(), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// createTopics creates the writer's topics, so that records produced before
// the first writer starts land on 4 partitions.
func (b *broker) createTopics(t testing.TB, names ...string) {
	t.Helper()
	if len(names) == 0 {
		names = kafka.TopicNames(topics, "example")
	}
	cl := b.client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), names, partitions, -1); err != nil {
		t.Fatal(err)
	}
}

// commandRecord is the record of cmd on the commands topic, keyed by entity id.
func commandRecord(t testing.TB, cmd wire.Command) *kgo.Record {
	t.Helper()
	v, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topics.Commands(), Key: []byte(cmd.EntityID.String()), Value: v}
}

// produce produces records synchronously and fails t on any error.
func produce(t testing.TB, ctx context.Context, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// readTopic returns every record of topic, from its start to the end offsets
// it has when readTopic is called, in offset order per partition.
func readTopic(t testing.TB, ctx context.Context, b *broker, topic string) []*kgo.Record {
	t.Helper()
	admCl := b.client(t)
	ends, err := kadm.NewClient(admCl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Errorf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
			return
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			start[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	// Control records (the relay's transaction markers) are kept to see the
	// end of a partition that ends with one, and left out.
	cl := b.client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20), kgo.KeepControlRecords())
	var out []*kgo.Record
	for len(want) > 0 {
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v; partitions not read to the end: %v", topic, ctx.Err(), want)
		}
		fs := cl.PollFetches(ctx)
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return out
}

// header returns the value of a record header ("" if missing).
func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// headers formats a record's headers for messages.
func headers(r *kgo.Record) string {
	var b strings.Builder
	for i, h := range r.Headers {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%q", h.Key, h.Value)
	}
	return b.String()
}

// resultWatcher consumes the results topic from its start and keeps every
// result record by command id.
type resultWatcher struct {
	mu      sync.Mutex
	byCmd   map[uuid.UUID][]*kgo.Record
	at      map[uuid.UUID]time.Time // when the first result of each command was consumed
	records int
	changed chan struct{}
}

func watchResults(t testing.TB, b *broker) *resultWatcher {
	t.Helper()
	w := &resultWatcher{byCmd: map[uuid.UUID][]*kgo.Record{}, at: map[uuid.UUID]time.Time{}, changed: make(chan struct{}, 1)}
	cl := b.client(t, kgo.ConsumeTopics(topics.Results()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(50*time.Millisecond), kgo.MetadataMinAge(100*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				res, err := wire.DecodeResult(r.Value)
				if err != nil {
					return
				}
				if len(w.byCmd[res.CommandID]) == 0 {
					w.at[res.CommandID] = now
				}
				w.byCmd[res.CommandID] = append(w.byCmd[res.CommandID], r)
				w.records++
			})
			w.mu.Unlock()
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// distinct returns how many command ids have a result.
func (w *resultWatcher) distinct() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byCmd)
}

// get returns the result records of one command.
func (w *resultWatcher) get(id uuid.UUID) []*kgo.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*kgo.Record(nil), w.byCmd[id]...)
}

// firstAt returns when the first result of id was consumed.
func (w *resultWatcher) firstAt(id uuid.UUID) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.at[id]
	return at, ok
}

// waitDistinct waits until n command ids have results.
func (w *resultWatcher) waitDistinct(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for w.distinct() < n {
		if time.Now().After(deadline) {
			t.Fatalf("results of %d commands after %s, want %d", w.distinct(), timeout, n)
		}
		select {
		case <-w.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ---------------------------------------------------------------------------
// Stores

// testStore is a store the test and the writers under test share.
type testStore struct {
	name string
	// rec is the test's own recorder on the store, for checks.
	rec store.ProcessRecorder
	// flags select the store on a writer's command line.
	flags []string
	// backend returns a backend for one more in-process writer.
	backend func(t testing.TB) service.Backend
}

// pgStore gives t a PostgreSQL schema of its own (skipping t if there is no
// server and EVENTLOG_REQUIRE_POSTGRES is not 1).
func pgStore(t testing.TB) *testStore {
	t.Helper()
	dsn := pgtest.DSN(t)
	schema := pgtest.Schema(t)
	open := func(t testing.TB, migrate bool) *postgres.Recorder {
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := postgres.New(t.Context(), pool, postgres.Options{Schema: schema, Migrate: migrate})
		if err != nil {
			pool.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { rec.Close(); pool.Close() })
		return rec
	}
	return &testStore{
		name:  "postgres",
		rec:   open(t, true),
		flags: []string{"-postgres-dsn", dsn, "-postgres-schema", schema},
		// Each writer gets its own pool and recorder, as a process of its
		// own would. See pgLocker for the lock.
		backend: func(t testing.TB) service.Backend {
			rec := open(t, false)
			return service.Backend{Recorder: rec, Snapshots: rec, Locker: pgLocker{rec}, Name: "postgres"}
		},
	}
}

// pgLocker adapts the PostgreSQL recorder's TryLock to kafka.Locker: the
// recorder answers a held lock with (nil, nil, nil), where kafka.Locker wants
// an error wrapping kafka.ErrLocked, and a relay that gets the nil context
// panics. TestPostgresStandbyRelay shows that bug with cli.Writer; the
// in-process tests with several writers per store use this adapter so that
// they test what they are about.
type pgLocker struct{ rec *postgres.Recorder }

func (l pgLocker) TryLock(ctx context.Context, name string) (context.Context, func(), error) {
	held, release, err := l.rec.TryLock(ctx, name)
	if err == nil && held == nil {
		return nil, nil, kafka.ErrLocked
	}
	return held, release, err
}

// sqliteStore gives t a SQLite file in a temporary directory. In-process
// writers share the test's recorder and one LocalLock, as the writers of one
// process would.
func sqliteStore(t testing.TB) *testStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "eventlog.db")
	rec, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	lock := kafka.NewLocalLock()
	return &testStore{
		name:  "sqlite",
		rec:   rec,
		flags: []string{"-sqlite-path", path},
		backend: func(testing.TB) service.Backend {
			return service.Backend{Recorder: rec, Snapshots: rec, Locker: lock, Name: "sqlite"}
		},
	}
}

// eachStore runs fn as a subtest for SQLite and for PostgreSQL.
func eachStore(t *testing.T, fn func(t *testing.T, s func(testing.TB) *testStore)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, sqliteStore) })
	t.Run("postgres", func(t *testing.T) { fn(t, pgStore) })
}

// waitRelayed waits until the relay's checkpoint covers the whole
// notification log: every stored item has been acknowledged by the broker.
func waitRelayed(t testing.TB, rec store.ProcessRecorder, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	testutil.Eventually(t, timeout, func() error {
		maxID, err := rec.MaxNotificationID(ctx)
		var cp int64
		if err == nil {
			cp, err = rec.Tracking(ctx, "relay", "", 0)
		}
		if err == nil && maxID > 0 && cp >= maxID {
			return nil
		}
		return fmt.Errorf("relay checkpoint %d, log at %d (last error %v)", cp, maxID, err)
	})
}

// ---------------------------------------------------------------------------
// In-process writers

// inProcWriter is a writer service run by the test.
type inProcWriter struct {
	w      *service.Writer
	cancel context.CancelFunc
	done   chan error
}

// startWriter builds and runs a writer service on backend, in the default
// consumer group (or group, if given); t's cleanup stops it (if the test did
// not) and fails t if Run returned an error.
func startWriter(t testing.TB, b *broker, backend service.Backend, log *slog.Logger, group ...string) *inProcWriter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := service.WriterConfig{
		Backend: backend,
		Kafka: service.Kafka{ClientOptions: append(b.opts(), kgo.WithLogger(kafka.NewLogger(log))),
			Topics: topics, Partitions: partitions, ReplicationFactor: -1},
		Entities: []string{"example"}, Log: log,
	}
	if len(group) > 0 {
		cfg.Group = group[0]
	}
	w, err := service.NewWriter(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &inProcWriter{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		if err := p.stop(30 * time.Second); err != nil {
			t.Errorf("writer: %v", err)
		}
	})
	return p
}

// stop cancels the writer and waits for Run to return.
func (p *inProcWriter) stop(timeout time.Duration) error {
	p.cancel()
	select {
	case err, ok := <-p.done:
		if !ok {
			return nil
		}
		close(p.done)
		return err
	case <-time.After(timeout):
		return fmt.Errorf("Run did not return within %s of cancellation", timeout)
	}
}

// ---------------------------------------------------------------------------
// Logs

// quietLog discards everything.
func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ---------------------------------------------------------------------------
// Small things

// envInt reads a positive integer from the environment, or returns def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// scaled returns full, or small under -short.
func scaled(full, small int) int {
	if testing.Short() {
		return small
	}
	return full
}

// resultCount counts the commands with a stored result.
func resultCount(ctx context.Context, st *testStore) (int, error) {
	var after int64
	n := 0
	for {
		ns, err := st.rec.SelectNotifications(ctx, after, 10000)
		if err != nil {
			return 0, err
		}
		if len(ns) == 0 {
			return n, nil
		}
		for _, it := range ns {
			if it.Topic == wire.ResultItemTopic && it.Position == 0 {
				n++
			}
		}
		after = ns[len(ns)-1].ID
	}
}
