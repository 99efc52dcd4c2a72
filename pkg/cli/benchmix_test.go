package cli

import (
	"math/rand/v2"
	"testing"
	"time"
)

// A percentile read from the histogram is within 4% of the exact one.
func TestHistQuantiles(t *testing.T) {
	var h hist
	rng := rand.New(rand.NewPCG(1, 2))
	ds := make([]time.Duration, 0, 100000)
	for range cap(ds) {
		d := time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond))
		ds = append(ds, d)
		h.add(d)
	}
	p50, p99 := percentiles(ds)
	for _, c := range []struct {
		q, exact float64
	}{{0.5, p50}, {0.99, p99}} {
		if got := h.quantile(c.q); got < c.exact*0.96 || got > c.exact*1.04 {
			t.Errorf("quantile %.2f: %.4f ms, exact %.4f ms", c.q, got, c.exact)
		}
	}
	for _, d := range []time.Duration{0, 1, 31, 32, 33, 1000, time.Second, time.Hour} {
		if b := histBucket(d); histLower(b) > max(d, 1) || histLower(b+1) <= max(d, 1) {
			t.Errorf("%v in bucket %d: [%v, %v)", d, b, histLower(b), histLower(b+1))
		}
	}
}

// Zipf puts most draws on a few entities; uniform spreads them; no draw is
// at or past the limit.
func TestChooser(t *testing.T) {
	const n, draws = 1000, 100000
	for _, c := range []struct {
		s         float64
		low, high float64 // share of the draws that go to the first entity
	}{{0, 0, 0.003}, {1.1, 0.15, 0.22}} { // 1/H(1000, 1.1) = 0.18
		ch := newChooser(n, c.s, 7)
		first := 0
		for range draws {
			k := ch.pick(n)
			if k < 0 || k >= n {
				t.Fatalf("s=%v: drew %d of %d", c.s, k, n)
			}
			if k == 0 {
				first++
			}
			if k := ch.pick(10); k >= 10 {
				t.Fatalf("s=%v: drew %d below 10", c.s, k)
			}
		}
		if share := float64(first) / draws; share < c.low || share > c.high {
			t.Errorf("s=%v: the first entity took %.3f of the draws, want %.3f to %.3f", c.s, share, c.low, c.high)
		}
	}
}

func TestRSS(t *testing.T) {
	if r := rssBytes(); r < 1<<20 {
		t.Skipf("no VmRSS here (%d bytes)", r)
	}
}
