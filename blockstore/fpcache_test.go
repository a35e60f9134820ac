package blockstore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
)

// TestFPCacheAcrossGC: data found in the index goes into the front
// (fpCache); once GC deletes those chunks, the front must forget them, so
// the same data written again is stored anew instead of referring to a
// chunk that no longer exists, and reads back exactly after a reopen.
func TestFPCacheAcrossGC(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(3, 4))
	p := make([]byte, 1<<20)
	fillRand(rng, p)

	a, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Written again: every block is found in the index, and cached.
	b, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	fp := s.seal.fingerprint(p[:4096])
	id := s.fpc.get(&fp)
	if id == 0 {
		t.Fatal("a block found in the index is not in the front")
	}
	// Both volumes go; GC deletes the chunks and must drop them.
	for _, v := range []*Volume{a, b} {
		if err := s.DeleteVolume(v.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksFreed < 256 {
		t.Fatalf("GC freed %d chunks, want the 256 of the deleted data", rep.ChunksFreed)
	}
	if got := s.fpc.get(&fp); got != 0 {
		t.Fatalf("the front still maps a collected chunk (%d)", got)
	}
	c, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Chunks != 256 {
		t.Fatalf("%d chunks after writing 256 distinct blocks again, want 256", st.Chunks)
	}
	cid := c.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	c, err = s.OpenVolume(cid)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if _, err := c.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatalf("the data written after the GC differs at %d", firstDiff(got, p))
	}
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) != 0 {
		t.Fatalf("scrub: %v, %d corrupt", err, len(rep.Corrupt))
	}
}
