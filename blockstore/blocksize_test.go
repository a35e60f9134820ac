package blockstore

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	blockSizeImage = flag.String("blocksize.image", "", "OS disk image for TestBlockSizeMeasure (bench/mkosimage.sh builds one); empty skips the test")
	blockSizeOut   = flag.String("blocksize.out", "", "also write TestBlockSizeMeasure's table, as markdown, to this file")
	blockSizeRuns  = flag.Int("blocksize.runs", 1, "runs of TestBlockSizeMeasure per block size; the table shows median throughputs")
)

const (
	bsmCopies   = 4       // the image, then copies with some blocks rewritten
	bsmRewrite  = 0.05    // fraction of the image's 4 KiB blocks each copy rewrites
	bsmIOSize   = 1 << 20 // write and read size
	bsmGuestBlk = 4 << 10 // the guest file system's block size
	bsmSeed     = 4       // fixed, so every block size sees the same workload
	bsmSmall    = 4096    // 4 KiB random rewrites after the cold read
)

// bsmPatch is one rewritten 4 KiB block of a copy.
type bsmPatch struct {
	off  int64
	data []byte
}

// bsmWorkload is the image and, for each copy after the first, the 4 KiB
// blocks it rewrites with random data, in offset order. The copies are made
// on the fly, one 1 MiB write at a time, so only the image stays in memory.
type bsmWorkload struct {
	image   []byte
	patches [][]bsmPatch // patches[0] is empty: the image itself
}

func newBSMWorkload(image []byte) *bsmWorkload {
	w := &bsmWorkload{image: image, patches: make([][]bsmPatch, bsmCopies)}
	rng := rand.New(rand.NewPCG(bsmSeed, 0))
	nblk := len(image) / bsmGuestBlk
	k := int(float64(nblk) * bsmRewrite)
	for c := 1; c < bsmCopies; c++ {
		chosen := make([]bool, nblk)
		for _, b := range rng.Perm(nblk)[:k] {
			chosen[b] = true
		}
		for b, ok := range chosen {
			if !ok {
				continue
			}
			p := bsmPatch{off: int64(b) * bsmGuestBlk, data: make([]byte, bsmGuestBlk)}
			fillRand(rng, p.data)
			w.patches[c] = append(w.patches[c], p)
		}
	}
	return w
}

// fill puts bytes [off, off+len(buf)) of copy c into buf.
func (w *bsmWorkload) fill(c int, buf []byte, off int64) {
	copy(buf, w.image[off:])
	end := off + int64(len(buf))
	for _, p := range w.patches[c] {
		if p.off+bsmGuestBlk <= off || p.off >= end {
			continue
		}
		copy(buf[p.off-off:], p.data)
	}
}

// bsmRow is the measurement at one block size.
type bsmRow struct {
	bs           int
	ingest       time.Duration
	read         time.Duration
	st           Stats
	metaBytes    int64 // meta.db's allocated size on disk
	metaFile     int64 // meta.db's apparent size (bbolt grows it ahead of use)
	logicalTotal int64 // bytes the workload wrote
	readBytes    int64
	small        time.Duration // bsmSmall 4 KiB random rewrites of one copy, with Sync and Flush
	runs         []bsmRow      // the runs a median row summarizes
}

func (r bsmRow) ingestMBs() float64   { return float64(r.logicalTotal) / 1e6 / r.ingest.Seconds() }
func (r bsmRow) readMBs() float64     { return float64(r.readBytes) / 1e6 / r.read.Seconds() }
func (r bsmRow) smallPerSec() float64 { return bsmSmall / r.small.Seconds() }

// reduction is what the workload wrote over what it costs on disk, packs
// and metadata together.
func (r bsmRow) reduction() float64 {
	return float64(r.logicalTotal) / float64(r.st.PhysicalBytes+r.metaBytes)
}

// TestBlockSizeMeasure measures, on a real OS image, what the datastore's
// block size trades: dedupe against metadata against throughput. For each
// block size it stores the image and three copies that each rewrite 5% of
// its 4 KiB blocks (issue 4's dedupe workload, shortened), then reads one
// copy back on a freshly opened store. It needs -blocksize.image.
func TestBlockSizeMeasure(t *testing.T) {
	if *blockSizeImage == "" {
		t.Skip("no -blocksize.image (bench/mkosimage.sh builds one)")
	}
	image, err := os.ReadFile(*blockSizeImage)
	if err != nil {
		t.Fatal(err)
	}
	if len(image) == 0 || len(image)%bsmIOSize != 0 {
		t.Fatalf("%s: %d bytes; want a non-empty multiple of 1 MiB", *blockSizeImage, len(image))
	}
	w := newBSMWorkload(image)
	runs := max(*blockSizeRuns, 1)
	var rows []bsmRow
	for _, bs := range []int{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%dKiB", bs>>10), func(t *testing.T) {
			var rs []bsmRow
			for range runs {
				rs = append(rs, measureBlockSize(t, w, bs))
				if t.Failed() {
					return
				}
			}
			rows = append(rows, medianRow(rs))
		})
	}
	if t.Failed() {
		return
	}
	table := bsmTable(rows)
	t.Logf("image %s (%d MiB), %d copies, %.0f%% of 4 KiB blocks rewritten per copy\n%s",
		*blockSizeImage, len(image)>>20, bsmCopies, bsmRewrite*100, table)
	if *blockSizeOut != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "Machine: %s\n\n", machineLine())
		fmt.Fprintf(&b, "Workload: `%s` (%d MiB) written to a volume in 1 MiB writes, then %d more copies "+
			"in their own volumes, each with %.0f%% of the image's 4 KiB blocks rewritten with random data "+
			"(seed %d); Sync and Flush. Read: the last copy, sequential 1 MiB reads, on a freshly opened "+
			"store with the packs and meta.db evicted from the page cache. Then %d 4 KiB writes of random data at "+
			"random 4 KiB-aligned offsets of the first copy, with Sync and Flush (the rate a guest file system's "+
			"writes get, read-modify-write included). Space figures are before these rewrites. Rates are medians of %d runs (range in brackets). Chunks, ratios and packs are the same in every run; "+
			"meta.db varies by a few percent (each datastore's fingerprint key is random, and so is the order of its index), "+
			"and the table shows the last run's.\n\n",
			filepath.Base(*blockSizeImage), len(image)>>20, bsmCopies-1, bsmRewrite*100, bsmSeed, bsmSmall, runs)
		b.WriteString(table)
		if err := os.WriteFile(*blockSizeOut, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func measureBlockSize(t *testing.T, w *bsmWorkload, bs int) bsmRow {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	row := bsmRow{bs: bs}
	size := int64(len(w.image))
	buf := make([]byte, bsmIOSize)
	ids := make([]VolumeID, bsmCopies)
	var filling time.Duration // building each copy's bytes is not the store's time
	start := time.Now()
	for c := range bsmCopies {
		v, err := s.CreateVolume()
		if err != nil {
			t.Fatal(err)
		}
		ids[c] = v.ID()
		for off := int64(0); off < size; off += bsmIOSize {
			f := time.Now()
			w.fill(c, buf, off)
			filling += time.Since(f)
			if _, err := v.WriteAt(buf, off); err != nil {
				t.Fatalf("copy %d: write at %d: %v", c, off, err)
			}
		}
		if err := v.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	row.ingest = time.Since(start) - filling
	row.logicalTotal = bsmCopies * size
	if row.st, err = s.Stats(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = nil
	fi, err := os.Stat(filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	row.metaFile = fi.Size()
	row.metaBytes = fi.Sys().(*syscall.Stat_t).Blocks * 512

	// Cold read: nothing of this store in the page cache or the chunk cache.
	evictStore(t, dir)
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	c := bsmCopies - 1
	v, err := s.OpenVolume(ids[c])
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, bsmIOSize)
	for off := int64(0); off < size; off += bsmIOSize {
		r := time.Now()
		n, err := v.ReadAt(buf, off)
		row.read += time.Since(r)
		if err != nil || n != len(buf) {
			t.Fatalf("copy %d: read at %d: %d bytes, %v", c, off, n, err)
		}
		w.fill(c, want, off)
		if !bytes.Equal(buf, want) {
			t.Fatalf("copy %d: read at %d: wrong bytes", c, off)
		}
	}
	row.readBytes = size

	// What a guest file system does: 4 KiB writes at 4 KiB-aligned random
	// offsets. A block larger than 4 KiB must be read, merged and sealed
	// whole (read-modify-write), and its data is cold here.
	v, err = s.OpenVolume(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(bsmSeed, 1))
	nblk := size / bsmGuestBlk
	small := make([]byte, bsmGuestBlk)
	start = time.Now()
	filling = 0
	for range bsmSmall {
		f := time.Now()
		fillRand(rng, small)
		filling += time.Since(f)
		if _, err := v.WriteAt(small, rng.Int64N(nblk)*bsmGuestBlk); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	row.small = time.Since(start) - filling
	t.Logf("bs %d KiB: ingest %.0f MB/s, read %.0f MB/s, 4 KiB rewrites %.0f/s, dedupe %.2f, compression %.2f, physical %d, meta.db %d on disk (file %d), chunks %d",
		bs>>10, row.ingestMBs(), row.readMBs(), row.smallPerSec(), row.st.DedupeRatio, row.st.CompressionRatio,
		row.st.PhysicalBytes, row.metaBytes, row.metaFile, row.st.Chunks)
	return row
}

// medianRow is the last run's space figures with the median of the runs'
// ingest and read times.
func medianRow(rs []bsmRow) bsmRow {
	r := rs[len(rs)-1]
	med := func(f func(bsmRow) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i := range rs {
			ds[i] = f(rs[i])
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	r.ingest = med(func(r bsmRow) time.Duration { return r.ingest })
	r.read = med(func(r bsmRow) time.Duration { return r.read })
	r.small = med(func(r bsmRow) time.Duration { return r.small })
	r.runs = rs
	return r
}

// spread formats a rate as its median and, over several runs, its range.
func (r bsmRow) spread(f func(bsmRow) float64) string {
	m := fmt.Sprintf("%.0f", f(r))
	if len(r.runs) < 2 {
		return m
	}
	lo, hi := f(r.runs[0]), f(r.runs[0])
	for _, x := range r.runs[1:] {
		lo, hi = min(lo, f(x)), max(hi, f(x))
	}
	return fmt.Sprintf("%s (%.0f–%.0f)", m, lo, hi)
}

// evictStore drops a closed store's packs and metadata from the page cache
// (they are synced, so their pages are clean), without touching anything
// else on the machine.
func evictStore(t *testing.T, dir string) {
	paths, err := filepath.Glob(filepath.Join(dir, "packs", "*"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, filepath.Join(dir, dbFile))
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Logf("fadvise %s: %v (reads may hit the page cache)", p, err)
		}
		f.Close()
	}
}

func bsmTable(rows []bsmRow) string {
	var b strings.Builder
	b.WriteString("| block size | ingest MB/s | cold read MB/s | 4 KiB rewrites/s | dedupe ratio | compression ratio | chunks | physical MiB | meta.db MiB on disk | meta.db / physical | written / (physical + meta.db) |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d KiB | %s | %s | %s | %.2f | %.2f | %d | %.1f | %.1f | %.1f%% | %.2f |\n",
			r.bs>>10, r.spread(bsmRow.ingestMBs), r.spread(bsmRow.readMBs), r.spread(bsmRow.smallPerSec), r.st.DedupeRatio, r.st.CompressionRatio, r.st.Chunks,
			float64(r.st.PhysicalBytes)/(1<<20), float64(r.metaBytes)/(1<<20),
			100*float64(r.metaBytes)/float64(r.st.PhysicalBytes), r.reduction())
	}
	return b.String()
}

// machineLine describes the machine a measurement ran on.
func machineLine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%d cores, %s, %s/%s, %s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH,
		runtime.Version(), time.Now().UTC().Format("2006-01-02"))
}
