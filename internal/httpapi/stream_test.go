package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// streamAPI is an HTTP server with the entity routes over a memory store.
type streamAPI struct {
	rec store.ApplicationRecorder
	api *httpapi.Server
	srv *httptest.Server
}

// newStreamAPI serves the API through the services' http.Server, its
// timeouts shortened, so that a stream must outlive them.
func newStreamAPI(t testing.TB, cfg httpapi.StreamConfig) *streamAPI {
	t.Helper()
	return newStreamAPIOn(t, memory.New(), cfg)
}

// newStreamAPIOn serves the API over rec.
func newStreamAPIOn(t testing.TB, rec store.ApplicationRecorder, cfg httpapi.StreamConfig) *streamAPI {
	t.Helper()
	reg, err := service.GenericDomain("example", "other").Events()
	if err != nil {
		t.Fatal(err)
	}
	es := store.NewEventStore(events.NewMapper(reg), rec)
	ents, err := service.GenericDomain("example", "other").EntitiesAPI(es, rec, store.RepositoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	api := &httpapi.Server{Log: log, Entities: ents, Streams: cfg}
	ts := httptest.NewUnstartedServer(api.Handler())
	ts.Config = httpapi.NewHTTPServer("", api.Handler(), log)
	ts.Config.ReadTimeout, ts.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	ts.Config.RegisterOnShutdown(api.CloseStreams)
	ts.Start()
	t.Cleanup(ts.Close)
	return &streamAPI{rec: rec, api: api, srv: ts}
}

// appendEvents appends n events to entity id of type typ, from position
// from; the first of an entity is its Created event.
func (a *streamAPI) appendEvents(t testing.TB, typ string, id uuid.UUID, from, n int, value string) {
	t.Helper()
	items := make([]store.SequencedItem, n)
	for i := range items {
		pos := int64(from + i)
		topic, state := typ+".AttributeChanged", fmt.Sprintf(`{"originator_id":%q,"originator_version":%d,"name":"n","value":%q}`, id, pos, value+strconv.FormatInt(pos, 10))
		if pos == 0 {
			topic, state = typ+".Created", fmt.Sprintf(`{"originator_id":%q,"originator_version":0,"attributes":{"n":"0"}}`, id)
		}
		items[i] = store.SequencedItem{SequenceID: id, Position: pos, Topic: topic, Codec: events.CodecJSON, State: []byte(state)}
	}
	if _, err := a.rec.InsertEvents(t.Context(), items); err != nil {
		t.Fatal(err)
	}
}

// until waits for cond, then fails naming what did not happen.
func until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet: " + what)
	})
}

// sse is one event read from a stream.
type sse struct {
	ID, Event string
	Data      string
}

func (e sse) decode(t testing.TB) httpapi.EventJSON {
	t.Helper()
	var ej httpapi.EventJSON
	if err := json.Unmarshal([]byte(e.Data), &ej); err != nil {
		t.Fatalf("event %q: %v", e.Data, err)
	}
	return ej
}

// sseReader reads a text/event-stream.
type sseReader struct {
	resp *http.Response
	r    *bufio.Reader
}

func (a *streamAPI) open(t testing.TB, path, lastEventID string) *sseReader {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", a.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s %s", path, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	return &sseReader{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event, skipping comments; io.EOF when the stream
// ends.
func (s *sseReader) next(t testing.TB) (sse, error) {
	t.Helper()
	var e sse
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return e, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.Event != "" {
				return e, nil
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			e.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.Data += line[6:]
		default:
			t.Fatalf("not an event-stream line: %q", line)
		}
	}
}

// take reads n events with a deadline.
func (s *sseReader) take(t testing.TB, n int) []sse {
	t.Helper()
	got := make(chan []sse, 1)
	errc := make(chan error, 1)
	go func() {
		var out []sse
		for len(out) < n {
			e, err := s.next(t)
			if err != nil {
				errc <- fmt.Errorf("after %d of %d events: %w", len(out), n, err)
				return
			}
			out = append(out, e)
		}
		got <- out
	}()
	select {
	case out := <-got:
		return out
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatalf("fewer than %d events within 20s", n)
	}
	return nil
}

// A stream sends what the store holds, then what commits later, past the
// server's read and write timeouts; the entity stream only that entity's.
func TestStreamCatchUpThenLive(t *testing.T) {
	a := newStreamAPI(t, httpapi.StreamConfig{})
	id, other := uuid.New(), uuid.New()
	a.appendEvents(t, "example", id, 0, 3, "v")
	a.appendEvents(t, "other", other, 0, 1, "o")

	log := a.open(t, "/v1/notifications/stream", "")
	one := a.open(t, "/v1/entities/example/"+id.String()+"/stream", "")
	typed := a.open(t, "/v1/notifications/stream?entity=other", "")
	got := log.take(t, 4)
	for i, e := range got {
		ej := e.decode(t)
		if e.Event != "notification" || e.ID != strconv.Itoa(i+1) || ej.NotificationID != int64(i+1) {
			t.Fatalf("notification %d: %+v", i, e)
		}
	}
	for i, e := range one.take(t, 3) {
		if ej := e.decode(t); e.Event != "event" || e.ID != strconv.Itoa(i) || ej.Position != int64(i) || ej.SequenceID != id {
			t.Fatalf("entity event %d: %+v", i, e)
		}
	}
	if e := typed.take(t, 1)[0]; e.decode(t).SequenceID != other || e.ID != "4" {
		t.Fatalf("the stream of type other: %+v", e)
	}

	time.Sleep(300 * time.Millisecond) // past the server's timeouts
	a.appendEvents(t, "other", other, 1, 1, "o")
	a.appendEvents(t, "example", id, 3, 2, "live")
	for i, e := range log.take(t, 3) {
		if e.ID != strconv.Itoa(5+i) {
			t.Fatalf("live notification %d: %+v", i, e)
		}
	}
	live := one.take(t, 2)
	if ej := live[1].decode(t); live[0].ID != "3" || live[1].ID != "4" || !strings.Contains(string(ej.State), `"live4"`) {
		t.Fatalf("live entity events: %+v", live)
	}
	if e := typed.take(t, 1)[0]; e.ID != "5" {
		t.Fatalf("live event of type other: %+v", e)
	}
}

// A client that reconnects with Last-Event-ID goes on where it stopped:
// nothing missed, nothing twice. after=end starts at the end.
func TestStreamResumesWithLastEventID(t *testing.T) {
	a := newStreamAPI(t, httpapi.StreamConfig{})
	id := uuid.New()
	a.appendEvents(t, "example", id, 0, 5, "v")

	first := a.open(t, "/v1/notifications/stream", "").take(t, 2)
	// The header wins over the query, as EventSource reconnects to the
	// same URL.
	rest := a.open(t, "/v1/notifications/stream?after=0", first[1].ID).take(t, 3)
	if rest[0].ID != "3" || rest[2].ID != "5" {
		t.Fatalf("resumed after %s: %+v", first[1].ID, rest)
	}
	ent := a.open(t, "/v1/entities/example/"+id.String()+"/stream", "2").take(t, 2)
	if ent[0].ID != "3" || ent[1].ID != "4" {
		t.Fatalf("entity stream resumed after position 2: %+v", ent)
	}
	if e := a.open(t, "/v1/entities/example/"+id.String()+"/stream?after=3", "").take(t, 1)[0]; e.ID != "4" {
		t.Fatalf("entity stream after=3: %+v", e)
	}

	end := a.open(t, "/v1/notifications/stream?after=end", "")
	a.appendEvents(t, "example", id, 5, 1, "new")
	if e := end.take(t, 1)[0]; e.ID != "6" {
		t.Fatalf("after=end: %+v", e)
	}

	for path, want := range map[string]int{
		"/v1/notifications/stream?after=x":                         http.StatusBadRequest,
		"/v1/notifications/stream?entity=nope":                     http.StatusNotFound,
		"/v1/entities/example/" + uuid.NewString() + "/stream":     http.StatusNotFound,
		"/v1/entities/other/" + id.String() + "/stream":            http.StatusNotFound,
		"/v1/entities/example/" + id.String() + "/stream?after=-2": http.StatusBadRequest,
	} {
		resp, err := a.srv.Client().Get(a.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
	}
}

// A client that stops reading is dropped once its buffer stays full: the
// stream ends with a "dropped" event naming the last id sent, and the client
// resumes from it with everything, once. The server holds no more than
// Buffer events for it.
func TestStreamDropsSlowClient(t *testing.T) {
	a := newStreamAPI(t, httpapi.StreamConfig{Buffer: 4, SlowTimeout: 100 * time.Millisecond, WriteTimeout: time.Minute})
	const n = 600 // 24 MB: more than the sockets' buffers hold
	big := strings.Repeat("x", 40<<10)
	id := uuid.New()
	for i := 0; i < n; i += 100 {
		a.appendEvents(t, "example", id, i, 100, big)
	}
	s := a.open(t, "/v1/notifications/stream", "")
	until(t, 20*time.Second, "the slow client is dropped", func() bool { return a.api.StreamStats().Dropped == 1 })

	var got []sse
	for {
		e, err := s.next(t)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	last := got[len(got)-1]
	got = got[:len(got)-1]
	var dropped struct {
		Reason      string `json:"reason"`
		LastEventID string `json:"last_event_id"`
	}
	if err := json.Unmarshal([]byte(last.Data), &dropped); err != nil || last.Event != "dropped" || last.ID != "" ||
		dropped.LastEventID != got[len(got)-1].ID || !strings.Contains(dropped.Reason, "Last-Event-ID") {
		t.Fatalf("the stream ended with %+v after %d events", last, len(got))
	}
	if len(got) >= n {
		t.Fatalf("every event reached the client that did not read: the drop came too late (%d)", len(got))
	}
	t.Logf("dropped after %d of %d events: %s", len(got), n, dropped.Reason)

	rest := a.open(t, "/v1/notifications/stream", dropped.LastEventID).take(t, n-len(got))
	all := append(got, rest...)
	for i, e := range all {
		if e.ID != strconv.Itoa(i+1) || e.Event != "notification" {
			t.Fatalf("event %d after the resume is %+v", i, e)
		}
	}
	until(t, 10*time.Second, "one stream open", func() bool { return a.api.StreamStats().Open == 1 })
}

// A client that never reads again is disconnected after WriteTimeout, and
// MaxStreams bounds the streams open at once.
func TestStreamStalledClientAndLimit(t *testing.T) {
	a := newStreamAPI(t, httpapi.StreamConfig{Buffer: 2, SlowTimeout: 50 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxStreams: 1})
	id := uuid.New()
	big := strings.Repeat("y", 40<<10)
	for i := 0; i < 600; i += 100 {
		a.appendEvents(t, "example", id, i, 100, big)
	}
	// A raw connection that sends the request and reads nothing.
	c, err := net.Dial("tcp", a.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET /v1/notifications/stream HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	until(t, 10*time.Second, "the stream is open", func() bool { return a.api.StreamStats().Open == 1 })
	resp, err := a.srv.Client().Get(a.srv.URL + "/v1/notifications/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "1 live streams are open") {
		t.Fatalf("a stream past MaxStreams: %s %s", resp.Status, b)
	}
	until(t, 20*time.Second, "the stalled client is disconnected", func() bool { return a.api.StreamStats().Open == 0 })
	if st := a.api.StreamStats(); st.Dropped != 1 || st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Shutting down ends the streams with an "end" event, so that the server's
// Shutdown does not wait for them.
func TestStreamEndsOnShutdown(t *testing.T) {
	a := newStreamAPI(t, httpapi.StreamConfig{})
	id := uuid.New()
	a.appendEvents(t, "example", id, 0, 1, "v")
	s := a.open(t, "/v1/entities/example/"+id.String()+"/stream", "")
	s.take(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Config.Shutdown(ctx) }()
	e := s.take(t, 1)[0]
	if e.Event != "end" || !strings.Contains(e.Data, `"last_event_id":"0"`) {
		t.Fatalf("the stream ended with %+v", e)
	}
	if err := <-errc; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// A forgotten entity's stream is 410 Gone; one that is forgotten while it
// is followed ends with its tombstone and a "forgotten" event.
func TestStreamForgotten(t *testing.T) {
	a := newStreamAPI(t, httpapi.StreamConfig{})
	id := uuid.New()
	a.appendEvents(t, "example", id, 0, 1, "v")
	s := a.open(t, "/v1/entities/example/"+id.String()+"/stream", "")
	s.take(t, 1)
	tomb := store.SequencedItem{SequenceID: id, Position: 1, Topic: events.ForgottenTopic("example"), Codec: events.CodecJSON, State: []byte(`{}`)}
	if _, err := a.rec.InsertEvents(t.Context(), []store.SequencedItem{tomb}); err != nil {
		t.Fatal(err)
	}
	got := s.take(t, 2)
	if got[0].ID != "1" || got[1].Event != "forgotten" || !strings.Contains(got[1].Data, "was forgotten") {
		t.Fatalf("a forgotten entity's stream ended with %+v", got)
	}
	resp, err := a.srv.Client().Get(a.srv.URL + "/v1/entities/example/" + id.String() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("the stream of a forgotten entity: %s", resp.Status)
	}
}
