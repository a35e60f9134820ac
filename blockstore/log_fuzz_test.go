package blockstore

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeLogRecord feeds arbitrary bytes to the record decoder, to the
// segment scanner (as the body of a segment starting at LSN start) and to
// the segment header decoder. Whatever they accept must re-encode to the
// same bytes, so replay can only ever return records the writer could have
// written.
func FuzzDecodeLogRecord(f *testing.F) {
	rec := func(lsn LSN, payload string) []byte {
		return appendLogRecord(nil, lsn, len(payload), []byte(payload))
	}
	f.Add(rec(0, "hello"), uint64(0))
	f.Add(rec(0, ""), uint64(0))
	two := append(rec(4096, "first"), rec(4096+24, "second record")...)
	f.Add(two, uint64(4096))
	f.Add(two[:len(two)-3], uint64(4096))
	f.Add(append(rec(8, "x"), make([]byte, 64)...), uint64(8))
	f.Add(make([]byte, 32), uint64(0))
	f.Add(encodeLogSegHeader(7, 1<<20), uint64(1<<20))

	f.Fuzz(func(t *testing.T, data []byte, start uint64) {
		lsn, payload, size, err := decodeLogRecord(data)
		if err != nil {
			if !errors.Is(err, errLogShort) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unexpected error kind: %v", err)
			}
		} else {
			n := logRecHeaderSize + len(payload)
			if size != logRecordSize(len(payload)) || n > len(data) || len(payload) > logMaxPayload {
				t.Fatalf("record of %d payload bytes, size %d, in %d bytes", len(payload), size, len(data))
			}
			if again := appendLogRecord(nil, lsn, len(payload), payload); !bytes.Equal(again[:n], data[:n]) {
				t.Fatalf("decoded record does not re-encode to its bytes")
			}
		}

		seg := append(make([]byte, logSegHeaderSize), data...)
		want := LSN(start)
		end, err := scanLogSegment(bytes.NewReader(seg), int64(len(seg)), LSN(start), func(lsn LSN, p []byte) error {
			if lsn != want {
				t.Fatalf("record at LSN %d, want %d", lsn, want)
			}
			off := logSegHeaderSize + int(lsn-LSN(start))
			n := logRecHeaderSize + len(p)
			if again := appendLogRecord(nil, lsn, len(p), p); !bytes.Equal(again[:n], seg[off:off+n]) {
				t.Fatalf("scanned record at %d does not re-encode to its bytes", lsn)
			}
			want += LSN(logRecordSize(len(p)))
			return nil
		})
		if err != nil || end != want {
			t.Fatalf("scan: end %d (records end at %d), %v", end, want, err)
		}
		if end-LSN(start) > LSN(len(data)+logRecAlign) {
			t.Fatalf("scan went %d bytes into %d", end-LSN(start), len(data))
		}

		if seq, st, err := decodeLogSegHeader(data); err == nil {
			// The reserved and zero fields are covered by the checksum but
			// not interpreted.
			h := encodeLogSegHeader(seq, st)
			if !bytes.Equal(h[:12], data[:12]) || !bytes.Equal(h[16:32], data[16:32]) {
				t.Fatalf("accepted header does not re-encode")
			}
		}
	})
}
