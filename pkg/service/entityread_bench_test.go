package service_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchmarkEntityRead measures the entity API's read path, GET
// /v1/entities/example/{id} on the handler (no network), one read in ten
// with ?version=1, over 1,000 entities of 5 events each, with the writer's
// default cache size, by 8 readers a core: the CPU a read costs apart from
// HTTP transport.
func BenchmarkEntityRead(b *testing.B) {
	for _, backend := range []string{"memory", "sqlite", "postgres"} {
		b.Run("store="+backend, func(b *testing.B) {
			ctx := b.Context()
			var rec store.ProcessRecorder
			switch backend {
			case "memory":
				rec = memory.New()
			case "sqlite":
				r, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				rec = r
			case "postgres":
				r, err := postgres.New(ctx, pgtest.Pool(b), postgres.Options{Schema: pgtest.Schema(b), Migrate: true})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				rec = r
			}
			d := service.NewDomain()
			_ = d.AddEntity("example")
			reg, err := d.Registry(entity.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			mapper := events.NewMapper(reg.Events())
			w, err := command.NewWriter(rec, reg, mapper, command.WriterConfig{})
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]uuid.UUID, 1000)
			var recs []wire.Record
			for i := range ids {
				ids[i] = uuid.New()
				for n := range 5 {
					c := wire.Command{CommandID: uuid.New(), Type: wire.TypeUpdate, Entity: "example", EntityID: ids[i], Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
					if n == 0 {
						c.Type, c.Data = wire.TypeCreate, json.RawMessage(`{"foo":"bar"}`)
					}
					v, _ := json.Marshal(c)
					recs = append(recs, wire.Record{Topic: "eventlog.commands", Offset: int64(len(recs)), Value: v})
				}
			}
			if err := w.HandleBatch(ctx, recs); err != nil {
				b.Fatal(err)
			}
			api, err := d.EntitiesAPI(store.NewEventStore(mapper, rec), rec, store.RepositoryConfig{CacheSize: command.DefaultCacheSize})
			if err != nil {
				b.Fatal(err)
			}
			h := (&httpapi.Server{Entities: api}).Handler()
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					path := "/v1/entities/example/" + ids[i%int64(len(ids))].String()
					if i%10 == 9 {
						path += "?version=1"
					}
					rr := httptest.NewRecorder()
					h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
					if rr.Code != http.StatusOK {
						b.Errorf("GET %s: %d %s", path, rr.Code, rr.Body)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
		})
	}
}
