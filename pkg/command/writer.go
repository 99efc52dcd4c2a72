package command

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/entity"
	"github.com/eventlog/eventlog/pkg/events"
	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/wire"
)

// Defaults of WriterConfig.
const (
	DefaultTrackingName       = "eventlog-writer"
	DefaultCacheSize          = 10000
	DefaultMaxConflictRetries = 5
	DefaultReadConcurrency    = 8
)

// Log keys.
const (
	logKeyTopic     = "topic"
	logKeyPartition = "partition"
	logKeyOffset    = "offset"
	logKeyReason    = "reason"
	logKeySequence  = "sequence_id"
	logKeyAttempt   = "attempt"
	logKeyError     = "error"
	logKeyCommand   = "command_id"
	logKeyStack     = "stack"
)

// WriterConfig configures a Writer. The zero value is usable: each field
// documents its default.
type WriterConfig struct {
	// TrackingName names the tracking records of consumed command offsets. It
	// overrides DefaultTrackingName. Every writer consuming the same command
	// topic must use the same name: it is what makes a second writer skip, or
	// fail on, offsets the first one applied.
	TrackingName string
	// MaxCommandSize bounds an encoded command envelope; a larger record is
	// dead-lettered. It overrides wire.MaxCommandSize.
	MaxCommandSize int
	// CacheSize is how many aggregates the writer keeps in memory between
	// batches. It overrides DefaultCacheSize; a negative value caches nothing.
	// A cached aggregate is used without a read; if another writer appended
	// to it meanwhile, the commit fails and the batch is decided again from
	// the store (see the package doc).
	CacheSize int
	// Snapshots, with SnapshotEvery > 0, lets loads of uncached aggregates start
	// from a snapshot, and stores one (topic "<entity>.Snapshot") whenever a load
	// replayed at least SnapshotEvery events. The default is no snapshots.
	Snapshots     store.SnapshotRecorder
	SnapshotEvery int64
	// MaxConflictRetries bounds how often a batch is tried again after its
	// transaction failed with store.ErrConflict (another writer appended to one
	// of its sequences). It overrides DefaultMaxConflictRetries; a negative value
	// never retries.
	MaxConflictRetries int
	// ReadConcurrency is how many store reads (aggregate loads, result look-ups)
	// a batch runs at once before it processes its commands in order, where
	// it reads one sequence at a time: from a recorder that is no
	// store.SequencesReader, and for loads from snapshots. It overrides
	// DefaultReadConcurrency; 1 reads one at a time.
	ReadConcurrency int
	// Now is the clock that stamps the events of records without a timestamp.
	// It overrides time.Now.
	Now func() time.Time
	// Logger receives a warning for each dead letter and a note for each retry.
	// It overrides the default of logging nothing.
	Logger *slog.Logger
	// OnBatch, if set, is called at the end of every HandleBatch call, on the
	// calling goroutine, for metrics (so concurrently if HandleBatch runs
	// concurrently). It must not block. With Pipeline it is called for a
	// batch when its transaction has been waited for: by the next HandleBatch
	// call or by Flush.
	OnBatch func(BatchStats)
	// Pipeline, if set, overlaps consecutive batches: HandleBatch decides its
	// records (reads, handlers, encoding) while the transaction of the
	// previous batch runs, as if that one had committed, then waits for that
	// transaction and starts its own without waiting for it. It returns
	// once its own transaction has started; the next HandleBatch call, Flush
	// or Tracking waits for it. If a transaction fails, its batch is decided
	// again from the store and stored in the background (as HandleBatch does
	// without Pipeline, a few times with back-off), and the batch decided on
	// top of it is decided again. A batch still not stored is applied by the
	// next HandleBatch, Flush or Tracking call before anything else; that
	// call returns its error if it fails, and the batch stays pending.
	//
	// So a nil HandleBatch means the records will be stored, not that they
	// are: their transaction can still fail, and a process that stops
	// without Flush loses it (the records are consumed again from the
	// tracking, so nothing is applied twice or skipped). Calls are
	// serialised: each waits for the one before.
	Pipeline bool
}

func (c *WriterConfig) setDefaults() {
	if c.TrackingName == "" {
		c.TrackingName = DefaultTrackingName
	}
	if c.MaxCommandSize <= 0 {
		c.MaxCommandSize = wire.MaxCommandSize
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxConflictRetries == 0 {
		c.MaxConflictRetries = DefaultMaxConflictRetries
	}
	if c.ReadConcurrency <= 0 {
		c.ReadConcurrency = DefaultReadConcurrency
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration that cannot work.
func (c WriterConfig) Validate() error {
	if c.SnapshotEvery < 0 {
		return errors.New("command: SnapshotEvery must not be negative")
	}
	if c.SnapshotEvery > 0 && c.Snapshots == nil {
		return errors.New("command: SnapshotEvery is set but Snapshots is nil")
	}
	return nil
}

// A Writer turns command records into events, results and dead letters, and
// stores each batch of them in one transaction with the tracking of the records'
// offsets. It is safe for concurrent use: batches of different partitions may be
// handled at once (they retry if they touch the same entity).
type Writer struct {
	rec    store.ProcessRecorder
	seqs   store.SequencesReader // rec, if it reads many sequences at once
	mapper *events.Mapper
	es     *store.EventStore
	cfg    WriterConfig
	kinds  map[string]*writerKind
	cache  *aggCache
	log    *slog.Logger
	stats  counters

	trackMu sync.Mutex
	tracked map[partitionKey]int64 // stored tracking of partitions, as this writer last read or committed it

	pipeMu  sync.Mutex // with Pipeline: one HandleBatch, Flush or Tracking at a time
	pending *pending   // with Pipeline: the batch whose transaction runs or failed
}

type writerKind struct {
	*kind
	get getter
}

// NewWriter returns a writer that stores into rec the commands of the entity
// types registered in reg, encoding events with mapper (which must use
// reg.Events()). Entity types registered later are not seen.
func NewWriter(rec store.ProcessRecorder, reg *Registry, mapper *events.Mapper, cfg WriterConfig) (*Writer, error) {
	switch {
	case rec == nil:
		return nil, errors.New("command: recorder is nil")
	case reg == nil:
		return nil, errors.New("command: registry is nil")
	case mapper == nil:
		return nil, errors.New("command: mapper is nil")
	case mapper.Registry() != reg.Events():
		return nil, errors.New("command: the mapper does not use the command registry's event registry")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kinds := reg.snapshot()
	if len(kinds) == 0 {
		return nil, errors.New("command: no entity types are registered")
	}
	seqs, _ := rec.(store.SequencesReader)
	w := &Writer{
		rec:     rec,
		seqs:    seqs,
		mapper:  mapper,
		es:      store.NewEventStore(mapper, rec),
		cfg:     cfg,
		kinds:   make(map[string]*writerKind, len(kinds)),
		cache:   newAggCache(cfg.CacheSize),
		log:     cfg.Logger,
		tracked: make(map[partitionKey]int64),
	}
	for name, k := range kinds {
		rc := store.RepositoryConfig{}
		if cfg.SnapshotEvery > 0 {
			rc.Snapshots, rc.SnapshotEvery = cfg.Snapshots, cfg.SnapshotEvery
			rc.SnapshotTopic = name + "." + entity.SnapshotName
		}
		get, err := k.newRepo(w.es, rc)
		if err != nil {
			return nil, fmt.Errorf("command: entity type %q: %w", name, err)
		}
		w.kinds[name] = &writerKind{kind: k, get: get}
	}
	return w, nil
}

// TrackingName returns the name under which the writer tracks consumed offsets.
func (w *Writer) TrackingName() string { return w.cfg.TrackingName }

// Tracking returns the greatest offset of (topic, partition) that this writer's
// tracking name has applied, or -1 if none: a consumer resumes at the next one
// when it is assigned the partition. It answers for the writer's TrackingName
// whatever name is passed; the parameter gives Tracking the shape of
// store.ProcessRecorder.Tracking, so a consumer can be handed either.
//
// With Pipeline, it first waits for the batch committing (see Flush).
func (w *Writer) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	if err := w.Flush(ctx); err != nil {
		return -1, err
	}
	pos, err := w.rec.Tracking(ctx, w.cfg.TrackingName, topic, partition)
	if err == nil {
		w.remember(partitionKey{topic, partition}, pos)
	}
	return pos, err
}

// remember notes that the stored tracking of k is at least pos.
func (w *Writer) remember(k partitionKey, pos int64) {
	w.trackMu.Lock()
	defer w.trackMu.Unlock()
	if old, ok := w.tracked[k]; !ok || old < pos {
		w.tracked[k] = pos
	}
}

// remembered returns the tracking of k that this writer last read or
// committed. Tracking only moves forward, so the stored one is the same or,
// if another writer applied records of k since, greater.
func (w *Writer) remembered(k partitionKey) (int64, bool) {
	w.trackMu.Lock()
	defer w.trackMu.Unlock()
	pos, ok := w.tracked[k]
	return pos, ok
}

// Stats returns the writer's totals so far.
func (w *Writer) Stats() Stats { return w.stats.snapshot() }

// HandleBatch applies a batch of command records, in order, and commits all its
// outcomes in one transaction together with the tracking of the greatest offset
// of each (topic, partition) in the batch:
//
//   - a record that is not a command envelope becomes a dead letter;
//   - a command becomes its entity's events (if accepted) and its result;
//   - a command id already answered gets its original result published again.
//
// Records at or below the stored tracking of their partition were applied
// already and are skipped. One invalid, rejected or conflicting command never
// fails the others. If another writer appended to one of the batch's entities
// meanwhile, the batch is tried again with fresh state. HandleBatch returns an
// error only if nothing was stored: a store error (try the same batch again), an
// error wrapping store.ErrTrackingConflict (another consumer applied these
// offsets: seek to the stored tracking), or too many conflicts in a row.
//
// With WriterConfig.Pipeline, HandleBatch returns once the batch is decided
// and its transaction started; see Pipeline for what changes.
func (w *Writer) HandleBatch(ctx context.Context, records []wire.Record) error {
	if w.cfg.Pipeline {
		return w.handlePipelined(ctx, records)
	}
	return w.handleNow(ctx, records)
}

func (w *Writer) handle(ctx context.Context, records []wire.Record, st *BatchStats) error {
	if len(records) == 0 {
		return nil
	}
	t0 := time.Now()
	in := w.decode(records)
	st.Decide += time.Since(t0)
	bypass := make(map[uuid.UUID]bool)
	readTracking := false
	conflicts := 0
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := w.plan(ctx, in, bypass, readTracking, nil)
		if b != nil {
			st.Read += b.stats.Read
			st.Decide += b.stats.Decide
			if err != nil {
				b = nil // a failed plan has nothing to commit
			}
		}
		if err == nil && b.empty() {
			st.Skipped = b.stats.Skipped
			return nil
		}
		if err == nil {
			st.Attempts++
			t0 := time.Now()
			err = w.commit(ctx, b)
			st.Append = time.Since(t0)
			if err == nil {
				w.committed(ctx, b)
				b.stats.Records, b.stats.Attempts, b.stats.Append = st.Records, st.Attempts, st.Append
				b.stats.Read, b.stats.Decide = st.Read, st.Decide
				*st = b.stats
				return nil
			}
		}
		// The aggregates b took out of the cache are dropped with b.
		if errors.Is(err, store.ErrTrackingConflict) && b != nil && b.remembered && !readTracking {
			// Another writer applied records of a partition since this one
			// last saw its tracking: read the tracking, and skip those.
			readTracking = true
			w.log.InfoContext(ctx, "command: another writer applied records of the batch; reading the tracking and trying the batch again",
				logKeyAttempt, attempt+1, logKeyError, err)
			continue
		}
		if errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrTrackingConflict) && conflicts < w.cfg.MaxConflictRetries {
			conflicts++
			id := bypassAll
			if ce := (*store.ConflictError)(nil); errors.As(err, &ce) {
				id = ce.SequenceID
			}
			bypass[id] = true
			w.log.InfoContext(ctx, "command: another writer appended to a sequence of the batch; trying the batch again",
				logKeySequence, id, logKeyAttempt, attempt+1, logKeyError, err)
			continue
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("command: batch of %d records: %w", len(records), err)
	}
}

// bypassAll in the bypass set of a batch makes it load every aggregate from the
// store, past the cache.
var bypassAll = uuid.Nil

// input is one record of a batch, decoded.
type input struct {
	rec *wire.Record
	cmd wire.Command
	err error     // why the record is not a usable envelope
	at  time.Time // the time its events are stamped with
	dup bool      // the same (topic, partition, offset) came earlier in the batch
}

type partitionKey struct {
	topic     string
	partition int32
}

type offsetKey struct {
	partitionKey
	offset int64
}

func (w *Writer) decode(records []wire.Record) []input {
	now := w.cfg.Now().UTC()
	in := make([]input, len(records))
	seen := make(map[offsetKey]struct{}, len(records))
	for i := range records {
		r := &records[i]
		x := &in[i]
		x.rec = r
		x.at = r.Timestamp.UTC()
		if r.Timestamp.IsZero() {
			x.at = now
		}
		k := offsetKey{partitionKey{r.Topic, r.Partition}, r.Offset}
		if _, dup := seen[k]; dup {
			x.dup = true
			continue
		}
		seen[k] = struct{}{}
		x.cmd, x.err = wire.DecodeCommand(r.Value, w.cfg.MaxCommandSize)
		if x.err == nil && x.cmd.CommandID == x.cmd.EntityID {
			x.err = fmt.Errorf("%w: command_id equals entity_id (the result would share the entity's sequence)", wire.ErrEnvelope)
		}
	}
	return in
}

// working is an aggregate a batch works on.
type working struct {
	key     aggKey
	kind    *writerKind
	agg     events.Root
	base    int64          // version when loaded
	applied []events.Event // events of the batch's accepted commands, in order
	reject  error          // if set, every command for the aggregate is rejected
	read    bool           // a command's outcome depended on its state
}

// answered is a command id with a result: the original result's item state.
type answered struct {
	state []byte
	codec string
	next  int64 // position of the next copy
}

// lookup is the last item of a sequence, if any.
type lookup struct {
	found bool
	item  store.SequencedItem
}

// batch is what one attempt at a batch will commit.
type batch struct {
	tracking  []store.Tracking
	items     []store.SequencedItem
	working   map[aggKey]*working
	results   map[uuid.UUID]*answered // command ids answered, stored or in this batch
	writtenBy map[uuid.UUID]string    // entity ids with events in this batch -> entity type
	validate  []*working
	dead      []deadNote // dead letters, logged once the batch commits
	stats     BatchStats
	// remembered reports that the tracking of a partition was not read but
	// remembered (see Writer.remembered).
	remembered bool
}

type deadNote struct {
	rec    *wire.Record
	reason string
}

func (b *batch) empty() bool { return len(b.tracking) == 0 && len(b.items) == 0 }

// take hands over the aggregate of k that b worked on, if any (b may be nil):
// b no longer caches it once it commits.
func (b *batch) take(k aggKey) *working {
	if b == nil {
		return nil
	}
	wk, ok := b.working[k]
	if !ok || (wk.agg == nil && wk.reject == nil) {
		return nil
	}
	delete(b.working, k)
	return wk
}

// plan reads what the batch needs and decides every record's outcome. With
// readTracking it reads the tracking of every partition rather than use the
// one it remembers.
//
// With prev, a batch whose transaction has not committed yet, the batch is
// planned as if prev had committed: prev's offsets count as applied, its
// results as stored, and the aggregates prev worked on are taken over from it
// in the state prev left them (prev then does not cache them). Such a plan
// holds only if prev commits.
func (w *Writer) plan(ctx context.Context, in []input, bypass map[uuid.UUID]bool, readTracking bool, prev *batch) (*batch, error) {
	b := &batch{
		working:   make(map[aggKey]*working),
		results:   make(map[uuid.UUID]*answered),
		writtenBy: make(map[uuid.UUID]string),
	}
	if prev != nil {
		for id, a := range prev.results {
			b.results[id] = &answered{state: a.state, codec: a.codec, next: a.next}
		}
		maps.Copy(b.writtenBy, prev.writtenBy)
	}
	t0 := time.Now()
	live, err := w.skipApplied(ctx, b, in, readTracking, prev)
	if err != nil || len(live) == 0 {
		b.stats.Read = time.Since(t0)
		return b, err
	}
	b.items = make([]store.SequencedItem, 0, 2*len(live))
	lookups, err := w.prefetch(ctx, b, live, bypass, prev)
	t1 := time.Now()
	b.stats.Read = t1.Sub(t0)
	if err != nil {
		return b, err
	}
	for _, x := range live {
		if err := w.decide(ctx, b, x, lookups); err != nil {
			b.stats.Decide = time.Since(t1)
			return b, err
		}
	}
	b.stats.Decide = time.Since(t1)
	for _, wk := range b.working {
		if wk.read && wk.reject == nil && len(wk.applied) == 0 {
			b.validate = append(b.validate, wk)
		}
	}
	return b, nil
}

// skipApplied returns the records above the stored tracking of their partition,
// and sets the batch's tracking.
//
// The stored tracking is the one this writer remembers, unless readTracking is
// set or it remembers none: a writer that consumes its partitions alone (the
// usual case) then reads no tracking at all. If another writer applied records
// since, the remembered tracking is behind, and the commit fails on the first
// tracking it sets (see commit); handle then plans again with readTracking.
func (w *Writer) skipApplied(ctx context.Context, b *batch, in []input, readTracking bool, prev *batch) ([]*input, error) {
	stored := make(map[partitionKey]int64)
	if prev != nil {
		for _, t := range prev.tracking { // in order: the last of a partition is its greatest
			stored[partitionKey{t.Topic, t.Partition}] = t.Position
			b.remembered = true
		}
	}
	for i := range in {
		k := partitionKey{in[i].rec.Topic, in[i].rec.Partition}
		if _, ok := stored[k]; ok {
			continue
		}
		if pos, ok := w.remembered(k); ok && !readTracking {
			stored[k] = pos
			b.remembered = true
			continue
		}
		pos, err := w.rec.Tracking(ctx, w.cfg.TrackingName, k.topic, k.partition)
		if err != nil {
			return nil, fmt.Errorf("read tracking of %s/%d: %w", k.topic, k.partition, err)
		}
		w.remember(k, pos)
		stored[k] = pos
	}
	live := make([]*input, 0, len(in))
	type span struct{ first, last int64 }
	spans := make(map[partitionKey]span)
	for i := range in {
		x := &in[i]
		k := partitionKey{x.rec.Topic, x.rec.Partition}
		if x.dup || x.rec.Offset <= stored[k] {
			b.stats.Skipped++
			continue
		}
		live = append(live, x)
		s, ok := spans[k]
		if !ok {
			s = span{x.rec.Offset, x.rec.Offset}
		}
		s.first, s.last = min(s.first, x.rec.Offset), max(s.last, x.rec.Offset)
		spans[k] = s
	}
	// Tracking moves to the first offset applied, then to the last: the first
	// step fails if another writer applied any record of the batch meanwhile.
	for _, k := range slices.SortedFunc(maps.Keys(spans), func(a, b partitionKey) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	}) {
		t := store.Tracking{Name: w.cfg.TrackingName, Topic: k.topic, Partition: k.partition, Position: spans[k].first}
		b.tracking = append(b.tracking, t)
		if last := spans[k].last; last != t.Position {
			t.Position = last
			b.tracking = append(b.tracking, t)
		}
	}
	return live, nil
}

// prefetch reads what deciding the batch needs: the last item of each
// command's result sequence and of each dead letter's sequence (the lookups),
// and each aggregate a command addresses, into b.working. A cached aggregate is
// used as it is, without a read (see commit for why a stale one is safe); the
// others are rebuilt from the store. With a store.SequencesReader all of it is
// one read, and with snapshots one more read per uncached aggregate that
// exists; without one, it is a read per sequence, ReadConcurrency at a time.
func (w *Writer) prefetch(ctx context.Context, b *batch, live []*input, bypass map[uuid.UUID]bool, prev *batch) (map[uuid.UUID]lookup, error) {
	var seqs []uuid.UUID
	lookups := make(map[uuid.UUID]lookup, len(live))
	var loads []*working
	for _, x := range live {
		id := x.cmd.CommandID
		if x.err != nil {
			id = wire.DeadLetterID(x.rec.Topic, x.rec.Partition, x.rec.Offset)
		}
		if _, ok := lookups[id]; !ok {
			lookups[id] = lookup{}
			seqs = append(seqs, id)
		}
		if x.err != nil {
			continue
		}
		k, ok := w.kinds[x.cmd.Entity]
		if !ok {
			continue
		}
		if _, ok := k.commands[x.cmd.Type]; !ok {
			continue
		}
		key := aggKey{x.cmd.Entity, x.cmd.EntityID}
		if _, ok := b.working[key]; ok {
			continue
		}
		wk := &working{key: key, kind: k}
		b.working[key] = wk
		if pwk := prev.take(key); pwk != nil {
			wk.reject = pwk.reject
			if pwk.agg != nil {
				wk.setAgg(pwk.agg)
			}
			continue
		}
		if bypass[key.id] || bypass[bypassAll] {
			w.cache.drop(key)
		} else if agg, ok := w.cache.take(key); ok {
			wk.setAgg(agg)
			continue
		}
		loads = append(loads, wk)
	}
	if w.seqs != nil {
		return lookups, w.readBatch(ctx, seqs, loads, lookups)
	}
	found := make([]lookup, len(seqs))
	err := w.parallel(ctx, len(seqs)+len(loads), func(ctx context.Context, i int) error {
		if i < len(seqs) {
			var err error
			found[i], err = w.lastItem(ctx, seqs[i])
			return err
		}
		return w.loadStored(ctx, loads[i-len(seqs)])
	})
	if err != nil {
		return nil, err
	}
	for i, id := range seqs {
		lookups[id] = found[i]
	}
	return lookups, nil
}

// lastQuery selects the last item of a sequence.
var lastQuery = store.Query{Desc: true, Limit: 1}

// readBatch fills lookups (the last item of each of seqs) and loads the
// aggregates of loads with one store.SequencesReader call: the whole history
// of each aggregate to replay, or, with snapshots, its last item, and then one
// repository load for each that exists.
func (w *Writer) readBatch(ctx context.Context, seqs []uuid.UUID, loads []*working, lookups map[uuid.UUID]lookup) error {
	replay := w.cfg.SnapshotEvery <= 0
	queries := make(map[uuid.UUID]store.Query, len(seqs)+len(loads))
	for _, id := range seqs {
		queries[id] = lastQuery
	}
	for _, wk := range loads {
		if replay {
			queries[wk.key.id] = store.Query{} // a command id may be an entity id too: the history holds its last item
		} else {
			queries[wk.key.id] = lastQuery
		}
	}
	got, err := w.seqs.SelectSequences(ctx, queries)
	if err != nil {
		return fmt.Errorf("read %d sequences: %w", len(queries), err)
	}
	last := func(id uuid.UUID) lookup {
		items := got[id]
		switch {
		case len(items) == 0:
			return lookup{}
		case queries[id].Desc:
			return lookup{found: true, item: items[0]}
		default:
			return lookup{found: true, item: items[len(items)-1]}
		}
	}
	for _, id := range seqs {
		lookups[id] = last(id)
	}
	if replay {
		for _, wk := range loads {
			if err := w.replay(wk, got[wk.key.id]); err != nil {
				return err
			}
		}
		return nil
	}
	return w.parallel(ctx, len(loads), func(ctx context.Context, i int) error {
		return w.fromStore(ctx, loads[i], last(loads[i].key.id))
	})
}

// decide adds one record's outcome to b.
func (w *Writer) decide(ctx context.Context, b *batch, x *input, lookups map[uuid.UUID]lookup) error {
	if x.err != nil {
		return deadLetter(b, x, x.err.Error(), lookups[wire.DeadLetterID(x.rec.Topic, x.rec.Partition, x.rec.Offset)])
	}
	c := x.cmd.CommandID
	a, ok := b.results[c]
	if !ok {
		if lk := lookups[c]; lk.found {
			if lk.item.Topic != wire.ResultItemTopic {
				return w.collision(ctx, b, x, fmt.Sprintf("command_id %s names a stored sequence of topic %q", c, lk.item.Topic))
			}
			a = &answered{state: lk.item.State, codec: lk.item.Codec, next: lk.item.Position + 1}
			b.results[c] = a
		}
	}
	if a != nil { // a duplicate: publish the original result again
		b.items = append(b.items, store.SequencedItem{
			SequenceID: c, Position: a.next, Topic: wire.ResultItemTopic, State: a.state, Codec: a.codec,
		})
		a.next++
		b.stats.Duplicates++
		return nil
	}
	if t, ok := b.writtenBy[c]; ok {
		return w.collision(ctx, b, x, fmt.Sprintf("command_id %s is the id of a %s written in the same batch", c, t))
	}
	res, evItems, err := w.execute(ctx, b, x)
	if err != nil {
		return err
	}
	it, err := wire.ResultItem(res)
	if err != nil {
		return fmt.Errorf("encode result of %s: %w", c, err)
	}
	b.items = append(b.items, evItems...)
	b.items = append(b.items, it)
	b.results[c] = &answered{state: it.State, codec: it.Codec, next: 1}
	b.stats.add(res.Status)
	b.stats.Events += len(evItems)
	return nil
}

// execute decides one command's outcome. It returns an error only if the batch
// cannot go on.
func (w *Writer) execute(ctx context.Context, b *batch, x *input) (wire.Result, []store.SequencedItem, error) {
	cmd := x.cmd
	res := wire.Result{CommandID: cmd.CommandID, Entity: cmd.Entity, EntityID: cmd.EntityID}
	fail := func(s wire.Status, version int64, err error) (wire.Result, []store.SequencedItem, error) {
		res.Status, res.Version, res.Error = s, version, err.Error()
		return res, nil, nil
	}
	k, ok := w.kinds[cmd.Entity]
	if !ok {
		return fail(wire.StatusInvalid, 0, fmt.Errorf("%w %q", ErrUnknownEntity, cmd.Entity))
	}
	h, ok := k.commands[cmd.Type]
	if !ok {
		return fail(wire.StatusInvalid, 0, fmt.Errorf("%w %q for entity type %q", ErrUnknownCommand, cmd.Type, cmd.Entity))
	}
	if _, ok := b.results[cmd.EntityID]; ok {
		return fail(wire.StatusRejected, 0, fmt.Errorf("command: entity id %s is the id of a command result", cmd.EntityID))
	}
	if t, ok := b.writtenBy[cmd.EntityID]; ok && t != cmd.Entity {
		return fail(wire.StatusRejected, 0, fmt.Errorf("command: entity %s is a %s, not a %s", cmd.EntityID, t, cmd.Entity))
	}
	wk := b.working[aggKey{cmd.Entity, cmd.EntityID}]
	if wk.reject != nil {
		return fail(wire.StatusRejected, 0, wk.reject)
	}
	wk.read = true
	version := wk.agg.Base().Version()
	if ev := cmd.ExpectedVersion; ev != nil && *ev != version {
		return fail(wire.StatusConflict, version, fmt.Errorf("command: expected version %d, %s %s is at version %d", *ev, cmd.Entity, cmd.EntityID, version))
	}
	if wk.agg.Base().Discarded() {
		return fail(wire.StatusRejected, version, fmt.Errorf("%w: %s %s", events.ErrDiscarded, cmd.Entity, cmd.EntityID))
	}

	panicked, err := w.call(ctx, h, wk.agg, cmd)
	evs := wk.agg.Base().CollectEvents()
	var items []store.SequencedItem
	if err == nil {
		items, err = w.encode(k, wk, cmd, evs, x.at)
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return res, nil, ctxErr
		}
		if panicked || len(evs) > 0 || wk.agg.Base().Version() != version {
			if err := w.rebuild(ctx, wk); err != nil {
				return res, nil, err
			}
		}
		status := wire.StatusRejected
		if errors.Is(err, ErrInvalid) {
			status = wire.StatusInvalid
		}
		return fail(status, wk.agg.Base().Version(), err)
	}
	wk.applied = append(wk.applied, evs...)
	res.Status = wire.StatusAccepted
	res.Version = wk.agg.Base().Version()
	res.Positions = make([]int64, len(items))
	for i, it := range items {
		res.Positions[i] = it.Position
	}
	if len(items) > 0 {
		b.writtenBy[cmd.EntityID] = cmd.Entity
	}
	return res, items, nil
}

// call runs a handler, turning a panic into an error (and a log record with the
// stack, which the result does not carry).
func (w *Writer) call(ctx context.Context, h handler, agg events.Root, cmd wire.Command) (panicked bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked, err = true, fmt.Errorf("command: %s %s handler panicked: %v", cmd.Entity, cmd.Type, p)
			w.log.ErrorContext(ctx, "command: handler panicked; the command is rejected",
				logKeyCommand, cmd.CommandID, logKeyError, err, logKeyStack, string(debug.Stack()))
		}
	}()
	return false, h(ctx, agg, cmd)
}

// encode stamps a command's events with its time and maps them to items.
func (w *Writer) encode(k *writerKind, wk *working, cmd wire.Command, evs []events.Event, at time.Time) ([]store.SequencedItem, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	if id := wk.agg.Base().ID(); id != cmd.EntityID {
		return nil, fmt.Errorf("command: %s %s handler made events of %s, not of entity_id %s", cmd.Entity, cmd.Type, id, cmd.EntityID)
	}
	items := make([]store.SequencedItem, len(evs))
	for i, e := range evs {
		e.EventMeta().Timestamp = at
		it, err := w.mapper.ToItem(e)
		if err != nil {
			return nil, fmt.Errorf("command: %s %s: %w", cmd.Entity, cmd.Type, err)
		}
		if events.EntityOf(it.Topic) != k.name {
			return nil, fmt.Errorf("command: %s %s made an event of topic %q, not a topic of entity type %q", cmd.Entity, cmd.Type, it.Topic, k.name)
		}
		items[i] = it
	}
	if err := store.ValidateItems(items); err != nil {
		return nil, fmt.Errorf("command: %s %s: %w", cmd.Entity, cmd.Type, err)
	}
	return items, nil
}

// collision dead-letters a command whose result cannot be stored because its
// command id names another sequence.
func (w *Writer) collision(ctx context.Context, b *batch, x *input, reason string) error {
	lk, err := w.lastItem(ctx, wire.DeadLetterID(x.rec.Topic, x.rec.Partition, x.rec.Offset))
	if err != nil {
		return err
	}
	return deadLetter(b, x, reason, lk)
}

// deadLetter adds the dead letter of x, unless lk shows it is stored already
// (the record was applied before its tracking was lost).
func deadLetter(b *batch, x *input, reason string, lk lookup) error {
	if lk.found {
		return nil
	}
	r := x.rec
	d := wire.DeadLetter{
		Reason: reason, SourceTopic: r.Topic, SourcePartition: r.Partition, SourceOffset: r.Offset,
		Key: r.Key, Value: r.Value, Headers: r.Headers,
	}
	it, err := wire.DeadLetterItem(d)
	if err == nil && len(it.State) > store.MaxStateSize {
		d.Reason += fmt.Sprintf(" (key, value and headers of %d bytes omitted: too large to store)", len(it.State))
		d.Key, d.Value, d.Headers = nil, nil, nil
		it, err = wire.DeadLetterItem(d)
	}
	if err != nil {
		return fmt.Errorf("encode dead letter of %s/%d/%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	b.items = append(b.items, it)
	b.stats.DeadLetters++
	b.dead = append(b.dead, deadNote{r, reason})
	return nil
}

// lastItem returns the last item of a sequence.
func (w *Writer) lastItem(ctx context.Context, id uuid.UUID) (lookup, error) {
	items, err := w.rec.SelectEvents(ctx, id, store.Query{Desc: true, Limit: 1})
	if err != nil {
		return lookup{}, fmt.Errorf("read sequence %s: %w", id, err)
	}
	if len(items) == 0 {
		return lookup{}, nil
	}
	return lookup{found: true, item: items[0]}, nil
}

// loadStored sets wk's aggregate, rebuilt from the store.
func (w *Writer) loadStored(ctx context.Context, wk *working) error {
	last, err := w.lastItem(ctx, wk.key.id)
	if err != nil {
		return err
	}
	return w.fromStore(ctx, wk, last)
}

// fromStore sets wk's aggregate, rebuilt through the repository (from a
// snapshot if configured) given the last item of its sequence. A sequence the
// aggregate cannot be rebuilt from (another entity type's, a result's, or one
// whose events do not replay) sets wk.reject; a store error is returned.
func (w *Writer) fromStore(ctx context.Context, wk *working, last lookup) error {
	k, id := wk.kind, wk.key.id
	if !last.found {
		wk.setAgg(k.newAgg())
		return nil
	}
	if t := events.EntityOf(last.item.Topic); t != k.name {
		wk.reject = takenError(id, last.item.Topic, k.name)
		return nil
	}
	agg, err := k.get(ctx, id)
	switch {
	case err == nil:
		wk.setAgg(agg)
	case errors.Is(err, store.ErrNotFound):
		// The repository hides discarded aggregates; the writer needs their version.
		wk.setAgg(discarded(k, id, last.item.Position+1))
	case errors.Is(err, events.ErrUnknownTopic), errors.Is(err, events.ErrVersion), errors.Is(err, events.ErrDiscarded), errors.Is(err, events.ErrForgotten):
		wk.reject = replayError(k, id, err)
	default:
		return fmt.Errorf("load %s %s: %w", k.name, id, err)
	}
	return nil
}

// replay sets wk's aggregate, rebuilt from items, the whole history of its
// sequence: what fromStore does through a repository without snapshots.
func (w *Writer) replay(wk *working, items []store.SequencedItem) error {
	k, id := wk.kind, wk.key.id
	if len(items) == 0 {
		wk.setAgg(k.newAgg())
		return nil
	}
	last := items[len(items)-1]
	if t := events.EntityOf(last.Topic); t != k.name {
		wk.reject = takenError(id, last.Topic, k.name)
		return nil
	}
	agg := k.newAgg()
	for _, it := range items {
		e, err := w.mapper.FromItem(it)
		if err != nil {
			err = fmt.Errorf("store: sequence %s: %w", id, err) // as store.EventStore.Get says it
			if errors.Is(err, events.ErrUnknownTopic) || errors.Is(err, events.ErrForgotten) {
				wk.reject = replayError(k, id, err)
				return nil
			}
			return fmt.Errorf("load %s %s: %w", k.name, id, err)
		}
		if err := events.Apply(agg, e); err != nil {
			err = fmt.Errorf("store: replay %s: %w", id, err) // as store.Repository says it
			if errors.Is(err, events.ErrVersion) || errors.Is(err, events.ErrDiscarded) || errors.Is(err, events.ErrForgotten) {
				wk.reject = replayError(k, id, err)
				return nil
			}
			return fmt.Errorf("load %s %s: %w", k.name, id, err)
		}
	}
	if agg.Base().Discarded() {
		agg = discarded(k, id, last.Position+1)
	}
	wk.setAgg(agg)
	return nil
}

func (wk *working) setAgg(agg events.Root) {
	wk.agg, wk.base = agg, agg.Base().Version()
}

// discarded returns a discarded aggregate of k at version.
func discarded(k *writerKind, id uuid.UUID, version int64) events.Root {
	agg := k.newAgg()
	agg.Base().Restore(id, version)
	agg.Base().MarkDiscarded()
	return agg
}

func takenError(id uuid.UUID, topic, kind string) error {
	return fmt.Errorf("command: id %s is taken by a sequence of topic %q, not a %s", id, topic, kind)
}

func replayError(k *writerKind, id uuid.UUID, err error) error {
	return fmt.Errorf("command: %s %s cannot be rebuilt from its events: %w", k.name, id, err)
}

// rebuild undoes a failed command's changes to wk's aggregate: it loads the
// aggregate again and applies the batch's accepted events. If the stored
// aggregate moved on meanwhile, it returns a conflict so the batch starts over.
func (w *Writer) rebuild(ctx context.Context, wk *working) error {
	stored := &working{key: wk.key, kind: wk.kind}
	if err := w.loadStored(ctx, stored); err != nil {
		return err
	}
	if stored.reject != nil || stored.base != wk.base {
		return &store.ConflictError{SequenceID: wk.key.id, Position: wk.base}
	}
	agg := stored.agg
	for _, e := range wk.applied {
		if err := events.Apply(agg, e); err != nil {
			return fmt.Errorf("rebuild %s %s: %w", wk.key.typ, wk.key.id, err)
		}
	}
	wk.agg = agg
	return nil
}

// commit stores the batch: tracking first (so a zombie fails fast with
// ErrTrackingConflict; see skipApplied), then checks that the aggregates whose
// unchanged state decided an outcome are still unchanged, then appends every
// item.
//
// This is what makes a stale aggregate safe, such as a cached one that another
// writer appended to (after a rebalance, say): an accepted command's first
// event takes the position at the aggregate's stale version, which the store
// holds already, so the append fails with a conflict and the batch is decided
// again from the store; a rejection or conflict decided on unchanged state
// fails the check.
func (w *Writer) commit(ctx context.Context, b *batch) error {
	return w.rec.InTx(ctx, func(tx store.Tx) error {
		if err := setTracking(ctx, tx, b.tracking); err != nil {
			return err
		}
		if err := unchanged(ctx, tx, b.validate); err != nil {
			return err
		}
		if len(b.items) == 0 {
			return nil
		}
		_, err := tx.InsertEvents(ctx, b.items)
		return err
	})
}

// setTracking records ts in order: in one call if tx is a
// store.TrackingsSetter.
func setTracking(ctx context.Context, tx store.Tx, ts []store.Tracking) error {
	if s, ok := tx.(store.TrackingsSetter); ok {
		return s.SetTrackings(ctx, ts)
	}
	for _, t := range ts {
		if err := tx.SetTracking(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// unchanged returns a conflict if the store holds an item at or after the
// version of any of ws: in one read if tx is a store.SequencesReader.
func unchanged(ctx context.Context, tx store.Tx, ws []*working) error {
	moved := func(wk *working, items []store.SequencedItem) error {
		if len(items) > 0 && items[0].Position >= wk.base {
			return &store.ConflictError{SequenceID: wk.key.id, Position: wk.base}
		}
		return nil
	}
	if sr, ok := tx.(store.SequencesReader); ok && len(ws) > 1 {
		queries := make(map[uuid.UUID]store.Query, len(ws))
		for _, wk := range ws {
			queries[wk.key.id] = lastQuery
		}
		got, err := sr.SelectSequences(ctx, queries)
		if err != nil {
			return err
		}
		for _, wk := range ws {
			if err := moved(wk, got[wk.key.id]); err != nil {
				return err
			}
		}
		return nil
	}
	for _, wk := range ws {
		items, err := tx.SelectEvents(ctx, wk.key.id, lastQuery)
		if err != nil {
			return err
		}
		if err := moved(wk, items); err != nil {
			return err
		}
	}
	return nil
}

// committed keeps the batch's aggregates, now stored, in the cache, remembers
// its tracking, and logs its dead letters.
func (w *Writer) committed(ctx context.Context, b *batch) {
	for _, t := range b.tracking {
		w.remember(partitionKey{t.Topic, t.Partition}, t.Position)
	}
	for _, d := range b.dead {
		w.log.WarnContext(ctx, "command: record sent to the dead-letter topic",
			logKeyTopic, d.rec.Topic, logKeyPartition, d.rec.Partition, logKeyOffset, d.rec.Offset, logKeyReason, d.reason)
	}
	for _, wk := range b.working {
		if wk.agg != nil && wk.reject == nil && wk.agg.Base().Version() > 0 {
			w.cache.put(wk.key, wk.agg)
		}
	}
}

// parallel runs fn(ctx, i) for i in [0, n) on up to ReadConcurrency goroutines
// and returns the first error.
func (w *Writer) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	workers := min(w.cfg.ReadConcurrency, n)
	if workers <= 1 || n < 4 {
		for i := range n {
			if err := fn(ctx, i); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}
