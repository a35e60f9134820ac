package blockstore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// smallFS mounts a size-limited tmpfs for the test. It needs root; without
// it the test is skipped, except under CI=true, where it fails.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "fs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs (CI=true requires it): %v: %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return mnt
}

// TestFullDisk fills a small file system: writes fail with ErrNoSpace,
// every acknowledged byte still reads back, and after volumes are deleted
// and GC runs, writes succeed again without a restart.
func TestFullDisk(t *testing.T) {
	t.Run("reserve", func(t *testing.T) { testFullDisk(t, 6<<20) })
	// With (almost) no reserve the real ENOSPC paths run: a log segment
	// that cannot be allocated, a pack write that fails in destage.
	t.Run("no-reserve", testFullDiskNoReserve)
}

// testFullDiskNoReserve lets writes run into the real ENOSPC paths (a log
// segment that cannot be allocated, a pack write that fails in destage):
// nothing acknowledged is lost, errors say ErrNoSpace, and once space is
// freed outside the store, it carries on without a restart.
func testFullDiskNoReserve(t *testing.T) {
	fs := smallFS(t, "40m")
	dir := filepath.Join(fs, "ds")
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(fs, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 12<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := Options{SegmentSize: 1 << 20, MaxLogBytes: 4 << 20, PackSize: 2 << 20, noSpaceCheck: true}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var data []byte
	for i := 0; ; i++ {
		p := make([]byte, 256<<10)
		fillRand(rng, p)
		if _, err := v.WriteAtStable(p, int64(len(data))); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("write on a full disk: %v, want ErrNoSpace", err)
			}
			t.Logf("full after %d MiB: %v", len(data)>>20, err)
			break
		}
		data = append(data, p...)
		if i > 400 {
			t.Fatal("the disk never filled up")
		}
	}
	check := func() {
		t.Helper()
		got := make([]byte, len(data))
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("acknowledged data differs at %d", firstDiff(got, data))
		}
	}
	check()
	if err := s.Flush(); err != nil && !errors.Is(err, ErrNoSpace) {
		t.Fatalf("flush on a full disk: %v, want nil or ErrNoSpace", err)
	}
	check()
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatalf("flush after space was freed: %v", err)
	}
	check()
	p := make([]byte, 1<<20)
	fillRand(rng, p)
	if _, err := v.WriteAtStable(p, int64(len(data))); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	data = append(data, p...)
	check()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err = s.OpenVolume(v.ID()); err != nil {
		t.Fatal(err)
	}
	check()
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
}

func testFullDisk(t *testing.T, reserve int64) {
	dir := filepath.Join(smallFS(t, "48m"), "ds")
	if err := Init(dir, InitOptions{BlockSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	opts := Options{SegmentSize: 1 << 20, MaxLogBytes: 4 << 20, PackSize: 2 << 20, ReserveBytes: reserve}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	type written struct {
		v    *Volume
		data []byte
	}
	var vols []written
	var full error
	for i := 0; i < 200 && full == nil; i++ {
		v, err := s.CreateVolume()
		if err != nil {
			full = err
			break
		}
		data := make([]byte, 0, 4<<20)
		for off := int64(0); off < 4<<20; off += 256 << 10 {
			p := make([]byte, 256<<10)
			fillRand(rng, p)
			if _, err := v.WriteAtStable(p, off); err != nil {
				full = err
				break
			}
			data = append(data, p...)
		}
		vols = append(vols, written{v, data})
	}
	if !errors.Is(full, ErrNoSpace) {
		t.Fatalf("filling the disk ended with %v, want ErrNoSpace", full)
	}
	if len(vols) < 4 {
		t.Fatalf("only %d volumes written before the disk was full", len(vols))
	}
	t.Logf("disk full after %d volumes: %v", len(vols), full)
	check := func(ws []written) {
		t.Helper()
		for i, w := range ws {
			got := make([]byte, len(w.data))
			if _, err := w.v.ReadAt(got, 0); err != nil && len(w.data) > 0 {
				t.Fatalf("volume %d: %v", i, err)
			}
			if !bytes.Equal(got, w.data) {
				t.Fatalf("volume %d: acknowledged data differs at %d", i, firstDiff(got, w.data))
			}
		}
	}
	check(vols)
	// Still full after destage: new data is refused, nothing is lost.
	if err := s.Flush(); err != nil {
		t.Fatalf("flush on a full disk: %v", err)
	}
	check(vols)
	// Destage gave back log space; fill what is left until refused again.
	last := vols[len(vols)-1]
	for off, i := int64(len(last.data)), 0; ; off, i = off+1<<20, i+1 {
		p := make([]byte, 1<<20)
		fillRand(rng, p) // incompressible and unique: it takes its space
		if _, err := last.v.WriteAtStable(p, off); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("write on a full disk: %v, want ErrNoSpace", err)
			}
			break
		}
		last.data = append(last.data, p...)
		if i > 64 {
			t.Fatal("the disk never filled up")
		}
	}
	vols[len(vols)-1] = last
	check(vols)

	// Delete half the volumes, destage, GC: space comes back.
	keep := vols[:len(vols)/2]
	for _, w := range vols[len(vols)/2:] {
		if err := s.DeleteVolume(w.v.ID()); err != nil {
			t.Fatalf("delete on a full disk: %v", err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		t.Fatalf("gc on a full disk: %v", err)
	}
	t.Logf("gc: %+v", rep)
	if rep.PackBytesFreed <= 0 {
		t.Fatalf("gc freed nothing: %+v", rep)
	}
	check(keep)
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 2<<20)
	fillRand(rng, p)
	if _, err := v.WriteAtStable(p, 0); err != nil {
		t.Fatalf("write after gc: %v", err)
	}
	keep = append(keep, written{v, p})
	check(keep)
	// And all of it survives a reopen.
	ids := make([]VolumeID, len(keep))
	for i, w := range keep {
		ids[i] = w.v.ID()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	for i := range keep {
		if keep[i].v, err = s.OpenVolume(ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	check(keep)
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
}
