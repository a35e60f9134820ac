package blockstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

type testRecord struct {
	off    int64
	fp     Fingerprint
	codec  uint8
	sealed []byte
	block  []byte
}

func testPackDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// makeRecords seals n blocks of mixed kinds: compressible, random (stored
// raw) and zero.
func makeRecords(t testing.TB, s *sealer, r *rand.Rand, n int) []testRecord {
	recs := make([]testRecord, n)
	for i := range recs {
		var block []byte
		switch i % 3 {
		case 0:
			block = compressibleBlock(r, s.blockSize)
		case 1:
			block = randomBlock(r, s.blockSize)
		default:
			block = make([]byte, s.blockSize)
			block[i%s.blockSize] = byte(i)
		}
		fp := s.fingerprint(block)
		codec, sealed := s.seal(nil, fp, block)
		recs[i] = testRecord{fp: fp, codec: codec, sealed: sealed, block: block}
	}
	return recs
}

// bigRecords returns raw records totalling more than twice the write
// buffer, so appending them must spill it.
func bigRecords(t testing.TB, s *sealer, r *rand.Rand) []testRecord {
	var recs []testRecord
	for n := 0; n <= 2*packBufSize; {
		block := randomBlock(r, s.blockSize)
		fp := s.fingerprint(block)
		codec, sealed := s.seal(nil, fp, block)
		recs = append(recs, testRecord{fp: fp, codec: codec, sealed: sealed, block: block})
		n += chunkHeaderSize + len(sealed)
	}
	return recs
}

func appendRecords(t *testing.T, w *packWriter, recs []testRecord) {
	t.Helper()
	for i := range recs {
		want := w.size()
		off, err := w.append(recs[i].fp, recs[i].codec, recs[i].sealed)
		if err != nil {
			t.Fatal(err)
		}
		if off != want {
			t.Fatalf("record %d at offset %d, size was %d", i, off, want)
		}
		if got := w.size(); got != off+int64(chunkHeaderSize+len(recs[i].sealed)) {
			t.Fatalf("size %d after record at %d of %d bytes", got, off, len(recs[i].sealed))
		}
		recs[i].off = off
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func checkRecords(t *testing.T, s *sealer, path string, recs []testRecord) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf []byte
	for i, rec := range recs {
		codec, sealed, err := readChunkRecord(f, rec.off, len(rec.sealed), rec.fp, s.blockSize, buf)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		buf = sealed[:0]
		if codec != rec.codec || !bytes.Equal(sealed, rec.sealed) {
			t.Fatalf("record %d read back differently", i)
		}
		block, err := s.open(nil, rec.fp, codec, sealed)
		if err != nil || !bytes.Equal(block, rec.block) {
			t.Fatalf("record %d: open: %v", i, err)
		}
	}
}

func scanAll(t *testing.T, path string, bs int) ([]testRecord, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []testRecord
	err = scanPack(f, bs, func(off int64, fp Fingerprint, codec uint8, sealed []byte) error {
		got = append(got, testRecord{off: off, fp: fp, codec: codec, sealed: bytes.Clone(sealed)})
		return nil
	})
	return got, err
}

func sameRecords(t *testing.T, got, want []testRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("scan found %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.off != w.off || g.fp != w.fp || g.codec != w.codec || !bytes.Equal(g.sealed, w.sealed) {
			t.Fatalf("record %d: scan gave off %d codec %#x, want off %d codec %#x", i, g.off, g.codec, w.off, w.codec)
		}
	}
}

func TestPackPath(t *testing.T) {
	if got, want := packPath("/d", 0x2a), filepath.Join("/d", "packs", "000000000000002a.pack"); got != want {
		t.Fatalf("packPath = %s, want %s", got, want)
	}
}

func TestPackWriteReadScan(t *testing.T) {
	for _, c := range []struct{ enc, direct bool }{{false, true}, {true, true}, {false, false}} {
		t.Run(fmt.Sprintf("enc=%v,direct=%v", c.enc, c.direct), func(t *testing.T) {
			defer func(d bool) { packDirect = d }(packDirect)
			packDirect = c.direct
			enc := c.enc
			const bs = 8 << 10
			s := newTestSealer(t, compressionS2, bs, enc)
			dir := testPackDir(t)
			path := packPath(dir, 7)
			w, err := createPack(path, 7, bs)
			if err != nil {
				t.Fatal(err)
			}
			if w.id() != 7 || w.size() != packHeaderSize {
				t.Fatalf("new pack: id %d size %d", w.id(), w.size())
			}
			// Enough records to spill the write buffer several times.
			r := rand.New(rand.NewPCG(1, 1))
			recs := append(makeRecords(t, s, r, 50), bigRecords(t, s, r)...)
			recs = append(recs, makeRecords(t, s, r, 50)...)
			appendRecords(t, w, recs)
			if err := w.sync(); err != nil {
				t.Fatal(err)
			}
			// A direct writer writes whole blocks: the file may end in
			// zeros up to the next block boundary until close.
			if c.direct && !w.direct && runtime.GOOS == "linux" && onExt4(t, dir) {
				t.Fatal("pack writer on ext4 is not direct")
			}
			size, end := fileSize(t, path), w.size()
			if w.direct {
				end = (end + packAlign - 1) &^ (packAlign - 1)
			}
			if size < w.size() || size > end {
				t.Fatalf("file is %d bytes after sync, writer says %d", size, w.size())
			}
			if tail := readFile(t, path)[w.size():]; !bytes.Equal(tail, make([]byte, len(tail))) {
				t.Fatalf("the %d bytes past the last record are not zeros", len(tail))
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			id, gotBS, err := readPackHeader(f)
			f.Close()
			if err != nil || id != 7 || gotBS != bs {
				t.Fatalf("readPackHeader = %d, %d, %v", id, gotBS, err)
			}
			checkRecords(t, s, path, recs)
			want := w.size()
			if err := w.close(); err != nil {
				t.Fatal(err)
			}
			if size := fileSize(t, path); size != want {
				t.Fatalf("file is %d bytes after close, writer said %d", size, want)
			}
			got, err := scanAll(t, path, bs)
			if err != nil {
				t.Fatal(err)
			}
			sameRecords(t, got, recs)
		})
	}
}

// onExt4 reports whether dir is on ext4, where direct I/O must work.
func onExt4(t *testing.T, dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type == unix.EXT4_SUPER_MAGIC
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPackCreateExclusive(t *testing.T) {
	dir := testPackDir(t)
	w, err := createPack(packPath(dir, 1), 1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if _, err := createPack(packPath(dir, 1), 1, 4096); err == nil {
		t.Fatal("createPack over an existing pack succeeded")
	}
	if _, err := createPack(packPath(dir, 2), 2, 3000); err == nil {
		t.Fatal("createPack with block size 3000 succeeded")
	}
}

func TestPackEmpty(t *testing.T) {
	dir := testPackDir(t)
	path := packPath(dir, 3)
	w, err := createPack(path, 3, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	if fileSize(t, path) != packHeaderSize {
		t.Fatalf("closed empty pack is %d bytes", fileSize(t, path))
	}
	got, err := scanAll(t, path, 4096)
	if err != nil || len(got) != 0 {
		t.Fatalf("scan of empty pack: %d records, %v", len(got), err)
	}
}

func TestPackReopenTruncatesTornTail(t *testing.T) {
	const bs = 4 << 10
	s := newTestSealer(t, compressionZstdFastest, bs, false)
	r := rand.New(rand.NewPCG(2, 2))
	dir := testPackDir(t)
	path := packPath(dir, 9)
	w, err := createPack(path, 9, bs)
	if err != nil {
		t.Fatal(err)
	}
	committedRecs := makeRecords(t, s, r, 5)
	appendRecords(t, w, committedRecs)
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	committed := w.size()
	// Durable but never committed to bbolt, then a torn record.
	appendRecords(t, w, makeRecords(t, s, r, 2))
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := makeRecords(t, s, r, 1)[0]
	rec := appendChunkHeader(nil, &torn.fp, torn.codec, len(torn.sealed))
	rec = append(rec, torn.sealed[:len(torn.sealed)/2]...)
	if _, err := f.Write(rec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := scanAll(t, path, bs); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan over a torn record: %v", err)
	}

	w, err = openPackAppend(path, 9, bs, committed)
	if err != nil {
		t.Fatal(err)
	}
	if fileSize(t, path) != committed || w.size() != committed {
		t.Fatalf("reopened: file %d bytes, writer %d, want %d", fileSize(t, path), w.size(), committed)
	}
	more := makeRecords(t, s, r, 3)
	appendRecords(t, w, more)
	if more[0].off != committed {
		t.Fatalf("first record after reopen at %d, want %d", more[0].off, committed)
	}
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	all := append(committedRecs, more...)
	checkRecords(t, s, path, all)
	got, err := scanAll(t, path, bs)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, all)

	size := fileSize(t, path)
	for _, tc := range []struct {
		name      string
		id        uint64
		bs        int
		committed int64
		corrupt   bool
	}{
		{"longer than file", 9, bs, size + 1, true},
		{"wrong id", 10, bs, size, true},
		{"wrong block size", 9, 2 * bs, size, true},
		{"inside header", 9, bs, packHeaderSize - 1, false},
	} {
		w, err := openPackAppend(path, tc.id, tc.bs, tc.committed)
		if err == nil {
			w.close()
			t.Fatalf("%s: openPackAppend succeeded", tc.name)
		}
		if errors.Is(err, ErrCorrupt) != tc.corrupt {
			t.Fatalf("%s: %v, corrupt want %v", tc.name, err, tc.corrupt)
		}
	}
	if fileSize(t, path) != size {
		t.Fatal("a failed openPackAppend changed the file")
	}
	if _, err := openPackAppend(filepath.Join(dir, "packs", "missing.pack"), 1, bs, packHeaderSize); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing pack: %v", err)
	}
}

func TestPackAbort(t *testing.T) {
	const bs = 4 << 10
	s := newTestSealer(t, compressionS2, bs, false)
	r := rand.New(rand.NewPCG(3, 3))
	dir := testPackDir(t)
	path := packPath(dir, 4)
	w, err := createPack(path, 4, bs)
	if err != nil {
		t.Fatal(err)
	}
	// Abort before anything was synced keeps a valid, empty pack.
	appendRecords(t, w, makeRecords(t, s, r, 3))
	if err := w.abort(); err != nil {
		t.Fatal(err)
	}
	if w.size() != packHeaderSize {
		t.Fatalf("size after abort of a fresh pack: %d", w.size())
	}
	keep := makeRecords(t, s, r, 4)
	appendRecords(t, w, keep)
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	synced := w.size()
	// Enough to have reached the file, not just the buffer.
	appendRecords(t, w, bigRecords(t, s, r))
	if fileSize(t, path) <= synced {
		t.Fatal("test did not spill the buffer")
	}
	if err := w.abort(); err != nil {
		t.Fatal(err)
	}
	if w.size() != synced || fileSize(t, path) != synced {
		t.Fatalf("after abort: writer %d, file %d, want %d", w.size(), fileSize(t, path), synced)
	}
	more := makeRecords(t, s, r, 2)
	appendRecords(t, w, more)
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	got, err := scanAll(t, path, bs)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, append(keep, more...))
	if _, err := w.append(more[0].fp, more[0].codec, more[0].sealed); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := w.sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
	if err := w.close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

// enospcAfter fails the write that would take the file past limit bytes,
// after writing what fits, as a full disk does.
func enospcAfter(w *packWriter, limit int64) func(p []byte, off int64) (int, error) {
	return func(p []byte, off int64) (int, error) {
		if off+int64(len(p)) <= limit {
			return w.f.WriteAt(p, off)
		}
		n := 0
		if off < limit {
			n, _ = w.f.WriteAt(p[:limit-off], off)
		}
		return n, &os.PathError{Op: "write", Path: w.f.Name(), Err: syscall.ENOSPC}
	}
}

func TestPackNoSpace(t *testing.T) {
	const bs = 4 << 10
	s := newTestSealer(t, compressionS2, bs, false)
	r := rand.New(rand.NewPCG(4, 4))

	t.Run("fresh pack", func(t *testing.T) {
		dir := testPackDir(t)
		path := packPath(dir, 5)
		w, err := createPack(path, 5, bs)
		if err != nil {
			t.Fatal(err)
		}
		w.writeAt = enospcAfter(w, 100)
		appendRecords(t, w, makeRecords(t, s, r, 3))
		err = w.sync()
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("sync on a full disk: %v", err)
		}
		if fileSize(t, path) != 0 || w.size() != packHeaderSize {
			t.Fatalf("after failed first sync: file %d, writer %d", fileSize(t, path), w.size())
		}
		// Space is back: the writer carries on from a clean state.
		w.writeAt = w.f.WriteAt
		recs := makeRecords(t, s, r, 3)
		appendRecords(t, w, recs)
		if recs[0].off != packHeaderSize {
			t.Fatalf("first record at %d", recs[0].off)
		}
		if err := w.close(); err != nil {
			t.Fatal(err)
		}
		checkRecords(t, s, path, recs)
	})

	t.Run("half record", func(t *testing.T) {
		dir := testPackDir(t)
		path := packPath(dir, 6)
		w, err := createPack(path, 6, bs)
		if err != nil {
			t.Fatal(err)
		}
		keep := makeRecords(t, s, r, 4)
		appendRecords(t, w, keep)
		if err := w.sync(); err != nil {
			t.Fatal(err)
		}
		synced := w.size()
		w.writeAt = enospcAfter(w, synced+chunkHeaderSize+10)
		appendRecords(t, w, makeRecords(t, s, r, 2))
		if err := w.sync(); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("sync on a full disk: %v", err)
		}
		if fileSize(t, path) != synced || w.size() != synced {
			t.Fatalf("after failed sync: file %d, writer %d, want %d", fileSize(t, path), w.size(), synced)
		}
		got, err := scanAll(t, path, bs)
		if err != nil {
			t.Fatalf("scan after a failed sync: %v", err)
		}
		sameRecords(t, got, keep)

		// A failure while append spills the buffer rolls back the same way.
		recs := bigRecords(t, s, r)
		var appendErr error
		for _, rec := range recs {
			if _, appendErr = w.append(rec.fp, rec.codec, rec.sealed); appendErr != nil {
				break
			}
		}
		if !errors.Is(appendErr, ErrNoSpace) {
			t.Fatalf("append spilling onto a full disk: %v", appendErr)
		}
		if fileSize(t, path) != synced || w.size() != synced {
			t.Fatalf("after failed append: file %d, writer %d, want %d", fileSize(t, path), w.size(), synced)
		}
		w.writeAt = w.f.WriteAt
		more := makeRecords(t, s, r, 2)
		appendRecords(t, w, more)
		if err := w.sync(); err != nil {
			t.Fatal(err)
		}
		w.close()
		got, err = scanAll(t, path, bs)
		if err != nil {
			t.Fatal(err)
		}
		sameRecords(t, got, append(keep, more...))
	})
}

func TestPackAppendRejectsBadRecords(t *testing.T) {
	const bs = 4 << 10
	dir := testPackDir(t)
	w, err := createPack(packPath(dir, 1), 1, bs)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	var fp Fingerprint
	for _, tc := range []struct {
		codec uint8
		n     int
	}{
		{CodecS2, 0},
		{CodecS2, maxSealedLen(bs) + 1},
		{CodecRaw, bs - 1},
		{CodecRaw | FlagEncrypted, bs},
		{CodecZstd | FlagEncrypted, sealNonceSize + sealTagSize},
		{3, 100},
		{0x40 | CodecS2, 100},
	} {
		if _, err := w.append(fp, tc.codec, make([]byte, tc.n)); err == nil {
			t.Errorf("append of codec %#x, %d bytes succeeded", tc.codec, tc.n)
		}
	}
	if w.size() != packHeaderSize {
		t.Fatalf("rejected appends grew the pack to %d", w.size())
	}
}

func TestPackCorruptHeader(t *testing.T) {
	h := encodePackHeader(42, 16<<10)
	if id, bs, err := decodePackHeader(h[:]); err != nil || id != 42 || bs != 16<<10 {
		t.Fatalf("decodePackHeader = %d, %d, %v", id, bs, err)
	}
	for i := range h {
		for bit := range 8 {
			bad := h
			bad[i] ^= 1 << bit
			if _, _, err := readPackHeader(bytes.NewReader(bad[:])); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("header with byte %d bit %d flipped: %v", i, bit, err)
			}
		}
	}
	for n := 0; n < packHeaderSize; n++ {
		if _, _, err := readPackHeader(bytes.NewReader(h[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d-byte header: %v", n, err)
		}
		if err := scanPack(bytes.NewReader(h[:n]), 16<<10, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("scan of %d-byte pack: %v", n, err)
		}
	}
	// A well-formed header with a wrong version or block size, CRC fixed.
	for _, mutate := range []func(b []byte){
		func(b []byte) { b[8] = 2 },
		func(b []byte) { b[12], b[13], b[14] = 0, 0x30, 0 }, // 12 KiB
		func(b []byte) { b[12], b[13], b[14] = 0, 0, 0 },
		func(b []byte) { b[24] = 1 },
	} {
		bad := h
		mutate(bad[:])
		binary.LittleEndian.PutUint32(bad[28:], crc32.Checksum(bad[:28], packCRCTable))
		if _, _, err := decodePackHeader(bad[:]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("header %x: %v", bad, err)
		}
	}
	if err := scanPack(bytes.NewReader(h[:]), 8<<10, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan with the wrong block size: %v", err)
	}
	errIO := errors.New("disk on fire")
	if _, _, err := readPackHeader(failingReaderAt{errIO}); !errors.Is(err, errIO) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("I/O error reading the header: %v", err)
	}
}

type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) { return 0, f.err }

func TestPackCorruptRecord(t *testing.T) {
	const bs = 4 << 10
	s := newTestSealer(t, compressionS2, bs, true)
	r := rand.New(rand.NewPCG(5, 5))
	recs := makeRecords(t, s, r, 2) // one compressed, one raw
	for _, rec := range recs {
		good := appendChunkHeader(nil, &rec.fp, rec.codec, len(rec.sealed))
		good = append(good, rec.sealed...)
		fp, codec, sealed, n, err := decodeChunkRecord(append(bytes.Clone(good), "trailing"...), bs)
		if err != nil || fp != rec.fp || codec != rec.codec || !bytes.Equal(sealed, rec.sealed) || n != len(good) {
			t.Fatalf("decode of a good record: n=%d err=%v", n, err)
		}
		for name, mutate := range map[string]func(b []byte) []byte{
			"truncated header": func(b []byte) []byte { return b[:chunkHeaderSize-1] },
			"truncated body":   func(b []byte) []byte { return b[:len(b)-1] },
			"reserved byte":    func(b []byte) []byte { b[6] = 1; return b },
			"unknown codec":    func(b []byte) []byte { b[4] = 3; return b },
			"codec flag bit":   func(b []byte) []byte { b[4] |= 0x20; return b },
			"zero length":      func(b []byte) []byte { b[0], b[1], b[2], b[3] = 0, 0, 0, 0; return b },
			"huge length":      func(b []byte) []byte { b[3] = 0xff; return b },
			"length past end":  func(b []byte) []byte { b[0]++; return b },
			"raw length":       func(b []byte) []byte { b[4] = CodecRaw; return b },
		} {
			bad := mutate(bytes.Clone(good))
			if rec.codec == CodecRaw|FlagEncrypted && name == "raw length" {
				continue
			}
			if _, _, _, _, err := decodeChunkRecord(bad, bs); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}

	dir := testPackDir(t)
	path := packPath(dir, 8)
	w, err := createPack(path, 8, bs)
	if err != nil {
		t.Fatal(err)
	}
	appendRecords(t, w, recs)
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := recs[0]
	other := rec.fp
	other[0] ^= 1
	for name, read := range map[string]func() error{
		"wrong fingerprint": func() error {
			_, _, err := readChunkRecord(f, rec.off, len(rec.sealed), other, bs, nil)
			return err
		},
		"wrong length": func() error {
			_, _, err := readChunkRecord(f, rec.off, len(rec.sealed)-1, rec.fp, bs, nil)
			return err
		},
		"wrong offset": func() error {
			_, _, err := readChunkRecord(f, rec.off+1, len(rec.sealed), rec.fp, bs, nil)
			return err
		},
		"in header": func() error {
			_, _, err := readChunkRecord(f, 0, len(rec.sealed), rec.fp, bs, nil)
			return err
		},
		"past end": func() error {
			_, _, err := readChunkRecord(f, recs[1].off+1, len(recs[1].sealed), recs[1].fp, bs, nil)
			return err
		},
		"zero length": func() error {
			_, _, err := readChunkRecord(f, rec.off, 0, rec.fp, bs, nil)
			return err
		},
		"length too large": func() error {
			_, _, err := readChunkRecord(f, rec.off, maxSealedLen(bs)+1, rec.fp, bs, nil)
			return err
		},
	} {
		if err := read(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	errIO := errors.New("disk on fire")
	if _, _, err := readChunkRecord(failingReaderAt{errIO}, rec.off, len(rec.sealed), rec.fp, bs, nil); !errors.Is(err, errIO) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("I/O error reading a record: %v", err)
	}

	// A damaged byte in a record header stops the scan with ErrCorrupt at
	// that record, after delivering the records before it.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[recs[1].off+5] = 1
	var seen int
	err = scanPack(bytes.NewReader(data), bs, func(int64, Fingerprint, uint8, []byte) error {
		seen++
		return nil
	})
	if !errors.Is(err, ErrCorrupt) || seen != 1 {
		t.Fatalf("scan over a damaged record: %d records, %v", seen, err)
	}
	stop := errors.New("stop")
	if err := scanPack(bytes.NewReader(data), bs, func(int64, Fingerprint, uint8, []byte) error { return stop }); err != stop {
		t.Fatalf("scan did not return fn's error: %v", err)
	}
	if err := scanPack(io.MultiReader(bytes.NewReader(data[:100]), failingReader{errIO}), bs, func(int64, Fingerprint, uint8, []byte) error { return nil }); !errors.Is(err, errIO) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan with an I/O error: %v", err)
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }
