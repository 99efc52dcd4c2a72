package cli

import (
	"context"
	"encoding/json"
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
	"github.com/eventlog/eventlog/internal/service"
	"github.com/eventlog/eventlog/pkg/store/postgres"
	"github.com/eventlog/eventlog/pkg/wire"
)

func init() {
	extra["bench"] = command{Bench, "measure commands/s, relay events/s and command latency end to end"}
}

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
}

// Bench runs the end-to-end benchmark: an in-process broker, the store, one
// writer with its relay; it produces commands and waits for their results.
func Bench(ctx context.Context, args []string, env Env) error {
	fs := config.New("eventlog bench", "Measure eventlog end to end: commands/s from produce to result, relay events/s, and latency at a fixed rate.", env.Stderr)
	var (
		n, entities, rate int
		latencyFor        time.Duration
		dsn               string
		asJSON            bool
	)
	fs.IntVar(&n, "commands", 20000, "commands in the throughput phase")
	fs.IntVar(&entities, "entities-n", 2000, "distinct entities they go to")
	fs.IntVar(&rate, "rate", 2000, "commands/s in the latency phase")
	fs.DurationVar(&latencyFor, "latency-for", 5*time.Second, "length of the latency phase (0: skip)")
	fs.StringVar(&dsn, "postgres-dsn", "", "benchmark PostgreSQL (a schema of its own, dropped afterwards) instead of SQLite")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.Secret("postgres-dsn")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if n < 1 || entities < 1 || entities > n || rate < 1 {
		return UsageError{fmt.Errorf("want -commands >= -entities-n >= 1 and -rate >= 1")}
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
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
	if err != nil {
		return err
	}
	defer cluster.Close()
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
	brokers := cluster.ListenAddrs()
	k := kafkaFlags{brokers: brokers, prefix: "eventlog", partitions: 4, replication: -1}
	w, err := service.NewWriter(ctx, service.WriterConfig{Backend: backend, Kafka: k.service(log), Entities: []string{"example"}, Log: log})
	if err != nil {
		return err
	}
	wctx, stopWriter := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { stopWriter(); <-wdone }()

	topics := wire.Topics{Prefix: "eventlog"}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(1<<20))
	if err != nil {
		return err
	}
	defer prod.Close()
	results := newResultWatcher()
	rcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics.Results()), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))
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
	command := func(i int) (wire.Command, []byte) {
		id := ids[i%entities]
		c := wire.Command{CommandID: uuid.New(), Type: wire.TypeUpdate, Entity: "example", EntityID: id, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
		if i < entities {
			c.Type, c.Data = wire.TypeCreate, json.RawMessage(`{"foo":"bar"}`)
		}
		b, _ := json.Marshal(c)
		return c, b
	}

	// Throughput: produce everything, wait for every result.
	bar := newProgressBar(env.Stderr, "commands")
	start := time.Now()
	for i := range n {
		c, b := command(i)
		results.expect(c.CommandID)
		prod.Produce(ctx, &kgo.Record{Topic: topics.Commands(), Key: []byte(c.EntityID.String()), Value: b}, nil)
	}
	for results.done() < int64(n) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		bar.set(results.done(), int64(n), thousands(results.done())+" results")
		time.Sleep(20 * time.Millisecond)
	}
	bar.set(int64(n), int64(n), thousands(int64(n))+" results")
	bar.finish()
	elapsed := time.Since(start)
	res := BenchResult{Store: backend.Name, Commands: n, CommandsPerSecond: float64(n) / elapsed.Seconds(), Rate: rate, CPUs: runtime.NumCPU()}

	// Relay: time until every event is on Kafka, from the same start.
	adm := kadm.NewClient(prod)
	for {
		ends, err := adm.ListEndOffsets(ctx, topics.Events("example"))
		if err == nil {
			var total int64
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
			if total >= int64(n) {
				res.Events = total
				break
			}
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
					case <-wait:
						mu.Lock()
						lat = append(lat, time.Since(sent))
						mu.Unlock()
					case <-ctx.Done():
					}
				}()
			})
			bar.set(int64(i+1), int64(total), fmt.Sprintf("%d/s", rate))
		}
		wg.Wait()
		bar.finish()
		slices.Sort(lat)
		if len(lat) > 0 {
			res.P50ms = float64(lat[len(lat)*50/100]) / 1e6
			res.P99ms = float64(lat[min(len(lat)*99/100, len(lat)-1)]) / 1e6
		}
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(res)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "store\t%s\t\n", res.Store)
	fmt.Fprintf(tw, "commands, produce to result\t%s\t%.0f commands/s\t\n", thousands(int64(n)), res.CommandsPerSecond)
	fmt.Fprintf(tw, "relay\t%s events\t%.0f events/s\t\n", thousands(res.Events), res.RelayEventsPerSec)
	if latencyFor > 0 {
		fmt.Fprintf(tw, "latency at %d commands/s\tp50 %.1f ms\tp99 %.1f ms\t\n", rate, res.P50ms, res.P99ms)
	}
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
	waiting map[uuid.UUID]chan struct{}
	n       atomic.Int64
}

func newResultWatcher() *resultWatcher {
	return &resultWatcher{waiting: make(map[uuid.UUID]chan struct{})}
}

func (r *resultWatcher) expect(id uuid.UUID) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	r.waiting[id] = ch
	return ch
}

func (r *resultWatcher) done() int64 { return r.n.Load() }

func (r *resultWatcher) consume(ctx context.Context, cl *kgo.Client) {
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
			var res struct {
				CommandID uuid.UUID `json:"command_id"`
			}
			if json.Unmarshal(rec.Value, &res) != nil {
				return
			}
			r.mu.Lock()
			ch, ok := r.waiting[res.CommandID]
			delete(r.waiting, res.CommandID)
			r.mu.Unlock()
			if ok {
				close(ch)
				r.n.Add(1)
			}
		})
	}
}
