package postgres

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/store"
)

func TestParseKeyDetail(t *testing.T) {
	id := uuid.New()
	for _, d := range []string{
		fmt.Sprintf(`Key (sequence_id, "position")=(%s, 12) already exists.`, id),
		fmt.Sprintf(`Key (sequence_id, position)=(%s, 12) already exists.`, id),
	} {
		ce := parseKeyDetail(d)
		if ce == nil || ce.SequenceID != id || ce.Position != 12 {
			t.Errorf("parseKeyDetail(%q) = %+v", d, ce)
		}
	}
	for _, d := range []string{"", "Key (notification_id)=(5) already exists.", "Key (sequence_id, position)=(nope, 1)"} {
		if ce := parseKeyDetail(d); ce != nil {
			t.Errorf("parseKeyDetail(%q) = %+v, want nil", d, ce)
		}
	}
}

func item(id uuid.UUID, pos int64) store.SequencedItem {
	return store.SequencedItem{SequenceID: id, Position: pos, Topic: "t"}
}

func TestNewBatchOrdinals(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	tests := []struct {
		items []store.SequencedItem
		first int64
		want  []int64 // ordinals in the caller's order
	}{
		{[]store.SequencedItem{item(a, 0), item(a, 1), item(a, 2)}, 0, []int64{0, 1, 2}},
		{[]store.SequencedItem{item(a, 2), item(a, 1), item(a, 0)}, 0, []int64{2, 1, 0}},
		{[]store.SequencedItem{item(a, 5), item(b, 1), item(a, 3), item(b, 0)}, 10, []int64{12, 13, 10, 11}},
		{[]store.SequencedItem{item(a, 0), item(b, 0), item(a, 1)}, 7, []int64{7, 8, 9}},
	}
	for _, tc := range tests {
		bt := newBatch(tc.items, tc.first)
		got := bt.notificationIDs(0)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ordinals of %v = %v, want %v", tc.items, got, tc.want)
		}
		// sent sorted by (sequence id, position)
		for k := 1; k < len(bt.ids); k++ {
			c := strings.Compare(string(bt.ids[k-1].Bytes[:]), string(bt.ids[k].Bytes[:]))
			if c > 0 || c == 0 && bt.pos[k-1] >= bt.pos[k] {
				t.Errorf("batch not sorted at %d", k)
			}
		}
	}
}

func TestRedact(t *testing.T) {
	for dsn, pw := range map[string]string{
		"postgres://u:p%40ss@h:x/db":       "p%40ss",
		"postgres://u:hunter2@h:5432/db":   "hunter2",
		"host=h password='a b c' port=bad": "a b c",
		"host=h password=xyz123 port=bad":  "xyz123",
	} {
		got := redact("dsn "+dsn+" and "+pw, dsnPasswords(dsn))
		if strings.Contains(got, pw) {
			t.Errorf("redact left %q in %q", pw, got)
		}
	}
}

// TestInsertErrorFallback: a unique violation without a detail (hidden from
// roles without SELECT on the table) is still named, by asking the database.
func TestInsertErrorFallback(t *testing.T) {
	pool := pgtest.Pool(t)
	r, err := New(t.Context(), pool, Options{Schema: pgtest.Schema(t), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, b := uuid.New(), uuid.New()
	if _, err := r.InsertEvents(t.Context(), []store.SequencedItem{item(b, 0), item(b, 1)}); err != nil {
		t.Fatal(err)
	}
	raw := &pgconn.PgError{Code: "23505", ConstraintName: "eventlog_events_pkey"}
	err = r.insertError(t.Context(), raw, newBatch([]store.SequencedItem{item(a, 0), item(b, 1), item(b, 2)}, 0))
	var ce *store.ConflictError
	if !errors.As(err, &ce) || ce.SequenceID != b || ce.Position != 1 {
		t.Fatalf("insertError without detail = %v, want a conflict naming %s/1", err, b)
	}
	// Other errors are wrapped, not translated.
	other := &pgconn.PgError{Code: "23505", ConstraintName: "eventlog_events_notification_id_key"}
	if err := r.insertError(t.Context(), other, newBatch([]store.SequencedItem{item(a, 0)}, 0)); errors.Is(err, store.ErrConflict) || !errors.As(err, new(*pgconn.PgError)) {
		t.Fatalf("a notification id collision = %v, want a wrapped driver error, not a conflict", err)
	}
}

// A transaction's InsertEvents calls past maxSavepoints run without a
// savepoint, and keep the same contract: a taken position fails the call
// alone, which writes nothing; the others commit, in order, each call's
// items under the notification ids it returned.
func TestInsertEventsPastSavepoints(t *testing.T) {
	ctx := t.Context()
	r, err := New(ctx, pgtest.Pool(t), Options{Schema: pgtest.Schema(t), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	taken := uuid.New()
	if _, err := r.InsertEvents(ctx, []store.SequencedItem{item(taken, 0)}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	var seqs []uuid.UUID
	err = r.InTx(ctx, func(tx store.Tx) error {
		for i := range maxSavepoints + 4 {
			// A conflicting call under a savepoint, and one past them.
			if i == maxSavepoints-1 || i == maxSavepoints+1 {
				fresh := uuid.New()
				_, err := tx.InsertEvents(ctx, []store.SequencedItem{item(fresh, 0), item(taken, 0)})
				var ce *store.ConflictError
				if !errors.As(err, &ce) || ce.SequenceID != taken || ce.Position != 0 {
					return fmt.Errorf("call %d: %v, want a conflict naming %s/0", i, err, taken)
				}
				seqs = append(seqs, fresh) // must not be stored
				continue
			}
			id := uuid.New()
			got, err := tx.InsertEvents(ctx, []store.SequencedItem{item(id, 0), item(id, 1)})
			if err != nil {
				return fmt.Errorf("call %d: %w", i, err)
			}
			ids = append(ids, got...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range seqs {
		if items, err := r.SelectEvents(ctx, id, store.Query{}); err != nil || len(items) != 0 {
			t.Fatalf("a conflicting call stored %d items (%v)", len(items), err)
		}
	}
	var ns []store.Notification
	// A transaction open anywhere on the server holds the log back.
	testutil.Eventually(t, time.Minute, func() error {
		var err error
		if ns, err = r.SelectNotifications(ctx, 0, 1000); err == nil && len(ns) != 1+len(ids) {
			err = fmt.Errorf("%d notifications, want %d", len(ns), 1+len(ids))
		}
		return err
	})
	for i, n := range ns[1:] {
		if n.ID != ids[i] {
			t.Fatalf("notification %d has id %d, the call returned %d", i, n.ID, ids[i])
		}
	}
}

// rowDecoder.bytes copies each value out of the buffer the driver reuses,
// into shared chunks, and an append to one value never reaches the next.
func TestRowDecoderBytes(t *testing.T) {
	d := &rowDecoder{}
	raw := make([]byte, 0, chunkSize)
	var got [][]byte
	var want []string
	for i := range 1000 { // several chunks
		raw = append(raw[:0], fmt.Sprintf(`{"n": %d, "pad": "%0100d"}`, i, i)...)
		got = append(got, d.bytes(raw))
		want = append(want, string(raw))
	}
	big := []byte(strings.Repeat("x", chunkSize))
	got, want = append(got, d.bytes(big)), append(want, string(big))
	got, want = append(got, d.bytes(nil)), append(want, "")
	for i := range raw {
		raw[i] = 0 // the driver reads the next row into its buffer
	}
	for i := range got {
		if string(got[i]) != want[i] {
			t.Fatalf("value %d = %q, want %q", i, got[i], want[i])
		}
	}
	if got[len(got)-1] == nil {
		t.Fatal("an empty value is nil, want empty")
	}
	_ = append(got[0], "overwrite"...)
	if string(got[1]) != want[1] {
		t.Fatalf("an append to one value changed the next: %q", got[1])
	}
}
