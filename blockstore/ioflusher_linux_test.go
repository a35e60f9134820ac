package blockstore

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIOFlusherSpan: inside a span the thread is an I/O flusher, and
// after it the same thread is not (the mark does not spread to whatever
// the runtime runs there next).
func TestIOFlusherSpan(t *testing.T) {
	runtime.LockOSThread() // keep this thread to look at it after the span
	defer runtime.UnlockOSThread()
	get := func() int {
		v, err := unix.PrctlRetInt(unix.PR_GET_IO_FLUSHER, 0, 0, 0, 0)
		if err != nil {
			t.Fatalf("PR_GET_IO_FLUSHER: %v", err)
		}
		return v
	}
	end := ioFlusherSpan()
	if ioFlusherRefused.Load() {
		end()
		// Not a part to install: the capability is the machine's (a
		// container or VM may withhold it even from root), and the server
		// runs without the mark, saying so at start.
		t.Skip("cannot mark a thread as an I/O flusher here (needs CAP_SYS_RESOURCE)")
	}
	if get() != 1 {
		t.Fatal("inside the span the thread is not an I/O flusher")
	}
	end()
	if get() != 0 {
		t.Fatal("after the span the thread is still an I/O flusher")
	}
}
