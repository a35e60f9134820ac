package blockstore

import (
	"encoding/binary"
	"fmt"
)

// Log payloads. Every NVLOG record's payload starts with a type byte; the
// layouts below are part of the wire format (docs/DESIGN.md, "NVLOG
// payloads"). All integers are little-endian.
const (
	recBlocks uint8 = 1 // u64 layer | u8 size mode | u64 size | u32 n | n x block entry
	recMeta   uint8 = 3 // u32 n | n x effect

	// size modes of a recBlocks record; the size change applies before the
	// block entries, so a truncate and the zeroing of its last partial block
	// are one atomic record.
	sizeKeep uint8 = 0
	sizeGrow uint8 = 1 // size = max(size, value): a write past the end
	sizeSet  uint8 = 2 // size = value: truncate (shrinking drops blocks)

	// block entry: u64 block | u8 kind | kind-specific
	kindData uint8 = 1 // [32]fp | u8 codec | u32 len | sealed
	kindRef  uint8 = 2 // [32]fp | u64 chunk hint (0 = unknown, resolved by fingerprint)
	kindHole uint8 = 3 // nothing

	// effects of a metadata record, applied in order
	effPutLayer  uint8 = 1 // u64 id | layerRec
	effDelLayer  uint8 = 2 // u64 id | u64 lineage
	effPutVolume uint8 = 3 // u64 volume | u64 top layer
	effDelVolume uint8 = 4 // u64 volume
	effMerge     uint8 = 5 // u64 from | u64 into | u64 lineage | u64 visible limit
	effExt       uint8 = 6 // u64 zero | u32 n | n bytes for the Extension
)

const noLimit = ^uint64(0)

// Layer flags (wire format, part of layerRec).
const (
	layerFrozen uint8 = 1
	layerRemote uint8 = 2
)

// layerRec is a layer's persistent record: the value in bucket "layers" and
// the body of effPutLayer. Fixed part 48 bytes:
//
//	u64 parent | u64 lineage | u64 size | u64 limit | u32 holds | u32 children |
//	u8 flags | u8 pad | u16 remote name length | u32 pad | name bytes
type layerRec struct {
	parent   uint64
	lineage  uint64
	size     int64
	limit    uint64 // blocks at or above limit are not visible from below
	holds    uint32 // external holds (snapshots, clones-to-be, callers of Freeze)
	children uint32 // layers whose parent this is
	flags    uint8
	remote   string // name of the remote basis (layerRemote)
}

const layerRecFixed = 48

func (r *layerRec) frozen() bool { return r.flags&layerFrozen != 0 }

func (r *layerRec) appendTo(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.parent)
	b = binary.LittleEndian.AppendUint64(b, r.lineage)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.size))
	b = binary.LittleEndian.AppendUint64(b, r.limit)
	b = binary.LittleEndian.AppendUint32(b, r.holds)
	b = binary.LittleEndian.AppendUint32(b, r.children)
	b = append(b, r.flags, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.remote)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, r.remote...)
}

func decodeLayerRec(b []byte) (layerRec, int, error) {
	if len(b) < layerRecFixed {
		return layerRec{}, 0, fmt.Errorf("layer record: short (%d bytes): %w", len(b), ErrCorrupt)
	}
	r := layerRec{
		parent:   binary.LittleEndian.Uint64(b[0:]),
		lineage:  binary.LittleEndian.Uint64(b[8:]),
		size:     int64(binary.LittleEndian.Uint64(b[16:])),
		limit:    binary.LittleEndian.Uint64(b[24:]),
		holds:    binary.LittleEndian.Uint32(b[32:]),
		children: binary.LittleEndian.Uint32(b[36:]),
		flags:    b[40],
	}
	if r.flags&^(layerFrozen|layerRemote) != 0 {
		return layerRec{}, 0, fmt.Errorf("layer record: unknown flags %#x: %w", r.flags, ErrCorrupt)
	}
	if b[41] != 0 || binary.LittleEndian.Uint32(b[44:]) != 0 {
		return layerRec{}, 0, fmt.Errorf("layer record: non-zero padding: %w", ErrCorrupt)
	}
	n := int(binary.LittleEndian.Uint16(b[42:]))
	if len(b) < layerRecFixed+n {
		return layerRec{}, 0, fmt.Errorf("layer record: name past end: %w", ErrCorrupt)
	}
	r.remote = string(b[layerRecFixed : layerRecFixed+n])
	if r.size < 0 || r.size > MaxVolumeSize {
		return layerRec{}, 0, fmt.Errorf("layer record: size %d: %w", r.size, ErrCorrupt)
	}
	return r, layerRecFixed + n, nil
}

// blockOp is one decoded block entry of a recBlocks record.
type blockOp struct {
	blk    uint64
	kind   uint8
	fp     Fingerprint
	codec  uint8
	sealed []byte // kindData: aliases the payload buffer
	chunk  uint64 // kindRef: hint
	// absent (kindData, in memory only): the write path found the
	// fingerprint neither pending nor in the index, and nothing was
	// destaged between that lookup and the append, so destage need not
	// look it up again (see Store.destageGen).
	absent bool
}

// effect is one decoded effect of a recMeta record.
type effect struct {
	kind    uint8
	id      uint64 // layer or volume
	other   uint64 // effPutVolume: top; effMerge: into; effDelLayer: lineage
	lineage uint64 // effMerge
	limit   uint64 // effMerge: visible limit of the absorbed entries
	rec     layerRec
	ext     []byte // effExt
}

func appendBlocksHeader(b []byte, layer uint64, mode uint8, size int64, n int) []byte {
	b = append(b, recBlocks)
	b = binary.LittleEndian.AppendUint64(b, layer)
	b = append(b, mode)
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

func appendBlockOp(b []byte, op *blockOp) []byte {
	b = binary.LittleEndian.AppendUint64(b, op.blk)
	b = append(b, op.kind)
	switch op.kind {
	case kindData:
		b = append(b, op.fp[:]...)
		b = append(b, op.codec)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(op.sealed)))
		b = append(b, op.sealed...)
	case kindRef:
		b = append(b, op.fp[:]...)
		b = binary.LittleEndian.AppendUint64(b, op.chunk)
	}
	return b
}

func appendMetaRec(b []byte, effs []effect) []byte {
	b = append(b, recMeta)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(effs)))
	for i := range effs {
		e := &effs[i]
		b = append(b, e.kind)
		b = binary.LittleEndian.AppendUint64(b, e.id)
		switch e.kind {
		case effPutLayer:
			b = e.rec.appendTo(b)
		case effDelLayer, effPutVolume:
			b = binary.LittleEndian.AppendUint64(b, e.other)
		case effDelVolume:
		case effMerge:
			b = binary.LittleEndian.AppendUint64(b, e.other)
			b = binary.LittleEndian.AppendUint64(b, e.lineage)
			b = binary.LittleEndian.AppendUint64(b, e.limit)
		case effExt:
			b = binary.LittleEndian.AppendUint32(b, uint32(len(e.ext)))
			b = append(b, e.ext...)
		}
	}
	return b
}

// decoded is a parsed log payload.
type decoded struct {
	typ      uint8
	layer    uint64
	sizeMode uint8
	size     int64
	ops      []blockOp
	effs     []effect
	// shrinks (in memory, not logged): a sizeSet that made its layer
	// smaller when applied, so its destage deletes map entries.
	shrinks bool
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("log payload truncated: %w", ErrCorrupt)
		return false
	}
	return true
}

func (r *reader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || !r.need(n) {
		if r.err == nil {
			r.err = fmt.Errorf("log payload: bad length: %w", ErrCorrupt)
		}
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// decodePayload parses a log payload. Sealed bytes alias p. maxSealed bounds
// a data entry's length so garbage cannot make it allocate.
func decodePayload(p []byte, maxSealed int) (decoded, error) {
	r := &reader{b: p}
	d := decoded{typ: r.u8()}
	switch d.typ {
	case recBlocks:
		d.layer = r.u64()
		d.sizeMode = r.u8()
		d.size = int64(r.u64())
		if r.err == nil && (d.sizeMode > sizeSet || d.size < 0 || d.size > MaxVolumeSize) {
			return d, fmt.Errorf("log payload: size %d mode %d: %w", d.size, d.sizeMode, ErrCorrupt)
		}
		n := r.u32()
		if r.err == nil && uint64(n) > uint64(len(r.b))/9 {
			return d, fmt.Errorf("log payload: %d block entries in %d bytes: %w", n, len(r.b), ErrCorrupt)
		}
		d.ops = make([]blockOp, 0, n)
		for i := uint32(0); i < n && r.err == nil; i++ {
			op := blockOp{blk: r.u64(), kind: r.u8()}
			switch op.kind {
			case kindData:
				copy(op.fp[:], r.bytes(32))
				op.codec = r.u8()
				ln := int(r.u32())
				if ln > maxSealed {
					return d, fmt.Errorf("log payload: sealed length %d: %w", ln, ErrCorrupt)
				}
				op.sealed = r.bytes(ln)
			case kindRef:
				copy(op.fp[:], r.bytes(32))
				op.chunk = r.u64()
			case kindHole:
			default:
				if r.err == nil {
					return d, fmt.Errorf("log payload: block kind %d: %w", op.kind, ErrCorrupt)
				}
			}
			d.ops = append(d.ops, op)
		}
	case recMeta:
		n := r.u32()
		if r.err == nil && uint64(n) > uint64(len(r.b))/9 {
			return d, fmt.Errorf("log payload: %d effects in %d bytes: %w", n, len(r.b), ErrCorrupt)
		}
		for i := uint32(0); i < n && r.err == nil; i++ {
			e := effect{kind: r.u8(), id: r.u64()}
			switch e.kind {
			case effPutLayer:
				if r.err != nil {
					break
				}
				rec, used, err := decodeLayerRec(r.b)
				if err != nil {
					return d, err
				}
				e.rec = rec
				r.b = r.b[used:]
			case effDelLayer, effPutVolume:
				e.other = r.u64()
			case effDelVolume:
			case effMerge:
				e.other = r.u64()
				e.lineage = r.u64()
				e.limit = r.u64()
			case effExt:
				if e.id != 0 && r.err == nil {
					return d, fmt.Errorf("log payload: extension effect id %d: %w", e.id, ErrCorrupt)
				}
				e.ext = r.bytes(int(r.u32()))
			default:
				if r.err == nil {
					return d, fmt.Errorf("log payload: effect kind %d: %w", e.kind, ErrCorrupt)
				}
			}
			d.effs = append(d.effs, e)
		}
	default:
		if r.err == nil {
			return d, fmt.Errorf("log payload: record type %d: %w", d.typ, ErrCorrupt)
		}
	}
	if r.err != nil {
		return d, r.err
	}
	if len(r.b) != 0 {
		return d, fmt.Errorf("log payload: %d trailing bytes: %w", len(r.b), ErrCorrupt)
	}
	return d, nil
}
