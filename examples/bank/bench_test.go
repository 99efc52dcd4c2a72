package bank_test

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/examples/bank"
	"github.com/eventlog/eventlog/pkg/cli"
)

// BenchmarkTransfers measures settled transfers per second through the
// whole bank in one process (`bank dev`: the embedded broker, the store, the
// writer with its relay, the projector with the transfer process and the
// read models): b.N transfers among 50 accounts are produced to Kafka at
// once, and the clock stops when the last one is completed or failed. Each
// transfer is four commands (start, debit, credit, complete), each a
// transaction of the writer and one of the process.
//
//	go test -run '^$' -bench Transfers -benchtime 2000x ./examples/bank
//
// With EVENTLOG_TEST_POSTGRES_DSN it runs on PostgreSQL too.
func BenchmarkTransfers(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchTransfers(b, nil) })
	if dsn := os.Getenv("EVENTLOG_TEST_POSTGRES_DSN"); dsn != "" {
		b.Run("postgres", func(b *testing.B) {
			schema := "bank_bench_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
			b.Cleanup(func() { dropSchema(b, dsn, schema) })
			benchTransfers(b, []string{"-postgres-dsn", dsn, "-postgres-schema", schema})
		})
	}
}

func benchTransfers(b *testing.B, storeFlags []string) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	dir := b.TempDir()
	brokerAddr, httpAddr := freeAddr(b), freeAddr(b)
	args := append([]string{"dev", "-data-dir", filepath.Join(dir, "data"), "-broker-addr", brokerAddr, "-http-addr", httpAddr, "-log-level", "error"}, storeFlags...)
	done := make(chan error, 1)
	go func() {
		done <- cli.Program{Name: "bank", Domain: bank.Domain()}.Main(ctx, args, cli.Env{Getenv: func(string) string { return "" }, Stdout: io.Discard, Stderr: os.Stderr})
	}()
	defer func() { cancel(); <-done }()
	waitB(b, "ready", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	produce := func(typ, entity string, id uuid.UUID, data any) {
		v, _ := json.Marshal(map[string]any{"command_id": uuid.New(), "type": typ, "entity": entity, "entity_id": id, "data": data})
		prod.Produce(ctx, &kgo.Record{Topic: "eventlog.commands", Key: []byte(id.String()), Value: v}, nil)
	}
	ids := make([]uuid.UUID, 50)
	for i := range ids {
		ids[i] = uuid.New()
		produce("open", bank.AccountType, ids[i], map[string]string{"owner": "bench"})
		produce("deposit", bank.AccountType, ids[i], bank.Amount{Amount: 1 << 40})
	}
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	waitB(b, "accounts", func() bool {
		var out struct {
			Total int64 `json:"total"`
		}
		_, err := getJSON(ctx, "http://"+httpAddr+"/v1/balances", &out)
		return err == nil && out.Total == 50<<40
	})
	time.Sleep(3 * time.Second) // the process sees the accounts opened

	settled := func() int {
		var out struct {
			ByStatus map[string]int `json:"by_status"`
		}
		if _, err := getJSON(ctx, "http://"+httpAddr+"/v1/transfers", &out); err != nil {
			return -1
		}
		return out.ByStatus[bank.StatusCompleted] + out.ByStatus[bank.StatusFailed]
	}
	before := settled()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		from, to := rng.IntN(len(ids)), rng.IntN(len(ids)-1)
		if to >= from {
			to++
		}
		produce("start", bank.TransferType, uuid.New(), bank.Start{From: ids[from], To: ids[to], Amount: 1})
	}
	waitB(b, "transfers settle", func() bool { return settled() >= before+b.N })
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "transfers/s")
}

func waitB(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("%s: not within 5m", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
