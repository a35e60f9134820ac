package blockstore

import (
	"math/rand/v2"
	"testing"
)

// TestFingerprint2 checks the two-block fingerprint against zeebo/blake3's
// keyed hash, block by block: fingerprints are on disk, so they must match
// bit for bit.
func TestFingerprint2(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bs := range []int{4 << 10, 8 << 10, 16 << 10} {
		var key [32]byte
		for i := range key {
			key[i] = byte(rng.Uint32())
		}
		s, err := newSealer(sealerConfig{FingerprintKey: key, BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 3*bs)
		for round := range 300 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			if round%7 == 0 {
				clear(buf[:bs/2]) // some structure, some zeros
			}
			// Adjacent blocks (no copy), then blocks apart (copied).
			for _, p := range [][2][]byte{{buf[:bs], buf[bs : 2*bs]}, {buf[2*bs:], buf[:bs]}} {
				fa, fb := s.fingerprint2(p[0], p[1])
				if want := s.fingerprint(p[0]); fa != want {
					t.Fatalf("block size %d round %d: first fingerprint %s, want %s", bs, round, fa, want)
				}
				if want := s.fingerprint(p[1]); fb != want {
					t.Fatalf("block size %d round %d: second fingerprint %s, want %s", bs, round, fb, want)
				}
			}
		}
	}
}

func BenchmarkFingerprint2(b *testing.B) {
	s, err := newSealer(sealerConfig{BlockSize: 4 << 10})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 8<<10)
	perfRandom(buf, 3)
	b.Run("one-by-one", func(b *testing.B) {
		b.SetBytes(8 << 10)
		for b.Loop() {
			s.fingerprint(buf[:4096])
			s.fingerprint(buf[4096:])
		}
	})
	b.Run("pair", func(b *testing.B) {
		b.SetBytes(8 << 10)
		for b.Loop() {
			s.fingerprint2(buf[:4096], buf[4096:])
		}
	})
}
