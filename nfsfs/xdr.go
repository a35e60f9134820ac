package nfsfs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// XDR (RFC 4506) as the RPC layer and the NFS procedures need it: big-endian
// 32-bit units, variable-length data preceded by its length and padded to a
// multiple of four bytes.

var (
	// ErrXDRShort is a decode that ran past the end of its buffer.
	ErrXDRShort = errors.New("nfsfs: xdr: short buffer")
	// ErrXDRLimit is a length prefix above the limit the caller allows.
	ErrXDRLimit = errors.New("nfsfs: xdr: length over limit")
	// ErrXDRBool is a boolean encoded as neither 0 nor 1.
	ErrXDRBool = errors.New("nfsfs: xdr: bool not 0 or 1")
	// ErrXDRTrailing is returned by DoneExact when bytes remain.
	ErrXDRTrailing = errors.New("nfsfs: xdr: trailing bytes")
)

// pad returns the number of zero bytes that follow n bytes of opaque data.
func pad(n int) int { return (4 - n&3) & 3 }

// XDRReader decodes XDR from a byte slice without copying: Opaque and
// FixedOpaque return sub-slices of the buffer, valid as long as it is.
//
// Errors are sticky: after the first failure every method returns a zero
// value and Err reports that failure, so a decoder reads a whole structure
// and checks once at the end. No input makes a method panic, and no length
// prefix makes it allocate: lengths are checked against the caller's limit
// and against what remains before anything is sliced.
type XDRReader struct {
	buf []byte
	off int
	err error
}

// NewXDRReader returns a reader over b.
func NewXDRReader(b []byte) *XDRReader { return &XDRReader{buf: b} }

// Reset makes r read b from the start, clearing any error.
func (r *XDRReader) Reset(b []byte) { *r = XDRReader{buf: b} }

// fail records the first error; the offset says where the input went wrong,
// which is what a log line about a garbage call needs.
func (r *XDRReader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("%w at offset %d", err, r.off)
		r.off = len(r.buf)
	}
}

// take returns the next n bytes, or nil and a sticky error.
func (r *XDRReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.buf)-r.off {
		r.fail(ErrXDRShort)
		return nil
	}
	b := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

// Uint32 decodes an unsigned int.
func (r *XDRReader) Uint32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// Int32 decodes an int.
func (r *XDRReader) Int32() int32 { return int32(r.Uint32()) }

// Uint64 decodes an unsigned hyper.
func (r *XDRReader) Uint64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// Int64 decodes a hyper.
func (r *XDRReader) Int64() int64 { return int64(r.Uint64()) }

// Bool decodes a bool. Any value but 0 or 1 is an error (RFC 4506 4.4): a
// stray value usually means the decoder is out of step with the encoder.
func (r *XDRReader) Bool() bool {
	v := r.Uint32()
	if v > 1 {
		r.fail(ErrXDRBool)
		return false
	}
	return v == 1
}

// length decodes a length prefix and checks it against max and against the
// bytes that remain (data plus padding), before anything is sliced.
func (r *XDRReader) length(max int) (int, bool) {
	n := r.Uint32()
	if r.err != nil {
		return 0, false
	}
	if max >= 0 && uint64(n) > uint64(max) {
		r.off -= 4
		r.fail(ErrXDRLimit)
		return 0, false
	}
	if uint64(n)+uint64(pad(int(n&3))) > uint64(len(r.buf)-r.off) {
		r.off -= 4
		r.fail(ErrXDRShort)
		return 0, false
	}
	return int(n), true
}

// Opaque decodes variable-length opaque data of at most max bytes and
// returns it as a sub-slice of the buffer (no copy). The padding is skipped,
// not checked: RFC 4506 asks senders for zeros, and no server rejects
// others.
func (r *XDRReader) Opaque(max int) []byte {
	n, ok := r.length(max)
	if !ok {
		return nil
	}
	b := r.take(n)
	r.off += pad(n)
	return b
}

// FixedOpaque decodes n bytes of fixed-length opaque data (plus padding) as
// a sub-slice of the buffer.
func (r *XDRReader) FixedOpaque(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.buf)-r.off || pad(n) > len(r.buf)-r.off-n {
		r.fail(ErrXDRShort)
		return nil
	}
	b := r.take(n)
	r.off += pad(n)
	return b
}

// String decodes a string of at most max bytes. XDR strings are bytes: no
// encoding is checked here (NFS names are validated where they are used).
func (r *XDRReader) String(max int) string {
	return string(r.Opaque(max))
}

// Err returns the first decoding error, or nil.
func (r *XDRReader) Err() error { return r.err }

// Remaining returns the bytes not yet decoded (none after an error).
func (r *XDRReader) Remaining() []byte { return r.buf[r.off:] }

// Len returns the number of bytes not yet decoded.
func (r *XDRReader) Len() int { return len(r.buf) - r.off }

// Done returns the first decoding error, or nil when everything decoded so
// far was well formed. Trailing bytes are not an error: RPC bodies may carry
// them (some clients pad, and a newer minor revision may append fields), and
// servers accept them; use DoneExact where the layout is closed, such as a
// credential body whose length is its own.
func (r *XDRReader) Done() error { return r.err }

// DoneExact is Done, and also ErrXDRTrailing when bytes remain.
func (r *XDRReader) DoneExact() error {
	if r.err != nil {
		return r.err
	}
	if r.off != len(r.buf) {
		return fmt.Errorf("%w: %d bytes at offset %d", ErrXDRTrailing, len(r.buf)-r.off, r.off)
	}
	return nil
}

// XDRWriter encodes XDR by appending to a byte slice; it never fails.
type XDRWriter struct {
	buf []byte
}

// NewXDRWriter returns a writer that appends to b (after its current
// contents); pass b[:0] to reuse b's storage.
func NewXDRWriter(b []byte) *XDRWriter { return &XDRWriter{buf: b} }

// Reset empties the writer, keeping its storage.
func (w *XDRWriter) Reset() { w.buf = w.buf[:0] }

// Bytes returns the encoded bytes. They alias the writer's storage: a later
// write may move or overwrite them.
func (w *XDRWriter) Bytes() []byte { return w.buf }

// Len returns the number of bytes encoded.
func (w *XDRWriter) Len() int { return len(w.buf) }

// Truncate discards everything after the first n bytes, so a reply can drop
// partial results and encode an error instead.
func (w *XDRWriter) Truncate(n int) {
	if n < 0 || n > len(w.buf) {
		panic("nfsfs: XDRWriter.Truncate out of range")
	}
	w.buf = w.buf[:n]
}

// Uint32 encodes an unsigned int.
func (w *XDRWriter) Uint32(v uint32) { w.buf = binary.BigEndian.AppendUint32(w.buf, v) }

// Int32 encodes an int.
func (w *XDRWriter) Int32(v int32) { w.Uint32(uint32(v)) }

// Uint64 encodes an unsigned hyper.
func (w *XDRWriter) Uint64(v uint64) { w.buf = binary.BigEndian.AppendUint64(w.buf, v) }

// Int64 encodes a hyper.
func (w *XDRWriter) Int64(v int64) { w.Uint64(uint64(v)) }

// Bool encodes a bool.
func (w *XDRWriter) Bool(v bool) {
	if v {
		w.Uint32(1)
	} else {
		w.Uint32(0)
	}
}

var zeroPad [4]byte

// Opaque encodes variable-length opaque data: length, bytes, padding.
func (w *XDRWriter) Opaque(b []byte) {
	w.Uint32(uint32(len(b)))
	w.FixedOpaque(b)
}

// FixedOpaque encodes fixed-length opaque data: bytes, padding.
func (w *XDRWriter) FixedOpaque(b []byte) {
	w.buf = append(w.buf, b...)
	w.buf = append(w.buf, zeroPad[:pad(len(b))]...)
}

// String encodes a string.
func (w *XDRWriter) String(s string) {
	w.Uint32(uint32(len(s)))
	w.buf = append(w.buf, s...)
	w.buf = append(w.buf, zeroPad[:pad(len(s))]...)
}

// OpaqueSpace encodes the length n and its padding and returns the n bytes
// between them for the caller to fill, so a READ reply receives file data in
// place instead of through a copy. The slice is valid until the next write.
func (w *XDRWriter) OpaqueSpace(n int) []byte {
	w.Uint32(uint32(n))
	start := len(w.buf)
	need := n + pad(n)
	if cap(w.buf)-start < need {
		nb := make([]byte, start, 2*cap(w.buf)+need)
		copy(nb, w.buf)
		w.buf = nb
	}
	w.buf = w.buf[:start+need]
	clear(w.buf[start+n:])
	return w.buf[start : start+n : start+n]
}

// Reserve appends a zero uint32 and returns its offset, for a value known
// only later (a record mark, a status, a count); fill it with PutUint32At.
func (w *XDRWriter) Reserve() int {
	off := len(w.buf)
	w.Uint32(0)
	return off
}

// PutUint32At overwrites the uint32 at off, an offset Reserve returned.
func (w *XDRWriter) PutUint32At(off int, v uint32) {
	binary.BigEndian.PutUint32(w.buf[off:off+4], v)
}
