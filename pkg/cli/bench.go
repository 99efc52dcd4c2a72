package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventlog/eventlog/internal/config"
	wcmd "github.com/eventlog/eventlog/pkg/command"
	"github.com/eventlog/eventlog/pkg/kafka"
	"github.com/eventlog/eventlog/pkg/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/wire"
)

// BenchResult is what `eventlog bench --json` prints.
type BenchResult struct {
	Store             string  `json:"store"`
	Commands          int     `json:"commands"`
	CommandsPerSecond float64 `json:"commands_per_second"`
	Events            int64   `json:"events"`
	RelayEventsPerSec float64 `json:"relay_events_per_second"`
	Rate              int     `json:"latency_rate"`
	P50ms             float64 `json:"latency_p50_ms"`
	P99ms             float64 `json:"latency_p99_ms"`
	CPUs              int     `json:"cpus"`
	// The workload's shape: Zipf exponent of the entity choice (0:
	// uniform), entities created before the measured phases.
	Zipf     float64 `json:"zipf,omitempty"`
	Preload  int     `json:"preload,omitempty"`
	Rejected int64   `json:"rejected"` // commands the writer rejected, over the run
	Conflict int64   `json:"conflict"` // commands that met a version conflict
	// The mixed phase: commands at Rate while readers fetch entities.
	Mixed *BenchMixed `json:"mixed,omitempty"`
	// The process's resident memory when the writer had started, at the
	// end, and the highest seen (sampled every second).
	RSSStart int64 `json:"rss_start_bytes"`
	RSSEnd   int64 `json:"rss_end_bytes"`
	RSSPeak  int64 `json:"rss_peak_bytes"`
	// The Go heap in use at the same two moments (runtime.MemStats.HeapInuse).
	HeapStart int64 `json:"heap_start_bytes"`
	HeapEnd   int64 `json:"heap_end_bytes"`
	// Where the time goes: the writer's batches in each phase, and, in the
	// latency phase, the time from produce until the relay produced the
	// result (consumer pick-up, the writer's batch, relay pick-up) and from
	// then until the result was consumed.
	Throughput   BenchStages `json:"throughput_batches"`
	Latency      BenchStages `json:"latency_batches"`
	ToRelayP50ms float64     `json:"to_relay_p50_ms"`
	ToRelayP99ms float64     `json:"to_relay_p99_ms"`
	RelayToP50ms float64     `json:"relay_to_result_p50_ms"`
	RelayToP99ms float64     `json:"relay_to_result_p99_ms"`
}

// BenchMixed is the mixed phase: commands at a fixed rate while HTTP readers
// fetch rebuilt entities (GET /v1/entities/{type}/{id}, one in ten with
// ?version=1).
type BenchMixed struct {
	Seconds           float64 `json:"seconds"`
	Readers           int     `json:"readers"`
	Commands          int64   `json:"commands"`
	CommandsPerSecond float64 `json:"commands_per_second"`
	CommandP50ms      float64 `json:"command_p50_ms"`
	CommandP99ms      float64 `json:"command_p99_ms"`
	Reads             int64   `json:"reads"`
	ReadsPerSecond    float64 `json:"reads_per_second"`
	ReadP50ms         float64 `json:"read_p50_ms"`
	ReadP99ms         float64 `json:"read_p99_ms"`
	ReadErrors        int64   `json:"read_errors"`
	ReadShare         float64 `json:"read_share"` // of all operations, as measured
	// Unanswered counts commands whose result had not come
	// mixedDrainTimeout after the phase.
	Unanswered int `json:"unanswered"`
	// The process's RSS as the phase began, after the preload and the
	// phases before it, and as it ended: the pair that shows whether memory
	// stays flat under a steady load.
	RSSStart int64 `json:"rss_start_bytes"`
	RSSEnd   int64 `json:"rss_end_bytes"`
}

// BenchStages sums up the writer's batches of one phase.
type BenchStages struct {
	Batches         int     `json:"batches"`
	RecordsPerBatch float64 `json:"records_per_batch"`
	ReadMs          float64 `json:"read_ms"`   // mean reads before the transaction
	DecideMs        float64 `json:"decide_ms"` // mean decode and decide
	AppendMs        float64 `json:"append_ms"` // mean transaction
	BatchMs         float64 `json:"batch_ms"`  // mean whole batch
	BatchP99ms      float64 `json:"batch_p99_ms"`
}

// stageRecorder collects the writer's batch statistics.
type stageRecorder struct {
	mu  sync.Mutex
	all []wcmd.BatchStats
}

func (s *stageRecorder) add(b wcmd.BatchStats) {
	s.mu.Lock()
	s.all = append(s.all, b)
	s.mu.Unlock()
}

// take sums up and forgets the batches recorded so far.
func (s *stageRecorder) take() BenchStages {
	s.mu.Lock()
	all := s.all
	s.all = nil
	s.mu.Unlock()
	var out BenchStages
	if len(all) == 0 {
		return out
	}
	var records int
	var read, decide, app, whole time.Duration
	ds := make([]time.Duration, len(all))
	for i, b := range all {
		records += b.Records
		read, decide, app, whole = read+b.Read, decide+b.Decide, app+b.Append, whole+b.Duration
		ds[i] = b.Duration
	}
	slices.Sort(ds)
	n := float64(len(all))
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 / n }
	out = BenchStages{Batches: len(all), RecordsPerBatch: float64(records) / n,
		ReadMs: ms(read), DecideMs: ms(decide), AppendMs: ms(app), BatchMs: ms(whole),
		BatchP99ms: float64(ds[min(len(ds)*99/100, len(ds)-1)]) / 1e6}
	return out
}

// percentiles returns the 50th and 99th percentile of ds in milliseconds,
// sorting ds.
func percentiles(ds []time.Duration) (p50, p99 float64) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return float64(ds[len(ds)*50/100]) / 1e6, float64(ds[min(len(ds)*99/100, len(ds)-1)]) / 1e6
}

// Bench runs the end-to-end benchmark: an in-process broker, the store, one
// writer with its relay; it produces commands and waits for their results.
func (p Program) Bench(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("bench"), "Measure eventlog end to end: commands/s from produce to result, relay events/s, and latency at a fixed rate.", env.Stderr)
	var (
		n, entities, rate int
		latencyFor        time.Duration
		dsn               string
		asJSON            bool
		zipfS             float64
		preload           int
		mixFor            time.Duration
		nReaders          int
		readShare         float64
		cacheSize         int
	)
	fs.IntVar(&n, "commands", 20000, "commands in the throughput phase")
	fs.IntVar(&entities, "entities-n", 2000, "distinct entities they go to")
	fs.IntVar(&rate, "rate", 2000, "commands/s in the latency and mixed phases")
	fs.DurationVar(&latencyFor, "latency-for", 5*time.Second, "length of the latency phase (0: skip)")
	fs.Float64Var(&zipfS, "zipf", 0, "Zipf exponent of the entity each command and read goes to, above 1 (1.1: a few hot entities take most; 0: uniform)")
	fs.IntVar(&preload, "preload", 0, "entities (of -entities-n) created before the measured phases")
	fs.DurationVar(&mixFor, "duration", 0, "length of the mixed phase: commands at -rate while -readers fetch entities over HTTP (0: skip)")
	fs.IntVar(&nReaders, "readers", 8, "HTTP readers of the mixed phase; one read in ten asks ?version=1")
	fs.Float64Var(&readShare, "read-share", 0.85, "reads' share of the mixed phase's operations, from 0 to 1: reads/s = -rate * share/(1-share); 1: as many as the readers can")
	var brokerList config.List
	fs.Var(&brokerList, "kafka-brokers", "Kafka seed brokers to use, host:port[,host:port...], with topics of the run's own (empty: an in-process broker, whose records count in the RSS)")
	fs.IntVar(&cacheSize, "cache-size", 0, "aggregates the writer and the entity API keep in memory each (0: the default; -1: none)")
	fs.StringVar(&dsn, "postgres-dsn", "", "benchmark PostgreSQL (a schema of its own, dropped afterwards) instead of SQLite")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.Secret("postgres-dsn")
	// What one run measures, not how a service is configured: a service's
	// environment (EVENTLOG_KAFKA_BROKERS, EVENTLOG_DURATION) must not
	// change it.
	fs.Local("zipf", "preload", "duration", "readers", "read-share", "kafka-brokers")
	entityTypes := p.entitiesFlag(fs, "entity types the writer runs, comma-separated (the workload uses the first)")
	k := kafkaFlags{prefix: "eventlog", partitions: 4, replication: -1}
	k.registerCompression(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if err := k.checkCompression(); err != nil {
		return UsageError{err}
	}
	d, err := p.domain(*entityTypes)
	if err != nil {
		return err
	}
	workload := d.Workload()
	if workload == nil {
		return UsageError{errors.New("the domain gives bench no workload (service.Domain.SetWorkload)")}
	}
	if n < 1 || entities < 1 || entities > n || rate < 1 {
		return UsageError{fmt.Errorf("want -commands >= -entities-n >= 1 and -rate >= 1")}
	}
	if err := checkPhases(zipfS, preload, entities, mixFor, nReaders, readShare, cacheSize); err != nil {
		return UsageError{err}
	}
	if len(brokerList) > 0 {
		k.brokers = brokerList
		if err := k.check(); err != nil {
			return UsageError{err}
		}
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	group := ""
	if len(brokerList) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
		if err != nil {
			return err
		}
		defer cluster.Close()
		brokerList = cluster.ListenAddrs()
	} else {
		// Topics and a group of the run's own, so that nothing of an
		// earlier run is consumed.
		k.prefix = "bench-" + uuid.NewString()[:8]
		group = k.prefix + "-writer"
	}
	tmp, err := os.MkdirTemp("", "eventlog-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	s := storeFlags{dsn: dsn, sqlite: filepath.Join(tmp, "bench.db"), schema: "public", migrate: true}
	if dsn != "" {
		s.schema = "bench_" + uuid.NewString()[:8]
	}
	backend, closeStore, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer closeStore()
	if dsn != "" {
		defer dropSchema(dsn, s.schema)
	}
	brokers := []string(brokerList)
	k.brokers = brokerList
	stages := &stageRecorder{}
	w, err := service.NewWriter(ctx, service.WriterConfig{Backend: backend, Kafka: k.service(log), Domain: d, Log: log, OnBatch: stages.add,
		CacheSize: cacheSize, Group: group})
	if err != nil {
		return err
	}
	wctx, stopWriter := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { stopWriter(); <-wdone }()
	var httpAddr string
	if mixFor > 0 && nReaders > 0 {
		addr, stop, err := benchHTTP(w, log)
		if err != nil {
			return err
		}
		defer stop()
		httpAddr = addr
	}
	rss := watchRSS()
	rssStart := rssBytes()
	heapStart := heapInuse()
	fmt.Fprintf(env.Stderr, "RSS at start: %s (Go heap %s)\n", mib(rssStart), mib(heapStart))

	topics := wire.Topics{Prefix: k.prefix}
	prod, err := kgo.NewClient(k.clientOptions(kgo.ProducerLinger(0), kgo.MaxBufferedRecords(1<<20))...)
	if err != nil {
		return err
	}
	defer prod.Close()
	results := newResultWatcher()
	rcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics.Results()), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchMaxWait(kafka.CommanderFetchMaxWait))
	if err != nil {
		return err
	}
	defer rcl.Close()
	rctx, stopResults := context.WithCancel(ctx)
	defer stopResults()
	go results.consume(rctx, rcl)
	rcl.ForceMetadataRefresh()
	time.Sleep(500 * time.Millisecond) // let the results consumer settle at the end

	ids := make([]uuid.UUID, entities)
	for i := range ids {
		ids[i] = uuid.New()
	}
	eventTopics := map[string]bool{}
	choose := newChooser(entities, zipfS, 1)
	// The i-th command of the throughput phase creates entity i, unless it
	// was preloaded; every other command updates an existing one.
	command := func(i int) (wire.Command, []byte) {
		j, first := i%entities, i < entities && i >= preload
		if zipfS > 0 && !first {
			j = choose.pick(min(entities, max(i, preload)))
		}
		c := workload(ids[j], first, preload+i)
		c.CommandID = uuid.New()
		eventTopics[topics.Events(c.Entity)] = true
		b, _ := json.Marshal(c)
		return c, b
	}
	preloaded := int64(0)
	if preload > 0 {
		bar := newProgressBar(env.Stderr, "preload")
		for i := range preload {
			c := workload(ids[i], true, i)
			c.CommandID = uuid.New()
			eventTopics[topics.Events(c.Entity)] = true
			b, _ := json.Marshal(c)
			results.expect(c.CommandID)
			prod.Produce(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(c.EntityID.String()), Value: b}, nil)
		}
		for results.done() < int64(preload) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			bar.set(results.done(), int64(preload), thousands(results.done())+" entities")
			time.Sleep(20 * time.Millisecond)
		}
		bar.set(int64(preload), int64(preload), thousands(int64(preload))+" entities")
		bar.finish()
		preloaded = int64(preload)
		stages.take()
	}

	// Throughput: produce everything, wait for every result.
	var baseEvents int64 // the preload's, on Kafka already
	for preloaded > 0 {
		if baseEvents, err = eventsOnKafka(ctx, kadm.NewClient(prod), eventTopics); err == nil && baseEvents >= preloaded {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	bar := newProgressBar(env.Stderr, "commands")
	start := time.Now()
	for i := range n {
		c, b := command(i)
		results.expect(c.CommandID)
		prod.Produce(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(c.EntityID.String()), Value: b}, nil)
	}
	for results.done()-preloaded < int64(n) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		bar.set(results.done()-preloaded, int64(n), thousands(results.done()-preloaded)+" results")
		time.Sleep(20 * time.Millisecond)
	}
	bar.set(int64(n), int64(n), thousands(int64(n))+" results")
	bar.finish()
	elapsed := time.Since(start)
	res := BenchResult{Store: backend.Name, Commands: n, CommandsPerSecond: float64(n) / elapsed.Seconds(), Rate: rate, CPUs: runtime.NumCPU(),
		Zipf: zipfS, Preload: preload, RSSStart: rssStart, HeapStart: heapStart}
	res.Throughput = stages.take()

	// Relay: time until every event is on Kafka, from the same start.
	adm := kadm.NewClient(prod)
	for {
		total, err := eventsOnKafka(ctx, adm, eventTopics)
		if err == nil && total-baseEvents >= int64(n) {
			res.Events = total - baseEvents
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.RelayEventsPerSec = float64(res.Events) / time.Since(start).Seconds()

	// Latency at a fixed rate.
	if latencyFor > 0 {
		total := int(float64(rate) * latencyFor.Seconds())
		bar = newProgressBar(env.Stderr, "latency")
		lat := make([]time.Duration, 0, total)
		toRelay := make([]time.Duration, 0, total)
		relayTo := make([]time.Duration, 0, total)
		stages.take() // the batches of the relay wait above
		var mu sync.Mutex
		tick := time.Second / time.Duration(rate)
		next := time.Now()
		var wg sync.WaitGroup
		for i := range total {
			next = next.Add(tick)
			time.Sleep(time.Until(next))
			c, b := command(n + i)
			sent := time.Now()
			wait := results.expect(c.CommandID)
			wg.Add(1)
			prod.Produce(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(c.EntityID.String()), Value: b}, func(*kgo.Record, error) {
				go func() {
					defer wg.Done()
					select {
					case got := <-wait:
						mu.Lock()
						lat = append(lat, got.at.Sub(sent))
						toRelay = append(toRelay, got.produced.Sub(sent))
						relayTo = append(relayTo, got.at.Sub(got.produced))
						mu.Unlock()
					case <-ctx.Done():
					}
				}()
			})
			bar.set(int64(i+1), int64(total), fmt.Sprintf("%d/s", rate))
		}
		wg.Wait()
		bar.finish()
		res.P50ms, res.P99ms = percentiles(lat)
		res.ToRelayP50ms, res.ToRelayP99ms = percentiles(toRelay)
		res.RelayToP50ms, res.RelayToP99ms = percentiles(relayTo)
		res.Latency = stages.take()
	}
	sent := n + int(float64(rate)*latencyFor.Seconds())
	if mixFor > 0 {
		produce := func(i int, h *hist) {
			c, b := command(sent + i)
			results.expectInto(c.CommandID, time.Now(), h)
			prod.Produce(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(c.EntityID.String()), Value: b}, nil)
		}
		var rd *readers
		if nReaders > 0 {
			rd = newReaders(httpAddr, workload(ids[0], true, 0).Entity, ids, choose.fork(99), nReaders)
		}
		m := mixedPhase(ctx, env, mixFor, rate, produce, results.pending, rd, nReaders, readShare)
		res.Mixed = &m
	}
	st := w.Stats()
	res.Rejected, res.Conflict = st.Rejected, st.Conflict
	res.RSSEnd, res.HeapEnd = rssBytes(), heapInuse()
	res.RSSPeak = max(rss.close(), res.RSSEnd)
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(res)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "store\t%s\t\n", res.Store)
	fmt.Fprintf(tw, "commands, produce to result\t%s\t%.0f commands/s\t\n", thousands(int64(n)), res.CommandsPerSecond)
	fmt.Fprintf(tw, "relay\t%s events\t%.0f events/s\t\n", thousands(res.Events), res.RelayEventsPerSec)
	stageLine := func(name string, st BenchStages) {
		fmt.Fprintf(tw, "%s\t%d batches of %.0f\tread %.1f, decide %.1f, append %.1f, whole %.1f ms (p99 %.1f)\t\n",
			name, st.Batches, st.RecordsPerBatch, st.ReadMs, st.DecideMs, st.AppendMs, st.BatchMs, st.BatchP99ms)
	}
	stageLine("writer batches, throughput", res.Throughput)
	if latencyFor > 0 {
		fmt.Fprintf(tw, "latency at %d commands/s\tp50 %.1f ms\tp99 %.1f ms\t\n", rate, res.P50ms, res.P99ms)
		fmt.Fprintf(tw, "  produce to relay produce\tp50 %.1f ms\tp99 %.1f ms\t\n", res.ToRelayP50ms, res.ToRelayP99ms)
		fmt.Fprintf(tw, "  relay produce to result\tp50 %.1f ms\tp99 %.1f ms\t\n", res.RelayToP50ms, res.RelayToP99ms)
		stageLine("writer batches, latency", res.Latency)
	}
	if m := res.Mixed; m != nil {
		fmt.Fprintf(tw, "mixed, %.0fs: commands\t%s at %.0f/s\tp50 %.1f ms, p99 %.1f ms command to result; %d unanswered\t\n",
			m.Seconds, thousands(m.Commands), m.CommandsPerSecond, m.CommandP50ms, m.CommandP99ms, m.Unanswered)
		fmt.Fprintf(tw, "mixed, %.0fs: reads (%d readers)\t%s at %.0f/s\tp50 %.2f ms, p99 %.2f ms; %.0f%% of operations, %d failed\t\n",
			m.Seconds, m.Readers, thousands(m.Reads), m.ReadsPerSecond, m.ReadP50ms, m.ReadP99ms, 100*m.ReadShare, m.ReadErrors)
		fmt.Fprintf(tw, "mixed, %.0fs: RSS\tstart %s, end %s\t\t\n", m.Seconds, mib(m.RSSStart), mib(m.RSSEnd))
	}
	shape := "uniform"
	if res.Zipf > 0 {
		shape = fmt.Sprintf("Zipf s=%g", res.Zipf)
	}
	fmt.Fprintf(tw, "workload\t%s over %s entities, %s preloaded\t%d rejected, %d conflicts\t\n", shape, thousands(int64(entities)), thousands(int64(preload)), res.Rejected, res.Conflict)
	fmt.Fprintf(tw, "RSS\tstart %s, end %s, peak %s\tGo heap start %s, end %s\t\n", mib(res.RSSStart), mib(res.RSSEnd), mib(res.RSSPeak), mib(res.HeapStart), mib(res.HeapEnd))
	fmt.Fprintf(tw, "machine\t%d CPUs\t%s/%s\t\n", res.CPUs, runtime.GOOS, runtime.GOARCH)
	return tw.Flush()
}

// dropSchema removes the benchmark's PostgreSQL schema.
func dropSchema(dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := postgres.Connect(ctx, dsn)
	if err != nil {
		return
	}
	defer pool.Close()
	_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
}

// resultWatcher counts results and wakes waiters.
type resultWatcher struct {
	mu      sync.Mutex
	waiting map[uuid.UUID]waiter
	n       atomic.Int64
}

// A waiter is told of its result's arrival on ch, or, with h set, adds the
// time from sent to the arrival to h.
type waiter struct {
	ch   chan arrival
	sent time.Time
	h    *hist
}

// arrival is when a result was consumed, and when the relay produced it (the
// record's timestamp).
type arrival struct {
	at, produced time.Time
}

func newResultWatcher() *resultWatcher {
	return &resultWatcher{waiting: make(map[uuid.UUID]waiter)}
}

func (r *resultWatcher) expect(id uuid.UUID) <-chan arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan arrival, 1)
	r.waiting[id] = waiter{ch: ch}
	return ch
}

// expectInto adds the time from sent until command id's result arrives to
// h: a command waited for costs a map entry, no goroutine.
func (r *resultWatcher) expectInto(id uuid.UUID, sent time.Time, h *hist) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting[id] = waiter{sent: sent, h: h}
}

// pending returns the number of results waited for.
func (r *resultWatcher) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiting)
}

func (r *resultWatcher) done() int64 { return r.n.Load() }

func (r *resultWatcher) consume(ctx context.Context, cl *kgo.Client) {
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		now := time.Now()
		fetches.EachRecord(func(rec *kgo.Record) {
			id, err := kafka.ResultCommandID(rec.Value)
			if err != nil {
				return
			}
			r.mu.Lock()
			w, ok := r.waiting[id]
			delete(r.waiting, id)
			r.mu.Unlock()
			switch {
			case !ok:
			case w.h != nil:
				w.h.add(now.Sub(w.sent))
				r.n.Add(1)
			default:
				w.ch <- arrival{at: now, produced: rec.Timestamp}
				r.n.Add(1)
			}
		})
	}
}
