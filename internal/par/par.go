package par

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Workers is how many goroutines CPU-bound work should be split across:
// the CPUs, not the scheduler's processors (blockstore adds a processor
// that has no CPU of its own for its I/O threads).
func Workers() int {
	return min(runtime.GOMAXPROCS(0), runtime.NumCPU())
}

// Do runs fn over [0, n) split across the CPUs when n is large enough
// to pay for it. The range is cut into pieces of at least minPer that the
// caller and the pool's helpers take in turn, so a core that is also busy
// elsewhere (destage, the log) takes fewer and nobody waits for it: with
// one fixed half per core, a write waited for the slower core.
//
// The helpers are long-lived and stay awake (spinning, yielding the
// processor at every turn) for helperSpin after their last piece before
// they park. Why: on this machine's VM a parked thread took 150-300 µs to
// run a goroutine readied for it, about half of a 1 MiB write's hashing,
// so a helper started per call (as blockstore's parallel did) arrived when
// the caller had done most of the pieces itself (docs/DESIGN.md 24, eighth
// pass). A stream of large writes keeps the helpers awake; anything else
// costs at most helperSpin of CPU after each call.
func Do(n int, fn func(lo, hi int)) {
	const minPer = 16
	w := min(Workers(), n/minPer)
	if w <= 1 {
		fn(0, n)
		return
	}
	j := &pjob{fn: fn, n: int64(n), per: int64(max(minPer, n/(4*w))), done: make(chan struct{})}
	j.left.Store(int64(n))
	thePool.submit(j, w-1)
	j.work()
	// Every piece is taken; wait for the helpers' last ones. A piece is
	// short (tens of µs), so the caller yields a while before it parks.
	for spins := 0; j.left.Load() > 0 && spins < 1000; spins++ {
		runtime.Gosched()
	}
	<-j.done
	// The pool keeps no reference to a finished call's closure.
	thePool.cur.CompareAndSwap(j, nil)
}

// helperSpin is how long a helper looks for the next call's pieces before
// it parks.
const helperSpin = 300 * time.Microsecond

// pjob is one call of Do.
type pjob struct {
	fn   func(lo, hi int)
	n    int64
	per  int64
	next atomic.Int64  // the start of the next piece to take
	left atomic.Int64  // blocks not yet done
	done chan struct{} // closed by whoever brings left to 0
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
			close(j.done)
		}
	}
}

// pool is the helpers Do shares its pieces with: Workers()-1 of
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
		nh := max(Workers()-1, 1)
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
