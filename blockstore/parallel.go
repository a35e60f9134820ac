package blockstore

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// parallel runs fn over [0, n) split across the CPUs when n is large enough
// to pay for it. The range is cut into pieces of at least minPer that the
// caller and the pool's helpers take in turn, so a core that is also busy
// elsewhere (destage, the log) takes fewer and nobody waits for it: with
// one fixed half per core, a write waited for the slower core.
//
// The helpers are long-lived and stay awake (spinning, yielding the
// processor at every turn) for helperSpin after their last piece before
// they park. Why: on this machine's VM a parked thread took 150-300 µs to
// run a goroutine readied for it, about half of a 1 MiB write's hashing,
// so a helper started per call (as parallel did) arrived when the caller
// had done most of the pieces itself (DESIGN 24, eighth pass). A stream
// of large writes keeps the helpers awake; anything else costs at most
// helperSpin of CPU after each call.
func parallel(n int, fn func(lo, hi int)) {
	const minPer = 16
	w := min(workers(), n/minPer)
	if w <= 1 {
		fn(0, n)
		return
	}
	j := &pjob{fn: fn, n: int64(n), per: int64(max(minPer, n/(4*w)))}
	j.left.Store(int64(n))
	thePool.submit(j, w-1)
	j.work()
	// Every piece is taken; wait for the helpers' last ones. A piece is
	// short (tens of µs), so the caller spins before it parks.
	for spins := 0; j.left.Load() > 0; spins++ {
		if spins < 1000 {
			runtime.Gosched()
			continue
		}
		j.mu.Lock()
		if j.left.Load() > 0 {
			j.waiting = make(chan struct{})
			ch := j.waiting
			j.mu.Unlock()
			<-ch
		} else {
			j.mu.Unlock()
		}
		break
	}
	// The pool keeps no reference to a finished call's closure.
	thePool.cur.CompareAndSwap(j, nil)
}

// helperSpin is how long a helper looks for the next call's pieces before
// it parks.
const helperSpin = 300 * time.Microsecond

// pjob is one call of parallel.
type pjob struct {
	fn   func(lo, hi int)
	n    int64
	per  int64
	next atomic.Int64 // the start of the next piece to take
	left atomic.Int64 // blocks not yet done

	mu      sync.Mutex
	waiting chan struct{} // closed when left reaches 0, if the caller parked
}

// open reports whether the job has pieces nobody has taken yet.
func (j *pjob) open() bool { return j.next.Load() < j.n }

// work takes and runs pieces until none are left.
func (j *pjob) work() {
	for {
		lo := j.next.Add(j.per) - j.per
		if lo >= j.n {
			return
		}
		hi := min(lo+j.per, j.n)
		j.fn(int(lo), int(hi))
		if j.left.Add(lo-hi) == 0 {
			j.mu.Lock()
			if j.waiting != nil {
				close(j.waiting)
			}
			j.mu.Unlock()
		}
	}
}

// pool is the helpers parallel shares its pieces with: workers()-1 of
// them, started on first use.
type pool struct {
	once   sync.Once
	cur    atomic.Pointer[pjob] // the newest call; concurrent calls each also work alone
	parked atomic.Int32
	wake   chan struct{}
}

var thePool pool

// submit offers j to the helpers, waking up to want parked ones.
func (p *pool) submit(j *pjob, want int) {
	p.once.Do(func() {
		nh := max(workers()-1, 1)
		p.wake = make(chan struct{}, nh)
		for range nh {
			go p.helper()
		}
	})
	p.cur.Store(j)
	// After the store: a helper that parks from here on sees j first.
	for range min(want, int(p.parked.Load())) {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// helper runs pieces of the current call, spins for helperSpin after its
// last one, then parks until submit wakes it.
func (p *pool) helper() {
	for {
		idle := time.Now()
		for spins := 0; ; spins++ {
			if j := p.cur.Load(); j != nil && j.open() {
				j.work()
				idle, spins = time.Now(), 0
				continue
			}
			if spins%64 == 63 && time.Since(idle) > helperSpin {
				break
			}
			runtime.Gosched()
		}
		p.parked.Add(1)
		if j := p.cur.Load(); j != nil && j.open() {
			p.parked.Add(-1)
			continue
		}
		<-p.wake
		p.parked.Add(-1)
	}
}
