package store

import (
	"context"
	"sync"

	"github.com/google/uuid"
)

// readBatcher gathers the reads of many sequences that arrive while one
// query runs into the next query (SequencesReader.SelectSequences): on a
// database server, one round trip for all of them instead of one each.
//
// A read joins a batch that has not started yet, and a batch starts only
// after the one before it ended, so the query that answers a read begins
// after the read did: it sees every item committed before the read began,
// as a query of its own would. It is safe for concurrent use.
type readBatcher struct {
	r       SequencesReader
	mu      sync.Mutex
	running bool       // a batch's query runs
	pending *readBatch // the batch that gathers reads, to run next
}

type readBatch struct {
	queries map[uuid.UUID]Query
	start   chan struct{} // closed when the batch may run
	done    chan struct{} // closed when out and err are set
	out     map[uuid.UUID][]SequencedItem
	err     error
}

// selectEvents returns what SelectEvents(ctx, id, q) would, read in a batch.
// A second read of the same id in one batch is read on its own (one does
// not share items between callers).
func (b *readBatcher) selectEvents(ctx context.Context, rec AggregateRecorder, id uuid.UUID, q Query) ([]SequencedItem, error) {
	b.mu.Lock()
	bt := b.pending
	lead := false
	switch {
	case !b.running:
		// Nothing runs: run a batch of this read at once.
		bt = &readBatch{queries: map[uuid.UUID]Query{id: q}, done: make(chan struct{})}
		b.running = true
		b.mu.Unlock()
		b.run(ctx, bt)
		return bt.result(id)
	case bt == nil:
		// Gather the next batch; its first read runs it.
		bt = &readBatch{queries: map[uuid.UUID]Query{}, start: make(chan struct{}), done: make(chan struct{})}
		b.pending, lead = bt, true
	}
	if _, dup := bt.queries[id]; dup {
		b.mu.Unlock()
		return rec.SelectEvents(ctx, id, q)
	}
	bt.queries[id] = q
	b.mu.Unlock()
	if lead {
		// It runs the batch whatever its own context says: the others wait
		// on it. It waits for one query at most.
		<-bt.start
		b.run(ctx, bt)
		return bt.result(id)
	}
	select {
	case <-bt.done:
		return bt.result(id)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run runs bt's query, then lets the batch gathered meanwhile start.
func (b *readBatcher) run(ctx context.Context, bt *readBatch) {
	b.mu.Lock()
	if b.pending == bt {
		b.pending = nil // gathers no more reads
	}
	b.mu.Unlock()
	bt.out, bt.err = b.r.SelectSequences(context.WithoutCancel(ctx), bt.queries)
	close(bt.done)
	b.mu.Lock()
	defer b.mu.Unlock()
	if next := b.pending; next != nil {
		close(next.start)
		return // still running: next's lead runs it
	}
	b.running = false
}

func (bt *readBatch) result(id uuid.UUID) ([]SequencedItem, error) {
	if bt.err != nil {
		return nil, bt.err
	}
	items := bt.out[id]
	if items == nil {
		items = []SequencedItem{}
	}
	return items, nil
}
