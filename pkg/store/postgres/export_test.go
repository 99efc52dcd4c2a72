package postgres

import "github.com/eventlog/eventlog/pkg/store"

// LockKey exposes the advisory lock key of TryLock(name) to tests.
func (r *Recorder) LockKey(name string) int64 { return r.n.lockKey("lock", name) }

func (r *Recorder) InsertSQL() string { return r.q.insert }

func (r *Recorder) BatchArgs(items []store.SequencedItem) []any {
	b := newBatch(items, 0)
	return []any{b.ids, b.pos, b.topics, b.states, b.codecs, b.ords, r.n.channel, len(b.ords)}
}

// SelectSequencesSQL returns the statement of SelectSequences.
func (r *Recorder) SelectSequencesSQL() string { return r.q.selectMany }

// EventsTable returns the quoted name of the events table.
func (r *Recorder) EventsTable() string { return r.n.Events }
