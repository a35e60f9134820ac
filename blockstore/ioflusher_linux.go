package blockstore

import (
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ioFlusherThread pins the calling goroutine to its OS thread and marks
// the thread as an I/O flusher (PR_SET_IO_FLUSHER: PF_MEMALLOC_NOIO and
// PF_LOCAL_THROTTLE), as the kernel's own NFS server threads are. The
// NVLOG and pack writers need it when an NFS client on the same kernel
// mounts this server (a loopback mount, or a host's own VMs): the client's
// dirty pages would otherwise throttle the very writes that clean them, in
// balance_dirty_pages, and both sides wait for ever. The thread is then
// throttled only for its own disk's dirty pages. Needs CAP_SYS_RESOURCE;
// without it the writers run as before, and the caller is told why.
// The goroutine must keep its thread for the rest of its life (the
// destage loop); the log's flusher marks its thread only while it writes
// (ioFlusherSpan).
func ioFlusherThread() error {
	runtime.LockOSThread()
	return unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0)
}

// CheckIOFlusher reports whether this process may mark its log and pack
// writers as I/O flushers (see ioFlusherThread): nil, or why not. A
// server says so at start: without it, a loopback NFS mount may stall
// under memory pressure.
func CheckIOFlusher() error {
	errc := make(chan error, 1)
	go func() {
		// The marked thread ends with this goroutine (it stays locked).
		errc <- ioFlusherThread()
	}()
	return <-errc
}

// ioFlusherRefused is set once marking a thread failed (no
// CAP_SYS_RESOURCE): later spans do not try again.
var ioFlusherRefused atomic.Bool

// ioFlusherSpan pins the calling goroutine to its thread and marks the
// thread as an I/O flusher (see ioFlusherThread) until the returned
// function is called, which clears the mark and unpins the goroutine. The
// log's flusher writes and syncs each batch inside a span, and waits for
// the next batch unpinned: a pinned goroutine that blocks hands its
// processor to another thread and must have its own thread woken to go on,
// and on the benchmark VM, whose idle CPUs take 120-290 µs to wake, one
// stable writer went 2-31% faster without it in three pairs (DESIGN 24,
// ninth pass). Two prctl calls per flush, against a flush of 150 µs or
// more.
func ioFlusherSpan() func() {
	if ioFlusherRefused.Load() {
		return func() {}
	}
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0); err != nil {
		ioFlusherRefused.Store(true)
		runtime.UnlockOSThread()
		return func() {}
	}
	return func() {
		// Clearing needs the capability that setting had; were it to
		// fail, a thread of this process would keep a harmless mark.
		_ = unix.Prctl(unix.PR_SET_IO_FLUSHER, 0, 0, 0, 0)
		runtime.UnlockOSThread()
	}
}
