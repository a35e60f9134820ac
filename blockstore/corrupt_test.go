package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Damage on disk must surface as ErrCorrupt on exactly the blocks whose
// chunk is damaged (I5): never zeros, never wrong bytes, and never an error
// on a block whose own chunk is intact.

const (
	corruptBS     = 4 << 10
	corruptBlocks = 64
)

// corruptOptions keeps the log small: a default 64 MiB segment costs more
// to preallocate and scan on open than the whole test does otherwise.
func corruptOptions(packSize int64) Options {
	return Options{SegmentSize: 1 << 20, PackSize: packSize}
}

// corruptImage is the volume content: distinct random and text blocks, a
// hole, and two contents stored at four blocks each (one chunk each, by
// dedupe), one incompressible and one compressible.
func corruptImage() [][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	random := func() []byte {
		b := make([]byte, corruptBS)
		crashFill(rng, b)
		return b
	}
	text := func(i int) []byte {
		var b []byte
		for j := 0; len(b) < corruptBS; j++ {
			b = fmt.Appendf(b, "block %d, line %d: lorem ipsum dolor sit amet\n", i, j)
		}
		return b[:corruptBS]
	}
	dupRaw, dupText := random(), text(-1)
	img := make([][]byte, corruptBlocks)
	for i := range img {
		switch {
		case i == 20:
			img[i] = make([]byte, corruptBS) // a hole
		case i%16 == 5:
			img[i] = dupRaw // blocks 5, 21, 37, 53
		case i%16 == 9:
			img[i] = dupText // blocks 9, 25, 41, 57
		case i%4 == 2:
			img[i] = text(i)
		default:
			img[i] = random()
		}
	}
	return img
}

// newCorruptStore makes a store holding corruptImage in one volume, closed
// (so everything is destaged into packs). It returns the directory and the
// volume.
func newCorruptStore(t *testing.T, encrypt bool, opts Options) (string, VolumeID) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: corruptBS, Encrypt: encrypt}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	img := corruptImage()
	// Four writes of 16 blocks, so one log record holds several blocks and
	// dedupe hits both within a record and across records.
	for i := 0; i < corruptBlocks; i += 16 {
		if _, err := v.WriteAtStable(bytes.Join(img[i:i+16], nil), int64(i)*corruptBS); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, v.ID()
}

// corruptLayout is where the chunks of a closed store are, read from the
// metadata with bbolt directly.
type corruptLayout struct {
	chunkOf  map[uint64]uint64 // block -> chunk (absent: a hole)
	chunks   map[uint64]chunkRec
	openPack uint64
}

func readCorruptLayout(t *testing.T, dir string) corruptLayout {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := corruptLayout{chunkOf: map[uint64]uint64{}, chunks: map[uint64]chunkRec{}}
	err = db.View(func(tx *bolt.Tx) error {
		// One volume, one layer: every map entry is one of its blocks.
		err := tx.Bucket(bMap).ForEach(func(k, v []byte) error {
			if id := binary.LittleEndian.Uint64(v); id != 0 {
				l.chunkOf[binary.BigEndian.Uint64(k[8:])] = id
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bChunks).ForEach(func(k, v []byte) error {
			rec, err := decodeChunkRec(v)
			l.chunks[binary.BigEndian.Uint64(k)] = rec
			return err
		})
		l.openPack = getU64(tx.Bucket(bMeta), kOpenPack)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// blocksOf lists the blocks stored as chunk id.
func (l corruptLayout) blocksOf(id uint64) []uint64 {
	var out []uint64
	for b, c := range l.chunkOf {
		if c == id {
			out = append(out, b)
		}
	}
	slices.Sort(out)
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// checkCorruptReads reopens the store and reads every block on its own, in
// a shuffled order (no read-ahead): the blocks in bad must fail with
// ErrCorrupt, every other block must read back exactly. A read spanning
// the whole volume must fail too (or, with no bad blocks, read back
// exactly).
func checkCorruptReads(t *testing.T, s *Store, vol VolumeID, bad []uint64) {
	t.Helper()
	v, err := s.OpenVolume(vol)
	if err != nil {
		t.Fatal(err)
	}
	img := corruptImage()
	order := rand.New(rand.NewPCG(1, 1)).Perm(corruptBlocks)
	for _, i := range order {
		got := make([]byte, corruptBS)
		n, err := v.ReadAt(got, int64(i)*corruptBS)
		if slices.Contains(bad, uint64(i)) {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("block %d (damaged chunk): read %d bytes, err %v; want ErrCorrupt", i, n, err)
			}
			continue
		}
		if err != nil || n != corruptBS {
			t.Errorf("block %d: read %d bytes: %v", i, n, err)
			continue
		}
		if !bytes.Equal(got, img[i]) {
			t.Errorf("block %d: wrong content", i)
		}
	}
	all := make([]byte, corruptBlocks*corruptBS)
	_, err = v.ReadAt(all, 0)
	switch {
	case len(bad) > 0 && !errors.Is(err, ErrCorrupt):
		t.Errorf("read of the whole volume: %v; want ErrCorrupt", err)
	case len(bad) == 0 && err != nil:
		t.Errorf("read of the whole volume: %v", err)
	case len(bad) == 0 && !bytes.Equal(all, bytes.Join(img, nil)):
		t.Errorf("read of the whole volume: wrong content")
	}
}

// checkCorruptScrub wants scrub to report exactly chunk id, at its place.
func checkCorruptScrub(t *testing.T, s *Store, l corruptLayout, id uint64) {
	t.Helper()
	rep, err := s.Scrub(context.Background())
	if err != nil {
		t.Fatalf("scrub: %v", err)
	}
	rec := l.chunks[id]
	if len(rep.Corrupt) != 1 || rep.Corrupt[0].Chunk != id || rep.Corrupt[0].Pack != rec.pack || rep.Corrupt[0].Offset != rec.off {
		t.Errorf("scrub reported %+v; want only chunk %d (pack %d offset %d)", rep.Corrupt, id, rec.pack, rec.off)
	}
	if want := int64(len(l.chunks)); rep.ChunksChecked < want-1 || rep.ChunksChecked > want {
		t.Errorf("scrub checked %d chunks of %d", rep.ChunksChecked, want)
	}
}

func TestCorruptChunk(t *testing.T) {
	cases := []struct {
		name  string
		block uint64 // whose chunk is damaged
		// at is the offset to flip inside the chunk's record
		at func(rec chunkRec) int64
	}{
		{"data-raw", 5, func(rec chunkRec) int64 { return chunkHeaderSize + int64(rec.n)/2 }},
		{"data-compressed", 9, func(rec chunkRec) int64 { return chunkHeaderSize + int64(rec.n)/2 }},
		{"data-last-byte", 5, func(rec chunkRec) int64 { return chunkHeaderSize + int64(rec.n) - 1 }},
		{"header-fingerprint", 5, func(rec chunkRec) int64 { return 8 + 13 }},
		{"header-fingerprint-compressed", 9, func(rec chunkRec) int64 { return 8 }},
	}
	for _, encrypt := range []bool{false, true} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("encrypt=%v/%s", encrypt, c.name), func(t *testing.T) {
				dir, vol := newCorruptStore(t, encrypt, corruptOptions(0))
				l := readCorruptLayout(t, dir)
				id := l.chunkOf[c.block]
				bad := l.blocksOf(id)
				if id == 0 || len(bad) != 4 {
					t.Fatalf("block %d: chunk %d holds blocks %v; want four deduplicated blocks", c.block, id, bad)
				}
				rec := l.chunks[id]
				if compressed := rec.codec&^FlagEncrypted != CodecRaw; compressed != (c.block == 9) {
					t.Fatalf("block %d: codec %#x", c.block, rec.codec)
				}
				if encrypted := rec.codec&FlagEncrypted != 0; encrypted != encrypt {
					t.Fatalf("block %d: codec %#x", c.block, rec.codec)
				}
				flipByte(t, packPath(dir, rec.pack), rec.off+c.at(rec))

				s, err := Open(dir, corruptOptions(0))
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				checkCorruptReads(t, s, vol, bad)
				checkCorruptScrub(t, s, l, id)
				// Reads after scrub still fail: nothing turned the damage
				// into cached zeros.
				checkCorruptReads(t, s, vol, bad)
			})
		}
	}
}

// TestCorruptTruncatedPack cuts a pack in the middle of its last chunk,
// as a lost tail would. The reads of that chunk fail with ErrCorrupt (a
// short read is not zeros); everything else reads.
func TestCorruptTruncatedPack(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypt=%v", encrypt), func(t *testing.T) {
			// Small packs: several are closed by the time the store is.
			dir, vol := newCorruptStore(t, encrypt, corruptOptions(16<<10))
			l := readCorruptLayout(t, dir)
			var pack uint64
			for _, rec := range l.chunks {
				if rec.pack != l.openPack && (pack == 0 || rec.pack < pack) {
					pack = rec.pack
				}
			}
			if pack == 0 {
				t.Fatal("no closed pack")
			}
			id := corruptLastChunk(l, pack)
			rec := l.chunks[id]
			if err := os.Truncate(packPath(dir, pack), rec.off+chunkHeaderSize+int64(rec.n)/2); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, corruptOptions(16<<10))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			checkCorruptReads(t, s, vol, l.blocksOf(id))
			checkCorruptScrub(t, s, l, id)
		})
	}
}

// TestCorruptTruncatedOpenPack cuts the pack the store appends to. The
// store may refuse to open (it cannot append after a lost tail), but it
// must say ErrCorrupt, and if it opens, the chunk must not read as zeros.
func TestCorruptTruncatedOpenPack(t *testing.T) {
	dir, vol := newCorruptStore(t, false, corruptOptions(0))
	l := readCorruptLayout(t, dir)
	if l.openPack == 0 {
		t.Fatal("no open pack")
	}
	id := corruptLastChunk(l, l.openPack)
	rec := l.chunks[id]
	if err := os.Truncate(packPath(dir, l.openPack), rec.off+chunkHeaderSize+int64(rec.n)/2); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, corruptOptions(0))
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v; want ErrCorrupt", err)
		}
		t.Logf("open refuses: %v", err)
		return
	}
	defer s.Close()
	checkCorruptReads(t, s, vol, l.blocksOf(id))
}

func corruptLastChunk(l corruptLayout, pack uint64) uint64 {
	var last uint64
	for id, rec := range l.chunks {
		if rec.pack == pack && (last == 0 || rec.off > l.chunks[last].off) {
			last = id
		}
	}
	return last
}
