package coarse

import (
	"sync"
	"sync/atomic"
	"time"
)

// Resolution is how old the time Now returns may be.
const Resolution = 20 * time.Millisecond

var (
	now  atomic.Int64 // unix nanoseconds
	once sync.Once
)

func start() {
	now.Store(time.Now().UnixNano())
	go func() {
		for {
			time.Sleep(Resolution)
			now.Store(time.Now().UnixNano())
		}
	}()
}

// UnixNano returns the wall-clock time in unix nanoseconds, at most about
// Resolution old (more when the process is starved of CPU). It never goes
// backwards unless the wall clock does.
func UnixNano() int64 {
	once.Do(start)
	return now.Load()
}

// Now is UnixNano as a time.Time (without a monotonic reading).
func Now() time.Time { return time.Unix(0, UnixNano()) }
