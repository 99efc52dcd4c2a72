package e2e

import (
	"context"
	"testing"
	"time"
)

// TestPostgresStandbyRelay runs two writer processes, as deployed, on one
// PostgreSQL store and one consumer group: both consume commands, one relay
// publishes and the other stands by (DESIGN: "Only one relay per store is
// active at a time (e.g. a Postgres advisory lock)"). Then the active one is
// stopped and the standby must take over publishing.
//
// Bug it catches: a second writer on a store that crashes, or a relay that
// does not take over. At the time of writing it fails: postgres.Recorder's
// TryLock answers a lock held elsewhere with (nil, nil, nil), while
// kafka.Locker (which cli wires it to) must return an error wrapping
// kafka.ErrLocked. kafka.Relay.Run takes the nil error for success, logs
// "relay took the lock; publishing" and calls lead with a nil context, which
// panics in pgxpool (nil pointer dereference in Recorder.Tracking), so the
// second writer process dies at start. Fix: adapt the recorder to
// kafka.Locker where the writer is wired (a lock held elsewhere becomes an
// error wrapping kafka.ErrLocked, as the test's pgLocker does), and have
// Relay.Run treat a nil held context as ErrLocked.
func TestPostgresStandbyRelay(t *testing.T) {
	t.Parallel()
	st := pgStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t)
	b.createTopics(t)
	dir := t.TempDir()
	args := append([]string{"-kafka-brokers", b.addrs[0], "-http-addr", "127.0.0.1:0", "-group", "standby"}, st.flags...)
	results := watchResults(t, b)
	prod := b.client(t)

	wl := newWorkload(scaled(100, 20), 4)
	recs := wl.records(t)
	third := len(recs) / 3

	a := startProc(t, dir, "a", args)
	produce(t, ctx, prod, recs[:third]...)
	results.waitDistinct(t, third, time.Minute)

	sb := startProc(t, dir, "b", args)
	produce(t, ctx, prod, recs[third:2*third]...)
	results.waitDistinct(t, 2*third, time.Minute)
	time.Sleep(2 * time.Second) // the standby's relay tries the lock at once, then every 500ms
	if sb.exited() {
		t.Fatalf("the second writer on the store exited: %v %q\n%s", sb.waitErr, sb.problems(), sb.tail(25))
	}

	// Hand over: the active writer stops; the standby's relay must publish
	// what comes next.
	if took, code, err := a.term(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("first writer after SIGTERM: exit code %d, %v (after %s)\n%s", code, err, took, a.tail(25))
	}
	produce(t, ctx, prod, recs[2*third:]...)
	results.waitDistinct(t, len(recs), time.Minute)
	waitRelayed(t, st.rec, time.Minute)
	if took, code, err := sb.term(15 * time.Second); err != nil || code != 0 {
		t.Errorf("second writer after SIGTERM: exit code %d, %v (after %s)\n%s", code, err, took, sb.tail(25))
	}
	for _, p := range []*proc{a, sb} {
		if pr := p.problems(); len(pr) > 0 {
			t.Errorf("writer %s: %q", p.logPath, pr)
		}
	}
	v := readStore(t, ctx, st.rec)
	checkExactlyOnce(t, v, wl, false)
	checkKafka(t, ctx, b, v)
}
