package bank

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Transfer statuses.
const (
	StatusPending   = "pending"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// A Transfer moves an amount from one account to another. It is started by
// a command; the transfer process carries it out and settles it, completed
// or failed.
type Transfer struct {
	events.Aggregate
	From   uuid.UUID `json:"from"`
	To     uuid.UUID `json:"to"`
	Amount int64     `json:"amount"`
	Status string    `json:"status"`
	Reason string    `json:"reason,omitempty"`
}

// The transfer's events: topics "transfer.<name>".
type (
	// Started asks for the transfer.
	Started struct {
		events.Meta
		From   uuid.UUID `json:"from"`
		To     uuid.UUID `json:"to"`
		Amount int64     `json:"amount"`
	}
	// Completed: the money moved.
	Completed struct {
		events.Meta
	}
	// Failed: the money did not move (it was never debited, or it was
	// refunded).
	Failed struct {
		events.Meta
		Reason string `json:"reason"`
	}
)

// Mutate applies an event to a transfer.
func (t *Transfer) Mutate(e events.Event) error {
	switch e := e.(type) {
	case *Started:
		t.From, t.To, t.Amount, t.Status = e.From, e.To, e.Amount, StatusPending
	case *Completed:
		t.Status = StatusCompleted
	case *Failed:
		t.Status, t.Reason = StatusFailed, e.Reason
	default:
		return fmt.Errorf("bank: transfer: unexpected event %T", e)
	}
	return nil
}

// Start is the data of a transfer's start command.
type Start struct {
	From   uuid.UUID `json:"from"`
	To     uuid.UUID `json:"to"`
	Amount int64     `json:"amount"`
}

var transferCommands = map[string]command.Handler[*Transfer]{
	"start": func(_ context.Context, t *Transfer, cmd wire.Command) error {
		if t.Version() > 0 {
			return command.ErrExists
		}
		var s Start
		if err := command.DecodeData(cmd, &s); err != nil {
			return err
		}
		switch {
		case s.From == uuid.Nil || s.To == uuid.Nil:
			return fmt.Errorf("%w: from and to are required", command.ErrInvalid)
		case s.From == s.To:
			return fmt.Errorf("%w: from and to are the same account", command.ErrInvalid)
		case s.Amount <= 0:
			return fmt.Errorf("%w: amount must be positive, got %d", command.ErrInvalid, s.Amount)
		}
		e := &Started{From: s.From, To: s.To, Amount: s.Amount}
		e.OriginatorID = cmd.EntityID
		return events.Trigger(t, e)
	},
	"complete": func(_ context.Context, t *Transfer, _ wire.Command) error {
		if err := pending(t); err != nil {
			return err
		}
		return events.Trigger(t, &Completed{})
	},
	"fail": func(_ context.Context, t *Transfer, cmd wire.Command) error {
		if err := pending(t); err != nil {
			return err
		}
		var data struct {
			Reason string `json:"reason"`
		}
		if err := command.DecodeData(cmd, &data); err != nil {
			return err
		}
		return events.Trigger(t, &Failed{Reason: data.Reason})
	},
}

func pending(t *Transfer) error {
	switch {
	case t.Version() == 0:
		return command.ErrNotExist
	case t.Status != StatusPending:
		return fmt.Errorf("bank: transfer %s is %s already", t.ID(), t.Status)
	}
	return nil
}

func transferAggregate() service.Aggregate[*Transfer] {
	return service.Aggregate[*Transfer]{
		Type: TransferType,
		New:  func() *Transfer { return &Transfer{} },
		Events: map[string]func() events.Event{
			"Started":   func() events.Event { return &Started{} },
			"Completed": func() events.Event { return &Completed{} },
			"Failed":    func() events.Event { return &Failed{} },
		},
		Commands: transferCommands,
	}
}
