package fphash

import (
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"

	"github.com/zeebo/blake3"
)

// BLAKE3's domain flags (the spec's section 2.1).
const (
	flagChunkStart = 1 << 0
	flagChunkEnd   = 1 << 1
	flagParent     = 1 << 2
	flagRoot       = 1 << 3
	flagKeyedHash  = 1 << 4

	chunkLen = 1024 // bytes per BLAKE3 chunk (16 blocks of 64)
	lanes    = 16   // compressions per kernel call
)

// Hasher computes keyed BLAKE3-256 hashes of blocks of one fixed size. It
// is safe for concurrent use.
type Hasher struct {
	key  [8]uint32 // the key as BLAKE3's key words
	size int
	// wide: SumMany hashes sixteen chunks at a time (AVX-512, and a
	// size of at least two chunks); otherwise each block goes through
	// zeebo/blake3 on its own.
	wide bool
	one  sync.Pool // *blake3.Hasher, keyed
	work sync.Pool // *[]uint32: the chaining values of one SumMany
}

// New returns a Hasher for blocks of size bytes under key.
func New(key *[32]byte, size int) (*Hasher, error) {
	base, err := blake3.NewKeyed(key[:])
	if err != nil {
		return nil, fmt.Errorf("fphash: %w", err)
	}
	h := &Hasher{size: size}
	for i := range h.key {
		h.key[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	h.wide = haveWide && size >= 2*chunkLen && size&(size-1) == 0
	h.one.New = func() any { return base.Clone() }
	h.work.New = func() any { return new([]uint32) }
	return h, nil
}

// Sum returns the keyed BLAKE3-256 of b (any length).
func (h *Hasher) Sum(b []byte) (sum [32]byte) {
	x := h.one.Get().(*blake3.Hasher)
	x.Reset()
	x.Write(b)
	x.Sum(sum[:0])
	h.one.Put(x)
	return sum
}

// SumMany sets out[i] to the keyed BLAKE3-256 of blocks[i], for every i,
// hashing the chunks of all the blocks side by side when the CPU can.
// Blocks of another length than the Hasher's size are hashed one by one
// (the result is the same, only slower).
func SumMany[T ~[32]byte](h *Hasher, blocks [][]byte, out []T) {
	if len(out) < len(blocks) {
		panic("fphash: SumMany: out is shorter than blocks")
	}
	// Fewer chunks than half the lanes: one by one is faster than a
	// kernel call with most lanes idle (a single 4 KiB write).
	if !h.wide || len(blocks)*(h.size/chunkLen) < lanes/2 {
		for i, b := range blocks {
			out[i] = T(h.Sum(b))
		}
		return
	}
	n := 0 // blocks of the right size, hashed side by side
	for i, b := range blocks {
		if len(b) != h.size {
			out[i] = T(h.Sum(b))
		} else {
			n++
		}
	}
	if n == 0 {
		return
	}
	chunks := h.size / chunkLen
	wp := h.work.Get().(*[]uint32)
	need := n*chunks*8 + n*(chunks/2)*8
	if cap(*wp) < need {
		*wp = make([]uint32, need)
	}
	work := (*wp)[:need]
	cur, next := work[:n*chunks*8], work[n*chunks*8:]

	var k kernel
	// Leaves: every chunk of every block, with its chunk index as counter.
	j := 0
	for _, b := range blocks {
		if len(b) != h.size {
			continue
		}
		for c := 0; c < chunks; c++ {
			k.add(unsafe.Pointer(unsafe.SliceData(b[c*chunkLen:])), uint32(c), cur[j*8:j*8+8])
			if k.n == lanes {
				k.run(&h.key, chunkLen/64, flagKeyedHash, flagChunkStart, flagChunkEnd)
			}
			j++
		}
	}
	k.run(&h.key, chunkLen/64, flagKeyedHash, flagChunkStart, flagChunkEnd)
	// Parents, level by level: each node's 64-byte message is its two
	// children's chaining values, which lie next to each other.
	for width := chunks; width > 1; width /= 2 {
		flags := uint32(flagKeyedHash | flagParent)
		if width == 2 {
			flags |= flagRoot
		}
		half := width / 2
		for i := 0; i < n*half; i++ {
			k.add(unsafe.Pointer(&cur[2*i*8]), 0, next[i*8:i*8+8])
			if k.n == lanes {
				k.run(&h.key, 1, flags, 0, 0)
			}
		}
		k.run(&h.key, 1, flags, 0, 0)
		cur, next = next[:n*half*8], cur
	}
	j = 0
	for i, b := range blocks {
		if len(b) != h.size {
			continue
		}
		var s [32]byte
		for w := 0; w < 8; w++ {
			binary.LittleEndian.PutUint32(s[4*w:], cur[j*8+w])
		}
		out[i] = T(s)
		j++
	}
	h.work.Put(wp)
}

// kernel gathers up to sixteen compressions for one call of compress16
// and scatters their chaining values.
type kernel struct {
	n   int
	in  [lanes]*byte
	ctr [lanes]uint32
	dst [lanes][]uint32
	out [8][lanes]uint32
}

func (k *kernel) add(p unsafe.Pointer, ctr uint32, dst []uint32) {
	k.in[k.n] = (*byte)(p)
	k.ctr[k.n] = ctr
	k.dst[k.n] = dst
	k.n++
}

// run compresses the gathered inputs (blocks of 64 bytes each) and writes
// each one's chaining value to its dst. Unused lanes repeat the first.
func (k *kernel) run(key *[8]uint32, blocks int, flags, start, end uint32) {
	if k.n == 0 {
		return
	}
	for l := k.n; l < lanes; l++ {
		k.in[l], k.ctr[l] = k.in[0], 0
	}
	compress16(&k.in, blocks, key, &k.ctr, flags, start, end, &k.out)
	for l := 0; l < k.n; l++ {
		d := k.dst[l]
		for w := 0; w < 8; w++ {
			d[w] = k.out[w][l]
		}
		k.dst[l] = nil
	}
	k.n = 0
}
