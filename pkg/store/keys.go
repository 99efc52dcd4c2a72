package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/events"
)

// ErrForgotten reports a forgotten entity; see events.ErrForgotten. Errors
// wrapping it are *events.ForgottenError values.
var ErrForgotten = events.ErrForgotten

// A WrappedKey is the data key of one sequence as stored: encrypted
// ("wrapped") by the master key MasterID, never in the clear.
type WrappedKey struct {
	SequenceID uuid.UUID
	MasterID   string
	Wrapped    []byte
}

// A KeyRecorder stores the data keys of sequences for crypto-shredding: each
// entity's events are encrypted with a key of its own, and forgetting the
// entity deletes that key. Every backend implements it (postgres, sqlite,
// memory) and passes the storetest conformance suite for it.
type KeyRecorder interface {
	// DataKey returns seq's stored key. A sequence with no key is ErrNotFound;
	// a forgotten one is a *events.ForgottenError.
	DataKey(ctx context.Context, seq uuid.UUID) (WrappedKey, error)
	// CreateDataKey stores k as the key of k.SequenceID unless that sequence
	// has one already, and returns the key stored: k, or the key a concurrent
	// caller stored first (use the returned key, never k). A forgotten
	// sequence never gets a key again: a *events.ForgottenError.
	CreateDataKey(ctx context.Context, k WrappedKey) (WrappedKey, error)
	// Forget forgets sequence seq, in one transaction: it deletes seq's key
	// (keeping a record, without key material, that seq was forgotten), deletes
	// its snapshots, and appends the tombstone events.ForgottenItem after seq's
	// last item, into the notification log like any item. It returns the
	// tombstone's position. A sequence with no items is ErrNotFound. Forgetting
	// a forgotten sequence changes nothing and returns its tombstone's
	// position. An append to seq that commits first makes Forget fail with a
	// *ConflictError and change nothing: call it again.
	//
	// Forget deletes the key in the database; copies of it outside (backups,
	// write-ahead logs, dead tuples before VACUUM) are the operator's to expire.
	Forget(ctx context.Context, seq uuid.UUID) (int64, error)
}

// ForgetIn is KeyRecorder.Forget for backends: in one transaction of db it
// runs ForgetTx and then drop, the backend's deletion of the key and the
// snapshots, and returns the tombstone's position.
func ForgetIn(ctx context.Context, db interface {
	InTx(context.Context, func(Tx) error) error
}, seq uuid.UUID, drop func(Tx) error) (int64, error) {
	var pos int64
	err := db.InTx(ctx, func(tx Tx) error {
		p, _, err := ForgetTx(ctx, tx, seq, time.Now())
		if err != nil {
			return err
		}
		pos = p
		return drop(tx)
	})
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// ForgetTx is the backend-independent part of KeyRecorder.Forget, for
// backends: inside tx it reads seq's last item and, unless it is a tombstone
// already, appends the tombstone after it (stamped now). already reports a
// sequence forgotten before. The backend deletes the key and the snapshots in
// the same transaction.
func ForgetTx(ctx context.Context, tx Tx, seq uuid.UUID, now time.Time) (position int64, already bool, err error) {
	last, err := tx.SelectEvents(ctx, seq, Query{Desc: true, Limit: 1})
	if err != nil {
		return 0, false, err
	}
	if len(last) == 0 {
		return 0, false, fmt.Errorf("%w: sequence %s has no items to forget", ErrNotFound, seq)
	}
	if events.IsForgottenTopic(last[0].Topic) {
		return last[0].Position, true, nil
	}
	typ := events.EntityOf(last[0].Topic)
	if typ == "" {
		return 0, false, fmt.Errorf("store: sequence %s: its topic %q names no entity type, so it cannot be forgotten", seq, last[0].Topic)
	}
	tomb := events.ForgottenItem(seq, last[0].Position+1, typ, now)
	if _, err := tx.InsertEvents(ctx, []SequencedItem{tomb}); err != nil {
		return 0, false, err
	}
	return tomb.Position, false, nil
}

// IsForgotten reports whether err says an entity was forgotten.
func IsForgotten(err error) bool { return errors.Is(err, ErrForgotten) }
