package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/app"
	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
)

// This example walks the stand-alone example of event sourcing, section by section:
// domain events, an entity, the mutator, a record manager, an event store, a
// repository, sequenced items, a persistence policy and an application object.
func Example_standAlone() {
	ctx := context.Background()

	// Domain events and the entity: the generic entity of type "example" has the
	// events example.Created, example.AttributeChanged and example.Discarded.
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		panic(err)
	}

	// create_new_example(foo='bar'): a factory constructs a Created event and the
	// mutator constructs the entity from it. The entity keeps the event pending:
	// these are the "received events" of the seed.
	example, err := entity.Create("example", uuid.New(), attrs(`{"foo": "bar"}`))
	if err != nil {
		panic(err)
	}
	received := example.PendingEvents()
	fmt.Println("version:", example.Version())
	fmt.Println("received:", len(received), topicOf(reg, received[0]), "at", received[0].EventMeta().OriginatorVersion)
	fmt.Println("foo:", example.String("foo"))

	// entity.foo = 'baz'
	if err := example.Set("foo", "baz"); err != nil {
		panic(err)
	}
	received = example.PendingEvents()
	changed := received[1].(*entity.AttributeChanged)
	fmt.Println("foo:", example.String("foo"), "version:", example.Version())
	fmt.Println("received:", len(received), topicOf(reg, changed), "at", changed.OriginatorVersion, changed.Name, string(changed.Value))

	// The record manager (a recorder over a table of sequenced items), the
	// sequenced item mapper, and the event store.
	recorder := memory.New()
	eventStore := store.NewEventStore(events.NewMapper(reg), recorder)

	// Put each received event into the event store.
	for _, e := range received {
		if _, err := eventStore.Put(ctx, e); err != nil {
			panic(err)
		}
	}
	stored, err := eventStore.Get(ctx, example.ID(), store.Query{})
	if err != nil {
		panic(err)
	}
	fmt.Println("stored events:", len(stored))

	// The repository replays the entity's events through the mutator.
	repo, err := store.NewRepository(eventStore, func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
	if err != nil {
		panic(err)
	}
	retrieved, err := repo.Get(ctx, example.ID())
	if err != nil {
		panic(err)
	}
	fmt.Println("retrieved foo:", retrieved.String("foo"))

	// Sequenced items: (sequence id, position, topic, state).
	items, err := recorder.SelectEvents(ctx, example.ID(), store.Query{})
	if err != nil {
		panic(err)
	}
	for _, it := range items {
		fmt.Println("item:", it.SequenceID == example.ID(), it.Position, it.Topic,
			strings.Contains(string(it.State), "bar"), strings.Contains(string(it.State), "baz"))
	}

	// The application object, with a persistence policy that keeps a second copy
	// of every event it hears of, closed at the end like the seed's context manager.
	application := app.New(store.NewEventStore(events.NewMapper(reg), memory.New()))
	defer application.Close()
	replica := store.NewEventStore(events.NewMapper(reg), memory.New())
	application.Subscribe(&app.PersistencePolicy{Store: replica})
	appRepo, err := store.NewRepository(application.Store, func() *entity.Entity { return entity.New("example") }, store.RepositoryConfig{})
	if err != nil {
		panic(err)
	}

	// Create.
	example2, err := entity.Create("example", uuid.New(), attrs(`{"foo": "bar"}`))
	if err != nil {
		panic(err)
	}
	if err := application.Save(ctx, example2); err != nil {
		panic(err)
	}
	// Read.
	ok, _ := appRepo.Contains(ctx, example2.ID())
	got, _ := appRepo.Get(ctx, example2.ID())
	fmt.Println("in repository:", ok, "foo:", got.String("foo"))
	// Update.
	if err := example2.Set("foo", "baz"); err != nil {
		panic(err)
	}
	if err := application.Save(ctx, example2); err != nil {
		panic(err)
	}
	got, _ = appRepo.Get(ctx, example2.ID())
	fmt.Println("foo:", got.String("foo"))
	// Delete.
	if err := example2.Discard(); err != nil {
		panic(err)
	}
	if err := application.Save(ctx, example2); err != nil {
		panic(err)
	}
	ok, _ = appRepo.Contains(ctx, example2.ID())
	_, err = appRepo.Get(ctx, example2.ID())
	fmt.Println("in repository:", ok, errors.Is(err, store.ErrNotFound))

	// The persistence policy stored every event the application published.
	copies, _ := replica.Get(ctx, example2.ID(), store.Query{})
	fmt.Println("replicated events:", len(copies))

	// Output:
	// version: 1
	// received: 1 example.Created at 0
	// foo: bar
	// foo: baz version: 2
	// received: 2 example.AttributeChanged at 1 foo "baz"
	// stored events: 2
	// retrieved foo: baz
	// item: true 0 example.Created true false
	// item: true 1 example.AttributeChanged false true
	// in repository: true foo: bar
	// foo: baz
	// in repository: false true
	// replicated events: 3
}

func attrs(js string) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		panic(err)
	}
	return m
}

func topicOf(reg *events.Registry, e events.Event) string {
	t, err := reg.Topic(e)
	if err != nil {
		panic(err)
	}
	return t
}
