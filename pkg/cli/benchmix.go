package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/eventlog/eventlog/internal/httpapi"
	"github.com/eventlog/eventlog/pkg/service"
)

// The workload phases of `eventlog bench`: which entity a command or a read
// goes to, the HTTP readers of the mixed phase, and the process's memory.

// versionReadEvery is how often a reader of the mixed phase asks for an
// earlier state (?version=1) instead of the current one: one read in ten.
const versionReadEvery = 10

// chooser picks entities by index from 0 to n-1: uniformly, or, with a Zipf
// exponent s > 1, index k with probability proportional to 1/(1+k)^s, so
// that a few entities take most of the load. It is not safe for concurrent
// use: each goroutine makes its own with fork.
type chooser struct {
	n    int
	s    float64
	rng  *rand.Rand
	zipf *rand.Zipf
}

func newChooser(n int, s float64, seed uint64) *chooser {
	c := &chooser{n: n, s: s, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if s > 1 && n > 1 {
		c.zipf = rand.NewZipf(c.rng, s, 1, uint64(n-1))
	}
	return c
}

// fork returns a chooser of the same distribution with its own source.
func (c *chooser) fork(seed uint64) *chooser { return newChooser(c.n, c.s, seed) }

// pick returns an index below limit (1 <= limit <= n), drawn again while the
// draw is not.
func (c *chooser) pick(limit int) int {
	if c.zipf == nil {
		return c.rng.IntN(limit)
	}
	for {
		if k := int(c.zipf.Uint64()); k < limit {
			return k
		}
	}
}

// hist is a latency histogram of bounded size: 32 buckets for each power of
// two nanoseconds, so a percentile read from it is within about 3% of the
// exact one. It is safe for concurrent use.
type hist struct {
	counts [64 * histSub]atomic.Int64
	n      atomic.Int64
}

const histSub = 32

func histBucket(d time.Duration) int {
	v := uint64(max(d, 1))
	e := bits.Len64(v) - 1 // 2^e <= v < 2^(e+1)
	if e < 5 {
		return int(v) // exact below 32ns
	}
	sub := (v >> (e - 5)) & (histSub - 1)
	return (e-4)*histSub + int(sub)
}

// histLower returns the smallest duration of bucket b.
func histLower(b int) time.Duration {
	if b < histSub {
		return time.Duration(b)
	}
	e, sub := b/histSub+4, uint64(b%histSub)
	return time.Duration((uint64(histSub) + sub) << (e - 5))
}

func (h *hist) add(d time.Duration) {
	h.counts[histBucket(d)].Add(1)
	h.n.Add(1)
}

// quantile returns the q-quantile (0 < q <= 1) in milliseconds: the middle
// of the bucket it falls in.
func (h *hist) quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	var seen int64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			lo, hi := histLower(b), histLower(b+1)
			return float64(lo+hi) / 2 / 1e6
		}
	}
	return float64(histLower(len(h.counts)-1)) / 1e6
}

// rssBytes returns the process's resident set size (VmRSS of
// /proc/self/status), or 0 where there is no such file.
func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fields := bytes.Fields(rest) // "123456", "kB"
			if len(fields) == 0 {
				return 0
			}
			kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// heapInuse returns the bytes of the Go heap's spans in use.
func heapInuse() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// mib formats bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// rssWatch samples the RSS every second and keeps the highest.
type rssWatch struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchRSS() *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	w.peak.Store(rssBytes())
	go func() {
		defer close(w.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				if r := rssBytes(); r > w.peak.Load() {
					w.peak.Store(r)
				}
			}
		}
	}()
	return w
}

// close stops the sampling and returns the peak seen.
func (w *rssWatch) close() int64 {
	close(w.stop)
	<-w.done
	if r := rssBytes(); r > w.peak.Load() {
		w.peak.Store(r)
	}
	return w.peak.Load()
}

// readers fetch rebuilt entities over HTTP for the mixed phase.
type readers struct {
	base   string // http://host:port/v1/entities/<type>/
	ids    []uuid.UUID
	choose *chooser
	client *http.Client
	lat    hist
	errors atomic.Int64
	// lastErr is the last unexpected answer, for the report.
	mu      sync.Mutex
	lastErr string
}

func newReaders(addr, entityType string, ids []uuid.UUID, choose *chooser, k int) *readers {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        k,
		MaxIdleConnsPerHost: k,
		IdleConnTimeout:     time.Minute,
	}
	return &readers{base: "http://" + addr + "/v1/entities/" + entityType + "/", ids: ids, choose: choose,
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// run starts k readers that read until ctx ends; with perSecond > 0 they
// read that many entities a second between them, else as fast as they can.
// It returns when they are done.
func (r *readers) run(ctx context.Context, k int, perSecond float64) {
	var tokens chan struct{}
	var wg sync.WaitGroup
	if perSecond > 0 {
		tokens = make(chan struct{}, k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(tokens)
			start := time.Now()
			var sent int64
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					due := int64(now.Sub(start).Seconds() * perSecond)
					for ; sent < due; sent++ {
						select {
						case tokens <- struct{}{}:
						default: // the readers are behind: the read is not made
						}
					}
				}
			}
		}()
	}
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			choose := r.choose.fork(uint64(i) + 1)
			for n := 0; ctx.Err() == nil; n++ {
				if tokens != nil {
					if _, ok := <-tokens; !ok {
						return
					}
				}
				url := r.base + r.ids[choose.pick(len(r.ids))].String()
				if n%versionReadEvery == versionReadEvery-1 {
					url += "?version=1"
				}
				r.read(ctx, url)
			}
		}()
	}
	wg.Wait()
	r.client.CloseIdleConnections()
}

func (r *readers) read(ctx context.Context, url string) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.fail(err.Error())
		return
	}
	resp, err := r.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			r.fail(err.Error())
		}
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.fail(err.Error())
		}
	case resp.StatusCode != http.StatusOK:
		r.fail(fmt.Sprintf("GET %s: %s", url, resp.Status))
	default:
		r.lat.add(time.Since(start))
	}
}

func (r *readers) fail(msg string) {
	r.errors.Add(1)
	r.mu.Lock()
	r.lastErr = msg
	r.mu.Unlock()
}

// checkPhases checks the flags of the workload phases.
func checkPhases(zipfS float64, preload, entities int, mixFor time.Duration, nReaders int, readShare float64, cacheSize int) error {
	switch {
	case zipfS != 0 && !(zipfS > 1) || math.IsInf(zipfS, 0):
		return fmt.Errorf("-zipf must be 0 (uniform) or a finite exponent above 1, got %v", zipfS)
	case preload < 0 || preload > entities:
		return fmt.Errorf("-preload must be from 0 to -entities-n (%d), got %d", entities, preload)
	case mixFor < 0:
		return fmt.Errorf("-duration must not be negative, got %s", mixFor)
	case nReaders < 0 || nReaders > 1000:
		return fmt.Errorf("-readers must be from 0 to 1000, got %d", nReaders)
	case !(readShare >= 0 && readShare <= 1):
		return fmt.Errorf("-read-share must be from 0 to 1, got %v", readShare)
	case cacheSize < -1:
		return fmt.Errorf("-cache-size must be -1 (none), 0 (the default) or a size, got %d", cacheSize)
	}
	return nil
}

// mixedDrainTimeout bounds the wait, after the mixed phase, for the results
// of its last commands.
const mixedDrainTimeout = 30 * time.Second

// mixedPhase produces commands at rate for d (produce sends the i-th, whose
// latency goes into h; pending counts the results still awaited) while rd's
// k readers fetch entities, reads being share of all operations (1: as
// many as they can).
func mixedPhase(ctx context.Context, env Env, d time.Duration, rate int, produce func(i int, h *hist), pending func() int, rd *readers, k int, share float64) BenchMixed {
	parent := ctx
	rssStart := rssBytes()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var rdone chan struct{}
	start := time.Now()
	if rd != nil {
		perSecond := 0.0
		if share < 1 {
			perSecond = float64(rate) * share / (1 - share)
		}
		rdone = make(chan struct{})
		go func() { defer close(rdone); rd.run(ctx, k, perSecond) }()
	}
	bar := newProgressBar(env.Stderr, "mixed")
	var lat hist
	tick := time.Second / time.Duration(rate)
	next := time.Now()
	var commands int64
	for i := 0; ctx.Err() == nil; i++ {
		next = next.Add(tick)
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(next)):
		}
		if ctx.Err() != nil {
			break
		}
		produce(i, &lat)
		commands++
		if i%rate == 0 {
			note := fmt.Sprintf("%d commands/s", rate)
			if rd != nil {
				note += fmt.Sprintf(", %.0f reads/s", float64(rd.lat.n.Load())/time.Since(start).Seconds())
			}
			el := time.Since(start)
			bar.set(int64(el/time.Second), int64(d/time.Second), note)
		}
	}
	elapsed := time.Since(start)
	if rdone != nil {
		<-rdone
	}
	for drain := time.Now().Add(mixedDrainTimeout); pending() > 0 && time.Now().Before(drain) && parent.Err() == nil; {
		time.Sleep(10 * time.Millisecond)
	}
	bar.finish()
	m := BenchMixed{Seconds: elapsed.Seconds(), Readers: k, Commands: commands, CommandsPerSecond: float64(commands) / elapsed.Seconds(),
		CommandP50ms: lat.quantile(0.5), CommandP99ms: lat.quantile(0.99), Unanswered: pending(),
		RSSStart: rssStart, RSSEnd: rssBytes()}
	if rd != nil {
		m.Reads, m.ReadErrors = rd.lat.n.Load(), rd.errors.Load()
		m.ReadsPerSecond = float64(m.Reads) / elapsed.Seconds()
		m.ReadP50ms, m.ReadP99ms = rd.lat.quantile(0.5), rd.lat.quantile(0.99)
		if m.Reads+commands > 0 {
			m.ReadShare = float64(m.Reads) / float64(m.Reads+commands)
		}
		if m.ReadErrors > 0 {
			fmt.Fprintf(env.Stderr, "mixed: %d reads failed, the last: %s\n", m.ReadErrors, rd.lastErr)
		}
	}
	return m
}

// benchHTTP serves the writer's HTTP API on a port of the loopback
// interface, until stop.
func benchHTTP(w *service.Writer, log *slog.Logger) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	api := &httpapi.Server{Log: log, Info: httpapi.Info{Service: "writer"}}
	w.API(api)
	srv := httpapi.NewHTTPServer(ln.Addr().String(), api.Handler(), log)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// eventsOnKafka returns the number of records in the topics.
func eventsOnKafka(ctx context.Context, adm *kadm.Client, topics map[string]bool) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, slices.Collect(maps.Keys(topics))...)
	if err != nil {
		return 0, err
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	return total, nil
}
