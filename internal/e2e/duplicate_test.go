package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/e2e/e2etest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestDuplicateDelivery produces the same command record more than once: back
// to back (so both copies are likely in one batch), again after its result
// came out (another batch), again after the writer restarted, and once with
// the same command id but different data. Each command must have one effect,
// and each delivery must publish the command's result again with the same
// content (wire contract: "A command delivered twice gets the same result and
// changes nothing the second time").
//
// Bugs it catches: deduplication that misses duplicates within a batch, or
// across batches or restarts (an update applied twice: version 3, not 2); a
// duplicate that is silently dropped (a client waiting for its result hangs);
// a republished result that differs from the first (a new version, new
// positions, or the outcome of the differing copy).
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(testing.TB) *testStore) {
		st := newStore(t)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		b := newBroker(t)
		b.createTopics(t)
		log := e2etest.Log(t, slog.LevelWarn)
		w := startWriter(t, b, st.backend(t), log)
		results := watchResults(t, b)
		prod := b.client(t)

		id := uuid.New()
		create := wire.Command{CommandID: uuid.New(), Type: wire.TypeCreate, Entity: "example", EntityID: id, Data: json.RawMessage(`{"n":0}`)}
		update := wire.Command{CommandID: uuid.New(), Type: wire.TypeUpdate, Entity: "example", EntityID: id, Data: json.RawMessage(`{"n":1}`)}
		differing := update
		differing.Data = json.RawMessage(`{"n":2,"other":true}`)
		waitCopies := func(c wire.Command, n int) {
			t.Helper()
			testutil.Eventually(t, 30*time.Second, func() error {
				if got := len(results.get(c.CommandID)); got < n {
					return fmt.Errorf("command %s: %d result records, want %d", c.Type, got, n)
				}
				return nil
			})
		}

		// Back to back, in one produce call: most likely one batch.
		produce(t, ctx, prod, commandRecord(t, create), commandRecord(t, create), commandRecord(t, update))
		waitCopies(create, 2)
		waitCopies(update, 1)
		// Again, in later batches.
		produce(t, ctx, prod, commandRecord(t, update))
		waitCopies(update, 2)
		produce(t, ctx, prod, commandRecord(t, differing))
		waitCopies(update, 3)
		// Again, to a writer started afresh (nothing cached).
		if err := w.stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		startWriter(t, b, st.backend(t), log)
		produce(t, ctx, prod, commandRecord(t, create), commandRecord(t, update))
		waitCopies(create, 3)
		waitCopies(update, 4)
		waitRelayed(t, st.rec, 30*time.Second)

		for _, c := range []wire.Command{create, update} {
			rs := results.get(c.CommandID)
			first, _ := wire.DecodeResult(rs[0].Value)
			if first.Status != wire.StatusAccepted {
				t.Errorf("%s: first result %+v, want accepted", c.Type, first)
			}
			for i, r := range rs[1:] {
				if !bytes.Equal(r.Value, rs[0].Value) || !bytes.Equal(r.Key, rs[0].Key) {
					t.Errorf("%s: result copy %d is %s (key %s), want the first, %s (key %s)", c.Type, i+1, r.Value, r.Key, rs[0].Value, rs[0].Key)
				}
			}
		}
		v := readStore(t, ctx, st.rec)
		checkKafka(t, ctx, b, v)
		if evs := v.events[id]; len(evs) != 2 {
			t.Errorf("entity has %d events, want 2 (created, n changed once)", len(evs))
		}
		if n := len(v.results[create.CommandID]); n != 3 {
			t.Errorf("create: %d result items stored, want the result and 2 copies", n)
		}
		if n := len(v.results[update.CommandID]); n != 4 {
			t.Errorf("update: %d result items stored, want the result and 3 copies", n)
		}
	})
}
