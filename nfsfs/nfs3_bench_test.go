package nfsfs

// NFSv3 throughput over loopback against a real datastore, with 16
// requests outstanding on one connection:
//
//	go test ./nfsfs/ -run '^$' -bench NFS -benchtime 2s
//
// Every block written is unique (an index is stamped into each 4 KiB), so
// the block store's deduplication does not flatter the figures.

import (
	"encoding/binary"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

const benchDepth = 16 // requests outstanding on the connection

// pipelined runs op(0) .. op(b.N-1) with benchDepth calls in flight.
func pipelined(b *testing.B, op func(i int, buf []byte) error, bufSize int) {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range benchDepth {
		buf := randBytes(bufSize)
		wg.Go(func() {
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(int(i), buf); err != nil {
					b.Error(err)
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
}

// stamp makes buf's 4 KiB blocks unique to op i.
func stamp(buf []byte, i int) {
	for off := 0; off+16 <= len(buf); off += 4096 {
		binary.LittleEndian.PutUint64(buf[off:], uint64(i))
		binary.LittleEndian.PutUint64(buf[off+8:], uint64(off))
	}
}

func benchFile(b *testing.B) (*nfsEnv, *nfsClient, []byte) {
	b.Helper()
	e := newNFSEnv(b, Options{})
	c := e.dial(rootCred())
	f := c.create(e.root(), "bench-flat.vmdk", createGuarded, sattr3{Mode: nfsRef(uint32(0o600))}, [8]byte{}).ok(b, "CREATE").FH
	return e, c, f
}

// fillFile writes size bytes of unique data to f (UNSTABLE, then COMMIT).
func fillFile(b *testing.B, c *nfsClient, f []byte, size int) {
	b.Helper()
	const chunk = 1 << 20
	n := size / chunk
	var wg sync.WaitGroup
	var next atomic.Int64
	for range benchDepth {
		buf := randBytes(chunk)
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				stamp(buf, i)
				if err := c.write(f, uint64(i)*chunk, buf, unstable).check(nfsOK); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	c.commit(f, 0, 0).ok(b, "COMMIT")
}

func reportIOPS(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "IOPS")
	}
}

func BenchmarkNFSSeqWrite1M(b *testing.B) {
	_, c, f := benchFile(b)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	pipelined(b, func(i int, buf []byte) error {
		stamp(buf, i)
		w := c.write(f, uint64(i)<<20, buf, unstable)
		if err := w.check(nfsOK); err != nil {
			return err
		}
		return nil
	}, 1<<20)
	c.commit(f, 0, 0).ok(b, "COMMIT")
	b.StopTimer()
}

func BenchmarkNFSSeqRead1M(b *testing.B) {
	const size = 128 << 20
	_, c, f := benchFile(b)
	fillFile(b, c, f, size)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	pipelined(b, func(i int, _ []byte) error {
		r := c.read(f, uint64(i%(size>>20))<<20, 1<<20)
		if err := r.check(nfsOK); err != nil {
			return err
		}
		if r.Count != 1<<20 {
			b.Errorf("READ of 1 MiB: %d bytes", r.Count)
		}
		return nil
	}, 0)
	b.StopTimer()
}

func BenchmarkNFSRandRead4K(b *testing.B) {
	const size = 128 << 20
	_, c, f := benchFile(b)
	fillFile(b, c, f, size)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	pipelined(b, func(i int, _ []byte) error {
		off := mrand.Uint64N(size/4096) * 4096
		r := c.read(f, off, 4096)
		if err := r.check(nfsOK); err != nil {
			return err
		}
		if r.Count != 4096 {
			b.Errorf("READ of 4 KiB: %d bytes", r.Count)
		}
		return nil
	}, 0)
	b.StopTimer()
	reportIOPS(b)
}

func BenchmarkNFSRandWrite4K(b *testing.B) {
	const size = 1 << 30
	_, c, f := benchFile(b)
	c.setattr(f, sattr3{Size: nfsRef(uint64(size))}, nil).ok(b, "SETATTR size")
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	pipelined(b, func(i int, buf []byte) error {
		stamp(buf, i)
		off := mrand.Uint64N(size/4096) * 4096
		w := c.write(f, off, buf, fileSync)
		if err := w.check(nfsOK); err != nil {
			return err
		}
		if w.Committed != fileSync {
			b.Errorf("FILE_SYNC WRITE answered committed=%d", w.Committed)
		}
		return nil
	}, 4096)
	b.StopTimer()
	reportIOPS(b)
}
