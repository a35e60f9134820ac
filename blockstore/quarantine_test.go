package blockstore

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestQuarantine: once a chunk is found corrupt, new writes of the same
// content store a good copy instead of deduplicating onto the bad one.
func TestQuarantine(t *testing.T) {
	dir, vol := newCorruptStore(t, false, corruptOptions(1<<20))
	l := readCorruptLayout(t, dir)
	const victim = 5 // blocks 5, 21, 37, 53 share one chunk
	id := l.chunkOf[victim]
	rec := l.chunks[id]
	flipByte(t, packPath(dir, rec.pack), rec.off+chunkHeaderSize+int64(rec.n)/2)
	s, err := Open(dir, corruptOptions(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.OpenVolume(vol)
	if err != nil {
		t.Fatal(err)
	}
	img := corruptImage()
	rep, err := s.Scrub(context.Background())
	if err != nil || len(rep.Corrupt) != 1 || rep.Corrupt[0].Chunk != id {
		t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
	// Rewrite the damaged content at one of its blocks and at a new place.
	if _, err := v.WriteAtStable(img[victim], 21*corruptBS); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAtStable(img[victim], 100*corruptBS); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, corruptBS)
	for _, b := range []int64{21, 100} {
		if _, err := v.ReadAt(got, b*corruptBS); err != nil {
			t.Fatalf("block %d rewritten after quarantine: %v", b, err)
		}
		if !bytes.Equal(got, img[victim]) {
			t.Fatalf("block %d: wrong bytes", b)
		}
	}
	// The blocks still pointing at the bad chunk keep failing.
	if _, err := v.ReadAt(got, 37*corruptBS); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block 37: %v, want ErrCorrupt", err)
	}
	// A read that finds corruption quarantines too.
	id2 := l.chunkOf[9]
	rec2 := l.chunks[id2]
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	flipByte(t, packPath(dir, rec2.pack), rec2.off+chunkHeaderSize+int64(rec2.n)/2)
	if s, err = Open(dir, corruptOptions(1<<20)); err != nil {
		t.Fatal(err)
	}
	if v, err = s.OpenVolume(vol); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(got, 9*corruptBS); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block 9: %v, want ErrCorrupt", err)
	}
	if !s.isQuarantined(id2) {
		t.Fatal("a corrupt chunk found by a read was not quarantined")
	}
	if _, err := v.WriteAtStable(img[9], 200*corruptBS); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(got, 200*corruptBS); err != nil || !bytes.Equal(got, img[9]) {
		t.Fatalf("block 200 after quarantine: %v", err)
	}
}

// TestQuarantineSurvivesRestart: a chunk found corrupt stays out of dedupe
// after the store is closed and opened again. Before the quarantine was
// kept in bbolt, a write of the same content after a restart deduplicated
// onto the bad chunk, and the new write read back ErrCorrupt.
func TestQuarantineSurvivesRestart(t *testing.T) {
	opts := corruptOptions(1 << 20)
	dir, vol := newCorruptStore(t, false, opts)
	l := readCorruptLayout(t, dir)
	const victim = 5 // blocks 5, 21, 37, 53 share one chunk
	id := l.chunkOf[victim]
	rec := l.chunks[id]
	flipByte(t, packPath(dir, rec.pack), rec.off+chunkHeaderSize+int64(rec.n)/2)
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rep, err := s.Scrub(context.Background())
	if err != nil || len(rep.Corrupt) != 1 || rep.Corrupt[0].Chunk != id {
		t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
	for round := range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = Open(dir, opts); err != nil {
			t.Fatal(err)
		}
		if !s.isQuarantined(id) {
			t.Fatalf("round %d: chunk %d is no longer quarantined after a restart", round, id)
		}
	}
	v, err := s.OpenVolume(vol)
	if err != nil {
		t.Fatal(err)
	}
	img := corruptImage()
	if _, err := v.WriteAtStable(img[victim], 100*corruptBS); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, corruptBS)
	if _, err := v.ReadAt(got, 100*corruptBS); err != nil || !bytes.Equal(got, img[victim]) {
		t.Fatalf("content of a quarantined chunk written after a restart: %v", err)
	}
	if _, err := v.ReadAt(got, 37*corruptBS); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block 37: %v, want ErrCorrupt", err)
	}
	// Once nothing references the bad chunk, GC frees it and its
	// quarantine entry with it.
	for _, b := range []int64{5, 21, 37, 53} {
		if _, err := v.WriteAt(img[victim], b*corruptBS); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(context.Background(), GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.isQuarantined(id) || bucketLen(t, s, bQuarantine) != 0 {
		t.Fatalf("chunk %d freed by GC is still quarantined", id)
	}
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) != 0 {
		t.Fatalf("scrub after GC: %v %+v", err, rep.Corrupt)
	}
}
