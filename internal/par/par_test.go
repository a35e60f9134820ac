package par

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDoCoversOnce runs Do from several goroutines at once, with
// sizes around the split thresholds, and checks that every index of every
// call is run exactly once and that each call returns only after all its
// pieces are done (a helper's last piece included).
func TestDoCoversOnce(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 200 {
				n := []int{0, 1, 15, 16, 31, 32, 33, 100, 256, 1000}[(round+g)%10]
				seen := make([]atomic.Int32, n)
				Do(n, func(lo, hi int) {
					if round%7 == 0 {
						time.Sleep(50 * time.Microsecond) // a slow piece: the caller must wait for it
					}
					for i := lo; i < hi; i++ {
						seen[i].Add(1)
					}
				})
				for i := range seen {
					if c := seen[i].Load(); c != 1 {
						t.Errorf("n=%d: index %d run %d times", n, i, c)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestDoHelpersJoin checks that the pool's helpers take pieces of a
// call (on a machine with more than one CPU): pieces of one call must run
// side by side, or Do is a plain loop.
func TestDoHelpersJoin(t *testing.T) {
	if Workers() < 2 {
		t.Skip("one CPU")
	}
	helped := 0
	for range 20 {
		var inflight, most atomic.Int32
		Do(1024, func(lo, hi int) {
			now := inflight.Add(1)
			for {
				m := most.Load()
				if now <= m || most.CompareAndSwap(m, now) {
					break
				}
			}
			time.Sleep(200 * time.Microsecond)
			inflight.Add(-1)
		})
		if most.Load() > 1 {
			helped++
		}
	}
	if helped == 0 {
		t.Fatal("no call of 20 had two pieces running at once")
	}
	t.Logf("%d of 20 calls had pieces running side by side", helped)
}
