package bank_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// A service in a module of its own, as a user writes it: the README's "Build
// your own service" in one file.
const userMain = `package main

import (
	"context"
	"fmt"

	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/wire"
)

type Counter struct {
	events.Aggregate
	N int64 ` + "`json:\"n\"`" + `
}

type Added struct {
	events.Meta
	By int64 ` + "`json:\"by\"`" + `
}

func (c *Counter) Mutate(e events.Event) error {
	switch e := e.(type) {
	case *Added:
		c.N += e.By
	default:
		return fmt.Errorf("counter: unexpected event %T", e)
	}
	return nil
}

func main() {
	d := service.NewDomain()
	service.AddAggregate(d, service.Aggregate[*Counter]{
		Type:   "counter",
		New:    func() *Counter { return &Counter{} },
		Events: map[string]func() events.Event{"Added": func() events.Event { return &Added{} }},
		Commands: map[string]command.Handler[*Counter]{
			"add": func(_ context.Context, c *Counter, cmd wire.Command) error {
				var data struct{ By int64 }
				if err := command.DecodeData(cmd, &data); err != nil {
					return err
				}
				e := &Added{By: data.By}
				e.OriginatorID = cmd.EntityID
				return events.Trigger(c, e)
			},
		},
	})
	cli.Run(cli.Program{Name: "counters", Domain: d})
}
`

// TestOutOfTreeModule builds a service of its own domain in a module of its
// own that requires eventlog (replaced by this checkout), runs its dev
// program, and sends it a command: what a user outside this module does.
func TestOutOfTreeModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module of its own")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	mod := t.TempDir()
	gomod := "module example.com/counters\n\ngo 1.26\n\nrequire github.com/eventlog/eventlog v0.0.0\n\nreplace github.com/eventlog/eventlog => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": []byte(userMain)} {
		if err := os.WriteFile(filepath.Join(mod, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gocmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	gocmd("mod", "tidy")
	gocmd("build", "-o", "counters", ".")

	httpAddr := freeAddr(t)
	var out bytes.Buffer
	dev := exec.Command(filepath.Join(mod, "counters"), "dev", "-data-dir", filepath.Join(mod, "data"), "-broker-addr", freeAddr(t), "-http-addr", httpAddr)
	dev.Stdout, dev.Stderr = &out, &out
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = dev.Process.Signal(syscall.SIGTERM)
		_ = dev.Wait()
		if t.Failed() {
			t.Logf("counters dev:\n%s", out.String())
		}
	}()
	ready(t, httpAddr)
	id := uuid.New()
	b, _ := json.Marshal(map[string]any{"type": "add", "entity": "counter", "entity_id": id, "data": map[string]int{"by": 3}})
	var resp *http.Response
	for range 5 { // the writer may still be joining its group
		if resp, err = http.Post("http://"+httpAddr+"/v1/commands", "application/json", bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusGatewayTimeout {
			break
		}
		resp.Body.Close()
		time.Sleep(time.Second)
	}
	defer resp.Body.Close()
	var res struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || res.Status != "accepted" {
		t.Fatalf("POST /v1/commands: %s, %+v, %v", resp.Status, res, err)
	}
	var got struct {
		Version int64 `json:"version"`
		State   struct {
			N int64 `json:"n"`
		} `json:"state"`
	}
	if _, err := getJSON(t.Context(), "http://"+httpAddr+"/v1/entities/counter/"+id.String(), &got); err != nil || got.State.N != 3 || got.Version != 1 {
		t.Fatalf("GET the counter: %+v, %v", got, err)
	}
}
