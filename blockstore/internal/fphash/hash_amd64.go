//go:build amd64 && !purego

package fphash

import "golang.org/x/sys/cpu"

//go:generate go run gen.go -out hash_amd64.s

// haveWide: the CPU and the OS support AVX-512 (F is all the kernel uses).
var haveWide = cpu.X86.HasAVX512F

// compress16 runs sixteen BLAKE3 compressions side by side. Input l is
// blocks consecutive 64-byte blocks at in[l], compressed in a chain that
// starts from the key, with counter ctr[l] (high word zero) and the block
// length 64; each block's flags are flags, with flagsStart added for the
// first and flagsEnd for the last. out[w][l] is word w of input l's final
// chaining value.
//
//go:noescape
func compress16(in *[16]*byte, blocks int, key *[8]uint32, ctr *[16]uint32, flags, flagsStart, flagsEnd uint32, out *[8][16]uint32)
