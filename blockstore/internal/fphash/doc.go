// Package fphash computes the block store's fingerprints, keyed
// BLAKE3-256, of many blocks of one size at once.
//
// A single 4 KiB block gives BLAKE3 only four chunks to work on in
// parallel, so one block at a time a core hashes about 1 GB/s. SumMany
// instead feeds the chunks of all the blocks of a write, sixteen at a
// time, to an AVX-512 kernel that runs sixteen compressions side by side
// (one per 32-bit lane), then combines the chaining values into each
// block's tree level by level, again sixteen parent nodes per call. The
// result is bit for bit BLAKE3's keyed hash (tested against
// zeebo/blake3); without AVX-512, or for a block of another size, it is
// zeebo/blake3 one block at a time.
//
// The kernel, hash_amd64.s, is written by gen.go (go generate) from the
// BLAKE3 specification: the G function, the message schedule and the
// chunk and parent flags.
package fphash
