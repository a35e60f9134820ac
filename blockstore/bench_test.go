package blockstore

// Store-level benchmarks: ingest, stable 4 KiB writes, random and sequential
// reads, each on a real store on the real disk, and two opt-in tests that
// check the targets (write scaling, peak RSS of a large ingest).
//
// Every store lives in b.TempDir(), so TMPDIR must be on a disk file system,
// not tmpfs; perfDir warns when it is not. docs/notes/benchmarks.md records
// the figures. Typical runs:
//
//	go test -run XXX -bench Ingest -benchtime 3x .   # one op = 256 MiB
//	go test -run XXX -bench 'StableWrite|Read' .     # one op = one I/O
//	go test -run TestStableWriteScaling -scaling -v .
//	go test -run TestPeakRSS -rss -rss.size 8GiB -timeout 30m -v .

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	perfScaling     = flag.Bool("scaling", false, "run TestStableWriteScaling: 1 vs 64 stable 4 KiB writers, 3 s each, ratio must be >= 10")
	perfScalingTime = flag.Duration("scaling.time", 3*time.Second, "TestStableWriteScaling: how long each writer count runs (longer windows take in more front merges)")
	perfRSS         = flag.Bool("rss", false, "run TestPeakRSS: a child process ingests -rss.size of unique data; its peak RSS must stay under 512 MiB")
	perfRSSSize     = perfByteSize(8 << 30)
	// BenchmarkGCFree's volume: 512 MiB, what make bench's guest rewrites.
	perfGCFreeSize = perfByteSize(512 << 20)
	perfBlockSize  = flag.Int("bench.bs", 0, "block size of the stores the benchmarks make (0 = the default)")
	// The disk's rate varies a lot on a shared virtual disk; a fixed figure
	// makes x-disk comparable between runs.
	perfDiskMBps = flag.Float64("disk.mbps", 0, "BenchmarkIngest: the disk's sequential write rate in MB/s for x-disk (0 = measure it once)")
)

func init() {
	flag.Var(&perfRSSSize, "rss.size", "bytes TestPeakRSS ingests (suffixes KiB, MiB, GiB)")
	flag.Var(&perfGCFreeSize, "gcfree.size", "bytes BenchmarkGCFree writes and frees (suffixes KiB, MiB, GiB)")
}

const (
	perfWrite  = 1 << 20   // ingest write size
	perfBatch  = 256 << 20 // ingest bytes per benchmark op, Sync'ed at its end
	perfDupSet = 64 << 20  // the data the duplicate benchmark writes again and again
	perfRegion = 1 << 30   // region the write and read benchmarks work in
	perfIO     = 4 << 10   // small I/O size
	// perfCorpusSize of real OS files, half from each root.
	perfCorpusSize = 128 << 20
	perfRSSLimit   = 512 << 20
	perfRSSChild   = "DSTORE_PERF_RSS_CHILD" // names the child's datastore dir
	// perfRSSHeap names a file for a heap profile the child writes halfway
	// through, to see what holds the memory (go tool pprof -sample_index=inuse_space).
	perfRSSHeap = "DSTORE_PERF_RSS_HEAPPROFILE"
)

// perfByteSize is a flag value in bytes that accepts KiB/MiB/GiB suffixes.
type perfByteSize int64

func (s *perfByteSize) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *perfByteSize) Set(v string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("bad size %q", v)
	}
	*s = perfByteSize(n * mult)
	return nil
}

// perfDir is a fresh directory for a store, warning when it is on tmpfs:
// figures from RAM say nothing about the disk.
func perfDir(tb testing.TB) string {
	dir := tb.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		tb.Logf("WARNING: %s is on tmpfs; set TMPDIR to a directory on a disk for meaningful figures", dir)
	}
	return dir
}

// perfOpen makes and opens a datastore in dir; the cleanup closes it unless
// the caller already did.
func perfOpen(tb testing.TB, dir string) *Store {
	tb.Helper()
	if !IsInitialized(dir) {
		if err := Init(dir, InitOptions{BlockSize: *perfBlockSize}); err != nil {
			tb.Fatal(err)
		}
	}
	s, err := Open(dir, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			tb.Error(err)
		}
	})
	return s
}

// perfEvict drops dir's files from the page cache, so the next reads come
// from the disk. The files must be durable (fadvise does not drop dirty
// pages), which they are after Flush or Close.
func perfEvict(tb testing.TB, dir string) {
	tb.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// perfCPU is the CPU time (user + system) the process has used. On a shared
// machine wall-clock figures depend on the neighbours; CPU per op does much
// less, and bounds what an idle machine could do.
func perfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perfReadBytes returns the process's bytes read by syscalls (rchar) and
// from the block device (read_bytes), from /proc/self/io: with the logical
// bytes read they show read amplification and duplicate reads.
func perfReadBytes() (rchar, disk int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "read_bytes":
			disk = n
		}
	}
	return rchar, disk
}

// perfReportReads reports bytes read by syscalls and from the disk per
// logical byte since (rchar0, disk0).
func perfReportReads(b *testing.B, rchar0, disk0, logical int64) {
	rchar, disk := perfReadBytes()
	if logical > 0 && rchar > 0 {
		b.ReportMetric(float64(rchar-rchar0)/float64(logical), "pread-x")
		b.ReportMetric(float64(disk-disk0)/float64(logical), "disk-read-x")
	}
}

// perfKeystream fills p with AES-CTR keystream: random-looking bytes at
// several GB/s, so generating unique data costs little next to storing it.
func perfKeystream(seed uint64) cipher.Stream {
	var key, iv [16]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	return cipher.NewCTR(blk, iv[:])
}

func perfRandom(p []byte, seed uint64) {
	clear(p)
	perfKeystream(seed).XORKeyStream(p, p)
}

// perfCorpus is ~128 MiB of real OS files, half from shared libraries and
// half from /usr/share, at most 1 MiB from any one file, each file padded to
// 4 KiB as a file system would lay it out; cut to a whole number of MiB.
var perfCorpus = sync.OnceValues(func() ([]byte, error) {
	corpus := make([]byte, 0, perfCorpusSize+(2<<20))
	for _, root := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/share"} {
		limit := len(corpus) + perfCorpusSize/2
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if len(corpus) >= limit {
				return filepath.SkipAll
			}
			f, err := os.Open(path)
			if err != nil {
				return nil
			}
			defer f.Close()
			want := min(1<<20, limit-len(corpus))
			n, _ := io.ReadFull(f, corpus[len(corpus):len(corpus)+want])
			if n == 0 {
				return nil
			}
			corpus = corpus[:len(corpus)+n]
			if pad := len(corpus) % 4096; pad != 0 {
				corpus = append(corpus, make([]byte, 4096-pad)...)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	corpus = corpus[:len(corpus)&^(perfWrite-1)]
	if len(corpus) < perfCorpusSize/2 {
		return nil, fmt.Errorf("only %d bytes of OS files under /usr/lib/x86_64-linux-gnu and /usr/share", len(corpus))
	}
	return corpus, nil
})

var perfRandPool = sync.OnceValue(func() []byte {
	p := make([]byte, perfDupSet)
	perfRandom(p, 1)
	return p
})

// Stamps make a pool of data yield new blocks on every pass.
const (
	stampNone   = iota // the pool as it is: every pass duplicates the last
	stampUnique        // the first word of every block is a counter: all unique
	stampPass          // non-zero blocks get a per-pass mask on their first word
)

// perfSource hands out the 1 MiB writes of a benchmark from a pool of data.
// stampPass keeps what makes real data real: zero blocks stay zero, blocks
// equal within a pass stay equal, compressibility barely changes.
//
// A stamping source works on its own copy of the pool and stamps the piece
// it hands out in place, eight bytes per block, instead of copying the
// piece first: the copy cost the writing goroutine, which the store's write
// path runs on, a megabyte of memmove per write. A piece handed out stays
// valid until the source comes round to it again (WriteAt does not keep
// its buffer).
type perfSource struct {
	pool  []byte
	bs    int
	stamp int
	zero  []bool   // stampPass: block i of the pool is all zeros
	mask  []uint64 // stampPass: the mask piece i's blocks carry now
	pos   int
	pass  uint64
	ctr   uint64
}

func newPerfSource(pool []byte, bs, stamp int) *perfSource {
	src := &perfSource{pool: pool, bs: bs, stamp: stamp}
	if stamp != stampNone {
		src.pool = bytes.Clone(pool)
	}
	if stamp == stampPass {
		src.zero = make([]bool, len(pool)/bs)
		for i := range src.zero {
			src.zero[i] = isZero(pool[i*bs : (i+1)*bs])
		}
		src.mask = make([]uint64, len(pool)/perfWrite)
	}
	return src
}

func (src *perfSource) next() []byte {
	if src.pos == len(src.pool) {
		src.pos = 0
		src.pass++
	}
	piece := src.pool[src.pos : src.pos+perfWrite]
	first := src.pos / src.bs
	src.pos += perfWrite
	switch src.stamp {
	case stampUnique:
		for b := 0; b < perfWrite/src.bs; b++ {
			src.ctr++
			binary.LittleEndian.PutUint64(piece[b*src.bs:], src.ctr)
		}
	case stampPass:
		// The first word of every non-zero block is its original XOR this
		// pass's mask: apply the difference from the mask it carries.
		mask := (src.pass + 1) * 0x9E3779B97F4A7C15
		delta := mask ^ src.mask[first*src.bs/perfWrite]
		src.mask[first*src.bs/perfWrite] = mask
		for b := 0; b < perfWrite/src.bs; b++ {
			if !src.zero[first+b] {
				w := piece[b*src.bs:]
				binary.LittleEndian.PutUint64(w, binary.LittleEndian.Uint64(w)^delta)
			}
		}
	}
	return piece
}

// perfDisk holds the disk's own sequential write rate with fdatasync, in
// MB/s, measured next to the stores, once per process for each number of
// bytes asked for.
//
// The rate depends on how much is written: this virtual disk's host absorbs
// a burst of a few hundred MiB in a cache (256 MiB: 0.9-1.3 GB/s) and
// writes longer runs at the disk's own pace (1-4 GiB: 0.4-0.55 GB/s). A
// benchmark therefore compares itself with the disk writing the same number
// of bytes it ingests in the run it reports.
var perfDisk struct {
	mu   sync.Mutex
	mbps map[int64]float64
}

func perfDiskRate(tb testing.TB, dir string, bytes int64) float64 {
	if *perfDiskMBps > 0 {
		return *perfDiskMBps
	}
	perfDisk.mu.Lock()
	defer perfDisk.mu.Unlock()
	if r, ok := perfDisk.mbps[bytes]; ok {
		return r
	}
	r, err := measureDiskRate(dir, bytes)
	if err != nil {
		tb.Fatal(err)
	}
	if perfDisk.mbps == nil {
		perfDisk.mbps = make(map[int64]float64)
	}
	perfDisk.mbps[bytes] = r
	return r
}

func measureDiskRate(dir string, bytes int64) (float64, error) {
	f, err := os.CreateTemp(dir, "diskrate-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, perfWrite)
	perfRandom(buf, 2)
	start := time.Now()
	for n := int64(0); n < bytes; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, err
	}
	return float64(bytes) / time.Since(start).Seconds() / 1e6, nil
}

// perfFill writes size bytes of compressible data (the OS corpus, a new pass
// each time round) to v from offset 0 and destages it.
func perfFill(tb testing.TB, s *Store, v *Volume, size int64) {
	tb.Helper()
	corpus, err := perfCorpus()
	if err != nil {
		tb.Skip(err)
	}
	src := newPerfSource(corpus, s.BlockSize(), stampPass)
	for off := int64(0); off < size; off += perfWrite {
		if _, err := v.WriteAt(src.next(), off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := v.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkIngest writes 256 MiB per op in 1 MiB WriteAt calls and Syncs at
// the end of each op; the destage of everything (Flush) is timed too. The
// x-disk metric is ingest MB/s over the disk's own sequential write rate with
// fdatasync (disk-MB/s), measured writing as many bytes as the run ingests
// (run with -benchtime 8x: 2 GiB). Targets: compressible >= 0.8 x-disk,
// duplicate >= 1500 MB/s.
func BenchmarkIngest(b *testing.B) {
	for _, kind := range []string{"incompressible", "compressible", "duplicate"} {
		b.Run(kind, func(b *testing.B) { benchIngest(b, kind) })
	}
}

func benchIngest(b *testing.B, kind string) {
	dir := perfDir(b)
	// The disk writes what the run ingests (b.N x 256 MiB); the 256 MiB
	// burst is reported beside it (x-burst), the figure earlier passes
	// compared with.
	disk := perfDiskRate(b, dir, int64(b.N)*perfBatch)
	burst := perfDiskRate(b, dir, perfBatch)
	s := perfOpen(b, dir)
	bs := s.BlockSize()
	var src *perfSource
	switch kind {
	case "incompressible":
		src = newPerfSource(perfRandPool(), bs, stampUnique)
	case "compressible":
		corpus, err := perfCorpus()
		if err != nil {
			b.Skip(err)
		}
		src = newPerfSource(corpus, bs, stampPass)
	case "duplicate":
		corpus, err := perfCorpus()
		if err != nil {
			b.Skip(err)
		}
		src = newPerfSource(corpus[:perfDupSet], bs, stampNone)
	}
	v, err := s.CreateVolume()
	if err != nil {
		b.Fatal(err)
	}
	off := int64(0)
	if kind == "duplicate" {
		// Prime: the data is stored and indexed before the timer starts, as
		// a golden image is before its clones are written.
		for ; off < perfDupSet; off += perfWrite {
			if _, err := v.WriteAt(src.next(), off); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(perfBatch)
	b.ReportAllocs()
	b.ResetTimer()
	stop := perfProfile(b)
	cpu0 := perfCPU()
	for i := 0; i < b.N; i++ {
		for n := 0; n < perfBatch; n += perfWrite {
			if _, err := v.WriteAt(src.next(), off); err != nil {
				b.Fatal(err)
			}
			off += perfWrite
		}
		if err := v.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	stop()
	mbps := reportIngest(b, cpu0, disk)
	b.ReportMetric(mbps/burst, "x-burst")
	if st, err := s.Stats(); err == nil {
		b.ReportMetric(st.CompressionRatio, "compress-x")
		b.ReportMetric(st.DedupeRatio, "dedupe-x")
	}
}

// reportIngest reports what every ingest benchmark reports of its b.N x
// perfBatch bytes: CPU per byte since cpu0, and the rate against the
// disk's (disk MB/s). It returns the rate in MB/s.
func reportIngest(b *testing.B, cpu0 time.Duration, disk float64) float64 {
	b.ReportMetric(float64(perfCPU()-cpu0)/float64(int64(b.N)*perfBatch), "cpu-ns/B")
	mbps := float64(b.N) * perfBatch / b.Elapsed().Seconds() / 1e6
	b.ReportMetric(mbps/disk, "x-disk")
	b.ReportMetric(disk, "disk-MB/s")
	return mbps
}

// BenchmarkIngestFloor is the reference for BenchmarkIngest/compressible:
// the same stream of writes (the OS corpus, a new pass each time round,
// b.N x 256 MiB) with only the work no design of this store can skip, on
// all CPUs: the fingerprint of every block, a map lookup for duplicates
// within the run, s2 of the blocks not seen before (with the store's own
// sealer), and the sealed bytes appended to files by one goroutine, with
// one fdatasync at the end. copies=1 writes them once (a store whose log
// were its packs); copies=2 twice (dstore: the log, then a pack). No
// metadata, no reads, no memory bound. x-disk is against the disk writing
// as many bytes as the run ingests, as BenchmarkIngest's is.
func BenchmarkIngestFloor(b *testing.B) {
	corpus, err := perfCorpus()
	if err != nil {
		b.Skip(err)
	}
	for _, copies := range []int{1, 2} {
		b.Run(fmt.Sprintf("copies=%d", copies), func(b *testing.B) {
			dir := perfDir(b)
			disk := perfDiskRate(b, dir, int64(b.N)*perfBatch)
			seal := newTestSealer(b, "s2", DefaultBlockSize, false)
			src := newPerfSource(corpus, DefaultBlockSize, stampPass)
			var files []*os.File
			for range copies {
				f, err := os.CreateTemp(dir, "floor-*")
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				files = append(files, f)
			}
			type piece struct{ data, sealed []byte }
			work := make(chan piece)
			out := make(chan []byte, 4)
			// Sealed buffers go round: worker, writer, back.
			free := make(chan []byte, 8)
			for range cap(free) {
				free <- make([]byte, 0, maxSealedLen(DefaultBlockSize)*(perfWrite/DefaultBlockSize))
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := make(map[Fingerprint]struct{})
			for range runtime.GOMAXPROCS(0) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					const nb = perfWrite / DefaultBlockSize
					blocks := make([][]byte, 0, nb)
					fps := make([]Fingerprint, nb)
					for p := range work {
						blocks = blocks[:0]
						for i := 0; i < perfWrite; i += DefaultBlockSize {
							if blk := p.data[i : i+DefaultBlockSize]; !isZero(blk) {
								blocks = append(blocks, blk)
							}
						}
						seal.fingerprintMany(blocks, fps[:len(blocks)])
						dst := p.sealed[:0]
						for i, blk := range blocks {
							mu.Lock()
							_, dup := seen[fps[i]]
							seen[fps[i]] = struct{}{}
							mu.Unlock()
							if !dup {
								_, dst = seal.sealInPlace(dst, fps[i], blk, true)
							}
						}
						out <- dst
					}
				}()
			}
			writeErr := make(chan error, 1)
			go func() {
				var err error
				for buf := range out {
					for _, f := range files {
						if _, werr := f.Write(buf); werr != nil && err == nil {
							err = werr
						}
					}
					free <- buf[:0]
				}
				writeErr <- err
			}()
			b.SetBytes(perfBatch)
			b.ResetTimer()
			cpu0 := perfCPU()
			for range b.N {
				for n := 0; n < perfBatch; n += perfWrite {
					// The piece stays valid: the source comes round to it
					// again 128 pieces later, long after a worker is done.
					work <- piece{src.next(), <-free}
				}
			}
			close(work)
			wg.Wait()
			close(out)
			if err := <-writeErr; err != nil {
				b.Fatal(err)
			}
			for _, f := range files {
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportIngest(b, cpu0, disk)
		})
	}
}

// perfStableEnv is a store with a 1 GiB region of compressible data frozen
// under four volumes (the original and three clones), as after a snapshot
// or a clone: the 4 KiB writes then read-modify-write real blocks.
type perfStableEnv struct {
	s    *Store
	vols []*Volume
}

func newPerfStableEnv(tb testing.TB) *perfStableEnv {
	tb.Helper()
	s := perfOpen(tb, perfDir(tb))
	v, err := s.CreateVolume()
	if err != nil {
		tb.Fatal(err)
	}
	perfFill(tb, s, v, perfRegion)
	frozen, err := s.Freeze(v.ID())
	if err != nil {
		tb.Fatal(err)
	}
	env := &perfStableEnv{s: s, vols: []*Volume{v}}
	for range 3 {
		c, err := s.Clone(frozen[0])
		if err != nil {
			tb.Fatal(err)
		}
		env.vols = append(env.vols, c)
	}
	return env
}

// run does stable 4 KiB writes at random aligned offsets of the region,
// spread over the first nvols volumes, from writers goroutines, until n
// writes are done (n > 0) or d has passed (d > 0). It returns the writes done.
func (e *perfStableEnv) run(writers, nvols int, n int64, d time.Duration) (int64, error) {
	var stamp atomic.Uint64
	return runWriters(writers, n, d, func(w int) func() error {
		rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
		buf := make([]byte, perfIO)
		perfRandom(buf, uint64(w)+100)
		return func() error {
			binary.LittleEndian.PutUint64(buf, stamp.Add(1))
			v := e.vols[rng.IntN(nvols)]
			off := rng.Int64N(perfRegion/perfIO) * perfIO
			_, err := v.WriteAtStable(buf, off)
			return err
		}
	})
}

// runWriters runs writers goroutines, each calling its own op (made by
// newOp for writer w) again and again, until n calls are done (n > 0) or
// d has passed (d > 0), or an op fails. It returns the calls that
// succeeded and the first error.
func runWriters(writers int, n int64, d time.Duration, newOp func(w int) func() error) (int64, error) {
	var (
		claimed, done atomic.Int64
		firstErr      error
		errOnce       sync.Once
		wg            sync.WaitGroup
		deadline      time.Time
	)
	if d > 0 {
		deadline = time.Now().Add(d)
	}
	for w := range writers {
		op := newOp(w)
		wg.Go(func() {
			for {
				if n > 0 && claimed.Add(1) > n {
					return
				}
				if d > 0 && time.Now().After(deadline) {
					return
				}
				if err := op(); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return done.Load(), firstErr
}

// BenchmarkStableWrite4K: one op is one 4 KiB WriteAtStable. Target: 64
// writers reach at least 10x the IOPS of one (TestStableWriteScaling checks
// it).
func BenchmarkStableWrite4K(b *testing.B) {
	env := newPerfStableEnv(b)
	for _, c := range []struct{ writers, vols int }{{1, 1}, {16, 1}, {64, 1}, {64, 4}} {
		name := fmt.Sprintf("writers=%d", c.writers)
		if c.vols > 1 {
			name += fmt.Sprintf(",vols=%d", c.vols)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(perfIO)
			b.ReportAllocs()
			stop := perfProfile(b)
			b.ResetTimer()
			cpu0 := perfCPU()
			if _, err := env.run(c.writers, c.vols, int64(b.N), 0); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
			b.ReportMetric(float64((perfCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
			// The next run starts with an empty log, not this one's backlog.
			if err := env.s.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkStableWriteFloor is the reference for the stable-write scaling
// target: what the disk allows when nothing but the bytes is paid for. A
// bare group-commit log over a region of a file written beforehand
// (appenders copy a 4 KiB block and a 64-byte header
// into a buffer; one flusher writes the buffer and fdatasyncs; each writer
// waits for its bytes, then writes again) takes stable 4 KiB writes of
// random data from 1 and 64 writers. With copies=2 a second goroutine also
// writes every durable byte again to another file with an fdatasync per
// 16 MiB, as destage writes the log's blocks into packs. No fingerprint,
// no compression, no metadata.
func BenchmarkStableWriteFloor(b *testing.B) {
	for _, copies := range []int{1, 2} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("copies=%d/writers=%d", copies, writers), func(b *testing.B) {
				benchStableFloor(b, copies, writers)
			})
		}
	}
}

func benchStableFloor(b *testing.B, copies, writers int) {
	fl := newStableFloor(b, perfDir(b), copies)
	b.SetBytes(perfIO)
	b.ResetTimer()
	n, err := fl.run(writers, int64(b.N), 0)
	b.StopTimer()
	if cerr := fl.close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "IOPS")
}

// stableFloor is BenchmarkStableWriteFloor's bare group-commit log, kept
// open across runs so that TestStableWriteScaling can measure it with one
// writer and with 64 next to the store, in the same run.
type stableFloor struct {
	logf *os.File
	mu   sync.Mutex
	cond sync.Cond // fill grew, durable moved, an error, done
	fill []byte    // appended, not yet taken by the flusher
	// fillEnd is the log offset just past fill, durable the one up to
	// which the log is durable.
	fillEnd, durable int64
	done             bool
	ioErr            error
	copyq            chan []byte // durable bytes for the second copy
	bg               sync.WaitGroup
}

// stableFloorRegion is the floor's log: a region written once before the
// clock starts and then used round and round, as dstore reuses its
// segments, so an fdatasync writes data, not the file's size and extents.
const stableFloorRegion = 256 << 20

// newStableFloor writes the log region in dir and starts the flusher and,
// with copies=2, the second writer.
func newStableFloor(tb testing.TB, dir string, copies int) *stableFloor {
	tb.Helper()
	open := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { f.Close() })
		return f
	}
	fl := &stableFloor{logf: open("floor-log"), copyq: make(chan []byte, 64)}
	fl.cond.L = &fl.mu
	zero := make([]byte, 1<<20)
	for off := int64(0); off < stableFloorRegion; off += int64(len(zero)) {
		if _, err := fl.logf.WriteAt(zero, off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := unix.Fdatasync(int(fl.logf.Fd())); err != nil {
		tb.Fatal(err)
	}
	fl.bg.Add(1)
	go fl.flusher(copies == 2)
	if copies == 2 {
		packf := open("floor-pack")
		fl.bg.Add(1)
		go func() { // destage: the same bytes again, synced per 16 MiB
			defer fl.bg.Done()
			var off, unsynced int64
			var err error
			for buf := range fl.copyq {
				if err != nil {
					continue // drain, so the flusher never blocks
				}
				if _, err = packf.WriteAt(buf, off); err == nil {
					off += int64(len(buf))
					if unsynced += int64(len(buf)); unsynced >= 16<<20 {
						err = unix.Fdatasync(int(packf.Fd()))
						unsynced = 0
					}
				}
				if err != nil {
					fl.fail(err)
				}
			}
		}()
	}
	return fl
}

func (fl *stableFloor) fail(err error) {
	fl.mu.Lock()
	if fl.ioErr == nil {
		fl.ioErr = err
	}
	fl.cond.Broadcast()
	fl.mu.Unlock()
}

// flusher writes what the writers appended and fdatasyncs it, one batch
// at a time, and hands the durable bytes to the second writer (second).
func (fl *stableFloor) flusher(second bool) {
	defer fl.bg.Done()
	defer close(fl.copyq)
	spare := make([]byte, 0, 1<<20)
	for {
		fl.mu.Lock()
		for len(fl.fill) == 0 && !fl.done {
			fl.cond.Wait()
		}
		if len(fl.fill) == 0 {
			fl.mu.Unlock()
			return
		}
		buf, end := fl.fill, fl.fillEnd
		fl.fill = spare[:0]
		fl.mu.Unlock()
		var err error
		for start, rest := end-int64(len(buf)), buf; len(rest) > 0 && err == nil; {
			at := start % stableFloorRegion
			n := min(int64(len(rest)), stableFloorRegion-at)
			_, err = fl.logf.WriteAt(rest[:n], at)
			start, rest = start+n, rest[n:]
		}
		if err == nil {
			err = unix.Fdatasync(int(fl.logf.Fd()))
		}
		if second && err == nil {
			fl.copyq <- bytes.Clone(buf)
		}
		fl.mu.Lock()
		if err != nil && fl.ioErr == nil {
			fl.ioErr = err
		}
		fl.durable = end
		fl.cond.Broadcast()
		fl.mu.Unlock()
		spare = buf
	}
}

// run has writers goroutines each append a 64-byte header and a 4 KiB
// block of random data and wait for it to be durable, again and again,
// until n writes are done (n > 0) or d has passed (d > 0). It returns the
// writes done.
func (fl *stableFloor) run(writers int, n int64, d time.Duration) (int64, error) {
	return runWriters(writers, n, d, func(w int) func() error {
		block := make([]byte, perfIO)
		perfRandom(block, uint64(w)+200)
		var hdr [64]byte
		var i uint64
		return func() error {
			i++
			binary.LittleEndian.PutUint64(block, i)
			fl.mu.Lock()
			defer fl.mu.Unlock()
			fl.fill = append(append(fl.fill, hdr[:]...), block...)
			fl.fillEnd += int64(len(hdr) + len(block))
			mine := fl.fillEnd
			fl.cond.Broadcast()
			for fl.durable < mine && fl.ioErr == nil {
				fl.cond.Wait()
			}
			return fl.ioErr
		}
	})
}

// close stops the flusher and the second writer and returns the first
// I/O error.
func (fl *stableFloor) close() error {
	fl.mu.Lock()
	fl.done = true
	fl.cond.Broadcast()
	fl.mu.Unlock()
	fl.bg.Wait()
	return fl.ioErr
}

// perfProfile starts a CPU profile of the timed part alone when
// DSTORE_PERF_CPUPROFILE names a file (-test.cpuprofile also covers the
// setup, here a 1 GiB fill and its destage), and an execution trace of it
// when DSTORE_PERF_TRACE does (go tool trace -pprof=sched shows who waited
// for a processor); the names get the benchmark's name appended. It
// returns the stop function.
func perfProfile(b *testing.B) func() {
	var stops []func()
	start := func(env string, begin func(io.Writer) error, end func()) {
		path := os.Getenv(env)
		if path == "" {
			return
		}
		f, err := os.Create(path + "." + strings.NewReplacer("/", "_", "=", "", ",", "_").Replace(b.Name()))
		if err != nil {
			b.Fatal(err)
		}
		if err := begin(f); err != nil {
			b.Fatal(err)
		}
		stops = append(stops, func() { end(); f.Close() })
	}
	start("DSTORE_PERF_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)
	start("DSTORE_PERF_TRACE", trace.Start, trace.Stop)
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// TestStableWriteScaling checks the target: 64 concurrent stable
// 4 KiB writers reach at least 10x one writer's IOPS (group commit).
func TestStableWriteScaling(t *testing.T) {
	if !*perfScaling {
		t.Skip("enable with -scaling")
	}
	env := newPerfStableEnv(t)
	// The disk's own figures, in the same run: BenchmarkStableWriteFloor's
	// bare log with a second copy (copies=2), each writer count measured
	// right after the store's. On the benchmark machine the disk's rate
	// swings by half within seconds, and a ratio read apart from the
	// disk's is hard to place.
	floor := newStableFloor(t, perfDir(t), 2)
	d := *perfScalingTime
	iops, floorIOPS := map[int]float64{}, map[int]float64{}
	for _, writers := range []int{1, 64} {
		start, cpu0, syncs0 := time.Now(), perfCPU(), env.s.log.syncs.Load()
		n, err := env.run(writers, 1, 0, d)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		iops[writers] = float64(n) / took.Seconds()
		syncs := env.s.log.syncs.Load() - syncs0
		flushStart := time.Now()
		if err := env.s.Flush(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%2d writers: %d stable 4 KiB writes in %v: %.0f IOPS, %.0f CPU-µs per write; %d log syncs, %.1f writes and %.0f µs each; destaging the rest took %v",
			writers, n, d, iops[writers], float64((perfCPU()-cpu0).Microseconds())/float64(max(n, 1)),
			syncs, float64(n)/float64(max(syncs, 1)), float64(took.Microseconds())/float64(max(syncs, 1)),
			time.Since(flushStart).Round(time.Millisecond))
		start = time.Now()
		n, err = floor.run(writers, 0, d)
		if err != nil {
			t.Fatal(err)
		}
		floorIOPS[writers] = float64(n) / time.Since(start).Seconds()
		t.Logf("%2d writers, the disk's floor (bare log, two copies): %.0f IOPS; the store reached %.0f%% of it",
			writers, floorIOPS[writers], 100*iops[writers]/floorIOPS[writers])
	}
	if err := floor.close(); err != nil {
		t.Fatal(err)
	}
	ratio := iops[64] / iops[1]
	t.Logf("64 writers / 1 writer = %.1fx (target >= 10x); the disk's floor: %.1fx", ratio, floorIOPS[64]/floorIOPS[1])
	if ratio < 10 {
		t.Errorf("64 writers reach %.1fx one writer's IOPS, want >= 10x", ratio)
	}
}

// perfReadEnv makes a store whose volume holds 1 GiB of compressible data,
// destaged and closed, so each timed run can open a cold handle on it.
func perfReadEnv(b *testing.B) (string, VolumeID) {
	dir := perfDir(b)
	s := perfOpen(b, dir)
	v, err := s.CreateVolume()
	if err != nil {
		b.Fatal(err)
	}
	perfFill(b, s, v, perfRegion)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return dir, v.ID()
}

// perfColdOpen evicts the store's files from the page cache and opens a
// fresh handle: an empty chunk cache over data that must come from disk.
func perfColdOpen(b *testing.B, dir string, id VolumeID) (*Store, *Volume) {
	perfEvict(b, dir)
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	v, err := s.OpenVolume(id)
	if err != nil {
		s.Close()
		b.Fatal(err)
	}
	return s, v
}

// BenchmarkRandRead4K: one op is one 4 KiB ReadAt at a random aligned
// offset of 1 GiB of destaged compressible data, from a cold start.
func BenchmarkRandRead4K(b *testing.B) {
	dir, id := perfReadEnv(b)
	for _, readers := range []int{1, 16} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			s, v := perfColdOpen(b, dir, id)
			defer s.Close()
			b.SetBytes(perfIO)
			b.ReportAllocs()
			rchar0, disk0 := perfReadBytes()
			b.ResetTimer()
			cpu0 := perfCPU()
			var (
				claimed atomic.Int64
				wg      sync.WaitGroup
				errOnce sync.Once
				rerr    error
			)
			for r := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(r), 7))
					buf := make([]byte, perfIO)
					for claimed.Add(1) <= int64(b.N) {
						off := rng.Int64N(perfRegion/perfIO) * perfIO
						if _, err := v.ReadAt(buf, off); err != nil {
							errOnce.Do(func() { rerr = err })
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if rerr != nil {
				b.Fatal(rerr)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
			b.ReportMetric(float64((perfCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
			perfReportReads(b, rchar0, disk0, int64(b.N)*perfIO)
		})
	}
}

// BenchmarkSeqRead: one op is one 1 MiB ReadAt, in order through 1 GiB of
// destaged compressible data; every pass starts cold.
func BenchmarkSeqRead(b *testing.B) {
	dir, id := perfReadEnv(b)
	s, v := perfColdOpen(b, dir, id)
	defer s.Close()
	buf := make([]byte, perfWrite)
	b.SetBytes(perfWrite)
	b.ReportAllocs()
	rchar0, disk0 := perfReadBytes()
	b.ResetTimer()
	cpu0 := perfCPU()
	off := int64(0)
	for i := 0; i < b.N; i++ {
		if off == perfRegion {
			b.StopTimer()
			perfEvict(b, dir)
			off = 0
			b.StartTimer()
		}
		if _, err := v.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += perfWrite
	}
	b.StopTimer()
	b.ReportMetric(float64(perfCPU()-cpu0)/float64(int64(b.N)*perfWrite), "cpu-ns/B")
	perfReportReads(b, rchar0, disk0, int64(b.N)*perfWrite)
}

// TestPeakRSS checks that ingesting -rss.size (8 GiB) of unique data keeps
// the process's peak RSS under 512 MiB. The ingest runs in a child process
// (this test binary again) so that the figure is its own, not this one's.
func TestPeakRSS(t *testing.T) {
	if dir := os.Getenv(perfRSSChild); dir != "" {
		perfRSSIngest(t, dir, int64(perfRSSSize))
		return
	}
	if !*perfRSS {
		t.Skip("enable with -rss [-rss.size 8GiB]")
	}
	size := int64(perfRSSSize)
	dir := perfDir(t)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	// The log is bounded (256 MiB) but packs hold all of it.
	if need, free := size+size/8+(1<<30), int64(st.Bavail)*st.Bsize; free < need {
		t.Fatalf("%s has %d MiB free, the test needs about %d MiB", dir, free>>20, need>>20)
	}
	ctx := t.Context()
	if d, ok := t.Deadline(); ok {
		// Kill the child before the test binary's own timeout panics, so
		// it does not outlive this test.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-5*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPeakRSS$", "-test.v", "-test.timeout=0",
		"-rss.size="+strconv.FormatInt(size, 10), "-bench.bs="+strconv.Itoa(*perfBlockSize))
	cmd.Env = append(os.Environ(), perfRSSChild+"="+dir)
	cmd.Stderr = os.Stderr
	start := time.Now()
	out, err := cmd.Output()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^DSTORE_RSS (.*)$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("child printed no DSTORE_RSS line:\n%s", out)
	}
	fields := map[string]int64{}
	for _, kv := range strings.Fields(string(m[1])) {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("child: bad field %q", kv)
		}
		fields[k] = n
	}
	hwm := fields["vmhwm_kib"] << 10
	t.Logf("ingested %d MiB of unique data in %v (%.0f MB/s, Flush and Close included; child %v)",
		size>>20, time.Duration(fields["ingest_ns"]).Round(time.Millisecond),
		float64(size)/time.Duration(fields["ingest_ns"]).Seconds()/1e6, elapsed.Round(time.Millisecond))
	t.Logf("CPU %.2f ns per byte ingested (user+system, the data generator included)", float64(fields["cpu_ns"])/float64(size))
	t.Logf("peak RSS (VmHWM) %d MiB, limit %d MiB; sampled peaks: anonymous %d MiB, file-backed (bbolt mmap) %d MiB",
		hwm>>20, perfRSSLimit>>20, fields["peak_anon_kib"]>>10, fields["peak_file_kib"]>>10)
	t.Logf("Go runtime at the end: sys %d MiB, heap_sys %d MiB, total alloc %d MiB, %d GCs",
		fields["sys"]>>20, fields["heap_sys"]>>20, fields["total_alloc"]>>20, fields["num_gc"])
	if hwm == 0 {
		t.Fatal("child reported no VmHWM")
	}
	if hwm >= perfRSSLimit {
		t.Errorf("peak RSS %d MiB, want < %d MiB", hwm>>20, perfRSSLimit>>20)
	}
}

// perfRSSIngest is TestPeakRSS's child: it ingests size bytes of unique,
// incompressible data in 1 MiB writes, Syncing every 256 MiB, then Flushes
// and Closes and prints its peak RSS.
func perfRSSIngest(t *testing.T, dir string, size int64) {
	// As dstore serve does (cmd/dstore).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(MemoryLimit)
	}
	if err := Init(dir, InitOptions{BlockSize: *perfBlockSize}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	// VmHWM is the peak of anonymous plus file-backed resident memory
	// (bbolt maps its file); sample both to tell which one peaked.
	var peakAnon, peakFile atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if st, err := perfStatus(); err == nil {
				peakAnon.Store(max(peakAnon.Load(), st["RssAnon"]))
				peakFile.Store(max(peakFile.Load(), st["RssFile"]))
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	ks := perfKeystream(uint64(time.Now().UnixNano()))
	buf := make([]byte, perfWrite)
	start, cpu0 := time.Now(), perfCPU()
	for off := int64(0); off < size; off += perfWrite {
		ks.XORKeyStream(buf, buf) // a new keystream-mixed buffer every time
		if _, err := v.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if (off+perfWrite)%perfBatch == 0 {
			if err := v.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if path := os.Getenv(perfRSSHeap); path != "" && off == size/2 {
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := pprof.WriteHeapProfile(f); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ingest := time.Since(start)
	close(stop)
	<-sampled
	st, err := perfStatus()
	if err != nil {
		t.Fatal(err)
	}
	if st["VmHWM"] == 0 {
		t.Fatal("no VmHWM in /proc/self/status")
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("DSTORE_RSS vmhwm_kib=%d peak_anon_kib=%d peak_file_kib=%d ingest_ns=%d cpu_ns=%d sys=%d heap_sys=%d total_alloc=%d num_gc=%d\n",
		st["VmHWM"], peakAnon.Load(), peakFile.Load(), ingest.Nanoseconds(), (perfCPU() - cpu0).Nanoseconds(), ms.Sys, ms.HeapSys, ms.TotalAlloc, ms.NumGC)
}

// perfStatus returns the kB fields of /proc/self/status (VmHWM, VmRSS,
// RssAnon, RssFile, ...).
func perfStatus() (map[string]int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]int64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		v, kb := strings.CutSuffix(strings.TrimSpace(v), " kB")
		if !ok || !kb {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}

// BenchmarkGCFree times a GC that frees a whole volume's chunks: write
// -gcfree.size of unique data, destage, delete the volume, then GC (timed;
// the store is closed and reopened first so that bbolt's pages come from
// the page cache, not the process). Reports freed chunks per second.
func BenchmarkGCFree(b *testing.B) {
	dir := perfDir(b)
	s := perfOpen(b, dir)
	size := int64(perfGCFreeSize)
	v, err := s.CreateVolume()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(21, 22))
	p := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(p)) {
		fillRand(rng, p)
		if _, err := v.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := s.DeleteVolume(v.ID()); err != nil {
		b.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	s = perfOpen(b, dir)
	b.ResetTimer()
	start := time.Now()
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	b.StopTimer()
	if want := size / int64(s.bs); rep.ChunksFreed < want {
		b.Fatalf("GC freed %d chunks, want %d", rep.ChunksFreed, want)
	}
	b.ReportMetric(float64(rep.ChunksFreed)/took.Seconds(), "chunks/s")
	b.ReportMetric(took.Seconds(), "s/gc")
}
