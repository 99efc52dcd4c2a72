package kafka_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// txConfig is a transactional relay's configuration for the tests: it creates
// its checkpoint topic with an admin client of c.
func txConfig(t testing.TB, c *kfake.Cluster, cfg kafka.RelayConfig) kafka.RelayConfig {
	cfg.Transactional = true
	if cfg.Admin == nil {
		cfg.Admin = admin(t, c)
	}
	if cfg.TopicReplicationFactor == 0 {
		cfg.TopicReplicationFactor = 1
	}
	return cfg
}

// checkExactlyOnce checks that recs, read read_committed from the events
// topic, hold every notification 1..n exactly once and, per key, in
// position order.
func checkExactlyOnce(t testing.TB, recs []*kgo.Record, n int64) {
	t.Helper()
	byID := byNotificationID(t, recs)
	var dups, lost int
	for id := int64(1); id <= n; id++ {
		switch k := len(byID[id]); {
		case k == 0:
			lost++
		case k > 1:
			dups += k - 1
		}
	}
	if dups > 0 || lost > 0 || int64(len(recs)) != n {
		t.Fatalf("%d records for %d notifications: %d duplicates, %d lost", len(recs), n, dups, lost)
	}
	checkKeyOrder(t, recs)
}

// storedCheckpoint returns the last checkpoint committed to the checkpoint
// topic for the key, read read_committed.
func storedCheckpoint(t testing.TB, c *kfake.Cluster, topic string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range consume(t, c, 1<<30, time.Second, 0, topic) {
		n, err := strconv.ParseInt(string(r.Value), 10, 64)
		if err != nil {
			t.Fatalf("checkpoint record %q: %v", r.Value, err)
		}
		out[string(r.Key)] = n
	}
	return out
}

// TestTxRelayPublishesOnceAndResumesFromKafka: a transactional relay
// publishes every item once, commits its checkpoint to the checkpoint topic,
// and a relay started after it resumes from there, not from the store's copy.
func TestTxRelayPublishesOnceAndResumesFromKafka(t *testing.T) {
	c := newCluster(t, 3, "example")
	rec := memory.New()
	items := exampleItems("example", 20, 3000)
	insert(t, rec, items[:1000])

	r1 := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, kafka.RelayConfig{PageSize: 100}))
	stop := runRelay(t, r1)
	waitFor(t, 10*time.Second, "first relay publishes 1000", func() bool { return r1.Stats().LastPublishedID >= 1000 })
	stop()
	s1 := r1.Stats()
	if s1.Transactions == 0 || s1.Published != 1000 || s1.Aborted != 0 {
		t.Fatalf("first relay: %+v", s1)
	}
	if cp := checkpoint(t, rec, "relay"); cp != 1000 {
		t.Errorf("store's copy of the checkpoint after a clean stop: %d, want 1000", cp)
	}
	cps := storedCheckpoint(t, c, "eventlog.relay-checkpoints")
	if len(cps) != 1 {
		t.Fatalf("checkpoint topic holds keys %v, want one", cps)
	}
	for k, v := range cps {
		if v != 1000 {
			t.Fatalf("checkpoint %s = %d, want 1000", k, v)
		}
	}

	// The store's copy is only a hint: moved back, it changes nothing.
	insert(t, rec, items[1000:])
	r2 := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, kafka.RelayConfig{PageSize: 100, Name: "relay"}))
	runRelay(t, r2)
	waitFor(t, 10*time.Second, "second relay publishes the rest", func() bool { return r2.Stats().LastPublishedID >= 3000 })
	if s := r2.Stats(); s.Published != 2000 {
		t.Errorf("second relay published %d, want 2000 (%+v)", s.Published, s)
	}
	checkExactlyOnce(t, consume(t, c, 3000, 10*time.Second, 300*time.Millisecond, topics.Events("example")), 3000)
}

func TestTxRelayDefaultTransactionalIDFromStore(t *testing.T) {
	c := newCluster(t, 1, "example")
	rec := memory.New()
	insert(t, rec, exampleItems("example", 2, 10))
	r := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, kafka.RelayConfig{}))
	stop := runRelay(t, r)
	waitFor(t, 10*time.Second, "relay publishes", func() bool { return r.Stats().LastPublishedID >= 10 })
	stop()
	n, err := rec.Tracking(context.Background(), "relay", kafka.StoreIDTrackingTopic, 0)
	if err != nil || n <= 0 {
		t.Fatalf("store id %d, %v", n, err)
	}
	want := fmt.Sprintf("eventlog.relay.relay.%016x", n)
	if cps := storedCheckpoint(t, c, "eventlog.relay-checkpoints"); cps[want] != 10 {
		t.Fatalf("checkpoints %v, want %s = 10", cps, want)
	}
}

// lossyDialer returns a kgo.Dialer whose connections drop the answer to the
// requests drop selects: the connection closes instead of delivering it, after
// the broker has handled the request, as when a network fails between a
// broker's answer and the client. drop sees each request's key, version and
// body (after the request header).
func lossyDialer(drop func(key, version int16, body []byte) bool) kgo.Opt {
	var d net.Dialer
	return kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, host)
		if err != nil {
			return nil, err
		}
		return &lossyConn{Conn: c, drop: drop, dropping: map[int32]bool{}}, nil
	})
}

type lossyConn struct {
	net.Conn
	drop func(key, version int16, body []byte) bool

	mu       sync.Mutex
	wbuf     []byte         // the start of a request not yet whole
	dropping map[int32]bool // correlation ids whose answers to drop
	rbuf     []byte         // an answer read and not yet returned
}

func (c *lossyConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.wbuf = append(c.wbuf, p...)
	for len(c.wbuf) >= 4 {
		size := int(binary.BigEndian.Uint32(c.wbuf))
		if len(c.wbuf) < 4+size {
			break
		}
		frame := c.wbuf[4 : 4+size]
		key, version := int16(binary.BigEndian.Uint16(frame)), int16(binary.BigEndian.Uint16(frame[2:]))
		corr := int32(binary.BigEndian.Uint32(frame[4:]))
		// Request header v1 and v2: client id (int16 length), then, in
		// flexible versions, tagged fields (one byte: none).
		body := frame[8:]
		if n := int(int16(binary.BigEndian.Uint16(body))); n > 0 {
			body = body[2+n:]
		} else {
			body = body[2:]
		}
		if req := kmsg.RequestForKey(key); req != nil {
			req.SetVersion(version)
			if req.IsFlexible() {
				body = body[1:]
			}
		}
		if c.drop(key, version, body) {
			c.dropping[corr] = true
		}
		c.wbuf = c.wbuf[4+size:]
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *lossyConn) Read(p []byte) (int, error) {
	if len(c.rbuf) == 0 {
		var size [4]byte
		if _, err := io.ReadFull(c.Conn, size[:]); err != nil {
			return 0, err
		}
		frame := make([]byte, 4+binary.BigEndian.Uint32(size[:]))
		copy(frame, size[:])
		if _, err := io.ReadFull(c.Conn, frame[4:]); err != nil {
			return 0, err
		}
		corr := int32(binary.BigEndian.Uint32(frame[4:]))
		c.mu.Lock()
		lost := c.dropping[corr]
		delete(c.dropping, corr)
		c.mu.Unlock()
		if lost {
			c.Conn.Close()
			return 0, errors.New("injected: the answer was lost")
		}
		c.rbuf = frame
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

// TestTxRelayBrokerFaults injects faults around produce and EndTxn while a
// transactional relay publishes: answers to commits lost after the broker
// committed (so that the relay cannot know the outcome), EndTxn refused
// before it is applied (retriable and not), produce requests applied and
// answered with an error, produce requests refused with an error that fails
// the records, and InitProducerID refused for a while. A read_committed
// consumer must see every item exactly once, in order per key, and the relay
// must recover by itself.
func TestTxRelayBrokerFaults(t *testing.T) {
	c := newCluster(t, 3, "example")
	eventsTopic := topics.Events("example")
	var (
		mu          sync.Mutex
		commits     int // EndTxn commit requests seen
		lostLeft    = 3 // commits whose answer (and every retry's) is lost
		losing      int // answers still to lose, of the commit being lost
		lostCommits int
	)
	drop := func(key, version int16, body []byte) bool {
		if key != int16(kmsg.EndTxn) {
			return false
		}
		req := kmsg.NewPtrEndTxnRequest()
		req.SetVersion(version)
		if err := req.ReadFrom(body); err != nil {
			panic(fmt.Sprintf("EndTxn v%d: %v", version, err))
		}
		mu.Lock()
		defer mu.Unlock()
		if losing > 0 {
			losing--
			return true
		}
		if !req.Commit {
			return false
		}
		if commits++; commits%4 == 0 && lostLeft > 0 {
			lostLeft--
			lostCommits++
			losing = 2 // the retries too: RequestRetries(2) below
			return true
		}
		return false
	}
	faults := []*kfake.FaultHandle{
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.CoordinatorNotAvailable, Count: 3}),
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.UnknownServerError, Count: 2,
			When: func(r kmsg.Request) bool { return r.(*kmsg.EndTxnRequest).Commit }}),
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: eventsTopic, Err: kerr.NotEnoughReplicasAfterAppend, Count: 4}),
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: eventsTopic, Err: kerr.InvalidRecord, Count: 3}),
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.InitProducerID}, Err: kerr.CoordinatorLoadInProgress, Count: 2}),
	}

	rec := memory.New()
	cl := newRelayClient(t, c, lossyDialer(drop), kgo.RequestRetries(2),
		kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }))
	r := newRelay(t, cl, rec, txConfig(t, c, kafka.RelayConfig{PageSize: 50, MaxInFlightPages: 4}))
	runRelay(t, r)
	const n = 4000
	items := exampleItems("example", 50, n)
	for i := 0; i < n; i += 100 {
		insert(t, rec, items[i:i+100])
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "relay publishes everything", func() bool { return r.Stats().LastPublishedID >= n })
	for i, f := range faults {
		if f.Hits() == 0 {
			t.Errorf("fault %d never hit", i)
		}
	}
	mu.Lock()
	if lostCommits == 0 {
		t.Errorf("no commit answer lost (%d commits)", commits)
	}
	mu.Unlock()
	checkExactlyOnce(t, consume(t, c, n, 10*time.Second, 300*time.Millisecond, eventsTopic), n)
	s := r.Stats()
	// Published counts what the relay knows it committed: not the
	// transactions whose commit answer was lost.
	if s.Aborted == 0 || s.Published > n || s.LastPublishedID != n {
		t.Errorf("stats %+v: want aborted transactions, and every item published", s)
	}
	for k, v := range storedCheckpoint(t, c, "eventlog.relay-checkpoints") {
		if v != n {
			t.Errorf("checkpoint %s = %d, want %d", k, v, n)
		}
	}
	t.Logf("%d commits, %d with every answer lost; stats %+v", commits, lostCommits, s)
}

// TestTxRelayTwoRelaysFenceEachOther runs two transactional relays over one
// store at once, each with a lock of its own (a broken lock, or a zombie that
// has not noticed it lost the lock): the broker's fencing of their common
// transactional id is all that keeps them apart. At any moment the one that
// initialized its producer last publishes and the other is fenced (it stops,
// and takes over again after its lock retry interval, fencing the first).
// No record may be committed twice, and none lost.
func TestTxRelayTwoRelaysFenceEachOther(t *testing.T) {
	c := newCluster(t, 3, "example")
	rec := memory.New()
	cfg := kafka.RelayConfig{PageSize: 50, MaxInFlightPages: 2, LockRetryInterval: 100 * time.Millisecond}
	a := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, cfg))
	runRelay(t, a)
	// a makes the store's id: b, started after it, derives the same
	// transactional id.
	waitFor(t, 5*time.Second, "relay a active", func() bool { return a.Stats().Active })
	b := newRelay(t, newRelayClient(t, c), rec, txConfig(t, c, cfg))
	runRelay(t, b)

	const n = 6000
	items := exampleItems("example", 60, n)
	for i := 0; i < n; i += 50 {
		insert(t, rec, items[i:i+50])
		time.Sleep(3 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "everything published", func() bool {
		return max(a.Stats().LastPublishedID, b.Stats().LastPublishedID) >= n
	})
	sa, sb := a.Stats(), b.Stats()
	if sa.Fenced == 0 && sb.Fenced == 0 {
		t.Fatalf("neither relay was fenced: a %+v, b %+v", sa, sb)
	}
	if sa.Transactions == 0 || sb.Transactions == 0 {
		t.Errorf("want both relays to have committed (one after the other): a %+v, b %+v", sa, sb)
	}
	checkExactlyOnce(t, consume(t, c, n, 10*time.Second, 300*time.Millisecond, topics.Events("example")), n)
	t.Logf("a: %d transactions, fenced %d times; b: %d transactions, fenced %d times", sa.Transactions, sa.Fenced, sb.Transactions, sb.Fenced)
}

// logCapture is a slog handler that keeps the messages and errors it gets.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			line += ": " + a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, line)
	h.mu.Unlock()
	return nil
}
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCapture) WithGroup(string) slog.Handler      { return h }

func (h *logCapture) find(sub string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestTxRelaySaysWhenTransactionsAreRefused: a broker whose ACLs let the
// relay's principal produce but not use its transactional id. The relay must
// say so, with the transactional id and the ACL to grant, publish nothing,
// and publish once the ACL is granted.
func TestTxRelaySaysWhenTransactionsAreRefused(t *testing.T) {
	allow := func(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, kafka.TopicNames(topics, "example")...),
		kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin"),
		kfake.User("PLAIN", "relay", "relay",
			allow(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationAll),
			allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationAll)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	as := func(user string) kgo.Opt { return kgo.SASL(plain.Auth{User: user, Pass: user}.AsMechanism()) }
	superAdmin := kadm.NewClient(newClient(t, c, as("admin")))
	rec := memory.New()
	insert(t, rec, exampleItems("example", 2, 10))
	logs := &logCapture{}
	const id = "eventlog.relay.test"
	r := newRelay(t, newRelayClient(t, c, as("relay")), rec, txConfig(t, c, kafka.RelayConfig{
		TransactionalID: id, Admin: superAdmin, Logger: slog.New(logs), MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}))
	runRelay(t, r)
	var line string
	waitFor(t, 10*time.Second, "the relay says the broker refuses transactions", func() bool {
		line = logs.find("refuses transactions")
		return line != ""
	})
	for _, want := range []string{"TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "--transactional-id " + id, "at-least-once"} {
		if !strings.Contains(line, want) {
			t.Errorf("log %q does not say %q", line, want)
		}
	}
	if s := r.Stats(); s.Published != 0 || s.Active {
		t.Fatalf("relay published without transactions: %+v", s)
	}
	acl := kadm.NewACLs().Allow("User:relay").ResourcePatternType(kadm.ACLPatternLiteral).
		TransactionalIDs(id).Operations(kadm.OpWrite, kadm.OpDescribe)
	if _, err := superAdmin.CreateACLs(context.Background(), acl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "relay publishes once allowed", func() bool { return r.Stats().LastPublishedID >= 10 })
	t.Logf("%s", line)
}

// CaughtUp sees past transaction markers and aborted records, and not past
// a record.
func TestCaughtUp(t *testing.T) {
	c := newCluster(t, 1, "example")
	ctx := context.Background()
	topic := topics.Events("example")
	p := newClient(t, c, kgo.TransactionalID("tx"))
	txn := func(commit bool, vals ...string) {
		t.Helper()
		if err := p.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	cl := newClient(t, c)
	end := func() int64 {
		t.Helper()
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := ends.Lookup(topic, 0)
		return o.Offset
	}
	check := func(from int64, want bool) {
		t.Helper()
		got, err := kafka.CaughtUp(ctx, cl, topic, 0, from, end())
		if err != nil || got != want {
			t.Fatalf("CaughtUp(from %d, end %d) = %v, %v; want %v", from, end(), got, err, want)
		}
	}
	txn(true, "a", "b") // offsets 0, 1, marker 2
	check(2, true)
	check(1, false)
	txn(false, "c", "d") // aborted: 3, 4, marker 5
	check(2, true)
	txn(true, "e") // 6, marker 7
	check(2, false)
	check(7, true)
	if err := p.BeginTransaction(); err != nil { // open: 8
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("f")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	check(7, true) // an open transaction's record is not one yet
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	check(7, false)
}
