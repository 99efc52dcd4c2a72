package command_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// A custom aggregate's snapshots have a topic of its own type,
// "<type>.Snapshot" by default or the one it registers, and a writer uses
// only snapshots of its type's topic: a new topic retires the old encoding's.
func TestCustomSnapshotTopic(t *testing.T) {
	ctx := context.Background()
	rec := memory.New()
	newWriter := func(snapshots bool, opts ...command.RegisterOption) (*command.Writer, *command.Registry) {
		reg := command.NewRegistry(events.NewRegistry())
		registerAccountEvents(reg.Events())
		if err := command.Register(reg, "account", newAccount, accountCommands, opts...); err != nil {
			t.Fatal(err)
		}
		cfg := command.WriterConfig{CacheSize: -1}
		if snapshots {
			cfg.Snapshots, cfg.SnapshotEvery = rec, 2
		}
		w, err := command.NewWriter(rec, reg, events.NewMapper(reg.Events()), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return w, reg
	}
	e := &env{t: t, rec: &hookRecorder{Recorder: rec}, offset: map[int32]int64{}}
	id := uuid.New()
	w, reg := newWriter(true)
	if got := reg.SnapshotTopic("account"); got != "account.Snapshot" {
		t.Fatalf("default snapshot topic %q", got)
	}
	e.handle(w, e.record(0, cmd("open", "account", id, `{"owner": "ann"}`)))
	for range 3 {
		e.handle(w, e.record(0, cmd("deposit", "account", id, `{"amount": 10}`)))
	}
	snap, err := rec.LatestSnapshot(ctx, id, -1)
	if err != nil || snap.Topic != "account.Snapshot" {
		t.Fatalf("snapshot %+v, %v", snap, err)
	}

	// Another account, without snapshots so far, gets one of an old
	// encoding, wrong for the new one.
	other := uuid.New()
	w0, _ := newWriter(false)
	e.handle(w0, e.record(0, cmd("open", "account", other, `{"owner": "bob"}`)), e.record(0, cmd("deposit", "account", other, `{"amount": 30}`)))
	bad := store.SequencedItem{SequenceID: other, Position: 1, Topic: "account.Snapshot", State: []byte(`{"owner": "bob", "balance": 999}`), Codec: "json"}
	if err := rec.InsertSnapshot(ctx, bad); err != nil {
		t.Fatal(err)
	}
	// A type with a new snapshot topic replays past it ...
	w2, reg2 := newWriter(true, command.WithSnapshotTopic("account.SnapshotV2"))
	if got := reg2.SnapshotTopic("account"); got != "account.SnapshotV2" {
		t.Fatalf("registered snapshot topic %q", got)
	}
	over := cmd("withdraw", "account", other, `{"amount": 31}`)
	e.handle(w2, e.record(0, over))
	checkResult(t, e.result(over.CommandID), wire.StatusRejected, 2) // balance 30, not 999
	// ... while a type of the snapshot's topic uses it (the negative
	// control: only the topic tells them apart).
	again := cmd("withdraw", "account", other, `{"amount": 31}`)
	e.handle(w, e.record(0, again))
	checkResult(t, e.result(again.CommandID), wire.StatusAccepted, 3, 2)

	if err := command.Register(command.NewRegistry(events.NewRegistry()), "account", newAccount, accountCommands, command.WithSnapshotTopic("no topic")); err == nil {
		t.Fatal("an invalid snapshot topic was registered")
	}
}
