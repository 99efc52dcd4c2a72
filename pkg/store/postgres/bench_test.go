package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// BenchmarkRecorder runs storetest.Bench: appends of 1, 10 and 100 items per
// transaction (events/s), parallel appends, a 1,000-event replay (p50-ms,
// p99-ms) and a 1,000-item notification page.
func BenchmarkRecorder(b *testing.B) {
	storetest.Bench(b, newRecorder(b))
}

// BenchmarkAppendMethods compares, at 100 items per transaction, the
// recorder's InsertEvents (one INSERT ... SELECT FROM unnest statement, its own
// transaction) with an append by COPY that keeps the same guarantees (begin;
// id base, log-order guard and NOTIFY in one statement; COPY; commit), and with
// a bare pgx CopyFrom into an identical table that keeps none of them. Each
// iteration runs all three, in rotating order, so that they share the disk's
// moods (commit fsyncs dominate); each reports its own events/s, and
// insert/bare is InsertEvents' throughput as a fraction of bare CopyFrom's.
func BenchmarkAppendMethods(b *testing.B) {
	const n = 100
	rec := newRecorder(b)
	ctx := b.Context()
	o := rec.Options()
	events := pgx.Identifier{o.Schema, o.TablePrefix + "events"}
	bare := pgx.Identifier{o.Schema, "bare_events"}
	if _, err := rec.Pool().Exec(ctx, "CREATE TABLE "+bare.Sanitize()+" (LIKE "+events.Sanitize()+" INCLUDING ALL)"); err != nil {
		b.Fatal(err)
	}
	columns := []string{"sequence_id", "position", "topic", "state", "codec", "notification_id"}
	guard := `WITH input AS (SELECT * FROM unnest($1::uuid[], $2::bigint[]) AS i (sequence_id, p)),
base AS (SELECT pg_current_xact_id()::text::bigint << 20 AS b)
SELECT base.b, EXISTS (SELECT FROM input f WHERE f.p > 0 AND (SELECT e.notification_id FROM ` + events.Sanitize() + ` e
	WHERE e.sequence_id = f.sequence_id AND e.position = f.p - 1) >= base.b), pg_notify($3, '') FROM base`
	next := int64(0)
	methods := []struct {
		name string
		fn   func(items []store.SequencedItem) error
	}{
		{"insert", func(items []store.SequencedItem) error {
			_, err := rec.InsertEvents(ctx, items)
			return err
		}},
		{"copy", func(items []store.SequencedItem) error {
			return appendByCopy(ctx, rec, events, columns, guard, items)
		}},
		{"bare", func(items []store.SequencedItem) error {
			return pgx.BeginFunc(ctx, rec.Pool(), func(tx pgx.Tx) error {
				_, err := tx.CopyFrom(ctx, bare, columns, pgx.CopyFromSlice(len(items), func(i int) ([]any, error) {
					it := &items[i]
					next++
					return []any{[16]byte(it.SequenceID), it.Position, it.Topic, it.State, it.Codec, next}, nil
				}))
				return err
			})
		}},
	}
	spent := make([]time.Duration, len(methods))
	iter := 0
	for b.Loop() {
		for k := range methods {
			i := (iter + k) % len(methods)
			items := storetest.Items(uuid.New(), 0, n)
			t0 := time.Now()
			if err := methods[i].fn(items); err != nil {
				b.Fatalf("%s: %v", methods[i].name, err)
			}
			spent[i] += time.Since(t0)
		}
		iter++
	}
	for i, m := range methods {
		b.ReportMetric(float64(n*b.N)/spent[i].Seconds(), m.name+"-events/s")
	}
	b.ReportMetric(spent[2].Seconds()/spent[0].Seconds(), "insert/bare")
	b.ReportMetric(spent[2].Seconds()/spent[1].Seconds(), "copy/bare")
}

// appendByCopy is the COPY alternative to InsertEvents that was measured and
// not kept (see doc.go): one append of items of one sequence, from position 0.
func appendByCopy(ctx context.Context, rec *postgres.Recorder, events pgx.Identifier, columns []string, guard string, items []store.SequencedItem) error {
	if err := store.ValidateItems(items); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, rec.Pool(), func(tx pgx.Tx) error {
		firsts := [][16]byte{items[0].SequenceID}
		pos := []int64{items[0].Position}
		var base int64
		var bad bool
		if err := tx.QueryRow(ctx, guard, firsts, pos, rec.Channel()).Scan(&base, &bad, nil); err != nil {
			return err
		}
		if bad {
			return errors.New("log order")
		}
		_, err := tx.CopyFrom(ctx, events, columns, pgx.CopyFromSlice(len(items), func(i int) ([]any, error) {
			it := &items[i]
			return []any{[16]byte(it.SequenceID), it.Position, it.Topic, it.State, it.Codec, base + int64(i)}, nil
		}))
		return err
	})
}
