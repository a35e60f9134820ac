package blockstore

import (
	"runtime"

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
// The goroutine must keep its thread for the rest of its life.
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
