package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readPprof returns the decompressed protobuf of a pprof file.
func readPprof(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s is not a gzipped pprof profile: %v", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return data
}

// TestDebugPprof takes profiles of a running daemon through its control
// socket: a CPU profile of 1 s and a heap profile are pprof files with
// their sample types; an unknown profile, a bad duration and a datastore
// with no daemon are clear errors; each profile taken is audited.
func TestDebugPprof(t *testing.T) {
	dir := newStore(t, map[string]string{"a": "x"})
	out := t.TempDir()

	expect(t, 1, "debug", "pprof", "--data", dir, "--out", filepath.Join(out, "none.pprof"))

	startServe(t, dir)
	cpu := filepath.Join(out, "cpu.pprof")
	_, stderr := expect(t, 0, "debug", "pprof", "--data", dir, "--seconds", "1", "--out", cpu)
	if !strings.Contains(stderr, "wrote "+cpu) {
		t.Fatalf("stderr %q does not say where the profile went", stderr)
	}
	if p := readPprof(t, cpu); !bytes.Contains(p, []byte("cpu")) || !bytes.Contains(p, []byte("nanoseconds")) {
		t.Fatalf("the CPU profile has no cpu/nanoseconds sample type (%d bytes)", len(p))
	}
	heap := filepath.Join(out, "heap.pprof")
	expect(t, 0, "debug", "pprof", "--data", dir, "--profile", "heap", "--out", heap)
	if p := readPprof(t, heap); !bytes.Contains(p, []byte("inuse_space")) {
		t.Fatalf("the heap profile has no inuse_space sample type (%d bytes)", len(p))
	}
	gr, _ := expect(t, 0, "debug", "pprof", "--data", dir, "--profile", "goroutine", "--out", "-")
	if len(gr) < 2 || gr[0] != 0x1f || gr[1] != 0x8b {
		t.Fatalf("a goroutine profile on stdout is not gzipped pprof: %q", gr[:min(len(gr), 16)])
	}

	_, stderr = expect(t, 1, "debug", "pprof", "--data", dir, "--profile", "nosuch", "--out", filepath.Join(out, "x"))
	if !strings.Contains(stderr, `no profile "nosuch"`) {
		t.Fatalf("an unknown profile: %q", stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "x")); !os.IsNotExist(err) {
		t.Fatalf("a failed profile left its output file: %v", err)
	}
	expect(t, 2, "debug", "pprof", "--data", dir, "--seconds", "0", "--out", filepath.Join(out, "y"))

	n := 0
	for _, r := range readAuditLog(t, dir) {
		if r.Operation == "debug.pprof" {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d debug.pprof records in the audit log, want 4 (cpu, heap, goroutine, the unknown one)", n)
	}
}
