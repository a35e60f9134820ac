package blockstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestCrash is the process-crash test: a child process (this test binary,
// re-executed to run TestCrashChild) writes to the store from several
// goroutines and reports every operation before it starts ("intent") and
// after the store acknowledged it ("ack"). The parent SIGKILLs it at a
// random moment, reopens a copy of the data directory and checks that every
// acknowledged byte is there, that each operation in flight at the kill took
// effect atomically or not at all, and that scrub finds nothing. The rounds
// run on the same directory, so each child starts by recovering from the
// previous kill (and may itself be killed while recovering).
//
// SIGKILL loses no page cache, so this checks the store's own recovery
// logic (log replay, torn tails, destage and GC interrupted anywhere), not
// the fdatasync discipline a power cut would test.

var (
	crashRounds = flag.Int("crash.rounds", 20, "kill-and-reopen rounds of TestCrash")
	crashSeed   = flag.Uint64("crash.seed", 0, "seed of TestCrash's choices (0: from the clock); kill timing still varies")
)

const (
	crashEnv     = "DSTORE_CRASH_CHILD" // "<data dir>|<seed>" in the child
	crashBS      = 4 << 10
	crashRegion  = 1 << 20   // bytes each writer of the shared volume owns
	crashMaxIO   = 256 << 10 // largest write
	crashWriters = 4
	crashVolumes = 3
	crashPoolN   = 8 // distinct pool blocks: repeated content for dedupe

	crashLinePrefix = "crash "
)

// crashLayout assigns each writer a volume and a region of it. Writers 0
// and 1 share volume 0 and own disjoint block-aligned halves, so their
// writes commute and ack order across writers does not matter. Writers 2
// and 3 own a volume each and are the only ones that truncate.
var crashLayout = [crashWriters]struct {
	vol    int
	lo, hi int64
	owner  bool
}{
	{0, 0, crashRegion, false},
	{0, crashRegion, 2 * crashRegion, false},
	{1, 0, 2 * crashRegion, true},
	{2, 0, 2 * crashRegion, true},
}

// crashOptions are small so that destage, pack rotation, log segment
// rotation and recycling, and merges of the front all happen many times
// during a run (and a kill finds destaged entries in the front journal
// even under the race detector).
func crashOptions() Options {
	return Options{MaxLogBytes: 4 << 20, PackSize: 1 << 20, SegmentSize: 1 << 20, CacheBytes: 4 << 20, FrontBlocks: 3000,
		DestageDelay: 40 * time.Millisecond}
}

// crashWrite is one write of an operation. The data is not logged: it is a
// function of the fields, so both processes can compute it.
type crashWrite struct {
	Off  int64  `json:"off"`
	Len  int    `json:"len"`
	Kind string `json:"kind"` // rand, pool, zero or mixed
	Seed uint64 `json:"seed"`
}

// crashOp is one acknowledged unit: a stable write, a group of unstable
// writes followed by Sync, a truncate followed by Sync, or a volume
// creation.
type crashOp struct {
	R      int          `json:"r"` // round, set by the parent
	W      int          `json:"w"` // writer; -1 for the main goroutine
	N      int          `json:"n"` // sequence number within the writer
	Op     string       `json:"op"`
	Vol    VolumeID     `json:"vol,omitempty"`
	Writes []crashWrite `json:"writes,omitempty"`
	Size   int64        `json:"size,omitempty"`
}

const (
	crashOpStable   = "stable"
	crashOpUnstable = "unstable"
	crashOpTruncate = "truncate"
	crashOpCreate   = "create"
)

// steps is how many log records the operation is made of. After a crash a
// prefix of them is durable: the log replays in order up to a torn tail.
func (op *crashOp) steps() int {
	switch op.Op {
	case crashOpTruncate, crashOpCreate:
		return 1
	}
	return len(op.Writes)
}

func (op *crashOp) String() string {
	b, _ := json.Marshal(op)
	return string(b)
}

// crashPool is the repeated content: half incompressible, half text, so
// that deduplicated chunks are both raw and compressed.
var crashPool = func() [][]byte {
	pool := make([][]byte, crashPoolN)
	for i := range pool {
		b := make([]byte, crashBS)
		if i%2 == 0 {
			crashFill(rand.New(rand.NewPCG(uint64(i), 0xb10c)), b)
		} else {
			var text []byte
			for j := 0; len(text) < crashBS; j++ {
				text = fmt.Appendf(text, "pool block %d, line %d: the quick brown fox\n", i, j)
			}
			copy(b, text)
		}
		pool[i] = b
	}
	return pool
}()

func crashFill(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// data returns the bytes of the write. Pool and mixed content depend on
// the volume offset, not only on the seed, so an aligned pool write stores
// whole pool blocks (dedupe hits) and mixed writes have whole zero blocks
// (holes) among data blocks.
func (w crashWrite) data() []byte {
	b := make([]byte, w.Len)
	switch w.Kind {
	case "zero":
	case "rand", "mixed":
		crashFill(rand.New(rand.NewPCG(w.Seed, 1)), b)
		if w.Kind == "rand" {
			break
		}
		crashSpans(w, func(i int, blk uint64, in, n int) {
			if (blk+w.Seed)%3 == 0 {
				clear(b[i : i+n])
			}
		})
	case "pool":
		crashSpans(w, func(i int, blk uint64, in, n int) {
			copy(b[i:i+n], crashPool[(blk+w.Seed)%crashPoolN][in:in+n])
		})
	default:
		panic("crash test: unknown write kind " + w.Kind)
	}
	return b
}

// crashSpans calls fn for each piece of w that lies in one block: i is the
// offset in the data, blk the block, in the offset inside it, n the length.
func crashSpans(w crashWrite, fn func(i int, blk uint64, in, n int)) {
	for x := w.Off; x < w.Off+int64(w.Len); {
		blk, in := uint64(x/crashBS), int(x%crashBS)
		n := int(min(int64(crashBS-in), w.Off+int64(w.Len)-x))
		fn(int(x-w.Off), blk, in, n)
		x += int64(n)
	}
}

// ---- child ----

// TestCrashChild is the child half of TestCrash; run on its own it does
// nothing.
func TestCrashChild(t *testing.T) {
	env := os.Getenv(crashEnv)
	if env == "" {
		return
	}
	crashChild(env) // never returns: it runs until killed
}

// crashOut writes one line to stdout with a single write, so a line is in
// the pipe entirely or not at all (it is shorter than PIPE_BUF) and lines
// of concurrent writers do not interleave.
func crashOut(format string, args ...any) {
	line := crashLinePrefix + fmt.Sprintf(format, args...) + "\n"
	if _, err := os.Stdout.WriteString(line); err != nil {
		os.Exit(5)
	}
}

func crashFail(format string, args ...any) {
	crashOut("error "+format, args...)
	os.Exit(3)
}

func crashChild(env string) {
	dir, seedText, _ := strings.Cut(env, "|")
	seed, err := strconv.ParseUint(seedText, 10, 64)
	if err != nil {
		crashFail("bad %s=%q", crashEnv, env)
	}
	// The parent kills us long before this; the timer only keeps a child
	// whose parent died from writing forever.
	time.AfterFunc(2*time.Minute, func() { crashFail("not killed") })

	s, err := Open(dir, crashOptions())
	if err != nil {
		crashFail("open: %v", err)
	}
	ids := s.Volumes()
	for n := 0; len(ids) < crashVolumes; n++ {
		op := &crashOp{W: -1, N: n, Op: crashOpCreate}
		crashOut("intent %s", op)
		v, err := s.CreateVolume()
		if err != nil {
			crashFail("create volume: %v", err)
		}
		crashOut("created %d %d %d", op.W, op.N, v.ID())
		ids = append(ids, v.ID())
	}
	if len(ids) != crashVolumes {
		crashFail("store has volumes %v, want %d", ids, crashVolumes)
	}
	for w := range crashWriters {
		go crashWriter(s, ids[crashLayout[w].vol], w, seed)
	}
	// GC runs now and then, so that kills also land in the middle of
	// marking, sweeping and compaction.
	go func() {
		rng := rand.New(rand.NewPCG(seed, 99))
		for {
			time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond)
			if _, err := s.GC(context.Background(), GCOptions{Threshold: 0.5}); err != nil {
				crashFail("gc: %v", err)
			}
		}
	}()
	crashOut("ready")
	select {}
}

func crashWriter(s *Store, vol VolumeID, w int, seed uint64) {
	v, err := s.OpenVolume(vol)
	if err != nil {
		crashFail("writer %d: %v", w, err)
	}
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	for n := 0; ; n++ {
		op := crashNextOp(rng, w, n, vol)
		crashOut("intent %s", op)
		switch op.Op {
		case crashOpStable:
			wr := op.Writes[0]
			if k, err := v.WriteAtStable(wr.data(), wr.Off); err != nil || k != wr.Len {
				crashFail("%s: wrote %d: %v", op, k, err)
			}
		case crashOpUnstable:
			for _, wr := range op.Writes {
				if k, err := v.WriteAt(wr.data(), wr.Off); err != nil || k != wr.Len {
					crashFail("%s: wrote %d: %v", op, k, err)
				}
			}
			if err := v.Sync(); err != nil {
				crashFail("%s: sync: %v", op, err)
			}
		case crashOpTruncate:
			if err := v.Truncate(op.Size); err != nil {
				crashFail("%s: %v", op, err)
			}
			if err := v.Sync(); err != nil {
				crashFail("%s: sync: %v", op, err)
			}
		}
		crashOut("ack %d %d", w, n)
	}
}

func crashNextOp(rng *rand.Rand, w, n int, vol VolumeID) *crashOp {
	lay := crashLayout[w]
	op := &crashOp{W: w, N: n, Vol: vol}
	p := rng.IntN(100)
	switch {
	case lay.owner && p < 15:
		op.Op = crashOpTruncate
		switch rng.IntN(4) {
		case 0:
			op.Size = rng.Int64N(lay.hi/crashBS+1) * crashBS
		case 1:
			op.Size = rng.Int64N(4 * crashBS)
		default:
			op.Size = rng.Int64N(lay.hi + 1)
		}
		return op
	case p < 30:
		op.Op = crashOpUnstable
		for range 1 + rng.IntN(3) {
			op.Writes = append(op.Writes, crashNextWrite(rng, w))
		}
	default:
		op.Op = crashOpStable
		op.Writes = []crashWrite{crashNextWrite(rng, w)}
	}
	return op
}

func crashNextWrite(rng *rand.Rand, w int) crashWrite {
	lay := crashLayout[w]
	var wr crashWrite
	switch p := rng.IntN(100); {
	case p < 20:
		wr.Len = 1 + rng.IntN(512)
	case p < 55:
		wr.Len = (1 + rng.IntN(crashMaxIO/crashBS)) * crashBS
	default:
		wr.Len = 1 + rng.IntN(crashMaxIO)
	}
	room := lay.hi - lay.lo - int64(wr.Len)
	wr.Off = lay.lo + rng.Int64N(room+1)
	if rng.IntN(2) == 0 {
		wr.Off = lay.lo + (wr.Off-lay.lo)/crashBS*crashBS
	}
	switch p := rng.IntN(100); {
	case p < 40:
		wr.Kind = "rand"
	case p < 70:
		wr.Kind = "pool"
	case p < 85:
		wr.Kind = "zero"
	default:
		wr.Kind = "mixed"
	}
	wr.Seed = rng.Uint64()
	return wr
}

// ---- parent ----

// crashVol is the model of a volume.
type crashVol struct {
	data []byte // len(data) >= size; bytes at and past size are zero
	size int64
	hist []*crashOp // applied operations, to explain a mismatch
}

func (v *crashVol) clone() *crashVol {
	return &crashVol{data: bytes.Clone(v.data), size: v.size, hist: v.hist[:len(v.hist):len(v.hist)]}
}

func (v *crashVol) grow(n int64) {
	if int64(len(v.data)) < n {
		v.data = append(v.data, make([]byte, n-int64(len(v.data)))...)
	}
}

// apply applies the first k steps of op.
func (v *crashVol) apply(op *crashOp, k int) {
	if k > 0 {
		v.hist = append(v.hist, op)
	}
	if op.Op == crashOpTruncate {
		if k > 0 {
			if op.Size < v.size {
				clear(v.data[op.Size:])
			}
			v.grow(op.Size)
			v.size = op.Size
		}
		return
	}
	for _, w := range op.Writes[:k] {
		end := w.Off + int64(w.Len)
		v.grow(end)
		copy(v.data[w.Off:], w.data())
		v.size = max(v.size, end)
	}
}

// crashState is what the parent knows: the model of every volume.
type crashState struct {
	vols map[VolumeID]*crashVol

	acked, inflight, partial int // totals over the run, for the log
	fronts                   int // kills that left a front journal
}

// crashRound is the parsed output of one child.
type crashRound struct {
	acked    []*crashOp // in ack order
	inflight []*crashOp // intended, not acknowledged
	ready    bool
}

func parseCrashOutput(out []string) (*crashRound, error) {
	r := &crashRound{}
	open := map[int]*crashOp{}
	for _, line := range out {
		rest, ok := strings.CutPrefix(line, crashLinePrefix)
		if !ok {
			continue // the testing package's own output
		}
		verb, arg, _ := strings.Cut(rest, " ")
		switch verb {
		case "ready":
			r.ready = true
		case "intent":
			op := &crashOp{}
			if err := json.Unmarshal([]byte(arg), op); err != nil {
				return nil, fmt.Errorf("line %q: %v", line, err)
			}
			if prev := open[op.W]; prev != nil {
				return nil, fmt.Errorf("writer %d: intent %d while %d is not acked", op.W, op.N, prev.N)
			}
			open[op.W] = op
		case "ack", "created":
			var w, n int
			var vol VolumeID
			var err error
			if verb == "ack" {
				_, err = fmt.Sscanf(arg, "%d %d", &w, &n)
			} else {
				_, err = fmt.Sscanf(arg, "%d %d %d", &w, &n, &vol)
			}
			if err != nil {
				return nil, fmt.Errorf("line %q: %v", line, err)
			}
			op := open[w]
			if op == nil || op.N != n {
				return nil, fmt.Errorf("line %q: no such intent", line)
			}
			if verb == "created" {
				op.Vol = vol
			}
			delete(open, w)
			r.acked = append(r.acked, op)
		case "error":
			return nil, fmt.Errorf("child failed: %s", arg)
		default:
			return nil, fmt.Errorf("unexpected line %q", line)
		}
	}
	for _, op := range open {
		r.inflight = append(r.inflight, op)
	}
	sort.Slice(r.inflight, func(i, j int) bool { return r.inflight[i].W < r.inflight[j].W })
	return r, nil
}

func TestCrash(t *testing.T) {
	rounds := *crashRounds
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: crashBS}); err != nil {
		t.Fatal(err)
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	st := &crashState{vols: map[VolumeID]*crashVol{}}
	start := time.Now()
	for round := range rounds {
		r := runCrashChild(t, dir, rng)
		for _, op := range r.inflight {
			op.R = round
		}
		for _, op := range r.acked {
			op.R = round
			if op.Op == crashOpCreate {
				st.vols[op.Vol] = &crashVol{}
				continue
			}
			v := st.vols[op.Vol]
			if v == nil {
				t.Fatalf("round %d: %s on a volume the parent does not know", round, op)
			}
			v.apply(op, op.steps())
		}
		st.acked += len(r.acked)
		st.inflight += len(r.inflight)
		// Check a copy: the next child must find the directory exactly as
		// the killed one left it, unreplayed log and torn tail included.
		cp := filepath.Join(t.TempDir(), "copy")
		if err := copyCrashDir(dir, cp); err != nil {
			t.Fatalf("round %d: copy: %v", round, err)
		}
		if n, err := crashFrontValues(cp); err != nil {
			t.Fatalf("round %d: %v", round, err)
		} else if n > 0 {
			st.fronts++
		}
		if err := st.check(cp, r.inflight, true); err != nil {
			t.Fatalf("round %d (%d acked, in flight %v): %v", round, len(r.acked), r.inflight, err)
		}
		os.RemoveAll(cp)
	}
	t.Logf("%d rounds in %v: %d operations acknowledged, %d in flight at a kill (%d of them partly or wholly durable); %d kills left a front journal to merge",
		rounds, time.Since(start).Round(time.Millisecond), st.acked, st.inflight, st.partial, st.fronts)
	if st.acked == 0 {
		t.Fatal("no child acknowledged anything: the test checked nothing")
	}
	// How many kills found entries in the front journal depends on the
	// timing (few under the race detector); TestCrashFront kills with
	// entries there every time.

	// The real directory, as the last child left it: no operation is in
	// flight any more (the copy settled them), so everything is exact.
	if err := st.check(dir, nil, true); err != nil {
		t.Fatalf("final check: %v", err)
	}
	s, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(context.Background(), GCOptions{Threshold: 0.9}); err != nil {
		t.Fatalf("gc: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.check(dir, nil, true); err != nil {
		t.Fatalf("check after gc and reopen: %v", err)
	}
	crashCoverage(t, dir)
}

// runCrashChild runs one child until a random moment and kills it. Most
// rounds time the kill from the child's "ready" (the store is open and
// writing); a quarter time it from the start, so some kills land inside
// Open's recovery of the previous kill.
func runCrashChild(t *testing.T, dir string, rng *rand.Rand) *crashRound {
	t.Helper()
	delay := time.Duration(50+rng.IntN(351)) * time.Millisecond
	fromStart := rng.IntN(4) == 0
	p := startCrashChild(t, "TestCrashChild", fmt.Sprintf("%s=%s|%d", crashEnv, dir, rng.Uint64()), "ready")
	timer := time.NewTimer(delay)
	if !fromStart {
		timer.Stop()
		if p.wait(30 * time.Second) {
			timer.Reset(delay)
		} else {
			timer.Reset(0) // no "ready" (Open takes milliseconds): kill it and report below
		}
	}
	if !p.exited {
		select {
		case <-timer.C:
		case p.got = <-p.lines:
			p.exited = true
		}
	}
	got := p.kill()
	r, err := parseCrashOutput(got)
	if err != nil {
		t.Fatalf("child output: %v\nstderr:\n%s", err, p.stderr.String())
	}
	return r
}

// crashProc is a child process running one test of this binary until the
// parent kills it.
type crashProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr bytes.Buffer
	marked chan struct{} // closed at the first stdout line crashLinePrefix+marker
	lines  chan []string // every stdout line, once stdout closes
	got    []string      // the lines, once received
	exited bool          // got is set: stdout closed
}

// startCrashChild starts the test named test as a child with env (NAME=value)
// added to its environment.
func startCrashChild(t *testing.T, test, env, marker string) *crashProc {
	t.Helper()
	p := &crashProc{t: t, marked: make(chan struct{}), lines: make(chan []string, 1)}
	p.cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	p.cmd.Env = append(os.Environ(), env)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		var all []string
		seen := false
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			all = append(all, sc.Text())
			if !seen && sc.Text() == crashLinePrefix+marker {
				seen = true
				close(p.marked)
			}
		}
		p.lines <- all
	}()
	return p
}

// wait waits for the marker line and reports whether it came; it returns
// false if stdout closed first (exited is then set) or timeout passed.
func (p *crashProc) wait(timeout time.Duration) bool {
	select {
	case <-p.marked:
		return true
	case p.got = <-p.lines:
		p.exited = true
	case <-time.After(timeout):
	}
	return false
}

// kill SIGKILLs the child and returns its stdout lines. It fails the test
// if the child ended on its own, or reported a data race, a panic or a
// fatal error on stderr (the race detector reports and carries on).
func (p *crashProc) kill() []string {
	p.t.Helper()
	// The child is not reaped before Wait, so its PID cannot have been
	// reused by another process.
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill child: %v", err)
	}
	if !p.exited {
		p.got, p.exited = <-p.lines, true
	}
	werr := p.cmd.Wait()
	ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		p.t.Fatalf("child ended on its own (%v)\nstdout:\n%s\nstderr:\n%s", werr, strings.Join(p.got, "\n"), p.stderr.String())
	}
	if e := p.stderr.String(); strings.Contains(e, "DATA RACE") || strings.Contains(e, "panic") || strings.Contains(e, "fatal error") {
		p.t.Fatalf("child stderr:\n%s", e)
	}
	return p.got
}

// check opens the store in dir and compares every volume with the model.
// Each operation in inflight may have taken effect as any prefix of its
// log records; the model is advanced to the prefix the store shows, and it
// is an error if none matches. Scrub must find nothing.
func (st *crashState) check(dir string, inflight []*crashOp, scrub bool) error {
	s, err := Open(dir, crashOptions())
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	err = st.checkStore(s, inflight)
	if err == nil && scrub {
		rep, serr := s.Scrub(context.Background())
		switch {
		case serr != nil:
			err = fmt.Errorf("scrub: %w", serr)
		case len(rep.Corrupt) > 0:
			err = fmt.Errorf("scrub found %d corrupt chunks: %+v", len(rep.Corrupt), rep.Corrupt)
		}
	}
	if cerr := s.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

func (st *crashState) checkStore(s *Store, inflight []*crashOp) error {
	creating := false
	for _, op := range inflight {
		if op.Op == crashOpCreate {
			creating = true
		}
	}
	ids := s.Volumes()
	have := map[VolumeID]bool{}
	for _, id := range ids {
		have[id] = true
		if st.vols[id] == nil {
			// Only a creation in flight can have made a volume the model
			// does not know, and only one.
			if !creating {
				return fmt.Errorf("volume %d exists but no creation of it was acknowledged or in flight (volumes %v)", id, ids)
			}
			creating = false
			st.vols[id] = &crashVol{}
			st.partial++
		}
	}
	for id := range st.vols {
		if !have[id] {
			return fmt.Errorf("acknowledged volume %d is missing (volumes %v)", id, ids)
		}
	}
	for _, id := range ids {
		v, err := s.OpenVolume(id)
		if err != nil {
			return err
		}
		size := v.Size()
		got := make([]byte, size)
		if n, err := v.ReadAt(got, 0); n != len(got) || (err != nil && !(err == io.EOF && size == 0)) {
			return fmt.Errorf("volume %d: read %d of %d bytes: %v", id, n, size, err)
		}
		if n, err := v.ReadAt(make([]byte, 1), size); n != 0 || err != io.EOF {
			return fmt.Errorf("volume %d: read at its end (%d): %d, %v; want 0, EOF", id, size, n, err)
		}
		var ops []*crashOp
		for _, op := range inflight {
			if op.Op != crashOpCreate && op.Vol == id {
				ops = append(ops, op)
			}
		}
		match, k := st.vols[id].settle(ops, size, got)
		if match == nil {
			return fmt.Errorf("volume %d: %s%s", id, st.vols[id].explain(ops, size, got), st.vols[id].dumpHistory(id))
		}
		st.vols[id] = match
		if k > 0 {
			st.partial++
		}
	}
	return nil
}

// settle returns the model after the prefixes of ops (one per writer, in
// disjoint regions, so their order does not matter) that give size and
// data, and how many steps that applied; nil if no combination does.
func (v *crashVol) settle(ops []*crashOp, size int64, data []byte) (*crashVol, int) {
	ks := make([]int, len(ops))
	for {
		c := v.clone()
		applied := 0
		for i, op := range ops {
			c.apply(op, ks[i])
			applied += ks[i]
		}
		if c.size == size && bytes.Equal(c.data[:size], data) {
			return c, applied
		}
		// next combination, odometer style
		i := 0
		for ; i < len(ops); i++ {
			if ks[i] < ops[i].steps() {
				ks[i]++
				break
			}
			ks[i] = 0
		}
		if i == len(ops) {
			return nil, 0
		}
	}
}

// explain describes how the store differs from the model without the
// operations in flight and with all of them, and which operations wrote
// the first differing byte.
func (v *crashVol) explain(ops []*crashOp, size int64, data []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "matches no outcome of the operations in flight %v", ops)
	all := v.clone()
	for _, op := range ops {
		all.apply(op, op.steps())
	}
	first := int64(-1)
	for _, c := range []struct {
		name string
		m    *crashVol
	}{{"without them", v}, {"with all of them", all}} {
		fmt.Fprintf(&b, "\nstore: size %d; model %s: size %d", size, c.name, c.m.size)
		n := min(size, c.m.size)
		shown := 0
		for i := int64(0); i < n && shown < 4; i++ {
			if data[i] == c.m.data[i] {
				continue
			}
			j := i
			for j < n && data[j] != c.m.data[j] {
				j++
			}
			fmt.Fprintf(&b, "\n  differs at [%d, %d) (block %d+%d): store % x..., model % x...",
				i, j, i/crashBS, i%crashBS, data[i:min(i+8, j)], c.m.data[i:min(i+8, j)])
			if first < 0 {
				first = i
			}
			shown++
			i = j
		}
	}
	if first >= 0 {
		fmt.Fprintf(&b, "\noperations that set byte %d, oldest first:", first)
		for _, op := range v.hist {
			touches := op.Op == crashOpTruncate && op.Size <= first
			for _, w := range op.Writes {
				touches = touches || w.Off <= first && first < w.Off+int64(w.Len)
			}
			if touches {
				fmt.Fprintf(&b, "\n  %s", op)
			}
		}
	}
	return b.String()
}

// dumpHistory writes every operation applied to the volume to a file that
// outlives the test, for post-mortems, and says where it is.
func (v *crashVol) dumpHistory(id VolumeID) string {
	f, err := os.CreateTemp("", fmt.Sprintf("dstore-crash-vol%d-*.txt", id))
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, op := range v.hist {
		fmt.Fprintln(f, op)
	}
	return "\nfull history: " + f.Name()
}

// copyCrashDir copies a data directory. Packs other than the open one are
// immutable (only the open pack is appended to and cut back on open), so
// they are hard-linked rather than copied to keep rounds fast as the packs
// pile up.
func copyCrashDir(src, dst string) error {
	openPack, err := crashOpenPack(src)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if filepath.Dir(rel) == "packs" && path != packPath(src, openPack) {
			return os.Link(path, to)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o600)
	})
}

// crashFrontValues counts the values of the front journal (front.go).
func crashFrontValues(dir string) (int, error) {
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bFront); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}

// crashOpenPack reads the ID of the open pack from the metadata.
func crashOpenPack(dir string) (uint64, error) {
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var id uint64
	err = db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if m == nil {
			return errors.New("no meta bucket")
		}
		id = getU64(m, kOpenPack)
		return nil
	})
	return id, err
}

// crashCoverage checks that the run exercised what the small options are
// for: several packs and several log segments were created.
func crashCoverage(t *testing.T, dir string) {
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var packs uint64
	db.View(func(tx *bolt.Tx) error {
		packs = getU64(tx.Bucket(bMeta), kNextPack) - 1
		return nil
	})
	db.Close()
	ents, err := os.ReadDir(filepath.Join(dir, "nvlog"))
	if err != nil {
		t.Fatal(err)
	}
	var segs uint64
	for _, e := range ents {
		for _, ext := range []string{".log", ".spare"} {
			if n, ok := parseLogName(e.Name(), ext); ok {
				segs = max(segs, n)
			}
		}
	}
	t.Logf("packs created: %d, log segments created: %d", packs, segs)
	if packs < 3 || segs < 3 {
		t.Errorf("the run created %d packs and %d log segments; it should rotate both several times", packs, segs)
	}
}

// TestCrashReopenAfterGCDeletesOpenPack: when every chunk of the open pack
// is dead, GC deletes that pack. The metadata must stop naming it as the
// open pack in the same step: a store closed (or killed) before the next
// destage commits must still open.
func TestCrashReopenAfterGCDeletesOpenPack(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: crashBS}); err != nil {
		t.Fatal(err)
	}
	opts := Options{SegmentSize: 1 << 20}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4*crashBS)
	crashFill(rand.New(rand.NewPCG(1, 2)), data)
	if _, err := v.WriteAtStable(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil { // pack 1 is open and holds 4 chunks
		t.Fatal(err)
	}
	if err := v.Truncate(0); err != nil { // now they are all dead
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", rep)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatalf("reopen after GC deleted the open pack: %v", err)
	}
	s.Close()
}

// TestCrashShrinkHidesDestagedWrite is the bug TestCrash found, made
// deterministic. A shrinking truncate hides the layer's bbolt entries at or
// above its new end until it is destaged. With one limit per layer (the
// lowest) and the LSN of the latest shrink, a second shrink to a larger
// size kept the first limit alive: a destage that covered the first
// truncate and a later write above its limit, but not the second truncate,
// moved that write to bbolt and dropped it from memory while the limit
// still hid it. The write read as zeros, and a partial write of the block
// merged with those zeros and made the loss permanent.
//
// The destage batch boundary that concurrency produced in TestCrash is
// placed here with destageBatchBytes of filler between the write and the
// second truncate.
func TestCrashShrinkHidesDestagedWrite(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: crashBS}); err != nil {
		t.Fatal(err)
	}
	// Segments larger than the 4 MiB filler records, so each fits one.
	opts := Options{SegmentSize: 8 << 20}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	block := func() []byte {
		b := make([]byte, crashBS)
		crashFill(rng, b)
		return b
	}
	if _, err := v.WriteAtStable(bytes.Repeat(block(), 16), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Nothing kicks the destage loop from here on, and its timer is
	// longer than the test: destage runs only when called below.
	opts.DestageDelay = time.Hour
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err = s.OpenVolume(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Truncate(crashBS); err != nil { // selfLimit = 1
		t.Fatal(err)
	}
	want := block()
	if _, err := v.WriteAt(want, 5*crashBS); err != nil {
		t.Fatal(err)
	}
	filler := make([]byte, 4<<20)
	crashFill(rng, filler)
	for i := range 9 { // 36 MiB: the first destage batch ends inside it
		// A distinct stamp per block keeps dedupe from shrinking the
		// records; the rest stays incompressible.
		for b := 0; b < len(filler); b += crashBS {
			binary.LittleEndian.PutUint64(filler[b:], uint64(i)<<32|uint64(b))
		}
		if _, err := v.WriteAt(filler, 1<<20+int64(i)*int64(len(filler))); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Truncate(8 * crashBS); err != nil { // block 5 stays
		t.Fatal(err)
	}
	if err := s.destage(); err != nil { // one batch, without the truncate
		t.Fatal(err)
	}
	got := make([]byte, crashBS)
	if _, err := v.ReadAt(got, 5*crashBS); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("block 5 after a partial destage: zeros=%v; want the data written", isZero(got))
	}
	// Read-modify-write of the block, then everything destaged.
	if _, err := v.WriteAt([]byte{0xEE}, 5*crashBS); err != nil {
		t.Fatal(err)
	}
	want[0] = 0xEE
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(got, 5*crashBS); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("block 5 after a 1-byte write and flush: zeros after the byte=%v; want the data written", isZero(got[1:]))
	}
}
