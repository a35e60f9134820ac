package blockstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// copyTree copies dir to dst file by file: taken while the store is idle
// (every commit and log write done), it is what a crash at that moment
// leaves on disk.
func copyTree(t *testing.T, dir, dst string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// bucketLen counts the keys of a bucket of the store's bbolt file.
func bucketLen(t *testing.T, s *Store, name []byte) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(name).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFrontDefersMergesAndSurvivesCrash: a destage of plain writes leaves
// the map and the index alone and journals their entries; reads, dedupe
// and a crash image all see them; Flush merges them.
// frontVolume makes a datastore of 4 KiB blocks in a new directory, opens
// it with opts and creates a volume. Destage runs only when the test calls
// it (DestageDelay is an hour), and the volume's record, metadata that a
// batch writes directly, is destaged already, so that the next batch holds
// block writes only. The store is closed at the end of the test.
func frontVolume(t *testing.T, opts Options) (string, *Store, *Volume) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	opts.DestageDelay = time.Hour
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	return dir, s, v
}

// frontReadsBack checks that volume id of s reads want from offset 0.
func frontReadsBack(t *testing.T, s *Store, id VolumeID, want []byte, what string) {
	t.Helper()
	v, err := s.OpenVolume(id)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	bs := s.BlockSize()
	for b := 0; b*bs < len(want); b++ {
		if !bytes.Equal(got[b*bs:min((b+1)*bs, len(want))], want[b*bs:min((b+1)*bs, len(want))]) {
			t.Fatalf("%s: block %d differs (zeros=%v)", what, b, isZero(got[b*bs:min((b+1)*bs, len(want))]))
		}
	}
}

func TestFrontDefersMergesAndSurvivesCrash(t *testing.T) {
	const bs = 4 << 10
	dir, s, v := frontVolume(t, Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	want := make([]byte, 80*bs)
	for b := 0; b < 64; b++ {
		fillRand(rng, want[b*bs:(b+1)*bs])
	}
	copy(want[64*bs:], want[:16*bs]) // 16 twins of the first 16 blocks
	// One block per write, in no order: a sequential batch would put its
	// map entries into the map at once (TestFrontSequentialMap).
	for _, b := range rng.Perm(80) {
		if _, err := v.WriteAtStable(want[b*bs:(b+1)*bs], int64(b)*bs); err != nil {
			t.Fatal(err)
		}
	}
	// Zeros over blocks 20..23 of the bottom layer: deletions in the front.
	if _, err := v.WriteAtStable(make([]byte, 4*bs), 20*bs); err != nil {
		t.Fatal(err)
	}
	clear(want[20*bs : 24*bs])
	if err := s.destage(); err != nil {
		t.Fatal(err)
	}
	if n := bucketLen(t, s, bFront); n == 0 || s.deferred == 0 {
		t.Fatalf("after a destage of plain writes: front values %d, deferred entries %d; want both > 0", n, s.deferred)
	}
	if n := bucketLen(t, s, bMap); n != 0 {
		t.Fatalf("map holds %d entries before the merge, want 0", n)
	}
	if n := bucketLen(t, s, bIndex); n != 0 {
		t.Fatalf("index holds %d entries before the merge, want 0", n)
	}
	check := func(s *Store, id VolumeID, what string) {
		t.Helper()
		frontReadsBack(t, s, id, want, what)
	}
	// Deferred blocks read from their chunks: the sealed bytes are gone.
	s.cache = newChunkCache(1 << 20)
	check(s, v.ID(), "deferred")
	// A new copy of block 10 deduplicates against its deferred chunk.
	if _, err := v.WriteAtStable(want[10*bs:11*bs], 80*bs); err != nil {
		t.Fatal(err)
	}
	want = append(want, want[10*bs:11*bs]...)
	top := uint64(v.Top())
	s.mu.Lock()
	pb := s.layers[top].pending[80]
	s.mu.Unlock()
	if pb == nil || pb.kind != kindRef || pb.chunk == 0 {
		t.Fatalf("a copy of a deferred block was logged as %+v, want a reference to its chunk", pb)
	}

	// A crash now: the copy opens with the journal merged.
	crash := t.TempDir()
	copyTree(t, dir, crash)
	c, err := Open(crash, Options{DestageDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if n := bucketLen(t, c, bFront); n != 0 {
		t.Errorf("front journal holds %d values after open, want 0", n)
	}
	if n := bucketLen(t, c, bMap); n != 76 {
		t.Errorf("map holds %d entries after the journal merge, want 76 (80 blocks, 4 holes)", n)
	}
	// Blocks 20..23 were destaged in the batch that overwrote them: their
	// chunks exist until a GC.
	if n := bucketLen(t, c, bIndex); n != 64 {
		t.Errorf("index holds %d entries after the journal merge, want 64", n)
	}
	check(c, v.ID(), "crash image")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Flush merges: the map and the index hold everything, the journal
	// and the deferred pblocks are gone, and the data still reads back.
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.deferred != 0 {
		t.Errorf("after Flush: deferred %d; want 0", s.deferred)
	}
	if n := bucketLen(t, s, bFront); n != 0 {
		t.Errorf("front journal holds %d values after Flush, want 0", n)
	}
	if n := bucketLen(t, s, bMap); n != 77 {
		t.Errorf("map holds %d entries after Flush, want 77", n)
	}
	s.mu.Lock()
	for _, l := range s.layers {
		for b, pb := range l.pending {
			if pb.deferred {
				t.Errorf("block %d still deferred after Flush", b)
			}
		}
	}
	s.mu.Unlock()
	check(s, v.ID(), "merged")
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksFreed != 4 || st.Chunks != 60 {
		t.Errorf("GC freed %d chunks, %d stored; want 4 and 60 (64 unique blocks, 4 overwritten with zeros)", rep.ChunksFreed, st.Chunks)
	}
	check(s, v.ID(), "after GC")
}

// TestFrontUpgradesVersion1: a version 1 datastore (no front bucket) opens,
// gains the bucket and records version 2.
func TestFrontUpgradesVersion1(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bFront); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(kFormat, u64b(1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
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
	data := bytes.Repeat([]byte("front"), 2000)
	if _, err := v.WriteAtStable(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := getU64(tx.Bucket(bMeta), kFormat); v != FormatVersion {
			t.Errorf("format %d after opening a version 1 datastore, want %d", v, FormatVersion)
		}
		if tx.Bucket(bFront) == nil {
			t.Error("no front bucket after the upgrade")
		}
		return nil
	})
}

// FuzzDecodeFront: a damaged journal value is an error, never a panic.
func FuzzDecodeFront(f *testing.F) {
	var r frontRec
	key := make([]byte, 24)
	r.putMap(key, 7)
	r.delMap(key)
	r.putIndex(Fingerprint{1}, 9)
	f.Add(r.encode())
	f.Add([]byte{frontVersion, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		n := 0
		err := decodeFront(v, func(key []byte, del bool, id uint64) {
			if len(key) != 24 {
				t.Fatalf("key of %d bytes", len(key))
			}
			n++
		}, func(fp []byte, id uint64) {
			if len(fp) != 32 {
				t.Fatalf("fingerprint of %d bytes", len(fp))
			}
		})
		if err == nil && n > len(v)/25 {
			t.Fatalf("%d map entries from %d bytes", n, len(v))
		}
	})
}

const frontCrashEnv = "DSTORE_FRONT_CRASH_CHILD" // "<data dir>|<first block>" in the child

// frontCrashBlock is the content of block i of TestCrashFront: every
// fourth block repeats an earlier one, so references to deferred chunks
// are in the journal too.
func frontCrashBlock(i int) []byte {
	if i%4 == 3 {
		i /= 2
	}
	b := make([]byte, crashBS)
	fillRand(rand.New(rand.NewPCG(uint64(i), 77)), b)
	return b
}

// frontCrashOff scatters the blocks of TestCrashFront over a 4 GiB volume,
// so that the map entries go to the front too (i -> block is a bijection
// on [0, 2^20): odd multiplier, power-of-two modulus).
func frontCrashOff(i int) int64 {
	return int64(uint64(i)*2654435761%(1<<20)) * crashBS
}

// TestFrontCrashChild is the child half of TestCrashFront: it writes block
// after block with stable writes, destages every 16 of them (into the
// front: nothing merges it), and runs until killed.
func TestFrontCrashChild(t *testing.T) {
	env := os.Getenv(frontCrashEnv)
	if env == "" {
		return
	}
	dir, firstText, _ := strings.Cut(env, "|")
	first, err := strconv.Atoi(firstText)
	if err != nil {
		crashFail("bad %s=%q", frontCrashEnv, env)
	}
	time.AfterFunc(2*time.Minute, func() { crashFail("not killed") })
	s, err := Open(dir, Options{DestageDelay: time.Hour, FrontBlocks: 1 << 20})
	if err != nil {
		crashFail("open: %v", err)
	}
	ids := s.Volumes()
	if len(ids) == 0 {
		v, err := s.CreateVolume()
		if err != nil {
			crashFail("create: %v", err)
		}
		ids = append(ids, v.ID())
	}
	v, err := s.OpenVolume(ids[0])
	if err != nil {
		crashFail("open volume: %v", err)
	}
	for i := first; ; i++ {
		if _, err := v.WriteAtStable(frontCrashBlock(i), frontCrashOff(i)); err != nil {
			crashFail("write %d: %v", i, err)
		}
		crashOut("ack %d", i)
		if i%16 == 15 {
			if err := s.destage(); err != nil {
				crashFail("destage: %v", err)
			}
			if s.deferred > 0 {
				crashOut("front")
			}
		}
	}
}

// TestCrashFront SIGKILLs a child while destaged entries wait in the front
// journal, and checks that the journal is there, that Open merges it, and
// that every acknowledged block reads back exactly.
func TestCrashFront(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: crashBS}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(*crashSeed, 3))
	acked := 1 // blocks [1, acked) are acknowledged; block 0 stays a hole
	for round := range 5 {
		p := startCrashChild(t, "TestFrontCrashChild", fmt.Sprintf("%s=%s|%d", frontCrashEnv, dir, acked), "front")
		if !p.wait(60 * time.Second) {
			if p.exited {
				t.Fatalf("round %d: child ended before destaging into the front:\n%s\n%s", round, strings.Join(p.got, "\n"), p.stderr.String())
			}
			t.Fatalf("round %d: no destage into the front within a minute", round)
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		got := p.kill()
		for _, l := range got {
			if n, ok := strings.CutPrefix(l, crashLinePrefix+"ack "); ok {
				i, _ := strconv.Atoi(n)
				acked = max(acked, i+1)
			} else if strings.HasPrefix(l, crashLinePrefix+"error") {
				t.Fatalf("round %d: child: %s", round, l)
			}
		}
		if n, err := crashFrontValues(dir); err != nil || n == 0 {
			t.Fatalf("round %d: front journal holds %d values after the kill (%v); want some", round, n, err)
		}
		s, err := Open(dir, Options{DestageDelay: time.Hour})
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		if n := bucketLen(t, s, bFront); n != 0 {
			t.Fatalf("round %d: front journal holds %d values after Open", round, n)
		}
		v, err := s.OpenVolume(s.Volumes()[0])
		if err != nil {
			t.Fatal(err)
		}
		got0 := make([]byte, crashBS)
		for i := 1; i < acked; i++ {
			if _, err := v.ReadAt(got0, frontCrashOff(i)); err != nil {
				t.Fatalf("round %d: block %d: %v", round, i, err)
			}
			if !bytes.Equal(got0, frontCrashBlock(i)) {
				t.Fatalf("round %d: acknowledged block %d reads back wrong (zeros=%v)", round, i, isZero(got0))
			}
		}
		if round == 4 {
			if _, err := s.GC(context.Background(), GCOptions{}); err != nil {
				t.Fatal(err)
			}
			rep, err := s.Scrub(context.Background())
			if err != nil || len(rep.Corrupt) > 0 {
				t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d blocks acknowledged so far", round, acked-1)
	}
}

// TestFrontMergeInPieces: a front larger than one merge transaction merges
// in several, and a crash between them leaves a journal whose merge at
// Open (applying the first piece again) gives the same map.
func TestFrontMergeInPieces(t *testing.T) {
	const bs = 4 << 10
	const n = 3*frontMergeStep/2 + 100 // map entries plus index entries: 4 pieces
	dir, s, v := frontVolume(t, Options{FrontBlocks: 1 << 20})
	want := make([]byte, n*bs)
	rng := rand.New(rand.NewPCG(8, 9))
	fillRand(rng, want)
	for _, b := range rng.Perm(n) { // in no order: the map entries go to the front
		if _, err := v.WriteAt(want[b*bs:(b+1)*bs], int64(b)*bs); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	for {
		s.mu.Lock()
		queued := len(s.queue)
		s.mu.Unlock()
		if queued == 0 {
			break
		}
		if err := s.destage(); err != nil {
			t.Fatal(err)
		}
	}
	if s.deferred != 2*n || s.deferredMap != n {
		t.Fatalf("%d entries deferred, %d for the map; want %d and %d", s.deferred, s.deferredMap, 2*n, n)
	}
	check := func(s *Store, what string) {
		t.Helper()
		frontReadsBack(t, s, v.ID(), want, what)
		if m, f := bucketLen(t, s, bMap), bucketLen(t, s, bFront); m != n || f != 0 {
			t.Fatalf("%s: map %d entries, journal %d values; want %d and 0", what, m, f, n)
		}
	}
	// The first merge transaction, then a crash.
	var f *frontEnts
	if err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		f, err = readFront(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if f.len() != 2*n {
		t.Fatalf("journal holds %d entries, want %d", f.len(), 2*n)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return f.apply(tx, 0, frontMergeStep) }); err != nil {
		t.Fatal(err)
	}
	crash := t.TempDir()
	copyTree(t, dir, crash)
	c, err := Open(crash, Options{DestageDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	check(c, "crash image")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	check(s, "merged")
}

// TestFrontSequentialMap: a sequential batch puts its map entries into the
// map at once and defers only its index entries; once map entries wait in
// the front, a sequential batch defers its own too (the map must get them
// in log order).
func TestFrontSequentialMap(t *testing.T) {
	const bs = 4 << 10
	_, s, v := frontVolume(t, Options{})
	rng := rand.New(rand.NewPCG(10, 11))
	want := make([]byte, 256*bs)
	fillRand(rng, want)
	write := func(blocks []int) {
		t.Helper()
		for _, b := range blocks {
			if _, err := v.WriteAt(want[b*bs:(b+1)*bs], int64(b)*bs); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.destage(); err != nil {
			t.Fatal(err)
		}
	}
	seq := func(from, to int) []int {
		var bs []int
		for b := from; b < to; b++ {
			bs = append(bs, b)
		}
		return bs
	}
	write(seq(0, 64))
	if m, d, dm := bucketLen(t, s, bMap), s.deferred, s.deferredMap; m != 64 || d != 64 || dm != 0 {
		t.Fatalf("sequential batch: map %d entries, front %d entries (%d for the map); want 64, 64, 0", m, d, dm)
	}
	perm := rng.Perm(64)
	for i := range perm {
		perm[i] += 64
	}
	write(perm)
	if m, dm := bucketLen(t, s, bMap), s.deferredMap; m != 64 || dm != 64 {
		t.Fatalf("batch in no order: map %d entries, %d map entries in the front; want 64 and 64", m, dm)
	}
	write(seq(128, 256))
	if m, dm := bucketLen(t, s, bMap), s.deferredMap; m != 64 || dm != 192 {
		t.Fatalf("sequential batch after one in no order: map %d entries, %d map entries in the front; want 64 and 192", m, dm)
	}
	frontReadsBack(t, s, v.ID(), want, "before the merge")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, i := bucketLen(t, s, bMap), bucketLen(t, s, bIndex); m != 256 || i != 256 {
		t.Fatalf("after Flush: map %d, index %d entries; want 256 and 256", m, i)
	}
	frontReadsBack(t, s, v.ID(), want, "after the merge")
}

// TestFrontBoundCountsBlocks: FrontBlocks bounds deferred blocks (the
// pblocks the front keeps in memory), not entries: random writes of new
// data defer two entries per block, and 90 such blocks stay within a
// bound of 100; the batch that would take the front past it merges first.
func TestFrontBoundCountsBlocks(t *testing.T) {
	const bs = 4 << 10
	_, s, v := frontVolume(t, Options{FrontBlocks: 100})
	rng := rand.New(rand.NewPCG(14, 15))
	want := make([]byte, 110*bs)
	fillRand(rng, want)
	write := func(from, to int) {
		t.Helper()
		for _, b := range rng.Perm(to - from) {
			b += from
			if _, err := v.WriteAt(want[b*bs:(b+1)*bs], int64(b)*bs); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.destage(); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 60)
	write(60, 90)
	if m, d, b := bucketLen(t, s, bMap), s.deferred, s.deferredBlocks; m != 0 || d != 180 || b != 90 {
		t.Fatalf("90 random blocks under a bound of 100: map %d entries, front %d entries of %d blocks; want 0, 180, 90", m, d, b)
	}
	write(90, 110)
	if m, d, b := bucketLen(t, s, bMap), s.deferred, s.deferredBlocks; m != 110 || d != 0 || b != 0 {
		t.Fatalf("past the bound: map %d entries, front %d entries of %d blocks; want 110, 0, 0", m, d, b)
	}
	frontReadsBack(t, s, v.ID(), want, "after the merge")
}
