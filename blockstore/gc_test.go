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

// TestGCMarkBesideDestage: GC's map walk holds no lock that writes or
// destage wait on. While a GC is paused between two steps of its walk,
// writes are logged and destaged (Flush), among them blocks whose content
// is that of chunks nothing referenced when the GC began: those chunks are
// referenced again and must survive; the rest of that garbage is freed.
func TestGCMarkBesideDestage(t *testing.T) {
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
	rng := rand.New(rand.NewPCG(11, 12))
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
	old := make([]byte, n*bs)
	fillRand(rng, old)
	if _, err := a.WriteAt(old, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Blocks 0..gone-1 get new content: their old chunks are garbage.
	want := append([]byte(nil), old...)
	fillRand(rng, want[:gone*bs])
	if _, err := a.WriteAt(want[:gone*bs], 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}

	defer func(step int) { gcMarkStep = step }(gcMarkStep)
	gcMarkStep = 64 // several steps over the map's n+gone entries
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gcMarkStepDone = func() { once.Do(func() { close(paused); <-resume }) }
	defer func() { gcMarkStepDone = nil }()
	type result struct {
		rep GCReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.GC(context.Background(), GCOptions{Threshold: 0.5})
		done <- result{rep, err}
	}()
	select {
	case <-paused:
	case r := <-done:
		t.Fatalf("GC ended before its map walk paused: %+v %v", r.rep, r.err)
	}
	// B takes the old content of blocks 0..back-1 (deduplicated against
	// the garbage chunks) and some new data; destage runs.
	fresh := make([]byte, 32*bs)
	fillRand(rng, fresh)
	wantB := append(append([]byte(nil), old[:back*bs]...), fresh...)
	busy := make(chan error, 1)
	go func() {
		if _, err := b.WriteAtStable(wantB, 0); err != nil {
			busy <- err
			return
		}
		busy <- s.Flush()
	}()
	select {
	case err := <-busy:
		if err != nil {
			close(resume)
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(resume)
		t.Fatal("writes and destage did not finish while GC marked")
	}
	close(resume)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.rep.ChunksFreed != gone-back {
		t.Fatalf("GC freed %d chunks, want %d (the garbage not referenced again)", r.rep.ChunksFreed, gone-back)
	}
	check := func(what string) {
		t.Helper()
		for _, c := range []struct {
			v    *Volume
			want []byte
		}{{a, want}, {b, wantB}} {
			got := make([]byte, len(c.want))
			if _, err := c.v.ReadAt(got, 0); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("%s: volume %d reads back wrong", what, c.v.ID())
			}
		}
	}
	check("after GC")
	aid, bid := a.ID(), b.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if a, err = s.OpenVolume(aid); err != nil {
		t.Fatal(err)
	}
	if b, err = s.OpenVolume(bid); err != nil {
		t.Fatal(err)
	}
	check("after reopen")
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) != 0 || rep.ChunksChecked != n+back+32 {
		t.Fatalf("scrub: %v, %d chunks checked (want %d), corrupt %+v", err, rep.ChunksChecked, n+back+32, rep.Corrupt)
	}
}

// TestGCSweepBesideWrites: GC's count of the chunk table holds no lock
// either. While it is paused between two steps, a write deduplicates onto
// a garbage chunk the count has already passed (the write path and destage
// go on: the old sweep held the GC lock and destage mutex through the
// count), and new chunks are destaged. The garbage chunk is kept, the rest
// freed, and every pack's live figures are exact.
func TestGCSweepBesideWrites(t *testing.T) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{PackSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(13, 14))
	a, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	const n, gone = 512, 200
	old := make([]byte, n*bs)
	fillRand(rng, old)
	if _, err := a.WriteAt(old, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), old...)
	fillRand(rng, want[:gone*bs])
	if _, err := a.WriteAt(want[:gone*bs], 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}

	defer func(step int) { gcMarkStep = step }(gcMarkStep)
	gcMarkStep = 256 // the first step: old chunks of blocks 0..199 (garbage) and 200..255
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gcSweepStepDone = func() { once.Do(func() { close(paused); <-resume }) }
	defer func() { gcSweepStepDone = nil }()
	type result struct {
		rep GCReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.GC(context.Background(), GCOptions{Threshold: 0.5})
		done <- result{rep, err}
	}()
	select {
	case <-paused:
	case r := <-done:
		t.Fatalf("GC ended before its count paused: %+v %v", r.rep, r.err)
	}
	// Block 1's old chunk (within the first step) is garbage
	// the count has passed; B takes it back, with new data.
	b, err := s.CreateVolume()
	if err != nil {
		close(resume)
		t.Fatal(err)
	}
	fresh := make([]byte, 32*bs)
	fillRand(rng, fresh)
	wantB := append(append([]byte(nil), old[bs:2*bs]...), fresh...)
	// A repair also rewrites block 220's chunk (live, counted in the first
	// step) into a pack of its own: the count is stale, and the GC must
	// count again, or the new pack looks dead and is deleted.
	moved := old[220*bs : 221*bs]
	busy := make(chan error, 1)
	go func() {
		if _, err := b.WriteAtStable(wantB, 0); err != nil {
			busy <- err
			return
		}
		if err := s.Flush(); err != nil {
			busy <- err
			return
		}
		busy <- rewriteOne(s, moved)
	}()
	select {
	case err := <-busy:
		if err != nil {
			close(resume)
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(resume)
		t.Fatal("writes, destage and a repair did not finish while GC counted chunks")
	}
	close(resume)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.rep.ChunksFreed != gone-1 || r.rep.ChunksMarked != n+1+32 {
		t.Fatalf("GC freed %d chunks and kept %d, want %d and %d", r.rep.ChunksFreed, r.rep.ChunksMarked, gone-1, n+1+32)
	}
	checkPackFigures(t, s)
	for _, c := range []struct {
		v    *Volume
		want []byte
	}{{a, want}, {b, wantB}} {
		got := make([]byte, len(c.want))
		if _, err := c.v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.want) {
			t.Fatalf("volume %d reads back wrong", c.v.ID())
		}
	}
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
