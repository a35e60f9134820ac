//go:build !amd64

package blockstore

const fp2Fast = false

func fpHashF(input *[8192]byte, length, counter uint64, flags uint32, key *[8]uint32, out *[64]uint32, chain *[8]uint32) {
	panic("blockstore: fpHashF without AVX2")
}

func fpHashP(left, right *[64]uint32, flags uint32, key *[8]uint32, out *[64]uint32, n int) {
	panic("blockstore: fpHashP without AVX2")
}
