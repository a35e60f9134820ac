package blockstore

import (
	"math/rand/v2"
	"testing"
)

// TestAllocated: the allocated count follows writes, holes, truncates,
// snapshots and clones, before and after destage, and costs nothing for a
// huge sparse volume.
func TestAllocated(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4096}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	fresh := func(v *Volume) int64 {
		vs, err := v.state()
		if err != nil {
			t.Fatal(err)
		}
		return s.recount(vs) / 4096
	}
	if err := v.Truncate(40 << 30); err != nil { // a 40 GiB sparse disk
		t.Fatal(err)
	}
	if n := fresh(v); n != 0 {
		t.Fatalf("sparse: %d blocks", n)
	}
	p := make([]byte, 10*4096)
	fillRand(rand.New(rand.NewPCG(1, 2)), p)
	if _, err := v.WriteAt(p, 1<<30); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(make([]byte, 4096), 1<<30+4096); err != nil { // one back to a hole
		t.Fatal(err)
	}
	if n := fresh(v); n != 9 {
		t.Fatalf("pending: %d blocks, want 9", n)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := fresh(v); n != 9 {
		t.Fatalf("destaged: %d blocks, want 9", n)
	}
	ls, err := s.Freeze(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Clone(ls[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(p[:4096], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(make([]byte, 8192), 1<<30); err != nil { // two holes on top
		t.Fatal(err)
	}
	if n := fresh(c); n != 10 {
		t.Fatalf("clone: %d blocks, want 10", n)
	}
	if n := fresh(v); n != 8 {
		t.Fatalf("after holes over a snapshot: %d blocks, want 8", n)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := fresh(v); n != 8 {
		t.Fatalf("destaged, holes over a snapshot: %d blocks, want 8", n)
	}
	if err := v.Truncate(1<<30 + 4*4096); err != nil {
		t.Fatal(err)
	}
	if n := fresh(v); n != 2 {
		t.Fatalf("after truncate: %d blocks, want 2", n)
	}
}
