package interop_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eventlog/eventlog/internal/e2e/interop"
)

// The README's kcat example runs as it is written (against this test's dev
// broker), in a shell with nothing but kcat and coreutils, and its command
// is accepted.
func TestREADMEKcatExample(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		interop.Unavailable(t, "kcat is not installed (apt-get install kcat)")
	}
	readme, err := os.ReadFile(repoPath(t, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)for example kcat.*?```sh\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no kcat example after \"for example kcat\"")
	}
	d := dev.Get(t)
	block := strings.ReplaceAll(string(m[1]), "127.0.0.1:9092", d.Broker)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// The example produces a command, then reads the results and the events
	// once; the test prints the entity id after it and waits for its result.
	out, err := exec.CommandContext(ctx, "bash", "-euc", block+"\necho \"entity=$id\"\n").CombinedOutput()
	if err != nil {
		t.Fatalf("the README's kcat example: %v\n%s", err, out)
	}
	id := regexp.MustCompile(`entity=([0-9a-f-]{36})`).FindSubmatch(out)
	if id == nil {
		t.Fatalf("no entity id after the example:\n%s", out)
	}
	// Wait for one record of the entity on the results topic (the plan's
	// "events" topic here: the one whose records it counts by key).
	key := string(id[1])
	plan := &interop.Plan{Brokers: []string{d.Broker}, EventsTopic: interop.Topics.Results(), ReadTopics: []string{interop.Topics.Results()},
		Group: "interop-readme-" + key[:8], Entities: []string{key}, WantEvents: map[string]int{key: 1}, TimeoutMs: 30_000}
	recs, err := kcatRead(ctx, kcat, plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || !strings.Contains(recs[0].Value, `"status":"accepted","version":1`) {
		t.Fatalf("the result of the example's command: %v", recs)
	}
}
