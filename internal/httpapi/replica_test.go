package httpapi_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// replicaAPI serves the entity routes with the entities read from a second
// store, standing for a replica of the first that the test keeps behind.
func replicaAPI(t *testing.T, wait time.Duration) (primary, replica *streamAPI, url string) {
	t.Helper()
	primaryRec, replicaRec := memory.New(), memory.New()
	d := service.GenericDomain("example")
	reg, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	ents, err := d.EntitiesAPI(store.NewEventStore(events.NewMapper(reg), replicaRec), primaryRec, store.RepositoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ents.Reads, ents.MinVersionWait = replicaRec, wait
	api := &httpapi.Server{Log: slog.New(slog.DiscardHandler), Entities: ents}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return &streamAPI{rec: primaryRec}, &streamAPI{rec: replicaRec}, srv.URL
}

func getStatus(t *testing.T, url string) (int, http.Header, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, resp.Header, body
}

// Entities and their events are read where Entities.Reads says; the
// notification log stays on the primary.
func TestEntitiesReadFromReplica(t *testing.T) {
	primary, replica, url := replicaAPI(t, time.Second)
	onlyPrimary, onlyReplica := uuid.New(), uuid.New()
	primary.appendEvents(t, "example", onlyPrimary, 0, 2, "p")
	replica.appendEvents(t, "example", onlyReplica, 0, 3, "r")
	if code, _, body := getStatus(t, url+"/v1/entities/example/"+onlyReplica.String()); code != http.StatusOK || body["version"] != 3.0 {
		t.Fatalf("entity stored on the replica: %d %v, want 200 at version 3", code, body)
	}
	if code, _, _ := getStatus(t, url+"/v1/entities/example/"+onlyPrimary.String()); code != http.StatusNotFound {
		t.Fatalf("entity stored on the primary only: %d, want 404 (read from the replica)", code)
	}
	if code, _, body := getStatus(t, url+"/v1/entities/example/"+onlyReplica.String()+"/events"); code != http.StatusOK || len(body["events"].([]any)) != 3 {
		t.Fatalf("events of the entity on the replica: %d %v", code, body)
	}
	code, _, body := getStatus(t, url+"/v1/notifications")
	if ns, _ := body["notifications"].([]any); code != http.StatusOK || len(ns) != 2 {
		t.Fatalf("notifications: %d, %d items; want the primary's 2", code, len(ns))
	}
}

// ?min_version=N waits for the replica to reach version N, and answers 503
// with Retry-After if it does not within the wait.
func TestMinVersionWaitsForReplica(t *testing.T) {
	primary, replica, url := replicaAPI(t, 300*time.Millisecond)
	id := uuid.New()
	primary.appendEvents(t, "example", id, 0, 3, "v")
	replica.appendEvents(t, "example", id, 0, 1, "v")
	entity := url + "/v1/entities/example/" + id.String()

	t0 := time.Now()
	code, h, body := getStatus(t, entity+"?min_version=3")
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body["error"].(string), "version 3") {
		t.Fatalf("replica at version 1, min_version=3: %d Retry-After %q %v; want 503 with Retry-After", code, h.Get("Retry-After"), body)
	}
	if d := time.Since(t0); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the 503 came after %s, want after the 300ms wait", d)
	}
	if code, _, body := getStatus(t, entity+"?min_version=1"); code != http.StatusOK || body["version"] != 1.0 {
		t.Fatalf("min_version=1, reached: %d %v", code, body)
	}
	// The replica catches up during the wait.
	go func() {
		time.Sleep(100 * time.Millisecond)
		replica.appendEvents(t, "example", id, 1, 2, "v")
	}()
	if code, _, body := getStatus(t, entity+"?min_version=3"); code != http.StatusOK || body["version"] != 3.0 {
		t.Fatalf("min_version=3, reached during the wait: %d %v", code, body)
	}
	if code, _, body := getStatus(t, entity+"/events?min_version=3"); code != http.StatusOK || len(body["events"].([]any)) != 3 {
		t.Fatalf("events?min_version=3: %d %v", code, body)
	}
	// An entity not on the replica yet waits too.
	if code, _, _ := getStatus(t, url+"/v1/entities/example/"+uuid.NewString()+"?min_version=1"); code != http.StatusServiceUnavailable {
		t.Fatalf("unknown entity, min_version=1: %d, want 503", code)
	}
	for _, bad := range []string{"0", "-1", "x"} {
		if code, _, _ := getStatus(t, entity+"?min_version="+bad); code != http.StatusBadRequest {
			t.Errorf("min_version=%s: %d, want 400", bad, code)
		}
	}
}
