package httpapi_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/projection/pgreadmodel"
	"github.com/eventlog/eventlog/pkg/projection/sqlitereadmodel"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
)

// shredBackend is a store with data keys, a read model kept with it, and a
// second store the persistence policy copies events into.
type shredBackend struct {
	rec interface {
		store.ProcessRecorder
		store.KeyRecorder
		store.SnapshotRecorder
	}
	copy store.ProcessRecorder
	rm   interface {
		projection.Policy
		httpapi.ReadModelQuerier
	}
}

func sqliteShred(t *testing.T) shredBackend {
	ctx, dir := t.Context(), t.TempDir()
	path := filepath.Join(dir, "store.db")
	rec, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	cp, err := sqlite.Open(ctx, filepath.Join(dir, "copy.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	db, err := sql.Open("sqlite", sqlite.DSN(path, sqlite.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rm, err := sqlitereadmodel.New(db, sqlitereadmodel.Options{Types: []string{"example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return shredBackend{rec: rec, copy: cp, rm: rm}
}

func postgresShred(t *testing.T) shredBackend {
	ctx := t.Context()
	pool, schema := pgtest.Pool(t), pgtest.Schema(t)
	rec, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	cp, err := postgres.New(ctx, pool, postgres.Options{Schema: schema, TablePrefix: "copy_", Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	rm, err := pgreadmodel.New(pool, pgreadmodel.Options{Types: []string{"example"}, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return shredBackend{rec: rec, copy: cp, rm: rm}
}

func TestCryptoShredding(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testShredding(t, sqliteShred(t)) })
	t.Run("postgres", func(t *testing.T) { testShredding(t, postgresShred(t)) })
}

func masterRing(t *testing.T, active string, ids ...string) *events.Keyring {
	t.Helper()
	keys := map[string][]byte{}
	for _, id := range ids {
		keys[id] = bytes.Repeat([]byte(id[len(id)-1:]), 32)
	}
	r, err := events.NewKeyring(keys, active, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// shredMapper is what a process with per-entity keys over rec builds.
func shredMapper(t *testing.T, rec store.KeyRecorder, ring *events.Keyring) (*events.Mapper, *store.DataKeys) {
	t.Helper()
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		t.Fatal(err)
	}
	dk, err := store.NewDataKeys(rec, ring, store.DataKeysConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return events.NewMapper(reg, events.WithCipher(events.NewEntityCipher(dk, ring))), dk
}

func testShredding(t *testing.T, b shredBackend) {
	ctx := t.Context()
	const secret = "alice@example.com"
	// Before rotation: master key k1 wraps the data key of a.
	m1, _ := shredMapper(t, b.rec, masterRing(t, "k1", "k1"))
	a, bID := uuid.New(), uuid.New()
	ea, err := entity.Create("example", a, map[string]json.RawMessage{"email": json.RawMessage(`"` + secret + `"`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewEventStore(m1, b.rec).Put(ctx, ea.CollectEvents()...); err != nil {
		t.Fatal(err)
	}
	// After rotation (k2 active, k1 kept): a's old data key still unwraps,
	// b's new one is wrapped by k2.
	m2, dk2 := shredMapper(t, b.rec, masterRing(t, "k2", "k1", "k2"))
	es := store.NewEventStore(m2, b.rec)
	repo, err := store.NewRepository(es, func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ea, err = repo.Get(ctx, a)
	if err != nil {
		t.Fatalf("a after master key rotation: %v", err)
	}
	if err := ea.Set("name", "Alice"); err != nil {
		t.Fatal(err)
	}
	eb, err := entity.Create("example", bID, map[string]json.RawMessage{"email": json.RawMessage(`"bob@example.com"`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.Put(ctx, append(ea.CollectEvents(), eb.CollectEvents()...)...); err != nil {
		t.Fatal(err)
	}
	for id, master := range map[uuid.UUID]string{a: "k1", bID: "k2"} {
		if wk, err := b.rec.DataKey(ctx, id); err != nil || wk.MasterID != master {
			t.Fatalf("data key of %s wrapped by %q (%v), want %s", id, wk.MasterID, err, master)
		}
	}
	ea, _ = repo.Get(ctx, a)
	snap, err := m2.SnapshotItem(ea, "example."+entity.SnapshotName)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.rec.InsertSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	// Nothing stored is in the clear.
	stored, _ := b.rec.SelectEvents(ctx, a, store.Query{})
	for _, it := range stored {
		if bytes.Contains(it.State, []byte(secret)) || it.Codec != "json+"+events.EntityCodec {
			t.Fatalf("item %d of a: codec %q, plaintext visible: %v", it.Position, it.Codec, bytes.Contains(it.State, []byte(secret)))
		}
	}

	// Project everything so far: read model and persistence copy.
	var last int64
	seen := 0
	// project applies the log up to its want-th item. PostgreSQL holds back
	// items behind transactions still open anywhere on the server, so it
	// polls until they are visible.
	project := func(want int) {
		t.Helper()
		var ns []store.Notification
		deadline := time.Now().Add(20 * time.Second)
		for {
			page, err := b.rec.SelectNotifications(ctx, last, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if seen+len(page) >= want {
				ns = page
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the log shows %d items, want %d", seen+len(page), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		seen += len(ns)
		items := make([]projection.Item, len(ns))
		for i, n := range ns {
			e, err := m2.FromItem(n.SequencedItem)
			if err != nil {
				t.Fatalf("project notification %d: %v", n.ID, err)
			}
			items[i] = projection.Item{SequencedItem: n.SequencedItem, NotificationID: n.ID, Event: e}
			last = n.ID
		}
		if err := b.rec.InTx(ctx, func(tx store.Tx) error { return b.rm.Apply(ctx, tx, items) }); err != nil {
			t.Fatalf("read model: %v", err)
		}
		if err := b.copy.InTx(ctx, func(tx store.Tx) error { return projection.PersistencePolicy{}.Apply(ctx, tx, items) }); err != nil {
			t.Fatalf("persistence: %v", err)
		}
	}
	project(3)
	if row, err := b.rm.Get(ctx, "example", a); err != nil || row.Version != 2 {
		t.Fatalf("read model row of a before forget: %+v, %v", row, err)
	}

	// Forget a.
	pos, err := dk2.Forget(ctx, a)
	if err != nil || pos != 2 {
		t.Fatalf("Forget = %d, %v; want the tombstone at position 2", pos, err)
	}
	project(4) // the tombstone reaches the projections

	// The repository, in this process and in a new one, says forgotten.
	if _, err := repo.Get(ctx, a); !errors.Is(err, store.ErrForgotten) {
		t.Fatalf("repository Get of the forgotten entity = %v, want ErrForgotten", err)
	}
	fresh, _ := shredMapper(t, b.rec, masterRing(t, "k2", "k1", "k2"))
	freshRepo, _ := store.NewRepository(store.NewEventStore(fresh, b.rec), func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
	if _, err := freshRepo.Get(ctx, a); !errors.Is(err, store.ErrForgotten) {
		t.Fatalf("a new process's Get of the forgotten entity = %v, want ErrForgotten", err)
	}
	if _, err := b.rec.LatestSnapshot(ctx, a, -1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("snapshot of the forgotten entity = %v, want gone", err)
	}
	if got, err := freshRepo.Get(ctx, bID); err != nil || got.String("email") != "bob@example.com" {
		t.Fatalf("the other entity after the forget: %v, %v", got, err)
	}

	// HTTP: 410 for the forgotten entity, its events and its read-model row.
	ents, err := service.GenericDomain("example").EntitiesAPI(es, b.rec, store.RepositoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rms := &httpapi.ReadModels{Model: b.rm, Types: []string{"example"}, Forgotten: httpapi.ForgottenIn(b.rec)}
	h := (&httpapi.Server{Entities: ents, Extra: rms.Routes}).Handler()
	get := func(path string) (int, map[string]any) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if bytes.Contains(w.Body.Bytes(), []byte(secret)) {
			t.Fatalf("GET %s shows forgotten data: %s", path, w.Body)
		}
		return w.Code, body
	}
	for _, p := range []string{"/v1/entities/example/", "/v1/read-models/example/"} {
		if code, body := get(p + a.String()); code != http.StatusGone || body["error"] == nil {
			t.Fatalf("GET %s<forgotten> = %d %v, want 410 with an error", p, code, body)
		}
		if code, _ := get(p + bID.String()); code != http.StatusOK {
			t.Fatalf("GET %s<other> = %d, want 200", p, code)
		}
	}
	if code, _ := get("/v1/entities/example/" + a.String() + "/events"); code != http.StatusGone {
		t.Fatalf("GET events of the forgotten entity = %d, want 410", code)
	}
	if code, _ := get("/v1/read-models/example/" + uuid.NewString()); code != http.StatusNotFound {
		t.Fatalf("GET read model of an unknown entity = %d, want 404", code)
	}
	if _, err := b.rm.Get(ctx, "example", a); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read-model row of the forgotten entity: %v, want gone", err)
	}
	if row, err := b.rm.Get(ctx, "example", bID); err != nil || string(row.Attributes["email"]) != `"bob@example.com"` {
		t.Fatalf("read-model row of the other entity: %+v, %v", row, err)
	}

	// The persistence copy holds the forgotten entity's events, unreadable,
	// and the tombstone.
	copied, err := b.copy.SelectEvents(ctx, a, store.Query{})
	if err != nil || len(copied) != 3 || !events.IsForgottenTopic(copied[2].Topic) {
		t.Fatalf("persistence copy of a: %d items, %v", len(copied), err)
	}
	for _, it := range copied[:2] {
		if _, err := fresh.FromItem(it); !errors.Is(err, store.ErrForgotten) {
			t.Fatalf("copied item %d of the forgotten entity decodes: %v", it.Position, err)
		}
	}
	if cb, err := b.copy.SelectEvents(ctx, bID, store.Query{}); err != nil || len(cb) != 1 {
		t.Fatalf("persistence copy of the other entity: %d, %v", len(cb), err)
	} else if _, err := fresh.FromItem(cb[0]); err != nil {
		t.Fatalf("copied item of the other entity: %v", err)
	}

	// The notification log is complete and in order: every item is there;
	// only the forgotten entity's events fail to decode.
	ns, err := b.rec.SelectNotifications(ctx, 0, 1000)
	if err != nil || len(ns) != 4 {
		t.Fatalf("notification log: %d items, %v; want 4 (a's 2, b's 1, the tombstone)", len(ns), err)
	}
	for i, n := range ns {
		if i > 0 && n.ID <= ns[i-1].ID {
			t.Fatalf("notification ids out of order: %d after %d", n.ID, ns[i-1].ID)
		}
		_, err := fresh.FromItem(n.SequencedItem)
		switch {
		case n.SequenceID == a && !events.IsForgottenTopic(n.Topic):
			if !errors.Is(err, store.ErrForgotten) {
				t.Fatalf("log item %d of the forgotten entity: %v, want ErrForgotten", n.ID, err)
			}
		case err != nil:
			t.Fatalf("log item %d (%s): %v", n.ID, n.Topic, err)
		}
	}
}
