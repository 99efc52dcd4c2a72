package procs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestKcatReadsCommittedAfterRelayCrash: kcat (librdkafka, a client eventlog
// does not share code with) reads the events topic with
// isolation.level=read_committed after a relay process was SIGKILLed in the
// middle of a transaction and another finished the work. It must see every
// stored event exactly once. The same read with read_uncommitted must see
// more (the killed transaction's records), or the test proved nothing. It
// skips if kcat is not installed (apt-get install kcat).
func TestKcatReadsCommittedAfterRelayCrash(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install kcat): skipping the librdkafka interop test")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t, 3*time.Second)
	pg := newPG(t)
	ps := newProcSet(t)

	const entities, perEntity = 50, 40
	ids := make([]uuid.UUID, entities)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var items []store.SequencedItem
	for pos := range int64(perEntity) {
		for e, id := range ids {
			topic := "example.AttributeChanged"
			if pos == 0 {
				topic = "example.Created"
			}
			items = append(items, store.SequencedItem{SequenceID: id, Position: pos, Topic: topic, Codec: events.CodecJSON,
				State: fmt.Appendf(nil, `{"entity":%d,"position":%d}`, e, pos)})
		}
	}
	for i := 0; i < len(items); i += 100 {
		if _, err := pg.rec.InsertEvents(ctx, items[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	args := func(life string) []string {
		return append(append([]string{"writer", "-kafka-brokers", b.addr, "-http-addr", "127.0.0.1:0", "-group", "kcat-" + life},
			pg.flags(appName("kcat-"+life))...), logFlags...)
	}
	trap := newKillTrap(b)
	first := ps.start("killed", args("killed")...)
	trap.arm(first, kmsg.Produce, 3, true)
	select {
	case <-first.done:
	case <-ctx.Done():
		t.Fatalf("the relay never produced\n%s", first.tail(30))
	}
	if !trap.fired() {
		t.Fatalf("the relay exited by itself: %v\n%s", first.waitErr, first.tail(30))
	}
	trap.disarm()
	final := ps.start("final", args("final")...)
	last, err := pg.rec.MaxNotificationID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := poll(ctx, time.Minute, 50*time.Millisecond, func() (bool, string, error) {
		cp, err := pg.rec.Tracking(ctx, "relay", "", 0)
		return cp >= last, fmt.Sprintf("checkpoint %d of %d", cp, last), err
	}); err != nil {
		t.Fatalf("the relay did not publish the log: %v (%s)\n%s", err, msg, final.tail(30))
	}
	if code, err := final.term(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("relay after SIGTERM: exit code %d, %v\n%s", code, err, final.tail(30))
	}

	read := func(isolation string) map[string]int {
		cmd := exec.CommandContext(ctx, kcat, "-C", "-b", b.addr, "-t", eventsTopic, "-o", "beginning", "-e", "-q",
			"-X", "isolation.level="+isolation, "-f", "%h\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kcat %s: %v\n%s", isolation, err, stderr.String())
		}
		seen := map[string]int{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			hs := map[string]string{}
			for kv := range strings.SplitSeq(sc.Text(), ",") {
				k, v, _ := strings.Cut(kv, "=")
				hs[k] = v
			}
			seq, pos := hs[wire.HeaderSequenceID], hs[wire.HeaderPosition]
			if seq == "" || pos == "" {
				t.Fatalf("kcat %s: a record without event headers: %q", isolation, sc.Text())
			}
			seen[seq+"@"+pos]++
		}
		return seen
	}
	committed, uncommitted := read("read_committed"), read("read_uncommitted")
	var dups, lost, total, totalUncommitted int
	for _, it := range items {
		switch n := committed[fmt.Sprintf("%s@%d", it.SequenceID, it.Position)]; {
		case n == 0:
			lost++
		case n > 1:
			dups += n - 1
		}
	}
	for _, n := range committed {
		total += n
	}
	for _, n := range uncommitted {
		totalUncommitted += n
	}
	t.Logf("kcat read_committed: %d records for %d events (%d duplicates, %d lost); read_uncommitted: %d records",
		total, len(items), dups, lost, totalUncommitted)
	if dups != 0 || lost != 0 || total != len(items) {
		t.Errorf("kcat read_committed: %d records, %d duplicates, %d lost; want each of %d events once", total, dups, lost, len(items))
	}
	if totalUncommitted <= total {
		t.Errorf("kcat read_uncommitted saw %d records, no more than read_committed: the killed transaction left nothing to abort", totalUncommitted)
	}
}
