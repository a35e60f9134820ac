package blockstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Pack file format (wire format, all integers little-endian):
//
//	header, 32 bytes:
//	  [0:8]   magic "DSTPACK1"
//	  [8:12]  u32 version = 1
//	  [12:16] u32 block size
//	  [16:24] u64 pack id
//	  [24:28] u32 reserved, 0
//	  [28:32] u32 CRC-32C (Castagnoli) of bytes 0..28
//	chunk record, 40 bytes + sealed:
//	  [0:4]   u32 sealed length n
//	  [4]     u8 codec
//	  [5:8]   zero
//	  [8:40]  fingerprint
//	  [40:40+n] sealed bytes
//
// Records carry no checksum of their own: a chunk is verified when opened
// (fingerprint, and AEAD tag when encrypted), and bbolt records each chunk's
// offset and length, so a record is never located by trusting its header.
const (
	packHeaderSize  = 32
	chunkHeaderSize = 40

	packMagic   = "DSTPACK1"
	packVersion = 1

	// packBufSize is how much a packWriter gathers before writing: large
	// enough that destage issues few, big writes.
	packBufSize = 1 << 20
	// packAlign is the unit of a direct pack write: file offset, length
	// and buffer address are multiples of it (4 KiB covers devices with
	// 512-byte and 4 KiB logical blocks).
	packAlign = 4096
	// packScanBufSize is scanPack's read size: sequential reads of this
	// size already run at disk speed, and GC and scrub may scan several
	// packs at once.
	packScanBufSize = 256 << 10
)

var packCRCTable = crc32.MakeTable(crc32.Castagnoli)

func packPath(dir string, id uint64) string {
	return filepath.Join(dir, "packs", fmt.Sprintf("%016x.pack", id))
}

func encodePackHeader(id uint64, blockSize int) [packHeaderSize]byte {
	var h [packHeaderSize]byte
	copy(h[0:8], packMagic)
	binary.LittleEndian.PutUint32(h[8:12], packVersion)
	binary.LittleEndian.PutUint32(h[12:16], uint32(blockSize))
	binary.LittleEndian.PutUint64(h[16:24], id)
	binary.LittleEndian.PutUint32(h[28:32], crc32.Checksum(h[:28], packCRCTable))
	return h
}

func decodePackHeader(h []byte) (id uint64, blockSize int, err error) {
	if len(h) < packHeaderSize {
		return 0, 0, corruptf("pack header: %d bytes, want %d", len(h), packHeaderSize)
	}
	if string(h[0:8]) != packMagic {
		return 0, 0, corruptf("pack header: bad magic %q", h[0:8])
	}
	if got, want := binary.LittleEndian.Uint32(h[28:32]), crc32.Checksum(h[:28], packCRCTable); got != want {
		return 0, 0, corruptf("pack header: crc %#08x, want %#08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(h[8:12]); v != packVersion {
		return 0, 0, corruptf("pack header: version %d, want %d", v, packVersion)
	}
	if r := binary.LittleEndian.Uint32(h[24:28]); r != 0 {
		return 0, 0, corruptf("pack header: reserved field %#x", r)
	}
	bs := binary.LittleEndian.Uint32(h[12:16])
	if !validBlockSize(int(bs)) {
		return 0, 0, corruptf("pack header: block size %d", bs)
	}
	return binary.LittleEndian.Uint64(h[16:24]), int(bs), nil
}

// readPackHeader reads and checks the header at offset 0 of a pack.
func readPackHeader(r io.ReaderAt) (id uint64, blockSize int, err error) {
	var h [packHeaderSize]byte
	n, err := r.ReadAt(h[:], 0)
	if n < packHeaderSize {
		if err == nil || errors.Is(err, io.EOF) {
			return 0, 0, corruptf("pack header: file has only %d bytes", n)
		}
		return 0, 0, err
	}
	return decodePackHeader(h[:])
}

func appendChunkHeader(dst []byte, fp *Fingerprint, codec uint8, sealedLen int) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(sealedLen))
	dst = append(dst, codec, 0, 0, 0)
	return append(dst, fp[:]...)
}

// sealedLenProblem describes why no sealer could have produced a sealed
// part of n bytes with this codec, or returns "". Raw chunks have an exact
// size, so a damaged length or codec byte is caught here, before a scan
// goes on to misread every record after it.
func sealedLenProblem(n uint64, codec uint8, blockSize int) string {
	limit := uint64(max(maxSealedLen(blockSize), 0))
	if n == 0 || n > limit {
		return fmt.Sprintf("sealed length %d out of range (max %d)", n, limit)
	}
	overhead := uint64(0)
	if codec&FlagEncrypted != 0 {
		overhead = sealNonceSize + sealTagSize
		if n <= overhead {
			return fmt.Sprintf("encrypted length %d too short", n)
		}
	}
	if codec&^FlagEncrypted == CodecRaw && n != uint64(blockSize)+overhead {
		return fmt.Sprintf("raw chunk of %d bytes, want %d", n, uint64(blockSize)+overhead)
	}
	return ""
}

// decodeChunkRecord parses the record at the start of buf; n is its total
// length. sealed aliases buf (with its capacity clipped). Malformed input
// returns an error wrapping ErrCorrupt; it never panics.
func decodeChunkRecord(buf []byte, blockSize int) (fp Fingerprint, codec uint8, sealed []byte, n int, err error) {
	if len(buf) < chunkHeaderSize {
		return fp, 0, nil, 0, corruptf("chunk record: %d bytes, shorter than its header", len(buf))
	}
	sealedLen := binary.LittleEndian.Uint32(buf[0:4])
	codec = buf[4]
	if buf[5]|buf[6]|buf[7] != 0 {
		return fp, 0, nil, 0, corruptf("chunk record: reserved bytes %x", buf[5:8])
	}
	if !validCodec(codec) {
		return fp, 0, nil, 0, corruptf("chunk record: unknown codec %#02x", codec)
	}
	if p := sealedLenProblem(uint64(sealedLen), codec, blockSize); p != "" {
		return fp, 0, nil, 0, corruptf("chunk record: %s", p)
	}
	if uint64(sealedLen) > uint64(len(buf)-chunkHeaderSize) {
		return fp, 0, nil, 0, corruptf("chunk record: sealed length %d, only %d bytes follow", sealedLen, len(buf)-chunkHeaderSize)
	}
	n = chunkHeaderSize + int(sealedLen)
	copy(fp[:], buf[8:40])
	return fp, codec, buf[chunkHeaderSize:n:n], n, nil
}

// readChunkRecord reads the record at off, whose sealed part is sealedLen
// bytes long (as recorded in the chunk table), into buf (grown if needed)
// and checks it is the chunk want. sealed aliases buf.
//
// A record that ends past the end of the file is corruption: the chunk
// table only points at synced data (I2).
func readChunkRecord(f io.ReaderAt, off int64, sealedLen int, want Fingerprint, blockSize int, buf []byte) (codec uint8, sealed []byte, err error) {
	if off < packHeaderSize {
		return 0, nil, corruptf("chunk %s: record offset %d inside the pack header", want, off)
	}
	if sealedLen <= 0 || sealedLen > maxSealedLen(blockSize) {
		return 0, nil, corruptf("chunk %s: sealed length %d out of range", want, sealedLen)
	}
	need := chunkHeaderSize + sealedLen
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	buf = buf[:need]
	n, err := f.ReadAt(buf, off)
	if n < need {
		if err == nil || errors.Is(err, io.EOF) {
			return 0, nil, corruptf("chunk %s: pack ends %d bytes into the record at offset %d", want, n, off)
		}
		return 0, nil, err
	}
	fp, codec, sealed, m, err := decodeChunkRecord(buf, blockSize)
	if err != nil {
		return 0, nil, fmt.Errorf("chunk %s at offset %d: %w", want, off, err)
	}
	if m != need {
		return 0, nil, corruptf("chunk %s: record at offset %d holds %d sealed bytes, want %d", want, off, m-chunkHeaderSize, sealedLen)
	}
	if fp != want {
		return 0, nil, corruptf("chunk %s: record at offset %d is chunk %s", want, off, fp)
	}
	return codec, sealed, nil
}

// scanPack reads a whole pack from its first byte: it checks the header
// (which must name blockSize) and then calls fn for each record with the
// record's file offset. sealed is only valid during the call. It stops at
// the first malformed or truncated record with an error wrapping ErrCorrupt
// that names the offset, so the records before it can still be used. An
// error from fn stops the scan and is returned as is; so are read errors.
func scanPack(r io.Reader, blockSize int, fn func(off int64, fp Fingerprint, codec uint8, sealed []byte) error) error {
	br := bufio.NewReaderSize(r, packScanBufSize)
	var h [packHeaderSize]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corruptf("pack header truncated")
		}
		return err
	}
	_, bs, err := decodePackHeader(h[:])
	if err != nil {
		return err
	}
	if bs != blockSize {
		return corruptf("pack header: block size %d, want %d", bs, blockSize)
	}
	limit := maxSealedLen(blockSize)
	rec := make([]byte, chunkHeaderSize+limit)
	off := int64(packHeaderSize)
	for {
		if _, err := io.ReadFull(br, rec[:chunkHeaderSize]); err != nil {
			if err == io.EOF {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return corruptf("pack record at offset %d: truncated header", off)
			}
			return err
		}
		// Check the length before reading the body so a garbage length
		// cannot run past rec.
		if p := sealedLenProblem(uint64(binary.LittleEndian.Uint32(rec[0:4])), rec[4], blockSize); p != "" {
			return corruptf("pack record at offset %d: %s", off, p)
		}
		body := rec[:chunkHeaderSize+int(binary.LittleEndian.Uint32(rec[0:4]))]
		if _, err := io.ReadFull(br, body[chunkHeaderSize:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return corruptf("pack record at offset %d: truncated", off)
			}
			return err
		}
		fp, codec, sealed, n, err := decodeChunkRecord(body, blockSize)
		if err != nil {
			return fmt.Errorf("pack record at offset %d: %w", off, err)
		}
		if err := fn(off, fp, codec, sealed); err != nil {
			return err
		}
		off += int64(n)
	}
}

// packWriter appends chunk records to one pack. It is not safe for
// concurrent use. Records become durable only when sync returns nil; until
// then their offsets must not be recorded anywhere durable (I2). When a
// write or sync fails, every record appended since the last successful sync
// is dropped (the file is truncated back), and the writer stays usable.
type packWriter struct {
	f         *os.File
	packID    uint64
	blockSize int
	buf       []byte // buf[lead:]: records not yet handed to the file
	written   int64  // file bytes written (not necessarily durable)
	// direct: f was opened with O_DIRECT, so every write is whole
	// packAlign blocks from an aligned buffer. buf then starts with the
	// lead bytes of the last, partial block that are already in the file
	// (file offsets written-lead .. written), to be written again with
	// what follows; the file may end in zeros past written, up to the
	// block's end, until close cuts them off. Without direct, lead is 0.
	direct    bool
	lead      int
	synced    int64 // file bytes known durable
	dirSynced bool  // the pack's directory entry is durable
	err       error // set when a rollback failed: the file tail is unknown
	closed    bool

	// writeAt is f.WriteAt; tests replace it to inject write failures.
	writeAt func(p []byte, off int64) (int, error)
}

// createPack creates a new pack file (failing if it exists) and queues its
// header; the header, like every record, is durable after the first sync.
func createPack(path string, id uint64, blockSize int) (*packWriter, error) {
	if !validBlockSize(blockSize) {
		return nil, fmt.Errorf("blockstore: create pack %s: invalid block size %d", path, blockSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, noSpace(err)
	}
	w := newPackWriter(f, id, blockSize)
	w.setDirect()
	w.queueHeader()
	return w, nil
}

// packDirect says whether pack writers use direct I/O; tests turn it off
// to compare the two ways.
var packDirect = true

// setDirect switches f to O_DIRECT when the filesystem allows it (tmpfs,
// for one, does not: the writer then stays buffered). Pack bytes are
// written once and read back rarely soon after, so copying them into the
// page cache only to write them out again cost CPU the write path needed:
// on the 2-vCPU benchmark machine the copy into new page-cache pages was
// the largest single cost of destage (docs/DESIGN.md, section 24).
func (w *packWriter) setDirect() {
	if !packDirect {
		return
	}
	w.direct = setODirect(w.f) == nil
}

// setODirect turns on O_DIRECT for f. Filesystems without direct I/O
// refuse (EINVAL) and f stays as it was.
func setODirect(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var fl int
		if fl, serr = unix.FcntlInt(fd, unix.F_GETFL, 0); serr == nil {
			_, serr = unix.FcntlInt(fd, unix.F_SETFL, fl|unix.O_DIRECT)
		}
	}); err != nil {
		return err
	}
	return serr
}

// alignedBuf returns n bytes at a packAlign-aligned address.
func alignedBuf(n int) []byte {
	raw := make([]byte, n+packAlign)
	a := int(-uintptr(unsafe.Pointer(unsafe.SliceData(raw))) & (packAlign - 1))
	return raw[a : a+n : a+n]
}

// loadLead reads the partial last block before written into buf, so a
// direct writer can append after it. REQUIRES: buf holds nothing else.
func (w *packWriter) loadLead() error {
	w.lead = 0
	w.buf = w.buf[:0]
	if !w.direct || w.written%packAlign == 0 {
		return nil
	}
	lead := int(w.written % packAlign)
	n, err := w.f.ReadAt(w.buf[:packAlign], w.written-int64(lead))
	if n < lead {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("blockstore: pack %d: reading the last %d bytes back: %w", w.packID, lead, err)
	}
	w.buf, w.lead = w.buf[:lead], lead
	return nil
}

// openPackAppend reopens an existing pack to append after its committed
// size (the durable size bbolt last recorded). Anything beyond it is an
// uncommitted tail left by a crash and is cut off; a file shorter than
// committed has lost data and is reported as corrupt.
func openPackAppend(path string, id uint64, blockSize int, committed int64) (*packWriter, error) {
	if !validBlockSize(blockSize) {
		return nil, fmt.Errorf("blockstore: open pack %s: invalid block size %d", path, blockSize)
	}
	if committed < packHeaderSize {
		return nil, fmt.Errorf("blockstore: open pack %s: committed size %d smaller than the header", path, committed)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	w := newPackWriter(f, id, blockSize)
	if err := w.reopen(path, committed); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

func newPackWriter(f *os.File, id uint64, blockSize int) *packWriter {
	// Room for the lead, a full buffer and the padding to a block, at an
	// aligned address.
	w := &packWriter{
		f:         f,
		packID:    id,
		blockSize: blockSize,
		buf:       alignedBuf(packBufSize + 2*packAlign)[:0],
	}
	w.writeAt = f.WriteAt
	return w
}

func (w *packWriter) reopen(path string, committed int64) error {
	gotID, gotBS, err := readPackHeader(w.f)
	if err != nil {
		return fmt.Errorf("pack %s: %w", path, err)
	}
	if gotID != w.packID || gotBS != w.blockSize {
		return corruptf("pack %s: header names pack %d with block size %d, want pack %d with %d", path, gotID, gotBS, w.packID, w.blockSize)
	}
	fi, err := w.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < committed {
		return corruptf("pack %s: %d bytes, shorter than the committed %d", path, fi.Size(), committed)
	}
	if fi.Size() > committed {
		if err := w.f.Truncate(committed); err != nil {
			return err
		}
		// Make the cut durable now: otherwise a crash could bring the
		// old tail back under records appended later.
		if err := w.datasync(); err != nil {
			return noSpace(err)
		}
	}
	w.written, w.synced, w.dirSynced = committed, committed, true
	w.setDirect() // after the buffered reads above
	return w.loadLead()
}

func (w *packWriter) queueHeader() {
	h := encodePackHeader(w.packID, w.blockSize)
	w.buf = append(w.buf[:0], h[:]...)
}

func (w *packWriter) id() uint64 { return w.packID }

// size is the pack's length including records not yet written out.
func (w *packWriter) size() int64 { return w.written + int64(len(w.buf)-w.lead) }

func (w *packWriter) usable() error {
	if w.closed {
		return ErrClosed
	}
	return w.err
}

// append queues a record and returns its offset in the file. The record is
// durable only after the next successful sync.
func (w *packWriter) append(fp Fingerprint, codec uint8, sealed []byte) (off int64, err error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	// Refusing here keeps scanPack and decodeChunkRecord from ever seeing
	// a record this code wrote as corrupt.
	if !validCodec(codec) {
		return 0, fmt.Errorf("blockstore: pack append: invalid codec %#02x", codec)
	}
	if p := sealedLenProblem(uint64(len(sealed)), codec, w.blockSize); p != "" {
		return 0, fmt.Errorf("blockstore: pack append: %s", p)
	}
	if len(w.buf)+chunkHeaderSize+len(sealed) > packBufSize+packAlign {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	off = w.size()
	w.buf = appendChunkHeader(w.buf, &fp, codec, len(sealed))
	w.buf = append(w.buf, sealed...)
	return off, nil
}

// flush hands the buffer to the file.
func (w *packWriter) flush() error {
	if len(w.buf) == w.lead {
		return nil
	}
	start, data := w.written-int64(w.lead), w.buf
	if w.direct {
		end := (len(data) + packAlign - 1) &^ (packAlign - 1)
		data = w.buf[:end]
		clear(data[len(w.buf):])
	}
	n, err := w.writeAt(data, start)
	if err == nil && n != len(data) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return w.fail(err)
	}
	w.written = start + int64(len(w.buf))
	if !w.direct {
		w.buf = w.buf[:0]
		return nil
	}
	// Keep the partial last block: the next write starts with it.
	lead := int(w.written % packAlign)
	copy(w.buf[:lead], w.buf[len(w.buf)-lead:])
	w.buf, w.lead = w.buf[:lead], lead
	return nil
}

// sync makes every appended record durable. On failure the records since
// the last successful sync are gone (see packWriter) and the error wraps
// ErrNoSpace when the disk is full.
func (w *packWriter) sync() error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if w.written == w.synced && w.dirSynced {
		return nil
	}
	if err := w.datasync(); err != nil {
		return w.fail(err)
	}
	if !w.dirSynced {
		// A new pack's name must survive a crash too, or bbolt would
		// point into a file that is not there.
		if err := w.syncDir(); err != nil {
			return w.fail(err)
		}
		w.dirSynced = true
	}
	w.synced = w.written
	return nil
}

// fail rolls back to the last synced size after a write or sync error
// and returns err (wrapped as ErrNoSpace when it is ENOSPC).
func (w *packWriter) fail(err error) error {
	if rerr := w.rollback(); rerr != nil {
		return noSpace(fmt.Errorf("blockstore: pack %d: %w (and truncating after it: %v)", w.packID, err, rerr))
	}
	return noSpace(fmt.Errorf("blockstore: pack %d: %w", w.packID, err))
}

// rollback drops everything after the last synced size, so a half-written
// record never stays in the file where a scan would take it for damage.
func (w *packWriter) rollback() error {
	w.buf, w.lead = w.buf[:0], 0
	if err := w.f.Truncate(w.synced); err != nil {
		w.err = fmt.Errorf("blockstore: pack %d: tail beyond %d bytes could not be dropped: %w", w.packID, w.synced, err)
		return err
	}
	w.written = w.synced
	if w.synced < packHeaderSize {
		// Nothing durable yet, not even the header: start over.
		w.synced, w.written = 0, 0
		w.queueHeader()
		return nil
	}
	if err := w.loadLead(); err != nil {
		w.err = err
		return err
	}
	return nil
}

// abort drops all records appended since the last successful sync.
func (w *packWriter) abort() error {
	if w.closed {
		return ErrClosed
	}
	if err := w.rollback(); err != nil {
		return fmt.Errorf("blockstore: pack %d: abort: %w", w.packID, err)
	}
	return nil
}

// close syncs any records still pending, then closes the file. Pending
// records are written rather than dropped so that a caller that appends
// and closes never loses data; a caller that wants them gone calls abort
// first.
func (w *packWriter) close() error {
	if w.closed {
		return ErrClosed
	}
	err := w.err
	if err == nil && (len(w.buf) > w.lead || w.written > w.synced) {
		err = w.sync()
	}
	if err == nil && w.direct && w.written%packAlign != 0 {
		// Cut the zeros the last direct write may have left after the
		// last record (every earlier write's were written over); the
		// size is not synced (a crash leaves at most a block of zeros
		// past the committed size, which is not part of the pack).
		err = w.f.Truncate(w.written)
	}
	w.closed = true
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *packWriter) datasync() error {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: w.f.Name(), Err: serr}
	}
	return nil
}

func (w *packWriter) syncDir() error {
	d, err := os.Open(filepath.Dir(w.f.Name()))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
