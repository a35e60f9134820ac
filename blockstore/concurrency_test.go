package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentFreeze runs writers, readers, freezes, clones and GC at the
// same time. Each writer rewrites its own region of one volume with a
// version number in every byte run; a layer frozen between two instants must
// hold, for each region, one single version (writes are atomic) no older
// than the last write acknowledged before the freeze began and no newer than
// the last write begun before it returned.
func TestConcurrentFreeze(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{MaxLogBytes: 2 << 20, PackSize: 1 << 20, SegmentSize: 1 << 20, CacheBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	// Regions are not block aligned, so neighbours share blocks and the
	// read-modify-write of partial blocks is exercised under contention.
	const region = 3*4096 + 1000
	var acked, begun [writers]atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fill := func(ver uint64, w int) []byte {
		p := make([]byte, region)
		for i := 0; i+16 <= len(p); i += 16 {
			binary.LittleEndian.PutUint64(p[i:], ver)
			binary.LittleEndian.PutUint64(p[i+8:], uint64(w))
		}
		return p
	}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ver := uint64(1); ; ver++ {
				select {
				case <-stop:
					return
				default:
				}
				begun[w].Store(ver)
				var err error
				if ver%3 == 0 {
					_, err = v.WriteAtStable(fill(ver, w), int64(w*region))
				} else {
					_, err = v.WriteAt(fill(ver, w), int64(w*region))
				}
				if err != nil {
					errs <- err
					return
				}
				acked[w].Store(ver)
			}
		}(w)
	}
	// Scrubs run throughout, beside destage, merges and GC (which walks
	// the map a few entries per step here): none may report a chunk
	// corrupt that is not.
	defer func(step int) { gcMarkStep = step }(gcMarkStep)
	gcMarkStep = 4
	scrubs := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rep, err := s.Scrub(context.Background())
			if err != nil || len(rep.Corrupt) > 0 {
				errs <- fmt.Errorf("scrub under load: %v %+v", err, rep.Corrupt)
				return
			}
			scrubs++
		}
	}()
	// Readers: every region reads as one version at any time.
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, region)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for w := 0; w < writers; w++ {
					if _, err := v.ReadAt(p, int64(w*region)); err != nil {
						continue // before the first write the volume is short
					}
					if _, ok := oneVersion(p, w); !ok {
						errs <- fmt.Errorf("live read of region %d: torn: %s", w, describe(p))
						return
					}
				}
			}
		}()
	}
	type snap struct {
		layer    LayerID
		lo, hi   [writers]uint64
		cloneVol *Volume
	}
	var snaps []snap
	// At least 3 s and 20 snapshots, whatever the machine's load.
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline) || len(snaps) < 20; i++ {
		var sn snap
		for w := range sn.lo {
			sn.lo[w] = acked[w].Load()
		}
		ls, err := s.Freeze(v.ID())
		if err != nil {
			t.Fatal(err)
		}
		for w := range sn.hi {
			sn.hi[w] = begun[w].Load()
		}
		sn.layer = ls[0]
		if i%3 == 0 {
			if sn.cloneVol, err = s.Clone(sn.layer); err != nil {
				t.Fatal(err)
			}
		}
		snaps = append(snaps, sn)
		if i%5 == 4 {
			// Release an older snapshot: merges run under load.
			old := snaps[len(snaps)-4]
			if err := s.Release(old.layer); err != nil {
				t.Fatal(err)
			}
			snaps[len(snaps)-4].layer = 0
		}
		if i%7 == 6 {
			if _, err := s.GC(context.Background(), GCOptions{Threshold: 0.8}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(name string, ra interface {
		ReadAt([]byte, int64) (int, error)
	}, sn snap) {
		p := make([]byte, region)
		for w := 0; w < writers; w++ {
			if sn.hi[w] == 0 {
				continue
			}
			if _, err := ra.ReadAt(p, int64(w*region)); err != nil {
				if sn.lo[w] == 0 {
					continue
				}
				t.Fatalf("%s region %d: %v", name, w, err)
			}
			ver, ok := oneVersion(p, w)
			if !ok {
				t.Fatalf("%s region %d: torn content", name, w)
			}
			if ver < sn.lo[w] || ver > sn.hi[w] {
				t.Fatalf("%s region %d: version %d outside [%d, %d]", name, w, ver, sn.lo[w], sn.hi[w])
			}
		}
	}
	for i, sn := range snaps {
		if sn.layer != 0 {
			lv, err := s.OpenLayer(sn.layer)
			if err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("snapshot %d (layer %d)", i, sn.layer), lv, sn)
		}
		if sn.cloneVol != nil {
			check(fmt.Sprintf("clone of snapshot %d", i), sn.cloneVol, sn)
		}
	}
	if len(snaps) < 20 {
		t.Fatalf("only %d snapshots taken", len(snaps))
	}
	if scrubs == 0 {
		t.Fatal("no scrub finished under load")
	}
	t.Logf("%d snapshots, %d scrubs under load", len(snaps), scrubs)
	rep, err := s.Scrub(context.Background())
	if err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
}

// oneVersion reports the version a region holds, and whether all of it
// holds that one version of writer w.
func oneVersion(p []byte, w int) (uint64, bool) {
	if isZero(p) {
		return 0, true // not written yet
	}
	ver := binary.LittleEndian.Uint64(p)
	want := make([]byte, 16)
	binary.LittleEndian.PutUint64(want, ver)
	binary.LittleEndian.PutUint64(want[8:], uint64(w))
	for i := 0; i+16 <= len(p); i += 16 {
		if !bytes.Equal(p[i:i+16], want) {
			return 0, false
		}
	}
	return ver, true
}

// describe summarizes the versions found in a region, for failure messages.
func describe(p []byte) string {
	var b bytes.Buffer
	last := ""
	for i := 0; i+16 <= len(p); i += 16 {
		cur := fmt.Sprintf("v%d/w%d", binary.LittleEndian.Uint64(p[i:]), binary.LittleEndian.Uint64(p[i+8:]))
		if cur != last {
			fmt.Fprintf(&b, " @%d:%s", i, cur)
			last = cur
		}
	}
	return b.String()
}
