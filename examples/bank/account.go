// Package bank is a complete service built on eventlog's public API: bank
// accounts that refuse overdrafts, money transfers between them carried out
// by a process application (debit one account, credit the other, refund the
// first when the credit is refused), and read models of the balances and of
// the transfers in tables of their own, with query endpoints.
//
// Domain returns it all as a service.Domain; cmd/bank runs it with every
// program of eventlog (dev, writer, projector, send, get, rebuild, ...).
package bank

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Entity types.
const (
	AccountType  = "account"
	TransferType = "transfer"
)

// An Account holds money. Its balance never goes below zero, and a closed
// account takes no money in but refunds.
type Account struct {
	events.Aggregate
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
	Closed  bool   `json:"closed"`
}

// The account's events. Their topics are "account.<name>", for ever.
type (
	// Opened starts an account.
	Opened struct {
		events.Meta
		Owner string `json:"owner"`
	}
	// Deposited puts money in.
	Deposited struct {
		events.Meta
		Amount int64 `json:"amount"`
	}
	// Withdrawn takes money out.
	Withdrawn struct {
		events.Meta
		Amount int64 `json:"amount"`
	}
	// Closed ends the account (at balance zero).
	AccountClosed struct {
		events.Meta
	}
	// Debited takes a transfer's amount out, to go to another account.
	Debited struct {
		events.Meta
		Transfer uuid.UUID `json:"transfer"`
		Amount   int64     `json:"amount"`
		To       uuid.UUID `json:"to"`
	}
	// DebitRefused records a transfer the account could not pay.
	DebitRefused struct {
		events.Meta
		Transfer uuid.UUID `json:"transfer"`
		Reason   string    `json:"reason"`
	}
	// Credited puts a transfer's amount in.
	Credited struct {
		events.Meta
		Transfer uuid.UUID `json:"transfer"`
		Amount   int64     `json:"amount"`
		From     uuid.UUID `json:"from"`
	}
	// CreditRefused records a transfer the account would not take: the
	// money goes back to From.
	CreditRefused struct {
		events.Meta
		Transfer uuid.UUID `json:"transfer"`
		Amount   int64     `json:"amount"`
		From     uuid.UUID `json:"from"`
		Reason   string    `json:"reason"`
	}
	// Refunded gives back the amount of a transfer whose credit was refused.
	Refunded struct {
		events.Meta
		Transfer uuid.UUID `json:"transfer"`
		Amount   int64     `json:"amount"`
	}
)

// Errors of the account's commands. A command refused with one is rejected
// (nothing stored); a transfer's debit or credit is not refused but records
// why it did not happen, for the transfer to go on.
var (
	ErrInsufficientFunds = errors.New("bank: insufficient funds")
	ErrClosed            = errors.New("bank: account closed")
	ErrNotEmpty          = errors.New("bank: an account closes only at balance zero")
)

// Mutate applies an event: the only place an account changes.
func (a *Account) Mutate(e events.Event) error {
	switch e := e.(type) {
	case *Opened:
		a.Owner = e.Owner
	case *Deposited:
		a.Balance += e.Amount
	case *Withdrawn:
		a.Balance -= e.Amount
	case *AccountClosed:
		a.Closed = true
	case *Debited:
		a.Balance -= e.Amount
	case *Credited:
		a.Balance += e.Amount
	case *Refunded:
		a.Balance += e.Amount
	case *DebitRefused, *CreditRefused:
	default:
		return fmt.Errorf("bank: account: unexpected event %T", e)
	}
	return nil
}

// accountEvents are the account's event names and types.
var accountEvents = map[string]func() events.Event{
	"Opened":        func() events.Event { return &Opened{} },
	"Deposited":     func() events.Event { return &Deposited{} },
	"Withdrawn":     func() events.Event { return &Withdrawn{} },
	"Closed":        func() events.Event { return &AccountClosed{} },
	"Debited":       func() events.Event { return &Debited{} },
	"DebitRefused":  func() events.Event { return &DebitRefused{} },
	"Credited":      func() events.Event { return &Credited{} },
	"CreditRefused": func() events.Event { return &CreditRefused{} },
	"Refunded":      func() events.Event { return &Refunded{} },
}

// Amount is the data of deposit and withdraw.
type Amount struct {
	Amount int64 `json:"amount"`
}

// TransferStep is the data of debit, credit and refund: the commands the
// transfer process sends.
type TransferStep struct {
	Transfer uuid.UUID `json:"transfer"`
	Amount   int64     `json:"amount"`
	// Other is the account on the other side: the credited one of a debit,
	// the debited one of a credit.
	Other uuid.UUID `json:"other"`
}

// accountCommands are the account's command handlers. Each validates, then
// triggers events; an error rejects the command (or makes it invalid if it
// wraps command.ErrInvalid, as DecodeData's errors do).
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
		if data.Owner == "" {
			return fmt.Errorf("%w: owner is required", command.ErrInvalid)
		}
		e := &Opened{Owner: data.Owner}
		e.OriginatorID = cmd.EntityID // a creating command names the new aggregate
		return events.Trigger(a, e)
	},
	"deposit": func(_ context.Context, a *Account, cmd wire.Command) error {
		n, err := amountOf(a, cmd)
		if err != nil {
			return err
		}
		if a.Closed {
			return ErrClosed
		}
		return events.Trigger(a, &Deposited{Amount: n})
	},
	"withdraw": func(_ context.Context, a *Account, cmd wire.Command) error {
		n, err := amountOf(a, cmd)
		if err != nil {
			return err
		}
		if n > a.Balance {
			return fmt.Errorf("%w: balance %d, withdrawal %d", ErrInsufficientFunds, a.Balance, n)
		}
		return events.Trigger(a, &Withdrawn{Amount: n})
	},
	"close": func(_ context.Context, a *Account, cmd wire.Command) error {
		switch {
		case a.Version() == 0:
			return command.ErrNotExist
		case a.Closed:
			return ErrClosed
		case a.Balance != 0:
			return fmt.Errorf("%w: balance %d", ErrNotEmpty, a.Balance)
		}
		return events.Trigger(a, &AccountClosed{})
	},
	"debit": func(_ context.Context, a *Account, cmd wire.Command) error {
		s, err := stepOf(a, cmd)
		if err != nil {
			return err
		}
		switch {
		case a.Closed:
			return events.Trigger(a, &DebitRefused{Transfer: s.Transfer, Reason: "account closed"})
		case s.Amount > a.Balance:
			return events.Trigger(a, &DebitRefused{Transfer: s.Transfer, Reason: fmt.Sprintf("insufficient funds: balance %d, transfer %d", a.Balance, s.Amount)})
		}
		return events.Trigger(a, &Debited{Transfer: s.Transfer, Amount: s.Amount, To: s.Other})
	},
	"credit": func(_ context.Context, a *Account, cmd wire.Command) error {
		s, err := stepOf(a, cmd)
		if err != nil {
			return err
		}
		if a.Closed {
			return events.Trigger(a, &CreditRefused{Transfer: s.Transfer, Amount: s.Amount, From: s.Other, Reason: "account closed"})
		}
		return events.Trigger(a, &Credited{Transfer: s.Transfer, Amount: s.Amount, From: s.Other})
	},
	"refund": func(_ context.Context, a *Account, cmd wire.Command) error {
		s, err := stepOf(a, cmd)
		if err != nil {
			return err
		}
		// Even a closed account takes its money back: money is never lost.
		return events.Trigger(a, &Refunded{Transfer: s.Transfer, Amount: s.Amount})
	},
}

func amountOf(a *Account, cmd wire.Command) (int64, error) {
	if a.Version() == 0 {
		return 0, command.ErrNotExist
	}
	var data Amount
	if err := command.DecodeData(cmd, &data); err != nil {
		return 0, err
	}
	if data.Amount <= 0 {
		return 0, fmt.Errorf("%w: amount must be positive, got %d", command.ErrInvalid, data.Amount)
	}
	return data.Amount, nil
}

func stepOf(a *Account, cmd wire.Command) (TransferStep, error) {
	var s TransferStep
	if a.Version() == 0 {
		return s, command.ErrNotExist
	}
	if err := command.DecodeData(cmd, &s); err != nil {
		return s, err
	}
	if s.Transfer == uuid.Nil || s.Amount <= 0 {
		return s, fmt.Errorf("%w: a transfer step needs a transfer id and a positive amount", command.ErrInvalid)
	}
	return s, nil
}

// accountAggregate registers the account in a domain.
func accountAggregate() service.Aggregate[*Account] {
	return service.Aggregate[*Account]{
		Type:     AccountType,
		New:      func() *Account { return &Account{} },
		Events:   accountEvents,
		Commands: accountCommands,
	}
}
