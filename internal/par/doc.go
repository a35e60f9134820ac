// Package par splits CPU-bound work over a range across the machine's
// CPUs: Do cuts the range into pieces that the caller and a small pool of
// long-lived helper goroutines take in turn. The block store fingerprints,
// looks up and seals the blocks of a large write with it, and objex hashes
// and compresses the blocks of an export.
//
// The helpers keep looking for work for a short while after each call
// before they park, because waking a parked thread can cost a large part
// of a call (hundreds of µs on a VM). Workers is how many goroutines such
// work should use: the CPUs, not the scheduler's processors.
package par
