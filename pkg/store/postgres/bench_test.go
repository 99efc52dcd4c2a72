package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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

// BenchmarkTxAppend measures the writer's transaction shape: one InTx that
// appends, in one InsertEvents call, the next event of each of 1,000
// entities and the first item of 1,000 new sequences (their commands'
// results), ~100-byte states. It reports items/s.
//
//	go test -run '^$' -bench TxAppend -benchtime 50x ./pkg/store/postgres
func BenchmarkTxAppend(b *testing.B) {
	const entities = 1000
	rec := newRecorder(b)
	ctx := b.Context()
	ids := make([]uuid.UUID, entities)
	state := []byte(`{"command_id":"00000000-0000-0000-0000-000000000000","status":"accepted","version":1,"positions":[0]}`)
	items := make([]store.SequencedItem, 0, 2*entities)
	for i := range ids {
		ids[i] = uuid.New()
		items = append(items, store.SequencedItem{SequenceID: ids[i], Position: 0, Topic: "example.Created", State: state, Codec: "json"})
	}
	if _, err := rec.InsertEvents(ctx, items); err != nil {
		b.Fatal(err)
	}
	pids := backendPIDs(b, rec)
	cpu := serverCPU(pids)
	b.ResetTimer()
	for n := range b.N {
		items = items[:0]
		for _, id := range ids {
			items = append(items,
				store.SequencedItem{SequenceID: id, Position: int64(n + 1), Topic: "example.AttributeChanged", State: state, Codec: "json"},
				store.SequencedItem{SequenceID: uuid.New(), Position: 0, Topic: "eventlog.Result", State: state, Codec: "json"})
		}
		err := rec.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.InsertEvents(ctx, items)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*2*entities)/b.Elapsed().Seconds(), "items/s")
	if !slices.Equal(backendPIDs(b, rec), pids) {
		return // another connection served some: its time is unknown
	}
	if cpu := serverCPU(pids) - cpu; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "server-cpu-ms/op")
	}
}

// backendPIDs returns the server process ids of rec's idle connections.
func backendPIDs(b *testing.B, rec *postgres.Recorder) []uint32 {
	conns := rec.Pool().AcquireAllIdle(b.Context())
	pids := make([]uint32, len(conns))
	for i, c := range conns {
		pids[i] = c.Conn().PgConn().PID()
		c.Release()
	}
	slices.Sort(pids)
	return pids
}

// serverCPU returns the CPU time the server processes pids have used (from
// /proc, so only where the server runs on this machine; 0 elsewhere): it
// tells a change of the server's work apart from the machine's load, which
// moves wall-clock figures much more.
func serverCPU(pids []uint32) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || !bytes.Contains(raw, []byte("(postgres)")) {
			return 0 // the server runs elsewhere (a local pid would be another process)
		}
		// Fields after the command name (which may hold spaces): utime and
		// stime are the 12th and 13th, in clock ticks (100 a second).
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) < 13 {
			return 0
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return total
}
