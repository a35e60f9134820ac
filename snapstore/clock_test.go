package snapstore

import (
	"context"
	"testing"
	"time"
)

func received(ch <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-ch:
		return t, true
	default:
		return time.Time{}, false
	}
}

func TestFakeClockTimers(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	c := NewFakeClock(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Now = %v", c.Now())
	}
	a := c.NewTimer(time.Minute)
	b := c.NewTimer(time.Hour)
	z := c.NewTimer(0)
	if got, ok := received(z.C()); !ok || !got.Equal(t0) {
		t.Fatalf("a timer of 0 did not fire at once: %v %v", got, ok)
	}
	if z.Stop() {
		t.Error("Stop of a fired timer reported true")
	}
	if n := c.Timers(); n != 2 {
		t.Fatalf("Timers = %d, want 2", n)
	}
	if d := c.Deadlines(); len(d) != 2 || !d[0].Equal(t0.Add(time.Minute)) || !d[1].Equal(t0.Add(time.Hour)) {
		t.Fatalf("Deadlines = %v", d)
	}
	c.Advance(59 * time.Second)
	if _, ok := received(a.C()); ok {
		t.Fatal("timer fired early")
	}
	c.Advance(time.Second)
	if got, ok := received(a.C()); !ok || !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("timer at its deadline: %v %v", got, ok)
	}
	if a.Stop() {
		t.Error("Stop of a fired timer reported true")
	}
	// Backward does not fire anything.
	c.Set(t0.Add(-time.Hour))
	if _, ok := received(b.C()); ok {
		t.Fatal("timer fired when the clock went back")
	}
	if !b.Stop() {
		t.Error("Stop of a pending timer reported false")
	}
	c.Set(t0.Add(24 * time.Hour))
	if _, ok := received(b.C()); ok {
		t.Fatal("stopped timer fired")
	}
	if n := c.Timers(); n != 0 {
		t.Fatalf("Timers = %d, want 0", n)
	}
}

func TestFakeClockBlockUntil(t *testing.T) {
	c := NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.BlockUntil(ctx, 1); err == nil {
		t.Fatal("BlockUntil returned without a timer")
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- c.BlockUntil(ctx, 2)
	}()
	c.NewTimer(time.Second)
	c.NewTimer(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.BlockUntil(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}

func TestRealClock(t *testing.T) {
	c := RealClock()
	before := time.Now()
	if now := c.Now(); now.Before(before) {
		t.Fatalf("Now = %v before %v", now, before)
	}
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(10 * time.Second):
		t.Fatal("real timer did not fire")
	}
	long := c.NewTimer(time.Hour)
	if !long.Stop() {
		t.Fatal("Stop of a pending real timer reported false")
	}
}
