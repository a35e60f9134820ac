// Package coarse is a clock for the hot paths that only need to know the
// time to within tens of milliseconds: idle and write deadlines, cache
// ages, last-activity stamps. Reading it is one atomic load; one goroutine
// reads the real clock every Resolution and publishes it.
//
// A clock read is cheap on a host with the vDSO, but every read is a
// system call where there is none, as in a User-Mode Linux guest (the
// e2e tests and make bench's kernel-client section): there, profiles of
// dstore serve showed reads of the clock on every NFS reply and every
// attribute lookup taking a fifth to a half of the server's CPU, some of it
// under the block store's mutex.
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
