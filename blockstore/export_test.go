package blockstore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestLayerBlocksAndReadExport: a frozen layer enumerates as holes and
// fingerprints (pending and destaged alike, through its chain), and
// ReadExport returns verified plaintext with the stored compressed form.
func TestLayerBlocksAndReadExport(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[enc], func(t *testing.T) {
			const bs = 4 << 10
			dir := t.TempDir()
			if err := Init(dir, InitOptions{BlockSize: bs, Encrypt: enc}); err != nil {
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
			rng := rand.New(rand.NewPCG(1, 2))
			want := make([]byte, 40*bs)
			fillRand(rng, want[:10*bs])                                   // incompressible
			copy(want[10*bs:20*bs], bytes.Repeat([]byte("abc"), 10*bs/3)) // compressible
			// 20..29 zeros, 30..39 random
			fillRand(rng, want[30*bs:])
			if _, err := v.WriteAt(want[:20*bs], 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			// Base layer destaged; then a snapshot of it with more writes
			// still pending.
			if _, err := v.WriteAt(want[30*bs:], 30*bs); err != nil {
				t.Fatal(err)
			}
			ls, err := s.Freeze(v.ID())
			if err != nil {
				t.Fatal(err)
			}
			// Writes after the freeze must not show.
			if _, err := v.WriteAt(bytes.Repeat([]byte{9}, 5*bs), 0); err != nil {
				t.Fatal(err)
			}
			blocks, err := s.LayerBlocks(ls[0], 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(blocks) != 40 {
				t.Fatalf("%d blocks, want 40", len(blocks))
			}
			var data []ExportBlock
			for i, b := range blocks {
				zero := isZero(want[i*bs : (i+1)*bs])
				if b.Block != uint64(i) || b.Hole != zero || b.Remote {
					t.Fatalf("block %d: %+v", i, b)
				}
				if !zero {
					if b.FP != s.seal.fingerprint(want[i*bs:(i+1)*bs]) {
						t.Fatalf("block %d: wrong fingerprint", i)
					}
					data = append(data, b)
				}
			}
			got, err := s.ReadExport(data)
			if err != nil {
				t.Fatal(err)
			}
			for j, b := range data {
				i := int(b.Block)
				if !bytes.Equal(got[j].Plain, want[i*bs:(i+1)*bs]) {
					t.Fatalf("block %d: wrong plaintext", i)
				}
				if i >= 10 && i < 20 {
					if got[j].Codec == CodecRaw || got[j].Packed == nil {
						t.Fatalf("block %d: compressible block without its compressed form", i)
					}
					plain, err := DecompressBlock(got[j].Codec, got[j].Packed, bs)
					if err != nil || !bytes.Equal(plain, got[j].Plain) {
						t.Fatalf("block %d: compressed form does not decode: %v", i, err)
					}
				}
			}
			if _, err := DecompressBlock(CodecS2, []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2}, bs); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("garbage s2: %v", err)
			}
			if _, err := DecompressBlock(CodecZstd, []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}, bs); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("garbage zstd: %v", err)
			}
			// A flipped byte in a pack: ReadExport fails, never returns
			// other bytes.
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
			if len(packs) == 0 {
				t.Fatal("no packs")
			}
			for _, p := range packs {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x10
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			again, err := s.LayerBlocks(ls[0], 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var data2 []ExportBlock
			for _, b := range again {
				if !b.Hole {
					data2 = append(data2, b)
				}
			}
			if _, err := s.ReadExport(data2); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadExport of a damaged pack: %v", err)
			}
			// Past the end: nothing.
			if b, err := s.LayerBlocks(ls[0], 40, 10); err != nil || len(b) != 0 {
				t.Fatalf("past the end: %v %v", b, err)
			}
			if _, err := s.LayerBlocks(LayerID(v.Top()), 0, 1); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a writable layer: %v", err)
			}
		})
	}
}

// indexBasis is a remote basis that knows fingerprints (RemoteIndex) and
// fetches in batches (RemoteBatch), counting what it fetches.
type indexBasis struct {
	memBasis
	fps     map[int64]Fingerprint
	learned map[int64]Fingerprint
	batches int
}

func (b *indexBasis) Locate(n int64) (bool, Fingerprint, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	off := n * int64(b.bs)
	if off >= int64(len(b.data)) || isZero(b.data[off:off+int64(b.bs)]) {
		return true, Fingerprint{}, true
	}
	fp, ok := b.fps[n]
	return false, fp, ok
}

func (b *indexBasis) Fetched(n int64, fp Fingerprint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.learned[n] = fp
}

func (b *indexBasis) ReadBlocks(ctx context.Context, ns []int64, p [][]byte) ([]bool, error) {
	b.mu.Lock()
	b.batches++
	b.mu.Unlock()
	holes := make([]bool, len(ns))
	for i, n := range ns {
		h, err := b.ReadBlock(ctx, n, p[i])
		if err != nil {
			return nil, err
		}
		holes[i] = h
	}
	return holes, nil
}

// TestRemoteIndexAndFill: blocks whose fingerprint the store already holds
// are never fetched; the rest are fetched in one batch per read and
// reported back; a thickener's FillRemote makes the remaining blocks local,
// and RemoteMissing tracks what is left.
func TestRemoteIndexAndFill(t *testing.T) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	basis := &indexBasis{memBasis: memBasis{bs: bs, data: make([]byte, 64*bs), hits: map[int64]int{}},
		fps: map[int64]Fingerprint{}, learned: map[int64]Fingerprint{}}
	fillRand(rand.New(rand.NewPCG(7, 8)), basis.data[:48*bs]) // 48..63 holes
	var once sync.Once
	var s *Store
	opts := Options{Remote: func(name string) (RemoteBasis, error) {
		if name != "ox:test" {
			return nil, errors.New("unknown basis")
		}
		return basis, nil
	}}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { once.Do(func() { s.Close() }) }()
	// The store already holds blocks 0..15 of the basis (an earlier
	// export's source, say), destaged, and 16..23 pending.
	local, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.WriteAt(basis.data[:16*bs], 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := local.WriteAt(basis.data[16*bs:24*bs], 16*bs); err != nil {
		t.Fatal(err)
	}
	for n := int64(0); n < 24; n++ {
		basis.fps[n] = s.seal.fingerprint(basis.data[n*bs : (n+1)*bs])
	}
	v, root, err := s.CreateRemoteVolume("ox:test", int64(len(basis.data)))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 32*bs)
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, basis.data[:32*bs]) {
		t.Fatalf("differs at %d", firstDiff(got, basis.data[:32*bs]))
	}
	if f := basis.fetches(); f != 8 {
		t.Fatalf("fetched %d blocks, want 8 (24..31; 0..23 are local)", f)
	}
	if basis.batches != 1 {
		t.Fatalf("%d batches for one read", basis.batches)
	}
	for n := int64(24); n < 32; n++ {
		if basis.learned[n] != s.seal.fingerprint(basis.data[n*bs:(n+1)*bs]) {
			t.Fatalf("block %d: fingerprint not reported back", n)
		}
	}
	all := make([]uint64, 64)
	for i := range all {
		all[i] = uint64(i)
	}
	miss, err := s.RemoteMissing(root, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(miss) != 32 || miss[0] != 32 {
		t.Fatalf("missing %v", miss)
	}
	// The thickener fills 32..63 (48.. are holes).
	data := make([][]byte, len(miss))
	for i, b := range miss {
		if b < 48 {
			data[i] = basis.data[b*bs : (b+1)*bs]
		}
	}
	fps, err := s.FillRemote(root, miss, data)
	if err != nil {
		t.Fatal(err)
	}
	if fps[0] != s.seal.fingerprint(data[0]) || fps[len(fps)-1] != (Fingerprint{}) {
		t.Fatal("FillRemote fingerprints")
	}
	if miss, err = s.RemoteMissing(root, all); err != nil || len(miss) != 0 {
		t.Fatalf("after fill: missing %v %v", miss, err)
	}
	if _, err := s.FillRemote(LayerID(v.Top()), []uint64{0}, [][]byte{nil}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fill of a non-remote layer: %v", err)
	}
	// Now the basis can go away: everything reads locally, also after a
	// destage and a reopen.
	before := basis.fetches()
	basis.mu.Lock()
	basis.fail = true
	basis.mu.Unlock()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	full := make([]byte, 64*bs)
	if _, err := v.ReadAt(full, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(full, basis.data) {
		t.Fatalf("thick volume differs at %d", firstDiff(full, basis.data))
	}
	once.Do(func() { s.Close() })
	s2, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	v2, err := s2.OpenVolume(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.ReadAt(full, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(full, basis.data) || basis.fetches() != before {
		t.Fatal("after reopen: wrong bytes or fetched again")
	}
	if rep, err := s2.Scrub(context.Background()); err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub: %v %+v", err, rep)
	}
}
