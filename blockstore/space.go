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

	"github.com/dstore/dstore/internal/coarse"
	"golang.org/x/sys/unix"
)

// spaceGauge caches the file system's free space, so a data write costs a
// statfs only every few milliseconds, or when the store's packs or queue
// changed (Store.spaceGen).
type spaceGauge struct {
	mu   sync.Mutex // guards free, at and gen
	free int64
	at   int64 // unix ns (coarse clock)
	gen  uint64
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
		s.admitted.Add(n)
		sp, err := s.spaceLeft()
		if err == nil && sp.room() >= 0 {
			return nil // the caller gives back n of admitted once logged
		}
		s.admitted.Add(-n)
		if err != nil {
			return err
		}
		refuse := func() error {
			s.logRefused(n, sp, deadline)
			return noSpace(fmt.Errorf("%d bytes free, %d still to destage, %d being written, %d reserved: %w",
				sp.free, sp.queued, sp.admitted, sp.reserve, syscall.ENOSPC))
		}
		runs := s.agc.runs.Load()
		s.noteShort()
		wait := s.gcWait()
		if wait == nil {
			return refuse()
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(spaceWait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return refuse()
		}
		t := time.NewTimer(left)
		select {
		case <-wait:
			t.Stop()
			if s.agc.runs.Load() == runs {
				// The GC looked and found no reason to run: nothing was
				// let go or changed since its last run.
				return refuse()
			}
		case <-t.C:
			return refuse()
		case <-s.stop:
			t.Stop()
			return ErrClosed
		}
	}
}

// spaceParts is what the space check weighs.
type spaceParts struct {
	free     int64 // the file system's free bytes
	queued   int64 // logged, not yet in packs
	admitted int64 // let in by the space check, not yet logged
	reserve  int64 // kept free for the log, destage and GC
}

// room is what data writes may still take.
func (p spaceParts) room() int64 { return p.free - p.queued - p.admitted - p.reserve }

// spaceLeft reads what will take space: the log's records not yet in packs
// (less what the batch being destaged has already written there, which
// the free space counts), and the writes let in but not yet logged. The
// queue is read before the free space, and read again if packs grew or
// the queue shrank meanwhile (spaceGen moved): a pack write between the
// two would be counted twice, and a reader descheduled there for long,
// under load, would count many. A pack write not yet taken from unpacked
// is counted twice for a moment, never not at all.
func (s *Store) spaceLeft() (spaceParts, error) {
	var p spaceParts
	for try := 0; ; try++ {
		gen := s.spaceGen.Load()
		p.admitted = s.admitted.Load()
		p.queued = s.unpacked.Load()
		var err error
		p.free, p.reserve, err = s.freeAndReserve()
		if err != nil || s.spaceGen.Load() == gen || try == spaceReadTries {
			return p, err
		}
	}
}

// spaceReadTries bounds spaceLeft's reading again; the last reading
// counts at worst the pack writes made during it twice.
const spaceReadTries = 8

// logRefused logs a data write refused for space, at most once every
// refusedLogEvery: what an operator needs to see why clients get ENOSPC.
func (s *Store) logRefused(n int64, sp spaceParts, waitedSince time.Time) {
	now := time.Now().UnixNano()
	last := s.refusedLogAt.Load()
	if now-last < int64(refusedLogEvery) || !s.refusedLogAt.CompareAndSwap(last, now) {
		return
	}
	waited := time.Duration(0)
	if !waitedSince.IsZero() {
		waited = spaceWait - time.Until(waitedSince)
	}
	s.log.diskMu.RLock()
	logBytes, logFiles, _ := s.log.diskUse()
	s.log.diskMu.RUnlock()
	s.logger.Warn("blockstore: write refused, no space", "bytes", n, "free", sp.free, "to_destage", sp.queued,
		"being_written", sp.admitted, "reserve", sp.reserve, "log_files", logFiles, "log_bytes", logBytes, "waited", waited.Round(time.Millisecond))
}

// refusedLogEvery spaces the log lines of refused writes.
const refusedLogEvery = time.Second

// reserveLocked is the free space data writes leave alone. The log's files
// are counted with it: ReserveBytes (by default two segments and 32 MiB)
// is what must stay free while the log's files take two segments, and
// every byte more they take (a segment not yet retired, the one prepared
// next, a spare) is already allocated, so the reserve need not also keep
// it free; every byte less must be kept free in addition. So the log and
// the reserve together always set aside ReserveBytes + 2 segments, and the
// capacity a client sees does not move with the log's state. (Counted
// apart, the 64 MiB files the log makes, recycles and deletes made the
// room for data swing by up to 128 MiB on a small disk, and writing what
// fitted a moment before failed.) It never falls below ReserveBytes less
// two segments (the 32 MiB for destage and GC), plus one segment when no
// file is ready for the log's next rotation.
//
// REQUIRES: s.log.diskMu held (for reading), across this call and the
// read of the file system's free space it is compared with: the log
// allocates or deletes a file and changes its counts as one step under
// diskMu, so the two always agree. (Read apart, a write that came while
// the log preallocated its next segment saw the space gone but not yet
// counted, or a segment retired but not yet renamed a spare, and failed
// with ENOSPC a segment short.)
func (s *Store) reserveLocked() int64 {
	seg := s.log.opts.SegmentSize
	held, _, ready := s.log.diskUse()
	floor := max(s.opts.ReserveBytes-2*seg, 0)
	if ready == 0 {
		floor += seg
	}
	return max(s.opts.ReserveBytes+2*seg-held, floor)
}

// freeAndReserve returns the file system's free bytes and the reserve,
// read as one.
func (s *Store) freeAndReserve() (free, reserve int64, err error) {
	s.log.diskMu.RLock()
	defer s.log.diskMu.RUnlock()
	free, err = s.space.read(s.dir, s.spaceGen.Load())
	return free, s.reserveLocked(), err
}

// read returns the free bytes of the file system under dir, from a statfs
// at most spaceRefresh old and made since the store's spaceGen was gen.
// (The writes let in meanwhile are counted apart: Store.admitted.)
func (g *spaceGauge) read(dir string, gen uint64) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := coarse.UnixNano()
	if g.gen != gen || now-g.at > int64(spaceRefresh) {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("blockstore: statfs: %w", err)
		}
		g.free = int64(st.Bavail) * int64(st.Bsize)
		g.at, g.gen = now, gen
	}
	return g.free, nil
}

// invalidate makes the next take look at the file system again (after a
// GC gave space back).
func (g *spaceGauge) invalidate() {
	g.mu.Lock()
	g.at = 0
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
	s.log.diskMu.RLock()
	err := unix.Statfs(s.dir, &st)
	r := uint64(s.reserveLocked())
	s.log.diskMu.RUnlock()
	if err != nil {
		return Capacity{}, fmt.Errorf("blockstore: statfs: %w", err)
	}
	bs := uint64(st.Bsize)
	c := Capacity{Total: st.Blocks * bs, Free: st.Bfree * bs, Avail: st.Bavail * bs, Files: st.Files, FreeFiles: st.Ffree}
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
