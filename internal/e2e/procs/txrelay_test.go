package procs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
)

// TestRelaySIGKILL runs the writer program (its relay) as a child process
// and SIGKILLs it at random instants while it publishes a log that grows as
// it goes, restarting it each time; then a last one publishes the rest and
// stops with SIGTERM. The events are appended to the PostgreSQL store
// directly, so the relay is all that runs.
//
//   - transactional (the default; -relay-transactions): a read_committed
//     consumer of the events topic must see every stored (entity, position)
//     exactly once, and each entity's positions in order: 0 duplicates, 0
//     gaps. The records of the transactions the kills cut short, which a
//     read_uncommitted consumer sees, must be there too: else the kills
//     did not hit the relay mid-transaction and the test proved nothing.
//   - at-least-once (-relay-transactions=false), the negative control: the
//     same consumer must see duplicates, so that the check above can fail.
//
// Default: 100 kills over 100,000 events, and 20 kills over 20,000 events for
// the control (-short: 20 over 20,000, and 8 over 8,000);
// EVENTLOG_PROCS_RELAY_KILLS and EVENTLOG_PROCS_RELAY_EVENTS set the
// transactional run's.
func TestRelaySIGKILL(t *testing.T) {
	kills := envInt("EVENTLOG_PROCS_RELAY_KILLS", scaled(100, 20))
	n := envInt("EVENTLOG_PROCS_RELAY_EVENTS", scaled(100_000, 20_000))
	t.Run("transactional", func(t *testing.T) {
		k := relayKillTest(t, true, kills, n)
		if k.dups != 0 || k.gaps != 0 || k.misordered != 0 {
			t.Errorf("read_committed: %d duplicates, %d gaps, %d out of order; want none", k.dups, k.gaps, k.misordered)
		}
		if k.aborted == 0 {
			t.Errorf("no record of an aborted transaction on the events topic: the kills never cut a transaction short")
		}
	})
	t.Run("at-least-once", func(t *testing.T) {
		k := relayKillTest(t, false, scaled(20, 8), scaled(20_000, 8_000))
		if k.gaps != 0 {
			t.Errorf("at least once: %d gaps", k.gaps)
		}
		if k.dups == 0 {
			t.Errorf("at least once: no duplicates after %d kills; the negative control shows nothing", k.kills)
		}
	})
}

// killReport is what a run of relayKillTest found.
type killReport struct {
	kills, busyKills int
	// how the kills came: in start-up, at a random instant of publishing,
	// at a produce request, at an EndTxn commit then applied, or dropped.
	startup, random, atProduce, atCommitApplied, atCommitDropped int
	// Of the events topic read read_committed: extra copies of an (entity,
	// position), stored ones missing, and records of an entity that came
	// before one of a lower position.
	dups, gaps, misordered int
	// aborted is how many more event records a read_uncommitted reader
	// sees.
	aborted int
}

func relayKillTest(t *testing.T, transactional bool, kills, n int) killReport {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	b := newBroker(t, 3*time.Second)
	pg := newPG(t)
	ps := newProcSet(t)
	adm := kadm.NewClient(b.client(t))

	// 1,000 entities (fewer for small runs), n events in all; appended in
	// transactions of 50, one event per entity each, in position order.
	entities := min(1000, max(n/20, 1))
	ids := make([]uuid.UUID, entities)
	for i := range ids {
		ids[i] = uuid.New()
	}
	items := make([]store.SequencedItem, n)
	for k := range items {
		e, pos := k%entities, int64(k/entities)
		topic := "example.AttributeChanged"
		if pos == 0 {
			topic = "example.Created"
		}
		items[k] = store.SequencedItem{SequenceID: ids[e], Position: pos, Topic: topic, Codec: events.CodecJSON,
			State: fmt.Appendf(nil, `{"entity":%d,"position":%d}`, e, pos)}
	}
	// Each life starts with a share of the events being appended over about
	// 400ms, behind the shares before it: a backlog from the dead time
	// before it, then a flow.
	shares := make(chan []store.SequencedItem, kills)
	inserted := make(chan error, 1)
	go func() {
		const batch = 50
		for share := range shares {
			pause := 400 * time.Millisecond * batch / time.Duration(max(len(share), 1))
			for i := 0; i < len(share); i += batch {
				if _, err := pg.rec.InsertEvents(ctx, share[i:min(i+batch, len(share))]); err != nil {
					inserted <- err
					return
				}
				if !sleepCtx(ctx, pause) {
					inserted <- ctx.Err()
					return
				}
			}
		}
		inserted <- nil
	}()

	args := func(life string) []string {
		return append(append([]string{"writer", "-kafka-brokers", b.addr, "-http-addr", "127.0.0.1:0", "-partitions", strconv.Itoa(partitions),
			"-group", "relay-" + life, "-relay-transactions=" + strconv.FormatBool(transactional)},
			pg.flags(appName("relay-"+life))...), logFlags...)
	}
	published := func() int64 {
		ends, err := endOffsets(ctx, adm, eventsTopic)
		if err != nil {
			return -1
		}
		var sum int64
		for _, e := range ends {
			sum += e
		}
		return sum
	}
	// Some kills are fired by the broker itself, when a request of the
	// relay's reaches it: the k-th produce request of a life (the
	// transaction is open, some of its records are written), or the
	// EndTxn commit (which the broker then applies, or drops with the
	// connection: the relay dies before it learns the outcome).
	trap := newKillTrap(b)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	rep := killReport{kills: kills}
	for life := range kills {
		share := items[life*n/kills : (life+1)*n/kills]
		shares <- share
		before := published()
		p := ps.start(fmt.Sprintf("life-%03d", life), args(strconv.Itoa(life))...)
		switch mode := rng.IntN(10); {
		case mode < 2: // during start-up
			rep.startup++
			d := time.Duration(rng.IntN(400)) * time.Millisecond
			select {
			case <-time.After(time.Until(p.started.Add(d))):
			case <-p.done:
				t.Fatalf("life %d exited by itself: %v\n%s", life, p.waitErr, p.tail(30))
			}
		case mode < 5: // at a random instant once it publishes
			for published() == before && time.Since(p.started) < 30*time.Second && !p.exited() {
				time.Sleep(2 * time.Millisecond)
			}
			if published() == before && !p.exited() {
				t.Fatalf("life %d published nothing in 30s\n%s", life, p.tail(30))
			}
			rep.busyKills++
			rep.random++
			select {
			case <-time.After(time.Duration(rng.IntN(150)) * time.Millisecond):
			case <-p.done:
				t.Fatalf("life %d exited by itself: %v\n%s", life, p.waitErr, p.tail(30))
			}
		default: // at one of its requests
			key, apply := kmsg.Produce, true
			if mode >= 8 && transactional {
				key, apply = kmsg.EndTxn, rng.IntN(2) == 0
			}
			trap.arm(p, key, 1+rng.IntN(8), apply)
			// A life that starts late (a loaded machine) finds its whole
			// share stored and may publish it in fewer requests than the
			// trap waits for: then it is killed once the share is out.
			deadline := time.After(30 * time.Second)
			tick := time.NewTicker(20 * time.Millisecond)
		wait:
			for {
				select {
				case <-p.done:
					if !trap.fired() {
						t.Fatalf("life %d exited by itself: %v\n%s", life, p.waitErr, p.tail(30))
					}
					rep.busyKills++
					switch {
					case key == kmsg.Produce:
						rep.atProduce++
					case apply:
						rep.atCommitApplied++
					default:
						rep.atCommitDropped++
					}
					break wait
				case <-tick.C:
					if published() >= before+int64(len(share)) && !trap.fired() {
						rep.random++
						break wait
					}
				case <-deadline:
					t.Fatalf("life %d: the broker saw no %s request in 30s, and its share is not out\n%s", life, key.Name(), p.tail(30))
				}
			}
			tick.Stop()
			trap.disarm()
		}
		p.kill()
	}
	close(shares)
	if err := <-inserted; err != nil {
		t.Fatalf("append: %v", err)
	}

	// The last life publishes the rest and stops cleanly.
	final := ps.start("final", args("final")...)
	last, err := pg.rec.MaxNotificationID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := poll(ctx, 2*time.Minute, 50*time.Millisecond, func() (bool, string, error) {
		cp, err := pg.rec.Tracking(ctx, "relay", "", 0)
		return cp >= last, fmt.Sprintf("checkpoint %d of %d", cp, last), err
	})
	if err != nil {
		t.Fatalf("the last relay did not publish the log: %v (%s)\n%s", err, msg, final.tail(30))
	}
	if code, err := final.term(15 * time.Second); err != nil || code != 0 {
		t.Errorf("last relay after SIGTERM: exit code %d, %v\n%s", code, err, final.tail(30))
	}
	if pr := ps.problems(); len(pr) > 0 {
		t.Errorf("children reported problems: %q", pr)
	}

	committed := readEvents(t, ctx, b.addr, kgo.ReadCommitted())
	uncommitted := readEvents(t, ctx, b.addr, kgo.ReadUncommitted())
	rep.aborted = len(uncommitted) - len(committed)
	seen := map[uuid.UUID]map[int64]int{}
	next := map[uuid.UUID]int64{} // per entity, the position after the greatest seen
	for _, r := range committed {
		it, err := kafka.EventOf(kafka.RecordOf(r))
		if err != nil {
			t.Fatalf("event record %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		copies := seen[it.SequenceID]
		if copies == nil {
			copies = map[int64]int{}
			seen[it.SequenceID] = copies
		}
		if copies[it.Position]++; copies[it.Position] > 1 {
			rep.dups++
		}
		if it.Position < next[it.SequenceID] && copies[it.Position] == 1 {
			rep.misordered++
		}
		next[it.SequenceID] = max(next[it.SequenceID], it.Position+1)
	}
	for _, it := range items {
		if seen[it.SequenceID][it.Position] == 0 {
			rep.gaps++
		}
	}
	extra := len(committed) - rep.dups - (len(items) - rep.gaps)
	if extra != 0 {
		t.Errorf("%d event records that are no stored event", extra)
	}
	mode := "at-least-once"
	if transactional {
		mode = "transactional"
	}
	t.Logf("%s: %d events, %d kills (%d in start-up, %d at a random instant of publishing, %d at a produce request, %d at a commit then applied, %d at a commit dropped); "+
		"read_committed: %d records, %d duplicates, %d gaps, %d out of order; read_uncommitted: %d more records (of aborted transactions)",
		mode, len(items), rep.kills, rep.startup, rep.random, rep.atProduce, rep.atCommitApplied, rep.atCommitDropped,
		len(committed), rep.dups, rep.gaps, rep.misordered, rep.aborted)
	return rep
}

// readEvents returns the data records of the events topic from its start to
// its end, read with the isolation level given. Control records (transaction
// markers) are kept to see the end of a partition that ends with one, and
// left out.
func readEvents(t testing.TB, ctx context.Context, addr string, iso kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	ends, err := endOffsets(ctx, kadm.NewClient(client(t, addr)), eventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	start := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end > 0 {
			start[p] = kgo.NewOffset().AtStart()
		} else {
			delete(ends, p)
		}
	}
	cl := client(t, addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{eventsTopic: start}),
		kgo.FetchIsolationLevel(iso), kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	defer cl.Close()
	var out []*kgo.Record
	for len(ends) > 0 {
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v; partitions not read to the end: %v", eventsTopic, ctx.Err(), ends)
		}
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
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

// killTrap SIGKILLs a child process from the broker's loop when a request of
// a given kind reaches the broker (kfake's ControlKey).
type killTrap struct {
	mu        sync.Mutex
	p         *proc
	key       kmsg.Key
	countdown int
	apply     bool
	hit       bool
}

func newKillTrap(b *broker) *killTrap {
	k := &killTrap{}
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.EndTxn} {
		b.c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			b.c.KeepControl()
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.p == nil || k.hit || k.key != key {
				return nil, nil, false
			}
			if e, ok := req.(*kmsg.EndTxnRequest); ok && !e.Commit {
				return nil, nil, false
			}
			if k.countdown--; k.countdown > 0 {
				return nil, nil, false
			}
			k.hit = true
			_ = k.p.cmd.Process.Signal(syscall.SIGKILL)
			if k.apply {
				return nil, nil, false // the broker handles it for the dead client
			}
			return nil, errors.New("killed"), true // the broker closes the connection
		})
	}
	return k
}

// arm makes the n-th request of kind key kill p; apply says whether the
// broker then handles that request.
func (k *killTrap) arm(p *proc, key kmsg.Key, n int, apply bool) {
	k.mu.Lock()
	k.p, k.key, k.countdown, k.apply, k.hit = p, key, n, apply, false
	k.mu.Unlock()
}

func (k *killTrap) disarm() {
	k.mu.Lock()
	k.p = nil
	k.mu.Unlock()
}

func (k *killTrap) fired() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.hit
}

// sleepCtx waits for d or ctx, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
