package blockstore

import (
	"github.com/dstore/dstore/internal/par"
	"os"
	"runtime"
	"testing"
)

// gomaxprocsAtStart is read when the package's variables are initialized,
// before any test opens a store.
var gomaxprocsAtStart = runtime.GOMAXPROCS(0)

// TestSpareProc: opening a store gives the scheduler one processor more
// than the default, once, and leaves an operator's GOMAXPROCS alone; work
// split across CPUs still counts CPUs.
func TestSpareProc(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	want := gomaxprocsAtStart + 1
	if os.Getenv("GOMAXPROCS") != "" {
		want = gomaxprocsAtStart
	}
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("GOMAXPROCS %d after opening stores (was %d at start), want %d", got, gomaxprocsAtStart, want)
	}
	if w := par.Workers(); w != min(want, runtime.NumCPU()) {
		t.Fatalf("par.Workers() = %d with %d CPUs and GOMAXPROCS %d", w, runtime.NumCPU(), want)
	}
}
