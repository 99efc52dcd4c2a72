package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

func newRelay(t testing.TB, cl *kgo.Client, rec kafka.RelaySource, cfg kafka.RelayConfig) *kafka.Relay {
	t.Helper()
	if cfg.Locker == nil {
		cfg.Locker = kafka.NewLocalLock()
	}
	cfg.Topics = topics
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	r, err := kafka.NewRelay(cl, rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func maxID(t testing.TB, rec *memory.Recorder) int64 {
	t.Helper()
	m, err := rec.MaxNotificationID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitCheckpoint(t testing.TB, rec *memory.Recorder, name string, want int64, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "checkpoint "+strconv.FormatInt(want, 10), func() bool { return checkpoint(t, rec, name) >= want })
}

// byNotificationID indexes relayed records by their notification-id header
// (dead letters of consumed records, which have none, under -1).
func byNotificationID(t testing.TB, recs []*kgo.Record) map[int64][]*kgo.Record {
	t.Helper()
	out := make(map[int64][]*kgo.Record)
	for _, r := range recs {
		v, ok := header(r, wire.HeaderNotificationID)
		if !ok && r.Topic == topics.DeadLetters() {
			out[-1] = append(out[-1], r)
			continue
		}
		if !ok {
			t.Fatalf("record %s/%d@%d has no notification id", r.Topic, r.Partition, r.Offset)
		}
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = append(out[id], r)
	}
	return out
}

// checkKeyOrder checks that in every partition the events of each key come in
// position order 0, 1, 2, ... with no gap and no repeat.
func checkKeyOrder(t testing.TB, recs []*kgo.Record) {
	t.Helper()
	next := make(map[string]int64)
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b *kgo.Record) int {
		if a.Topic != b.Topic {
			return bytes.Compare([]byte(a.Topic), []byte(b.Topic))
		}
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	for _, r := range recs {
		p, ok := header(r, wire.HeaderPosition)
		if !ok {
			continue
		}
		pos, _ := strconv.ParseInt(p, 10, 64)
		k := r.Topic + "/" + string(r.Key)
		if pos != next[k] {
			t.Fatalf("key %s: position %d at offset %d, want %d", k, pos, r.Offset, next[k])
		}
		next[k] = pos + 1
	}
}

func TestRelayRoutesByWireContract(t *testing.T) {
	c := newCluster(t, 3, "example", "order")
	rec := memory.New()
	ctx := context.Background()

	examples := exampleItems("example", 3, 30)
	orders := exampleItems("order", 2, 20)
	result := wire.Result{CommandID: uuid.New(), Entity: "example", EntityID: examples[0].SequenceID, Status: wire.StatusAccepted, Version: 1, Positions: []int64{0}}
	resultItem, err := wire.ResultItem(result)
	if err != nil {
		t.Fatal(err)
	}
	dl := wire.DeadLetter{
		Reason: "not a command envelope", SourceTopic: topics.Commands(), SourcePartition: 2, SourceOffset: 41,
		Key: []byte("some-key"), Value: []byte("{not json"),
		Headers: []wire.Header{{Key: "traceparent", Value: []byte("00-abc")}},
	}
	dlItem, err := wire.DeadLetterItem(dl)
	if err != nil {
		t.Fatal(err)
	}
	noEntity := store.SequencedItem{SequenceID: uuid.New(), Topic: "nodot", State: []byte(`{}`), Codec: "json"}

	insert(t, rec, examples[:15])
	insert(t, rec, orders)
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{resultItem, dlItem, noEntity}); err != nil {
		t.Fatal(err)
	}
	insert(t, rec, examples[15:])

	r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{PageSize: 7})
	runRelay(t, r)
	last := maxID(t, rec)
	waitCheckpoint(t, rec, "relay", last, 10*time.Second)

	const want = 30 + 20 + 1 + 1
	got := consume(t, c, want, 10*time.Second, 300*time.Millisecond,
		topics.Events("example"), topics.Events("order"), topics.Results(), topics.DeadLetters())
	if len(got) != want {
		t.Fatalf("consumed %d records, want %d", len(got), want)
	}
	byID := byNotificationID(t, got)
	ns, err := rec.SelectNotifications(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		rs := byID[n.ID]
		if n.Topic == wire.DeadLetterItemTopic {
			rs = byID[-1]
		}
		if n.Topic == "nodot" {
			if len(rs) != 0 {
				t.Errorf("item of no entity type was published: %v", rs)
			}
			continue
		}
		if len(rs) != 1 {
			t.Fatalf("notification %d (%s) published %d times, want 1", n.ID, n.Topic, len(rs))
		}
		r := rs[0]
		switch n.Topic {
		case wire.ResultItemTopic:
			if r.Topic != topics.Results() || string(r.Key) != result.EntityID.String() || !bytes.Equal(r.Value, n.State) {
				t.Errorf("result record %s key %s value %s", r.Topic, r.Key, r.Value)
			}
		case wire.DeadLetterItemTopic:
			if r.Topic != topics.DeadLetters() || !bytes.Equal(r.Key, dl.Key) || !bytes.Equal(r.Value, dl.Value) {
				t.Errorf("dead letter record %s key %q value %q", r.Topic, r.Key, r.Value)
			}
			wantH := map[string]string{
				"traceparent": "00-abc", wire.HeaderError: dl.Reason, wire.HeaderSourceTopic: dl.SourceTopic,
				wire.HeaderSourcePartition: "2", wire.HeaderSourceOffset: "41",
			}
			for k, v := range wantH {
				if got, _ := header(r, k); got != v {
					t.Errorf("dead letter header %s = %q, want %q", k, got, v)
				}
			}
		default:
			if want := topics.Events(events.EntityOf(n.Topic)); r.Topic != want {
				t.Errorf("notification %d on %s, want %s", n.ID, r.Topic, want)
			}
			if string(r.Key) != n.SequenceID.String() || !bytes.Equal(r.Value, n.State) {
				t.Errorf("notification %d: key %s value %s", n.ID, r.Key, r.Value)
			}
			wantH := map[string]string{
				wire.HeaderSequenceID: n.SequenceID.String(), wire.HeaderPosition: strconv.FormatInt(n.Position, 10),
				wire.HeaderTopic: n.Topic, wire.HeaderNotificationID: strconv.FormatInt(n.ID, 10), wire.HeaderCodec: n.Codec,
			}
			for k, v := range wantH {
				if got, _ := header(r, k); got != v {
					t.Errorf("notification %d header %s = %q, want %q", n.ID, k, got, v)
				}
			}
			back, err := kafka.EventOf(kafka.RecordOf(r))
			if err != nil || back.ID != n.ID || back.SequenceID != n.SequenceID || back.Position != n.Position || back.Topic != n.Topic || back.Codec != n.Codec || !bytes.Equal(back.State, n.State) {
				t.Errorf("EventOf = %+v, %v; want %+v", back, err, n)
			}
		}
	}
	checkKeyOrder(t, got)

	s := r.Stats()
	if !s.Active || s.Published != want || s.Skipped != 1 || s.Checkpoint != last || s.LastPublishedID != last || s.Lag != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestRelayCheckpointsOnlyAcknowledged fails every produce to one partition for
// a while: the checkpoint must stay below the first item of that partition,
// and once the fault is gone every item must arrive.
func TestRelayCheckpointsOnlyAcknowledged(t *testing.T) {
	c := newCluster(t, 4, "example")
	rec := memory.New()
	r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{PageSize: 50, CheckpointInterval: time.Millisecond})
	runRelay(t, r)

	insert(t, rec, exampleItems("example", 20, 200))
	waitCheckpoint(t, rec, "relay", 200, 10*time.Second)

	const faulty = 2
	fault := c.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: topics.Events("example"), Partitions: []int32{faulty},
		Err: kerr.InvalidRecord, Count: -1,
	})
	insert(t, rec, exampleItems("example", 20, 300))
	waitFor(t, 10*time.Second, "failures", func() bool { return r.Stats().Failures >= 3 })
	var faultCP int64
	for range 10 {
		faultCP = max(faultCP, checkpoint(t, rec, "relay"))
		time.Sleep(20 * time.Millisecond)
	}
	if faultCP >= 500 {
		t.Fatalf("checkpoint reached %d while a partition was failing", faultCP)
	}
	if s := r.Stats(); s.Lag != s.MaxID-s.Checkpoint || s.Lag <= 0 || s.LastPublishedID >= 500 {
		t.Errorf("stats during the fault %+v", s)
	}
	fault.Remove()
	waitCheckpoint(t, rec, "relay", 500, 15*time.Second)

	got := consume(t, c, 500, 10*time.Second, 300*time.Millisecond, topics.Events("example"))
	byID := byNotificationID(t, got)
	first := int64(-1) // first item of phase two on the faulty partition
	dups := 0
	for id := int64(1); id <= 500; id++ {
		rs := byID[id]
		if len(rs) == 0 {
			t.Fatalf("notification %d never published", id)
		}
		if id <= 200 && len(rs) != 1 {
			t.Errorf("notification %d published %d times before any fault", id, len(rs))
		}
		dups += len(rs) - 1
		if id > 200 && first < 0 && rs[0].Partition == faulty {
			first = id
		}
	}
	if first < 0 {
		t.Fatal("no item went to the faulty partition")
	}
	if faultCP >= first {
		t.Errorf("checkpoint %d passed notification %d, which the broker refused", faultCP, first)
	}
	t.Logf("checkpoint during the fault %d, first refused item %d, duplicates after recovery %d", faultCP, first, dups)
	// Re-publishing from the checkpoint replays each key in order, so the last
	// copy of each position comes in position order.
	checkLastCopiesInOrder(t, got)
}

func checkLastCopiesInOrder(t testing.TB, recs []*kgo.Record) {
	t.Helper()
	type kp struct {
		key string
		pos int64
	}
	lastAt := make(map[kp]int64)
	for _, r := range recs {
		p, _ := header(r, wire.HeaderPosition)
		pos, _ := strconv.ParseInt(p, 10, 64)
		k := kp{string(r.Key), pos}
		lastAt[k] = max(lastAt[k], r.Offset)
	}
	for k, off := range lastAt {
		if k.pos == 0 {
			continue
		}
		if prev, ok := lastAt[kp{k.key, k.pos - 1}]; !ok || prev > off {
			t.Errorf("key %s: last copy of position %d at offset %d, of position %d at %d", k.key, k.pos, off, k.pos-1, prev)
		}
	}
}

// TestRelayIdempotentUnderFaults injects faults the idempotent producer
// retries: connections cut before the broker reads a request, and requests
// the broker applies but answers with a retriable error. Every event must
// arrive exactly once, in order.
func TestRelayIdempotentUnderFaults(t *testing.T) {
	c := newCluster(t, 3, "example")
	var produces, cut atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if produces.Add(1)%5 == 0 && cut.Load() < 6 {
			cut.Add(1)
			return nil, errors.New("injected: connection cut"), true
		}
		return nil, nil, false
	})
	applied := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicasAfterAppend, Count: 6})

	rec := memory.New()
	r := newRelay(t, newRelayClient(t, c, kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond })), rec, kafka.RelayConfig{PageSize: 40})
	runRelay(t, r)
	const n = 2000
	items := exampleItems("example", 50, n)
	for i := 0; i < n; i += 200 {
		insert(t, rec, items[i:i+200])
		time.Sleep(5 * time.Millisecond)
	}
	waitCheckpoint(t, rec, "relay", n, 20*time.Second)
	if cut.Load() == 0 || applied.Hits() == 0 {
		t.Fatalf("faults not injected: %d cuts, %d applied-but-failed", cut.Load(), applied.Hits())
	}
	got := consume(t, c, n, 10*time.Second, 300*time.Millisecond, topics.Events("example"))
	byID := byNotificationID(t, got)
	for id := int64(1); id <= n; id++ {
		if len(byID[id]) != 1 {
			t.Fatalf("notification %d published %d times, want 1", id, len(byID[id]))
		}
	}
	if len(got) != n {
		t.Fatalf("%d records, want %d", len(got), n)
	}
	checkKeyOrder(t, got)
	if s := r.Stats(); s.Failures != 0 || s.Published != n {
		t.Errorf("stats %+v", s)
	}
	t.Logf("%d connections cut, %d produce requests applied and answered with an error", cut.Load(), applied.Hits())
}

func TestRelayRestartResumesFromCheckpoint(t *testing.T) {
	c := newCluster(t, 3, "example")
	rec := memory.New()
	items := exampleItems("example", 10, 300)
	insert(t, rec, items[:100])

	stop := runRelay(t, newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{}))
	waitCheckpoint(t, rec, "relay", 100, 10*time.Second)
	stop()
	if cp := checkpoint(t, rec, "relay"); cp != 100 {
		t.Fatalf("checkpoint after stop %d, want 100", cp)
	}
	insert(t, rec, items[100:])
	r2 := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{})
	runRelay(t, r2)
	waitCheckpoint(t, rec, "relay", 300, 10*time.Second)
	if s := r2.Stats(); s.Published != 200 {
		t.Errorf("second relay published %d, want 200", s.Published)
	}
	got := consume(t, c, 300, 10*time.Second, 300*time.Millisecond, topics.Events("example"))
	byID := byNotificationID(t, got)
	for id := int64(1); id <= 300; id++ {
		if len(byID[id]) != 1 {
			t.Fatalf("notification %d published %d times, want 1", id, len(byID[id]))
		}
	}
	checkKeyOrder(t, got)
}

func TestRelayFailover(t *testing.T) {
	c := newCluster(t, 3, "example")
	rec := memory.New()
	lock := kafka.NewLocalLock()
	cfg := kafka.RelayConfig{Locker: lock, LockRetryInterval: 200 * time.Millisecond}
	a := newRelay(t, newRelayClient(t, c), rec, cfg)
	b := newRelay(t, newRelayClient(t, c), rec, cfg)
	stopA := runRelay(t, a)
	waitFor(t, 5*time.Second, "relay a active", func() bool { return a.Stats().Active })
	runRelay(t, b)

	// A writer keeps committing while the relays change over.
	const n = 3000
	items := exampleItems("example", 40, n)
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for i := 0; i < n; i += 50 {
			insert(t, rec, items[i:i+50])
			time.Sleep(2 * time.Millisecond)
		}
	}()

	time.Sleep(150 * time.Millisecond)
	if sa, sb := a.Stats(), b.Stats(); !sa.Active || sb.Active || sb.Published != 0 || sa.Published == 0 {
		t.Fatalf("before fail-over: a %+v, b %+v", sa, sb)
	}
	stopped := time.Now()
	stopA()
	waitFor(t, 5*time.Second, "standby takes over", func() bool { return b.Stats().Active })
	took := time.Since(stopped)
	<-writing
	waitCheckpoint(t, rec, "relay", n, 10*time.Second)
	if sa := a.Stats(); sa.Active {
		t.Errorf("stopped relay still active")
	}
	got := consume(t, c, n, 10*time.Second, 300*time.Millisecond, topics.Events("example"))
	byID := byNotificationID(t, got)
	dups := 0
	for id := int64(1); id <= n; id++ {
		if len(byID[id]) == 0 {
			t.Fatalf("notification %d lost in the fail-over", id)
		}
		dups += len(byID[id]) - 1
	}
	if dups != 0 {
		t.Errorf("%d duplicates after a clean hand-over", dups)
	}
	checkKeyOrder(t, got)
	t.Logf("standby took over in %s; a published %d, b published %d", took, a.Stats().Published, b.Stats().Published)
}

func TestRelayCreatesTopicsWithAdmin(t *testing.T) {
	c := newCluster(t, 1) // no events topics
	rec := memory.New()
	r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{Admin: admin(t, c), TopicPartitions: 2, TopicReplicationFactor: 1})
	runRelay(t, r)
	insert(t, rec, exampleItems("invoice", 2, 10))
	waitCheckpoint(t, rec, "relay", 10, 10*time.Second)
	if got := consume(t, c, 10, 5*time.Second, 0, topics.Events("invoice")); len(got) != 10 {
		t.Fatalf("%d records, want 10", len(got))
	}
}

func TestRelayDeadLettersWhatItCannotRoute(t *testing.T) {
	c := newCluster(t, 1, "example")
	rec := memory.New()
	bad := []store.SequencedItem{
		{SequenceID: uuid.New(), Topic: wire.ResultItemTopic, State: []byte("not json"), Codec: "json"},
		{SequenceID: uuid.New(), Topic: "in voice.Created", State: []byte(`{}`), Codec: "json"},
		{SequenceID: uuid.New(), Topic: "example.Big", State: bytes.Repeat([]byte("x"), 2<<20), Codec: "json"},
	}
	if _, err := rec.InsertEvents(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	insert(t, rec, exampleItems("example", 1, 3))
	r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{})
	runRelay(t, r)
	waitCheckpoint(t, rec, "relay", 6, 10*time.Second)
	dls := consume(t, c, 3, 5*time.Second, 200*time.Millisecond, topics.DeadLetters())
	if len(dls) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dls))
	}
	for i, d := range dls {
		if e, _ := header(d, wire.HeaderError); e == "" {
			t.Errorf("dead letter %d has no error header", i)
		}
		if off, _ := header(d, wire.HeaderSourceOffset); off != strconv.Itoa(i+1) {
			t.Errorf("dead letter %d source offset %s", i, off)
		}
	}
	if len(dls[2].Value) != 0 {
		t.Errorf("oversized item's dead letter carries its value")
	}
	if s := r.Stats(); s.DeadLettered != 3 || s.Published != 6 {
		t.Errorf("stats %+v", s)
	}
}

func TestNewRelayChecksClient(t *testing.T) {
	c := newCluster(t, 1)
	rec := memory.New()
	cfg := kafka.RelayConfig{Locker: kafka.NewLocalLock()}
	for name, opts := range map[string][]kgo.Opt{
		"acks":        {kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()},
		"idempotence": {kgo.DisableIdempotentWrite()},
		"manual":      {kgo.ManualFlushing()},
	} {
		if _, err := kafka.NewRelay(newClient(t, c, opts...), rec, cfg); err == nil {
			t.Errorf("%s: NewRelay accepted the client", name)
		}
	}
	if _, err := kafka.NewRelay(newClient(t, c), rec, kafka.RelayConfig{}); err == nil {
		t.Error("NewRelay accepted a config without a Locker")
	}
	if _, err := kafka.NewRelay(newClient(t, c), rec, cfg); err != nil {
		t.Errorf("default client: %v", err)
	}
}

// pollOnly hides the recorder's Notify, so the relay must poll.
type pollOnly struct{ kafka.RelaySource }

func TestRelayPollsWithoutNotifier(t *testing.T) {
	c := newCluster(t, 1, "example")
	rec := memory.New()
	r := newRelay(t, newRelayClient(t, c), pollOnly{rec}, kafka.RelayConfig{PollInterval: 20 * time.Millisecond})
	runRelay(t, r)
	items := exampleItems("example", 3, 30)
	for i := range 3 {
		insert(t, rec, items[i*10:(i+1)*10])
		waitCheckpoint(t, rec, "relay", int64((i+1)*10), 5*time.Second)
	}
}

// heldElsewhere says "held by another holder" the PostgreSQL recorder's way:
// no context, no error.
type heldElsewhere struct{ tries atomic.Int64 }

func (h *heldElsewhere) TryLock(context.Context, string) (context.Context, func(), error) {
	h.tries.Add(1)
	return nil, nil, nil
}

// A relay whose lock is held elsewhere stands by: it neither panics nor
// publishes, and keeps trying.
func TestRelayStandsByWhenLockHeldElsewhere(t *testing.T) {
	c := newCluster(t, 1, "example")
	rec := memory.New()
	insert(t, rec, exampleItems("example", 2, 10))
	lock := &heldElsewhere{}
	r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{Locker: lock, LockRetryInterval: 20 * time.Millisecond})
	stop := runRelay(t, r)
	waitFor(t, 5*time.Second, "several tries", func() bool { return lock.tries.Load() >= 3 })
	if s := r.Stats(); s.Active || s.Published != 0 {
		t.Fatalf("relay without the lock: %+v", s)
	}
	stop()
}

// TestRelayLearnsTopicLimits gives the events topic a max.message.bytes of 3
// MiB and the brokers their default: with TopicLimits, an event of 2 MiB is
// published whole, and one of 4 MiB goes to the dead letters without its
// value, as does a 2 MiB item whose topic (unrouted) keeps the default.
func TestRelayLearnsTopicLimits(t *testing.T) {
	c := newCluster(t, 1, "example")
	adm := admin(t, c)
	limit := strconv.Itoa(3 << 20)
	resp, err := adm.AlterTopicConfigs(t.Context(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &limit}}, topics.Events("example"))
	if err == nil {
		_, err = resp.On(topics.Events("example"), func(r *kadm.AlterConfigsResponse) error { return r.Err })
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := memory.New()
	items := []store.SequencedItem{
		{SequenceID: uuid.New(), Topic: "example.Big", State: bytes.Repeat([]byte("x"), 2<<20), Codec: "json"},
		{SequenceID: uuid.New(), Topic: "example.Huge", State: bytes.Repeat([]byte("y"), 4<<20), Codec: "json"},
		{SequenceID: uuid.New(), Topic: "Unrouted", State: bytes.Repeat([]byte("z"), 2<<20), Codec: "json"},
	}
	if _, err := rec.InsertEvents(t.Context(), items); err != nil {
		t.Fatal(err)
	}
	limits := kafka.NewTopicLimits(kafka.KafkaDefaultMaxMessageBytes)
	r := newRelay(t, newRelayClient(t, c, limits.ClientOption()), rec, kafka.RelayConfig{
		Admin: adm, TopicLimits: limits, UnroutedTopic: "eventlog.unrouted",
	})
	runRelay(t, r)
	waitCheckpoint(t, rec, "relay", 3, 10*time.Second)
	if got := limits.BatchMaxBytes(topics.Events("example")); got != 3<<20 {
		t.Errorf("learned limit of the events topic %d, want %d", got, 3<<20)
	}
	if got := limits.BatchMaxBytes(topics.DeadLetters()); got != kafka.KafkaDefaultMaxMessageBytes {
		t.Errorf("learned limit of the dead-letters topic %d, want the default %d", got, kafka.KafkaDefaultMaxMessageBytes)
	}
	evs := consume(t, c, 1, 5*time.Second, 200*time.Millisecond, topics.Events("example"))
	if len(evs) != 1 || !bytes.Equal(evs[0].Value, items[0].State) {
		t.Fatalf("%d events, want the 2 MiB one whole", len(evs))
	}
	dls := consume(t, c, 2, 5*time.Second, 200*time.Millisecond, topics.DeadLetters())
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dls))
	}
	for i, d := range dls {
		if len(d.Value) != 0 {
			t.Errorf("dead letter %d carries %d value bytes", i, len(d.Value))
		}
		if off, _ := header(d, wire.HeaderSourceOffset); off != strconv.Itoa(i+2) {
			t.Errorf("dead letter %d source offset %s, want %d", i, off, i+2)
		}
		if e, _ := header(d, wire.HeaderError); !strings.Contains(e, "limit") {
			t.Errorf("dead letter %d error %q", i, e)
		}
	}
	if s := r.Stats(); s.DeadLettered != 2 || s.Published != 3 {
		t.Errorf("stats %+v", s)
	}
}

// TestRelayTopicLimitsNeedAdmin: the limits cannot be learned without Admin.
func TestRelayTopicLimitsNeedAdmin(t *testing.T) {
	c := newCluster(t, 1, "example")
	limits := kafka.NewTopicLimits(kafka.KafkaDefaultMaxMessageBytes)
	_, err := kafka.NewRelay(newRelayClient(t, c, limits.ClientOption()), memory.New(), kafka.RelayConfig{
		Locker: kafka.NewLocalLock(), TopicLimits: limits,
	})
	if err == nil {
		t.Fatal("NewRelay accepted TopicLimits without Admin")
	}
}

// lateSource is a memory recorder whose items become readable some time after
// the wake-up of their commit, as on PostgreSQL, where a committed item is
// read only once every older transaction has ended.
type lateSource struct {
	*memory.Recorder
	delay time.Duration

	mu      sync.Mutex
	visible map[int64]time.Time // notification id -> readable from
}

func (s *lateSource) SelectNotifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	ns, err := s.Recorder.SelectNotifications(ctx, after, limit)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, n := range ns {
		at, ok := s.visible[n.ID]
		if !ok {
			at = time.Now().Add(s.delay)
			s.visible[n.ID] = at
		}
		if time.Now().Before(at) {
			return ns[:i], err
		}
	}
	return ns, err
}

// A commit that the wake-up's read does not see yet is published soon after,
// not at the next NotifiedPollInterval.
func TestRelayReadsAgainSoonAfterWakeUp(t *testing.T) {
	c := newCluster(t, 1, "example")
	src := &lateSource{Recorder: memory.New(), delay: 20 * time.Millisecond, visible: map[int64]time.Time{}}
	r := newRelay(t, newRelayClient(t, c), src, kafka.RelayConfig{NotifiedPollInterval: 10 * time.Second})
	runRelay(t, r)
	waitFor(t, 5*time.Second, "the relay to lead", func() bool { return r.Stats().Active })
	for i, it := range exampleItems("example", 1, 3) {
		start := time.Now()
		if _, err := src.InsertEvents(t.Context(), []store.SequencedItem{it}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "item "+strconv.Itoa(i+1)+" acknowledged", func() bool { return r.Stats().LastPublishedID >= int64(i+1) })
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("item %d published after %s", i+1, d)
		}
	}
}
