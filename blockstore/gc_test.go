package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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

// TestFlushEndsUnderSteadyWrites: Flush destages what was logged before it
// was called and returns, while writers go on logging. (It used to wait
// for an empty queue, which under steady writes never came: the auto GC,
// which flushes first, took minutes to start under make bench's dd.)
func TestFlushEndsUnderSteadyWrites(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{MaxLogBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers = 4
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var wrote atomic.Int64
	for w := range writers {
		v, err := s.CreateVolume()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			p := make([]byte, 256<<10)
			deadline := time.Now().Add(60 * time.Second)
			for off := int64(0); time.Now().Before(deadline); off = (off + int64(len(p))) % (256 << 20) {
				select {
				case <-stop:
					return
				default:
				}
				fillRand(rng, p)
				if _, err := v.WriteAt(p, off); err != nil {
					t.Error(err)
					return
				}
				wrote.Add(int64(len(p)))
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	// Let the writers fill the log up to its bound.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		q := s.queueBytes.Load()
		s.mu.Unlock()
		if q >= 4<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Skipf("the writers never got 4 MiB ahead of destage (%d MiB written): nothing to test on this machine", wrote.Load()>>20)
		}
	}
	s.mu.Lock()
	target := s.queue[len(s.queue)-1].end
	s.mu.Unlock()
	done := make(chan error, 1)
	before := wrote.Load()
	go func() { done <- s.Flush() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Flush did not return in 20 s while writers went on (%d MiB written meanwhile)", (wrote.Load()-before)>>20)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 && s.queue[0].end <= target {
		t.Fatalf("Flush returned with a record logged before it (end %d <= %d) still queued", s.queue[0].end, target)
	}
	t.Logf("Flush returned; %d MiB written meanwhile, %d bytes queued", (wrote.Load()-before)>>20, s.queueBytes.Load())
}

// garbageStore writes n unique blocks to a, then new content to blocks
// 0..gone-1, so their old chunks are garbage. It returns the old and the
// current content of a.
func garbageStore(t *testing.T, s *Store, a *Volume, seed uint64, n, gone int) (old, want []byte) {
	t.Helper()
	const bs = 4 << 10
	rng := rand.New(rand.NewPCG(seed, seed))
	old = make([]byte, n*bs)
	fillRand(rng, old)
	writeFlush(t, s, a, old, 0)
	want = append([]byte(nil), old...)
	fillRand(rng, want[:gone*bs])
	writeFlush(t, s, a, want[:gone*bs], 0)
	return old, want
}

// checkVolumes wants each volume to read back its content.
func checkVolumes(t *testing.T, what string, vols []*Volume, wants [][]byte) {
	t.Helper()
	for i, v := range vols {
		got := make([]byte, len(wants[i]))
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, wants[i]) {
			t.Fatalf("%s: volume %d reads back wrong", what, v.ID())
		}
	}
}

// TestGCMarkBesideDestage: GC's map walk holds no lock that writes or
// destage wait on. While a GC is paused between two steps of its walk,
// writes are logged and destaged (Flush), among them blocks whose content
// is that of chunks nothing referenced when the GC began: those chunks are
// referenced again and must survive; the rest of that garbage is freed.
func TestGCMarkBesideDestage(t *testing.T) {
	const bs = 4 << 10
	dir, s := open4K(t, Options{})
	// B is made first: its map entries sort before A's, behind the walk
	// when it pauses, so only the marks made beside the walk keep what B
	// references.
	b, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	const n, gone, back = 512, 100, 10
	old, want := garbageStore(t, s, a, 11, n, gone)

	defer func(step int) { gcMarkStep = step }(gcMarkStep)
	gcMarkStep = 64 // several steps over the map's entries
	wait := pauseAt(t, &gcMarkStepDone, func() (GCReport, error) {
		return s.GC(context.Background(), GCOptions{Threshold: 0.5})
	})
	// B takes the old content of blocks 0..back-1 (deduplicated against
	// the garbage chunks) and some new data; destage runs.
	fresh := make([]byte, 32*bs)
	fillRand(rand.New(rand.NewPCG(12, 12)), fresh)
	wantB := append(append([]byte(nil), old[:back*bs]...), fresh...)
	within(t, "writes and destage beside GC's map walk", func() error {
		if _, err := b.WriteAtStable(wantB, 0); err != nil {
			return err
		}
		return s.Flush()
	})
	rep, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksFreed != gone-back {
		t.Fatalf("GC freed %d chunks, want %d (the garbage not referenced again)", rep.ChunksFreed, gone-back)
	}
	checkVolumes(t, "after GC", []*Volume{a, b}, [][]byte{want, wantB})
	aid, bid := a.ID(), b.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a, err = s.OpenVolume(aid); err != nil {
		t.Fatal(err)
	}
	if b, err = s.OpenVolume(bid); err != nil {
		t.Fatal(err)
	}
	checkVolumes(t, "after reopen", []*Volume{a, b}, [][]byte{want, wantB})
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) != 0 || rep.ChunksChecked != n+back+32 {
		t.Fatalf("scrub: %v, %d chunks checked (want %d), corrupt %+v", err, rep.ChunksChecked, n+back+32, rep.Corrupt)
	}
}

// TestGCSweepBesideWrites: GC's count of the chunk table holds no lock
// either. While it is paused between two steps, a write deduplicates onto
// a garbage chunk the count has already passed (the write path and destage
// go on: the old sweep held the GC lock and destage mutex through the
// count), new chunks are destaged, and a repair moves a chunk the count
// has passed. The garbage chunk is kept, the rest freed, and every pack's
// live figures are exact.
func TestGCSweepBesideWrites(t *testing.T) {
	const bs = 4 << 10
	_, s := open4K(t, Options{PackSize: 256 << 10})
	a, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	const n, gone = 512, 200
	old, want := garbageStore(t, s, a, 13, n, gone)

	defer func(step int) { gcMarkStep = step }(gcMarkStep)
	gcMarkStep = 256 // the first step: old chunks of blocks 0..199 (garbage) and 200..255
	wait := pauseAt(t, &gcSweepStepDone, func() (GCReport, error) {
		return s.GC(context.Background(), GCOptions{Threshold: 0.5})
	})
	// Block 1's old chunk (within the first step) is garbage the count has
	// passed; B takes it back, with new data. A repair rewrites block 220's
	// chunk (live, counted in the first step) into a pack of its own: the
	// count is stale, and the GC must count again, or the new pack looks
	// dead and is deleted.
	b, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	fresh := make([]byte, 32*bs)
	fillRand(rand.New(rand.NewPCG(14, 14)), fresh)
	wantB := append(append([]byte(nil), old[bs:2*bs]...), fresh...)
	within(t, "writes, destage and a repair beside GC's count", func() error {
		if _, err := b.WriteAtStable(wantB, 0); err != nil {
			return err
		}
		if err := s.Flush(); err != nil {
			return err
		}
		return rewriteOne(s, old[220*bs:221*bs])
	})
	rep, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksFreed != gone-1 || rep.ChunksMarked != n+1+32 {
		t.Fatalf("GC freed %d chunks and kept %d, want %d and %d", rep.ChunksFreed, rep.ChunksMarked, gone-1, n+1+32)
	}
	checkPackFigures(t, s)
	checkVolumes(t, "after GC", []*Volume{a, b}, [][]byte{want, wantB})
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) != 0 || rep.ChunksChecked != n+1+32 {
		t.Fatalf("scrub: %v, %d chunks, corrupt %+v", err, rep.ChunksChecked, rep.Corrupt)
	}
}

// rewriteOne stores the chunk holding block again, as a repair does.
func rewriteOne(s *Store, block []byte) error {
	sums := make([]Fingerprint, 1)
	s.seal.fingerprintMany([][]byte{block}, sums)
	var it repairItem
	if err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bIndex).Get(sums[0][:])
		if len(v) != 8 {
			return fmt.Errorf("block's fingerprint not in the index")
		}
		it.id = binary.LittleEndian.Uint64(v)
		var err error
		it.old, err = decodeChunkRec(tx.Bucket(bChunks).Get(u64b(it.id)))
		return err
	}); err != nil {
		return err
	}
	it.block = block
	n, err := s.rewriteChunks([]repairItem{it})
	if err == nil && n != 1 {
		err = fmt.Errorf("rewrote %d chunks, want 1", n)
	}
	return err
}

// checkPackFigures wants every pack record's live bytes and chunks to be
// what the chunk table places in it.
func checkPackFigures(t *testing.T, s *Store) {
	t.Helper()
	type fig struct{ live, chunks int64 }
	want := map[uint64]fig{}
	got := map[uint64]fig{}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bChunks).ForEach(func(_, v []byte) error {
			rec, err := decodeChunkRec(v)
			if err != nil {
				return err
			}
			f := want[rec.pack]
			f.live += int64(chunkHeaderSize + rec.n)
			f.chunks++
			want[rec.pack] = f
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bPacks).ForEach(func(k, v []byte) error {
			r := decodePackRec(v)
			got[binary.BigEndian.Uint64(k)] = fig{r.live, r.liveChunks}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for id, f := range got {
		if f != want[id] {
			t.Errorf("pack %d: record says %d live bytes in %d chunks, the chunk table %d in %d", id, f.live, f.chunks, want[id].live, want[id].chunks)
		}
		delete(want, id)
	}
	for id := range want {
		t.Errorf("chunks in pack %d, which has no record", id)
	}
}
