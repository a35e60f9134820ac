package objex

import (
	"context"
	"io"
	"sync"
	"time"
)

// Limiter is a token bucket in bytes: at most Rate bytes per second on
// average, with bursts of at most Burst bytes. One limiter is shared by
// everything that moves a target's background data (uploads of exports,
// downloads of thickeners), so together they hold the target's bandwidth
// limit. Demand reads of imported files do not take tokens. A nil *Limiter
// does not limit.
type Limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; <= 0 means unlimited
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
	// changed is closed (and replaced) by SetRate, waking every sleeper
	// so a new rate applies at once, not after a sleep the old one set.
	changed chan struct{}
}

// NewLimiter makes a limiter of rate bytes per second (<= 0: unlimited).
// The burst is a tenth of a second's worth, at least 64 KiB.
func NewLimiter(rate int64) *Limiter {
	l := &Limiter{now: time.Now}
	l.SetRate(rate)
	return l
}

// SetRate changes the rate, at once: the debt run up under the old rate is
// forgiven (at 1 B/s one burst would take 18 hours to repay) and sleeping
// waiters wake to go on at the new one.
func (l *Limiter) SetRate(rate int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = float64(rate)
	l.burst = max(float64(rate)/10, 64<<10)
	l.tokens = min(max(l.tokens, 0), l.burst)
	l.last = l.now()
	if l.changed != nil {
		close(l.changed)
	}
	l.changed = make(chan struct{})
}

// Rate returns the rate in bytes per second (0: unlimited).
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(max(l.rate, 0))
}

// WaitN takes n bytes' worth of tokens, sleeping as long as needed; the
// tokens may go negative, so a large n is paid for by later callers too
// and the long-run rate holds.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	l.mu.Lock()
	if l.rate <= 0 {
		l.mu.Unlock()
		return nil
	}
	now := l.now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	for {
		if l.rate <= 0 || l.tokens >= 0 {
			l.mu.Unlock()
			return nil
		}
		wait := time.Duration(-l.tokens / l.rate * float64(time.Second))
		changed := l.changed
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
			return nil
		case <-changed:
			t.Stop()
		}
		l.mu.Lock()
		now := l.now()
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*max(l.rate, 0))
		l.last = now
	}
}

// duration is how long n bytes take at the current rate (0: unlimited).
func (l *Limiter) duration(n int64) time.Duration {
	r := l.Rate()
	if r <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(r) * float64(time.Second))
}

// reader paces reads from r.
func (l *Limiter) reader(ctx context.Context, r io.Reader) io.Reader {
	return &limitedReader{ctx: ctx, l: l, r: r}
}

type limitedReader struct {
	ctx context.Context
	l   *Limiter
	r   io.Reader
}

func (lr *limitedReader) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10] // small steps keep the pace smooth
	}
	n, err := lr.r.Read(p)
	if n > 0 {
		if werr := lr.l.WaitN(lr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

type limiterKey struct{}

// WithLimiter returns a context whose object store transfers are paced by
// l (uploads and downloads alike).
func WithLimiter(ctx context.Context, l *Limiter) context.Context {
	if l == nil {
		return ctx
	}
	return context.WithValue(ctx, limiterKey{}, l)
}

func limiterFrom(ctx context.Context) *Limiter {
	l, _ := ctx.Value(limiterKey{}).(*Limiter)
	return l
}
