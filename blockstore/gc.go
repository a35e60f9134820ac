package blockstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// GCOptions control a garbage collection.
type GCOptions struct {
	DryRun bool
	// Threshold: packs whose live fraction is below it are compacted.
	// 0 = 0.5.
	Threshold float64
}

// GCReport is what a GC found (DryRun) or did.
type GCReport struct {
	DryRun         bool  `json:"dry_run"`
	ChunksMarked   int64 `json:"chunks_live"`
	ChunksFreed    int64 `json:"chunks_freed"`
	BytesFreed     int64 `json:"bytes_freed"` // sealed bytes of freed chunks
	PacksDeleted   int   `json:"packs_deleted"`
	PacksCompacted int   `json:"packs_compacted"`
	BytesRewritten int64 `json:"bytes_rewritten"`
	PackBytesFreed int64 `json:"pack_bytes_freed"` // file bytes given back to the file system
}

// GC reclaims space: mark every chunk any layer (or the log) references,
// sweep the rest from the index and chunk table, then compact packs whose
// live fraction is below the threshold. Plan first, then execute; the new
// pack is durable and committed before an old one is deleted (I3).
func (s *Store) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	if o.Threshold <= 0 {
		o.Threshold = 0.5
	}
	rep := GCReport{DryRun: o.DryRun}
	s.gcRunMu.Lock()
	defer s.gcRunMu.Unlock()
	maxChunk, mark, err := s.gcStart()
	if err != nil {
		return rep, err
	}
	defer func() {
		// The sweep clears the bitmap; this is for a run that ends
		// before it. Published and cleared under destageMu and gcMu:
		// destage reads it under the one, the write path under the other.
		s.destageMu.Lock()
		s.gcMu.Lock()
		if s.gcMark == mark {
			s.gcMark = nil
		}
		s.gcMu.Unlock()
		s.destageMu.Unlock()
	}()
	// The map walk, the part that grows with the datastore, holds no lock
	// (section 11): destage and writers go on beside it.
	if err := s.markMap(ctx, mark); err != nil {
		if s.closed.Load() {
			return rep, ErrClosed
		}
		return rep, err
	}

	// Sweep, first without a lock: walk the chunk table up to maxChunk. A
	// marked chunk is live; the others are candidates, looked at again
	// under the locks below, since a dedupe hit may mark one meanwhile.
	type packLive struct{ live, liveChunks int64 }
	type cand struct {
		id   uint64
		fp   Fingerprint
		pack uint64
		n    int
	}
	var (
		live  map[uint64]*packLive
		cands []cand
	)
	addLive := func(pack uint64, n int) {
		pl := live[pack]
		if pl == nil {
			pl = &packLive{}
			live[pack] = pl
		}
		pl.live += int64(chunkHeaderSize + n)
		pl.liveChunks++
		rep.ChunksMarked++
	}
	count := func(ctx context.Context) error {
		live, cands, rep.ChunksMarked = make(map[uint64]*packLive), nil, 0
		return s.walkChunks(ctx, 1, maxChunk, func(id uint64, rec chunkRec) {
			if mark.get(id) {
				addLive(rec.pack, rec.n)
			} else {
				cands = append(cands, cand{id, rec.fp, rec.pack, rec.n})
			}
		})
	}
	moves := s.chunkMoves.Load()
	if err := count(ctx); err != nil {
		if s.closed.Load() {
			return rep, ErrClosed
		}
		return rep, err
	}

	s.destageMu.Lock()
	defer s.destageMu.Unlock()
	if s.closed.Load() {
		return rep, ErrClosed
	}
	// From here dedupe lookups are held off: nothing can newly reference a
	// chunk that is about to go.
	s.gcMu.Lock()
	sweepLocked := true
	defer func() {
		if sweepLocked {
			s.gcMu.Unlock()
		}
	}()
	if s.chunkMoves.Load() != moves {
		// A repair moved chunks since: their packs' figures are stale.
		// Rare; count again, now under the locks.
		if err := count(context.Background()); err != nil {
			return rep, err
		}
	}
	// Chunks made since the GC began are live, and so are candidates a hit
	// has marked since the walk.
	if err := s.walkChunks(context.Background(), maxChunk+1, math.MaxUint64, func(_ uint64, rec chunkRec) {
		addLive(rec.pack, rec.n)
	}); err != nil {
		return rep, err
	}
	var dead []uint64
	var deadFP []Fingerprint
	for _, c := range cands {
		if mark.get(c.id) {
			addLive(c.pack, c.n)
			continue
		}
		dead = append(dead, c.id)
		deadFP = append(deadFP, c.fp)
		rep.ChunksFreed++
		rep.BytesFreed += int64(chunkHeaderSize + c.n)
	}
	// Plan compaction.
	var victims []uint64
	openPack := uint64(0)
	if s.pack != nil {
		openPack = s.pack.id()
	}
	packRecs := make(map[uint64]packRec)
	// The open pack is compacted like any other once it is dead enough:
	// it is sealed first (no more appends; the next destage starts a new
	// pack). Left open, the dead data in it (the tail of files removed
	// just after they were written) stayed until the pack filled, on a
	// full disk for good: writes failed with its space unreachable.
	sealOpen := false
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bPacks).ForEach(func(k, v []byte) error {
			id := binary.BigEndian.Uint64(k)
			r := decodePackRec(v)
			r.live, r.liveChunks = 0, 0
			if pl := live[id]; pl != nil {
				r.live, r.liveChunks = pl.live, pl.liveChunks
			}
			packRecs[id] = r
			body := r.size - packHeaderSize
			if r.live == 0 || body <= 0 || float64(r.live)/float64(body) < o.Threshold {
				victims = append(victims, id)
				sealOpen = sealOpen || (id == openPack && r.live > 0)
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	sort.Slice(victims, func(i, j int) bool { return victims[i] < victims[j] })
	for _, id := range victims {
		if packRecs[id].live == 0 {
			rep.PacksDeleted++
		} else {
			rep.PacksCompacted++
			rep.BytesRewritten += packRecs[id].live
		}
		rep.PackBytesFreed += packRecs[id].size
	}
	if o.DryRun {
		return rep, nil
	}

	// Execute the sweep in one transaction.
	err = s.db.Update(func(tx *bolt.Tx) error {
		cb, ib, pb := tx.Bucket(bChunks), tx.Bucket(bIndex), tx.Bucket(bPacks)
		for i, id := range dead {
			if err := cb.Delete(u64b(id)); err != nil {
				return err
			}
			// The entry may name a newer chunk of the same content (a
			// good copy stored after this one was quarantined).
			if v := ib.Get(deadFP[i][:]); len(v) == 8 && binary.LittleEndian.Uint64(v) == id {
				if err := ib.Delete(deadFP[i][:]); err != nil {
					return err
				}
			}
			// Dropped even if the transaction fails: the front may miss
			// entries, never hold a dead one (writers' lookups wait for
			// gcMu, held here).
			s.fpc.drop(&deadFP[i], id)
		}
		for id, r := range packRecs {
			if err := pb.Put(u64b(id), r.encode()); err != nil {
				return err
			}
		}
		// Quarantined chunks that are dead go with their quarantine
		// entries (the bucket is small: look at each entry).
		if qb := tx.Bucket(bQuarantine); qb != nil {
			var gone [][]byte
			if err := qb.ForEach(func(k, _ []byte) error {
				if id := binary.BigEndian.Uint64(k); id <= maxChunk && !mark.get(id) {
					gone = append(gone, k)
				}
				return nil
			}); err != nil {
				return err
			}
			for _, k := range gone {
				if err := qb.Delete(k); err != nil {
					return err
				}
			}
		}
		if sealOpen {
			return tx.Bucket(bMeta).Put(kOpenPack, u64b(0))
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("blockstore: gc sweep: %w", noSpace(err))
	}
	s.quarMu.Lock()
	for id := range s.quarantine {
		if id <= maxChunk && !mark.get(id) {
			delete(s.quarantine, id)
		}
	}
	s.quarMu.Unlock()
	if len(dead) > 0 {
		// The filter still holds the swept fingerprints: a new one,
		// built from the index in the background, replaces it.
		s.rebuildFilterLocked()
	}
	if sealOpen {
		s.pack.close()
		s.pack, s.packCommitted = nil, 0
	}
	s.gcMark = nil
	s.gcMu.Unlock()
	sweepLocked = false
	if len(victims) == 0 {
		return rep, nil
	}
	var empty, partial []uint64
	for _, id := range victims {
		if packRecs[id].live == 0 {
			empty = append(empty, id)
		} else {
			partial = append(partial, id)
		}
	}
	// Wholly dead packs go first: that needs no new space, which matters
	// most on a full disk.
	if err := s.deletePacks(empty); err != nil {
		return rep, err
	}
	if len(partial) == 0 {
		return rep, nil
	}
	newBytes, err := s.compact(ctx, partial)
	if err != nil {
		return rep, err
	}
	rep.PackBytesFreed -= newBytes
	return rep, nil
}

// gcStart publishes the mark bitmap over chunks 1..maxChunk and marks
// what the log still references, all under destageMu: no destage runs
// meanwhile, so every chunk made later has an ID beyond the bitmap, and
// every later reference to an older chunk marks it (I7): a write-path
// index hit (under gcMu), a destage index hit, or a map entry that destage
// or a merge writes (the barrier in applyTx and mergeEntries).
func (s *Store) gcStart() (uint64, *bitset, error) {
	s.destageMu.Lock()
	defer s.destageMu.Unlock()
	if s.closed.Load() {
		return 0, nil, ErrClosed
	}
	// The map walk reads bbolt: what the front holds goes there first.
	// Destage adds to the front again once this returns, marking as it
	// goes.
	if err := s.mergeFrontLocked(); err != nil {
		return 0, nil, err
	}
	maxChunk := s.nextChunk - 1
	mark := newBitset(maxChunk)
	s.gcMu.Lock()
	s.gcMark = mark
	s.gcMu.Unlock()
	// Pending references: a reference to a block that was pending when
	// it was written carries no chunk ID; its chunk is found by
	// fingerprint (no destage runs now).
	var byFP []Fingerprint
	s.mu.Lock()
	for _, q := range s.queue {
		for i := range q.d.ops {
			if op := &q.d.ops[i]; op.kind == kindRef {
				if op.chunk != 0 {
					mark.set(op.chunk)
				} else {
					byFP = append(byFP, op.fp)
				}
			}
		}
	}
	s.mu.Unlock()
	if len(byFP) == 0 {
		return maxChunk, mark, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bIndex)
		for _, fp := range byFP {
			if v := idx.Get(fp[:]); len(v) == 8 {
				mark.set(binary.LittleEndian.Uint64(v))
			}
		}
		return nil
	})
	if err != nil {
		s.gcMu.Lock()
		s.gcMark = nil
		s.gcMu.Unlock()
		return 0, nil, err
	}
	return maxChunk, mark, nil
}

// gcMarkStep is how many map entries one read transaction of the mark
// walks. Short transactions keep bbolt free to reuse pages and to grow its
// mapping while the walk goes on.
var gcMarkStep = 1 << 16

// gcMarkStepDone, when set (tests), is called between two steps of the
// map walk.
var gcMarkStepDone func()

// markMap marks every chunk the map references. It walks the map in key
// order, a step at a time, holding no lock. An entry that stays from the
// walk's start to its end is seen by it; one written meanwhile marked its
// chunk when it was written (the barrier, see gcStart); one deleted
// meanwhile only keeps its chunk one more GC.
func (s *Store) markMap(ctx context.Context, mark *bitset) error {
	var from []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closed.Load() {
			return ErrClosed
		}
		var next []byte
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bMap).Cursor()
			k, v := c.First()
			if from != nil {
				k, v = c.Seek(from)
			}
			for n := 0; k != nil; k, v = c.Next() {
				if n == gcMarkStep {
					next = append([]byte(nil), k...)
					return nil
				}
				n++
				if len(v) == 8 {
					if id := binary.LittleEndian.Uint64(v); id != 0 {
						mark.set(id)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if next == nil {
			return nil
		}
		from = next
		if gcMarkStepDone != nil {
			gcMarkStepDone()
		}
	}
}

// gcSweepStepDone, when set (tests), is called between two steps of the
// sweep's walk of the chunk table.
var gcSweepStepDone func()

// walkChunks calls fn for every chunk with an ID in [from, to], in ID
// order, gcMarkStep entries per read transaction. Between steps the chunk
// table may change: fn sees each chunk that stays from the walk's start to
// its end once, at the place it had when its step read it.
func (s *Store) walkChunks(ctx context.Context, from, to uint64, fn func(uint64, chunkRec)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closed.Load() {
			return ErrClosed
		}
		next, done := uint64(0), true
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bChunks).Cursor()
			n := 0
			for k, v := c.Seek(u64b(from)); k != nil; k, v = c.Next() {
				id := binary.BigEndian.Uint64(k)
				if id > to {
					return nil
				}
				if n == gcMarkStep {
					next, done = id, false
					return nil
				}
				n++
				rec, err := decodeChunkRec(v)
				if err != nil {
					return fmt.Errorf("chunk %d: %w", id, err)
				}
				fn(id, rec)
			}
			return nil
		})
		if err != nil || done {
			return err
		}
		from = next
		if gcSweepStepDone != nil {
			gcSweepStepDone()
		}
	}
}

func containsU64(xs []uint64, x uint64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// deletePacks forgets packs that hold no live chunk, then deletes their
// files (I3). REQUIRES: s.destageMu held.
func (s *Store) deletePacks(ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	closeOpen := s.pack != nil && containsU64(ids, s.pack.id())
	err := s.db.Update(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bPacks)
		for _, id := range ids {
			if err := pb.Delete(u64b(id)); err != nil {
				return err
			}
		}
		if closeOpen {
			return tx.Bucket(bMeta).Put(kOpenPack, u64b(0))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("blockstore: gc: %w", noSpace(err))
	}
	if closeOpen {
		s.pack.close()
		s.pack, s.packCommitted = nil, 0
	}
	for _, id := range ids {
		s.packs.forget(id)
		if err := removeFile(packPath(s.dir, id)); err != nil {
			s.logger.Warn("blockstore: gc: removing dead pack", "pack", id, "err", err)
		}
	}
	return syncDir(filepath.Join(s.dir, "packs"))
}

// compact copies the live chunks of the victim packs into new packs, makes
// them durable, commits their new locations, and only then deletes the
// victims. It returns the bytes of the new packs.
// REQUIRES: s.destageMu held.
func (s *Store) compact(ctx context.Context, victims []uint64) (int64, error) {
	type liveChunk struct {
		id  uint64
		rec chunkRec
	}
	isVictim := make(map[uint64]bool, len(victims))
	for _, v := range victims {
		isVictim[v] = true
	}
	var moving []liveChunk
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bChunks).ForEach(func(k, v []byte) error {
			rec, err := decodeChunkRec(v)
			if err != nil {
				return err
			}
			if isVictim[rec.pack] {
				moving = append(moving, liveChunk{id: binary.BigEndian.Uint64(k), rec: rec})
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	// Keep the chunks in their old order so packing locality survives.
	sort.Slice(moving, func(i, j int) bool {
		if moving[i].rec.pack != moving[j].rec.pack {
			return moving[i].rec.pack < moving[j].rec.pack
		}
		return moving[i].rec.off < moving[j].rec.off
	})
	var (
		w       *packWriter
		written []*packWriter
		newLoc  = make(map[uint64]chunkRec, len(moving))
		oldPack = make(map[uint64]uint64, len(moving))
		skip    = make(map[uint64]bool) // victims with a corrupt chunk stay
		nextPk  = s.nextPack
	)
	cleanup := func() {
		for _, pw := range written {
			pw.close()
			removeFile(packPath(s.dir, pw.id()))
		}
	}
	buf := make([]byte, 0, chunkHeaderSize+maxSealedLen(s.bs))
	for i, m := range moving {
		if i%1024 == 0 && ctx.Err() != nil {
			cleanup()
			return 0, ctx.Err()
		}
		if skip[m.rec.pack] {
			continue
		}
		h, err := s.packs.get(m.rec.pack)
		if err != nil {
			cleanup()
			return 0, err
		}
		buf = buf[:chunkHeaderSize+m.rec.n]
		_, err = h.f.ReadAt(buf, m.rec.off)
		s.packs.release(h)
		if err != nil {
			skip[m.rec.pack] = true
			s.logger.Error("blockstore: gc: unreadable chunk; pack kept", "chunk", m.id, "pack", m.rec.pack, "err", err)
			continue
		}
		if _, err := s.openChunk(buf, m.rec); err != nil {
			skip[m.rec.pack] = true
			s.logger.Error("blockstore: gc: corrupt chunk; pack kept", "chunk", m.id, "pack", m.rec.pack, "err", err)
			continue
		}
		if w == nil || w.size() >= s.opts.PackSize {
			if w != nil {
				if err := w.sync(); err != nil {
					cleanup()
					return 0, noSpace(err)
				}
			}
			w, err = createPack(packPath(s.dir, nextPk), nextPk, s.bs)
			if err != nil {
				cleanup()
				return 0, noSpace(err)
			}
			nextPk++
			written = append(written, w)
		}
		_, codec, sealed, _, err := decodeChunkRecord(buf, s.bs)
		if err != nil {
			cleanup()
			return 0, err
		}
		off, err := w.append(m.rec.fp, codec, sealed)
		if err != nil {
			cleanup()
			return 0, noSpace(err)
		}
		newLoc[m.id] = chunkRec{pack: w.id(), off: off, n: m.rec.n, codec: codec, fp: m.rec.fp}
		oldPack[m.id] = m.rec.pack
	}
	if w != nil {
		if err := w.sync(); err != nil {
			cleanup()
			return 0, noSpace(err)
		}
	}
	var newBytes int64
	err = s.db.Update(func(tx *bolt.Tx) error {
		cb, pb := tx.Bucket(bChunks), tx.Bucket(bPacks)
		perPack := make(map[uint64]*packRec)
		for _, pw := range written {
			perPack[pw.id()] = &packRec{size: pw.size()}
			newBytes += pw.size()
		}
		for id, r := range newLoc {
			if skip[oldPack[id]] {
				continue
			}
			if err := cb.Put(u64b(id), encodeChunkRec(r.pack, r.off, r.n, r.codec, r.fp)); err != nil {
				return err
			}
			pr := perPack[r.pack]
			pr.live += int64(chunkHeaderSize + r.n)
			pr.chunks++
			pr.liveChunks++
		}
		for id, pr := range perPack {
			if err := pb.Put(u64b(id), pr.encode()); err != nil {
				return err
			}
		}
		for _, v := range victims {
			if skip[v] {
				continue
			}
			if err := pb.Delete(u64b(v)); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(kNextPack, u64b(nextPk))
	})
	if err != nil {
		cleanup()
		return 0, fmt.Errorf("blockstore: gc compaction commit: %w", noSpace(err))
	}
	s.nextPack = nextPk
	for _, pw := range written {
		pw.close()
	}
	for _, v := range victims {
		if skip[v] {
			continue
		}
		s.packs.forget(v)
		if err := removeFile(packPath(s.dir, v)); err != nil {
			s.logger.Warn("blockstore: gc: removing compacted pack", "pack", v, "err", err)
		}
	}
	return newBytes, syncDir(filepath.Join(s.dir, "packs"))
}

// Stats describes the store's space use.
type Stats struct {
	BlockSize        int         `json:"block_size"`
	Volumes          int         `json:"volumes"`
	Layers           int         `json:"layers"`
	Chunks           int64       `json:"chunks"`
	LogicalBytes     int64       `json:"logical_bytes"` // bytes of data blocks over all layers
	UniqueBytes      int64       `json:"unique_bytes"`  // uncompressed bytes of stored chunks
	StoredBytes      int64       `json:"stored_bytes"`  // sealed bytes of stored chunks, with headers
	PhysicalBytes    int64       `json:"physical_bytes"`
	DedupeRatio      float64     `json:"dedupe_ratio"`
	CompressionRatio float64     `json:"compression_ratio"`
	LogBytes         int64       `json:"log_bytes"` // in the NVLOG, not destaged yet
	Packs            []PackStats `json:"packs"`
}

// PackStats describes one pack.
type PackStats struct {
	ID        uint64  `json:"id"`
	Bytes     int64   `json:"bytes"`
	LiveBytes int64   `json:"live_bytes"`
	Chunks    int64   `json:"chunks"`
	Live      float64 `json:"live"`
}

// Stats reports logical and physical space, ratios and pack liveness as of
// the last destage (LogBytes is what is still in the log). Pack liveness is
// exact after a GC and an upper bound between GCs.
func (s *Store) Stats() (Stats, error) {
	st := Stats{BlockSize: s.bs}
	if err := s.mergeFront(); err != nil {
		return st, err
	}
	s.mu.Lock()
	st.Volumes = len(s.vols)
	st.Layers = len(s.layers)
	st.LogBytes = s.queueBytes.Load()
	s.mu.Unlock()
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bMap).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 8 && binary.LittleEndian.Uint64(v) != 0 {
				st.LogicalBytes += int64(s.bs)
			}
		}
		err := tx.Bucket(bChunks).ForEach(func(_, v []byte) error {
			rec, err := decodeChunkRec(v)
			if err != nil {
				return err
			}
			st.Chunks++
			st.StoredBytes += int64(chunkHeaderSize + rec.n)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bPacks).ForEach(func(k, v []byte) error {
			r := decodePackRec(v)
			ps := PackStats{ID: binary.BigEndian.Uint64(k), Bytes: r.size, LiveBytes: r.live, Chunks: r.chunks}
			if body := r.size - packHeaderSize; body > 0 {
				ps.Live = float64(r.live) / float64(body)
			}
			st.Packs = append(st.Packs, ps)
			return nil
		})
	})
	if err != nil {
		return st, err
	}
	st.UniqueBytes = st.Chunks * int64(s.bs)
	for _, p := range st.Packs {
		fi, err := os.Stat(packPath(s.dir, p.ID))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return st, err
		}
		st.PhysicalBytes += fi.Size()
	}
	if st.UniqueBytes > 0 {
		st.DedupeRatio = float64(st.LogicalBytes) / float64(st.UniqueBytes)
	}
	if st.StoredBytes > 0 {
		st.CompressionRatio = float64(st.UniqueBytes) / float64(st.StoredBytes)
	}
	return st, nil
}
