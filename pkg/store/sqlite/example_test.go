package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/sqlite"
)

func ExampleOpen() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "eventlog-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	rec, err := sqlite.Open(ctx, filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer rec.Close()

	id := uuid.New()
	_, err = rec.InsertEvents(ctx, []store.SequencedItem{
		{SequenceID: id, Position: 0, Topic: "example.Created", State: []byte(`{"foo":"bar"}`), Codec: "json"},
		{SequenceID: id, Position: 1, Topic: "example.AttributeChanged", State: []byte(`{"name":"foo","value":"baz"}`), Codec: "json"},
	})
	if err != nil {
		log.Fatal(err)
	}

	// The same position again is a typed conflict.
	_, err = rec.InsertEvents(ctx, []store.SequencedItem{{SequenceID: id, Position: 1, Topic: "example.Discarded", Codec: "json"}})
	fmt.Println(errors.Is(err, store.ErrConflict))

	items, err := rec.SelectEvents(ctx, id, store.Query{})
	if err != nil {
		log.Fatal(err)
	}
	for _, it := range items {
		fmt.Println(it.Position, it.Topic, string(it.State))
	}
	// Output:
	// true
	// 0 example.Created {"foo":"bar"}
	// 1 example.AttributeChanged {"name":"foo","value":"baz"}
}
