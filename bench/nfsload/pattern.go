package nfsload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
)

// Unit is the granularity of the data pattern: every 4 KiB of a file the
// load generator writes is one unit with its own header, so a block read
// back can be checked on its own, whatever the I/O size.
const Unit = 4096

const (
	poolSize = 1 << 20
	// The pool windows start on 16-byte steps: 65,536 different windows,
	// and the header makes every written unit different anyway.
	windowStep = 16
	headerLen  = 24
	magic      = 0x6473746f72656221 // "dstoreb!"
)

// Pattern makes and checks the data the load generator writes. A unit at
// file offset off written in generation gen is a 4 KiB window of a
// pseudo-random pool (so it neither compresses nor dedupes against other
// units) chosen by (off, gen), starting with a header that holds magic,
// off and gen. A unit read back is right when its header names the offset
// it was read from and the rest matches the window the header selects.
type Pattern struct {
	seed uint64
	pool []byte
}

// NewPattern returns the pattern of seed; the same seed gives the same data
// in any process.
func NewPattern(seed uint64) *Pattern {
	rng := mrand.NewChaCha8([32]byte{0: byte(seed), 1: byte(seed >> 8), 2: byte(seed >> 16), 3: byte(seed >> 24),
		4: byte(seed >> 32), 5: byte(seed >> 40), 6: byte(seed >> 48), 7: byte(seed >> 56)})
	pool := make([]byte, poolSize+Unit)
	rng.Read(pool)
	return &Pattern{seed: seed, pool: pool}
}

// mix is a 64-bit finalizer (splitmix64) over the offset, generation and
// seed.
func mix(a, b, c uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 ^ b*0xbf58476d1ce4e5b9 ^ c
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (p *Pattern) window(off, gen uint64) []byte {
	start := mix(off, gen, p.seed) % (poolSize / windowStep) * windowStep
	return p.pool[start : start+Unit]
}

// Fill fills b, which starts at file offset off, with the units of
// generation gen. off and len(b) must be multiples of Unit.
func (p *Pattern) Fill(b []byte, off, gen uint64) {
	for i := 0; i+Unit <= len(b); i += Unit {
		u := b[i : i+Unit]
		o := off + uint64(i)
		copy(u, p.window(o, gen))
		binary.LittleEndian.PutUint64(u[0:], magic)
		binary.LittleEndian.PutUint64(u[8:], o)
		binary.LittleEndian.PutUint64(u[16:], gen)
	}
}

// Check verifies that b, read from file offset off, holds whole units of
// this pattern, each at its own offset. The error names the first unit that
// is wrong.
func (p *Pattern) Check(b []byte, off uint64) error {
	if len(b)%Unit != 0 {
		return fmt.Errorf("verify: %d bytes at offset %d are not whole %d-byte units", len(b), off, Unit)
	}
	for i := 0; i < len(b); i += Unit {
		u := b[i : i+Unit]
		o := off + uint64(i)
		if binary.LittleEndian.Uint64(u[0:]) != magic {
			return fmt.Errorf("verify: the unit at offset %d was not written by this load generator (or with another seed)", o)
		}
		if got := binary.LittleEndian.Uint64(u[8:]); got != o {
			return fmt.Errorf("verify: the unit at offset %d holds the data written at offset %d", o, got)
		}
		gen := binary.LittleEndian.Uint64(u[16:])
		if !bytes.Equal(u[headerLen:], p.window(o, gen)[headerLen:]) {
			return fmt.Errorf("verify: the unit at offset %d (generation %d) is corrupt", o, gen)
		}
	}
	return nil
}
