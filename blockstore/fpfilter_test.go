package blockstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// waitFilter waits until s's index filter is built.
func waitFilter(t *testing.T, s *Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !s.fpf.Load().ready.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the index filter was not built within 10 s")
		}
	}
}

// writeFlush writes p to v at off and destages it.
func writeFlush(t *testing.T, s *Store, v *Volume, p []byte, off int64) {
	t.Helper()
	if _, err := v.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
}

// writeRandFlush writes n random bytes to v at off and destages them; it
// returns the bytes.
func writeRandFlush(t *testing.T, s *Store, v *Volume, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	rand.Read(p)
	writeFlush(t, s, v, p, off)
	return p
}

// waitFilterSwap waits until a rebuilt filter has replaced old.
func waitFilterSwap(t *testing.T, s *Store, old *fpFilter, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.fpf.Load() == old; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no rebuilt filter replaced the old one within 10 s %s", what)
		}
	}
}

// clearFPCache empties c, as a stream of other data would.
func clearFPCache(c *fpCache) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.slots = [fpCacheSlots]fpSlot{}
		sh.mu.Unlock()
	}
}

// chunkCount counts the chunk table's entries: a block stored twice is two.
func chunkCount(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bChunks).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFPFilter: the filter built at Open holds every fingerprint of the
// index and rules out nearly all others; chunks destaged after it is built
// are added, so writing their data again still deduplicates (with the
// front on and off); and a filter that says nothing keeps the old path.
func TestFPFilter(t *testing.T) {
	for _, front := range []int{0, -1} {
		dir, s, v := frontVolume(t, Options{FrontBlocks: front})
		data := make([]byte, 2<<20)
		rand.Read(data)
		if _, err := v.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		waitFilter(t, s)
		chunks := chunkCount(t, s)
		if chunks != len(data)/s.BlockSize() {
			t.Fatalf("front %d: %d chunks for %d unique blocks", front, chunks, len(data)/s.BlockSize())
		}
		// Destaged after the filter was built: the same data again, at
		// another offset, must find every chunk, not store it twice. The
		// index's cache is emptied first, as a stream of other data
		// would, so the lookups go through the filter.
		clearFPCache(s.fpc)
		writeFlush(t, s, v, data, 8<<20)
		if n := chunkCount(t, s); n != chunks {
			t.Fatalf("front %d: writing the same data again made %d chunks, want %d (the filter lost chunks)", front, n, chunks)
		}
		id := v.ID()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// Built at Open from the index: no false negatives, few positives.
		s, err := Open(dir, Options{FrontBlocks: front, DestageDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		waitFilter(t, s)
		if err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bIndex).ForEach(func(k, _ []byte) error {
				var fp Fingerprint
				copy(fp[:], k)
				if s.fpf.Load().absent(&fp) {
					t.Fatalf("front %d: the filter rules out %x, which the index holds", front, k)
				}
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		maybe := 0
		const tries = 100000
		for range tries {
			var fp Fingerprint
			rand.Read(fp[:])
			if !s.fpf.Load().absent(&fp) {
				maybe++
			}
		}
		if maybe > tries/100 {
			t.Errorf("front %d: the filter says maybe for %d of %d random fingerprints, want under 1%%", front, maybe, tries)
		}
		clearFPCache(s.fpc)
		v2, err := s.OpenVolume(id)
		if err != nil {
			t.Fatal(err)
		}
		writeFlush(t, s, v2, data, 16<<20)
		if n := chunkCount(t, s); n != chunks {
			t.Fatalf("front %d: after reopening, the same data made %d chunks, want %d", front, n, chunks)
		}
		got := make([]byte, len(data))
		for _, off := range []int64{0, 8 << 20, 16 << 20} {
			if _, err := v2.ReadAt(got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("front %d: the data at %d reads back wrong", front, off)
			}
		}
	}
}

// TestFPFilterSizes: the filter's size is the power of two at or below
// FilterBytes, and a fingerprint added is never ruled out.
func TestFPFilterSizes(t *testing.T) {
	for _, n := range []int{1, 8, 1000, 8 << 20, 8<<20 + 5} {
		f := newFPFilter(n)
		bits := uint64(len(f.words)) * 64
		if bits-1 != f.mask || bits&(bits-1) != 0 || (n >= 8 && bits > uint64(n)*8) {
			t.Fatalf("FilterBytes %d: %d bits, mask %#x", n, bits, f.mask)
		}
		f.ready.Store(true)
		for range 1000 {
			var fp Fingerprint
			rand.Read(fp[:])
			f.add(&fp)
			if f.absent(&fp) {
				t.Fatalf("FilterBytes %d: a fingerprint just added is ruled out", n)
			}
		}
	}
}

// TestFPFilterRebuildAfterGC: after GC sweeps chunks, a filter rebuilt
// from the index replaces the old one: the swept fingerprints are ruled
// out again, and every fingerprint still indexed, including those of data
// destaged while the rebuild ran, is not.
func TestFPFilterRebuildAfterGC(t *testing.T) {
	_, s, v := frontVolume(t, Options{})
	bs := s.BlockSize()
	gone := writeRandFlush(t, s, v, 0, 4<<20)
	waitFilter(t, s)
	fps := make([]Fingerprint, len(gone)/bs)
	for i := range fps {
		fps[i] = s.seal.fingerprint(gone[i*bs : (i+1)*bs])
		if s.fpf.Load().absent(&fps[i]) {
			t.Fatalf("block %d's fingerprint is ruled out while indexed", i)
		}
	}
	if err := s.DeleteVolume(v.ID()); err != nil {
		t.Fatal(err)
	}
	kept, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	keep := writeRandFlush(t, s, kept, 0, 2<<20)
	old := s.fpf.Load()
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksFreed != int64(len(fps)) {
		t.Fatalf("GC freed %d chunks, want %d", rep.ChunksFreed, len(fps))
	}
	// Written while the rebuild may still run.
	more := writeRandFlush(t, s, kept, 4<<20, 1<<20)
	waitFilterSwap(t, s, old, "of the GC")
	maybe := 0
	for i := range fps {
		if !s.fpf.Load().absent(&fps[i]) {
			maybe++
		}
	}
	if maybe > len(fps)/50 {
		t.Fatalf("after the rebuild, %d of %d swept fingerprints are still maybe in the filter", maybe, len(fps))
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bIndex).ForEach(func(k, _ []byte) error {
			var fp Fingerprint
			copy(fp[:], k)
			if s.fpf.Load().absent(&fp) {
				t.Fatalf("the rebuilt filter rules out %x, which the index holds", k)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	// The front is merged by Flush: every kept chunk is in the index.
	if n, want := chunkCount(t, s), (len(keep)+len(more))/bs; n != want {
		t.Fatalf("%d chunks after GC, want %d", n, want)
	}
}

// TestFPFilterRebuildSeesConcurrentDestage: a chunk destaged while a
// rebuild is under way, whose fingerprint sorts before what the rebuild
// has already read, reaches the new filter through destage (fpfNext), not
// through the rebuild's scan.
func TestFPFilterRebuildSeesConcurrentDestage(t *testing.T) {
	_, s, v := frontVolume(t, Options{})
	bs := s.BlockSize()
	writeRandFlush(t, s, v, 0, 1<<20)
	waitFilter(t, s)

	// The rebuild reads 16 keys, then waits here for the test.
	paused := make(chan []byte)
	resume := make(chan struct{})
	step, pause := filterBuildStep, filterBuildPause
	filterBuildStep = 16
	var once sync.Once
	filterBuildPause = func(after []byte) {
		once.Do(func() {
			paused <- append([]byte(nil), after...)
			<-resume
		})
	}
	t.Cleanup(func() { filterBuildStep, filterBuildPause = step, pause })

	// A GC that sweeps something starts the rebuild.
	w, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	writeRandFlush(t, s, w, 0, 64<<10)
	if err := s.DeleteVolume(w.ID()); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	prev := s.fpf.Load()
	if rep, err := s.GC(context.Background(), GCOptions{}); err != nil || rep.ChunksFreed == 0 {
		t.Fatalf("GC: %+v, %v; want chunks freed", rep, err)
	}
	var after []byte
	select {
	case after = <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("the rebuild after GC did not reach its first pause within 10 s")
	}

	// New blocks whose fingerprints sort before the scan's position.
	var blocks []byte
	var fps []Fingerprint
	for len(fps) < 8 {
		b := make([]byte, bs)
		rand.Read(b)
		fp := s.seal.fingerprint(b)
		if bytes.Compare(fp[:], after) < 0 {
			blocks, fps = append(blocks, b...), append(fps, fp)
		}
	}
	if _, err := v.WriteAt(blocks, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	close(resume)
	waitFilterSwap(t, s, prev, "of resuming the rebuild")
	for i := range fps {
		if s.fpf.Load().absent(&fps[i]) {
			t.Fatalf("block %d, destaged during the rebuild behind its scan, is ruled out by the new filter", i)
		}
	}
}
