package blockstore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// spaceGauge caches the file system's free space, so a data write costs a
// statfs only every few milliseconds.
type spaceGauge struct {
	mu   sync.Mutex // guards free and at
	free int64
	at   time.Time
}

const spaceRefresh = 10 * time.Millisecond

// spaceWait bounds how long a data write refused for space waits for a
// background GC run that may give space back (files were removed but not
// yet collected) before it fails with ENOSPC. NFS clients wait for the
// reply; ESXi's heartbeats go on over the same connection meanwhile.
const spaceWait = 30 * time.Second

// checkSpace refuses a data write of n bytes when, after it and after
// everything in the log is destaged, less than ReserveBytes would be free.
// The reserve is what lets destage, deletes, truncates and GC run on a full
// disk, so space can be given back without a restart. When the background
// GC runs, a write short of space first asks it to look and waits (at most
// spaceWait, run after run while each gives something back) for a run that
// may collect what was let go or overwritten: space that was freed is not
// lost to a writer that came a moment too early. If the GC finds no reason
// to run, the write fails at once.
func (s *Store) checkSpace(n int64) error {
	if s.opts.noSpaceCheck {
		return nil
	}
	var deadline time.Time
	for {
		free, err := s.space.take(s.dir, n)
		if err != nil {
			return err
		}
		s.mu.Lock()
		queued := s.queueBytes
		s.mu.Unlock()
		reserve := s.reserve()
		if free-queued-n >= reserve {
			return nil
		}
		short := noSpace(fmt.Errorf("%d bytes free, %d still to destage, %d reserved: %w", free, queued, reserve, syscall.ENOSPC))
		runs := s.agc.runs.Load()
		s.noteShort()
		wait := s.gcWait()
		if wait == nil {
			return short
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(spaceWait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return short
		}
		t := time.NewTimer(left)
		select {
		case <-wait:
			t.Stop()
			if s.agc.runs.Load() == runs {
				// The GC looked and found no reason to run: nothing was
				// let go or changed since its last run.
				return short
			}
		case <-t.C:
			return short
		case <-s.stop:
			t.Stop()
			return ErrClosed
		}
	}
}

// reserve is the free space data writes leave alone. The log's files are
// counted with it: ReserveBytes (by default two segments and 32 MiB) is
// what must stay free while the log holds two segment files, and every
// file more (a segment not yet retired, the one prepared next, a spare)
// is a segment already allocated that the reserve need not also keep
// free; every file fewer must be kept free in addition. So the log and the
// reserve together always set aside ReserveBytes + 2 segments, and the
// capacity a client sees does not move with the log's state. (Counted
// apart, the 64 MiB files the log makes, recycles and deletes made the
// room for data swing by up to 128 MiB on a small disk, and writing what
// fitted a moment before failed.) It never falls below ReserveBytes less
// two segments (the 32 MiB for destage and GC), plus one segment when no
// file is ready for the log's next rotation.
func (s *Store) reserve() int64 {
	seg := s.log.opts.SegmentSize
	all, ready := s.log.files()
	floor := max(s.opts.ReserveBytes-2*seg, 0)
	if ready == 0 {
		floor += seg
	}
	return max(s.opts.ReserveBytes-int64(all-2)*seg, floor)
}

// take returns the free bytes of the file system under dir, from a statfs
// at most spaceRefresh old, and counts n of them as taken until the next
// refresh (assuming the worst).
func (g *spaceGauge) take(dir string, n int64) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.at) > spaceRefresh {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("blockstore: statfs: %w", err)
		}
		g.free = int64(st.Bavail) * int64(st.Bsize)
		g.at = time.Now()
	}
	free := g.free
	g.free -= n
	return free, nil
}

// invalidate makes the next take look at the file system again (after a
// GC gave space back).
func (g *spaceGauge) invalidate() {
	g.mu.Lock()
	g.at = time.Time{}
	g.mu.Unlock()
}

// Capacity describes the file system under the datastore, less the reserve
// that data writes may not use (FSSTAT).
type Capacity struct {
	Total, Free, Avail uint64 // bytes
	Files, FreeFiles   uint64
}

// Capacity reports the data directory's file system's space.
func (s *Store) Capacity() (Capacity, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return Capacity{}, fmt.Errorf("blockstore: statfs: %w", err)
	}
	bs := uint64(st.Bsize)
	c := Capacity{Total: st.Blocks * bs, Free: st.Bfree * bs, Avail: st.Bavail * bs, Files: st.Files, FreeFiles: st.Ffree}
	r := uint64(s.reserve())
	c.Free = c.Free - min(c.Free, r)
	c.Avail = c.Avail - min(c.Avail, r)
	return c, nil
}

// dropMetaPages drops the process's mapping of bbolt's pages (not the page
// cache) once the process holds more than dropAbove of file-backed pages:
// pages the index and maps touched count towards the process's resident
// memory until then, and with random index inserts that is most of the
// index. A small datastore's pages stay mapped, so its lookups do not fault
// them in again and again. The read transaction keeps bbolt from remapping
// meanwhile, so the range is bbolt's own mapping.
func (s *Store) dropMetaPages() {
	s.touches.Store(0)
	if fileResident() < dropAbove {
		return
	}
	s.db.View(func(tx *bolt.Tx) error {
		dropTxPages(tx)
		return nil
	})
}

// dropAbove is the file-backed resident memory (nearly all of it bbolt's
// mapping; packs and the log are read and written, not mapped) above which
// dropMetaPages drops the mapping.
const dropAbove = 64 << 20

// fileResident returns the process's resident file-backed and shared
// memory in bytes (the third field of /proc/self/statm), or a huge value
// when it cannot tell, so the caller drops.
func fileResident() int64 {
	fd, err := unix.Open("/proc/self/statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 1 << 62
	}
	var buf [128]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 {
		return 1 << 62
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) < 3 {
		return 1 << 62
	}
	pages, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 1 << 62
	}
	return pages * int64(os.Getpagesize())
}

// dropTxPages is dropMetaPages inside a transaction, which keeps the
// mapping where it is. Dropping is always safe: the mapping is shared and
// read-only, so a page touched again is mapped again from the page cache.
func dropTxPages(tx *bolt.Tx) {
	info := tx.DB().Info()
	size := uintptr(tx.Size())
	if info.Data == 0 || size == 0 {
		return
	}
	unix.Syscall(unix.SYS_MADVISE, info.Data, size, unix.MADV_DONTNEED)
}

// maxTouches bounds the random bbolt page visits (index lookups and
// inserts) between two drops of the mapping. A fault maps not just the
// page but the kernel's fault-around window (64 KiB) of cached pages
// around it, so each visit may add 64 KiB to the resident set: 1024 visits
// bound that share at 64 MiB, whatever the index's size.
const maxTouches = 1024

// touchedTx records n random page visits made in tx and drops the mapping
// when too many have gathered. It must be given the transaction: a second
// one opened inside it could deadlock with a remap.
func (s *Store) touchedTx(tx *bolt.Tx, n int) {
	if s.touches.Add(int64(n)) >= maxTouches {
		s.touches.Store(0)
		if fileResident() >= dropAbove {
			dropTxPages(tx)
		}
	}
}
