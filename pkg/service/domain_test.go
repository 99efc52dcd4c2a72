package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/sqlmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

type counter struct {
	events.Aggregate
	N int64 `json:"n"`
}

type added struct {
	events.Meta
	By int64 `json:"by"`
}

func (c *counter) Mutate(e events.Event) error {
	switch e := e.(type) {
	case *added:
		c.N += e.By
	default:
		return fmt.Errorf("counter: unexpected event %T", e)
	}
	return nil
}

func counterAggregate(typ string) service.Aggregate[*counter] {
	return service.Aggregate[*counter]{
		Type:   typ,
		New:    func() *counter { return &counter{} },
		Events: map[string]func() events.Event{"Added": func() events.Event { return &added{} }},
		Commands: map[string]command.Handler[*counter]{
			"add": func(_ context.Context, c *counter, cmd wire.Command) error {
				e := &added{By: 1}
				e.OriginatorID = cmd.EntityID
				return events.Trigger(c, e)
			},
		},
	}
}

func readModel(name string, tables []string, entities ...string) service.ReadModel {
	return service.ReadModel{Model: sqlmodel.Model{
		Name: name, Entities: entities, Tables: tables,
		Schema: func(d sqlmodel.Dialect, n sqlmodel.Names) []string {
			var out []string
			for _, t := range tables {
				out = append(out, "CREATE TABLE "+n.Table(t)+" (id TEXT PRIMARY KEY)")
			}
			return out
		},
		Apply: func(context.Context, *sqlmodel.Tx, []projection.Item) error { return nil },
	}}
}

// A domain registered wrong fails Validate with one line naming the
// mistake.
func TestDomainMistakes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(d *service.Domain)
		says  string
	}{
		{"type twice", func(d *service.Domain) {
			_ = service.AddAggregate(d, counterAggregate("counter"))
			_ = d.AddEntity("counter")
		}, `entity type "counter" registered twice`},
		{"no handler", func(d *service.Domain) {
			a := counterAggregate("counter")
			a.Commands["reset"] = nil
			_ = service.AddAggregate(d, a)
		}, `command "reset" has no handler`},
		{"no events", func(d *service.Domain) {
			a := counterAggregate("counter")
			a.Events = nil
			_ = service.AddAggregate(d, a)
		}, `registers no events`},
		{"read model of nobody's type", func(d *service.Domain) {
			_ = service.AddAggregate(d, counterAggregate("counter"))
			_ = d.AddReadModel(readModel("totals", []string{"totals"}, "countr"))
		}, `read model "totals" reads entity type "countr", which nobody registered`},
		{"table claimed twice", func(d *service.Domain) {
			_ = service.AddAggregate(d, counterAggregate("counter"))
			_ = d.AddReadModel(readModel("totals", []string{"totals"}, "counter"))
			_ = d.AddProcess(readModel("other", []string{"totals"}, "counter"))
		}, `read models "totals" and "other" both claim the table "totals"`},
		{"built-in name", func(d *service.Domain) {
			_ = service.AddAggregate(d, counterAggregate("counter"))
			_ = d.AddReadModel(readModel("readmodel", nil, "counter"))
		}, `projection name "readmodel" is taken`},
		{"upcaster of no event", func(d *service.Domain) {
			a := counterAggregate("counter")
			a.Upcasters = map[string][]events.Upcaster{"Removed": {func(map[string]any) error { return nil }}}
			_ = service.AddAggregate(d, a)
		}, `upcasters of event "Removed"`},
		{"empty", func(d *service.Domain) {}, "no entity type"},
	} {
		d := service.NewDomain()
		tc.build(d)
		err := d.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Validate = %v, want one line saying %q", tc.name, err, tc.says)
		}
	}
	d := service.NewDomain()
	_ = service.AddAggregate(d, counterAggregate("counter"))
	_ = d.AddEntity("example")
	_ = d.AddReadModel(readModel("totals", []string{"totals"}, "counter", "example"))
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := d.EntityTypes(); fmt.Sprint(got) != "[counter example]" {
		t.Errorf("EntityTypes = %v", got)
	}
}

// The entity API shows an aggregate's state and a generic entity's
// attributes, and says what is wrong with a request.
func TestEntityAPI(t *testing.T) {
	ctx := context.Background()
	d := service.NewDomain()
	_ = service.AddAggregate(d, counterAggregate("counter"))
	_ = d.AddEntity("example")
	reg, err := d.Registry(entity.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	rec := memory.New()
	mapper := events.NewMapper(reg.Events())
	w, err := command.NewWriter(rec, reg, mapper, command.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c, e := uuid.New(), uuid.New()
	var recs []wire.Record
	for i, cmd := range []wire.Command{
		{Type: "add", Entity: "counter", EntityID: c}, {Type: "add", Entity: "counter", EntityID: c},
		{Type: "create", Entity: "example", EntityID: e, Data: json.RawMessage(`{"foo":"bar"}`)},
	} {
		cmd.CommandID = uuid.New()
		b, _ := json.Marshal(cmd)
		recs = append(recs, wire.Record{Topic: "eventlog.commands", Offset: int64(i), Value: b})
	}
	if err := w.HandleBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []store.RepositoryConfig{{}, {CacheSize: 16}} {
		api, err := d.EntitiesAPI(store.NewEventStore(mapper, rec), rec, cfg)
		if err != nil {
			t.Fatal(err)
		}
		entityRoutes(t, (&httpapi.Server{Entities: api}).Handler(), c, e)
	}
}

func entityRoutes(t *testing.T, h http.Handler, c, e uuid.UUID) {
	t.Helper()
	// Twice: the second time from the cache, with the same answers.
	for range 2 {
		for _, tc := range []struct {
			path string
			code int
			says string
		}{
			{"/v1/entities/counter/" + c.String(), 200, `"version":2,"state":{"n":2}`},
			{"/v1/entities/counter/" + c.String() + "?version=1", 200, `"version":1,"state":{"n":1}`},
			{"/v1/entities/counter/" + c.String() + "?version=99", 404, "is at version 2, not 99"},
			{"/v1/entities/example/" + e.String(), 200, `"attributes":{"foo":"bar"}`},
			{"/v1/entities/example/" + c.String(), 404, "not found"},
			{"/v1/entities/counter/" + e.String(), 404, "not found"},
			{"/v1/entities/counter/" + uuid.NewString(), 404, "not found"},
			{"/v1/entities/counter/not-a-uuid", 400, `entity id \"not-a-uuid\" is not a UUID: invalid UUID length: 10`},
			{"/v1/entities/nothing/" + c.String(), 404, `unknown entity type \"nothing\"`},
		} {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rr.Code != tc.code || !strings.Contains(rr.Body.String(), tc.says) {
				t.Errorf("GET %s = %d %s, want %d saying %s", tc.path, rr.Code, rr.Body, tc.code, tc.says)
			}
		}
	}
}

// A read that starts after a write committed shows it, with the entity
// API's cache as without, while other readers read the same entity; a
// discarded entity is gone at once.
func TestEntityAPIReadsItsWrites(t *testing.T) {
	ctx := context.Background()
	d := service.NewDomain()
	_ = service.AddAggregate(d, counterAggregate("counter"))
	_ = d.AddEntity("example")
	reg, err := d.Registry(entity.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []store.RepositoryConfig{{}, {CacheSize: 2}} {
		rec := memory.New()
		mapper := events.NewMapper(reg.Events())
		w, err := command.NewWriter(rec, reg, mapper, command.WriterConfig{})
		if err != nil {
			t.Fatal(err)
		}
		api, err := d.EntitiesAPI(store.NewEventStore(mapper, rec), rec, cfg)
		if err != nil {
			t.Fatal(err)
		}
		offset := int64(0)
		send := func(cmd wire.Command) {
			t.Helper()
			cmd.CommandID = uuid.New()
			b, _ := json.Marshal(cmd)
			if err := w.HandleBatch(ctx, []wire.Record{{Topic: "eventlog.commands", Offset: offset, Value: b}}); err != nil {
				t.Fatal(err)
			}
			offset++
		}
		read := func(typ string, id uuid.UUID, version int64) (service.EntityView, error) {
			v, err := api.Loaders[typ](ctx, id, version)
			if err != nil {
				return service.EntityView{}, err
			}
			return v.(service.EntityView), nil
		}
		c, e := uuid.New(), uuid.New()
		others := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()} // to push c out of a small cache
		send(wire.Command{Type: "create", Entity: "example", EntityID: e, Data: json.RawMessage(`{"n":0}`)})
		stop := make(chan struct{})
		done := make(chan error)
		go func() { // a reader of the same entity, meanwhile
			var last int64
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				v, err := read("counter", c, 0)
				if err != nil {
					continue // not created yet
				}
				if v.Version < last {
					done <- fmt.Errorf("read version %d after %d", v.Version, last)
					return
				}
				last = v.Version
			}
		}()
		for i := int64(1); i <= 50; i++ {
			send(wire.Command{Type: "add", Entity: "counter", EntityID: c})
			v, err := read("counter", c, 0)
			if err != nil || v.Version != i || string(v.State) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("cache %d: read after write %d: %+v, %v", cfg.CacheSize, i, v, err)
			}
			if v, err := read("counter", c, i-1); i > 1 && (err != nil || v.Version != i-1) {
				t.Fatalf("cache %d: version %d after write %d: %+v, %v", cfg.CacheSize, i-1, i, v, err)
			}
			send(wire.Command{Type: "update", Entity: "example", EntityID: e, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
			if v, err := read("example", e, 0); err != nil || v.Version != i+1 || string(v.Attributes["n"]) != fmt.Sprint(i) {
				t.Fatalf("cache %d: read after update %d: %+v, %v", cfg.CacheSize, i, v, err)
			}
			if i%10 == 0 {
				for _, o := range others {
					send(wire.Command{Type: "add", Entity: "counter", EntityID: o})
					_, _ = read("counter", o, 0)
				}
			}
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatalf("cache %d: %v", cfg.CacheSize, err)
		}
		// The id of an example is not a counter, however often asked.
		for range 2 {
			if _, err := read("counter", e, 0); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("cache %d: an example read as a counter: %v", cfg.CacheSize, err)
			}
		}
		send(wire.Command{Type: "discard", Entity: "example", EntityID: e})
		if v, err := read("example", e, 0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("cache %d: read after discard: %+v, %v", cfg.CacheSize, v, err)
		}
	}
}
