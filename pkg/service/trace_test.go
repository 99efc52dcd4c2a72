package service_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/projection/sqlitereadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/tracing"
	"github.com/eventlog/eventlog/pkg/wire"
)

// One trace from a command to its read-model commit: a client's span sends
// a command over HTTP with its traceparent; the writer's command span
// continues it, the event and result records carry that span's context as
// their traceparent header (which kcat sees), the relay's span links to it,
// and the projector's apply span, which ends once the read model committed,
// continues it. Writer, relay and projector run in process over kfake, with
// the SDK's in-memory exporter.
func TestTraceFromCommandToReadModel(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	k := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}

	path := filepath.Join(t.TempDir(), "eventlog.db")
	rec, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	b := service.Backend{Recorder: rec, Snapshots: rec, Locker: kafka.NewLocalLock(), Name: "sqlite", SQLitePath: path}

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	a := runWriter(t, b, k, func(c *service.WriterConfig) { c.TracerProvider = tp })

	db, err := sql.Open("sqlite", sqlite.DSN(path, sqlite.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rm, err := sqlitereadmodel.New(db, sqlitereadmodel.Options{Types: []string{"example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := service.NewProjector(ctx, service.ProjectorConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: wire.Topics{Prefix: "eventlog"}, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, ReadModel: rm, Log: quietLog(), TracerProvider: tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projector: %v", err)
		}
	})

	// The client's span, and the command it sends under it.
	_, client := tp.Tracer("client").Start(context.Background(), "client.send")
	id := uuid.New()
	body, _ := json.Marshal(map[string]any{"type": "create", "entity": "example", "entity_id": id, "data": map[string]any{"foo": "bar"}})
	req, _ := http.NewRequest("POST", a.url+"/v1/commands", bytes.NewReader(body))
	req.Header.Set("traceparent", tracing.TraceParent(client.SpanContext()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res wire.Result
	_ = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if res.Status != wire.StatusAccepted {
		t.Fatalf("command: %+v", res)
	}
	client.End()
	traceID := client.SpanContext().TraceID()

	// The trace is complete once the apply span ended: after the commit.
	// The other spans end on other goroutines (the writer's command span
	// after its store commit, which the relay may publish first; the relay's
	// once its Kafka commit returned; the projection's batch span after its
	// apply spans), so the test waits for each span it checks.
	find := func(name string) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				out = append(out, s)
			}
		}
		return out
	}
	inTrace := func(name string) tracetest.SpanStub {
		for _, s := range find(name) {
			if s.SpanContext.TraceID() == traceID {
				return s
			}
		}
		return tracetest.SpanStub{}
	}
	var apply, command tracetest.SpanStub
	linked := false
	complete := func() bool {
		apply, command = inTrace(tracing.SpanProjectionApply), inTrace(tracing.SpanWriterCommand)
		linked = false
		for _, s := range find(tracing.SpanRelayTransaction) {
			for _, l := range s.Links {
				linked = linked || (command.Name != "" && l.SpanContext.SpanID() == command.SpanContext.SpanID())
			}
		}
		for _, name := range []string{tracing.SpanWriterBatch, tracing.SpanWriterDecide, tracing.SpanWriterCommit, tracing.SpanProjectionBatch, tracing.SpanProjectionTx} {
			if len(find(name)) == 0 {
				return false
			}
		}
		return apply.Name != "" && command.Name != "" && linked
	}
	for deadline := time.Now().Add(60 * time.Second); !complete(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			break // the checks below say what is missing
		}
	}
	if apply.Name == "" {
		t.Fatalf("no apply span of the command's trace within 60s; spans: %d", len(exp.GetSpans()))
	}
	if row, err := rm.Get(t.Context(), "example", id); err != nil || row.Version != 1 {
		t.Fatalf("read model once the apply span ended: %+v, %v", row, err)
	}

	switch {
	case command.Name == "":
		t.Fatal("no writer command span in the command's trace")
	case command.Parent.SpanID() != client.SpanContext().SpanID():
		t.Fatalf("the writer's command span's parent is %v, not the client's span", command.Parent.SpanID())
	case apply.Parent.SpanID() != command.SpanContext.SpanID():
		t.Fatalf("the apply span's parent is %v, not the writer's command span %v", apply.Parent.SpanID(), command.SpanContext.SpanID())
	case apply.Status.Code != 0 && apply.Status.Code != 1: // unset or ok
		t.Fatalf("apply span status %v", apply.Status)
	}
	outcome := ""
	for _, kv := range apply.Attributes {
		if kv.Key == tracing.KeyOutcome {
			outcome = kv.Value.AsString()
		}
	}
	if outcome != "applied" {
		t.Fatalf("apply span outcome %q", outcome)
	}
	// The relay's span links to the command's.
	if !linked {
		t.Fatal("no relay transaction span links to the command span")
	}
	for _, name := range []string{tracing.SpanWriterBatch, tracing.SpanWriterDecide, tracing.SpanWriterCommit, tracing.SpanProjectionBatch, tracing.SpanProjectionTx} {
		if len(find(name)) == 0 {
			t.Errorf("no %s span", name)
		}
	}

	// The event and the result records carry the command span's context.
	want := tracing.TraceParent(command.SpanContext)
	got := map[string]string{}
	cl, err := kgo.NewClient(append(k, kgo.ConsumeTopics("eventlog.events.example", "eventlog.command-results"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer fcancel()
	for len(got) < 2 && fctx.Err() == nil {
		cl.PollFetches(fctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == wire.HeaderTraceParent {
					got[r.Topic] = string(h.Value)
				}
			}
		})
	}
	if got["eventlog.events.example"] != want || got["eventlog.command-results"] != want {
		t.Fatalf("traceparent headers %v, want %s on the event and the result", got, want)
	}

	// kcat sees it on the event record.
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not installed; .ci/run installs it (apt-get install kcat)")
		}
		t.Skip("kcat is not installed (apt-get install kcat): the traceparent header was checked with franz-go only")
	}
	kctx, kcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer kcancel()
	out, err := exec.CommandContext(kctx, kcat, "-C", "-b", cluster.ListenAddrs()[0], "-t", "eventlog.events.example",
		"-e", "-q", "-X", "isolation.level=read_committed", "-f", "%k %h\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), id.String()+" ") || !strings.Contains(string(out), "traceparent="+want) {
		t.Fatalf("kcat does not show traceparent=%s on the event of %s:\n%s", want, id, out)
	}
}
