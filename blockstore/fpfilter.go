package blockstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// fpFilter is a Bloom filter over the fingerprints the index holds: a
// fingerprint it rules out is not in the index, so a write of new data
// skips the bbolt lookup (a read transaction and a B+tree search per write
// for random 4 KiB writes, a random leaf page per block for a stream of
// new data). It never rules out a fingerprint that is in the index, and
// says "maybe" for about 2% of the others while it holds fewer than
// FilterBytes*8/10 fingerprints (6.7 million at the default 8 MiB); past
// that more lookups go to bbolt, as they all did without it. Its size is
// fixed: memory does not grow with the datastore.
//
// Fingerprints are added when destage commits them to the index or to the
// front (applyBatch), before the chunk leaves fpPending, so a write that
// no longer finds a chunk pending finds it through the filter and the
// index. GC's deletions leave their bits set (false positives only) until
// the filter is rebuilt: after every GC that swept chunks, a new filter is
// built from the index in the background and replaces the old one
// (rebuildFilterLocked), so the filter follows the live chunks, not every
// chunk ever written. Open builds it the same way; until it is built
// every lookup goes to bbolt.
type fpFilter struct {
	words []atomic.Uint64
	mask  uint64 // bits - 1; bits is a power of two
	ready atomic.Bool
}

// defaultFilterBytes is Options.FilterBytes' default.
const defaultFilterBytes = 8 << 20

func newFPFilter(bytes int) *fpFilter {
	bits := uint64(64)
	for bits*2 <= uint64(bytes)*8 {
		bits *= 2
	}
	return &fpFilter{words: make([]atomic.Uint64, bits/64), mask: bits - 1}
}

// probes are the filter's three bit positions for fp: a fingerprint is a
// keyed hash, so its words are independent and evenly spread (the first
// word picks fpCache slots and is not used here).
func (f *fpFilter) probes(fp *Fingerprint) [3]uint64 {
	return [3]uint64{
		binary.LittleEndian.Uint64(fp[8:]) & f.mask,
		binary.LittleEndian.Uint64(fp[16:]) & f.mask,
		binary.LittleEndian.Uint64(fp[24:]) & f.mask,
	}
}

// add sets fp's bits; on a nil filter (none, or no rebuild) it does
// nothing.
func (f *fpFilter) add(fp *Fingerprint) {
	if f == nil {
		return
	}
	for _, b := range f.probes(fp) {
		w := &f.words[b/64]
		if bit := uint64(1) << (b % 64); w.Load()&bit == 0 {
			w.Or(bit)
		}
	}
}

// absent reports whether fp is certainly not in the index. It is false
// until the filter is built.
func (f *fpFilter) absent(fp *Fingerprint) bool {
	if f == nil || !f.ready.Load() {
		return false
	}
	for _, b := range f.probes(fp) {
		if f.words[b/64].Load()&(uint64(1)<<(b%64)) == 0 {
			return true
		}
	}
	return false
}

// build adds every fingerprint of the index, then marks the filter ready.
// It reads the index in read transactions of filterBuildStep keys, so that
// it never holds one open for long (a long read transaction keeps bbolt
// from reusing pages). Chunks indexed meanwhile are added by destage,
// which adds whatever it commits whether the filter is ready or not. It
// stops early, leaving the filter unready, when stop is closed.
func (f *fpFilter) build(db *bolt.DB, stop <-chan struct{}) error {
	var (
		fp    Fingerprint
		after []byte // the last key done
	)
	for {
		select {
		case <-stop:
			return errFilterStopped
		default:
		}
		done := false
		err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bIndex).Cursor()
			k, _ := c.First()
			if after != nil {
				k, _ = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, _ = c.Next()
				}
			}
			for n := 0; n < filterBuildStep; n++ {
				if k == nil {
					done = true
					return nil
				}
				if len(k) == len(fp) {
					copy(fp[:], k)
					f.add(&fp)
				}
				after = append(after[:0], k...)
				k, _ = c.Next()
			}
			return nil
		})
		if err != nil {
			return err
		}
		if done {
			f.ready.Store(true)
			return nil
		}
		if filterBuildPause != nil {
			filterBuildPause(after)
		}
	}
}

// filterBuildStep is how many index keys one read transaction of build
// reads; filterBuildPause, when set (tests only), runs between two of them
// with the last key read.
var (
	filterBuildStep  = 64 << 10
	filterBuildPause func(after []byte)
)

var errFilterStopped = errors.New("blockstore: filter build stopped")

// rebuildFilterLocked starts building a new filter from the index in the
// background, unless there is no filter or a rebuild is under way; the
// new one replaces the current filter once built, dropping the bits of
// fingerprints GC swept. It is published as fpfNext under destageMu, so
// every destage that commits after this point adds to it too, and every
// one before has committed what the build will read; a rebuild is under
// way exactly while fpfNext is set, which changes only under destageMu.
// REQUIRES: s.destageMu held.
func (s *Store) rebuildFilterLocked() {
	if s.fpf.Load() == nil || s.fpfNext.Load() != nil {
		return
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return
	}
	s.bg.Add(1)
	s.mu.Unlock()
	next := newFPFilter(s.opts.FilterBytes)
	s.fpfNext.Store(next)
	go func() {
		defer s.bg.Done()
		err := next.build(s.db, s.stop)
		if err != nil && !errors.Is(err, errFilterStopped) {
			s.logger.Warn("blockstore: rebuilding the index filter; the old one stays", "err", err)
		}
		s.destageMu.Lock()
		if err == nil {
			s.fpf.Store(next)
		}
		s.fpfNext.Store(nil)
		s.destageMu.Unlock()
	}()
}

// indexGet looks fp up in the fingerprint index through cur (a cursor on
// bucket index): the chunk the index names for it, unless that chunk is
// quarantined. The filter answers first; searched reports whether the
// index was searched at all (for touchedTx).
func (s *Store) indexGet(cur *bolt.Cursor, fp *Fingerprint) (id uint64, ok, searched bool) {
	if s.fpf.Load().absent(fp) {
		return 0, false, false
	}
	id, ok = s.indexSeek(cur, fp)
	return id, ok, true
}

// indexSeek is indexGet without the filter, for a caller that has already
// asked it.
func (s *Store) indexSeek(cur *bolt.Cursor, fp *Fingerprint) (id uint64, ok bool) {
	k, v := cur.Seek(fp[:])
	if k == nil || !bytes.Equal(k, fp[:]) || len(v) != 8 {
		return 0, false
	}
	id = binary.LittleEndian.Uint64(v)
	return id, !s.isQuarantined(id)
}
