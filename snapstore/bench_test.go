package snapstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// Snapshot and clone latency, and reads through a deep clone chain, through
// the snapstore API (issue 5: "snapshot and clone latency is flat in data
// size ... each under 10 ms; reads from a 50-deep clone chain within 10% of
// reads from the original").
//
//	go test -run XXX -bench 'Snapshot|Clone' -benchtime 200x ./snapstore/
//
// (make bench-snap). Each size's datastore is written once per process and
// shared by the benchmarks (BenchmarkSnapshot adds snapshots to it,
// BenchmarkClone files); the 8 GiB one needs about 9 GiB of disk in
// $TMPDIR and a minute or more to write, and is skipped with -short. Data
// is unique and incompressible (a PCG stream), so nothing deduplicates.

// benchEnv is a datastore holding one file "f" of size bytes, written and
// destaged, in group "g", with one snapshot of it.
type benchEnv struct {
	dir  string
	ds   *Datastore
	ino  Ino
	size int64
	snap *Snapshot
	n    int // clones made so far (names)
}

var (
	benchMu   sync.Mutex
	benchEnvs = map[string]*benchEnv{}
)

// TestMain closes and removes the benchmarks' datastores.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, e := range benchEnvs {
		e.ds.Close()
		os.RemoveAll(e.dir)
	}
	os.Exit(code)
}

// fillUnique writes size bytes of a PCG stream (seeded by seed) to ino in
// 1 MiB unstable writes, then commits.
func fillUnique(tb testing.TB, ns *Namespace, ino Ino, size int64, seed uint64) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), size-off)]
		for i := 0; i+8 <= len(p); i += 8 {
			v := rng.Uint64()
			p[i], p[i+1], p[i+2], p[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
			p[i+4], p[i+5], p[i+6], p[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
		}
		if _, err := ns.Write(ino, p, off, false); err != nil {
			tb.Fatal(err)
		}
	}
	if err := ns.Commit(ino); err != nil {
		tb.Fatal(err)
	}
}

func benchOpen(b *testing.B, name string) (string, *Datastore) {
	b.Helper()
	dir, err := os.MkdirTemp("", "dstore-bench-"+name+"-")
	if err != nil {
		b.Fatal(err)
	}
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		b.Fatal(err)
	}
	ds, err := Open(dir, blockstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return dir, ds
}

// sizedEnv returns the cached datastore of the given size, making it the
// first time.
func sizedEnv(b *testing.B, label string, size int64) *benchEnv {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if e := benchEnvs[label]; e != nil {
		return e
	}
	if size > 1<<30 && testing.Short() {
		b.Skip("-short: no multi-GiB datastore")
	}
	t0 := time.Now()
	dir, ds := benchOpen(b, label)
	e := &benchEnv{dir: dir, ds: ds, size: size}
	benchEnvs[label] = e
	a, _, err := ds.NS.Create(RootIno, "f", Unchecked, [8]byte{}, NewAttr{Mode: 0o644})
	if err != nil {
		b.Fatal(err)
	}
	e.ino = a.Ino
	fillUnique(b, ds.NS, e.ino, size, uint64(size))
	if _, err := ds.NS.CreateGroup("g", GroupSpec{Match: []string{"f"}}); err != nil {
		b.Fatal(err)
	}
	if e.snap, err = ds.NS.CreateSnapshot("g", "base", false); err != nil {
		b.Fatal(err)
	}
	if err := ds.Blocks.Settle(); err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: wrote and destaged %d MiB in %v", label, size>>20, time.Since(t0).Round(time.Millisecond))
	return e
}

var benchSizes = []struct {
	label string
	size  int64
}{{"64MiB", 64 << 20}, {"8GiB", 8 << 30}}

// latency runs op b.N times, each after prep with the timer stopped, and
// reports the median and the 90th percentile besides the mean.
func latency(b *testing.B, prep func(i int), op func(i int) error) {
	b.Helper()
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		prep(i)
		b.StartTimer()
		t0 := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	sortDurations(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds()), "p90-µs")
}

func sortDurations(ds []time.Duration) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j] < ds[j-1]; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

// BenchmarkSnapshot times CreateSnapshot of a group of one file holding
// 64 MiB or 8 GiB of data. Before each snapshot (untimed) one 4 KiB block
// is written, so each freezes a layer with a fresh write in the log; the
// snapshot waits for its record to be durable, as the CLI does.
func BenchmarkSnapshot(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.label, func(b *testing.B) {
			e := sizedEnv(b, sz.label, sz.size)
			rng := rand.New(rand.NewPCG(1, 2))
			blk := make([]byte, 4096)
			b.ReportAllocs()
			latency(b, func(int) {
				for i := range blk {
					blk[i] = byte(rng.Uint32())
				}
				if _, err := e.ds.NS.Write(e.ino, blk, rng.Int64N(e.size/4096)*4096, false); err != nil {
					b.Fatal(err)
				}
			}, func(int) error {
				_, err := e.ds.NS.CreateSnapshot("g", "", false)
				return err
			})
		})
	}
}

// BenchmarkClone times Clone(ID:f, NEWPATH) of the snapshot of a file of
// 64 MiB or 8 GiB: a new live file over the snapshot's layer.
func BenchmarkClone(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.label, func(b *testing.B) {
			e := sizedEnv(b, sz.label, sz.size)
			b.ReportAllocs()
			latency(b, func(int) { e.n++ }, func(int) error {
				_, err := e.ds.NS.Clone(e.snap.Seq, "f", fmt.Sprintf("clone-%d", e.n))
				return err
			})
		})
	}
}

// BenchmarkCloneLive times CloneLive(f, NEWPATH) (`dstore clone --live`):
// freeze, clone and release in one record.
func BenchmarkCloneLive(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.label, func(b *testing.B) {
			e := sizedEnv(b, sz.label, sz.size)
			b.ReportAllocs()
			latency(b, func(int) { e.n++ }, func(int) error {
				_, err := e.ds.NS.CloneLive("f", fmt.Sprintf("live-%d", e.n))
				return err
			})
		})
	}
}

// chainEnv is a datastore with a file f0 of chainSize bytes and a chain of
// clones: f<i> is a live clone of f<i-1> with chainWrites new 4 KiB blocks
// of its own, so every level is a real layer.
type chainEnv struct {
	dir  string
	ds   *Datastore
	inos []Ino
	flat Ino // a clone of f0 with every level's writes: f50's content, one level deep
}

const (
	chainSize   = 64 << 20
	chainDepth  = 50
	chainWrites = 8
)

var chain *chainEnv

func chainSetup(b *testing.B) *chainEnv {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if chain != nil {
		return chain
	}
	dir, ds := benchOpen(b, "chain")
	benchEnvs["chain"] = &benchEnv{dir: dir, ds: ds}
	c := &chainEnv{dir: dir, ds: ds}
	ns := ds.NS
	a, _, err := ns.Create(RootIno, "f0", Unchecked, [8]byte{}, NewAttr{Mode: 0o644})
	if err != nil {
		b.Fatal(err)
	}
	fillUnique(b, ns, a.Ino, chainSize, 3)
	c.inos = append(c.inos, a.Ino)
	rng := rand.New(rand.NewPCG(4, 4))
	blk := make([]byte, 4096)
	type write struct {
		off  int64
		data []byte
	}
	var writes []write
	for i := 1; i <= chainDepth; i++ {
		a, err := ns.CloneLive(fmt.Sprintf("f%d", i-1), fmt.Sprintf("f%d", i))
		if err != nil {
			b.Fatal(err)
		}
		for k := 0; k < chainWrites; k++ {
			for j := range blk {
				blk[j] = byte(rng.Uint32())
			}
			off := rng.Int64N(chainSize/4096) * 4096
			if _, err := ns.Write(a.Ino, blk, off, false); err != nil {
				b.Fatal(err)
			}
			writes = append(writes, write{off, bytes.Clone(blk)})
		}
		c.inos = append(c.inos, a.Ino)
	}
	// The same writes in one clone: the same content and, deduplicated,
	// the same chunks as f50, so only the chain's depth differs.
	fa, err := ns.CloneLive("f0", "flat")
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range writes {
		if _, err := ns.Write(fa.Ino, w.data, w.off, false); err != nil {
			b.Fatal(err)
		}
	}
	c.flat = fa.Ino
	if err := ds.Blocks.Settle(); err != nil {
		b.Fatal(err)
	}
	// The chain is as deep as it claims: nothing could be merged, since
	// every frozen layer has two children (the file and its clone).
	for _, depth := range []int{0, -1, chainDepth} {
		ino := c.flat
		if depth >= 0 {
			ino = c.inos[depth]
		}
		a, err := ns.GetAttr(ino)
		if err != nil {
			b.Fatal(err)
		}
		v, err := ds.Blocks.OpenVolume(a.Volume)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for l := v.Top(); l != 0; n++ {
			li, err := ds.Blocks.Layer(l)
			if err != nil {
				b.Fatal(err)
			}
			l = li.Parent
		}
		want := depth + 1 // f<i>'s top over the i layers below it
		if depth <= 0 {
			// f0's top over the (empty) layer flat's clone froze, over
			// the one the first clone froze; flat's top over the same two
			want = 3
		}
		if n != want {
			b.Fatalf("f%d (-1: flat): chain of %d layers, want %d", depth, n, want)
		}
	}
	chain = c
	return c
}

// BenchmarkCloneChainRead reads a whole 64 MiB file in 1 MiB reads: the
// original (depth0: 3 layers, its top over the empty layer flat's clone
// froze over the one the first clone froze), the 50th clone of a clone
// (depth50: 51 layers), and "flat", a clone of the original with all 50
// levels' writes (f50's bytes and chunks, 3 layers), which tells the chain's cost from the cost of the
// scattered blocks the levels wrote. The chunk
// cache (32 MiB) is smaller than the file, so every pass reads the packs
// (from the page cache) and decodes. "interleaved" alternates the two
// files pass by pass, so that a shared machine's load falls on both
// alike, and reports each one's MB/s and their ratio.
func BenchmarkCloneChainRead(b *testing.B) {
	readAll := func(b *testing.B, c *chainEnv, ino Ino, buf []byte) {
		for off := int64(0); off < chainSize; off += int64(len(buf)) {
			n, _, err := c.ds.NS.Read(ino, buf, off)
			if err != nil || n != len(buf) {
				b.Fatalf("read at %d: %d bytes, %v", off, n, err)
			}
		}
	}
	b.Run("interleaved", func(b *testing.B) {
		c := chainSetup(b)
		buf := make([]byte, 1<<20)
		files := []Ino{c.inos[0], c.flat, c.inos[chainDepth]}
		took := make([]time.Duration, len(files))
		b.SetBytes(int64(len(files)) * chainSize)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for k, ino := range files {
				start := time.Now()
				readAll(b, c, ino, buf)
				took[k] += time.Since(start)
			}
		}
		mbs := func(d time.Duration) float64 { return float64(chainSize) * float64(b.N) / d.Seconds() / 1e6 }
		b.ReportMetric(mbs(took[0]), "depth0-MB/s")
		b.ReportMetric(mbs(took[1]), "flat-MB/s")
		b.ReportMetric(mbs(took[2]), "depth50-MB/s")
		b.ReportMetric(float64(took[2])/float64(took[0]), "time50/time0")
		b.ReportMetric(float64(took[2])/float64(took[1]), "time50/timeflat")
	})
	for _, depth := range []int{0, chainDepth} {
		b.Run(fmt.Sprintf("depth%d", depth), func(b *testing.B) {
			c := chainSetup(b)
			ino := c.inos[depth]
			buf := make([]byte, 1<<20)
			b.SetBytes(chainSize)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				readAll(b, c, ino, buf)
			}
		})
	}
}
