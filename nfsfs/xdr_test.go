package nfsfs

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestXDRRoundTrip(t *testing.T) {
	var w XDRWriter
	w.Uint32(0xdeadbeef)
	w.Int32(-2)
	w.Uint64(math.MaxUint64 - 1)
	w.Int64(-3)
	w.Bool(true)
	w.Bool(false)
	w.Opaque([]byte("abcde"))
	w.FixedOpaque([]byte{9, 8, 7})
	w.String("name")
	w.String("")
	w.Opaque(nil)

	want := []byte{
		0xde, 0xad, 0xbe, 0xef,
		0xff, 0xff, 0xff, 0xfe,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd,
		0, 0, 0, 1,
		0, 0, 0, 0,
		0, 0, 0, 5, 'a', 'b', 'c', 'd', 'e', 0, 0, 0,
		9, 8, 7, 0,
		0, 0, 0, 4, 'n', 'a', 'm', 'e',
		0, 0, 0, 0,
		0, 0, 0, 0,
	}
	if !bytes.Equal(w.Bytes(), want) || w.Len() != len(want) {
		t.Fatalf("encoding:\n got %x\nwant %x", w.Bytes(), want)
	}

	r := NewXDRReader(w.Bytes())
	if v := r.Uint32(); v != 0xdeadbeef {
		t.Fatalf("Uint32 %x", v)
	}
	if v := r.Int32(); v != -2 {
		t.Fatalf("Int32 %d", v)
	}
	if v := r.Uint64(); v != math.MaxUint64-1 {
		t.Fatalf("Uint64 %x", v)
	}
	if v := r.Int64(); v != -3 {
		t.Fatalf("Int64 %d", v)
	}
	if !r.Bool() || r.Bool() {
		t.Fatalf("Bool")
	}
	if v := r.Opaque(5); string(v) != "abcde" {
		t.Fatalf("Opaque %q", v)
	}
	if v := r.FixedOpaque(3); !bytes.Equal(v, []byte{9, 8, 7}) {
		t.Fatalf("FixedOpaque %v", v)
	}
	if v := r.String(4); v != "name" {
		t.Fatalf("String %q", v)
	}
	if v := r.String(0); v != "" {
		t.Fatalf("empty String %q", v)
	}
	if v := r.Opaque(0); len(v) != 0 {
		t.Fatalf("empty Opaque %q", v)
	}
	if err := r.DoneExact(); err != nil || r.Len() != 0 {
		t.Fatalf("DoneExact: %v", err)
	}
}

func TestXDRPadding(t *testing.T) {
	for n := range 9 {
		var w XDRWriter
		b := bytes.Repeat([]byte{0xaa}, n)
		w.Opaque(b)
		w.Uint32(7)
		if w.Len() != 4+(n+3)/4*4+4 {
			t.Fatalf("opaque of %d encodes to %d bytes", n, w.Len())
		}
		r := NewXDRReader(w.Bytes())
		if got := r.Opaque(n); !bytes.Equal(got, b) || r.Uint32() != 7 || r.DoneExact() != nil {
			t.Fatalf("opaque of %d: %x, %v", n, got, r.Err())
		}
		// Truncating inside the padding is short, not a silent success.
		if n%4 != 0 {
			r := NewXDRReader(w.Bytes()[:4+n])
			if r.Opaque(n); !errors.Is(r.Err(), ErrXDRShort) {
				t.Fatalf("opaque of %d without padding: %v", n, r.Err())
			}
			r = NewXDRReader(w.Bytes()[4 : 4+n])
			if r.FixedOpaque(n); !errors.Is(r.Err(), ErrXDRShort) {
				t.Fatalf("fixed opaque of %d without padding: %v", n, r.Err())
			}
		}
	}
}

func TestXDRNoCopy(t *testing.T) {
	var w XDRWriter
	w.Opaque([]byte("data"))
	buf := w.Bytes()
	r := NewXDRReader(buf)
	got := r.Opaque(10)
	buf[4] = 'D'
	if string(got) != "Data" {
		t.Fatalf("Opaque copied: %q", got)
	}
	// The sub-slice cannot grow into the padding or the next field.
	if cap(got) != 4 {
		t.Fatalf("Opaque result has capacity %d", cap(got))
	}
}

func TestXDRErrors(t *testing.T) {
	enc := func(f func(w *XDRWriter)) []byte {
		var w XDRWriter
		f(&w)
		return w.Bytes()
	}
	for _, tc := range []struct {
		name string
		in   []byte
		read func(r *XDRReader)
		want error
	}{
		{"short uint32", []byte{1, 2, 3}, func(r *XDRReader) { r.Uint32() }, ErrXDRShort},
		{"short uint64", []byte{1, 2, 3, 4, 5}, func(r *XDRReader) { r.Uint64() }, ErrXDRShort},
		{"bool 2", []byte{0, 0, 0, 2}, func(r *XDRReader) { r.Bool() }, ErrXDRBool},
		{"opaque over limit", enc(func(w *XDRWriter) { w.Opaque(make([]byte, 9)) }), func(r *XDRReader) { r.Opaque(8) }, ErrXDRLimit},
		{"string over limit", enc(func(w *XDRWriter) { w.String("toolong") }), func(r *XDRReader) { r.String(3) }, ErrXDRLimit},
		{"length past the end", []byte{0, 0, 0, 8, 1, 2, 3, 4}, func(r *XDRReader) { r.Opaque(-1) }, ErrXDRShort},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}, func(r *XDRReader) { r.Opaque(-1) }, ErrXDRShort},
		{"huge length, limited", []byte{0xff, 0xff, 0xff, 0xfd}, func(r *XDRReader) { r.String(255) }, ErrXDRLimit},
		{"fixed past the end", []byte{1, 2}, func(r *XDRReader) { r.FixedOpaque(4) }, ErrXDRShort},
		{"negative fixed", []byte{1, 2, 3, 4}, func(r *XDRReader) { r.FixedOpaque(-4) }, ErrXDRShort},
		{"trailing", []byte{0, 0, 0, 1, 0}, func(r *XDRReader) { r.Uint32() }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewXDRReader(tc.in)
			tc.read(r)
			if !errors.Is(r.Err(), tc.want) || (tc.want == nil) != (r.Err() == nil) {
				t.Fatalf("error %v, want %v", r.Err(), tc.want)
			}
			if r.Done() != r.Err() {
				t.Fatalf("Done %v differs from Err %v", r.Done(), r.Err())
			}
			if tc.want == nil {
				if !errors.Is(r.DoneExact(), ErrXDRTrailing) {
					t.Fatalf("DoneExact with trailing bytes: %v", r.DoneExact())
				}
				return
			}
			// Sticky: everything after the first error is zero.
			if r.Uint32() != 0 || r.Opaque(-1) != nil || r.String(10) != "" || r.Bool() || len(r.Remaining()) != 0 {
				t.Fatalf("reads after an error returned data")
			}
			if !errors.Is(r.Err(), tc.want) {
				t.Fatalf("error changed to %v", r.Err())
			}
		})
	}
	// Reset clears the error.
	r := NewXDRReader([]byte{1})
	r.Uint32()
	r.Reset([]byte{0, 0, 0, 3})
	if r.Uint32() != 3 || r.Err() != nil {
		t.Fatalf("after Reset: %v", r.Err())
	}
}

func TestXDRWriterSlots(t *testing.T) {
	var w XDRWriter
	mark := w.Reserve()
	w.Uint32(1)
	count := w.Reserve()
	w.String("x")
	w.PutUint32At(mark, 0xfeedface)
	w.PutUint32At(count, 3)
	r := NewXDRReader(w.Bytes())
	if r.Uint32() != 0xfeedface || r.Uint32() != 1 || r.Uint32() != 3 || r.String(1) != "x" || r.DoneExact() != nil {
		t.Fatalf("reserved slots: %x", w.Bytes())
	}
	w.Truncate(4)
	if w.Len() != 4 {
		t.Fatalf("Truncate: %d", w.Len())
	}

	// OpaqueSpace: filled in place, padding zeroed even over old bytes.
	w = XDRWriter{buf: bytes.Repeat([]byte{0xee}, 64)[:0]}
	p := w.OpaqueSpace(5)
	copy(p, "hello")
	w.Uint32(9)
	r = NewXDRReader(w.Bytes())
	if string(r.Opaque(5)) != "hello" || r.Uint32() != 9 || r.DoneExact() != nil {
		t.Fatalf("OpaqueSpace: %x", w.Bytes())
	}
	if !bytes.Equal(w.Bytes()[9:12], []byte{0, 0, 0}) {
		t.Fatalf("OpaqueSpace padding not zero: %x", w.Bytes())
	}
	// Growing past the capacity keeps what was written.
	w = XDRWriter{}
	w.Uint32(1)
	big := w.OpaqueSpace(1 << 16)
	big[0], big[len(big)-1] = 1, 2
	r = NewXDRReader(w.Bytes())
	if r.Uint32() != 1 || len(r.Opaque(1<<16)) != 1<<16 || r.DoneExact() != nil {
		t.Fatalf("grown OpaqueSpace")
	}

	// NewXDRWriter appends after existing content.
	w2 := NewXDRWriter([]byte{1, 2, 3, 4})
	w2.Uint32(5)
	if !bytes.Equal(w2.Bytes(), []byte{1, 2, 3, 4, 0, 0, 0, 5}) {
		t.Fatalf("NewXDRWriter: %x", w2.Bytes())
	}
	w2.Reset()
	if w2.Len() != 0 {
		t.Fatal("Reset")
	}
}

func BenchmarkXDRDecode(b *testing.B) {
	var w XDRWriter
	for range 16 {
		w.Uint32(1)
		w.Uint64(2)
		w.Opaque(make([]byte, 32))
	}
	buf := w.Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	var r XDRReader
	for b.Loop() {
		r.Reset(buf)
		for range 16 {
			r.Uint32()
			r.Uint64()
			r.Opaque(64)
		}
		if r.Err() != nil {
			b.Fatal(r.Err())
		}
	}
}
