package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// TestRelayProducesEmittedCommands: a command a process application stored
// in the outbox reaches the commands topic, keyed by its entity id, with its
// envelope unchanged; an outbox command that is not an envelope goes to the
// dead letters.
func TestRelayProducesEmittedCommands(t *testing.T) {
	c := newCluster(t, 2, "account")
	rec := memory.New()
	ctx := context.Background()
	cmd := wire.Command{CommandID: uuid.New(), Type: "credit", Entity: "account", EntityID: uuid.New(), Data: []byte(`{"amount":5}`)}
	item, err := wire.CommandItem(cmd)
	if err != nil {
		t.Fatal(err)
	}
	bad := store.SequencedItem{SequenceID: uuid.New(), Topic: wire.CommandItemTopic, State: []byte(`{"type":"credit"}`), Codec: "json"}
	if _, err := rec.InsertEvents(ctx, []store.SequencedItem{item, bad}); err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, newRelayClient(t, c), rec, kafka.RelayConfig{})
	runRelay(t, r)

	got := consume(t, c, 2, 10*time.Second, 200*time.Millisecond, topics.Commands(), topics.DeadLetters())
	if len(got) != 2 {
		t.Fatalf("consumed %d records, want 2", len(got))
	}
	for _, r := range got {
		switch r.Topic {
		case topics.Commands():
			if string(r.Key) != cmd.EntityID.String() || string(r.Value) != string(item.State) {
				t.Errorf("command record key %s value %s, want %s %s", r.Key, r.Value, cmd.EntityID, item.State)
			}
			if _, err := wire.DecodeCommand(r.Value, 0); err != nil {
				t.Errorf("the command record does not decode: %v", err)
			}
		case topics.DeadLetters():
			if string(r.Value) != string(bad.State) {
				t.Errorf("dead letter value %s, want %s", r.Value, bad.State)
			}
		}
	}
	if _, err := wire.CommandItem(wire.Command{CommandID: cmd.CommandID, Type: "x", Entity: "account", EntityID: cmd.CommandID}); err == nil {
		t.Error("CommandItem accepted a command whose id is its entity id")
	}
}

func TestCausedCommandID(t *testing.T) {
	seq := uuid.New()
	a := wire.CausedCommandID("transfers", seq, 3, 0)
	if a != wire.CausedCommandID("transfers", seq, 3, 0) {
		t.Fatal("CausedCommandID is not deterministic")
	}
	for _, b := range []uuid.UUID{
		wire.CausedCommandID("transfers", seq, 3, 1),
		wire.CausedCommandID("transfers", seq, 4, 0),
		wire.CausedCommandID("other", seq, 3, 0),
		wire.CausedCommandID("transfers", uuid.New(), 3, 0),
	} {
		if a == b {
			t.Fatal("CausedCommandID gave the same id to different causes")
		}
	}
}
