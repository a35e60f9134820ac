package blockstore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
)

// TestGCCompactsOpenPack: data removed while its pack is still the open
// one (the tail of a file deleted right after it was written, as when a
// full disk is cleared) is given back by GC like any other: the open pack
// is sealed and compacted. It used to be skipped until it filled, and on a
// full disk that space was out of reach.
func TestGCCompactsOpenPack(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(9, 10))
	gone, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 8<<20)
	fillRand(rng, big)
	if _, err := gone.WriteAt(big, 0); err != nil {
		t.Fatal(err)
	}
	keep, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 1<<20)
	fillRand(rng, small)
	if _, err := keep.WriteAt(small, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.pack == nil {
		t.Fatal("no open pack after 9 MiB: the test needs one")
	}
	open := s.pack.id()
	if err := s.DeleteVolume(gone.ID()); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(context.Background(), GCOptions{Threshold: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PackBytesFreed < 7<<20 {
		t.Fatalf("GC gave back %d bytes; the open pack %d held 8 MiB of deleted data", rep.PackBytesFreed, open)
	}
	if s.pack != nil && s.pack.id() == open {
		t.Fatal("the compacted pack is still the open pack")
	}
	// Writes go on into a new pack; everything reads back after a reopen.
	more := make([]byte, 1<<20)
	fillRand(rng, more)
	if _, err := keep.WriteAt(more, 1<<20); err != nil {
		t.Fatal(err)
	}
	kid := keep.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	keep, err = s.OpenVolume(kid)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2<<20)
	if _, err := keep.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:1<<20], small) || !bytes.Equal(got[1<<20:], more) {
		t.Fatal("the kept volume reads back wrong after the open pack was compacted")
	}
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) != 0 {
		t.Fatalf("scrub: %v, %d corrupt", err, len(rep.Corrupt))
	}
}
