package command_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Account is a custom aggregate: a bank account that refuses overdrafts.
type Account struct {
	events.Aggregate
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
}

// Its events. Their topics are "account.<Name>".
type (
	Opened struct {
		events.Meta
		Owner string `json:"owner"`
	}
	Deposited struct {
		events.Meta
		Amount int64 `json:"amount"`
	}
	Withdrawn struct {
		events.Meta
		Amount int64 `json:"amount"`
	}
)

// ErrInsufficientFunds rejects a withdrawal larger than the balance.
var ErrInsufficientFunds = errors.New("account: insufficient funds")

// Mutate applies an event: the only place the account's state changes.
func (a *Account) Mutate(e events.Event) error {
	switch e := e.(type) {
	case *Opened:
		a.Owner = e.Owner
	case *Deposited:
		a.Balance += e.Amount
	case *Withdrawn:
		a.Balance -= e.Amount
	default:
		return fmt.Errorf("account: unexpected event %T", e)
	}
	return nil
}

func newAccount() *Account { return &Account{} }

func registerAccountEvents(reg *events.Registry) {
	reg.MustRegister("account.Opened", func() events.Event { return &Opened{} })
	reg.MustRegister("account.Deposited", func() events.Event { return &Deposited{} })
	reg.MustRegister("account.Withdrawn", func() events.Event { return &Withdrawn{} })
}

// accountCommands are the account's command handlers. Each validates, then
// triggers events; a handler error rejects the command (or makes it invalid if
// it wraps command.ErrInvalid, as DecodeData's errors do).
var accountCommands = map[string]command.Handler[*Account]{
	"open": func(_ context.Context, a *Account, cmd wire.Command) error {
		if a.Version() > 0 {
			return command.ErrExists
		}
		var data struct {
			Owner string `json:"owner"`
		}
		if err := command.DecodeData(cmd, &data); err != nil {
			return err
		}
		e := &Opened{Owner: data.Owner}
		e.OriginatorID = cmd.EntityID // a creating command names the new aggregate
		return events.Trigger(a, e)
	},
	"deposit": func(_ context.Context, a *Account, cmd wire.Command) error {
		amount, err := amountOf(a, cmd)
		if err != nil {
			return err
		}
		return events.Trigger(a, &Deposited{Amount: amount})
	},
	"withdraw": func(_ context.Context, a *Account, cmd wire.Command) error {
		amount, err := amountOf(a, cmd)
		if err != nil {
			return err
		}
		if amount > a.Balance {
			return fmt.Errorf("%w: balance %d, withdrawal %d", ErrInsufficientFunds, a.Balance, amount)
		}
		return events.Trigger(a, &Withdrawn{Amount: amount})
	},
}

func amountOf(a *Account, cmd wire.Command) (int64, error) {
	if a.Version() == 0 {
		return 0, command.ErrNotExist
	}
	var data struct {
		Amount int64 `json:"amount"`
	}
	if err := command.DecodeData(cmd, &data); err != nil {
		return 0, err
	}
	if data.Amount <= 0 {
		return 0, fmt.Errorf("%w: amount must be positive", command.ErrInvalid)
	}
	return data.Amount, nil
}

// This example registers a custom aggregate, a bank account, and sends it one
// batch of commands. The overdraft is rejected and the batch goes on.
func Example_customAggregate() {
	ctx := context.Background()
	reg := command.NewRegistry(events.NewRegistry())
	registerAccountEvents(reg.Events())
	if err := command.Register(reg, "account", newAccount, accountCommands); err != nil {
		panic(err)
	}
	rec := memory.New()
	mapper := events.NewMapper(reg.Events())
	w, err := command.NewWriter(rec, reg, mapper, command.WriterConfig{})
	if err != nil {
		panic(err)
	}

	id := uuid.MustParse("9a6d1c3e-0000-4000-8000-000000000001")
	send := []struct{ typ, data string }{
		{"open", `{"owner": "ada"}`},
		{"deposit", `{"amount": 100}`},
		{"withdraw", `{"amount": 30}`},
		{"withdraw", `{"amount": 500}`}, // overdraft
		{"deposit", `{"amount": "lots"}`},
		{"close", ``},
	}
	var records []wire.Record
	var ids []uuid.UUID
	for i, s := range send {
		c := wire.Command{CommandID: uuid.New(), Type: s.typ, Entity: "account", EntityID: id}
		if s.data != "" {
			c.Data = []byte(s.data)
		}
		ids = append(ids, c.CommandID)
		records = append(records, wire.Record{Topic: "eventlog.commands", Offset: int64(i), Key: []byte(id.String()), Value: mustJSON(c)})
	}
	if err := w.HandleBatch(ctx, records); err != nil {
		panic(err)
	}

	for i, c := range ids {
		items, _ := rec.SelectEvents(ctx, c, store.Query{})
		r, _ := wire.DecodeResult(items[0].State)
		fmt.Printf("%-8s %-8s version %d positions %v\n", send[i].typ, r.Status, r.Version, r.Positions)
	}
	repo, _ := store.NewRepository(store.NewEventStore(mapper, rec), newAccount, store.RepositoryConfig{})
	acct, _ := repo.Get(ctx, id)
	fmt.Println("owner:", acct.Owner, "balance:", acct.Balance, "version:", acct.Version())

	// Output:
	// open     accepted version 1 positions [0]
	// deposit  accepted version 2 positions [1]
	// withdraw accepted version 3 positions [2]
	// withdraw rejected version 3 positions []
	// deposit  invalid  version 3 positions []
	// close    invalid  version 0 positions []
	// owner: ada balance: 70 version: 3
}
