package blockstore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// LSN is a position in the NVLOG's global byte address space. A record's LSN
// is where its header starts; the LSN returned by append is just past it.
type LSN uint64

// NVLOG wire format. Changing any of these needs a new magic/version.
const (
	logSegMagic      = "DSTNVLG1"
	logSegVersion    = 1
	logSegHeaderSize = 64
	logRecHeaderSize = 16
	logRecAlign      = 8
	logMaxPayload    = 16 << 20
)

const (
	defaultLogSegmentSize = 64 << 20
	defaultLogFlushDelay  = 2 * time.Millisecond
	// Small segments are only useful to tests; below this the header and a
	// handful of records would not fit and every append would rotate.
	minLogSegmentSize = 1 << 10
	// Spares keep preallocated space for a full disk; more than a couple
	// would just hide space from the rest of the store.
	logMaxSpares = 2
	// logBudgetFiles is how many segment files (segments, the one prepared
	// next, spares) the space reserve plans for: a spare is kept only while
	// the log holds fewer files than this (see Store.reserve).
	logBudgetFiles = 4
	// A batch this large is written at once instead of waiting for the
	// flush delay: waiting would not make the write any cheaper.
	logFlushThreshold = 1 << 20
	// Bounds the memory the log buffers ahead of the disk. A single record
	// larger than this is still accepted into an empty buffer.
	logMaxBuffered = 8 << 20
	logScanWindow  = 1 << 20
)

var logCRCTable = crc32.MakeTable(crc32.Castagnoli)

// Test hooks: a full disk and a failing device cannot be produced on demand
// on a developer's machine, so tests replace these.
var (
	logFallocate = unix.Fallocate
	logFdatasync = func(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
)

var errLogShort = errors.New("nvlog: record extends past the available bytes")

// errLogInvariant marks a failure of the log's own bookkeeping (a bug), as
// opposed to one of the disk.
var errLogInvariant = errors.New("nvlog: invariant broken")

type logOptions struct {
	SegmentSize int64         // bytes per segment file, header included; 0 = 64 MiB
	FlushDelay  time.Duration // max delay before unstable data is written; 0 = 2ms
	// MaxFiles: a retired segment is kept as a spare only while the log
	// holds fewer files than this (segments, the prepared one, spares);
	// 0 = no bound but logMaxSpares. The store sets logBudgetFiles, the
	// files its space reserve plans for (Store.reserve).
	MaxFiles int
}

// logRecordSize is the padded on-disk size of a record with an n-byte payload.
func logRecordSize(n int) int {
	return (logRecHeaderSize + n + logRecAlign - 1) &^ (logRecAlign - 1)
}

// logRecordEnd is the LSN just past a record at lsn with an n-byte payload:
// what append returned for it, and so what a checkpoint covering it is.
func logRecordEnd(lsn LSN, n int) LSN { return lsn + LSN(logRecordSize(n)) }

// appendLogRecord appends the padded record for lsn whose payload is the
// concatenation of parts (n bytes in all) to dst.
func appendLogRecord(dst []byte, lsn LSN, n int, parts ...[]byte) []byte {
	off := len(dst)
	size := logRecordSize(n)
	dst = slices.Grow(dst, size)[:off+size]
	rec := dst[off:]
	binary.LittleEndian.PutUint32(rec[4:], uint32(n))
	binary.LittleEndian.PutUint64(rec[8:], uint64(lsn))
	p := logRecHeaderSize
	for _, part := range parts {
		p += copy(rec[p:], part)
	}
	// The buffers are reused, so the padding would otherwise carry old bytes.
	clear(rec[p:])
	binary.LittleEndian.PutUint32(rec[0:], crc32.Checksum(rec[4:p], logCRCTable))
	return dst
}

// decodeLogRecord decodes the record at the start of b. The payload aliases
// b. size is the padded size, which may exceed len(b) by the padding.
// errLogShort means b ends inside the record; a bad length or checksum is
// ErrCorrupt. The caller checks the LSN against the position it expects.
func decodeLogRecord(b []byte) (lsn LSN, payload []byte, size int, err error) {
	if len(b) < logRecHeaderSize {
		return 0, nil, 0, errLogShort
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if n > logMaxPayload {
		return 0, nil, 0, fmt.Errorf("%w: nvlog record length %d", ErrCorrupt, n)
	}
	end := logRecHeaderSize + int(n)
	if len(b) < end {
		return 0, nil, 0, errLogShort
	}
	if crc32.Checksum(b[4:end], logCRCTable) != binary.LittleEndian.Uint32(b) {
		return 0, nil, 0, fmt.Errorf("%w: nvlog record checksum", ErrCorrupt)
	}
	return LSN(binary.LittleEndian.Uint64(b[8:])), b[logRecHeaderSize:end:end], logRecordSize(int(n)), nil
}

func encodeLogSegHeader(seq uint64, start LSN) []byte {
	h := make([]byte, logSegHeaderSize)
	copy(h, logSegMagic)
	binary.LittleEndian.PutUint32(h[8:], logSegVersion)
	binary.LittleEndian.PutUint64(h[16:], seq)
	binary.LittleEndian.PutUint64(h[24:], uint64(start))
	binary.LittleEndian.PutUint32(h[60:], crc32.Checksum(h[:60], logCRCTable))
	return h
}

func decodeLogSegHeader(h []byte) (seq uint64, start LSN, err error) {
	if len(h) < logSegHeaderSize || string(h[:8]) != logSegMagic {
		return 0, 0, fmt.Errorf("%w: not an nvlog segment", ErrCorrupt)
	}
	if crc32.Checksum(h[:60], logCRCTable) != binary.LittleEndian.Uint32(h[60:]) {
		return 0, 0, fmt.Errorf("%w: nvlog segment header checksum", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != logSegVersion {
		return 0, 0, fmt.Errorf("%w: nvlog segment version %d", ErrCorrupt, v)
	}
	return binary.LittleEndian.Uint64(h[16:]), LSN(binary.LittleEndian.Uint64(h[24:])), nil
}

// scanLogSegment calls fn for each record of the segment in r (size bytes,
// header included, starting at LSN start) while the records' checksums and
// LSNs are continuous, and returns the LSN after the last one. Whatever
// follows is a torn write, stale bytes or the unused end of the segment: it is
// not an error. Errors are read errors and fn's. The payload passed to fn is
// only valid during the call.
func scanLogSegment(r io.ReaderAt, size int64, start LSN, fn func(LSN, []byte) error) (LSN, error) {
	var (
		buf    []byte
		bufOff int64 = logSegHeaderSize // file offset of buf[0]
		off    int64 = logSegHeaderSize // file offset of the next record
		lsn          = start
	)
	// fill makes buf hold the need bytes at off; false if the file ends first.
	fill := func(need int) (bool, error) {
		if off+int64(need) > size {
			return false, nil
		}
		kept := int(bufOff + int64(len(buf)) - off)
		if kept >= need {
			return true, nil
		}
		if kept < 0 {
			kept = 0 // off skipped padding beyond what was read
		}
		want := int(min(int64(max(need, logScanWindow)), size-off))
		if cap(buf) < want {
			nb := make([]byte, want)
			copy(nb, buf[len(buf)-kept:])
			buf = nb
		} else {
			copy(buf[:kept], buf[len(buf)-kept:])
			buf = buf[:want]
		}
		bufOff = off
		n, err := r.ReadAt(buf[kept:want], off+int64(kept))
		buf = buf[:kept+n]
		if n < want-kept && err != nil && err != io.EOF {
			return false, err
		}
		return kept+n >= need, nil
	}
	for {
		ok, err := fill(logRecHeaderSize)
		if err != nil || !ok {
			return lsn, err
		}
		h := buf[off-bufOff:]
		n := binary.LittleEndian.Uint32(h[4:])
		// Checked before reading the payload so that garbage claiming a huge
		// length costs nothing.
		if LSN(binary.LittleEndian.Uint64(h[8:])) != lsn || n > logMaxPayload {
			return lsn, nil
		}
		if ok, err = fill(logRecHeaderSize + int(n)); err != nil || !ok {
			return lsn, err
		}
		got, payload, sz, err := decodeLogRecord(buf[off-bufOff:])
		if err != nil || got != lsn {
			return lsn, nil
		}
		if err := fn(lsn, payload); err != nil {
			return lsn, err
		}
		off += int64(sz)
		lsn += LSN(sz)
	}
}

// neutralizeLogTail makes sure that no bytes after off in a segment starting
// at start can ever pass for a record: appends after replay overwrite the
// torn tail in place, and a record from the lost history that happens to sit
// exactly where a new record ends would otherwise carry the LSN replay
// expects there. Such a slot gets its LSN field inverted. It reports whether
// anything was written.
func neutralizeLogTail(f *os.File, start LSN, off, size int64) (bool, error) {
	dirty := false
	buf := make([]byte, logScanWindow)
	for w := off; w+logRecHeaderSize <= size; w += logScanWindow {
		b := buf[:min(logScanWindow, size-w)]
		if n, err := f.ReadAt(b, w); n < len(b) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return dirty, err
		}
		changed := false
		// p walks the LSN fields of every 8-aligned slot whose field lies in
		// this window; off is 8-aligned, so every field is in exactly one.
		for p := max(w, off+8); p+8 <= w+int64(len(b)); p += 8 {
			want := start + LSN(p-8-logSegHeaderSize)
			i := p - w
			if LSN(binary.LittleEndian.Uint64(b[i:])) == want {
				binary.LittleEndian.PutUint64(b[i:], ^uint64(want))
				changed = true
			}
		}
		if changed {
			if _, err := f.WriteAt(b, w); err != nil {
				return dirty, err
			}
			dirty = true
		}
	}
	return dirty, nil
}

type logSegment struct {
	seq   uint64
	start LSN
	size  int64 // capacity, header included, a multiple of 8
	alloc int64 // bytes counted in the log's disk use (diskMu)
	path  string
	f     *os.File // nil once the segment will not be written again
}

// limit is the LSN at which the segment is full.
func (s *logSegment) limit() LSN { return s.start + LSN(s.size-logSegHeaderSize) }

// logBatch is a run of encoded records, contiguous in LSN space, that the
// flusher writes and syncs as one. A cut starts a new segment inside it.
type logBatch struct {
	start LSN
	buf   []byte
	cuts  []logCut
	// done is closed once the batch is durable, or when the flusher stops
	// without making it so. Writers waiting for their records wait on the
	// channel of the batch that holds them: a flush wakes its own waiters,
	// not every waiter of the log (with one condition for all, the
	// waiters of the next batch woke for nothing: twice the wake-ups).
	done chan struct{}
}

type logCut struct {
	off int // offset in buf of the first record of seg
	seg *logSegment
}

type logSpare struct {
	id    uint64
	path  string
	alloc int64 // bytes counted in the log's disk use (diskMu)
}

// logFile is a segment file found by openLog; the header is decoded once so
// that replay can choose the chain without reopening everything.
type logFile struct {
	seq   uint64
	path  string
	size  int64
	start LSN
	ok    bool // header valid and naming this file's seq
}

// nvlog is the write-ahead log. Its directory holds:
//
//   - NNNN.log: segments. Replay follows the chain of consecutive seqs whose
//     headers name their own file and whose start LSNs continue exactly where
//     the previous segment's valid records end.
//   - NNNN.spare: recycled segments, kept preallocated for a full disk. Their
//     records all lie below an LSN the log has passed, so once reused under a
//     new start LSN none can match a position replay expects. They are only
//     made by truncate; a .log file that is not in the chain at open may hold
//     records of a lost history at LSNs the log will reach again, so it is
//     deleted rather than recycled.
//
// Lock order: fmu before mu, never the other way round.
type nvlog struct {
	dir  string
	opts logOptions

	syncs atomic.Int64 // fdatasyncs issued by the flusher
	wakes atomic.Int64 // times a waitDurable caller woke to look again

	// fmu serializes changes to the set of files (prepare, recycle), which
	// are slow enough that holding mu for them would stall appenders and the
	// flusher.
	fmu    sync.Mutex
	spares []logSpare

	// diskMu makes each change to the space the log's files take on disk
	// (a file preallocated, grown or deleted) one step with the change to
	// the counts below, and a segment's start and end of use likewise, so
	// that the store's space check, which holds it for reading while it
	// reads the file system's free space and the counts, never sees one
	// without the other. Innermost: taken inside fmu and mu, and nothing
	// is locked while it is held.
	diskMu    sync.RWMutex
	diskBytes int64  // bytes preallocated to the log's files
	diskFiles int    // the log's files: segments, the one prepared next, spares
	diskBusy  int    // of them, segments taking or holding records
	onDisk    func() // called, diskMu held, after the files' space changed

	mu          sync.Mutex
	cond        sync.Cond // durable moved, log failed or closed, buffer room, prepare done
	found       []logFile // from openLog, consumed by replay
	maxSeq      uint64    // highest seq or spare id seen at open
	replaying   bool
	replayed    bool
	closed      bool
	flusherDone bool
	err         error // sticky I/O failure
	headLSN     LSN
	durLSN      LSN
	flushing    *logBatch // the batch the flusher is writing, nil between flushes
	tailLSN     LSN
	syncWant    LSN // highest LSN a waiter is blocked on
	fill        *logBatch
	free        *logBatch // the other buffer, when the flusher is not using it
	fillSince   time.Time
	segs        []*logSegment // oldest first; the last one takes new records
	segEnd      LSN           // where the last segment is full; == headLSN when a new one is needed first
	appendSeq   uint64        // seq of the last segment
	flushSeq    uint64        // seq the flusher is writing; older segments are synced and done
	next        *logSegment   // prepared for appendSeq+1, start not yet known
	preparing   bool
	prepFailed  bool // skip background preparation until the next rotation
	wg          sync.WaitGroup
	kick        chan struct{}
	done        chan struct{}

	// Owned by the flusher goroutine.
	cur      *logSegment
	curDirty bool
}

func logSegPath(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.log", seq))
}

func logSparePath(dir string, id uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.spare", id))
}

// parseLogName returns the number in a segment or spare file name.
func parseLogName(name, ext string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, ext)
	if !ok || len(base) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(base, 16, 64)
	return n, err == nil
}

// openLog opens (creating if needed) the log in dir. Nothing is appended
// until replay has run.
func openLog(dir string, opts logOptions) (*nvlog, error) {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = defaultLogSegmentSize
	}
	// Segments grow to fit an oversized record anyway, so a tiny setting is
	// raised rather than refused.
	opts.SegmentSize = (max(opts.SegmentSize, minLogSegmentSize) + logRecAlign - 1) &^ (logRecAlign - 1)
	if opts.FlushDelay <= 0 {
		opts.FlushDelay = defaultLogFlushDelay
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("nvlog: %w", err)
		}
		// A log whose directory entry is lost in a crash is a lost log.
		if err := logSyncDir(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("nvlog: %w", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("nvlog: %w", err)
	}
	l := &nvlog{
		dir:  dir,
		opts: opts,
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
		fill: &logBatch{done: make(chan struct{})},
		free: &logBatch{},
	}
	l.cond.L = &l.mu
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if id, ok := parseLogName(e.Name(), ".spare"); ok {
			l.spares = append(l.spares, logSpare{id: id, path: path})
			l.maxSeq = max(l.maxSeq, id)
			continue
		}
		seq, ok := parseLogName(e.Name(), ".log")
		if !ok {
			continue
		}
		lf, err := readLogFile(path, seq)
		if err != nil {
			return nil, err
		}
		l.found = append(l.found, lf)
		l.maxSeq = max(l.maxSeq, seq)
	}
	slices.SortFunc(l.found, func(a, b logFile) int { return cmp.Compare(a.seq, b.seq) })
	slices.SortFunc(l.spares, func(a, b logSpare) int { return cmp.Compare(a.id, b.id) })
	return l, nil
}

func readLogFile(path string, seq uint64) (logFile, error) {
	lf := logFile{seq: seq, path: path}
	f, err := os.Open(path)
	if err != nil {
		return lf, fmt.Errorf("nvlog: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return lf, fmt.Errorf("nvlog: %w", err)
	}
	lf.size = fi.Size() &^ (logRecAlign - 1)
	h := make([]byte, logSegHeaderSize)
	if n, err := f.ReadAt(h, 0); n < len(h) {
		if err != nil && err != io.EOF {
			return lf, fmt.Errorf("nvlog: %w", err)
		}
		return lf, nil
	}
	hseq, start, err := decodeLogSegHeader(h)
	// A recycled file keeps its old header under a new name, so a header
	// only counts for the file it names.
	lf.ok = err == nil && hseq == seq
	lf.start = start
	return lf, nil
}

func logSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = logRetryEINTR(d.Sync)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func logRetryEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// replay calls fn for each valid record with LSN >= from, in order, and
// returns the LSN after the last valid record. It must be called once, before
// the first append. The payload passed to fn is only valid during the call.
//
// The chain starts at the segment whose start is the highest at or below
// from and continues through segments with consecutive seqs whose start is
// exactly where the previous one's valid records end. Everything after the
// chain's end is a torn tail or stale, and is discarded so that it can never
// be read as records later. If the chain ends before from (the caller's
// checkpoint is ahead of what the log kept), the log continues at from.
func (l *nvlog) replay(from LSN, fn func(lsn LSN, payload []byte) error) (LSN, error) {
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return 0, ErrClosed
	case l.replayed || l.replaying:
		l.mu.Unlock()
		return 0, errors.New("nvlog: replay called twice")
	}
	l.replaying = true
	found := l.found
	l.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			l.mu.Lock()
			l.replaying = false
			l.mu.Unlock()
		}
	}()

	var valid []logFile
	for _, f := range found {
		if f.ok {
			valid = append(valid, f)
		}
	}
	i0 := -1
	for i, f := range valid {
		if f.start <= from && (i0 < 0 || f.start >= valid[i0].start) {
			i0 = i
		}
	}
	if len(valid) > 0 && i0 < 0 {
		return 0, fmt.Errorf("%w: nvlog starts at %d, after replay point %d", ErrCorrupt, valid[0].start, from)
	}

	end := from
	sealed := false // the chain ended before from
	var chain []*logSegment
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if i0 >= 0 {
		pos := valid[i0].start
		for i := i0; i < len(valid); i++ {
			v := valid[i]
			if i > i0 && (v.seq != valid[i-1].seq+1 || v.start != pos) {
				break
			}
			f, err := os.OpenFile(v.path, os.O_RDWR, 0)
			if err != nil {
				closeAll()
				return 0, fmt.Errorf("nvlog: %w", err)
			}
			files = append(files, f)
			pos, err = scanLogSegment(f, v.size, v.start, func(lsn LSN, p []byte) error {
				if lsn < from {
					return nil
				}
				return fn(lsn, p)
			})
			if err != nil {
				closeAll()
				return 0, fmt.Errorf("nvlog: replay %s: %w", v.path, err)
			}
			chain = append(chain, &logSegment{seq: v.seq, start: v.start, size: v.size, alloc: v.size, path: v.path, f: f})
		}
		end = max(pos, from)
		sealed = pos < from
	}

	// Keep older segments for truncate; everything else named .log is past
	// the chain (or unreadable) and may hold records of a history that was
	// lost, so it goes rather than becoming a spare.
	var live []*logSegment
	keep := map[string]bool{}
	for _, v := range valid {
		if i0 >= 0 && v.seq < valid[i0].seq && v.start <= valid[i0].start {
			live = append(live, &logSegment{seq: v.seq, start: v.start, size: v.size, alloc: v.size, path: v.path})
			keep[v.path] = true
		}
	}
	for _, s := range chain {
		live = append(live, s)
		keep[s.path] = true
	}
	var cur *logSegment
	if len(chain) > 0 && !sealed {
		cur = chain[len(chain)-1]
	}
	for _, s := range chain {
		if s != cur {
			s.f.Close()
			s.f = nil
		}
	}

	appendSeq := l.maxSeq
	if len(chain) > 0 {
		appendSeq = chain[len(chain)-1].seq
	}
	changedDir := false
	for _, f := range found {
		if keep[f.path] {
			continue
		}
		if err := os.Remove(f.path); err != nil {
			l.closeSegs(live)
			return 0, fmt.Errorf("nvlog: discard %s: %w", f.path, err)
		}
		changedDir = true
	}
	l.fmu.Lock()
	var spares []logSpare
	for _, sp := range l.spares {
		// A spare numbered after appendSeq could later share a number with
		// a new segment; more than logMaxSpares is just wasted space.
		if sp.id > appendSeq || len(spares) == logMaxSpares {
			if err := os.Remove(sp.path); err != nil {
				l.fmu.Unlock()
				l.closeSegs(live)
				return 0, fmt.Errorf("nvlog: discard %s: %w", sp.path, err)
			}
			changedDir = true
			continue
		}
		if fi, err := os.Stat(sp.path); err == nil {
			sp.alloc = fi.Size()
		}
		spares = append(spares, sp)
	}
	l.spares = spares
	l.fmu.Unlock()

	if cur != nil {
		off := logSegHeaderSize + int64(end-cur.start)
		if _, err := neutralizeLogTail(cur.f, cur.start, off, cur.size); err != nil {
			l.closeSegs(live)
			return 0, fmt.Errorf("nvlog: %s: %w", cur.path, err)
		}
		// What replay returned may so far only be in the page cache of a
		// process that crashed; the caller is about to act on it.
		if err := logRetryEINTR(func() error { return logFdatasync(cur.f) }); err != nil {
			l.closeSegs(live)
			return 0, noSpace(fmt.Errorf("nvlog: sync %s: %w", cur.path, err))
		}
	}
	if changedDir {
		if err := logSyncDir(l.dir); err != nil {
			l.closeSegs(live)
			return 0, fmt.Errorf("nvlog: %w", err)
		}
	}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.closeSegs(live)
		return 0, ErrClosed
	}
	defer l.mu.Unlock()
	l.found = nil
	l.segs = live
	l.account(func() {
		l.diskBytes, l.diskFiles, l.diskBusy = 0, len(live)+len(spares), len(live)
		for _, s := range live {
			l.diskBytes += s.alloc
		}
		for _, sp := range spares {
			l.diskBytes += sp.alloc
		}
	})
	l.headLSN, l.durLSN, l.tailLSN = end, end, from
	l.fill.start = end
	l.appendSeq = appendSeq
	l.flushSeq = appendSeq
	l.segEnd = end // a new segment first, unless appending into cur
	if cur != nil {
		l.segEnd = cur.limit()
		l.cur = cur
	}
	l.replayed, l.replaying = true, false
	ok = true
	go l.flusher()
	l.maybePrepareLocked()
	return end, nil
}

func (l *nvlog) closeSegs(segs []*logSegment) {
	for _, s := range segs {
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
	}
}

func (l *nvlog) kickFlusher() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *nvlog) writableLocked() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.err != nil:
		return l.err
	case !l.replayed:
		return errors.New("nvlog: append before replay")
	}
	return nil
}

// append copies payload into the log and returns the LSN just past its
// record, which is what waitDurable needs. It does not wait for the disk,
// except when a new segment has to be created or too much is buffered.
func (l *nvlog) append(payload []byte) (LSN, error) {
	return l.appendv(payload)
}

// appendv is append of the concatenation of parts.
func (l *nvlog) appendv(parts ...[]byte) (LSN, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > logMaxPayload {
		return 0, fmt.Errorf("nvlog: record payload of %d bytes exceeds %d", n, logMaxPayload)
	}
	size := logRecordSize(n)
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if err := l.writableLocked(); err != nil {
			return 0, err
		}
		if len(l.fill.buf) > 0 && len(l.fill.buf)+size > logMaxBuffered {
			l.kickFlusher()
			l.cond.Wait()
			continue
		}
		if l.headLSN+LSN(size) > l.segEnd {
			// May drop mu; everything is re-checked afterwards.
			if err := l.rotateLocked(size); err != nil {
				return 0, err
			}
			continue
		}
		break
	}
	before := len(l.fill.buf)
	l.fill.buf = appendLogRecord(l.fill.buf, l.headLSN, n, parts...)
	l.headLSN += LSN(size)
	switch {
	case before == 0:
		l.fillSince = time.Now()
		l.kickFlusher()
	case before < logFlushThreshold && len(l.fill.buf) >= logFlushThreshold:
		l.kickFlusher()
	}
	l.maybePrepareLocked()
	return l.headLSN, nil
}

// rotateLocked starts a new segment at headLSN for a record of size bytes.
// When no prepared segment is ready it prepares one itself, with mu
// released; then it returns without rotating and the caller re-checks. A
// failure leaves the log as it was, so the append that needed the segment
// fails and nothing of it is in the log.
func (l *nvlog) rotateLocked(size int) error {
	need := int64(logSegHeaderSize + size)
	if l.preparing {
		l.cond.Wait()
		return nil
	}
	if l.next == nil || l.next.size < need {
		l.preparing = true
		l.wg.Add(1)
		seg := l.next
		l.next = nil
		seq := l.appendSeq + 1
		l.mu.Unlock()
		var err error
		if seg != nil {
			err = l.growSegment(seg, need)
		} else {
			seg, err = l.prepareSegment(seq, max(l.opts.SegmentSize, need))
		}
		l.mu.Lock()
		l.preparing = false
		if seg != nil {
			l.next = seg
		}
		l.cond.Broadcast()
		l.wg.Done()
		return err
	}
	seg := l.next
	l.next = nil
	seg.start = l.headLSN
	l.segs = append(l.segs, seg)
	l.account(func() { l.diskBusy++ })
	l.appendSeq = seg.seq
	l.segEnd = seg.limit()
	l.prepFailed = false
	l.fill.cuts = append(l.fill.cuts, logCut{off: len(l.fill.buf), seg: seg})
	return nil
}

// maybePrepareLocked prepares the next segment in the background once the
// current one is half full, so that rotation rarely waits for a file to be
// created and preallocated.
func (l *nvlog) maybePrepareLocked() {
	if l.next != nil || l.preparing || l.prepFailed || l.closed || l.err != nil {
		return
	}
	if l.segEnd-l.headLSN >= LSN(l.opts.SegmentSize/2) {
		return
	}
	l.preparing = true
	l.wg.Add(1)
	seq := l.appendSeq + 1
	go func() {
		defer l.wg.Done()
		seg, err := l.prepareSegment(seq, l.opts.SegmentSize)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.preparing = false
		if err != nil {
			// The append that needs the segment will try again and report
			// the error; retrying here on every append would only spin.
			l.prepFailed = true
		} else {
			l.next = seg
		}
		l.cond.Broadcast()
	}()
}

// prepareSegment makes the file for segment seq, preallocated to at least
// want bytes, from a spare if there is one. The header is written by the
// flusher when the segment starts; until then the file's header is invalid
// (zeros, or a spare's old header naming another seq), so a crash leaves
// nothing that replay would follow.
func (l *nvlog) prepareSegment(seq uint64, want int64) (*logSegment, error) {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	path := logSegPath(l.dir, seq)
	var f *os.File
	var err error
	var spare *logSpare
	// counted: the file is in the log's disk use (a spare already is; a
	// new file once preallocated), with alloc bytes.
	counted, alloc := false, int64(0)
	if n := len(l.spares); n > 0 {
		sp := l.spares[n-1]
		if err := os.Rename(sp.path, path); err != nil {
			return nil, fmt.Errorf("nvlog: %w", err)
		}
		l.spares = l.spares[:n-1]
		spare = &sp
		counted, alloc = true, sp.alloc
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	} else {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	}
	// undo puts things back as they were, best effort: a leftover .log with
	// an invalid header is removed by the next replay anyway.
	undo := func() {
		if f != nil {
			f.Close()
		}
		if spare != nil && os.Rename(path, spare.path) == nil {
			spare.alloc = alloc
			l.spares = append(l.spares, *spare)
			return
		}
		l.account(func() {
			if err := os.Remove(path); (err == nil || errors.Is(err, fs.ErrNotExist)) && counted {
				l.diskBytes -= alloc
				l.diskFiles--
			}
		})
	}
	if err != nil {
		f = nil
		if spare != nil {
			undo()
		} // else nothing was made: a file already there is not ours to remove
		return nil, fmt.Errorf("nvlog: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		undo()
		return nil, fmt.Errorf("nvlog: %w", err)
	}
	size := fi.Size()
	if size < want {
		// The allocation and its count are one step for the space check.
		l.account(func() {
			err = logRetryEINTR(func() error { return logFallocate(int(f.Fd()), 0, 0, want) })
			if err == nil {
				l.diskBytes += want - alloc
				alloc = want
				if !counted {
					counted = true
					l.diskFiles++
				}
			}
		})
		if err != nil {
			undo()
			return nil, noSpace(fmt.Errorf("nvlog: preallocate %s: %w", path, err))
		}
		size = want
	}
	if err := logSyncDir(l.dir); err != nil {
		undo()
		return nil, noSpace(fmt.Errorf("nvlog: %w", err))
	}
	return &logSegment{seq: seq, path: path, f: f, size: size &^ (logRecAlign - 1), alloc: alloc}, nil
}

// growSegment extends a prepared segment for a record larger than it holds.
func (l *nvlog) growSegment(s *logSegment, want int64) error {
	var err error
	l.account(func() {
		err = logRetryEINTR(func() error { return logFallocate(int(s.f.Fd()), 0, 0, want) })
		if err == nil && want > s.alloc {
			l.diskBytes += want - s.alloc
			s.alloc = want
		}
	})
	if err != nil {
		return noSpace(fmt.Errorf("nvlog: preallocate %s: %w", s.path, err))
	}
	s.size = want &^ (logRecAlign - 1)
	return nil
}

// waitDurable returns when everything below end is durable. Concurrent
// waiters share the flusher's fdatasyncs.
func (l *nvlog) waitDurable(end LSN) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	end = min(end, l.headLSN)
	for l.durLSN < end {
		if l.err != nil {
			return l.err
		}
		if l.flusherDone {
			return ErrClosed
		}
		// end lies in the batch being flushed or else in the filling one
		// (durLSN <= flushing.start, fill.start <= end <= headLSN).
		var done chan struct{}
		if f := l.flushing; f != nil && end <= f.start+LSN(len(f.buf)) {
			done = f.done
		} else {
			if end > l.syncWant {
				l.syncWant = end
				l.kickFlusher()
			}
			done = l.fill.done
		}
		l.mu.Unlock()
		<-done
		l.wakes.Add(1)
		l.mu.Lock()
	}
	return nil
}

// sync makes everything appended so far durable.
func (l *nvlog) sync() error {
	l.mu.Lock()
	end := l.headLSN
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return l.waitDurable(end)
}

func (l *nvlog) durable() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durLSN
}

func (l *nvlog) head() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.headLSN
}

func (l *nvlog) tail() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tailLSN
}

// inUse returns the segments and whether one is prepared next.
func (l *nvlog) inUse() (segs int, next bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.segs), l.next != nil
}

// account runs fn, which changes the log's files on disk and their counts,
// as one step for diskUse, then tells onDisk.
func (l *nvlog) account(fn func()) {
	l.diskMu.Lock()
	defer l.diskMu.Unlock()
	fn()
	if l.onDisk != nil {
		l.onDisk()
	}
}

// diskUse returns the bytes preallocated to the log's files, how many files
// it holds (its segments, the one prepared next, its spares) and how many
// of them are ready to take records without allocating (the prepared one
// and the spares). REQUIRES: diskMu held, for reading at least, across
// this call and whatever it is compared with (the file system's free space).
func (l *nvlog) diskUse() (bytes int64, files, ready int) {
	return l.diskBytes, l.diskFiles, l.diskFiles - l.diskBusy
}

// spareCount returns how many spares the log keeps.
func (l *nvlog) spareCount() int {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	return len(l.spares)
}

// size is the bytes of log between tail and head.
func (l *nvlog) size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(l.headLSN - l.tailLSN)
}

// truncate declares the records below before unneeded. Segments wholly
// below it that the flusher is done with are recycled as spares or deleted;
// one the flusher is still on goes at a later call.
func (l *nvlog) truncate(before LSN) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if !l.replayed {
		l.mu.Unlock()
		return errors.New("nvlog: truncate before replay")
	}
	before = min(before, l.headLSN)
	l.tailLSN = max(l.tailLSN, before)
	n := 0
	for n+1 < len(l.segs) && l.segs[n].seq < l.flushSeq && l.segs[n+1].start <= l.tailLSN {
		n++
	}
	if n == 0 {
		l.mu.Unlock()
		return nil
	}
	victims := slices.Clone(l.segs[:n])
	l.segs = slices.Delete(l.segs, 0, n)
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	return l.recycle(victims)
}

// recycle turns old segments into spares, or deletes them when there are
// enough spares. A spare's records all lie below the durable end, so once
// reused under a new name and start LSN none of them can match a position
// replay expects. No directory sync: if a rename or unlink is lost in a
// crash, the old segment is back below the chain and is recycled again.
func (l *nvlog) recycle(victims []*logSegment) error {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	segs, next := l.inUse()
	busy := segs
	if next {
		busy++
	}
	var first error
	for _, s := range victims {
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
		// A file that cannot be renamed or deleted stays counted as
		// busy: it still takes its space, and cannot be reused.
		var err error
		if len(l.spares) < logMaxSpares && (l.opts.MaxFiles <= 0 || busy+len(l.spares) < l.opts.MaxFiles) &&
			!slices.ContainsFunc(l.spares, func(sp logSpare) bool { return sp.id == s.seq }) {
			sp := logSpare{id: s.seq, path: logSparePath(l.dir, s.seq), alloc: s.alloc}
			if err = os.Rename(s.path, sp.path); err == nil {
				l.spares = append(l.spares, sp)
				l.account(func() { l.diskBusy-- })
			}
		} else {
			l.account(func() {
				err = os.Remove(s.path)
				if err == nil || errors.Is(err, fs.ErrNotExist) {
					err = nil
					l.diskBytes -= s.alloc
					l.diskFiles--
					l.diskBusy--
				}
			})
		}
		if err != nil && first == nil {
			first = fmt.Errorf("nvlog: recycle: %w", err)
		}
	}
	return first
}

// close flushes and syncs everything appended, stops the flusher and
// closes the files. Later calls return nil; other operations ErrClosed.
func (l *nvlog) close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	started := l.replayed
	l.cond.Broadcast()
	l.mu.Unlock()
	l.kickFlusher()
	if started {
		<-l.done
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeSegs(l.segs)
	if l.next != nil {
		// Left on disk with an invalid header: the next replay discards it.
		l.next.f.Close()
		l.next = nil
	}
	return l.err
}

// flusher owns the segment writes: it takes the filling batch, writes and
// fdatasyncs it while appenders fill the other buffer, then wakes waiters.
func (l *nvlog) flusher() {
	defer close(l.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		b := l.nextBatchLocked(timer)
		if b == nil {
			break
		}
		l.mu.Unlock()
		err := l.writeBatch(b)
		l.mu.Lock()
		if err != nil {
			l.err = noSpace(err)
			break
		}
		l.durLSN = b.start + LSN(len(b.buf))
		if l.cur != nil {
			l.flushSeq = l.cur.seq
		}
		// Waiters for durability wait on b.done; appenders waiting for
		// buffer room wake when nextBatchLocked swaps the filling batch.
		close(b.done)
		l.flushing = nil
		l.free = b
	}
	l.flusherDone = true
	// Waiters of batches that will never be flushed learn it from l.err
	// or flusherDone.
	if l.flushing != nil {
		close(l.flushing.done)
		l.flushing = nil
	}
	close(l.fill.done)
	l.cond.Broadcast()
}

// nextBatchLocked waits until the filling batch is due (a waiter needs it,
// it is large, the flush delay has passed or the log is closing) and swaps
// in the free buffer. nil means the flusher is done.
func (l *nvlog) nextBatchLocked(timer *time.Timer) *logBatch {
	for {
		if l.err != nil {
			return nil
		}
		b := l.fill
		if len(b.buf) == 0 {
			if l.closed {
				return nil
			}
			l.mu.Unlock()
			<-l.kick
			l.mu.Lock()
			continue
		}
		due := l.closed || l.syncWant > b.start || len(b.buf) >= logFlushThreshold
		if wait := l.opts.FlushDelay - time.Since(l.fillSince); !due && wait > 0 {
			timer.Reset(wait)
			l.mu.Unlock()
			select {
			case <-l.kick:
			case <-timer.C:
			}
			timer.Stop()
			l.mu.Lock()
			continue
		}
		nb := l.free
		l.free = nil
		nb.start = b.start + LSN(len(b.buf))
		nb.buf = nb.buf[:0]
		if cap(nb.buf) > 2*logMaxBuffered {
			// Only a huge record gets a buffer this big; do not keep it.
			nb.buf = nil
		}
		clear(nb.cuts)
		nb.cuts = nb.cuts[:0]
		nb.done = make(chan struct{})
		l.fill = nb
		l.flushing = b
		l.cond.Broadcast() // appenders waiting for buffer room
		return b
	}
}

// writeBatch writes b and makes it durable. Before a batch moves on to a new
// segment the old one is synced, so a segment whose header is on disk always
// follows a complete predecessor. The batch is written and synced from a
// thread marked as an I/O flusher for the while (ioFlusherSpan).
func (l *nvlog) writeBatch(b *logBatch) error {
	defer ioFlusherSpan()()
	pos := 0
	for _, c := range b.cuts {
		if err := l.writeCur(b, pos, c.off); err != nil {
			return err
		}
		if l.curDirty {
			if err := l.syncCur(); err != nil {
				return err
			}
		}
		if _, err := c.seg.f.WriteAt(encodeLogSegHeader(c.seg.seq, c.seg.start), 0); err != nil {
			return fmt.Errorf("nvlog: write %s: %w", c.seg.path, err)
		}
		l.cur, l.curDirty = c.seg, true
		pos = c.off
	}
	if err := l.writeCur(b, pos, len(b.buf)); err != nil {
		return err
	}
	if l.curDirty {
		return l.syncCur()
	}
	return nil
}

func (l *nvlog) writeCur(b *logBatch, from, to int) error {
	if from == to {
		return nil
	}
	s := l.cur
	lsn := b.start + LSN(from)
	if lsn < s.start || lsn > s.limit() || LSN(to-from) > s.limit()-lsn {
		// A broken invariant of the append path. It fails the log, as an
		// I/O error would: writes get the error and nothing is written
		// out of place; the process, and whatever else it serves, goes on.
		return fmt.Errorf("nvlog: internal error: batch [%d,%d) lies outside segment %d [%d,%d): %w",
			lsn, lsn+LSN(to-from), s.seq, s.start, s.limit(), errLogInvariant)
	}
	if _, err := s.f.WriteAt(b.buf[from:to], logSegHeaderSize+int64(lsn-s.start)); err != nil {
		return fmt.Errorf("nvlog: write %s: %w", s.path, err)
	}
	l.curDirty = true
	return nil
}

func (l *nvlog) syncCur() error {
	l.syncs.Add(1)
	if err := logRetryEINTR(func() error { return logFdatasync(l.cur.f) }); err != nil {
		return fmt.Errorf("nvlog: sync %s: %w", l.cur.path, err)
	}
	l.curDirty = false
	return nil
}
