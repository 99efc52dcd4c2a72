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
	// A cached aggregate is always brought up to date from the store before use.
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
	// a batch runs at once before it processes its commands in order. It
	// overrides DefaultReadConcurrency; 1 reads one at a time.
	ReadConcurrency int
	// Now is the clock that stamps the events of records without a timestamp.
	// It overrides time.Now.
	Now func() time.Time
	// Logger receives a warning for each dead letter and a note for each retry.
	// It overrides the default of logging nothing.
	Logger *slog.Logger
	// OnBatch, if set, is called at the end of every HandleBatch call, on the
	// calling goroutine, for metrics (so concurrently if HandleBatch runs
	// concurrently). It must not block.
	OnBatch func(BatchStats)
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
	mapper *events.Mapper
	es     *store.EventStore
	cfg    WriterConfig
	kinds  map[string]*writerKind
	cache  *aggCache
	log    *slog.Logger
	stats  counters
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
	w := &Writer{
		rec:    rec,
		mapper: mapper,
		es:     store.NewEventStore(mapper, rec),
		cfg:    cfg,
		kinds:  make(map[string]*writerKind, len(kinds)),
		cache:  newAggCache(cfg.CacheSize),
		log:    cfg.Logger,
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
func (w *Writer) Tracking(ctx context.Context, name, topic string, partition int32) (int64, error) {
	return w.rec.Tracking(ctx, w.cfg.TrackingName, topic, partition)
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
func (w *Writer) HandleBatch(ctx context.Context, records []wire.Record) error {
	start := time.Now()
	st := BatchStats{Records: len(records)}
	err := w.handle(ctx, records, &st)
	st.Duration = time.Since(start)
	st.Err = err
	w.stats.record(st)
	if w.cfg.OnBatch != nil {
		w.cfg.OnBatch(st)
	}
	return err
}

func (w *Writer) handle(ctx context.Context, records []wire.Record, st *BatchStats) error {
	if len(records) == 0 {
		return nil
	}
	in := w.decode(records)
	bypass := make(map[uuid.UUID]bool)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := w.plan(ctx, in, bypass)
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
				*st = b.stats
				return nil
			}
		}
		// The aggregates b took out of the cache are dropped with b.
		if errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrTrackingConflict) && attempt < w.cfg.MaxConflictRetries {
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
}

type deadNote struct {
	rec    *wire.Record
	reason string
}

func (b *batch) empty() bool { return len(b.tracking) == 0 && len(b.items) == 0 }

// plan reads what the batch needs and decides every record's outcome.
func (w *Writer) plan(ctx context.Context, in []input, bypass map[uuid.UUID]bool) (*batch, error) {
	b := &batch{
		working:   make(map[aggKey]*working),
		results:   make(map[uuid.UUID]*answered),
		writtenBy: make(map[uuid.UUID]string),
	}
	live, err := w.skipApplied(ctx, b, in)
	if err != nil || len(live) == 0 {
		return b, err
	}
	lookups, err := w.prefetch(ctx, b, live, bypass)
	if err != nil {
		return nil, err
	}
	for _, x := range live {
		if err := w.decide(ctx, b, x, lookups); err != nil {
			return nil, err
		}
	}
	for _, wk := range b.working {
		if wk.read && wk.reject == nil && len(wk.applied) == 0 {
			b.validate = append(b.validate, wk)
		}
	}
	return b, nil
}

// skipApplied returns the records above the stored tracking of their partition,
// and sets the batch's tracking.
func (w *Writer) skipApplied(ctx context.Context, b *batch, in []input) ([]*input, error) {
	stored := make(map[partitionKey]int64)
	for i := range in {
		k := partitionKey{in[i].rec.Topic, in[i].rec.Partition}
		if _, ok := stored[k]; ok {
			continue
		}
		pos, err := w.rec.Tracking(ctx, w.cfg.TrackingName, k.topic, k.partition)
		if err != nil {
			return nil, fmt.Errorf("read tracking of %s/%d: %w", k.topic, k.partition, err)
		}
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

// prefetch reads, concurrently, the last item of each command's result sequence
// and of each dead letter's sequence, and loads each aggregate a command
// addresses into b.working.
func (w *Writer) prefetch(ctx context.Context, b *batch, live []*input, bypass map[uuid.UUID]bool) (map[uuid.UUID]lookup, error) {
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
		if _, ok := b.working[key]; !ok {
			wk := &working{key: key, kind: k}
			b.working[key] = wk
			loads = append(loads, wk)
		}
	}
	found := make([]lookup, len(seqs))
	err := w.parallel(ctx, len(seqs)+len(loads), func(ctx context.Context, i int) error {
		if i < len(seqs) {
			var err error
			found[i], err = w.lastItem(ctx, seqs[i])
			return err
		}
		wk := loads[i-len(seqs)]
		return w.load(ctx, wk, bypass[wk.key.id] || bypass[bypassAll])
	})
	if err != nil {
		return nil, err
	}
	for i, id := range seqs {
		lookups[id] = found[i]
	}
	return lookups, nil
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

// load sets wk's aggregate: the cached one brought up to date, or (on a miss,
// or with bypass) one rebuilt through the repository.
func (w *Writer) load(ctx context.Context, wk *working, bypass bool) error {
	if bypass {
		w.cache.drop(wk.key)
	} else if agg, ok := w.cache.take(wk.key); ok {
		after := agg.Base().Version() - 1
		evs, err := w.es.Get(ctx, wk.key.id, store.Query{After: &after})
		if err != nil && !errors.Is(err, events.ErrUnknownTopic) {
			return fmt.Errorf("read %s %s: %w", wk.key.typ, wk.key.id, err)
		}
		fresh := err == nil
		for _, e := range evs {
			if events.Apply(agg, e) != nil {
				fresh = false
				break
			}
		}
		if fresh {
			wk.agg, wk.base = agg, agg.Base().Version()
			return nil
		}
	}
	agg, reject, err := w.loadStored(ctx, wk.kind, wk.key.id)
	if err != nil {
		return err
	}
	wk.agg, wk.reject = agg, reject
	if agg != nil {
		wk.base = agg.Base().Version()
	}
	return nil
}

// loadStored rebuilds an aggregate from the store. A sequence the aggregate
// cannot be rebuilt from (another entity type's, a result's, or one whose events
// do not replay) gives a reject error; a store error gives err.
func (w *Writer) loadStored(ctx context.Context, k *writerKind, id uuid.UUID) (agg events.Root, reject, err error) {
	last, err := w.lastItem(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if !last.found {
		return k.newAgg(), nil, nil
	}
	if t := events.EntityOf(last.item.Topic); t != k.name {
		return nil, fmt.Errorf("command: id %s is taken by a sequence of topic %q, not a %s", id, last.item.Topic, k.name), nil
	}
	agg, err = k.get(ctx, id)
	switch {
	case err == nil:
		return agg, nil, nil
	case errors.Is(err, store.ErrNotFound):
		// The repository hides discarded aggregates; the writer needs their version.
		agg = k.newAgg()
		agg.Base().Restore(id, last.item.Position+1)
		agg.Base().MarkDiscarded()
		return agg, nil, nil
	case errors.Is(err, events.ErrUnknownTopic), errors.Is(err, events.ErrVersion), errors.Is(err, events.ErrDiscarded):
		return nil, fmt.Errorf("command: %s %s cannot be rebuilt from its events: %w", k.name, id, err), nil
	default:
		return nil, nil, fmt.Errorf("load %s %s: %w", k.name, id, err)
	}
}

// rebuild undoes a failed command's changes to wk's aggregate: it loads the
// aggregate again and applies the batch's accepted events. If the stored
// aggregate moved on meanwhile, it returns a conflict so the batch starts over.
func (w *Writer) rebuild(ctx context.Context, wk *working) error {
	agg, reject, err := w.loadStored(ctx, wk.kind, wk.key.id)
	if err != nil {
		return err
	}
	if reject != nil || agg.Base().Version() != wk.base {
		return &store.ConflictError{SequenceID: wk.key.id, Position: wk.base}
	}
	for _, e := range wk.applied {
		if err := events.Apply(agg, e); err != nil {
			return fmt.Errorf("rebuild %s %s: %w", wk.key.typ, wk.key.id, err)
		}
	}
	wk.agg = agg
	return nil
}

// commit stores the batch: tracking first (so a zombie fails fast with
// ErrTrackingConflict; see plan), then checks that the aggregates whose unchanged state
// decided an outcome are still unchanged, then appends every item.
func (w *Writer) commit(ctx context.Context, b *batch) error {
	return w.rec.InTx(ctx, func(tx store.Tx) error {
		for _, t := range b.tracking {
			if err := tx.SetTracking(ctx, t); err != nil {
				return err
			}
		}
		for _, wk := range b.validate {
			after := wk.base - 1
			items, err := tx.SelectEvents(ctx, wk.key.id, store.Query{After: &after, Limit: 1})
			if err != nil {
				return err
			}
			if len(items) > 0 {
				return &store.ConflictError{SequenceID: wk.key.id, Position: wk.base}
			}
		}
		if len(b.items) == 0 {
			return nil
		}
		_, err := tx.InsertEvents(ctx, b.items)
		return err
	})
}

// committed keeps the batch's aggregates, now stored, in the cache, and logs its
// dead letters.
func (w *Writer) committed(ctx context.Context, b *batch) {
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
