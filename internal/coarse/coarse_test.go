package coarse

import (
	"testing"
	"time"
)

// TestCoarseFollowsTheClock: the coarse time stays within a few
// resolutions of the real clock, and moves.
func TestCoarseFollowsTheClock(t *testing.T) {
	first := UnixNano()
	for range 20 {
		real := time.Now().UnixNano()
		got := UnixNano()
		// Generous: a loaded CI machine may starve the updater.
		if d := real - got; d < -int64(Resolution) || d > int64(50*Resolution) {
			t.Fatalf("coarse time %d is %v off the clock", got, time.Duration(d))
		}
		time.Sleep(Resolution)
	}
	if UnixNano() <= first {
		t.Fatalf("the coarse time did not move in %v", 20*Resolution)
	}
	if d := time.Since(Now()); d < -Resolution || d > 50*Resolution {
		t.Fatalf("Now is %v off", d)
	}
}
