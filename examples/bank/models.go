package bank

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Domain returns the bank: the account and transfer aggregates, the
// transfer process, and the balances and transfer-status read models.
func Domain() *service.Domain {
	d := service.NewDomain()
	_ = service.AddAggregate(d, accountAggregate())
	_ = service.AddAggregate(d, transferAggregate())
	_ = d.AddProcess(transferProcess())
	_ = d.AddReadModel(balances())
	_ = d.AddReadModel(transferStatus())
	d.SetWorkload(func(id uuid.UUID, first bool, n int) wire.Command {
		if first {
			return wire.Command{Type: "open", Entity: AccountType, EntityID: id, Data: json.RawMessage(`{"owner":"bench"}`)}
		}
		return wire.Command{Type: "deposit", Entity: AccountType, EntityID: id, Data: json.RawMessage(`{"amount":1}`)}
	})
	return d // Validate, which every program calls at start, reports a mistake above
}

// idType is the column type of an entity id.
func idType(d sqlmodel.Dialect) string {
	if d == sqlmodel.Postgres {
		return "uuid"
	}
	return "TEXT"
}

// TransferProcess is the name of the transfer process.
const TransferProcess = "transfer_process"

// transferProcess carries transfers out: it reacts to the events of
// transfers and accounts by sending the next command. It keeps the accounts
// it has seen opened, so that a transfer between unknown accounts fails
// before any money moves.
func transferProcess() service.ReadModel {
	return service.ReadModel{Model: sqlmodel.Model{
		Name:     TransferProcess,
		Entities: []string{AccountType, TransferType},
		Tables:   []string{"process_accounts"},
		Schema: func(d sqlmodel.Dialect, n sqlmodel.Names) []string {
			return []string{"CREATE TABLE " + n.Table("process_accounts") + " (id " + idType(d) + " PRIMARY KEY)"}
		},
		Apply: func(ctx context.Context, tx *sqlmodel.Tx, items []projection.Item) error {
			for i, it := range items {
				if err := react(ctx, tx, it); err != nil {
					return &projection.ItemError{Index: i, Err: err}
				}
			}
			return nil
		},
	}}
}

func react(ctx context.Context, tx *sqlmodel.Tx, it projection.Item) error {
	send := func(entity, typ string, id uuid.UUID, data any) error {
		b, err := json.Marshal(data)
		if err != nil {
			return projection.Permanent(err)
		}
		return tx.Emit(it, wire.Command{Type: typ, Entity: entity, EntityID: id, Data: b})
	}
	switch e := it.Event.(type) {
	case *Opened:
		_, err := tx.Exec(ctx, "INSERT INTO "+tx.Table("process_accounts")+" (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", it.SequenceID)
		return err
	case *Started:
		for _, acct := range []uuid.UUID{e.From, e.To} {
			var id uuid.UUID
			err := tx.QueryRow(ctx, "SELECT id FROM "+tx.Table("process_accounts")+" WHERE id = $1", acct).Scan(&id)
			if errors.Is(err, sqlmodel.ErrNoRows) {
				return send(TransferType, "fail", it.SequenceID, map[string]string{"reason": "unknown account " + acct.String()})
			}
			if err != nil {
				return err
			}
		}
		return send(AccountType, "debit", e.From, TransferStep{Transfer: it.SequenceID, Amount: e.Amount, Other: e.To})
	case *Debited:
		return send(AccountType, "credit", e.To, TransferStep{Transfer: e.Transfer, Amount: e.Amount, Other: it.SequenceID})
	case *DebitRefused:
		return send(TransferType, "fail", e.Transfer, map[string]string{"reason": e.Reason})
	case *Credited:
		return send(TransferType, "complete", e.Transfer, nil)
	case *CreditRefused:
		return send(AccountType, "refund", e.From, TransferStep{Transfer: e.Transfer, Amount: e.Amount, Other: it.SequenceID})
	case *Refunded:
		return send(TransferType, "fail", e.Transfer, map[string]string{"reason": "the credit was refused; refunded"})
	}
	return nil
}

// Balances is the name of the balances read model.
const Balances = "balances"

// A Balance is one account in the balances read model.
type Balance struct {
	ID      uuid.UUID `json:"id"`
	Owner   string    `json:"owner"`
	Balance int64     `json:"balance"`
	Closed  bool      `json:"closed"`
	Version int64     `json:"version"`
}

// balances keeps every account's balance, for GET /v1/balances/{id} and GET
// /v1/balances (all of them, with their total).
func balances() service.ReadModel {
	return service.ReadModel{
		Model: sqlmodel.Model{
			Name:     Balances,
			Entities: []string{AccountType},
			Tables:   []string{"balances"},
			Schema: func(d sqlmodel.Dialect, n sqlmodel.Names) []string {
				return []string{
					"CREATE TABLE " + n.Table("balances") + " (id " + idType(d) + " PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL, closed BOOLEAN NOT NULL, version BIGINT NOT NULL)",
					"CREATE INDEX " + n.Index("balances", "owner") + " ON " + n.Table("balances") + " (owner)",
				}
			},
			Apply: applyBalances,
		},
		Routes: func(mux *http.ServeMux, q *sqlmodel.Reader) {
			mux.HandleFunc("GET /v1/balances/{id}", func(w http.ResponseWriter, r *http.Request) {
				id, err := uuid.Parse(r.PathValue("id"))
				if err != nil {
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": "account id: " + err.Error()})
					return
				}
				var b Balance
				err = q.QueryRow(r.Context(), "SELECT id, owner, balance, closed, version FROM "+q.Table("balances")+" WHERE id = $1", id).
					Scan(&b.ID, &b.Owner, &b.Balance, &b.Closed, &b.Version)
				switch {
				case errors.Is(err, sqlmodel.ErrNoRows):
					writeJSON(w, http.StatusNotFound, map[string]string{"error": "no account " + id.String()})
				case err != nil:
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "balances: " + err.Error()})
				default:
					writeJSON(w, http.StatusOK, b)
				}
			})
			mux.HandleFunc("GET /v1/balances", func(w http.ResponseWriter, r *http.Request) {
				rows, err := q.Query(r.Context(), "SELECT id, owner, balance, closed, version FROM "+q.Table("balances")+" ORDER BY id")
				if err != nil {
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "balances: " + err.Error()})
					return
				}
				defer rows.Close()
				out := struct {
					Accounts []Balance `json:"accounts"`
					Total    int64     `json:"total"`
				}{Accounts: []Balance{}}
				for rows.Next() {
					var b Balance
					if err := rows.Scan(&b.ID, &b.Owner, &b.Balance, &b.Closed, &b.Version); err != nil {
						writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "balances: " + err.Error()})
						return
					}
					out.Accounts = append(out.Accounts, b)
					out.Total += b.Balance
				}
				if err := rows.Err(); err != nil {
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "balances: " + err.Error()})
					return
				}
				writeJSON(w, http.StatusOK, out)
			})
		},
	}
}

func applyBalances(ctx context.Context, tx *sqlmodel.Tx, items []projection.Item) error {
	t := tx.Table("balances")
	for i, it := range items {
		version := it.Position + 1
		var delta int64
		var err error
		switch e := it.Event.(type) {
		case *Opened:
			_, err = tx.Exec(ctx, "INSERT INTO "+t+" (id, owner, balance, closed, version) VALUES ($1, $2, 0, $3, $4)", it.SequenceID, e.Owner, false, version)
		case *AccountClosed:
			_, err = tx.Exec(ctx, "UPDATE "+t+" SET closed = $2, version = $3 WHERE id = $1", it.SequenceID, true, version)
		case *events.Forgotten:
			_, err = tx.Exec(ctx, "DELETE FROM "+t+" WHERE id = $1", it.SequenceID)
		case *Deposited:
			delta = e.Amount
		case *Withdrawn:
			delta = -e.Amount
		case *Debited:
			delta = -e.Amount
		case *Credited:
			delta = e.Amount
		case *Refunded:
			delta = e.Amount
		}
		if err == nil && !isSet(it.Event) {
			_, err = tx.Exec(ctx, "UPDATE "+t+" SET balance = balance + $2, version = $3 WHERE id = $1", it.SequenceID, delta, version)
		}
		if err != nil {
			return &projection.ItemError{Index: i, Err: err}
		}
	}
	return nil
}

// isSet reports the events applyBalances writes with a statement of their
// own.
func isSet(e events.Event) bool {
	switch e.(type) {
	case *Opened, *AccountClosed, *events.Forgotten:
		return true
	}
	return false
}

// TransferStatuses is the name of the transfer-status read model.
const TransferStatuses = "transfer_status"

// A TransferView is one transfer in the transfer-status read model.
type TransferView struct {
	ID     uuid.UUID `json:"id"`
	From   uuid.UUID `json:"from"`
	To     uuid.UUID `json:"to"`
	Amount int64     `json:"amount"`
	Status string    `json:"status"`
	Reason string    `json:"reason,omitempty"`
}

// transferStatus keeps every transfer and its status, for GET
// /v1/transfers/{id} and GET /v1/transfers (the count of each status).
func transferStatus() service.ReadModel {
	return service.ReadModel{
		Model: sqlmodel.Model{
			Name:     TransferStatuses,
			Entities: []string{TransferType},
			Tables:   []string{"transfers"},
			Schema: func(d sqlmodel.Dialect, n sqlmodel.Names) []string {
				return []string{
					"CREATE TABLE " + n.Table("transfers") + " (id " + idType(d) + " PRIMARY KEY, from_account " + idType(d) + " NOT NULL, to_account " + idType(d) +
						" NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL)",
					"CREATE INDEX " + n.Index("transfers", "status") + " ON " + n.Table("transfers") + " (status)",
				}
			},
			Apply: func(ctx context.Context, tx *sqlmodel.Tx, items []projection.Item) error {
				t := tx.Table("transfers")
				for i, it := range items {
					var err error
					switch e := it.Event.(type) {
					case *Started:
						_, err = tx.Exec(ctx, "INSERT INTO "+t+" (id, from_account, to_account, amount, status, reason) VALUES ($1, $2, $3, $4, $5, '')",
							it.SequenceID, e.From, e.To, e.Amount, StatusPending)
					case *Completed:
						_, err = tx.Exec(ctx, "UPDATE "+t+" SET status = $2 WHERE id = $1", it.SequenceID, StatusCompleted)
					case *Failed:
						_, err = tx.Exec(ctx, "UPDATE "+t+" SET status = $2, reason = $3 WHERE id = $1", it.SequenceID, StatusFailed, e.Reason)
					case *events.Forgotten:
						_, err = tx.Exec(ctx, "DELETE FROM "+t+" WHERE id = $1", it.SequenceID)
					}
					if err != nil {
						return &projection.ItemError{Index: i, Err: err}
					}
				}
				return nil
			},
		},
		Routes: func(mux *http.ServeMux, q *sqlmodel.Reader) {
			mux.HandleFunc("GET /v1/transfers/{id}", func(w http.ResponseWriter, r *http.Request) {
				id, err := uuid.Parse(r.PathValue("id"))
				if err != nil {
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": "transfer id: " + err.Error()})
					return
				}
				var v TransferView
				err = q.QueryRow(r.Context(), "SELECT id, from_account, to_account, amount, status, reason FROM "+q.Table("transfers")+" WHERE id = $1", id).
					Scan(&v.ID, &v.From, &v.To, &v.Amount, &v.Status, &v.Reason)
				switch {
				case errors.Is(err, sqlmodel.ErrNoRows):
					writeJSON(w, http.StatusNotFound, map[string]string{"error": "no transfer " + id.String()})
				case err != nil:
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "transfers: " + err.Error()})
				default:
					writeJSON(w, http.StatusOK, v)
				}
			})
			mux.HandleFunc("GET /v1/transfers", func(w http.ResponseWriter, r *http.Request) {
				rows, err := q.Query(r.Context(), "SELECT status, count(*) FROM "+q.Table("transfers")+" GROUP BY status")
				if err != nil {
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "transfers: " + err.Error()})
					return
				}
				defer rows.Close()
				counts := map[string]int64{}
				for rows.Next() {
					var s string
					var n int64
					if err := rows.Scan(&s, &n); err != nil {
						writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "transfers: " + err.Error()})
						return
					}
					counts[s] = n
				}
				if err := rows.Err(); err != nil {
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "transfers: " + err.Error()})
					return
				}
				writeJSON(w, http.StatusOK, map[string]any{"by_status": counts})
			})
		},
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
