package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// refuse fails position 1 of one sequence while on.
type refuse struct {
	projection.PersistencePolicy
	id uuid.UUID
	on *atomic.Bool
}

func (p refuse) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	for i, it := range items {
		if it.SequenceID == p.id && it.Position == 1 && p.on.Load() {
			return &projection.ItemError{Index: i, Err: projection.Permanent(errors.New("attribute refused"))}
		}
	}
	return p.PersistencePolicy.Apply(ctx, tx, items)
}

func TestDeadLetterRoutes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	target := memory.New()
	id := uuid.New()
	var on atomic.Bool
	on.Store(true)
	r, err := projection.NewRunner(target, projection.Config{Name: "readmodel", Policy: refuse{id: id, on: &on}})
	if err != nil {
		t.Fatal(err)
	}
	var recs []wire.Record
	for p := range int64(4) {
		n := store.Notification{ID: p + 1, SequencedItem: store.SequencedItem{
			SequenceID: id, Position: p, Topic: "example.AttributeChanged", Codec: "json", State: []byte(`{"name":"foo","value":1}`)}}
		recs = append(recs, projection.RecordOf(n, "eventlog.events.example", 0, p))
	}
	if err := r.HandleBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}
	dl, err := projection.NewDeadLetters(r)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&httpapi.DeadLetters{Letters: dl}).Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	do := func(method, path, body string, want int, out any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			var e map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&e)
			t.Fatalf("%s %s: %d %v, want %d", method, path, resp.StatusCode, e, want)
		}
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	var list struct {
		Items []map[string]any `json:"items"`
	}
	do("GET", "/v1/dead-letters", "", 200, &list)
	if len(list.Items) != 1 || list.Items[0]["id"] != id.String() || list.Items[0]["first_position"] != 1.0 ||
		list.Items[0]["count"] != 3.0 || list.Items[0]["entity"] != "example" || !strings.Contains(list.Items[0]["reason"].(string), "refused") {
		t.Fatalf("list = %+v", list.Items)
	}
	for _, k := range []string{"projection", "last_position", "first_parked_at", "last_parked_at", "failed_retries"} {
		if _, ok := list.Items[0][k]; !ok {
			t.Errorf("list item has no %q", k)
		}
	}
	path := "/v1/dead-letters/readmodel/example/" + id.String()
	var det struct {
		Parked bool `json:"parked"`
		Events []struct {
			Position int64           `json:"position"`
			State    json.RawMessage `json:"state"`
			Record   *struct {
				Offset int64 `json:"offset"`
			} `json:"record"`
		} `json:"events"`
	}
	do("GET", path, "", 200, &det)
	if !det.Parked || len(det.Events) != 3 || det.Events[0].Position != 1 || det.Events[0].Record == nil || det.Events[0].Record.Offset != 1 || len(det.Events[2].State) == 0 {
		t.Fatalf("show = %+v", det)
	}
	do("GET", "/v1/dead-letters/readmodel/customer/"+id.String(), "", 404, nil)
	do("GET", "/v1/dead-letters/nosuch/example/"+id.String(), "", 404, nil)
	do("GET", "/v1/dead-letters/readmodel/example/not-a-uuid", "", 400, nil)
	do("GET", "/v1/dead-letters?limit=0", "", 400, nil)
	do("POST", path+"/skip", `{"reason": ""}`, 400, nil)
	do("POST", path+"/skip", `not json`, 400, nil)

	// Still failing: the retry parks again, with the reason.
	var res map[string]any
	do("POST", path+"/retry", "", 200, &res)
	if res["parked"] != true || res["parked_from"] != 1.0 || res["applied"] != 0.0 {
		t.Fatalf("failed retry = %+v", res)
	}
	on.Store(false)
	var all2 struct {
		Results []map[string]any `json:"results"`
	}
	do("POST", "/v1/dead-letters/retry", "", 200, &all2)
	if len(all2.Results) != 1 || all2.Results[0]["applied"] != 3.0 || all2.Results[0]["parked"] != false {
		t.Fatalf("retry all = %+v", all2.Results)
	}
	do("POST", path+"/retry", "", 404, nil)
	do("POST", path+"/skip", `{"reason": "late"}`, 404, nil)
	var after struct {
		Parked  bool `json:"parked"`
		Actions []struct {
			Action string `json:"action"`
		} `json:"actions"`
	}
	do("GET", path, "", 200, &after)
	if after.Parked || len(after.Actions) != 2 || after.Actions[0].Action != "retry_failed" || after.Actions[1].Action != "retried" {
		t.Fatalf("show after the retries = %+v", after)
	}
}
