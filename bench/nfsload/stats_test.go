package nfsload

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the record of rank ceil(q*n) of sorted values.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(rank, 1)
	return sorted[rank-1]
}

func TestHistogramQuantilesMatchSorting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() time.Duration{
		"uniform-us":  func() time.Duration { return time.Duration(rng.Int64N(int64(time.Millisecond))) },
		"exponential": func() time.Duration { return time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond)) },
		// A fast mode and a slow tail, as a server that sometimes syncs.
		"bimodal": func() time.Duration {
			if rng.IntN(100) == 0 {
				return 20*time.Millisecond + time.Duration(rng.Int64N(int64(5*time.Millisecond)))
			}
			return 50*time.Microsecond + time.Duration(rng.Int64N(int64(20*time.Microsecond)))
		},
		"tiny": func() time.Duration { return time.Duration(rng.IntN(300)) },
	}
	for name, next := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			vals := make([]time.Duration, 100_000)
			var sum float64
			for i := range vals {
				vals[i] = next()
				sum += float64(vals[i])
				h.Record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0, 0.001, 0.5, 0.9, 0.99, 0.999, 1} {
				got, want := h.Quantile(q), exactQuantile(vals, q)
				// Log-linear buckets: within 1/128 of the value (and
				// exact below 128 ns).
				if diff := math.Abs(float64(got - want)); diff > float64(want)/128+1 {
					t.Errorf("q%g: %v, sorting says %v", q, got, want)
				}
			}
			if h.Count() != uint64(len(vals)) {
				t.Errorf("count %d, want %d", h.Count(), len(vals))
			}
			if got, want := h.Max(), vals[len(vals)-1]; got != want {
				t.Errorf("max %v, want %v", got, want)
			}
			if got, want := float64(h.Mean()), sum/float64(len(vals)); math.Abs(got-want) > 1 {
				t.Errorf("mean %v, want %v", got, want)
			}
		})
	}
}

func TestHistogramSmallCounts(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Fatal("an empty histogram reports a latency")
	}
	h.Record(3 * time.Millisecond)
	for _, q := range []float64{0, 0.5, 0.999, 1} {
		if got := h.Quantile(q); got != 3*time.Millisecond {
			t.Errorf("one record of 3ms: q%g is %v", q, got)
		}
	}
	// 1000 records: p99.9 is the 999th, p99 the 990th.
	var g Histogram
	for i := 1; i <= 1000; i++ {
		g.Record(time.Duration(i) * time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Microsecond, 0.99: 990 * time.Microsecond, 0.999: 999 * time.Microsecond} {
		got := g.Quantile(q)
		if math.Abs(float64(got-want)) > float64(want)/128 {
			t.Errorf("q%g: %v, want about %v", q, got, want)
		}
	}
	h.Record(-time.Second) // a clock step back counts as zero
	if h.Quantile(0) != 0 {
		t.Errorf("negative latency: q0 is %v, want 0", h.Quantile(0))
	}
	h.Record(time.Hour) // over the range: the last bucket, max exact
	if h.Max() != time.Hour || h.Quantile(1) != time.Hour {
		t.Errorf("an hour: max %v q1 %v", h.Max(), h.Quantile(1))
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 10_000 {
		d := time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	if m.counts != all.counts || m.n != all.n || m.min != all.min || m.max != all.max ||
		math.Abs(m.sum-all.sum) > all.sum*1e-12 {
		t.Fatal("merging two halves differs from recording everything in one")
	}
}

func TestBucketsAreContiguous(t *testing.T) {
	// Every value lands in the bucket whose range holds it, and buckets
	// tile the line without gaps.
	var prevEnd uint64
	for i := range histBuckets - 1 {
		low, width := bucketRange(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, the previous ended at %d", i, low, prevEnd)
		}
		for _, v := range []uint64{low, low + width - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("value %d: bucket %d, want %d", v, got, i)
			}
		}
		prevEnd = low + width
	}
}

func TestRate(t *testing.T) {
	for _, c := range []struct {
		n       float64
		elapsed time.Duration
		want    float64
	}{
		{1000, time.Second, 1000},
		{1000, 500 * time.Millisecond, 2000},
		{3 << 20, 3 * time.Second, 1 << 20},
		{5, 0, 0},
		{5, -time.Second, 0},
		{0, time.Second, 0},
	} {
		if got := Rate(c.n, c.elapsed); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Rate(%v, %v) = %v, want %v", c.n, c.elapsed, got, c.want)
		}
	}
}

func TestPatternCheck(t *testing.T) {
	p := NewPattern(7)
	buf := make([]byte, 4*Unit)
	p.Fill(buf, 8*Unit, 3)
	if err := p.Check(buf, 8*Unit); err != nil {
		t.Fatal(err)
	}
	if p.Check(buf, 9*Unit) == nil {
		t.Error("data checked at the wrong offset verified")
	}
	if NewPattern(8).Check(buf, 8*Unit) == nil {
		t.Error("data of another seed verified")
	}
	if p.Check(make([]byte, Unit), 0) == nil {
		t.Error("zeros verified")
	}
	other := make([]byte, 4*Unit)
	p.Fill(other, 8*Unit, 4)
	if string(other) == string(buf) {
		t.Error("two generations wrote the same data")
	}
	if string(other[Unit:2*Unit]) == string(buf[:Unit]) {
		t.Error("two units alike")
	}
	buf[2*Unit+100] ^= 1
	if p.Check(buf, 8*Unit) == nil {
		t.Error("a flipped bit verified")
	}
	if p.Check(buf[:100], 0) == nil {
		t.Error("a partial unit verified")
	}
}
