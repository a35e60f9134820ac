//go:build !amd64 || purego

package fphash

const haveWide = false

func compress16(in *[16]*byte, blocks int, key *[8]uint32, ctr *[16]uint32, flags, flagsStart, flagsEnd uint32, out *[8][16]uint32) {
	panic("fphash: compress16 without AVX-512")
}
