package blockstore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// TestAutoGCAfterFree: after volumes are deleted and NoteFreed reports a
// large free, the background GC gives their packs back without anyone
// calling GC, and what is kept still reads back.
func TestAutoGCAfterFree(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{PackSize: 1 << 20, SegmentSize: 1 << 20, MaxLogBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.AutoGC(ctx, AutoGCOptions{Check: 20 * time.Millisecond, Interval: -1, LowSpace: 1, BigFree: 8 << 20})
	}()
	defer func() { cancel(); <-done }()

	rng := rand.New(rand.NewPCG(3, 4))
	var vols []*Volume
	var datas [][]byte
	for i := 0; i < 6; i++ {
		v, err := s.CreateVolume()
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 4<<20)
		fillRand(rng, p)
		if _, err := v.WriteAt(p, 0); err != nil {
			t.Fatal(err)
		}
		vols, datas = append(vols, v), append(datas, p)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	packBytes := func() int64 {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, p := range st.Packs {
			n += p.Bytes
		}
		return n
	}
	before := packBytes()
	time.Sleep(100 * time.Millisecond) // nothing freed yet: no GC may drop live data
	if got := packBytes(); got != before {
		t.Fatalf("pack bytes changed from %d to %d with nothing freed", before, got)
	}
	// Small frees below BigFree with plenty of space: nothing runs.
	for _, v := range vols[:3] {
		if err := s.DeleteVolume(v.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.NoteFreed(4 << 20)
	time.Sleep(200 * time.Millisecond)
	if got := packBytes(); got != before {
		t.Fatalf("a GC ran after %d freed bytes, below BigFree: pack bytes %d -> %d", 4<<20, before, got)
	}
	s.NoteFreed(8 << 20)
	deadline := time.Now().Add(10 * time.Second)
	for packBytes() > before-8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("pack bytes still %d (were %d) 10 s after 12 MiB were freed", packBytes(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 3; i < len(vols); i++ {
		got := make([]byte, len(datas[i]))
		if _, err := vols[i].ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, datas[i]) {
			t.Fatalf("volume %d differs after auto GC at %d", i, firstDiff(got, datas[i]))
		}
	}
}

// TestAutoGCFullDisk fills a small file system, deletes volumes and waits:
// with the background GC running, writes work again without a restart and
// without an explicit GC.
func TestAutoGCFullDisk(t *testing.T) {
	dir := filepath.Join(smallFS(t, "48m"), "ds")
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{SegmentSize: 1 << 20, MaxLogBytes: 4 << 20, PackSize: 2 << 20, ReserveBytes: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.AutoGC(ctx, AutoGCOptions{Check: 50 * time.Millisecond, Interval: -1})
	}()
	defer func() { cancel(); <-done }()

	rng := rand.New(rand.NewPCG(5, 6))
	var vols []*Volume
	var datas [][]byte
	var full error
	for i := 0; i < 100 && full == nil; i++ {
		v, err := s.CreateVolume()
		if err != nil {
			full = err
			break
		}
		var data []byte
		for off := int64(0); off < 4<<20; off += 256 << 10 {
			p := make([]byte, 256<<10)
			fillRand(rng, p)
			if _, err := v.WriteAtStable(p, off); err != nil {
				full = err
				break
			}
			data = append(data, p...)
		}
		vols, datas = append(vols, v), append(datas, data)
	}
	if !errors.Is(full, ErrNoSpace) {
		t.Fatalf("filling the disk ended with %v, want ErrNoSpace", full)
	}
	half := len(vols) / 2
	for _, v := range vols[half:] {
		if err := s.DeleteVolume(v.ID()); err != nil {
			t.Fatalf("delete on a full disk: %v", err)
		}
	}
	s.NoteFreed(int64(len(vols)-half) << 22)
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4<<20)
	fillRand(rng, p)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := v.WriteAtStable(p, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("write after the deletes: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes still fail 15 s after %d of %d volumes were deleted: %v", len(vols)-half, len(vols), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < half; i++ {
		got := make([]byte, len(datas[i]))
		if _, err := vols[i].ReadAt(got, 0); err != nil && len(datas[i]) > 0 {
			t.Fatal(err)
		}
		if !bytes.Equal(got, datas[i]) {
			t.Fatalf("volume %d differs at %d", i, firstDiff(got, datas[i]))
		}
	}
	got := make([]byte, len(p))
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("the write after the auto GC reads back wrong (err %v)", err)
	}
}

// TestAutoGCWaitsForBusyWriters: a large free while writers keep the log
// moving does not start a GC (it would hold destage off and stall them)
// until the writes pause, or MaxDefer has passed.
func TestAutoGCWaitsForBusyWriters(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{PackSize: 1 << 20, SegmentSize: 4 << 20, MaxLogBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	p := make([]byte, 2<<20)
	fillRand(rng, p)
	if _, err := gone.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(gone.ID()); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	chunks := func() int64 {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Chunks
	}
	before := chunks()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.AutoGC(ctx, AutoGCOptions{Check: 50 * time.Millisecond, Interval: -1, LowSpace: 1,
			BigFree: 1 << 20, BusyBytes: 1, MaxDefer: time.Hour})
	}()
	defer func() { cancel(); <-done }()

	// Busy: a write every few milliseconds while the free is reported,
	// all of one content (one new chunk at most, so a drop in the chunk
	// count means a GC ran).
	stop := make(chan struct{})
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		buf := bytes.Repeat([]byte{7}, 4<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := v.WriteAt(buf, int64(i%64)*4096); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(150 * time.Millisecond) // the checks have seen the writes
	s.NoteFreed(2 << 20)
	time.Sleep(600 * time.Millisecond)
	if got := chunks(); got < before {
		t.Fatalf("a GC ran while writers were busy: chunks %d -> %d", before, got)
	}
	close(stop)
	<-writing
	deadline := time.Now().Add(10 * time.Second)
	for chunks() >= before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := chunks(); got >= before {
		t.Fatalf("no GC after the writes stopped: chunks %d (before %d)", got, before)
	}
}

// TestWriteWaitsForGC: on a full disk, a write that finds data let go but
// not yet collected waits for the background GC instead of failing with
// ENOSPC. The GC here runs only when a write is short of space (no low
// space mark, no large-free trigger, no interval, no ticks), so without
// the wait the first write after the deletes would fail.
func TestWriteWaitsForGC(t *testing.T) {
	dir := filepath.Join(smallFS(t, "48m"), "ds")
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{SegmentSize: 1 << 20, MaxLogBytes: 4 << 20, PackSize: 2 << 20, ReserveBytes: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.AutoGC(ctx, AutoGCOptions{Check: time.Hour, Interval: -1, LowSpace: 1, BigFree: -1})
	}()
	defer func() { cancel(); <-done }()

	rng := rand.New(rand.NewPCG(7, 8))
	var vols []*Volume
	var full error
	for i := 0; i < 100 && full == nil; i++ {
		v, err := s.CreateVolume()
		if err != nil {
			full = err
			break
		}
		for off := int64(0); off < 4<<20; off += 256 << 10 {
			p := make([]byte, 256<<10)
			fillRand(rng, p)
			if _, err := v.WriteAtStable(p, off); err != nil {
				full = err
				break
			}
		}
		vols = append(vols, v)
	}
	if !errors.Is(full, ErrNoSpace) {
		t.Fatalf("filling the disk ended with %v, want ErrNoSpace", full)
	}
	// Let the loop settle after the refused write's kick (a GC may run and
	// find nothing to free), then clear the shortage it recorded: from here
	// on only the next refused write may start a GC, so the deletes below
	// are not collected before it.
	for quiet := 0; quiet < 3; {
		time.Sleep(20 * time.Millisecond)
		if s.agc.inRun.Load() || len(s.agc.kickCh()) > 0 {
			quiet = 0
		} else {
			quiet++
		}
	}
	s.agc.short.Store(false)
	half := len(vols) / 2
	for _, v := range vols[half:] {
		if err := s.DeleteVolume(v.ID()); err != nil {
			t.Fatalf("delete on a full disk: %v", err)
		}
	}
	s.NoteFreed(int64(len(vols)-half) << 22)
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4<<20)
	fillRand(rng, p)
	if _, err := v.WriteAtStable(p, 0); err != nil {
		t.Fatalf("the first write after deleting %d of %d volumes: %v (it should have waited for the GC)", len(vols)-half, len(vols), err)
	}
	got := make([]byte, len(p))
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("the write that waited for the GC reads back wrong (err %v)", err)
	}
}
