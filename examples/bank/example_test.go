package bank_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/examples/bank"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

var (
	ada = uuid.MustParse("00000000-0000-4000-8000-00000000ada0")
	bob = uuid.MustParse("00000000-0000-4000-8000-000000000b0b")
	tr  = uuid.MustParse("00000000-0000-4000-8000-0000000000f1")
)

// run sends commands to the domain's handlers, as the writer does, and
// prints each result.
func run(ctx context.Context, d *service.Domain, rec store.ProcessRecorder, cmds ...wire.Command) {
	reg, err := d.Registry(entity.Limits{})
	if err != nil {
		panic(err)
	}
	w, err := command.NewWriter(rec, reg, events.NewMapper(reg.Events()), command.WriterConfig{})
	if err != nil {
		panic(err)
	}
	var recs []wire.Record
	for i, c := range cmds {
		c.CommandID = uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%d", i))
		b, _ := json.Marshal(c)
		recs = append(recs, wire.Record{Topic: "eventlog.commands", Offset: int64(i), Key: []byte(c.EntityID.String()), Value: b})
		cmds[i] = c
	}
	if err := w.HandleBatch(ctx, recs); err != nil {
		panic(err)
	}
	for _, c := range cmds {
		items, _ := rec.SelectEvents(ctx, c.CommandID, store.Query{})
		r, _ := wire.DecodeResult(items[0].State)
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%-8s %-8s %s", c.Type, r.Status, r.Error)))
	}
}

func data(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func openStore(ctx context.Context) *sqlite.Recorder {
	rec, err := sqlite.Open(ctx, sqlite.MemoryPath, sqlite.Options{})
	if err != nil {
		panic(err)
	}
	return rec
}

// The account aggregate and its command handlers, run as the writer runs
// them: an overdraft is rejected, and closing needs a zero balance.
func Example_account() {
	ctx := context.Background()
	rec := openStore(ctx)
	defer rec.Close()
	run(ctx, bank.Domain(), rec,
		wire.Command{Type: "open", Entity: "account", EntityID: ada, Data: data(map[string]string{"owner": "ada"})},
		wire.Command{Type: "deposit", Entity: "account", EntityID: ada, Data: data(bank.Amount{Amount: 100})},
		wire.Command{Type: "withdraw", Entity: "account", EntityID: ada, Data: data(bank.Amount{Amount: 500})},
		wire.Command{Type: "close", Entity: "account", EntityID: ada},
		wire.Command{Type: "deposit", Entity: "account", EntityID: ada, Data: data(bank.Amount{Amount: -1})},
	)
	// Output:
	// open     accepted
	// deposit  accepted
	// withdraw rejected bank: insufficient funds: balance 100, withdrawal 500
	// close    rejected bank: an account closes only at balance zero: balance 100
	// deposit  invalid  invalid command: amount must be positive, got -1
}

// model returns the read model of the domain called name, on rec.
func model(name string) *sqlmodel.ReadModel {
	for _, m := range bank.Domain().ReadModels() {
		if m.Name == name {
			rm, err := sqlmodel.New(m.Model, sqlmodel.Options{})
			if err != nil {
				panic(err)
			}
			return rm
		}
	}
	panic("no read model " + name)
}

// project applies the store's events of the model's entity types to the
// model through a projection runner, as the projector does with the records
// it consumes.
func project(ctx context.Context, rec *sqlite.Recorder, rm *sqlmodel.ReadModel) {
	if err := rm.Migrate(ctx, rec); err != nil {
		panic(err)
	}
	reg, _ := bank.Domain().Registry(entity.Limits{})
	r, err := projection.NewRunner(rec, projection.Config{Name: rm.Name(), Policy: rm, Mapper: events.NewMapper(reg.Events()), Source: rec})
	if err != nil {
		panic(err)
	}
	ns, _ := rec.SelectNotifications(ctx, 0, 0)
	var recs []wire.Record
	for _, n := range ns {
		for _, e := range rm.Entities() {
			if events.EntityOf(n.Topic) == e {
				recs = append(recs, projection.RecordOf(n, "eventlog.events."+e, 0, int64(len(recs))))
			}
		}
	}
	if err := r.HandleBatch(ctx, recs); err != nil {
		panic(err)
	}
}

// The balances read model keeps each account's balance in a table of its
// own, applied with exactly-once effect; its handlers query it.
func Example_balances() {
	ctx := context.Background()
	rec := openStore(ctx)
	defer rec.Close()
	run(ctx, bank.Domain(), rec,
		wire.Command{Type: "open", Entity: "account", EntityID: ada, Data: data(map[string]string{"owner": "ada"})},
		wire.Command{Type: "deposit", Entity: "account", EntityID: ada, Data: data(bank.Amount{Amount: 100})},
		wire.Command{Type: "withdraw", Entity: "account", EntityID: ada, Data: data(bank.Amount{Amount: 30})},
	)
	rm := model(bank.Balances)
	project(ctx, rec, rm)
	q := rm.NewReader(sqlmodel.SQL(rec.ReadDB()), sqlmodel.SQLite)
	var owner string
	var balance, version int64
	if err := q.QueryRow(ctx, "SELECT owner, balance, version FROM "+q.Table("balances")+" WHERE id = $1", ada).Scan(&owner, &balance, &version); err != nil {
		panic(err)
	}
	fmt.Println(owner, balance, version)
	// Output:
	// open     accepted
	// deposit  accepted
	// withdraw accepted
	// ada 70 3
}

// The transfer process reacts to a started transfer by sending the debit
// of the paying account: the command goes to the outbox with the
// projection's tracking, with an id derived from the event that caused it.
func Example_transferProcess() {
	ctx := context.Background()
	rec := openStore(ctx)
	defer rec.Close()
	run(ctx, bank.Domain(), rec,
		wire.Command{Type: "open", Entity: "account", EntityID: ada, Data: data(map[string]string{"owner": "ada"})},
		wire.Command{Type: "open", Entity: "account", EntityID: bob, Data: data(map[string]string{"owner": "bob"})},
		wire.Command{Type: "start", Entity: "transfer", EntityID: tr, Data: data(bank.Start{From: ada, To: bob, Amount: 20})},
	)
	project(ctx, rec, model(bank.TransferProcess))
	ns, _ := rec.SelectNotifications(ctx, 0, 0)
	for _, n := range ns {
		if n.Topic != wire.CommandItemTopic {
			continue
		}
		c, _ := wire.DecodeCommand(n.State, 0)
		fmt.Println(c.Type, c.Entity, c.EntityID == ada, string(c.Data))
		fmt.Println("id derived from the event:", c.CommandID == wire.CausedCommandID(bank.TransferProcess, tr, 0, 0))
	}
	// Output:
	// open     accepted
	// open     accepted
	// start    accepted
	// debit account true {"transfer":"00000000-0000-4000-8000-0000000000f1","amount":20,"other":"00000000-0000-4000-8000-000000000b0b"}
	// id derived from the event: true
}
