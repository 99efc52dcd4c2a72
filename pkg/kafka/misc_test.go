package kafka_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/wire"
)

func TestTopicNames(t *testing.T) {
	got := kafka.TopicNames(wire.Topics{Prefix: "p"}, "example", "order", "example")
	want := []string{"p.commands", "p.command-results", "p.dead-letters", "p.events.example", "p.events.order"}
	if !slices.Equal(got, want) {
		t.Errorf("TopicNames = %v, want %v", got, want)
	}
}

func TestValidTopicName(t *testing.T) {
	for name, want := range map[string]bool{
		"eventlog.events.example": true, "a_b-c.D9": true, "": false, ".": false, "..": false,
		"a b": false, "a/b": false, "é": false, string(make([]byte, 250)): false,
	} {
		if got := kafka.ValidTopicName(name); got != want {
			t.Errorf("ValidTopicName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestEnsureTopics(t *testing.T) {
	c := newCluster(t, 1) // commands, results and dead letters exist
	adm := admin(t, c)
	ctx := context.Background()
	names := kafka.TopicNames(topics, "example", "order")
	if err := kafka.EnsureTopics(ctx, adm, names, 3, 1); err != nil {
		t.Fatal(err)
	}
	if err := kafka.EnsureTopics(ctx, adm, names, 3, 1); err != nil {
		t.Fatalf("second call: %v", err)
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		d, ok := details[n]
		if !ok || d.Err != nil {
			t.Fatalf("topic %s missing: %v", n, d.Err)
		}
		want := 3
		if n == topics.Commands() || n == topics.Results() || n == topics.DeadLetters() {
			want = 1 // existed before: left alone
		}
		if len(d.Partitions) != want {
			t.Errorf("%s has %d partitions, want %d", n, len(d.Partitions), want)
		}
	}
	if err := kafka.EnsureTopics(ctx, adm, []string{"bad name"}, 1, 1); err == nil {
		t.Error("EnsureTopics accepted an invalid name")
	}
}

func TestLocalLock(t *testing.T) {
	l := kafka.NewLocalLock()
	ctx, cancel := context.WithCancel(context.Background())
	held, release, err := l.TryLock(ctx, "relay")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.TryLock(context.Background(), "relay"); !errors.Is(err, kafka.ErrLocked) {
		t.Fatalf("second TryLock: %v, want ErrLocked", err)
	}
	if _, rel, err := l.TryLock(context.Background(), "other"); err != nil {
		t.Fatalf("other name: %v", err)
	} else {
		rel()
	}
	release()
	release() // twice is fine
	if held.Err() == nil {
		t.Error("held not cancelled by release")
	}
	held2, _, err := l.TryLock(ctx, "relay")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	cancel() // ending the holder's context releases the lock
	<-held2.Done()
	waitFor(t, time.Second, "lock freed", func() bool {
		_, rel, err := l.TryLock(context.Background(), "relay")
		if err == nil {
			rel()
		}
		return err == nil
	})
}

func TestEventOfRejectsBadHeaders(t *testing.T) {
	good := []wire.Header{
		{Key: wire.HeaderSequenceID, Value: []byte(uuid.NewString())},
		{Key: wire.HeaderPosition, Value: []byte("3")},
		{Key: wire.HeaderTopic, Value: []byte("example.Created")},
		{Key: wire.HeaderNotificationID, Value: []byte("17")},
		{Key: wire.HeaderCodec, Value: []byte("json")},
	}
	if n, err := kafka.EventOf(wire.Record{Headers: good, Value: []byte("{}")}); err != nil || n.Position != 3 || n.ID != 17 {
		t.Fatalf("EventOf = %+v, %v", n, err)
	}
	for i := range 4 {
		missing := slices.Delete(slices.Clone(good), i, i+1)
		if _, err := kafka.EventOf(wire.Record{Headers: missing}); !errors.Is(err, kafka.ErrHeaders) {
			t.Errorf("without %s: %v", good[i].Key, err)
		}
		bad := slices.Clone(good)
		bad[i] = wire.Header{Key: good[i].Key, Value: []byte("x y")}
		if i == 2 { // any non-empty topic is fine
			bad[i].Value = nil
		}
		if _, err := kafka.EventOf(wire.Record{Headers: bad}); !errors.Is(err, kafka.ErrHeaders) {
			t.Errorf("bad %s: %v", good[i].Key, err)
		}
	}
}

// TestCommander runs a stand-in writer that answers each command with a
// result, and sends commands through a Commander.
func TestCommander(t *testing.T) {
	c := newCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A result published before the Commander starts is not seen.
	old := wire.Result{CommandID: uuid.New(), Entity: "example", EntityID: uuid.New(), Status: wire.StatusAccepted}
	oldItem, _ := wire.ResultItem(old)
	prod := newClient(t, c)
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topics.Results(), Key: []byte(old.EntityID.String()), Value: oldItem.State}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	writer := newClient(t, c, kgo.ConsumeTopics(topics.Commands()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	go func() {
		for ctx.Err() == nil {
			fs := writer.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				cmd, err := wire.DecodeCommand(r.Value, 0)
				if err != nil {
					t.Errorf("writer got a bad command: %v", err)
					return
				}
				if string(r.Key) != cmd.EntityID.String() {
					t.Errorf("command keyed %s, want %s", r.Key, cmd.EntityID)
				}
				res := wire.Result{CommandID: cmd.CommandID, Entity: cmd.Entity, EntityID: cmd.EntityID, Status: wire.StatusAccepted, Version: 1, Positions: []int64{0}}
				item, _ := wire.ResultItem(res)
				writer.Produce(ctx, &kgo.Record{Topic: topics.Results(), Key: r.Key, Value: item.State}, nil)
			})
		}
	}()

	cmdr, err := kafka.NewCommander(newClient(t, c), kafka.CommanderConfig{
		Topics:        topics,
		ClientOptions: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchMaxWait(50 * time.Millisecond)},
		Logger:        testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- cmdr.Run(ctx) }()

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	for range 5 {
		cmd := wire.Command{CommandID: uuid.New(), Type: wire.TypeCreate, Entity: "example", EntityID: uuid.New()}
		res, err := cmdr.Do(wctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if res.CommandID != cmd.CommandID || res.EntityID != cmd.EntityID || res.Status != wire.StatusAccepted {
			t.Errorf("result %+v for %+v", res, cmd)
		}
		// A late Wait still finds it.
		if again, err := cmdr.Wait(wctx, cmd.CommandID); err != nil || again.CommandID != cmd.CommandID {
			t.Errorf("late Wait: %+v, %v", again, err)
		}
	}
	if err := cmdr.Send(wctx, wire.Command{CommandID: uuid.New()}); !errors.Is(err, wire.ErrEnvelope) {
		t.Errorf("Send of an invalid command: %v", err)
	}
	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	if _, err := cmdr.Wait(short, old.CommandID); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait for a result from before Run: %v", err)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestConsumerStatsAddSumsEveryCounter(t *testing.T) {
	testutil.CheckSumsEveryField(t, (*kafka.ConsumerStats).Add)
}
