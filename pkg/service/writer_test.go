package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startBroker starts an in-process Kafka-protocol broker.
func startBroker(t testing.TB) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
}

func sqliteBackend(t *testing.T) service.Backend {
	t.Helper()
	rec, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "eventlog.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	return service.Backend{Recorder: rec, Snapshots: rec, Locker: kafka.NewLocalLock(), Name: "sqlite"}
}

type api struct {
	t   *testing.T
	url string
}

func (a api) do(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.url+path, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (a api) command(typ string, id uuid.UUID, data any) map[string]any {
	a.t.Helper()
	body := map[string]any{"type": typ, "entity": "example", "entity_id": id}
	if data != nil {
		body["data"] = data
	}
	_, res := a.do("POST", "/v1/commands", body)
	return res
}

// runWriter starts a writer service and an HTTP server for its API.
func runWriter(t *testing.T, b service.Backend, k []kgo.Opt, tune ...func(*service.WriterConfig)) api {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := service.WriterConfig{
		Backend: b, Kafka: service.Kafka{ClientOptions: k, Topics: wire.Topics{Prefix: "eventlog"}, Partitions: 4, ReplicationFactor: -1},
		Entities: []string{"example"}, Log: quietLog(),
	}
	for _, f := range tune {
		f(&cfg)
	}
	w, err := service.NewWriter(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	})
	s := &httpapi.Server{Log: quietLog()}
	w.API(s)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return api{t: t, url: srv.URL}
}

// The stand-alone example, end to end through Kafka: create, update, get, time
// travel, discard, and the entity is gone; also with a session timeout below
// franz-go's heartbeat default.
func TestSeedScenarioThroughKafka(t *testing.T) {
	t.Run("default", func(t *testing.T) { seedScenario(t) })
	t.Run("short-session", func(t *testing.T) {
		seedScenario(t, func(c *service.WriterConfig) { c.SessionTimeout = 6 * time.Second })
	})
}

func seedScenario(t *testing.T, tune ...func(*service.WriterConfig)) {
	k := startBroker(t)
	a := runWriter(t, sqliteBackend(t), k, tune...)
	id := uuid.New()

	res := a.command("create", id, map[string]any{"foo": "bar"})
	if res["status"] != "accepted" || res["version"] != 1.0 || fmt.Sprint(res["positions"]) != "[0]" {
		t.Fatalf("create: %v", res)
	}
	res = a.command("update", id, map[string]any{"foo": "baz"})
	if res["status"] != "accepted" || res["version"] != 2.0 {
		t.Fatalf("update: %v", res)
	}
	code, ent := a.do("GET", "/v1/entities/example/"+id.String(), nil)
	if code != 200 || ent["version"] != 2.0 || ent["attributes"].(map[string]any)["foo"] != "baz" {
		t.Fatalf("get: %d %v", code, ent)
	}
	code, ent = a.do("GET", "/v1/entities/example/"+id.String()+"?version=1", nil)
	if code != 200 || ent["attributes"].(map[string]any)["foo"] != "bar" {
		t.Fatalf("time travel: %d %v", code, ent)
	}
	code, evs := a.do("GET", "/v1/entities/example/"+id.String()+"/events", nil)
	if code != 200 || len(evs["events"].([]any)) != 2 {
		t.Fatalf("events: %d %v", code, evs)
	}
	if res = a.command("discard", id, nil); res["status"] != "accepted" || res["version"] != 3.0 {
		t.Fatalf("discard: %v", res)
	}
	if code, _ = a.do("GET", "/v1/entities/example/"+id.String(), nil); code != 404 {
		t.Fatalf("discarded entity: %d", code)
	}
	if res = a.command("update", id, map[string]any{"foo": "x"}); res["status"] != "rejected" {
		t.Fatalf("update after discard: %v", res)
	}
	if code, _ = a.do("GET", "/v1/entities/example/"+uuid.NewString(), nil); code != 404 {
		t.Fatalf("unknown entity: %d", code)
	}
	if code, _ = a.do("GET", "/v1/entities/example/not-a-uuid", nil); code != 400 {
		t.Fatalf("bad id: %d", code)
	}
	code, ns := a.do("GET", "/v1/notifications?after=0&limit=100", nil)
	if code != 200 || len(ns["notifications"].([]any)) < 3 {
		t.Fatalf("notifications: %d %v", code, ns)
	}

	// The events reached Kafka, keyed by the entity id, in position order, as
	// plain JSON any client can read.
	cl, err := kgo.NewClient(append(k, kgo.ConsumeTopics("eventlog.events.example"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < 3 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	if len(got) != 3 {
		t.Fatalf("got %d event records", len(got))
	}
	for i, r := range got {
		pos := ""
		for _, h := range r.Headers {
			if h.Key == wire.HeaderPosition {
				pos = string(h.Value)
			}
		}
		if string(r.Key) != id.String() || pos != fmt.Sprint(i) || !json.Valid(r.Value) {
			t.Fatalf("record %d: key %s position %s value %s", i, r.Key, pos, r.Value)
		}
	}
}
