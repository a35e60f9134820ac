package blockstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// AutoGCOptions tune the background garbage collection that a serving
// datastore runs (Store.AutoGC).
type AutoGCOptions struct {
	// Check is how often free space and the triggers are looked at.
	// 0 = 2 s.
	Check time.Duration
	// Interval: a GC runs at least this often while data changes.
	// 0 = 1 h; negative = only under space pressure or after large frees.
	Interval time.Duration
	// LowSpace: below this many available bytes (after the reserve) the
	// disk is under pressure, and a GC runs as soon as something may have
	// been freed. 0 = a tenth of the file system, at least 64 MiB and at
	// most 64 GiB.
	LowSpace int64
	// BigFree: once files and layers of this many logical bytes (or a
	// tenth of the file system, if less) were let go since the last GC, a
	// GC runs without waiting for Interval. 0 = 1 GiB; negative = never.
	BigFree int64
	// BusyBytes: when more than this was appended to the log since the
	// check before the last, writers are busy, and a GC that space does
	// not press for ("data freed", "interval") waits for a quieter check,
	// for at most MaxDefer: a GC holds destage off while it runs, and
	// writers stall once the log is full. 0 = 4 MiB (1 to 2 MB/s at the
	// default Check); negative = never wait.
	BusyBytes int64
	// MaxDefer bounds that wait. 0 = 10 min.
	MaxDefer time.Duration
}

// autoGCState is what the write and delete paths tell the background GC.
type autoGCState struct {
	freed atomic.Int64 // logical bytes let go since the last GC (NoteFreed)
	short atomic.Bool  // a data write was refused for space since the last GC
	kick  chan struct{}
	once  sync.Once

	// What a write refused for space waits on (gcWait): whether a
	// background GC loop runs, whether it is collecting now, and a
	// channel closed when the current or next run ends.
	loops  atomic.Int32
	inRun  atomic.Bool
	runs   atomic.Uint64 // GC runs ended
	doneMu sync.Mutex
	done   chan struct{}
}

// runDone returns the channel closed when the current or next GC run ends.
func (a *autoGCState) runDone() chan struct{} {
	a.doneMu.Lock()
	defer a.doneMu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{})
	}
	return a.done
}

// endRun wakes everyone waiting for the current run, or for the loop's
// decision not to run.
func (a *autoGCState) endRun() {
	a.doneMu.Lock()
	defer a.doneMu.Unlock()
	if a.done != nil {
		close(a.done)
		a.done = nil
	}
}

// gcWait returns a channel that closes when the background GC has run, or
// has decided not to, after the caller found itself short of space; nil
// when no GC loop runs. The caller tells the two apart with runs.
func (s *Store) gcWait() <-chan struct{} {
	a := &s.agc
	if a.loops.Load() == 0 {
		return nil
	}
	ch := a.runDone()
	s.kickGC()
	return ch
}

func (a *autoGCState) kickCh() chan struct{} {
	a.once.Do(func() { a.kick = make(chan struct{}, 1) })
	return a.kick
}

// NoteFreed tells the background GC that up to n logical bytes of data
// were let go (a file removed or truncated, a layer released). Large
// frees, and any free while the disk is short of space, start a GC
// without waiting for the next interval.
func (s *Store) NoteFreed(n int64) {
	if n <= 0 {
		return
	}
	s.agc.freed.Add(n)
	s.kickGC()
}

// noteShort tells the background GC that a data write was refused for
// lack of space: if anything was freed since the last run, it runs now.
func (s *Store) noteShort() {
	s.agc.short.Store(true)
	s.kickGC()
}

func (s *Store) kickGC() {
	select {
	case s.agc.kickCh() <- struct{}{}:
	default:
	}
}

// AutoGC runs garbage collection in the background until ctx ends or the
// store closes: under space pressure as soon as something may have been
// freed, after large frees, and every Interval while data changes. A run
// that found nothing to free is not repeated under pressure until more is
// freed or the backoff (10 s doubling to 10 min) has passed. Each run is
// logged.
func (s *Store) AutoGC(ctx context.Context, o AutoGCOptions) {
	if o.Check <= 0 {
		o.Check = 2 * time.Second
	}
	if o.Interval == 0 {
		o.Interval = time.Hour
	}
	if o.BigFree == 0 {
		o.BigFree = 1 << 30
	}
	if o.BusyBytes == 0 {
		o.BusyBytes = 4 << 20
	}
	if o.MaxDefer <= 0 {
		o.MaxDefer = 10 * time.Minute
	}
	t := time.NewTicker(o.Check)
	defer t.Stop()
	s.agc.loops.Add(1)
	defer func() {
		s.agc.loops.Add(-1)
		s.agc.inRun.Store(false)
		s.agc.endRun()
	}()
	kick := s.agc.kickCh()
	last := time.Now()
	lastHead := s.log.head()
	backoff := time.Duration(0)
	// The log head at the last two ticks: the writes of at least one
	// whole Check period, also for a check kicked just after a tick.
	prevHead, tickHead := lastHead, lastHead
	var deferredSince time.Time // when a GC first waited for writers
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
			prevHead, tickHead = tickHead, s.log.head()
		case <-kick:
		}
		// Writers refused for space wait on this look (gcWait): every
		// path that does not run a GC wakes them (endRun) with runs
		// unchanged, so they fail at once rather than at their deadline.
		low := o.LowSpace
		c, err := s.Capacity()
		if err != nil {
			s.logger.Warn("blockstore: auto gc: capacity", "err", err)
			s.agc.endRun()
			continue
		}
		if low <= 0 {
			low = min(max(int64(c.Total/10), 64<<20), 64<<30)
		}
		freed := s.agc.freed.Load()
		short := s.agc.short.Load()
		head := s.log.head()
		changed := head != lastHead
		busy := o.BusyBytes > 0 && int64(head-prevHead) > o.BusyBytes
		since := time.Since(last)
		var why string
		switch {
		case (int64(c.Avail) < low || short) && freed > 0:
			why = "low space, data freed"
		case (int64(c.Avail) < low || short) && changed && since >= backoff:
			why = "low space"
		case o.BigFree > 0 && freed >= min(o.BigFree, max(int64(c.Total/10), 1)):
			why = "data freed"
		case o.Interval > 0 && changed && since >= o.Interval:
			why = "interval"
		default:
			s.agc.endRun()
			continue
		}
		if why == "data freed" || why == "interval" {
			if busy {
				if deferredSince.IsZero() {
					deferredSince = time.Now()
					s.logger.Debug("blockstore: auto gc waits while writers are busy", "why", why)
				}
				if time.Since(deferredSince) < o.MaxDefer {
					s.agc.endRun()
					continue
				}
				why += ", waited for writers"
			}
		}
		deferredSince = time.Time{}
		lastHead = s.log.head()
		s.agc.inRun.Store(true)
		s.agc.freed.Add(-freed)
		s.agc.short.Store(false)
		start := time.Now()
		// Deletes still in the log keep their blocks referenced until
		// they are destaged: destage first, so this GC sees them.
		if err := s.Flush(); err != nil && !errors.Is(err, ErrClosed) {
			s.logger.Warn("blockstore: auto gc: destage before gc", "err", err)
		}
		// Short of space, packs with a tenth dead are worth rewriting.
		threshold := 0.5
		if int64(c.Avail) < low || short {
			threshold = 0.9
		}
		rep, err := s.GC(ctx, GCOptions{Threshold: threshold})
		last = time.Now()
		s.agc.inRun.Store(false)
		s.space.invalidate()
		s.agc.runs.Add(1)
		s.agc.endRun()
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return
			}
			s.logger.Warn("blockstore: auto gc failed", "why", why, "err", err)
			backoff = nextBackoff(backoff)
			continue
		}
		s.logger.Info("blockstore: auto gc", "why", why, "took", time.Since(start).Round(time.Millisecond),
			"chunks_freed", rep.ChunksFreed, "packs_deleted", rep.PacksDeleted,
			"packs_compacted", rep.PacksCompacted, "bytes_given_back", rep.PackBytesFreed)
		if rep.ChunksFreed == 0 && rep.PackBytesFreed <= 0 {
			backoff = nextBackoff(backoff)
		} else {
			backoff = 0
		}
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 10 * time.Second
	}
	return min(2*d, 10*time.Minute)
}
