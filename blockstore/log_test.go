package blockstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type testLogRec struct {
	lsn     LSN
	payload []byte
}

func openTestLog(t testing.TB, dir string, opts logOptions) *nvlog {
	t.Helper()
	l, err := openLog(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.close() })
	return l
}

// replayAll opens the log in dir, replays it from `from` and leaves it open.
func replayAll(t testing.TB, dir string, opts logOptions, from LSN) (*nvlog, []testLogRec, LSN) {
	t.Helper()
	l := openTestLog(t, dir, opts)
	var recs []testLogRec
	end, err := l.replay(from, func(lsn LSN, p []byte) error {
		recs = append(recs, testLogRec{lsn, bytes.Clone(p)})
		return nil
	})
	if err != nil {
		t.Fatalf("replay from %d: %v", from, err)
	}
	return l, recs, end
}

func testPayload(i int) []byte {
	n := (i * 53) % 700
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(i*7 + j)
	}
	return p
}

// appendN appends payloads first..first+n-1 and returns the ends.
func appendN(t testing.TB, l *nvlog, first, n int) []LSN {
	t.Helper()
	var ends []LSN
	for i := first; i < first+n; i++ {
		p := testPayload(i)
		var end LSN
		var err error
		if i%3 == 0 && len(p) > 2 {
			end, err = l.appendv(p[:1], nil, p[1:len(p)/2], p[len(p)/2:])
		} else {
			end, err = l.append(p)
		}
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		ends = append(ends, end)
	}
	return ends
}

// checkRecs checks that recs are payloads first.. with the LSNs given by ends
// (record i starts where record i-1 ended).
func checkRecs(t testing.TB, recs []testLogRec, first int, starts []LSN) {
	t.Helper()
	if len(recs) != len(starts) {
		t.Fatalf("replayed %d records, want %d", len(recs), len(starts))
	}
	for k, r := range recs {
		if r.lsn != starts[k] {
			t.Fatalf("record %d at LSN %d, want %d", k, r.lsn, starts[k])
		}
		if want := testPayload(first + k); !bytes.Equal(r.payload, want) {
			t.Fatalf("record %d: payload differs (%d bytes, want %d)", k, len(r.payload), len(want))
		}
	}
}

// readLog replays the log in dir from `from` and closes it.
func readLog(t testing.TB, dir string, opts logOptions, from LSN) ([]testLogRec, LSN) {
	t.Helper()
	l, recs, end := replayAll(t, dir, opts, from)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	return recs, end
}

// startsOf turns record ends into record starts, given where the first starts.
func startsOf(first LSN, ends []LSN) []LSN {
	s := make([]LSN, len(ends))
	for i := range ends {
		s[i] = first
		first = ends[i]
	}
	return s
}

type testSegFile struct {
	name  string
	seq   uint64
	start LSN
	size  int64
}

func listSegs(t testing.TB, dir string) (segs []testSegFile, spares []string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".spare") {
			spares = append(spares, e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// A prepared segment that was never started (or a spare renamed
		// for it) has a header that does not name it; replay discards it.
		seq, start, err := decodeLogSegHeader(b)
		if err != nil || e.Name() != fmt.Sprintf("%016x.log", seq) {
			continue
		}
		segs = append(segs, testSegFile{e.Name(), seq, start, int64(len(b))})
	}
	return segs, spares
}

// locate returns the segment file and offset holding LSN lsn.
func locate(t testing.TB, dir string, lsn LSN) (string, int64) {
	t.Helper()
	segs, _ := listSegs(t, dir)
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i].start <= lsn {
			return filepath.Join(dir, segs[i].name), logSegHeaderSize + int64(lsn-segs[i].start)
		}
	}
	t.Fatalf("no segment holds LSN %d", lsn)
	return "", 0
}

func patchFile(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestLogRoundTripRotations(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nvlog")
	opts := logOptions{SegmentSize: 4096}
	l := openTestLog(t, dir, opts)
	if end, err := l.replay(0, func(LSN, []byte) error { t.Fatal("record in a new log"); return nil }); err != nil || end != 0 {
		t.Fatalf("replay of a new log = %d, %v", end, err)
	}
	ends := appendN(t, l, 0, 400)
	for i := 1; i < len(ends); i++ {
		if want := logRecordEnd(ends[i-1], len(testPayload(i))); ends[i] != want {
			t.Fatalf("record %d ends at %d, want %d", i, ends[i], want)
		}
	}
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
	if l.durable() != ends[len(ends)-1] || l.head() != ends[len(ends)-1] {
		t.Fatalf("durable %d head %d, want %d", l.durable(), l.head(), ends[len(ends)-1])
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}

	segs, _ := listSegs(t, dir)
	if len(segs) < 10 {
		t.Fatalf("%d segments, want many rotations", len(segs))
	}
	for i, s := range segs {
		if s.size < opts.SegmentSize {
			t.Errorf("%s: %d bytes, not preallocated to %d", s.name, s.size, opts.SegmentSize)
		}
		if i > 0 && (s.seq != segs[i-1].seq+1 || s.start <= segs[i-1].start) {
			t.Errorf("%s follows %s: seq %d start %d after seq %d start %d", s.name, segs[i-1].name, s.seq, s.start, segs[i-1].seq, segs[i-1].start)
		}
	}

	l, recs, end := replayAll(t, dir, opts, 0)
	if end != ends[len(ends)-1] {
		t.Fatalf("replay end %d, want %d", end, ends[len(ends)-1])
	}
	checkRecs(t, recs, 0, startsOf(0, ends))
	more := appendN(t, l, 400, 100)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	ends = append(ends, more...)

	recs, end = readLog(t, dir, opts, 0)
	if end != ends[len(ends)-1] {
		t.Fatalf("second replay end %d, want %d", end, ends[len(ends)-1])
	}
	checkRecs(t, recs, 0, startsOf(0, ends))

	// From the middle: only the records at or after from.
	recs, _ = readLog(t, dir, opts, ends[249])
	checkRecs(t, recs, 250, startsOf(ends[249], ends[250:]))
}

func TestLogTornTail(t *testing.T) {
	opts := logOptions{SegmentSize: 8192}
	cases := []struct {
		name string
		// damage breaks the log written as ends (record i ends at ends[i])
		// and returns how many records survive.
		damage func(t *testing.T, dir string, ends []LSN) int
	}{
		{"truncated file", func(t *testing.T, dir string, ends []LSN) int {
			n := len(ends)
			path, off := locate(t, dir, ends[n-2])
			if err := os.Truncate(path, off+10); err != nil {
				t.Fatal(err)
			}
			return n - 1
		}},
		{"flipped payload byte", func(t *testing.T, dir string, ends []LSN) int {
			n := len(ends)
			path, off := locate(t, dir, ends[n-2])
			b := make([]byte, 1)
			f, _ := os.Open(path)
			f.ReadAt(b, off+logRecHeaderSize+1)
			f.Close()
			patchFile(t, path, off+logRecHeaderSize+1, []byte{b[0] ^ 0x40})
			return n - 1
		}},
		{"torn record mid-log", func(t *testing.T, dir string, ends []LSN) int {
			// Damage well before the end, in an earlier segment: replay
			// stops there and everything after is dropped.
			path, off := locate(t, dir, ends[19])
			patchFile(t, path, off, []byte{0xde, 0xad})
			return 20
		}},
		{"garbage after the end", func(t *testing.T, dir string, ends []LSN) int {
			path, off := locate(t, dir, ends[len(ends)-1])
			fi, _ := os.Stat(path)
			g := make([]byte, fi.Size()-off)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range g {
				g[i] = byte(r.Uint32())
			}
			patchFile(t, path, off, g)
			return len(ends)
		}},
		{"stale segments after the end", func(t *testing.T, dir string, ends []LSN) int {
			segs, _ := listSegs(t, dir)
			last := segs[len(segs)-1]
			old, err := os.ReadFile(filepath.Join(dir, segs[0].name))
			if err != nil {
				t.Fatal(err)
			}
			// A recycled file under the next name keeps its old header.
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x.log", last.seq+1)), old, 0o644)
			// A segment with a valid header for the seq after that but a
			// start that does not continue the chain.
			bad := bytes.Clone(old)
			copy(bad, encodeLogSegHeader(last.seq+2, ends[len(ends)-1]+8))
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x.log", last.seq+2)), bad, 0o644)
			return len(ends)
		}},
		{"recycled segment continues the chain", func(t *testing.T, dir string, ends []LSN) int {
			// A header that does continue the chain over a body of old
			// records: none of them has the LSN replay expects.
			segs, _ := listSegs(t, dir)
			last := segs[len(segs)-1]
			old, err := os.ReadFile(filepath.Join(dir, segs[1].name))
			if err != nil {
				t.Fatal(err)
			}
			copy(old, encodeLogSegHeader(last.seq+1, ends[len(ends)-1]))
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x.log", last.seq+1)), old, 0o644)
			return len(ends)
		}},
		{"prepared segment left over", func(t *testing.T, dir string, ends []LSN) int {
			segs, _ := listSegs(t, dir)
			last := segs[len(segs)-1]
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x.log", last.seq+1)), make([]byte, 8192), 0o644)
			return len(ends)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _, _ := replayAll(t, dir, opts, 0)
			ends := appendN(t, l, 0, 60)
			if err := l.close(); err != nil {
				t.Fatal(err)
			}
			keep := tc.damage(t, dir, ends)
			ends = ends[:keep]
			want := ends[keep-1]

			l, recs, end := replayAll(t, dir, opts, 0)
			if end != want {
				t.Fatalf("replay end %d, want %d", end, want)
			}
			checkRecs(t, recs, 0, startsOf(0, ends))
			more := appendN(t, l, 1000, 40)
			if more[0] != want+LSN(logRecordSize(len(testPayload(1000)))) {
				t.Fatalf("append after replay ends at %d, want right after %d", more[0], want)
			}
			if err := l.close(); err != nil {
				t.Fatal(err)
			}

			recs, end = readLog(t, dir, opts, 0)
			if end != more[len(more)-1] {
				t.Fatalf("second replay end %d, want %d", end, more[len(more)-1])
			}
			checkRecs(t, recs[:keep], 0, startsOf(0, ends))
			checkRecs(t, recs[keep:], 1000, startsOf(want, more))
		})
	}
}

// A torn record is overwritten in place. Records of the lost history that
// sit after it still have exactly the LSNs the new history gives its records
// when those are the same size; they must not come back when the new
// history stops right before one of them.
func TestLogTornTailNoResurrection(t *testing.T) {
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 1 << 20}
	p := bytes.Repeat([]byte{'a'}, 100)
	l, _, _ := replayAll(t, dir, opts, 0)
	var ends []LSN
	for range 20 {
		end, err := l.append(p)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, end)
	}
	l.close()
	path, off := locate(t, dir, ends[9])
	patchFile(t, path, off+logRecHeaderSize, []byte("torn"))

	l, recs, end := replayAll(t, dir, opts, 0)
	if len(recs) != 10 || end != ends[9] {
		t.Fatalf("replayed %d records to %d, want 10 to %d", len(recs), end, ends[9])
	}
	q := bytes.Repeat([]byte{'b'}, 100)
	for i := range 3 {
		end, err := l.append(q)
		if err != nil {
			t.Fatal(err)
		}
		if end != ends[10+i] {
			t.Fatalf("new record ends at %d, want the old slot's %d", end, ends[10+i])
		}
	}
	l.close()

	recs, end = readLog(t, dir, opts, 0)
	if len(recs) != 13 || end != ends[12] {
		t.Fatalf("replayed %d records to %d, want 13 to %d: lost history came back", len(recs), end, ends[12])
	}
	for i, r := range recs[10:] {
		if !bytes.Equal(r.payload, q) {
			t.Fatalf("record %d is not from the new history", 10+i)
		}
	}
}

func TestLogTruncateRecycle(t *testing.T) {
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 4096}
	l, _, _ := replayAll(t, dir, opts, 0)
	ends := appendN(t, l, 0, 300)
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
	before, _ := listSegs(t, dir)

	cp := ends[199]
	if err := l.truncate(cp); err != nil {
		t.Fatal(err)
	}
	if l.tail() != cp || l.size() != int64(l.head()-cp) {
		t.Fatalf("tail %d size %d, want %d and %d", l.tail(), l.size(), cp, l.head()-cp)
	}
	after, spares := listSegs(t, dir)
	if len(after) >= len(before) || len(spares) == 0 || len(spares) > logMaxSpares {
		t.Fatalf("after truncate: %d segments (was %d), %d spares", len(after), len(before), len(spares))
	}
	if after[0].start > cp {
		t.Fatalf("oldest kept segment starts at %d, after the checkpoint %d", after[0].start, cp)
	}
	// Truncating backwards does nothing.
	if err := l.truncate(ends[10]); err != nil || l.tail() != cp {
		t.Fatalf("truncate backwards: %v, tail %d", err, l.tail())
	}

	// New segments reuse the spares: their old records must never replay.
	more := appendN(t, l, 300, 300)
	ends = append(ends, more...)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	_, spares = listSegs(t, dir)
	if len(spares) != 0 {
		t.Fatalf("%d spares left after many rotations, want them reused", len(spares))
	}

	recs, end := readLog(t, dir, opts, cp)
	if end != ends[len(ends)-1] {
		t.Fatalf("replay end %d, want %d", end, ends[len(ends)-1])
	}
	checkRecs(t, recs, 200, startsOf(cp, ends[200:]))

	// Records before the oldest kept segment are gone.
	l2 := openTestLog(t, dir, opts)
	if _, err := l2.replay(0, func(LSN, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay from before the tail: %v, want ErrCorrupt", err)
	}
	l2.close()

	// Truncating everything keeps the current segment and the log goes on.
	l, _, _ = replayAll(t, dir, opts, cp)
	head := l.head()
	if err := l.truncate(head + 1000); err != nil {
		t.Fatal(err)
	}
	if l.tail() != head || l.size() != 0 {
		t.Fatalf("tail %d size %d after truncating past the head %d", l.tail(), l.size(), head)
	}
	more = appendN(t, l, 600, 50)
	l.close()
	recs, _ = readLog(t, dir, opts, head)
	checkRecs(t, recs, 600, startsOf(head, more))

	l, _, _ = replayAll(t, dir, opts, head)
	more = appendN(t, l, 700, 50)
	// The flusher may not have moved to the newest segment yet; a later
	// truncate recycles what an earlier one could not.
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
	head = l.head()
	if err := l.truncate(head); err != nil {
		t.Fatal(err)
	}
	l.close()
	segs, spares := listSegs(t, dir)
	if len(segs) != 1 || len(spares) > logMaxSpares {
		t.Fatalf("%d segments and %d spares after truncating to the head", len(segs), len(spares))
	}
	if recs, end := readLog(t, dir, opts, head); len(recs) != 0 || end != head {
		t.Fatalf("replay from the head: %d records, end %d, want %d", len(recs), end, head)
	}
}

func TestLogReplayPastEnd(t *testing.T) {
	// The caller's checkpoint can be ahead of the log's end; the log then
	// continues at the checkpoint, in a new segment.
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 4096}
	l, _, _ := replayAll(t, dir, opts, 0)
	ends := appendN(t, l, 0, 10)
	l.close()

	from := ends[9] + 4000
	l, recs, end := replayAll(t, dir, opts, from)
	if end != from || len(recs) != 0 || l.head() != from || l.tail() != from {
		t.Fatalf("replay from %d past the end %d: end %d, %d records, head %d", from, ends[9], end, len(recs), l.head())
	}
	more := appendN(t, l, 100, 20)
	l.close()
	recs, _ = readLog(t, dir, opts, from)
	checkRecs(t, recs, 100, startsOf(from, more))

	// An empty log starts wherever the caller is.
	recs, end = readLog(t, t.TempDir(), opts, 12345)
	if end != 12345 || len(recs) != 0 {
		t.Fatalf("empty log: end %d, %d records", end, len(recs))
	}
}

func TestLogConcurrentGroupCommit(t *testing.T) {
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 1 << 20}
	l, _, _ := replayAll(t, dir, opts, 0)
	const writers, each = 64, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				p := make([]byte, 64+w)
				binary.LittleEndian.PutUint32(p, uint32(w))
				binary.LittleEndian.PutUint32(p[4:], uint32(i))
				end, err := l.append(p)
				if err == nil {
					err = l.waitDurable(end)
				}
				if err == nil && l.durable() < end {
					err = fmt.Errorf("waitDurable(%d) returned at durable %d", end, l.durable())
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := l.syncs.Load()
	t.Logf("%d records, %d fdatasyncs, %d waiter wake-ups", writers*each, syncs, l.wakes.Load())
	if syncs*4 > writers*each {
		t.Errorf("%d fdatasyncs for %d records: no group commit", syncs, writers*each)
	}
	// A flush wakes the waiters of its own batch, each once: not every
	// waiter of the log on every flush.
	if w := l.wakes.Load(); w > writers*each {
		t.Errorf("%d wake-ups of waiters for %d records", w, writers*each)
	}
	l.close()

	recs, _ := readLog(t, dir, opts, 0)
	if len(recs) != writers*each {
		t.Fatalf("replayed %d records, want %d", len(recs), writers*each)
	}
	next := make([]int, writers)
	for _, r := range recs {
		w := int(binary.LittleEndian.Uint32(r.payload))
		i := int(binary.LittleEndian.Uint32(r.payload[4:]))
		if w >= writers || i != next[w] || len(r.payload) != 64+w {
			t.Fatalf("record from writer %d seq %d out of order (want seq %d)", w, i, next[w])
		}
		next[w]++
	}
}

// Appenders, waiters, a truncating checkpointer and close all at once, with
// segments small enough that rotation, preparation and recycling never stop.
func TestLogConcurrentChurn(t *testing.T) {
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 2048}
	l, _, _ := replayAll(t, dir, opts, 0)
	type acked struct {
		lsn LSN
		p   []byte
	}
	var (
		mu    sync.Mutex
		acks  []acked
		wg    sync.WaitGroup
		stop  atomic.Bool
		maxCP atomic.Uint64
	)
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; !stop.Load() || i < 50; i++ {
				p := make([]byte, r.IntN(900))
				for j := range p {
					p[j] = byte(r.Uint32())
				}
				end, err := l.append(p)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if r.IntN(3) == 0 {
					if err := l.waitDurable(end); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					acks = append(acks, acked{end - LSN(logRecordSize(len(p))), p})
					mu.Unlock()
				}
			}
		})
	}
	wg.Go(func() {
		for !stop.Load() {
			cp := l.durable() / 2
			if err := l.truncate(cp); err != nil && !errors.Is(err, ErrClosed) {
				t.Error(err)
				return
			}
			maxCP.Store(uint64(max(LSN(maxCP.Load()), cp)))
			time.Sleep(100 * time.Microsecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	time.Sleep(5 * time.Millisecond)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, spares := listSegs(t, dir); len(spares) > logMaxSpares {
		t.Fatalf("%d spares", len(spares))
	}

	cp := LSN(maxCP.Load())
	recs, _ := readLog(t, dir, opts, cp)
	byLSN := map[LSN][]byte{}
	for _, r := range recs {
		byLSN[r.lsn] = r.payload
	}
	n := 0
	for _, a := range acks {
		if a.lsn < cp {
			continue
		}
		n++
		if p, ok := byLSN[a.lsn]; !ok || !bytes.Equal(p, a.p) {
			t.Fatalf("acknowledged record at %d missing or different after replay", a.lsn)
		}
	}
	t.Logf("%d records replayed from %d, %d acknowledged ones checked", len(recs), cp, n)
}

func TestLogUnstableBecomesDurable(t *testing.T) {
	l, _, _ := replayAll(t, t.TempDir(), logOptions{FlushDelay: 2 * time.Millisecond}, 0)
	start := time.Now()
	var end LSN
	for i := range 10 {
		var err error
		if end, err = l.append(testPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if time.Since(start) > time.Second {
		t.Fatalf("unstable appends took %v", time.Since(start))
	}
	for l.durable() < end {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("durable %d, want %d: unstable data never flushed", l.durable(), end)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("durable without a waiter after %v", time.Since(start))
	if l.syncs.Load() == 0 {
		t.Fatal("durable without an fdatasync")
	}
}

// failFallocate makes segment preallocation fail with ENOSPC while set. The
// hook is installed before the log exists so that swapping it does not race
// with the log's goroutines.
func failFallocate(t *testing.T) *atomic.Bool {
	var fail atomic.Bool
	old := logFallocate
	logFallocate = func(fd int, mode uint32, off, n int64) error {
		if fail.Load() {
			return unix.ENOSPC
		}
		return old(fd, mode, off, n)
	}
	t.Cleanup(func() { logFallocate = old })
	return &fail
}

func TestLogNoSpace(t *testing.T) {
	fail := failFallocate(t)
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 4096}
	l, _, _ := replayAll(t, dir, opts, 0)
	ends := appendN(t, l, 0, 20)
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	i := 20
	var err error
	for ; i < 200; i++ {
		var end LSN
		if end, err = l.append(testPayload(i)); err != nil {
			break
		}
		ends = append(ends, end)
	}
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ErrNoSpace", err)
	}
	failed := i
	if l.head() != ends[len(ends)-1] {
		t.Fatalf("head moved to %d by a failed append, want %d", l.head(), ends[len(ends)-1])
	}
	if _, err := l.append(testPayload(failed)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("second append on a full disk: %v", err)
	}
	// Everything before the failure is still fine.
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegs(t, dir) // no half-created segment is left behind
	fail.Store(false)
	more := appendN(t, l, 1000, 30)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := listSegs(t, dir); len(after) <= len(segs) {
		t.Fatalf("no new segment after space came back")
	}
	recs, _ := readLog(t, dir, opts, 0)
	checkRecs(t, recs[:len(ends)], 0, startsOf(0, ends))
	checkRecs(t, recs[len(ends):], 1000, startsOf(ends[len(ends)-1], more))
}

func TestLogNoSpaceUsesSpares(t *testing.T) {
	// Recycled segments keep their space, so a full disk does not stop the
	// log while spares last.
	fail := failFallocate(t)
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 4096}
	l, _, _ := replayAll(t, dir, opts, 0)
	ends := appendN(t, l, 0, 100)
	l.sync()
	if err := l.truncate(ends[80]); err != nil {
		t.Fatal(err)
	}
	if _, spares := listSegs(t, dir); len(spares) != logMaxSpares {
		t.Fatalf("%d spares, want %d", len(spares), logMaxSpares)
	}
	fail.Store(true)
	head := l.head()
	n := 0
	for ; n < 1000; n++ {
		if _, err := l.append(testPayload(n)); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatal(err)
			}
			break
		}
	}
	if int64(l.head()-head) < 2*(opts.SegmentSize-logSegHeaderSize)-2*1024 {
		t.Fatalf("only %d bytes appended on a full disk with %d spares", l.head()-head, logMaxSpares)
	}
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
}

func TestLogSyncFailure(t *testing.T) {
	for _, errno := range []syscall.Errno{unix.EIO, unix.ENOSPC} {
		t.Run(errno.Error(), func(t *testing.T) {
			var fail atomic.Bool
			old := logFdatasync
			logFdatasync = func(f *os.File) error {
				if fail.Load() {
					return errno
				}
				return old(f)
			}
			t.Cleanup(func() { logFdatasync = old })
			dir := t.TempDir()
			opts := logOptions{SegmentSize: 64 << 10}
			l, _, _ := replayAll(t, dir, opts, 0)
			good, err := l.append([]byte("durable"))
			if err == nil {
				err = l.waitDurable(good)
			}
			if err != nil {
				t.Fatal(err)
			}
			fail.Store(true)
			end, err := l.append([]byte("lost"))
			if err != nil {
				t.Fatal(err)
			}
			err = l.waitDurable(end)
			if !errors.Is(err, errno) || errors.Is(err, ErrNoSpace) != (errno == unix.ENOSPC) {
				t.Fatalf("waitDurable after a failed fdatasync: %v", err)
			}
			fail.Store(false)
			// The log stays failed: a later sync could succeed without the
			// lost pages ever reaching the disk.
			if _, err2 := l.append([]byte("x")); !errors.Is(err2, errno) {
				t.Fatalf("append on a failed log: %v", err2)
			}
			if err2 := l.sync(); !errors.Is(err2, errno) {
				t.Fatalf("sync on a failed log: %v", err2)
			}
			if err2 := l.waitDurable(good); err2 != nil {
				t.Fatalf("waitDurable for data durable before the failure: %v", err2)
			}
			if err2 := l.close(); !errors.Is(err2, errno) {
				t.Fatalf("close of a failed log: %v", err2)
			}
			recs, _ := readLog(t, dir, opts, 0)
			if len(recs) == 0 || string(recs[0].payload) != "durable" {
				t.Fatalf("replay after failure: %d records", len(recs))
			}
		})
	}
}

func TestLogCloseAndLimits(t *testing.T) {
	dir := t.TempDir()
	opts := logOptions{SegmentSize: 4096}
	l := openTestLog(t, dir, opts)
	if _, err := l.append([]byte("x")); err == nil {
		t.Fatal("append before replay succeeded")
	}
	if _, err := l.replay(0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.replay(0, nil); err == nil {
		t.Fatal("second replay succeeded")
	}
	if _, err := l.append(make([]byte, logMaxPayload+1)); err == nil {
		t.Fatal("oversized payload accepted")
	}
	if _, err := l.appendv(make([]byte, logMaxPayload), []byte{1}); err == nil {
		t.Fatal("oversized payload accepted by appendv")
	}
	// The largest payload does not fit a 4 KiB segment: it gets a bigger one.
	big := bytes.Repeat([]byte{0x5a}, logMaxPayload)
	e1, err := l.append(nil)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := l.append(big)
	if err != nil {
		t.Fatal(err)
	}
	e3, err := l.append([]byte("after")) // unstable, made durable by close
	if err != nil {
		t.Fatal(err)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	if err := l.close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := l.append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := l.sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
	if err := l.truncate(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("truncate after close: %v", err)
	}
	if err := l.waitDurable(e3); err != nil {
		t.Fatalf("waitDurable for data close synced: %v", err)
	}

	recs, end := readLog(t, dir, opts, 0)
	if end != e3 || len(recs) != 3 || len(recs[0].payload) != 0 || !bytes.Equal(recs[1].payload, big) || string(recs[2].payload) != "after" {
		t.Fatalf("replay: end %d (want %d), %d records", end, e3, len(recs))
	}
	if recs[1].lsn != e1 || recs[2].lsn != e2 {
		t.Fatalf("LSNs %d %d, want %d %d", recs[1].lsn, recs[2].lsn, e1, e2)
	}

	// A replay callback's error stops replay and is returned.
	l = openTestLog(t, dir, opts)
	defer l.close()
	stop := errors.New("stop")
	if _, err := l.replay(0, func(LSN, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("replay with a failing callback: %v", err)
	}
}

func TestLogZeroBytesAreNoRecord(t *testing.T) {
	// A preallocated segment reads as zeros; a zero record header must not
	// pass as an empty record at LSN 0.
	if _, _, _, err := decodeLogRecord(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("decode of zeros: %v", err)
	}
	end, err := scanLogSegment(bytes.NewReader(make([]byte, 4096)), 4096, 0, func(LSN, []byte) error {
		return errors.New("record in zeros")
	})
	if err != nil || end != 0 {
		t.Fatalf("scan of zeros: %d, %v", end, err)
	}
}

func BenchmarkLogAppendSync(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, _, _ := replayAll(b, b.TempDir(), logOptions{}, 0)
			payload := make([]byte, 4096)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			syncs := l.syncs.Load()
			for range writers {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						end, err := l.append(payload)
						if err == nil {
							err = l.waitDurable(end)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(l.syncs.Load()-syncs)/float64(b.N), "syncs/op")
			l.close()
		})
	}
}

// TestLogWriteOutsideSegmentFails: a batch that does not fit the current
// segment (a broken invariant of the append path) is an error that fails
// the log, not a panic on the flusher goroutine that would take down the
// process.
func TestLogWriteOutsideSegmentFails(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := replayAll(t, dir, logOptions{SegmentSize: 64 << 10}, 0)
	end, err := l.append([]byte("durable"))
	if err == nil {
		err = l.waitDurable(end)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The flusher is idle (waitDurable returned), so l.cur is stable.
	seg := l.cur
	// Past the end, across it, and so far that the end LSN wraps round.
	for _, start := range []LSN{seg.limit() + 8, seg.limit() - 8, ^LSN(0) - 8} {
		b := &logBatch{start: start, buf: make([]byte, 64)}
		err := l.writeCur(b, 0, len(b.buf))
		if !errors.Is(err, errLogInvariant) {
			t.Fatalf("batch at %d over segment [%d,%d): %v, want errLogInvariant", start, seg.start, seg.limit(), err)
		}
	}
}
