package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// Environment of the child process of TestDurabilityKill.
const (
	envCrashDB  = "EVENTLOG_SQLITE_CRASH_DB"
	envCrashSeq = "EVENTLOG_SQLITE_CRASH_SEQ"
)

const crashTracking = "crash-test"

// TestDurabilityKill runs a child process (this test binary again) that
// appends in a loop and prints each acknowledged append, SIGKILLs it at a
// random moment, reopens the file and checks that every acknowledged item is
// there, that no transaction is there in part, and that the file is intact.
// It repeats this on the same file, so later rounds also recover a WAL left
// by a killed process.
//
// SIGKILL tests what survives the process, not the machine: a commit survives
// it once SQLite has written it to the OS. What synchronous=FULL adds (an
// fsync per commit, surviving power loss) needs a VM or a fault-injecting
// file system to test.
func TestDurabilityKill(t *testing.T) {
	if path := os.Getenv(envCrashDB); path != "" {
		crashChild(path, uuid.MustParse(os.Getenv(envCrashSeq)))
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "events.db")
	seq := uuid.New()
	type ack struct {
		pos int64 // first position of the batch
		ids []int64
	}
	var acks []ack
	const rounds = 4
	for round := range rounds {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestDurabilityKill$", "-test.count=1")
		cmd.Env = append(os.Environ(), envCrashDB+"="+path, envCrashSeq+"="+seq.String())
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			br := bufio.NewReader(out)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return // EOF; a line without its newline was never acknowledged
				}
				lines <- line
			}
		}()
		var kill <-chan time.Time
		before := len(acks)
		for line := range lines {
			if !strings.HasPrefix(line, "ack ") {
				continue
			}
			f := strings.Fields(line)[1:]
			a := ack{pos: mustInt(t, f[0])}
			for _, s := range f[1:] {
				a.ids = append(a.ids, mustInt(t, s))
			}
			acks = append(acks, a)
			if kill == nil {
				// Kill at a random moment once the child is appending.
				kill = time.After(time.Duration(20+rand.IntN(300)) * time.Millisecond)
			}
			select {
			case <-kill:
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				kill = make(chan time.Time) // never again; drain what the pipe holds
			default:
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL", round, err)
		}
		if len(acks) == before {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}
		t.Logf("round %d: killed after %d acknowledged appends", round, len(acks)-before)

		// Intact file?
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		var check string
		err = db.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&check)
		db.Close()
		if err != nil || check != "ok" {
			t.Fatalf("round %d: integrity_check = %q, %v", round, check, err)
		}

		// Every acknowledged item, and no partial transaction?
		r, err := sqlite.Open(t.Context(), path, sqlite.Options{})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		items, err := r.SelectEvents(t.Context(), seq, store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		log, err := r.SelectNotifications(t.Context(), 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		tracked, err := r.Tracking(t.Context(), crashTracking, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()

		byPos := map[int64]int64{} // position -> notification id
		for i, n := range log {
			if int64(i) != n.Position || !sameState(n.SequencedItem, storetest.Item(seq, n.Position)) {
				t.Fatalf("round %d: log item %d is %s/%d %q", round, i, n.SequenceID, n.Position, n.State)
			}
			byPos[n.Position] = n.ID
		}
		if len(items) != len(log) {
			t.Fatalf("round %d: sequence holds %d items, log %d", round, len(items), len(log))
		}
		for _, a := range acks {
			for k, id := range a.ids {
				if got, ok := byPos[a.pos+int64(k)]; !ok || got != id {
					t.Fatalf("round %d: acknowledged item %d (id %d) is lost (found id %d, %v)", round, a.pos+int64(k), id, got, ok)
				}
			}
		}
		// The child records its batch count as tracking in each transaction:
		// it must match the batches found, so no transaction is there in part.
		if last := acks[len(acks)-1]; tracked < int64(len(acks)-1) || tracked < 0 {
			t.Fatalf("round %d: tracking %d is behind the %d acknowledged batches (last at %d)", round, tracked, len(acks), last.pos)
		}
		if batches := int64(batchesIn(len(log))); batches != tracked+1 {
			t.Fatalf("round %d: %d items make %d batches, but tracking says %d", round, len(log), batches, tracked+1)
		}
	}
}

// crashChild appends batches of 1 to 3 items, with a tracking record, in a
// loop until it is killed, and prints "ack <first position> <ids...>" after
// each commit. It resumes where an earlier child stopped.
func crashChild(path string, seq uuid.UUID) {
	ctx := context.Background()
	r, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	batch, err := r.Tracking(ctx, crashTracking, "", 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	pos := int64(0)
	for b := int64(0); b <= batch; b++ {
		pos += batchSize(b)
	}
	for batch++; ; batch++ {
		n := batchSize(batch)
		var ids []int64
		err := r.InTx(ctx, func(tx store.Tx) error {
			var err error
			if ids, err = tx.InsertEvents(ctx, storetest.Items(seq, pos, int(n))); err != nil {
				return err
			}
			return tx.SetTracking(ctx, store.Tracking{Name: crashTracking, Position: batch})
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "ack %d", pos)
		for _, id := range ids {
			fmt.Fprintf(&sb, " %d", id)
		}
		sb.WriteByte('\n')
		// One write(2): the line reaches the pipe whole or not at all.
		if _, err := io.WriteString(os.Stdout, sb.String()); err != nil {
			os.Exit(2)
		}
		pos += n
	}
}

func batchSize(batch int64) int64 { return 1 + batch%3 }

// batchesIn returns how many whole batches make n items, or -1.
func batchesIn(n int) int {
	total := int64(0)
	for b := int64(0); ; b++ {
		if total == int64(n) {
			return int(b)
		}
		if total > int64(n) {
			return -1
		}
		total += batchSize(b)
	}
}

func sameState(a, b store.SequencedItem) bool {
	return a.SequenceID == b.SequenceID && a.Position == b.Position && a.Topic == b.Topic &&
		a.Codec == b.Codec && string(a.State) == string(b.State)
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("child printed %q: %v", s, err)
	}
	return v
}
