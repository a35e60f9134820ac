package fphash

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
)

func reference(t testing.TB, key *[32]byte, b []byte) [32]byte {
	h, err := blake3.NewKeyed(key[:])
	if err != nil {
		t.Fatal(err)
	}
	h.Write(b)
	var s [32]byte
	h.Sum(s[:0])
	return s
}

type fp [32]byte

// TestSumManyMatchesBLAKE3 compares every hash SumMany makes with
// zeebo/blake3's keyed hash: sizes from one chunk to a MiB, batches that
// fill the sixteen lanes exactly, partly and many times over, blocks of
// the wrong size mixed in, and, when the CPU has AVX-512, the wide path
// and the one-by-one path both.
func TestSumManyMatchesBLAKE3(t *testing.T) {
	if !haveWide {
		t.Logf("this CPU has no AVX-512: only the one-by-one path is tested")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 64 << 10, 1 << 20} {
		for _, count := range []int{1, 3, 4, 5, 16, 17, 33, 64} {
			if size*count > 16<<20 {
				continue
			}
			var key [32]byte
			for i := range key {
				key[i] = byte(rng.Uint32())
			}
			blocks := make([][]byte, count)
			for i := range blocks {
				blocks[i] = make([]byte, size)
				for j := range blocks[i] {
					blocks[i][j] = byte(rng.Uint32())
				}
			}
			if count > 4 {
				blocks[2] = blocks[2][:size/2] // another size
				blocks[3] = make([]byte, size) // zeros
			}
			for _, wide := range []bool{true, false} {
				h, err := New(&key, size)
				if err != nil {
					t.Fatal(err)
				}
				if !wide {
					h.wide = false
				} else if !h.wide {
					continue
				}
				out := make([]fp, count)
				SumMany(h, blocks, out)
				for i, b := range blocks {
					if want := reference(t, &key, b); out[i] != want {
						t.Fatalf("size %d, %d blocks, wide %v: block %d hashes to %x, want %x", size, count, wide, i, out[i][:8], want[:8])
					}
					if s := h.Sum(b); s != out[i] {
						t.Fatalf("Sum and SumMany differ for block %d", i)
					}
				}
			}
		}
	}
}

func BenchmarkSumMany(b *testing.B) {
	for _, size := range []int{4 << 10, 16 << 10, 64 << 10} {
		for _, wide := range []bool{true, false} {
			b.Run(fmt.Sprintf("%dKiB/wide=%v", size>>10, wide), func(b *testing.B) {
				var key [32]byte
				h, err := New(&key, size)
				if err != nil {
					b.Fatal(err)
				}
				if wide && !h.wide {
					b.Skip("no AVX-512")
				}
				h.wide = wide
				blocks := make([][]byte, (1<<20)/size)
				for i := range blocks {
					blocks[i] = make([]byte, size)
					for j := range blocks[i] {
						blocks[i][j] = byte(i*7 + j)
					}
				}
				out := make([]fp, len(blocks))
				b.SetBytes(1 << 20)
				b.ReportAllocs()
				for b.Loop() {
					SumMany(h, blocks, out)
				}
			})
		}
	}
}
