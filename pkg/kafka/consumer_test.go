package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

const testTopic = "things"

func newTopicCluster(t testing.TB, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// produceN produces n records to each of the given partitions of testTopic.
func produceN(t testing.TB, cl *kgo.Client, n int, partitions ...int32) {
	t.Helper()
	var recs []*kgo.Record
	for _, p := range partitions {
		for i := range n {
			recs = append(recs, &kgo.Record{Topic: testTopic, Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func manualProducer(t testing.TB, c *kfake.Cluster) *kgo.Client {
	return newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

type tp struct {
	topic     string
	partition int32
}

// applier is a BatchHandler that applies each record exactly once over the
// memory recorder: in one transaction per batch it moves the tracking of each
// partition to the batch's first offset and then its last, and stores one item
// per record at position = offset in a sequence of the partition's own (so a
// second application of a record could not commit).
type applier struct {
	rec  *memory.Recorder
	name string
	// before, if set, runs first; its error is returned.
	before func(ctx context.Context, recs []wire.Record) error

	mu      sync.Mutex
	calls   [][]wire.Record
	applied map[tp][]int64 // offsets applied, in order
}

func newApplier(rec *memory.Recorder, name string) *applier {
	return &applier{rec: rec, name: name, applied: make(map[tp][]int64)}
}

var applierSpace = uuid.MustParse("2b1f3d4c-5e6f-4a1b-8c9d-0e1f2a3b4c5d")

func seqOf(k tp) uuid.UUID {
	return uuid.NewSHA1(applierSpace, []byte(k.topic+"/"+strconv.Itoa(int(k.partition))))
}

func (a *applier) HandleBatch(ctx context.Context, recs []wire.Record) error {
	a.mu.Lock()
	a.calls = append(a.calls, recs)
	a.mu.Unlock()
	if a.before != nil {
		if err := a.before(ctx, recs); err != nil {
			return err
		}
	}
	first, last := make(map[tp]int64), make(map[tp]int64)
	var order []tp
	items := make([]store.SequencedItem, 0, len(recs))
	for _, r := range recs {
		k := tp{r.Topic, r.Partition}
		if _, ok := first[k]; !ok {
			first[k] = r.Offset
			order = append(order, k)
		}
		last[k] = r.Offset
		items = append(items, store.SequencedItem{SequenceID: seqOf(k), Position: r.Offset, Topic: "applied.Record", State: r.Value, Codec: "raw"})
	}
	err := a.rec.InTx(ctx, func(tx store.Tx) error {
		for _, k := range order {
			if err := tx.SetTracking(ctx, store.Tracking{Name: a.name, Topic: k.topic, Partition: k.partition, Position: first[k]}); err != nil {
				return err
			}
			if last[k] != first[k] {
				if err := tx.SetTracking(ctx, store.Tracking{Name: a.name, Topic: k.topic, Partition: k.partition, Position: last[k]}); err != nil {
					return err
				}
			}
		}
		_, err := tx.InsertEvents(ctx, items)
		return err
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	for _, r := range recs {
		k := tp{r.Topic, r.Partition}
		a.applied[k] = append(a.applied[k], r.Offset)
	}
	a.mu.Unlock()
	return nil
}

func (a *applier) appliedOffsets(k tp) []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.applied[k])
}

// checkStored checks that the recorder holds exactly the offsets from..to-1 of
// partition k, once each.
func checkStored(t testing.TB, rec *memory.Recorder, k tp, from, to int64) {
	t.Helper()
	items, err := rec.SelectEvents(context.Background(), seqOf(k), store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(items)) != to-from {
		t.Fatalf("partition %d: %d records applied, want %d", k.partition, len(items), to-from)
	}
	for i, it := range items {
		if it.Position != from+int64(i) {
			t.Fatalf("partition %d: applied offset %d at %d, want %d", k.partition, it.Position, i, from+int64(i))
		}
	}
}

func seq(from, to int64) []int64 {
	var out []int64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func consumerConfig(t testing.TB, c *kfake.Cluster, group string) kafka.ConsumerConfig {
	return kafka.ConsumerConfig{
		Name: "projector", Group: group, Topics: []string{testTopic},
		ClientOptions: []kgo.Opt{
			kgo.SeedBrokers(c.ListenAddrs()...),
			kgo.WithLogger(kafka.NewLogger(testLogger(t))),
			kgo.FetchMaxWait(100 * time.Millisecond),
		},
		MaxPollRecords:    100,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  5 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		MinBackoff:        10 * time.Millisecond,
		MaxBackoff:        50 * time.Millisecond,
		Logger:            testLogger(t),
	}
}

func runConsumer(t testing.TB, cons *kafka.Consumer) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("consumer Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("consumer did not stop")
			}
			took = time.Since(start)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return stop
}

func newConsumer(t testing.TB, cfg kafka.ConsumerConfig, h kafka.BatchHandler, tr kafka.TrackingReader) *kafka.Consumer {
	t.Helper()
	cons, err := kafka.NewConsumer(cfg, h, tr)
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

func setTracking(t testing.TB, rec *memory.Recorder, tr store.Tracking) {
	t.Helper()
	if err := rec.InTx(context.Background(), func(tx store.Tx) error { return tx.SetTracking(context.Background(), tr) }); err != nil {
		t.Fatal(err)
	}
}

func waitApplied(t testing.TB, a *applier, k tp, last int64, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("partition %d applied up to %d", k.partition, last), func() bool {
		offs := a.appliedOffsets(k)
		return len(offs) > 0 && offs[len(offs)-1] >= last
	})
}

// TestConsumerResumesFromTracking: the group's committed offsets say 3 and 15,
// the handler's tracking says 9 and nothing: the consumer must start at 10 and
// 0, and commit offsets after its batches.
func TestConsumerResumesFromTracking(t *testing.T) {
	c := newTopicCluster(t, 2)
	produceN(t, manualProducer(t, c), 20, 0, 1)
	rec := memory.New()
	setTracking(t, rec, store.Tracking{Name: "projector", Topic: testTopic, Partition: 0, Position: 9})

	adm := admin(t, c)
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: testTopic, Partition: 0, At: 3, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: testTopic, Partition: 1, At: 15, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(context.Background(), "g-resume", os); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}

	a := newApplier(rec, "projector")
	cons := newConsumer(t, consumerConfig(t, c, "g-resume"), a, rec)
	runConsumer(t, cons)
	p0, p1 := tp{testTopic, 0}, tp{testTopic, 1}
	waitApplied(t, a, p0, 19, 15*time.Second)
	waitApplied(t, a, p1, 19, 15*time.Second)
	if got := a.appliedOffsets(p0); !slices.Equal(got, seq(10, 20)) {
		t.Errorf("partition 0 applied %v, want 10..19", got)
	}
	if got := a.appliedOffsets(p1); !slices.Equal(got, seq(0, 20)) {
		t.Errorf("partition 1 applied %v, want 0..19", got)
	}
	checkStored(t, rec, p0, 10, 20)
	checkStored(t, rec, p1, 0, 20)
	waitFor(t, 5*time.Second, "offsets committed", func() bool {
		resp, err := adm.FetchOffsets(context.Background(), "g-resume")
		if err != nil {
			return false
		}
		o0, _ := resp.Lookup(testTopic, 0)
		o1, _ := resp.Lookup(testTopic, 1)
		return o0.At == 20 && o1.At == 20
	})
}

func TestConsumerRetriesTransientErrors(t *testing.T) {
	c := newTopicCluster(t, 1)
	produceN(t, manualProducer(t, c), 50, 0)
	rec := memory.New()
	a := newApplier(rec, "projector")
	fails := 3
	a.before = func(context.Context, []wire.Record) error {
		if fails > 0 { // HandleBatch is never called concurrently
			fails--
			return errors.New("database unavailable")
		}
		return nil
	}
	cons := newConsumer(t, consumerConfig(t, c, "g-retry"), a, rec)
	runConsumer(t, cons)
	k := tp{testTopic, 0}
	waitApplied(t, a, k, 49, 15*time.Second)
	a.mu.Lock()
	calls := slices.Clone(a.calls)
	a.mu.Unlock()
	if len(calls) < 4 {
		t.Fatalf("%d calls", len(calls))
	}
	for i := 1; i <= 3; i++ {
		if calls[i][0].Offset != calls[0][0].Offset || len(calls[i]) != len(calls[0]) {
			t.Errorf("attempt %d got offsets from %d (%d records), want the same batch from %d (%d records)",
				i+1, calls[i][0].Offset, len(calls[i]), calls[0][0].Offset, len(calls[0]))
		}
	}
	if got := a.appliedOffsets(k); !slices.Equal(got, seq(0, 50)) {
		t.Errorf("applied %v, want 0..49 once each", got)
	}
	checkStored(t, rec, k, 0, 50)
	if s := cons.Stats(); s.Retries != 3 || s.Records != 50 {
		t.Errorf("stats %+v", s)
	}
}

// TestConsumerTrackingConflictSeeks: while the first batch is being handled,
// another member (a zombie) records offsets up to 14. The handler's
// transaction fails with a tracking conflict; the consumer must re-read the
// tracking and go on at 15.
func TestConsumerTrackingConflictSeeks(t *testing.T) {
	c := newTopicCluster(t, 1)
	produceN(t, manualProducer(t, c), 30, 0)
	rec := memory.New()
	a := newApplier(rec, "projector")
	zombie := true
	a.before = func(context.Context, []wire.Record) error {
		if zombie {
			zombie = false
			setTracking(t, rec, store.Tracking{Name: "projector", Topic: testTopic, Partition: 0, Position: 14})
		}
		return nil
	}
	cons := newConsumer(t, consumerConfig(t, c, "g-conflict"), a, rec)
	runConsumer(t, cons)
	k := tp{testTopic, 0}
	waitApplied(t, a, k, 29, 15*time.Second)
	if got := a.appliedOffsets(k); !slices.Equal(got, seq(15, 30)) {
		t.Errorf("applied %v, want 15..29", got)
	}
	checkStored(t, rec, k, 15, 30)
	if s := cons.Stats(); s.Conflicts != 1 {
		t.Errorf("stats %+v, want 1 conflict", s)
	}
}

// TestConsumerRebalanceAppliesOnce: a second member joins mid-stream and the
// first leaves; every record is applied exactly once and no member ever starts
// a partition anywhere but right after its tracking (no conflicts).
func TestConsumerRebalanceAppliesOnce(t *testing.T) {
	const parts, perPart = 4, 500
	c := newTopicCluster(t, parts)
	prod := manualProducer(t, c)
	rec := memory.New()
	a := newApplier(rec, "projector")

	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for i := 0; i < perPart; i += 25 {
			var recs []*kgo.Record
			for p := range int32(parts) {
				for j := i; j < i+25; j++ {
					recs = append(recs, &kgo.Record{Topic: testTopic, Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, j)})
				}
			}
			if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(15 * time.Millisecond)
		}
	}()

	cfg := consumerConfig(t, c, "g-rebalance")
	cfg.MaxPollRecords = 50
	first := newConsumer(t, cfg, a, rec)
	stopFirst := runConsumer(t, first)
	waitFor(t, 10*time.Second, "first member busy", func() bool { return first.Stats().Records >= 300 })
	second := newConsumer(t, cfg, a, rec)
	runConsumer(t, second)
	waitFor(t, 15*time.Second, "second member busy", func() bool { return second.Stats().Records >= 200 })
	took := stopFirst()
	<-producing
	for p := range int32(parts) {
		waitApplied(t, a, tp{testTopic, p}, perPart-1, 20*time.Second)
	}
	for p := range int32(parts) {
		k := tp{testTopic, p}
		if got := a.appliedOffsets(k); !slices.Equal(got, seq(0, perPart)) {
			t.Errorf("partition %d: applied %d offsets, not 0..%d once each", p, len(got), perPart-1)
		}
		checkStored(t, rec, k, 0, perPart)
	}
	s1, s2 := first.Stats(), second.Stats()
	if s1.Conflicts != 0 || s2.Conflicts != 0 {
		t.Errorf("conflicts: first %+v, second %+v", s1, s2)
	}
	if s1.Records+s2.Records != parts*perPart {
		t.Errorf("records handled: %d + %d, want %d", s1.Records, s2.Records, parts*perPart)
	}
	t.Logf("first member handled %d, second %d; first stopped in %s", s1.Records, s2.Records, took)
}

func TestConsumerConfigValidate(t *testing.T) {
	for name, cfg := range map[string]kafka.ConsumerConfig{
		"no name":   {Group: "g", Topics: []string{"t"}},
		"no group":  {Name: "n", Topics: []string{"t"}},
		"no topics": {Name: "n", Group: "g"},
		"bad topic": {Name: "n", Group: "g", Topics: []string{"a b"}},
		"backoff":   {Name: "n", Group: "g", Topics: []string{"t"}, MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		// Checked against the default MaxBackoff (10s), not skipped.
		"min backoff over the default max": {Name: "n", Group: "g", Topics: []string{"t"}, MinBackoff: 20 * time.Second},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
		if _, err := kafka.NewConsumer(cfg, kafka.BatchHandlerFunc(func(context.Context, []wire.Record) error { return nil }), memory.New()); err == nil {
			t.Errorf("%s: NewConsumer accepted %+v", name, cfg)
		}
	}
	ok := kafka.ConsumerConfig{Name: "n", Group: "g", Topics: []string{"t"}}
	if err := ok.Validate(); err != nil {
		t.Error(err)
	}
}

// TestConsumerShutdownFinishesBatch cancels Run while a batch is being
// handled: the batch must complete (its context is not cancelled) before Run
// returns.
func TestConsumerShutdownFinishesBatch(t *testing.T) {
	c := newTopicCluster(t, 1)
	produceN(t, manualProducer(t, c), 10, 0)
	rec := memory.New()
	a := newApplier(rec, "projector")
	started := make(chan struct{})
	var once sync.Once
	a.before = func(ctx context.Context, _ []wire.Record) error {
		once.Do(func() { close(started) })
		select {
		case <-time.After(300 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cons := newConsumer(t, consumerConfig(t, c, "g-shutdown"), a, rec)
	stop := runConsumer(t, cons)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch")
	}
	took := stop()
	if took < 200*time.Millisecond {
		t.Errorf("Run returned after %s, before the batch could finish", took)
	}
	if s := cons.Stats(); s.Batches != 1 || s.Rewinds != 0 {
		t.Errorf("stats %+v, want the batch in flight finished", s)
	}
	pos, err := rec.Tracking(context.Background(), "projector", testTopic, 0)
	if err != nil || pos < 0 {
		t.Errorf("tracking %d, %v: the batch was not applied", pos, err)
	}
}
