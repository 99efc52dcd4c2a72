package projection_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/projection"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/wire"
)

// AuditLog is a custom policy: it writes one line per event of the generic
// entity into the target store, as items of an audit sequence per entity
// (the item at position n is the line of the entity's event n). Because each
// line sits at its event's position, the audit sequence is also the
// policy's position guard.
type AuditLog struct{}

var auditNamespace = uuid.MustParse("9a7c3f1e-52b4-4d8e-a6f0-3c1b2d4e5f60")

// AuditSequence is the id of the audit sequence of an entity.
func AuditSequence(entityID uuid.UUID) uuid.UUID { return uuid.NewSHA1(auditNamespace, entityID[:]) }

// DecodesEvents makes the runner hand AuditLog decoded events.
func (AuditLog) DecodesEvents() bool { return true }

// LastPositions implements projection.Positions: the last line of each
// entity's audit sequence.
func (AuditLog) LastPositions(ctx context.Context, tx store.Tx, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	return projection.LastItemPositions(ctx, tx, ids, AuditSequence)
}

// Apply writes the lines of items in one insert, in the runner's
// transaction.
func (AuditLog) Apply(ctx context.Context, tx store.Tx, items []projection.Item) error {
	lines := make([]store.SequencedItem, 0, len(items))
	for i, it := range items {
		var line string
		switch e := it.Event.(type) {
		case *entity.Created:
			line = fmt.Sprintf("%s created with %d attributes", e.Type, len(e.Attributes))
		case *entity.AttributeChanged:
			line = fmt.Sprintf("%s set %s to %s", e.Type, e.Name, e.Value)
		case *entity.Discarded:
			line = e.Type + " discarded"
		default:
			// Bad data: dead-letter this item, keep the others.
			return &projection.ItemError{Index: i, Err: projection.Permanent(fmt.Errorf("audit: %s is not an entity event", it.Topic))}
		}
		state, err := json.Marshal(map[string]string{"line": line})
		if err != nil {
			return err
		}
		lines = append(lines, store.SequencedItem{
			SequenceID: AuditSequence(it.SequenceID), Position: it.Position,
			Topic: "audit.Line", State: state, Codec: events.CodecJSON,
		})
	}
	_, err := tx.InsertEvents(ctx, lines)
	return err
}

// This example runs a custom policy, an audit log, over event records as the
// Kafka consumer would hand them, including a duplicate the relay published
// again at a later offset.
func Example_auditLog() {
	ctx := context.Background()
	reg := events.NewRegistry()
	if err := entity.Register(reg, "example"); err != nil {
		panic(err)
	}
	mapper := events.NewMapper(reg)

	// The writer's store, with one entity's history.
	source := memory.New()
	e, err := entity.Create("example", uuid.New(), map[string]json.RawMessage{"foo": json.RawMessage(`"bar"`)})
	if err != nil {
		panic(err)
	}
	if err := e.Set("foo", "baz"); err != nil {
		panic(err)
	}
	if err := e.Discard(); err != nil {
		panic(err)
	}
	if _, err := store.NewEventStore(mapper, source).Put(ctx, e.CollectEvents()...); err != nil {
		panic(err)
	}

	// What the relay published: the log on one partition, the first event
	// twice.
	log, err := source.SelectNotifications(ctx, 0, 100)
	if err != nil {
		panic(err)
	}
	topic := wire.Topics{Prefix: wire.DefaultPrefix}.Events("example")
	var records []wire.Record
	for _, n := range append(log, log[0]) {
		records = append(records, projection.RecordOf(n, topic, 0, int64(len(records))))
	}

	// The projection: the audit log in its own store, with the writer's
	// store to fill gaps from.
	target := memory.New()
	runner, err := projection.NewRunner(target, projection.Config{
		Name: "audit", Policy: AuditLog{}, Mapper: mapper, Source: source,
	})
	if err != nil {
		panic(err)
	}
	// Two polls. A consumer would call runner.Tracking on partition
	// assignment and resume after it.
	for _, batch := range [][]wire.Record{records[:2], records[2:]} {
		if err := runner.HandleBatch(ctx, batch); err != nil {
			panic(err)
		}
	}

	lines, err := target.SelectEvents(ctx, AuditSequence(e.ID()), store.Query{})
	if err != nil {
		panic(err)
	}
	for _, it := range lines {
		var l struct{ Line string }
		if err := json.Unmarshal(it.State, &l); err != nil {
			panic(err)
		}
		fmt.Println(it.Position, l.Line)
	}
	offset, _ := runner.Tracking(ctx, "audit", topic, 0)
	st := runner.Stats()
	fmt.Println("tracking:", offset, "applied:", st.Applied, "duplicates skipped:", st.Duplicates)
	// Output:
	// 0 example created with 1 attributes
	// 1 example set foo to "baz"
	// 2 example discarded
	// tracking: 3 applied: 3 duplicates skipped: 1
}

// This example copies a store's events into a second store, the persistence
// policy across the network: the copies and the tracking commit together in
// the second store.
func ExamplePersistencePolicy() {
	ctx := context.Background()
	source, replica := memory.New(), memory.New()
	id := uuid.New()
	if _, err := source.InsertEvents(ctx, []store.SequencedItem{
		{SequenceID: id, Position: 0, Topic: "example.Created", State: []byte(`{"attributes":{}}`), Codec: "json"},
		{SequenceID: id, Position: 1, Topic: "example.Discarded", State: []byte(`{}`), Codec: "json"},
	}); err != nil {
		panic(err)
	}
	log, _ := source.SelectNotifications(ctx, 0, 100)
	// Only the second event arrives: the first is read from the source.
	records := []wire.Record{projection.RecordOf(log[1], "eventlog.events.example", 0, 0)}

	runner, err := projection.NewRunner(replica, projection.Config{
		Name: "replica", Policy: projection.PersistencePolicy{}, Source: source,
	})
	if err != nil {
		panic(err)
	}
	if err := runner.HandleBatch(ctx, records); err != nil {
		panic(err)
	}
	copies, _ := replica.SelectEvents(ctx, id, store.Query{})
	for _, it := range copies {
		fmt.Println(it.Position, it.Topic)
	}
	fmt.Println("repaired:", runner.Stats().Repaired)
	// Output:
	// 0 example.Created
	// 1 example.Discarded
	// repaired: 1
}
