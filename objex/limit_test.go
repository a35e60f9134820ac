package objex

import (
	"context"
	"testing"
	"time"
)

// TestLimiterRateChangeWakes: a waiter asleep under a tiny rate goes on at
// once when the rate is raised or the limit lifted, instead of sleeping
// out what the old rate said (hours at 1 B/s).
func TestLimiterRateChangeWakes(t *testing.T) {
	for _, to := range []int64{0, 10 << 20} {
		l := NewLimiter(1) // starts with no tokens
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- l.WaitN(context.Background(), 32<<10) }()
		select {
		case err := <-done:
			t.Fatalf("a 32 KiB wait at 1 B/s returned at once: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		l.SetRate(to)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("rate %d: the waiter went on after %v", to, el)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("rate %d: the waiter still sleeps 5 s after the change", to)
		}
		// The new rate holds from here: 2 MiB at 10 MiB/s (burst 1 MiB)
		// takes about 0.1 s or more, not nothing.
		if to > 0 {
			start := time.Now()
			for range 32 {
				if err := l.WaitN(context.Background(), 64<<10); err != nil {
					t.Fatal(err)
				}
			}
			if el := time.Since(start); el < 50*time.Millisecond {
				t.Fatalf("2 MiB at 10 MiB/s took %v", el)
			}
		}
	}
}
