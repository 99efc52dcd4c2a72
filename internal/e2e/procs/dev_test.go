package procs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestDevSIGKILL runs `eventlog dev` (embedded broker, SQLite store, writer,
// relay, projector and HTTP API in one process) as a child process with a
// data directory, while a Kafka client (franz-go, acks=all, idempotent)
// sends commands to its broker continuously. The test SIGKILLs dev at random
// moments and starts it again on the same data directory and ports. The
// client sends each command until the broker acknowledges it (a produce that
// fails is sent again with the same command id, as any client must).
//
// At the end every acknowledged command must have exactly one effect: each
// entity's version (GET /v1/entities) is the number of commands sent to it,
// its events (GET /v1/entities/.../events) set each command's attribute
// exactly once, the read model (GET /v1/read-models) agrees, and every
// command has an accepted result on the results topic.
//
// Bugs it catches: an acknowledged produce the embedded broker loses in a
// crash (no fsync before the ack), a command applied twice when it is
// redelivered after a crash (the writer's tracking or its deduplication by
// command id not committed with the events), a relay or projector that does
// not resume after a crash, a read model that is behind or ahead of the store
// after a restart, and a dev that cannot start again on what a killed one
// left behind (a stale lock, a half-written broker log, ports not released).
func TestDevSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts eventlog dev; skipped with -short")
	}
	var (
		entities = envInt("EVENTLOG_PROCS_DEV_ENTITIES", 100)
		steps    = envInt("EVENTLOG_PROCS_DEV_STEPS", 31) // a create and 30 updates
		kills    = envInt("EVENTLOG_PROCS_DEV_KILLS", 5)
		rate     = envInt("EVENTLOG_PROCS_DEV_RATE", 150) // updates a second
	)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	t0 := time.Now()
	dataDir := t.TempDir()
	brokerAddr, httpAddr := freeAddr(t), freeAddr(t)
	ps := newProcSet(t)
	args := append([]string{"dev", "-data-dir", dataDir, "-broker-addr", brokerAddr, "-http-addr", httpAddr, "-partitions", "4"}, logFlags...)
	life := 0
	var restarts []time.Duration
	startDev := func() *proc {
		life++
		t1 := time.Now()
		p := ps.start(fmt.Sprintf("dev-%d", life), args...)
		waitReady(t, p, httpAddr, 2*time.Minute)
		restarts = append(restarts, time.Since(t1).Round(time.Millisecond))
		return p
	}
	dev := startDev()

	wl := newWorkload(entities, steps)
	s := newSender(t, brokerAddr)
	// The creates first, all acknowledged, so that every update follows its
	// entity's create on the entity's partition.
	var creates, updates []wire.Command
	for k := range steps {
		for i := range wl.ids {
			if k == 0 {
				creates = append(creates, wl.command(i, k))
			} else {
				updates = append(updates, wl.command(i, k))
			}
		}
	}
	s.send(ctx, creates, 0)
	if err := s.wait(ctx); err != nil {
		t.Fatal(err)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.send(ctx, updates, rate)
	}()

	// SIGKILL and restart while the updates flow.
	rng := testutil.Rand(t, 3)
	for range kills {
		time.Sleep(time.Duration(1000+rng.IntN(2500)) * time.Millisecond)
		dev.kill()
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		dev = startDev()
	}
	<-sent
	if err := s.wait(ctx); err != nil {
		t.Fatal(err)
	}
	tLast := time.Now()
	t.Logf("%d commands acknowledged (%d sent again after a failed produce: %q); dev killed %d times; starts took %v",
		len(creates)+len(updates), s.resent, s.errs(), kills, restarts)

	// Every command has had its effect, once.
	api := "http://" + httpAddr
	we := wl.want()
	for _, id := range wl.ids {
		var e struct {
			Version    int64
			Attributes map[string]json.RawMessage
		}
		msg, err := poll(ctx, 2*time.Minute, 100*time.Millisecond, func() (bool, string, error) {
			code, err := getJSON(ctx, api+"/v1/entities/example/"+id.String(), &e)
			return err == nil && code == http.StatusOK && e.Version >= we.Version, fmt.Sprintf("%d %v version %d", code, err, e.Version), nil
		})
		if err != nil {
			t.Fatalf("entity %s: %v (%s)", id, err, msg)
		}
		got := entityState{Version: e.Version, Attributes: map[string]any{}}
		for k, v := range e.Attributes {
			var x any
			_ = json.Unmarshal(v, &x)
			got.Attributes[k] = x
		}
		if got.String() != we.String() {
			t.Errorf("entity %s is %s, want %s", id, got, we)
		}
		var evs struct {
			Events []struct {
				Position int64
				Topic    string
				State    json.RawMessage
			}
		}
		if code, err := getJSON(ctx, api+"/v1/entities/example/"+id.String()+"/events", &evs); err != nil || code != http.StatusOK {
			t.Fatalf("events of %s: %d %v", id, code, err)
		}
		set := map[string]int{}
		for i, ev := range evs.Events {
			if ev.Position != int64(i) {
				t.Errorf("entity %s: event %d at position %d", id, i, ev.Position)
			}
			var st struct {
				Name       string
				Attributes map[string]json.RawMessage
			}
			_ = json.Unmarshal(ev.State, &st)
			if strings.HasSuffix(ev.Topic, ".AttributeChanged") {
				set[st.Name]++
			}
			for k := range st.Attributes {
				set[k]++
			}
		}
		for k, n := range set {
			if n != 1 {
				t.Errorf("entity %s: attribute %s set by %d events (a command applied %d times)", id, k, n, n)
			}
		}
	}
	t.Logf("the store caught up %s after the last acknowledgement", time.Since(tLast).Round(time.Millisecond))
	for _, id := range wl.ids {
		var row struct {
			Version    int64
			Attributes map[string]json.RawMessage
		}
		msg, err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, string, error) {
			code, err := getJSON(ctx, api+"/v1/read-models/example/"+id.String(), &row)
			return err == nil && code == http.StatusOK && row.Version == we.Version && len(row.Attributes) == len(we.Attributes),
				fmt.Sprintf("%d %v version %d, %d attributes", code, err, row.Version, len(row.Attributes)), nil
		})
		if err != nil {
			t.Errorf("read model of %s: %v (%s)", id, err, msg)
		}
	}
	t.Logf("the read model caught up %s after the last acknowledgement", time.Since(tLast).Round(time.Millisecond))

	// Every command has a result, and it says accepted.
	results := readTopic(t, ctx, brokerAddr, topics.Results())
	first := map[uuid.UUID]wire.Result{}
	copies := 0
	for _, r := range results {
		res, err := wire.DecodeResult(r.Value)
		if err != nil {
			t.Errorf("result record %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
			continue
		}
		if _, ok := first[res.CommandID]; ok {
			copies++
			continue
		}
		first[res.CommandID] = res
	}
	for _, c := range append(creates, updates...) {
		res, ok := first[c.CommandID]
		switch {
		case !ok:
			t.Errorf("command %s has no result", c.CommandID)
		case res.Status != wire.StatusAccepted:
			t.Errorf("command %s: result %+v", c.CommandID, res)
		}
	}
	t.Logf("%d result records for %d commands (%d republished copies)", len(results), len(creates)+len(updates), copies)
	if _, err := dev.term(30 * time.Second); err != nil {
		t.Error(err)
	}
	if p := ps.problems(); len(p) > 0 {
		t.Errorf("child processes reported problems: %q", p)
	}
	t.Logf("total %s", time.Since(t0).Round(time.Millisecond))
}

// sender sends commands until the broker acknowledges each, sending one
// again (same command id) whenever its produce fails.
type sender struct {
	t  testing.TB
	cl *kgo.Client

	mu      sync.Mutex
	pending int
	resent  int
	errSeen map[string]int
	failed  chan *kgo.Record
	idle    chan struct{}
}

func newSender(t testing.TB, addr string) *sender {
	s := &sender{t: t, errSeen: map[string]int{}, failed: make(chan *kgo.Record, 100000), idle: make(chan struct{}, 1)}
	s.cl = client(t, addr, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(5*time.Millisecond))
	return s
}

// send produces cmds at about rate a second (0: at once) without waiting for
// acknowledgements.
func (s *sender) send(ctx context.Context, cmds []wire.Command, rate int) {
	start := time.Now()
	for i, c := range cmds {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
		}
		s.produce(ctx, commandRecord(c))
	}
}

func (s *sender) produce(ctx context.Context, r *kgo.Record) {
	s.mu.Lock()
	s.pending++
	s.mu.Unlock()
	s.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.pending--
		if err != nil {
			s.errSeen[err.Error()]++
			s.failed <- &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value}
		}
		if s.pending == 0 {
			select {
			case s.idle <- struct{}{}:
			default:
			}
		}
	})
}

// wait waits until everything sent is acknowledged, sending failed records
// again.
func (s *sender) wait(ctx context.Context) error {
	for {
		select {
		case r := <-s.failed:
			s.mu.Lock()
			s.resent++
			s.mu.Unlock()
			s.produce(ctx, r)
			continue
		default:
		}
		s.mu.Lock()
		n := s.pending
		s.mu.Unlock()
		if n == 0 && len(s.failed) == 0 {
			return nil
		}
		select {
		case <-s.idle:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%d commands not acknowledged: %w", n, ctx.Err())
		}
	}
}

func (s *sender) errs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for e, n := range s.errSeen {
		out = append(out, fmt.Sprintf("%s ×%d", e, n))
	}
	return out
}

// readTopic returns every record of topic at the broker at addr, from its
// start to the end offsets it has when readTopic is called.
func readTopic(t testing.TB, ctx context.Context, addr, topic string) []*kgo.Record {
	t.Helper()
	cl := client(t, addr)
	ends, err := endOffsets(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	start := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end > 0 {
			start[p] = kgo.NewOffset().AtStart()
		} else {
			delete(ends, p)
		}
	}
	if len(ends) == 0 {
		return nil
	}
	// Control records (the relay's transaction markers) are kept to see the
	// end of a partition that ends with one, and left out.
	cons := client(t, addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.KeepControlRecords())
	var out []*kgo.Record
	for len(ends) > 0 {
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v; partitions not read to the end: %v", topic, ctx.Err(), ends)
		}
		cons.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			end, ok := ends[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset+1 >= end {
				delete(ends, r.Partition)
			}
		})
	}
	return out
}
