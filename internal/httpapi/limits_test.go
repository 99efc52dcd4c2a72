package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/wire"
)

type acceptAll struct{ sent int }

func (a *acceptAll) Send(_ context.Context, cmd wire.Command) (wire.Result, error) {
	a.sent++
	return wire.Result{CommandID: cmd.CommandID, Entity: cmd.Entity, EntityID: cmd.EntityID, Status: wire.StatusAccepted, Version: 1}, nil
}

func post(t *testing.T, h http.Handler, body []byte) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/commands", bytes.NewReader(body)))
	return rec.Code, rec.Body.String()
}

// POST /v1/commands reads at most MaxBodySize bytes: a larger body is refused
// with 413 and never reaches Kafka; a body at the limit is read.
func TestPostCommandBodyLimit(t *testing.T) {
	sender := &acceptAll{}
	h := (&httpapi.Server{Log: slog.New(slog.DiscardHandler), Commands: sender}).Handler()
	envelope := func(valueLen int) []byte {
		b, _ := json.Marshal(map[string]any{
			"command_id": uuid.New(), "type": "create", "entity": "example", "entity_id": uuid.New(),
			"data": map[string]string{"big": strings.Repeat("x", valueLen)},
		})
		return b
	}
	small := envelope(10)
	if code, body := post(t, h, small); code != http.StatusOK || sender.sent != 1 {
		t.Fatalf("a small command: %d %s", code, body)
	}
	atLimit := envelope(httpapi.MaxBodySize - len(small) + 10)
	if len(atLimit) != httpapi.MaxBodySize {
		t.Fatalf("test envelope is %d bytes, want %d", len(atLimit), httpapi.MaxBodySize)
	}
	if code, body := post(t, h, atLimit); code != http.StatusOK || sender.sent != 2 {
		t.Fatalf("a command of exactly MaxBodySize: %d %s", code, body)
	}
	code, body := post(t, h, envelope(httpapi.MaxBodySize))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "more than the limit of 1048576 bytes") || sender.sent != 2 {
		t.Fatalf("a command over MaxBodySize: %d %s (sent %d)", code, body, sender.sent)
	}
	// An endless body is cut off, not read to the end.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/commands", io.MultiReader(strings.NewReader(`{"data":"`), endless{})))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("an endless body: %d %s", rec.Code, rec.Body)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// The servers' http.Server has every timeout set, so a slow or idle client
// cannot hold a connection for ever, and bounds header size.
func TestNewHTTPServerTimeouts(t *testing.T) {
	srv := httpapi.NewHTTPServer("127.0.0.1:0", http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("timeouts: header %s, read %s, write %s, idle %s; want all set",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	if srv.ReadHeaderTimeout > srv.ReadTimeout || srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 1<<20 {
		t.Fatalf("header timeout %s, read timeout %s, max header bytes %d", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.MaxHeaderBytes)
	}
}

// A create may leave command_id and entity_id out: the server makes them. An
// update may not leave entity_id out.
func TestPostCommandFillsIDs(t *testing.T) {
	sender := &acceptAll{}
	h := (&httpapi.Server{Log: slog.New(slog.DiscardHandler), Commands: sender}).Handler()
	code, body := post(t, h, []byte(`{"type":"create","entity":"example","data":{"foo":"bar"}}`))
	var res wire.Result
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != http.StatusOK || res.CommandID == uuid.Nil || res.EntityID == uuid.Nil {
		t.Fatalf("a create without ids: %d %s", code, body)
	}
	code, body = post(t, h, []byte(`{"type":"update","entity":"example","data":{"foo":"bar"}}`))
	if code != http.StatusBadRequest || !strings.Contains(body, "entity_id is missing") {
		t.Fatalf("an update without entity_id: %d %s", code, body)
	}
}
