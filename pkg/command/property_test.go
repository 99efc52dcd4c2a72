package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// model is the expected effect of applying each distinct command once, in order.
type model struct {
	ents    map[uuid.UUID]*modelEntity
	results map[uuid.UUID]wire.Result
}

type modelEntity struct {
	version   int64
	discarded bool
	attrs     map[string]string
}

func (m *model) apply(c wire.Command, attrs map[string]string) wire.Result {
	if r, ok := m.results[c.CommandID]; ok {
		return r
	}
	ent := m.ents[c.EntityID]
	if ent == nil {
		ent = &modelEntity{attrs: map[string]string{}}
		m.ents[c.EntityID] = ent
	}
	r := wire.Result{CommandID: c.CommandID, Entity: c.Entity, EntityID: c.EntityID, Positions: []int64{}}
	switch {
	case c.Type != "create" && c.Type != "update" && c.Type != "discard":
		r.Status = wire.StatusInvalid
	case c.ExpectedVersion != nil && *c.ExpectedVersion != ent.version:
		r.Status, r.Version = wire.StatusConflict, ent.version
	case ent.discarded,
		c.Type == "create" && ent.version > 0,
		c.Type != "create" && ent.version == 0:
		r.Status, r.Version = wire.StatusRejected, ent.version
	default:
		r.Status = wire.StatusAccepted
		switch c.Type {
		case "create":
			ent.attrs = maps.Clone(attrs)
			r.Positions = append(r.Positions, ent.version)
			ent.version++
		case "update":
			for _, name := range slices.Sorted(maps.Keys(attrs)) {
				ent.attrs[name] = attrs[name]
				r.Positions = append(r.Positions, ent.version)
				ent.version++
			}
		case "discard":
			ent.discarded = true
			r.Positions = append(r.Positions, ent.version)
			ent.version++
		}
		r.Version = ent.version
	}
	m.results[c.CommandID] = r
	return r
}

// Random command streams, split into random batches, with random redeliveries,
// transient failures and a second writer instance, end in the state of applying
// each distinct command once, in order. Odd seeds run over a recorder without
// the optional store.SequencesReader and store.TrackingsSetter.
func TestRandomStreams(t *testing.T) {
	for seed := range 40 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomStream(t, uint64(seed)) })
	}
}

func randomStream(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, seed*7919+1))
	cfg := command.WriterConfig{
		CacheSize:       []int{-1, 2, 100}[rng.IntN(3)],
		ReadConcurrency: []int{1, 4}[rng.IntN(2)],
	}
	e := newEnvReads(t, cfg, seed%2 == 1)
	writers := []*command.Writer{e.w, e.writer(cfg)}

	// Generate the stream.
	ids := []uuid.UUID{uuid.New()}
	partitions := map[uuid.UUID]int32{ids[0]: 0}
	partitionOf := func(id uuid.UUID) int32 { return partitions[id] }
	var streams [2][]wire.Record
	m := &model{ents: map[uuid.UUID]*modelEntity{}, results: map[uuid.UUID]wire.Result{}}
	deliveries := map[uuid.UUID]int{} // records carrying each command id
	var history []wire.Command
	junk := 0
	n := 50 + rng.IntN(150)
	for range n {
		var c wire.Command
		switch r := rng.IntN(100); {
		case r < 5:
			p := int32(rng.IntN(2))
			streams[p] = append(streams[p], e.record(p, fmt.Sprintf("junk %d", rng.IntN(1000))))
			junk++
			continue
		case r < 15 && len(history) > 0:
			c = history[rng.IntN(len(history))]
		default:
			id := ids[rng.IntN(len(ids))]
			typ := "update"
			switch r := rng.IntN(100); {
			case r < 25:
				typ = "create"
				if rng.IntN(3) > 0 { // mostly a new entity
					id = uuid.New()
					ids = append(ids, id)
					partitions[id] = int32(rng.IntN(2))
				}
			case r < 32:
				typ = "discard"
			case r < 35:
				typ = "rename"
			}
			data := ""
			if typ == "create" || typ == "update" {
				var parts []string
				for _, name := range []string{"a", "b", "c"} {
					if rng.IntN(2) == 0 || typ == "update" && len(parts) == 0 && name == "c" {
						parts = append(parts, fmt.Sprintf("%q: %d", name, rng.IntN(100)))
					}
				}
				data = "{" + strings.Join(parts, ", ") + "}"
			}
			c = cmd(typ, "example", id, data)
			if rng.IntN(4) == 0 {
				c = expect(c, int64(rng.IntN(5)))
			}
			history = append(history, c)
		}
		var attrs map[string]string
		if len(c.Data) > 0 {
			raw := map[string]any{}
			mustUnmarshal(c.Data, &raw)
			attrs = map[string]string{}
			for k, v := range raw {
				attrs[k] = fmt.Sprint(v)
			}
		}
		m.apply(c, attrs)
		deliveries[c.CommandID]++
		p := partitionOf(c.EntityID)
		streams[p] = append(streams[p], e.record(p, c))
	}

	// Deliver it.
	var fetch [2]int
	done := func() bool {
		for p := range streams {
			if len(streams[p]) > 0 && e.tracking(int32(p)) != int64(len(streams[p])-1) {
				return false
			}
		}
		return true
	}
	for round := 0; !done(); round++ {
		if round > 10000 {
			t.Fatal("no progress")
		}
		var chunks [2][]wire.Record
		for p := range streams {
			if rng.IntN(10) == 0 {
				fetch[p] = max(0, fetch[p]-rng.IntN(10)) // a redelivery
			}
			k := min(rng.IntN(12), len(streams[p])-fetch[p])
			chunks[p] = streams[p][fetch[p] : fetch[p]+k]
		}
		var batch []wire.Record
		for len(chunks[0])+len(chunks[1]) > 0 {
			p := rng.IntN(2)
			if len(chunks[p]) == 0 {
				p = 1 - p
			}
			batch, chunks[p] = append(batch, chunks[p][0]), chunks[p][1:]
		}
		if rng.IntN(10) == 0 {
			e.rec.failCommit = append(e.rec.failCommit, errTransient)
		}
		err := writers[rng.IntN(2)].HandleBatch(ctx, batch)
		switch {
		case err == nil:
			for p := range streams {
				fetch[p] = int(e.tracking(int32(p))) + 1
			}
		case errors.Is(err, errTransient):
			e.rec.failCommit = nil
			for p := range streams { // the consumer seeks back to the tracking
				fetch[p] = int(e.tracking(int32(p))) + 1
			}
		default:
			t.Fatal(err)
		}
	}

	s0, s1 := writers[0].Stats(), writers[1].Stats()
	t.Logf("records %d, batches %d, failures %d, retries %d, skipped %d, duplicates %d, conflicts %d, rejected %d, accepted %d",
		n, s0.Batches+s1.Batches, s0.Failures+s1.Failures, s0.Retries+s1.Retries, s0.Skipped+s1.Skipped, s0.Duplicates+s1.Duplicates,
		s0.Conflict+s1.Conflict, s0.Rejected+s1.Rejected, s0.Accepted+s1.Accepted)

	// Compare.
	for id, want := range m.ents {
		if n := e.eventCount(id); int64(n) != want.version {
			t.Fatalf("%s has %d events, want %d", id, n, want.version)
		}
		got, err := e.repo.Get(ctx, id)
		if want.version == 0 || want.discarded {
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s: %v, want not found", id, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		gotAttrs := map[string]string{}
		for k, v := range got.Attributes {
			var x any
			mustUnmarshal(v, &x)
			gotAttrs[k] = fmt.Sprint(x)
		}
		if !maps.Equal(gotAttrs, want.attrs) {
			t.Fatalf("%s attributes %v, want %v", id, gotAttrs, want.attrs)
		}
	}
	for c, want := range m.results {
		items := e.results(c)
		if len(items) != deliveries[c] {
			t.Fatalf("command %s has %d results, delivered %d times", c, len(items), deliveries[c])
		}
		for _, it := range items[1:] {
			if !bytes.Equal(it.State, items[0].State) {
				t.Fatalf("command %s results differ", c)
			}
		}
		got, err := wire.DecodeResult(items[0].State)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want.Status || got.Version != want.Version || !slices.Equal(got.Positions, want.Positions) {
			t.Fatalf("command %s: result %+v, want %+v", c, got, want)
		}
	}
	if got := len(e.deadLetters()); got != junk {
		t.Fatalf("%d dead letters, want %d", got, junk)
	}
}

var errTransient = errors.New("transient store failure")

func mustUnmarshal(b []byte, v any) {
	if err := json.Unmarshal(b, v); err != nil {
		panic(err)
	}
}
