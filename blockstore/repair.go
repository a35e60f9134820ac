package blockstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A Repairer supplies a good copy of a block from a durable copy kept
// elsewhere (objex: a chunk exported to a target). When a chunk fails
// verification on a read, the store asks it for the block by fingerprint,
// checks what comes back against that fingerprint, serves it, and rewrites
// the local copy (DVX's read from the durable copy).
type Repairer interface {
	// RepairBlock fills p (one block) with the plaintext of the block whose
	// fingerprint in this datastore is fp, and names where it came from.
	// It returns an error wrapping ErrNoCopy when it knows no copy.
	RepairBlock(ctx context.Context, fp Fingerprint, p []byte) (source string, err error)
}

// ErrNoCopy: a Repairer knows no other copy of a block.
var ErrNoCopy = errors.New("blockstore: no other copy of the block")

// repairTimeout bounds one repair fetch; the read that needs it waits.
const repairTimeout = 2 * time.Minute

// SetRepairer installs r (nil removes it). Reads of corrupt chunks fail
// with ErrCorrupt when there is none or it has no good copy.
func (s *Store) SetRepairer(r Repairer) {
	if r == nil {
		s.repairer.Store(nil)
		return
	}
	s.repairer.Store(&r)
}

// RepairStats counts repairs since the store was opened.
type RepairStats struct {
	Served    int64 `json:"served"`    // corrupt chunks read from another copy
	Rewritten int64 `json:"rewritten"` // of those, local copies rewritten
	Failed    int64 `json:"failed"`    // corrupt chunks with no good copy
}

// Repairs reports the repair counters.
func (s *Store) Repairs() RepairStats {
	return RepairStats{Served: s.repStats.served.Load(), Rewritten: s.repStats.rewritten.Load(), Failed: s.repStats.failed.Load()}
}

// repairRead is called by a read whose chunk id (table entry rec) failed
// verification with cause. It returns the block from another copy, or
// false when there is none (the read then fails with cause). A good copy
// is also written back in the background, so the next read is local.
func (s *Store) repairRead(id uint64, rec chunkRec, cause error) ([]byte, bool) {
	rp := s.repairer.Load()
	if rp == nil {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), repairTimeout)
	defer cancel()
	p := make([]byte, s.bs)
	src, err := (*rp).RepairBlock(ctx, rec.fp, p)
	if err != nil {
		s.repStats.failed.Add(1)
		if errors.Is(err, ErrNoCopy) {
			s.logger.Error("blockstore: corrupt chunk has no other copy", "chunk", id, "pack", rec.pack, "offset", rec.off, "err", cause)
		} else {
			s.logger.Error("blockstore: corrupt chunk: reading another copy failed", "chunk", id, "pack", rec.pack, "offset", rec.off, "err", err)
		}
		return nil, false
	}
	if got := s.seal.fingerprint(p); got != rec.fp {
		s.repStats.failed.Add(1)
		s.logger.Error("blockstore: corrupt chunk: the other copy has other content", "chunk", id, "source", src, "want", rec.fp, "got", got)
		return nil, false
	}
	s.repStats.served.Add(1)
	s.logger.Warn("blockstore: corrupt chunk served from another copy; rewriting the local copy",
		"chunk", id, "pack", rec.pack, "offset", rec.off, "source", src, "err", cause)
	s.quarMu.Lock()
	if !s.repairing[id] {
		if s.repairing == nil {
			s.repairing = make(map[uint64]bool)
		}
		s.repairing[id] = true
		s.repairQ = append(s.repairQ, repairItem{id: id, old: rec, block: p})
		if !s.repairBusy {
			s.repairBusy = true
			s.bg.Add(1)
			go s.repairLoop()
		}
	}
	s.quarMu.Unlock()
	return p, true
}

// repairItem is a good copy of a corrupt chunk, to be written back.
type repairItem struct {
	id    uint64
	old   chunkRec
	block []byte
}

// repairLoop writes back the queued good copies, a batch at a time, until
// the queue is empty.
func (s *Store) repairLoop() {
	defer s.bg.Done()
	for {
		s.quarMu.Lock()
		items := s.repairQ
		s.repairQ = nil
		if len(items) == 0 {
			s.repairBusy = false
			s.quarMu.Unlock()
			return
		}
		s.quarMu.Unlock()
		done, err := s.rewriteChunks(items)
		s.quarMu.Lock()
		for _, it := range items {
			delete(s.repairing, it.id)
			if err == nil {
				delete(s.quarantine, it.id)
			}
		}
		s.quarMu.Unlock()
		if err != nil {
			s.logger.Error("blockstore: rewriting repaired chunks failed; reads keep using the other copy", "chunks", len(items), "err", err)
			continue
		}
		s.repStats.rewritten.Add(int64(done))
		s.logger.Info("blockstore: repaired chunks rewritten", "chunks", done)
	}
}

// rewriteChunks stores each item's block (verified against old.fp) as its
// chunk again: sealed into a new pack, made durable, then the chunk table
// entries moved to it in one transaction. References to the chunks are
// unchanged. The old records stay in their packs until GC compacts those
// (the chunk table no longer counts them live there). A chunk that GC
// moved or freed meanwhile is left alone. It returns how many it rewrote.
func (s *Store) rewriteChunks(items []repairItem) (int, error) {
	// Close waits for this (s.bg) before it closes bbolt, so a rewrite
	// that starts while the store closes still lands.
	s.destageMu.Lock()
	defer s.destageMu.Unlock()
	cur := make([][]byte, len(items))
	if err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bChunks)
		for i, it := range items {
			cur[i] = append([]byte(nil), cb.Get(u64b(it.id))...)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	pk := s.nextPack
	path := packPath(s.dir, pk)
	w, err := createPack(path, pk, s.bs)
	if err != nil {
		return 0, noSpace(err)
	}
	fail := func(err error) (int, error) {
		w.close()
		removeFile(path)
		return 0, err
	}
	newRec := make([][]byte, len(items))
	live, n := int64(0), 0
	for i, it := range items {
		if rec, err := decodeChunkRec(cur[i]); len(cur[i]) == 0 || err != nil || rec != it.old {
			continue // freed or moved by GC
		}
		codec, sealed := s.seal.seal(nil, it.old.fp, it.block)
		off, err := w.append(it.old.fp, codec, sealed)
		if err != nil {
			return fail(noSpace(err))
		}
		newRec[i] = encodeChunkRec(pk, off, len(sealed), codec, it.old.fp)
		live += int64(chunkHeaderSize + len(sealed))
		n++
	}
	if n == 0 {
		return fail(nil)
	}
	if err := w.sync(); err != nil {
		return fail(noSpace(err))
	}
	// The chunk table cannot have changed since the read above: GC, the
	// only other writer of chunk entries, holds destageMu too.
	err = s.db.Update(func(tx *bolt.Tx) error {
		cb, pb := tx.Bucket(bChunks), tx.Bucket(bPacks)
		for i, it := range items {
			if newRec[i] == nil {
				continue
			}
			if err := cb.Put(u64b(it.id), newRec[i]); err != nil {
				return err
			}
			if v := pb.Get(u64b(it.old.pack)); v != nil {
				r := decodePackRec(v)
				r.live = max(r.live-int64(chunkHeaderSize+it.old.n), 0)
				r.liveChunks = max(r.liveChunks-1, 0)
				if err := pb.Put(u64b(it.old.pack), r.encode()); err != nil {
					return err
				}
			}
		}
		if err := pb.Put(u64b(pk), packRec{size: w.size(), live: live, chunks: int64(n), liveChunks: int64(n)}.encode()); err != nil {
			return err
		}
		// A rewritten chunk is good again: out of quarantine (repairLoop
		// forgets it in memory after this commit).
		if qb := tx.Bucket(bQuarantine); qb != nil {
			for i, it := range items {
				if newRec[i] == nil {
					continue
				}
				if err := qb.Delete(u64b(it.id)); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bMeta).Put(kNextPack, u64b(pk+1))
	})
	if err != nil {
		return fail(fmt.Errorf("blockstore: repair commit: %w", noSpace(err)))
	}
	s.nextPack = pk + 1
	s.chunkMoves.Add(1)
	w.close()
	return n, syncDir(filepath.Join(s.dir, "packs"))
}
