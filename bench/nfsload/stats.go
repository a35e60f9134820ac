package nfsload

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records latencies in nanoseconds with a relative error under
// 0.4%: values below 128 ns are exact, and each power of two above is split
// into 128 equal buckets (log-linear, as HDR histograms do). It has a fixed
// size, so a long run costs no more memory than a short one. The zero value
// is ready; it is not safe for concurrent use (give each worker its own and
// Merge them).
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    uint64
	max    uint64
}

const (
	subBits  = 7
	subCount = 1 << subBits
	// maxExp caps recorded values at 2^maxExp ns (about 18 minutes);
	// longer ones count in the last bucket.
	maxExp      = 40
	histBuckets = (maxExp - subBits + 1) * subCount
)

// bucketOf returns the bucket of v. For v in [2^k, 2^(k+1)) with k >= 7,
// the bucket is group k-6 and the 7 bits under the leading one.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	k := bits.Len64(v) - 1
	if k >= maxExp {
		return histBuckets - 1
	}
	g := k - subBits + 1
	return g*subCount + int(v>>(k-subBits)) - subCount
}

// bucketRange returns the smallest value of bucket i and the bucket's width.
func bucketRange(i int) (low, width uint64) {
	g := i / subCount
	if g == 0 {
		return uint64(i), 1
	}
	m := uint64(subCount + i%subCount)
	return m << (g - 1), 1 << (g - 1)
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds o's records to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of records.
func (h *Histogram) Count() uint64 { return h.n }

// Mean returns the mean latency (0 with no records).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Max returns the largest latency recorded.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the latency that q (0 to 1) of the records are at or
// below: the record of rank ceil(q*n), as the middle of its bucket, clamped
// to the smallest and largest values seen. With no records it is 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	rank = min(rank, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == histBuckets-1 {
				return time.Duration(h.max) // past the range: the largest is all it knows
			}
			low, width := bucketRange(i)
			v := low + (width-1)/2
			v = max(v, h.min)
			v = min(v, h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Rate returns n per second over elapsed (0 when elapsed is not positive).
func Rate(n float64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return n / elapsed.Seconds()
}
