//go:build amd64

package blockstore

import "golang.org/x/sys/cpu"

// fp2Fast reports whether fingerprint2 hashes two 4 KiB blocks in one AVX2
// pass (fp2_amd64.s) instead of one pass each.
var fp2Fast = cpu.X86.HasAVX2

// fpHashF is zeebo/blake3's 8-lane chunk hasher with per-lane chunk
// counters 0,1,2,3,0,1,2,3: out holds the chaining values of the four
// chunks of each of the two 4 KiB halves of input (word w of lane i at
// out[w*8+i]).
//
//go:noescape
func fpHashF(input *[8192]byte, length, counter uint64, flags uint32, key *[8]uint32, out *[64]uint32, chain *[8]uint32)

// fpHashP is zeebo/blake3's 8-lane parent hasher: lane i of out is the
// parent of lane i of left and right.
//
//go:noescape
func fpHashP(left, right *[64]uint32, flags uint32, key *[8]uint32, out *[64]uint32, n int)
