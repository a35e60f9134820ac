package blockstore

import (
	"encoding/binary"
	"unsafe"
)

// BLAKE3 flags (the BLAKE3 specification, section 2.1).
const (
	b3ChunkLen   = 1024
	b3FlagParent = 1 << 2
	b3FlagRoot   = 1 << 3
	b3FlagKeyed  = 1 << 4
)

// fingerprint2 returns the fingerprints of two blocks, the same as two
// calls of fingerprint. With 4 KiB blocks and AVX2 it hashes both in one
// 8-lane pass: BLAKE3 hashes a 4 KiB block as four 1 KiB chunks, so one
// block alone leaves half of the AVX2 lanes idle, and fingerprints are most
// of the cost of ingesting duplicate data. The two blocks' trees (four
// chunks, two parents, a root each) are then finished two and four lanes at
// a time.
func (s *sealer) fingerprint2(a, b []byte) (Fingerprint, Fingerprint) {
	if !fp2Fast || s.blockSize != 4*b3ChunkLen || len(a) != s.blockSize || len(b) != s.blockSize {
		return s.fingerprint(a), s.fingerprint(b)
	}
	var buf [8192]byte
	var in *[8192]byte
	if cap(a) >= 8192 && unsafe.Pointer(unsafe.SliceData(a[4096:4096])) == unsafe.Pointer(unsafe.SliceData(b)) {
		in = (*[8192]byte)(a[:8192]) // adjacent in the caller's buffer
	} else {
		copy(buf[:4096], a)
		copy(buf[4096:], b)
		in = &buf
	}
	var cv, left, right, par [64]uint32
	var chain [8]uint32
	fpHashF(in, 8192, 0, b3FlagKeyed, &s.fpKey, &cv, &chain)
	// Parents of chunks (0,1), (2,3) of a and (4,5), (6,7) of b, in lanes 0..3.
	for w := 0; w < 8; w++ {
		for j := 0; j < 4; j++ {
			left[w*8+j] = cv[w*8+2*j]
			right[w*8+j] = cv[w*8+2*j+1]
		}
	}
	fpHashP(&left, &right, b3FlagKeyed|b3FlagParent, &s.fpKey, &par, 4)
	// The roots of a and b, in lanes 0 and 1.
	for w := 0; w < 8; w++ {
		left[w*8], right[w*8] = par[w*8], par[w*8+1]
		left[w*8+1], right[w*8+1] = par[w*8+2], par[w*8+3]
	}
	fpHashP(&left, &right, b3FlagKeyed|b3FlagParent|b3FlagRoot, &s.fpKey, &cv, 2)
	var fa, fb Fingerprint
	for w := 0; w < 8; w++ {
		binary.LittleEndian.PutUint32(fa[4*w:], cv[w*8])
		binary.LittleEndian.PutUint32(fb[4*w:], cv[w*8+1])
	}
	return fa, fb
}
