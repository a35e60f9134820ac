package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestScrubOnline: a scrub holds nothing that writers, destage or GC wait
// on. While a scrub is paused after reading the places of its first step's
// chunks, new writes are destaged (Flush) and a GC frees half of those
// chunks and moves the rest into new packs, deleting the old ones. The
// scrub then skips the freed chunks, verifies the moved ones where they now
// are, reports nothing corrupt, and checks exactly the chunks that are live
// at its end, each once.
func TestScrubOnline(t *testing.T) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(5, 6))
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	n := 3 * scrubStep // three steps of chunks
	want := make([]byte, n*bs)
	fillRand(rng, want)
	if _, err := v.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every other block becomes a hole: every pack is half dead, so a GC
	// at threshold 0.9 compacts them all.
	zero := make([]byte, bs)
	for i := 0; i < n; i += 2 {
		if _, err := v.WriteAt(zero, int64(i*bs)); err != nil {
			t.Fatal(err)
		}
		copy(want[i*bs:], zero)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}

	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	scrubStepRead = func() { once.Do(func() { close(paused); <-resume }) }
	defer func() { scrubStepRead = nil }()
	type result struct {
		rep ScrubReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.Scrub(context.Background())
		done <- result{rep, err}
	}()
	select {
	case <-paused:
	case r := <-done:
		t.Fatalf("scrub ended before its first step read a pack: %+v %v", r.rep, r.err)
	}

	// Writes, destage and GC go on while the scrub waits. Without the
	// bound the test would hang if they did not: release the scrub first.
	busy := make(chan error, 1)
	var gc GCReport
	go func() {
		more := make([]byte, 64*bs)
		fillRand(rng, more)
		if _, err := v.WriteAt(more, int64(n*bs)); err != nil {
			busy <- err
			return
		}
		want = append(want, more...)
		if err := s.Flush(); err != nil {
			busy <- err
			return
		}
		var err error
		gc, err = s.GC(context.Background(), GCOptions{Threshold: 0.9})
		busy <- err
	}()
	select {
	case err := <-busy:
		if err != nil {
			close(resume)
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(resume)
		t.Fatal("writes, destage and GC did not finish while a scrub was under way")
	}
	close(resume)
	if gc.ChunksFreed != int64(n/2) || gc.PacksCompacted == 0 {
		t.Fatalf("GC freed %d chunks (want %d) and compacted %d packs: the test needs both", gc.ChunksFreed, n/2, gc.PacksCompacted)
	}
	r := <-done
	if r.err != nil || len(r.rep.Corrupt) > 0 {
		t.Fatalf("scrub beside GC: %v, corrupt %+v", r.err, r.rep.Corrupt)
	}
	live := countChunks(t, s)
	if live != int64(n/2+64) {
		t.Fatalf("%d chunks live after GC, want %d", live, n/2+64)
	}
	if r.rep.ChunksChecked != live {
		t.Fatalf("scrub checked %d chunks, want the %d live at its end", r.rep.ChunksChecked, live)
	}
	// A scrub with nothing beside it agrees, and the data reads back.
	ref, err := s.Scrub(context.Background())
	if err != nil || len(ref.Corrupt) > 0 || ref.ChunksChecked != live || ref.BytesChecked != r.rep.BytesChecked {
		t.Fatalf("second scrub: %v, checked %d chunks %d bytes (online: %d, %d), corrupt %+v",
			err, ref.ChunksChecked, ref.BytesChecked, r.rep.ChunksChecked, r.rep.BytesChecked, ref.Corrupt)
	}
	got := make([]byte, len(want))
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("volume reads back wrong after scrub beside GC")
	}
}

// TestScrubFindsCorruptionAfterMove: a chunk whose bytes are wrong is
// reported where the chunk table places it even when the scrub looked it up
// at an older place (GC moved it meanwhile).
func TestScrubFindsCorruptionAfterMove(t *testing.T) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(7, 8))
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	n := 256
	data := make([]byte, n*bs)
	fillRand(rng, data)
	if _, err := v.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, bs)
	for i := 0; i < n; i += 2 {
		if _, err := v.WriteAt(zero, int64(i*bs)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	scrubStepRead = func() { once.Do(func() { close(paused); <-resume }) }
	defer func() { scrubStepRead = nil }()
	type result struct {
		rep ScrubReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.Scrub(context.Background())
		done <- result{rep, err}
	}()
	<-paused
	gc, err := s.GC(context.Background(), GCOptions{Threshold: 0.9})
	if err != nil || gc.PacksCompacted == 0 {
		close(resume)
		t.Fatalf("GC: %v, compacted %d packs", err, gc.PacksCompacted)
	}
	// Flip a byte of one moved chunk at its new place.
	var id uint64
	var rec chunkRec
	if err := s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bChunks).Cursor().First()
		id = binary.BigEndian.Uint64(k)
		var err error
		rec, err = decodeChunkRec(v)
		return err
	}); err != nil {
		close(resume)
		t.Fatal(err)
	}
	flipByte(t, packPath(dir, rec.pack), rec.off+chunkHeaderSize+int64(rec.n)/2)
	close(resume)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.rep.Corrupt) != 1 || r.rep.Corrupt[0].Chunk != id || r.rep.Corrupt[0].Pack != rec.pack || r.rep.Corrupt[0].Offset != rec.off {
		t.Fatalf("scrub reported %+v, want chunk %d at pack %d offset %d", r.rep.Corrupt, id, rec.pack, rec.off)
	}
	if r.rep.ChunksChecked != int64(n/2-1) {
		t.Fatalf("scrub checked %d chunks, want %d", r.rep.ChunksChecked, n/2-1)
	}
}

// countChunks is the number of entries in the chunk table.
func countChunks(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = int64(tx.Bucket(bChunks).Stats().KeyN)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
