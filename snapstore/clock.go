package snapstore

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock is the source of time for the scheduler: the real clock in the
// daemon, a FakeClock in tests.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that delivers the current time on its
	// channel once d has passed (at once when d <= 0).
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer from a Clock.
type Timer interface {
	// C returns the channel the timer delivers its time on.
	C() <-chan time.Time
	// Stop prevents the timer from firing. It reports whether it stopped
	// the timer, false when the timer had already fired or been stopped.
	Stop() bool
}

// RealClock returns the Clock of package time.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// FakeClock is a Clock for tests: time stands still until Set or Advance
// moves it, and then every timer whose deadline has passed fires, in
// deadline order. BlockUntil lets a test wait until the code under test is
// blocked on its timers, so tests need no sleeps. The zero value is not
// usable; make one with NewFakeClock. A FakeClock is safe for concurrent
// use.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer  // pending timers, in creation order
	changed chan struct{} // closed and replaced whenever timers or now change
}

// NewFakeClock returns a FakeClock whose time is t.
func NewFakeClock(t time.Time) *FakeClock {
	return &FakeClock{now: t, changed: make(chan struct{})}
}

// Now returns the clock's current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches Now()+d; a
// timer with d <= 0 fires at once.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, deadline: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	c.notifyLocked()
	return t
}

// Advance moves the clock forward by d (backward when d is negative) and
// fires the timers whose deadline has passed.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// Set moves the clock to t, forward or backward, and fires the timers
// whose deadline has passed.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(t)
}

func (c *FakeClock) setLocked(t time.Time) {
	c.now = t
	var due, keep []*fakeTimer
	for _, tm := range c.timers {
		if tm.deadline.After(t) {
			keep = append(keep, tm)
		} else {
			due = append(due, tm)
		}
	}
	c.timers = keep
	sort.SliceStable(due, func(i, j int) bool { return due[i].deadline.Before(due[j].deadline) })
	for _, tm := range due {
		// The channel has room for one value and a pending timer has never
		// sent, so this does not block.
		tm.ch <- t
	}
	c.notifyLocked()
}

// Timers returns the number of timers that are waiting to fire.
func (c *FakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Deadlines returns the deadlines of the timers that are waiting to fire,
// earliest first.
func (c *FakeClock) Deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, 0, len(c.timers))
	for _, tm := range c.timers {
		out = append(out, tm.deadline)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// BlockUntil waits until at least n timers are waiting to fire, that is
// until the code under test has armed its timers and is (about to be)
// blocked on them. It returns ctx's error if ctx ends first.
func (c *FakeClock) BlockUntil(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			c.mu.Unlock()
			return nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *FakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type fakeTimer struct {
	clock    *FakeClock
	deadline time.Time
	ch       chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

// pending reports whether t has neither fired nor been stopped.
func (t *fakeTimer) pending() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	for _, tm := range t.clock.timers {
		if tm == t {
			return true
		}
	}
	return false
}

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, tm := range c.timers {
		if tm == t {
			c.timers = append(c.timers[:i:i], c.timers[i+1:]...)
			c.notifyLocked()
			return true
		}
	}
	return false
}
