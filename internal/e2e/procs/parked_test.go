package procs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestParkedRetrySurvivesSIGKILL: a projector process that cannot decode
// event k of entity x (it was written encrypted, and the projector was
// started without the key) parks x's events k..n and applies every other
// entity in full, the read model's row of x staying at k-1. Started again
// with the key (the fault removed), projectors are asked to retry x over
// HTTP and SIGKILLed at random moments during the retry: after each kill x
// is either still parked whole, its row at k-1, or retried whole, its row at
// n; in the end it is retried, and the apply log (a trigger on the read
// model's table, in the projection's transactions) shows each of its events
// applied exactly once. The operator's CLI lists and shows the parked entity
// on the way.
func TestParkedRetrySurvivesSIGKILL(t *testing.T) {
	const (
		k = 5
		n = 1500 // x's last position
	)
	rounds := scaled(10, 5)
	step := 30_000 / rounds // µs
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	b := newBroker(t, 6*time.Second)
	ps := newProcSet(t)
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 3))

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "cipher.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	plain := events.NewMapper(reg)
	ciph, err := events.NewAESCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed := events.NewMapper(reg, events.WithCipher(ciph))

	// The events, stored as a writer would; the writer's relay publishes
	// them. Each sets an attribute of its own (c<position>), which the apply
	// log counts.
	want := map[uuid.UUID]entityState{}
	put := func(id uuid.UUID, events int, encryptFrom int64) {
		t.Helper()
		e, err := entity.Create("example", id, map[string]json.RawMessage{"c0": json.RawMessage("0")})
		if err != nil {
			t.Fatal(err)
		}
		s := entityState{Version: 1, Attributes: map[string]any{"c0": 0.0}}
		for p := 1; p < events; p++ {
			if err := e.Set(fmt.Sprintf("c%d", p), p); err != nil {
				t.Fatal(err)
			}
			s.Version++
			s.Attributes[fmt.Sprintf("c%d", p)] = float64(p)
		}
		var items []store.SequencedItem
		for _, ev := range e.PendingEvents() {
			ev.EventMeta().Timestamp = time.Now()
			m := plain
			if ev.EventMeta().OriginatorVersion >= encryptFrom {
				m = sealed
			}
			it, err := m.ToItem(ev)
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, it)
		}
		if _, err := pg.rec.InsertEvents(ctx, items); err != nil {
			t.Fatal(err)
		}
		want[id] = s
	}
	x := uuid.New()
	for range 6 {
		put(uuid.New(), 8, 1<<62)
	}
	put(x, n+1, k)
	full := want[x]
	behind := entityState{Version: k, Attributes: map[string]any{}}
	for p := range k {
		behind.Attributes[fmt.Sprintf("c%d", p)] = float64(p)
	}
	want[x] = behind

	wAddr := freeAddr(t)
	w := ps.start("writer", append(append([]string{"writer", "-kafka-brokers", b.addr, "-http-addr", wAddr, "-partitions", "4"},
		pg.flags(appName("writer"))...), logFlags...)...)
	waitReady(t, w, wAddr, time.Minute)

	// A projector without the key parks x.
	addr := freeAddr(t)
	p := ps.start("projector-nokey", projectorArgs(b.addr, addr, pg.flags(appName("projector-nokey")))...)
	waitReady(t, p, addr, time.Minute)
	msg, err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, string, error) {
		got, err := pg.readModel(ctx)
		if err != nil {
			return false, "", err
		}
		d := diffStates("read model", got, "expected", want)
		return len(d) == 0, strings.Join(d, "\n"), nil
	})
	if err != nil {
		t.Fatalf("the read model did not reach the parked state: %v\n%s", err, msg)
	}
	// x's later events are parked as their batches come.
	msg, err = poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, string, error) {
		parked, err := pg.rec.ListParked(ctx, store.ParkedQuery{})
		if err != nil {
			return false, "", err
		}
		ok := len(parked) == 1 && parked[0].SequenceID == x && parked[0].First == k && parked[0].Count == n-k+1 &&
			strings.Contains(parked[0].Reason, "encrypted")
		return ok, fmt.Sprintf("parked %+v; want x from %d, %d events, because it is encrypted", parked, k, n-k+1), nil
	})
	if err != nil {
		t.Fatalf("%v: %s", err, msg)
	}

	// The operator's view, through the CLI.
	var out, errOut bytes.Buffer
	env := cli.Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errOut}
	if err := cli.Main(ctx, []string{"dead-letters", "list", "-projector-url", "http://" + addr, "-json"}, env); err != nil {
		t.Fatalf("dead-letters list: %v\n%s", err, errOut.String())
	}
	var listed struct {
		Projection, Entity, ID string
		Count                  int64
		Reason                 string
		FirstPosition          int64 `json:"first_position"`
	}
	if err := json.Unmarshal(out.Bytes(), &listed); err != nil || listed.ID != x.String() || listed.Entity != "example" ||
		listed.Projection != readModelName || listed.Count != n-k+1 || listed.FirstPosition != k {
		t.Fatalf("dead-letters list printed %q (%v)", out.String(), err)
	}
	out.Reset()
	if err := cli.Main(ctx, []string{"dead-letters", "show", "-projector-url", addr, readModelName, "example", x.String()}, env); err != nil {
		t.Fatalf("dead-letters show: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d events parked, positions %d to %d", n-k+1, k, n)) {
		t.Fatalf("dead-letters show printed:\n%s", out.String())
	}
	p.kill()
	<-p.done

	// With the key, retried while projectors are killed.
	retried := false
	for round := 0; !retried; round++ {
		name := fmt.Sprintf("projector-%d", round)
		addr := freeAddr(t)
		p := ps.start(name, append(projectorArgs(b.addr, addr, pg.flags(appName(name))), "-cipher-key-file", keyFile)...)
		waitReady(t, p, addr, time.Minute)
		url := "http://" + addr + "/v1/dead-letters/" + readModelName + "/example/" + x.String() + "/retry"
		if round == rounds {
			var res map[string]any
			code, err := postJSON(ctx, url, nil, &res)
			if err != nil || code != http.StatusOK || res["applied"] != float64(n-k+1) {
				t.Fatalf("last retry: %d %v %v", code, res, err)
			}
			retried = true
		} else {
			// Killed ever later after the request: before it arrives, while
			// the retry's transaction runs, after it committed.
			go func() { _, _ = postJSON(ctx, url, nil, nil) }()
			time.Sleep(time.Duration(round*step+rng.IntN(step)) * time.Microsecond)
		}
		p.kill()
		<-p.done
		state, err := parkedState(ctx, pg, x)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pg.readModel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		switch state {
		case "parked":
			if d := diffStates("read model", map[uuid.UUID]entityState{x: got[x]}, "x before the retry", map[uuid.UUID]entityState{x: behind}); len(d) > 0 {
				t.Fatalf("round %d: x still parked, but its row moved: %v", round, d)
			}
		case "retried":
			if d := diffStates("read model", map[uuid.UUID]entityState{x: got[x]}, "x retried", map[uuid.UUID]entityState{x: full}); len(d) > 0 {
				t.Fatalf("round %d: x retried, but its row is not complete: %v", round, d)
			}
			retried = true
		default:
			t.Fatalf("round %d: x is neither parked whole nor retried whole: %s", round, state)
		}
		t.Logf("round %d: killed after the retry request: %s", round, state)
	}
	want[x] = full
	got, err := pg.readModel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffStates("read model", got, "expected", want); len(d) > 0 {
		t.Fatalf("read model after the retry:\n%s", strings.Join(d, "\n"))
	}
	c, err := pg.checkApplyLog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.doubleCount != 0 || c.applied != 6*8+n+1 {
		t.Fatalf("apply log: %d events applied, %d more than once: %v; want %d, each once", c.applied, c.doubleCount, c.doubles, 6*8+n+1)
	}
	if probs := ps.problems(); len(probs) > 0 {
		t.Fatalf("the children reported problems:\n%s", strings.Join(probs, "\n"))
	}
}

// parkedState says whether x is parked whole ("parked"), retried whole
// ("retried"), or something in between (a description).
func parkedState(ctx context.Context, pg *pgEnv, x uuid.UUID) (string, error) {
	parked, err := pg.rec.ListParked(ctx, store.ParkedQuery{Name: readModelName, SequenceID: x})
	if err != nil {
		return "", err
	}
	acts, err := pg.rec.ParkActions(ctx, readModelName, x, 0)
	if err != nil {
		return "", err
	}
	retries := 0
	for _, a := range acts {
		if a.Action == store.ParkRetried {
			retries++
		}
	}
	evs, err := pg.rec.ParkedEvents(ctx, readModelName, x, -1, 0)
	if err != nil {
		return "", err
	}
	switch {
	case len(parked) == 1 && retries == 0 && int64(len(evs)) == parked[0].Count:
		return "parked", nil
	case len(parked) == 0 && retries == 1 && len(evs) == 0:
		return "retried", nil
	}
	return fmt.Sprintf("%d parked rows %+v, %d parked events, actions %+v", len(parked), parked, len(evs), acts), nil
}

// TestWriterDeadLettersResend: a malformed command reaches the dead-letters
// topic through a writer process; `eventlog dead-letters list -topic` shows
// it with its reason and source, and `resend` sends the corrected command,
// which the writer accepts, while the dead letter stays as it was.
func TestWriterDeadLettersResend(t *testing.T) {
	pg := newPG(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := newBroker(t, 6*time.Second)
	ps := newProcSet(t)
	wAddr := freeAddr(t)
	w := ps.start("writer", append(append([]string{"writer", "-kafka-brokers", b.addr, "-http-addr", wAddr, "-partitions", "4"},
		pg.flags(appName("writer"))...), logFlags...)...)
	waitReady(t, w, wAddr, time.Minute)

	id := uuid.New()
	bad := []byte(`{"type":"create","entity":"example","entity_id":"` + id.String() + `","data":{"foo":"bar"}}`) // no command_id
	prod := b.client(t)
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(id.String()), Value: bad}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	env := cli.Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errOut}
	var dl struct {
		Partition       int32           `json:"partition"`
		Offset          int64           `json:"offset"`
		Reason          string          `json:"reason"`
		SourceTopic     string          `json:"source_topic"`
		SourcePartition string          `json:"source_partition"`
		SourceOffset    string          `json:"source_offset"`
		Value           json.RawMessage `json:"value"`
	}
	list := func() {
		t.Helper()
		msg, err := poll(ctx, time.Minute, 200*time.Millisecond, func() (bool, string, error) {
			out.Reset()
			if err := cli.Main(ctx, []string{"dead-letters", "list", "-topic", "-kafka-brokers", b.addr, "-json"}, env); err != nil {
				return false, errOut.String(), err
			}
			return strings.Contains(out.String(), "command_id"), out.String(), nil
		})
		if err != nil {
			t.Fatalf("dead-letters list -topic: %v\n%s", err, msg)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 1 {
			t.Fatalf("dead-letters list -topic printed %d records, want 1:\n%s", len(lines), out.String())
		}
		if err := json.Unmarshal([]byte(lines[0]), &dl); err != nil {
			t.Fatal(err)
		}
		if dl.SourceTopic != topics.Commands() || !strings.Contains(dl.Reason, "command_id") || !bytes.Equal(dl.Value, bad) {
			t.Fatalf("dead letter %+v does not say why, where from, or what", dl)
		}
	}
	list()
	first := dl

	fixed := filepath.Join(t.TempDir(), "fixed.json")
	if err := os.WriteFile(fixed, []byte(`{"type":"create","entity":"example","entity_id":"`+id.String()+`","data":{"foo":"bar"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	from := fmt.Sprintf("%d/%d", dl.Partition, dl.Offset)
	if err := cli.Main(ctx, []string{"dead-letters", "resend", "-kafka-brokers", b.addr, "-file", fixed, "-from", from}, env); err != nil {
		t.Fatalf("dead-letters resend: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.HasPrefix(out.String(), "accepted: create example "+id.String()) {
		t.Fatalf("resend printed %q", out.String())
	}
	var ent struct {
		Attributes map[string]any `json:"attributes"`
	}
	if code, err := getJSON(ctx, "http://"+wAddr+"/v1/entities/example/"+id.String(), &ent); err != nil || code != 200 || ent.Attributes["foo"] != "bar" {
		t.Fatalf("the resent command's entity: %d %v %+v", code, err, ent)
	}
	// The dead letter is as it was, and still the only one.
	list()
	if dl.Partition != first.Partition || dl.Offset != first.Offset || dl.Reason != first.Reason || !bytes.Equal(dl.Value, first.Value) {
		t.Fatalf("the dead letter changed: %+v, was %+v", dl, first)
	}
	// The resent command says where it came from.
	cmds := readTopic(t, ctx, b.addr, topics.Commands())
	var resent *kgo.Record
	for _, r := range cmds {
		for _, h := range r.Headers {
			if h.Key == "resent-from" && string(h.Value) == topics.DeadLetters()+"/"+from {
				resent = r
			}
		}
	}
	if resent == nil {
		t.Fatalf("no command on %s carries resent-from %s", topics.Commands(), from)
	}
	if _, err := wire.DecodeCommand(resent.Value, 0); err != nil {
		t.Fatalf("the resent command does not decode: %v", err)
	}
}
