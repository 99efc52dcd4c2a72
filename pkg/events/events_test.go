package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// A small domain for the tests: an account.

type Opened struct {
	events.Meta
	Owner string `json:"owner"`
}

type Deposited struct {
	events.Meta
	Amount int64 `json:"amount"`
}

type Closed struct{ events.Meta }

type Account struct {
	events.Aggregate
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
}

func (a *Account) Mutate(e events.Event) error {
	switch e := e.(type) {
	case *Opened:
		a.Owner = e.Owner
	case *Deposited:
		a.Balance += e.Amount
	case *Closed:
		a.MarkDiscarded()
	default:
		return fmt.Errorf("account: unexpected event %T", e)
	}
	return nil
}

func registry(t testing.TB) *events.Registry {
	t.Helper()
	reg := events.NewRegistry()
	reg.MustRegister("account.Opened", func() events.Event { return &Opened{} })
	reg.MustRegister("account.Deposited", func() events.Event { return &Deposited{} })
	reg.MustRegister("account.Closed", func() events.Event { return &Closed{} })
	return reg
}

func open(t testing.TB, owner string) *Account {
	t.Helper()
	a := &Account{}
	e := &Opened{Owner: owner}
	e.OriginatorID = uuid.New()
	if err := events.Trigger(a, e); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTriggerCountsVersionsFromOne(t *testing.T) {
	a := open(t, "ann")
	if a.Version() != 1 || a.ID() == uuid.Nil || len(a.PendingEvents()) != 1 {
		t.Fatalf("after open: version %d id %s pending %d", a.Version(), a.ID(), len(a.PendingEvents()))
	}
	if err := events.Trigger(a, &Deposited{Amount: 5}); err != nil {
		t.Fatal(err)
	}
	p := a.CollectEvents()
	if len(p) != 2 || p[1].EventMeta().OriginatorVersion != 1 || p[1].EventMeta().OriginatorID != a.ID() {
		t.Fatalf("pending: %+v", p)
	}
	if p[1].EventMeta().Timestamp.IsZero() {
		t.Fatal("trigger did not stamp the time")
	}
	if len(a.PendingEvents()) != 0 || a.Balance != 5 || a.Version() != 2 {
		t.Fatalf("after collect: %+v", a)
	}
}

func TestApplyRefusesEventsOutOfOrder(t *testing.T) {
	a := open(t, "ann")
	e := &Deposited{Amount: 1}
	e.OriginatorID, e.OriginatorVersion = a.ID(), 5
	err := events.Apply(a, e)
	var ve *events.VersionError
	if !errors.Is(err, events.ErrVersion) || !errors.As(err, &ve) || ve.Expected != 1 || ve.Got != 5 {
		t.Fatalf("got %v", err)
	}
	if a.Version() != 1 || a.Balance != 0 {
		t.Fatal("a refused event changed the aggregate")
	}
	other := &Deposited{Amount: 1}
	other.OriginatorID, other.OriginatorVersion = uuid.New(), 1
	if err := events.Apply(a, other); err == nil {
		t.Fatal("applied another aggregate's event")
	}
}

func TestDiscardedAggregateTakesNoEvents(t *testing.T) {
	a := open(t, "ann")
	if err := events.Trigger(a, &Closed{}); err != nil {
		t.Fatal(err)
	}
	if !a.Discarded() {
		t.Fatal("not discarded")
	}
	if err := events.Trigger(a, &Deposited{Amount: 1}); !errors.Is(err, events.ErrDiscarded) {
		t.Fatalf("got %v, want ErrDiscarded", err)
	}
	if a.Version() != 2 || len(a.PendingEvents()) != 2 {
		t.Fatalf("version %d pending %d", a.Version(), len(a.PendingEvents()))
	}
}

func TestMutateErrorLeavesAggregateUnchanged(t *testing.T) {
	a := &Account{}
	type Unknown struct{ events.Meta }
	e := &Unknown{}
	e.OriginatorID = uuid.New()
	if err := events.Trigger(a, e); err == nil {
		t.Fatal("unknown event applied")
	}
	if a.Version() != 0 || a.ID() != uuid.Nil || len(a.PendingEvents()) != 0 {
		t.Fatalf("aggregate changed: %+v", a)
	}
}

func TestRegistry(t *testing.T) {
	reg := registry(t)
	if err := reg.Register("account.Opened", func() events.Event { return &Opened{} }); err == nil {
		t.Fatal("registered a topic twice")
	}
	if err := reg.Register("account.Opened2", func() events.Event { return &Opened{} }); err == nil {
		t.Fatal("registered a type under two topics without Topicer")
	}
	for _, bad := range []string{"", ".x", "a b", strings.Repeat("x", 256)} {
		if err := reg.Register(bad, func() events.Event { return &Closed{} }); err == nil {
			t.Fatalf("accepted topic %q", bad)
		}
	}
	topic, err := reg.Topic(&Deposited{})
	if err != nil || topic != "account.Deposited" {
		t.Fatalf("Topic: %q %v", topic, err)
	}
	type Stray struct{ events.Meta }
	if _, err := reg.Topic(&Stray{}); !errors.Is(err, events.ErrUnknownTopic) {
		t.Fatalf("unregistered type: %v", err)
	}
	if _, err := reg.New("nope"); !errors.Is(err, events.ErrUnknownTopic) {
		t.Fatalf("unknown topic: %v", err)
	}
	if events.EntityOf("account.Opened") != "account" || events.EntityOf("plain") != "" {
		t.Fatal("EntityOf")
	}
}

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mappers(t testing.TB, reg *events.Registry) map[string]*events.Mapper {
	t.Helper()
	c, err := events.NewAESCipher(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*events.Mapper{
		"json":                events.NewMapper(reg),
		"json+zstd":           events.NewMapper(reg, events.WithCompression(1)),
		"json+aes256gcm":      events.NewMapper(reg, events.WithCipher(c)),
		"json+zstd+aes256gcm": events.NewMapper(reg, events.WithCompression(1), events.WithCipher(c)),
	}
}

func TestMapperRoundTrip(t *testing.T) {
	reg := registry(t)
	for codec, m := range mappers(t, reg) {
		t.Run(codec, func(t *testing.T) {
			e := &Deposited{Amount: 42}
			e.OriginatorID, e.OriginatorVersion = uuid.New(), 3
			e.Timestamp = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			it, err := m.ToItem(e)
			if err != nil {
				t.Fatal(err)
			}
			if it.SequenceID != e.OriginatorID || it.Position != 3 || it.Topic != "account.Deposited" || it.Codec != codec {
				t.Fatalf("item: %+v", it)
			}
			// Encrypted state never shows the payload.
			if strings.Contains(codec, "aes") && bytes.Contains(it.State, []byte(`"amount":42`)) {
				t.Fatalf("encrypted state shows the payload: %q", it.State)
			}
			back, err := m.FromItem(it)
			if err != nil {
				t.Fatal(err)
			}
			d := back.(*Deposited)
			if d.Amount != 42 || d.OriginatorID != e.OriginatorID || d.OriginatorVersion != 3 || !d.Timestamp.Equal(e.Timestamp) {
				t.Fatalf("decoded %+v", d)
			}
		})
	}
}

func TestMapperReadsHistoryWrittenWithOtherSettings(t *testing.T) {
	reg := registry(t)
	ms := mappers(t, reg)
	e := &Opened{Owner: "ann"}
	e.OriginatorID = uuid.New()
	for wcodec, w := range ms {
		it, err := w.ToItem(e)
		if err != nil {
			t.Fatal(err)
		}
		for rcodec, r := range ms {
			_, err := r.FromItem(it)
			encrypted := strings.Contains(wcodec, "aes")
			canDecrypt := strings.Contains(rcodec, "aes")
			if wantErr := encrypted && !canDecrypt; (err != nil) != wantErr {
				t.Errorf("written %s, read by %s: err = %v", wcodec, rcodec, err)
			}
			if err != nil && !strings.Contains(err.Error(), "no cipher key") {
				t.Errorf("unclear error: %v", err)
			}
		}
	}
}

func TestMapperRejectsBadState(t *testing.T) {
	reg := registry(t)
	ms := mappers(t, reg)
	e := &Deposited{Amount: 7}
	e.OriginatorID, e.OriginatorVersion = uuid.New(), 1
	wrong, _ := events.NewAESCipher(testKey(2))
	wrongKey := events.NewMapper(reg, events.WithCipher(wrong))

	enc, _ := ms["json+aes256gcm"].ToItem(e)
	cases := map[string]struct {
		m  *events.Mapper
		it events.SequencedItem
	}{
		"wrong key":         {wrongKey, enc},
		"flipped bit":       {ms["json+aes256gcm"], flip(enc)},
		"moved to position": {ms["json+aes256gcm"], withPosition(enc, 2)},
		"truncated":         {ms["json+aes256gcm"], truncated(enc)},
		"unknown codec":     {ms["json"], withCodec(enc, "xml")},
		"bad zstd":          {ms["json+zstd"], withCodec(events.SequencedItem{SequenceID: e.OriginatorID, Topic: "account.Deposited", State: []byte("nope")}, "json+zstd")},
		"bad json":          {ms["json"], events.SequencedItem{SequenceID: e.OriginatorID, Topic: "account.Deposited", State: []byte("{")}},
		"unknown topic":     {ms["json"], events.SequencedItem{SequenceID: e.OriginatorID, Topic: "x.Y", State: []byte("{}")}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := c.m.FromItem(c.it); err == nil {
				t.Fatal("decoded bad state")
			} else if !errors.Is(err, events.ErrDecode) && !errors.Is(err, events.ErrUnknownTopic) {
				t.Fatalf("error is neither ErrDecode nor ErrUnknownTopic: %v", err)
			}
		})
	}
}

func flip(it events.SequencedItem) events.SequencedItem {
	it.State = bytes.Clone(it.State)
	it.State[len(it.State)-1] ^= 1
	return it
}
func withPosition(it events.SequencedItem, p int64) events.SequencedItem { it.Position = p; return it }
func truncated(it events.SequencedItem) events.SequencedItem             { it.State = it.State[:5]; return it }
func withCodec(it events.SequencedItem, c string) events.SequencedItem {
	it.Codec = c
	return it
}

func TestCompressionOnlyAboveThreshold(t *testing.T) {
	m := events.NewMapper(registry(t), events.WithCompression(200))
	small := &Opened{Owner: "ann"}
	small.OriginatorID = uuid.New()
	big := &Opened{Owner: strings.Repeat("ann ", 100)}
	big.OriginatorID = uuid.New()
	s, _ := m.ToItem(small)
	b, _ := m.ToItem(big)
	if s.Codec != "json" || b.Codec != "json+zstd" || len(b.State) >= 400 {
		t.Fatalf("small %s, big %s (%d bytes)", s.Codec, b.Codec, len(b.State))
	}
}

// Version 1 of account.Opened stored "name"; version 2 renamed it to "owner";
// version 3 added "currency".
func TestUpcastersLiftOldVersions(t *testing.T) {
	old := events.NewMapper(registry(t))
	id := uuid.New()
	v1 := events.SequencedItem{SequenceID: id, Topic: "account.Opened", State: []byte(`{"name":"ann","timestamp":"2020-01-01T00:00:00Z"}`), Codec: "json"}

	reg := registry(t)
	reg.AddUpcaster("account.Opened", func(s map[string]any) error {
		s["owner"] = s["name"]
		delete(s, "name")
		return nil
	})
	reg.AddUpcaster("account.Opened", func(s map[string]any) error {
		s["owner"] = fmt.Sprint(s["owner"], " (EUR)")
		return nil
	})
	m := events.NewMapper(reg)
	got, err := m.FromItem(v1)
	if err != nil {
		t.Fatal(err)
	}
	if o := got.(*Opened).Owner; o != "ann (EUR)" {
		t.Fatalf("upcast v1: owner %q", o)
	}
	// New items are stored at version 3 and are not upcast again.
	e := &Opened{Owner: "bob"}
	e.OriginatorID = id
	it, err := m.ToItem(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(it.State, []byte(`"_schema":3`)) {
		t.Fatalf("state lacks schema version: %s", it.State)
	}
	got, err = m.FromItem(it)
	if err != nil || got.(*Opened).Owner != "bob" {
		t.Fatalf("v3 read back: %+v %v", got, err)
	}
	// A schema version newer than the code knows is an error, not a guess.
	it.State = []byte(`{"_schema":9,"owner":"x"}`)
	if _, err := m.FromItem(it); !errors.Is(err, events.ErrDecode) {
		t.Fatalf("future schema: %v", err)
	}
	_ = old
}

func TestSnapshotRoundTrip(t *testing.T) {
	m := mappers(t, registry(t))["json+zstd+aes256gcm"]
	a := open(t, "ann")
	_ = events.Trigger(a, &Deposited{Amount: 9})
	it, err := m.SnapshotItem(a, "account.Snapshot")
	if err != nil {
		t.Fatal(err)
	}
	if it.Position != 1 || it.SequenceID != a.ID() {
		t.Fatalf("snapshot item %+v", it)
	}
	b := &Account{}
	if err := m.RestoreSnapshot(it, b); err != nil {
		t.Fatal(err)
	}
	if b.ID() != a.ID() || b.Version() != 2 || b.Balance != 9 || b.Owner != "ann" || len(b.PendingEvents()) != 0 {
		t.Fatalf("restored %+v", b)
	}
	// It goes on from there.
	e := &Deposited{Amount: 1}
	e.OriginatorID, e.OriginatorVersion = a.ID(), 2
	if err := events.Apply(b, e); err != nil || b.Balance != 10 {
		t.Fatalf("apply after restore: %v", err)
	}
}

func TestEventsDoesNoIO(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, banned := range []string{"github.com/jackc/pgx", "github.com/twmb/franz-go", "net/http", "database/sql", "modernc.org/sqlite"} {
		for _, dep := range strings.Fields(string(out)) {
			if dep == banned || strings.HasPrefix(dep, banned+"/") && banned != "database/sql" {
				t.Errorf("pkg/events depends on %s", dep)
			}
		}
	}
}

// FuzzFromItem feeds arbitrary stored bytes, codecs and topics to every mapper:
// bad input must give an error, never a panic.
func FuzzFromItem(f *testing.F) {
	reg := registry(f)
	ms := mappers(f, reg)
	e := &Deposited{Amount: 7}
	e.OriginatorID = uuid.New()
	for _, m := range ms {
		it, _ := m.ToItem(e)
		f.Add(it.State, it.Codec, it.Topic)
	}
	f.Add([]byte(`{"_schema":2}`), "json", "account.Opened")
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, "json+zstd", "account.Opened")
	reg.AddUpcaster("account.Closed", func(s map[string]any) error { return nil })
	f.Fuzz(func(t *testing.T, state []byte, codec, topic string) {
		for _, m := range ms {
			it := events.SequencedItem{SequenceID: e.OriginatorID, Position: 0, Topic: topic, State: state, Codec: codec}
			ev, err := m.FromItem(it)
			if err == nil && ev == nil {
				t.Fatal("nil event without error")
			}
			if err == nil {
				if _, err := json.Marshal(ev); err != nil {
					t.Fatalf("decoded event does not re-encode: %v", err)
				}
			}
		}
	})
}
