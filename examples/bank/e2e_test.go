package bank_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/examples/bank"
	"github.com/eventlog/eventlog/pkg/cli"
)

// childEnv holds the command line of a child process of the end-to-end
// test: the test binary runs as `bank <command> [flags]`.
const childEnv = "BANK_TEST_CHILD"

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad", childEnv, err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := cli.Program{Name: "bank", Domain: bank.Domain()}.Main(ctx, args, cli.Env{Getenv: func(string) string { return "" }, Stdout: os.Stdout, Stderr: os.Stderr})
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bank", args[0]+":", err)
		}
		os.Exit(cli.ExitCode(err))
	}
	os.Exit(m.Run())
}

// proc is a child process: `bank <args>`.
type proc struct {
	t    *testing.T
	name string
	args []string
	log  string
	cmd  *exec.Cmd
}

func start(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: args, log: filepath.Join(dir, name+".log")}
	p.run()
	t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("%s log (end):\n%s", p.name, b)
		}
	})
	return p
}

func (p *proc) run() {
	p.t.Helper()
	raw, _ := json.Marshal(p.args)
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
}

// kill SIGKILLs the process: whatever it was doing, it stops there.
func (p *proc) kill() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func getJSON(ctx context.Context, url string, v any) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s: %w: %s", url, err, b)
		}
	}
	return resp.StatusCode, nil
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
}

func ready(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 60*time.Second, "ready at "+addr, func() (bool, string) {
		code, err := getJSON(t.Context(), "http://"+addr+"/readyz", nil)
		return code == http.StatusOK, fmt.Sprint(code, err)
	})
}

// backend is where the writer and the projector keep their data.
type backend struct {
	name  string
	flags []string
}

func backends(t *testing.T) []backend {
	out := []backend{{name: "sqlite"}}
	dsn := os.Getenv("EVENTLOG_TEST_POSTGRES_DSN")
	if dsn == "" && localPostgres() {
		dsn = localDSN
	}
	if dsn == "" {
		if os.Getenv("EVENTLOG_REQUIRE_POSTGRES") == "1" {
			t.Fatal("EVENTLOG_REQUIRE_POSTGRES=1 but EVENTLOG_TEST_POSTGRES_DSN is not set")
		}
		t.Log("EVENTLOG_TEST_POSTGRES_DSN is not set: the bank runs on SQLite only")
		return out
	}
	return append(out, backend{name: "postgres", flags: []string{"-postgres-dsn", dsn}})
}

// localDSN is the PostgreSQL tried when EVENTLOG_TEST_POSTGRES_DSN is not
// set, as eventlog's own tests do.
const localDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&connect_timeout=1"

func localPostgres() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, localDSN)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

// TestBankEndToEnd runs the bank as separate broker, writer and projector
// processes, on SQLite and on PostgreSQL, and sends random transfers among
// accounts while the writer and the projector are SIGKILLed and restarted.
// Once every transfer has settled, money is conserved (the balances add up
// to what was deposited), no transfer moved money twice, every transfer's
// events agree with its outcome, and each account's balance in the read
// model equals its balance replayed from its events.
func TestBankEndToEnd(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("EVENTLOG_TEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (EVENTLOG_TEST_SEED replays it)", seed)
	transfers, accounts, kills := 1000, 50, 2
	if testing.Short() {
		transfers, kills = 200, 1
	}
	for _, st := range backends(t) {
		t.Run(st.name, func(t *testing.T) {
			runBank(t, st, rand.New(rand.NewPCG(seed, 1)), accounts, transfers, kills)
		})
	}
}

func runBank(t *testing.T, st backend, rng *rand.Rand, nAccounts, nTransfers, kills int) {
	ctx := t.Context()
	dir := t.TempDir()
	storeFlags := st.flags
	if st.name == "sqlite" {
		storeFlags = []string{"-sqlite-path", filepath.Join(dir, "bank.db")}
	} else {
		schema := "bank_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
		storeFlags = append(storeFlags, "-postgres-schema", schema)
		t.Cleanup(func() { dropSchema(t, st.flags[1], schema) })
	}
	brokerAddr := freeAddr(t)
	start(t, dir, "broker", "broker", "-addr", brokerAddr, "-data-dir", filepath.Join(dir, "kafka"))
	kafkaFlags := []string{"-kafka-brokers", brokerAddr, "-session-timeout", "6s"}
	writerHTTP, projectorHTTP := freeAddr(t), freeAddr(t)
	writerArgs := append(append([]string{"writer", "-http-addr", writerHTTP}, kafkaFlags...), storeFlags...)
	projectorArgs := append(append([]string{"projector", "-http-addr", projectorHTTP, "-consumers", "2"}, kafkaFlags...), storeFlags...)
	writer := start(t, dir, "writer", writerArgs...)
	ready(t, writerHTTP)
	projector := start(t, dir, "projector", projectorArgs...)
	ready(t, projectorHTTP)

	// Accounts, each with a deposit, and a few closed ones (empty), to which
	// a transfer is refused and refunded.
	var total int64
	ids := make([]uuid.UUID, nAccounts)
	for i := range ids {
		ids[i] = uuid.New()
		send(t, writerHTTP, "account", "open", ids[i], map[string]any{"owner": fmt.Sprintf("owner-%d", i)})
		amount := 100 + rng.Int64N(900)
		send(t, writerHTTP, "account", "deposit", ids[i], map[string]any{"amount": amount})
		total += amount
	}
	for range 5 {
		id := uuid.New()
		send(t, writerHTTP, "account", "open", id, map[string]any{"owner": "closed"})
		send(t, writerHTTP, "account", "close", id, nil)
		ids = append(ids, id)
	}
	// The process must know the accounts before transfers between them
	// start (a transfer between accounts it has not seen opened fails). Lag
	// is measured every 2s: wait for a measure taken after the commands.
	time.Sleep(2500 * time.Millisecond)
	eventually(t, 60*time.Second, "the projections catch up", func() (bool, string) {
		return caughtUp(t, projectorHTTP)
	})

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	chunks := 2 * kills
	var transfers []uuid.UUID
	for c := range chunks {
		for range nTransfers / chunks {
			from, to := ids[rng.IntN(len(ids))], ids[rng.IntN(len(ids))]
			for to == from {
				to = ids[rng.IntN(len(ids))]
			}
			id := uuid.New()
			transfers = append(transfers, id)
			b, _ := json.Marshal(map[string]any{
				"command_id": uuid.New(), "type": "start", "entity": "transfer", "entity_id": id,
				"data": bank.Start{From: from, To: to, Amount: 1 + rng.Int64N(150)},
			})
			prod.Produce(ctx, &kgo.Record{Topic: "eventlog.commands", Key: []byte(id.String()), Value: b}, nil)
		}
		if err := prod.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// Kill one of the two while the chunk is being carried out.
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		victim, addr := writer, writerHTTP
		if c%2 == 1 {
			victim, addr = projector, projectorHTTP
		}
		t.Logf("chunk %d sent; SIGKILL %s", c, victim.name)
		victim.kill()
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		victim.run()
		ready(t, addr)
	}

	// Every transfer settles.
	eventually(t, 4*time.Minute, "every transfer settles", func() (bool, string) {
		var out struct {
			ByStatus map[string]int `json:"by_status"`
		}
		if _, err := getJSON(ctx, "http://"+projectorHTTP+"/v1/transfers", &out); err != nil {
			return false, err.Error()
		}
		done := out.ByStatus[bank.StatusCompleted] + out.ByStatus[bank.StatusFailed]
		return done == nTransfers, fmt.Sprint(out.ByStatus)
	})
	// Money is conserved, in the read model, once it has applied every
	// account's last event.
	var bal struct {
		Accounts []bank.Balance `json:"accounts"`
		Total    int64          `json:"total"`
	}
	replayed := map[uuid.UUID]accountState{}
	eventually(t, 60*time.Second, "the balances catch up", func() (bool, string) {
		if _, err := getJSON(ctx, "http://"+projectorHTTP+"/v1/balances", &bal); err != nil {
			return false, err.Error()
		}
		if len(bal.Accounts) != len(ids) {
			return false, fmt.Sprintf("%d accounts", len(bal.Accounts))
		}
		for _, b := range bal.Accounts {
			r, err := replay(ctx, writerHTTP, b.ID)
			if err != nil {
				return false, err.Error()
			}
			replayed[b.ID] = r
			if r.Version != b.Version {
				return false, fmt.Sprintf("account %s at version %d in the read model, %d replayed", b.ID, b.Version, r.Version)
			}
		}
		return true, ""
	})
	if bal.Total != total {
		t.Errorf("read model: %d accounts holding %d, want %d", len(bal.Accounts), bal.Total, total)
	}
	// Each account: its read-model balance is its replayed balance, which
	// is what its events add up to, and no transfer moved its money twice.
	steps := map[uuid.UUID]map[string]int{} // transfer -> event topic -> count
	var replayedTotal int64
	for _, b := range bal.Accounts {
		acct := replayed[b.ID]
		if acct.State.Balance != b.Balance || acct.Version != b.Version {
			t.Errorf("account %s: read model balance %d at version %d, replayed %d at version %d", b.ID, b.Balance, b.Version, acct.State.Balance, acct.Version)
		}
		if b.Balance < 0 {
			t.Errorf("account %s is overdrawn: %d", b.ID, b.Balance)
		}
		replayedTotal += acct.State.Balance
		var evs struct {
			Events []struct {
				Topic string          `json:"topic"`
				State json.RawMessage `json:"state"`
			} `json:"events"`
		}
		if _, err := getJSON(ctx, "http://"+writerHTTP+"/v1/entities/account/"+b.ID.String()+"/events", &evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Events {
			var s struct {
				Transfer uuid.UUID `json:"transfer"`
			}
			_ = json.Unmarshal(e.State, &s)
			if s.Transfer == uuid.Nil {
				continue
			}
			if steps[s.Transfer] == nil {
				steps[s.Transfer] = map[string]int{}
			}
			steps[s.Transfer][e.Topic]++
		}
	}
	if replayedTotal != total {
		t.Errorf("replayed balances add up to %d, want %d", replayedTotal, total)
	}
	var completed, refunded, refused, unknown int
	for _, tr := range transfers {
		s := steps[tr]
		for topic, n := range s {
			if n > 1 {
				t.Errorf("transfer %s: %s %d times", tr, topic, n)
			}
		}
		var status bank.TransferView
		if _, err := getJSON(ctx, "http://"+projectorHTTP+"/v1/transfers/"+tr.String(), &status); err != nil {
			t.Fatal(err)
		}
		debited, credited, back := s["account.Debited"] == 1, s["account.Credited"] == 1, s["account.Refunded"] == 1
		switch {
		case status.Status == bank.StatusCompleted && debited && credited && !back:
			completed++
		case status.Status == bank.StatusFailed && debited && !credited && back && s["account.CreditRefused"] == 1:
			refunded++
		case status.Status == bank.StatusFailed && !debited && !credited && s["account.DebitRefused"] == 1:
			refused++
		case status.Status == bank.StatusFailed && len(s) == 0 && strings.HasPrefix(status.Reason, "unknown account"):
			unknown++
		default:
			t.Errorf("transfer %s is %q (%s), with account events %v", tr, status.Status, status.Reason, s)
		}
	}
	if len(steps) > len(transfers) {
		t.Errorf("account events name %d transfers, %d were sent", len(steps), len(transfers))
	}
	t.Logf("%d transfers: %d completed, %d refunded, %d refused, %d between unknown accounts; %d accounts hold %d", nTransfers, completed, refunded, refused, unknown, len(ids), total)
	if completed == 0 || refunded == 0 {
		t.Errorf("the run exercised too little: %d completed, %d refunded", completed, refunded)
	}
}

type accountState struct {
	Version int64        `json:"version"`
	State   bank.Account `json:"state"`
}

// replay returns an account as the writer replays it from its events.
func replay(ctx context.Context, addr string, id uuid.UUID) (accountState, error) {
	var a accountState
	_, err := getJSON(ctx, "http://"+addr+"/v1/entities/account/"+id.String(), &a)
	return a, err
}

// send sends a command through the writer's HTTP API and fails the test
// unless it is accepted.
func send(t *testing.T, addr, entity, typ string, id uuid.UUID, data any) {
	t.Helper()
	body := map[string]any{"type": typ, "entity": entity, "entity_id": id}
	if data != nil {
		body["data"] = data
	}
	b, _ := json.Marshal(body)
	for attempt := 0; ; attempt++ {
		resp, err := http.Post("http://"+addr+"/v1/commands", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusGatewayTimeout && attempt < 3 {
			continue // the writer was still joining its group
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s %s: %s %s", typ, entity, id, resp.Status, out)
		}
		return
	}
}

// caughtUp reports whether every projection has applied every record.
func caughtUp(t *testing.T, addr string) (bool, string) {
	var out struct {
		Lag []struct {
			Projection string `json:"projection"`
			Lag        int64  `json:"lag"`
		} `json:"lag"`
	}
	if _, err := getJSON(t.Context(), "http://"+addr+"/v1/projections", &out); err != nil {
		return false, err.Error()
	}
	if len(out.Lag) == 0 {
		return false, "no lag measured yet"
	}
	for _, l := range out.Lag {
		if l.Lag > 0 {
			return false, fmt.Sprintf("%s is %d behind", l.Projection, l.Lag)
		}
	}
	return true, ""
}

func dropSchema(t testing.TB, dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Logf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Logf("drop schema %s: %v", schema, err)
	}
}
