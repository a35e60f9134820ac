package blockstore

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestLargeWrite: a write far larger than one log record is split and reads
// back whole, also after a reopen.
func TestLargeWrite(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 21<<20+123)
	fillRand(rand.New(rand.NewPCG(1, 1)), p)
	const off = 4096*3 + 17
	if n, err := v.WriteAtStable(p, off); err != nil || n != len(p) {
		t.Fatalf("write: %d %v", n, err)
	}
	check := func(v *Volume) {
		t.Helper()
		got := make([]byte, len(p))
		if _, err := v.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("differs at %d", firstDiff(got, p))
		}
	}
	check(v)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err = s.OpenVolume(v.ID()); err != nil {
		t.Fatal(err)
	}
	check(v)
}
