package blockstore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// destageLoop runs destage whenever enough has gathered in the log, or the
// log has been quiet for DestageDelay, and merges layers that can be merged.
func (s *Store) destageLoop() {
	defer s.wg.Done()
	if err := ioFlusherThread(); err != nil {
		// Debug: a short command does not care; dstore serve says it
		// once at start (CheckIOFlusher).
		s.logger.Debug("blockstore: log and pack writers not marked as I/O flushers", "err", err)
	}
	t := time.NewTimer(s.opts.DestageDelay)
	defer t.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-t.C:
		}
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n > 0 {
			if err := s.destage(); err != nil {
				if errors.Is(err, ErrClosed) {
					return
				}
				s.logger.Error("blockstore: destage failed; will retry", "err", err)
				backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
				t.Reset(backoff)
				continue
			}
			backoff = 0
		}
		s.persistQuarantine()
		if _, err := s.mergeOne(); err != nil && !errors.Is(err, ErrClosed) {
			s.logger.Error("blockstore: layer merge failed", "err", err)
		}
		// Go again at once only when a batch's worth is waiting; a trickle
		// waits for the timer, so its records share a batch.
		s.mu.Lock()
		more := s.batchWaiting()
		s.mu.Unlock()
		if more {
			s.kick()
		}
		t.Reset(s.opts.DestageDelay)
	}
}

// dropBeat is dropLoop's beat.
const dropBeat = 50 * time.Millisecond

func dropAlias(as []alias, id uint64) []alias {
	out := as[:0]
	for _, a := range as {
		if a.id != id {
			out = append(out, a)
		}
	}
	return out
}

// dropLoop drops bbolt's mapped pages on a short beat (see
// dropMetaPages). Lookups drop them after maxTouches visits, but a destage
// commit cannot: it touches every page it rewrites (thousands of random
// index leaves for a batch of unique data), and the beat is what bounds
// that burst.
func (s *Store) dropLoop() {
	defer s.wg.Done()
	t := time.NewTicker(dropBeat)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.dropMetaPages()
		}
	}
}

// newChunk is a chunk this destage batch writes.
type newChunk struct {
	id     uint64
	fp     Fingerprint
	codec  uint8
	sealed []byte
	layer  uint64
	blk    uint64
	pack   uint64
	off    int64
}

// destage turns the oldest log records into chunks and bbolt entries:
// chunks are appended to the open pack and made durable, then one bbolt
// transaction records them together with the index, the layer maps, the
// layer graph and the new checkpoint; then the log is truncated (I2, I4).
func (s *Store) destage() error {
	s.destageMu.Lock()
	defer s.destageMu.Unlock()
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return ErrClosed
	}
	// At most 16 MiB of records, and at most 64 Ki block ops: records of
	// references to known chunks are small, and a batch of a million of
	// them would hold the store mutex for long in step 5.
	k, nb, nops := 0, int64(0), 0
	for k < len(s.queue) && (k == 0 || nb+s.queue[k].bytes <= destageBatchBytes && nops+len(s.queue[k].d.ops) <= destageBatchOps) {
		nb += s.queue[k].bytes
		nops += len(s.queue[k].d.ops)
		k++
	}
	batch := append([]*qrec(nil), s.queue[:k]...)
	s.mu.Unlock()
	if k == 0 {
		return nil
	}
	end := batch[len(batch)-1].end

	// A batch of plain block writes defers its map and index entries into
	// the front (front.go); a batch with a metadata record or a shrinking
	// truncate, whose effects on the map assume it complete, merges the
	// front first and writes its entries directly, as does a batch that
	// would take the front past its bound.
	// The map entries of a sequential batch land in a few leaves, and go
	// into the map at once unless map entries already wait in the front
	// (they must reach the map in log order); its index entries, random
	// keys, are deferred all the same.
	seq, direct := 0, s.opts.FrontBlocks < 0
	var prevLayer, prevBlk uint64
	for _, q := range batch {
		if q.d.typ != recBlocks || q.d.shrinks {
			direct = true
		}
		for i := range q.d.ops {
			if b := q.d.ops[i].blk; q.d.layer == prevLayer && b == prevBlk+1 {
				seq++
			}
			prevLayer, prevBlk = q.d.layer, q.d.ops[i].blk
		}
	}
	direct = direct || s.deferredBlocks+nops > s.opts.FrontBlocks
	mapDirect := s.deferredMap == 0 && 10*seq >= 9*nops

	// Chunks destaged into the front are not in the index yet: their
	// deferred pblocks in fpPending name them.
	known := make(map[Fingerprint]uint64)
	if s.deferred > 0 { // else there are none, and the walk is wasted
		s.mu.Lock()
		for _, q := range batch {
			for i := range q.d.ops {
				if op := &q.d.ops[i]; op.kind != kindHole {
					if pb := s.fpPending[op.fp]; pb != nil && pb.deferred {
						known[op.fp] = pb.chunk
					}
				}
			}
		}
		s.mu.Unlock()
	}
	for fp, id := range known {
		if s.isQuarantined(id) {
			delete(known, fp)
		}
	}

	// Phase 1: find which data blocks are new chunks.
	fresh := make(map[Fingerprint]*newChunk)
	var chunks []*newChunk
	nextChunk := s.nextChunk
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bIndex).Cursor()
		for _, q := range batch {
			if q.d.typ != recBlocks {
				continue
			}
			for i := range q.d.ops {
				op := &q.d.ops[i]
				if op.kind != kindData || fresh[op.fp] != nil {
					continue
				}
				// A block the write path found absent is new; only the
				// others (replayed, raced with a twin, remote) are looked up.
				if !op.absent {
					if id, ok := known[op.fp]; ok {
						if s.gcMark != nil {
							s.gcMark.set(id)
						}
						continue
					}
					id, ok, searched := s.indexGet(idx, &op.fp)
					if searched {
						s.touchedTx(tx, 1)
					}
					if ok {
						if s.gcMark != nil {
							s.gcMark.set(id)
						}
						known[op.fp] = id
						continue
					}
				}
				c := &newChunk{id: nextChunk, fp: op.fp, codec: op.codec, sealed: op.sealed, layer: q.d.layer, blk: op.blk}
				nextChunk++
				fresh[op.fp] = c
				chunks = append(chunks, c)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Blocks of one layer written together stay together, in block order,
	// so a sequential read of a volume reads its packs sequentially.
	slices.SortStableFunc(chunks, func(a, b *newChunk) int {
		return cmp.Or(cmp.Compare(a.layer, b.layer), cmp.Compare(a.blk, b.blk))
	})
	packSizes, closedPacks, err := s.writeChunks(chunks)
	if err != nil {
		return err
	}

	// Phase 2: one transaction for everything.
	s.mu.Lock()
	nextID := s.nextID
	s.mu.Unlock()
	var front *frontRec
	if !direct {
		front = &frontRec{maps: !mapDirect}
	}
	// A small front merges in the batch's own transaction. A large one
	// merges in a transaction of its own: bbolt splits the nodes the merge
	// filled only at commit, and the batch's inserts into those oversized
	// nodes would each shift thousands of entries.
	inline := direct && s.deferred > 0 && s.deferred <= frontMergeStep
	if direct && s.deferred > 0 && !inline {
		if err := s.mergeFrontLocked(); err != nil {
			return fmt.Errorf("blockstore: destage: %w", s.failBatch(closedPacks, err))
		}
	}
	var ids [][]uint64
	err = s.db.Update(func(tx *bolt.Tx) error {
		if inline {
			if _, err := applyFront(tx); err != nil {
				return err
			}
		}
		var err error
		ids, err = s.applyBatch(tx, batch, fresh, known, chunks, packSizes, nextChunk, nextID, end, front)
		return err
	})
	if err != nil {
		return fmt.Errorf("blockstore: destage commit: %w", s.failBatch(closedPacks, err))
	}
	if inline {
		s.frontMerged()
	}
	s.nextChunk = nextChunk
	if s.pack != nil {
		s.packCommitted = s.pack.size()
	}
	s.dropMetaPages()
	for _, w := range closedPacks {
		if err := w.close(); err != nil {
			s.logger.Warn("blockstore: closing pack", "pack", w.id(), "err", err)
		}
	}

	// Phase 3: what is now in bbolt leaves memory and the log; what is in
	// the front stays in memory as deferred pblocks, without its data.
	s.mu.Lock()
	s.destageGen.Add(1)
	for qi, q := range batch {
		if q.d.typ == recMeta {
			// A destaged merge moved the entries: the alias is no longer
			// needed by a reader that takes its chain from now on.
			for i := range q.d.effs {
				if e := &q.d.effs[i]; e.kind == effMerge {
					if into := s.layers[e.other]; into != nil {
						into.aliases = dropAlias(into.aliases, e.id)
						s.metaGen++
					}
				}
			}
		}
		if q.d.typ != recBlocks {
			continue
		}
		l := s.layers[q.d.layer]
		if front != nil {
			s.deferLocked(l, q, ids[qi], front.maps)
			continue
		}
		for i := range q.d.ops {
			op := &q.d.ops[i]
			if l != nil {
				if pb := l.pending[op.blk]; pb != nil && pb.lsn <= end {
					delete(l.pending, op.blk)
				}
			}
			if op.kind == kindData {
				if pb := s.fpPending[op.fp]; pb != nil && pb.lsn <= end {
					delete(s.fpPending, op.fp)
				}
			}
		}
	}
	if front != nil && front.nmap+front.nidx > 0 {
		s.deferred += front.nmap + front.nidx
		s.deferredMap += front.nmap
		// A block with both entries counts once: map entries cover every
		// block of the batch when deferred, index entries only new chunks.
		s.deferredBlocks += max(front.nmap, front.nidx)
	}
	for id, l := range s.truncated {
		if s.layers[id] != l {
			delete(s.truncated, id) // released meanwhile
			continue
		}
		kept := l.truncs[:0]
		l.selfLimit = noLimit
		for _, t := range l.truncs {
			if t.lsn > end {
				kept = append(kept, t)
				l.selfLimit = min(l.selfLimit, t.nb)
			}
		}
		l.truncs = kept
		if len(kept) == 0 {
			delete(s.truncated, id)
		}
	}
	// Clear the slots, or the array keeps the destaged records (and their
	// sealed bytes) reachable until it is reallocated.
	clear(s.queue[:k])
	s.queue = s.queue[k:]
	s.queueBytes.Add(-nb)
	s.queuedOps -= nops
	// The batch's pack bytes left the queue with it; nothing else moves
	// unpacked meanwhile (mu and destageMu are held).
	s.unpacked.Store(s.queueBytes.Load())
	s.spaceGen.Add(1)
	s.destageErr = nil
	s.room.Broadcast()
	s.mu.Unlock()
	return s.log.truncate(end)
}

// writeChunks appends new chunks to packs and makes them durable, rotating
// to a new pack at PackSize. It returns the size each touched pack will have
// once committed, and the packs that filled up (to close after commit).
// REQUIRES: s.destageMu held.
func (s *Store) writeChunks(chunks []*newChunk) (map[uint64]int64, []*packWriter, error) {
	sizes := make(map[uint64]int64)
	var closed []*packWriter
	fail := func(err error) (map[uint64]int64, []*packWriter, error) {
		return nil, nil, fmt.Errorf("blockstore: writing pack: %w", s.failBatch(closed, err))
	}
	// unpacked follows what reaches the files, which the file system's
	// free space already counts while the batch is still in queueBytes.
	var seen int64 // of the open pack's written bytes, already taken from unpacked
	if s.pack != nil {
		seen = s.pack.written
	}
	counted := func() {
		if d := s.pack.written - seen; d > 0 {
			// Written before it leaves unpacked: a reader in between
			// counts d twice, never not at all.
			s.unpacked.Add(-d)
			s.spaceGen.Add(1)
			seen = s.pack.written
		}
	}
	for _, c := range chunks {
		if s.pack == nil || s.pack.size() >= s.opts.PackSize {
			if s.pack != nil {
				if err := s.pack.sync(); err != nil {
					return fail(err)
				}
				counted()
				sizes[s.pack.id()] = s.pack.size()
				closed = append(closed, s.pack)
			}
			id := s.nextPack
			w, err := createPack(packPath(s.dir, id), id, s.bs)
			if err != nil {
				return fail(err)
			}
			s.nextPack++
			s.pack, s.packCommitted = w, 0
			seen = 0
		}
		off, err := s.pack.append(c.fp, c.codec, c.sealed)
		if err != nil {
			return fail(err)
		}
		counted()
		c.pack, c.off = s.pack.id(), off
	}
	if s.pack != nil && len(chunks) > 0 {
		if err := s.pack.sync(); err != nil {
			return fail(err)
		}
		counted()
		sizes[s.pack.id()] = s.pack.size()
	}
	return sizes, closed, nil
}

// failBatch undoes a destage batch that could not commit: the open pack
// goes back to its committed size, packs the batch made are removed, and
// writers waiting for log room learn the error. REQUIRES: s.destageMu held.
func (s *Store) failBatch(made []*packWriter, err error) error {
	s.abortPack()
	for _, w := range made {
		w.close()
		s.dropUncommittedPack(w.id())
	}
	err = noSpace(err)
	s.mu.Lock()
	// The batch's pack bytes are gone: all of the queue waits again
	// (mu and destageMu are held: nothing else moves unpacked).
	s.unpacked.Store(s.queueBytes.Load())
	s.spaceGen.Add(1)
	s.destageErr = err
	s.room.Broadcast()
	s.mu.Unlock()
	return err
}

// abortPack drops what was appended to the open pack since the last commit.
// A pack created by the failed batch is removed: no transaction knows it.
// REQUIRES: s.destageMu held.
func (s *Store) abortPack() {
	if s.pack == nil {
		return
	}
	id := s.pack.id()
	s.pack.close()
	s.pack = nil
	if s.dropUncommittedPack(id) {
		return
	}
	w, err := openPackAppend(packPath(s.dir, id), id, s.bs, s.packCommitted)
	if err != nil {
		s.logger.Error("blockstore: reopening pack after a failed destage", "pack", id, "err", err)
		return
	}
	s.pack = w
}

// dropUncommittedPack removes pack id if no committed transaction knows
// it, and reports whether it did.
func (s *Store) dropUncommittedPack(id uint64) bool {
	var known bool
	s.db.View(func(tx *bolt.Tx) error {
		known = tx.Bucket(bPacks).Get(u64b(id)) != nil
		return nil
	})
	if known {
		return false
	}
	if err := os.Remove(packPath(s.dir, id)); err != nil && !os.IsNotExist(err) {
		s.logger.Warn("blockstore: removing uncommitted pack", "pack", id, "err", err)
	}
	return true
}

// txLayers caches layer records inside one destage transaction.
type txLayers struct {
	b     *bolt.Bucket
	recs  map[uint64]*layerRec
	dirty map[uint64]bool
	gone  map[uint64]bool
}

func (t *txLayers) get(id uint64) (*layerRec, error) {
	if r, ok := t.recs[id]; ok {
		return r, nil
	}
	if t.gone[id] {
		return nil, nil
	}
	v := t.b.Get(u64b(id))
	if v == nil {
		t.gone[id] = true
		return nil, nil
	}
	r, _, err := decodeLayerRec(v)
	if err != nil {
		return nil, err
	}
	t.recs[id] = &r
	return &r, nil
}

func (t *txLayers) put(id uint64, r layerRec) {
	t.recs[id] = &r
	t.dirty[id] = true
	delete(t.gone, id)
}

func (t *txLayers) del(id uint64) error {
	delete(t.recs, id)
	delete(t.dirty, id)
	t.gone[id] = true
	return t.b.Delete(u64b(id))
}

func (t *txLayers) flush() error {
	for id := range t.dirty {
		if err := t.b.Put(u64b(id), t.recs[id].appendTo(nil)); err != nil {
			return err
		}
	}
	return nil
}

// applyBatch applies destaged log records to bbolt in log order.
//
// With front nil the batch's map and index entries go into the map and the
// index; otherwise into front, which becomes the batch's journal value. It
// returns the chunk each block op of each record refers to (0 for a hole or
// a skipped op), for the deferred pblocks.
func (s *Store) applyBatch(tx *bolt.Tx, batch []*qrec, fresh map[Fingerprint]*newChunk, known map[Fingerprint]uint64, chunks []*newChunk, packSizes map[uint64]int64, nextChunk, nextID uint64, end LSN, front *frontRec) ([][]uint64, error) {
	cb, ib, pb, mb := tx.Bucket(bChunks), tx.Bucket(bIndex), tx.Bucket(bPacks), tx.Bucket(bMap)
	// Chunk IDs only grow and map keys mostly do: fill their pages instead
	// of bbolt's half-full splits. The index takes random keys and keeps
	// the default.
	cb.FillPercent, mb.FillPercent = 1.0, 0.9
	// New chunks, in ID order, and their index entries in fingerprint order:
	// both sorted so each leaf page is touched once.
	byID := append([]*newChunk(nil), chunks...)
	sort.Slice(byID, func(i, j int) bool { return byID[i].id < byID[j].id })
	addLive := make(map[uint64][2]int64)
	for _, c := range byID {
		if err := cb.Put(u64b(c.id), encodeChunkRec(c.pack, c.off, len(c.sealed), c.codec, c.fp)); err != nil {
			return nil, err
		}
		a := addLive[c.pack]
		a[0] += int64(chunkHeaderSize + len(c.sealed))
		a[1]++
		addLive[c.pack] = a
	}
	byFP := append([]*newChunk(nil), chunks...)
	sort.Slice(byFP, func(i, j int) bool { return bytes.Compare(byFP[i].fp[:], byFP[j].fp[:]) < 0 })
	for _, c := range byFP {
		// Into the filter before the chunk leaves fpPending (fpfilter.go);
		// if this transaction fails, the bit is only a false positive.
		s.fpf.Load().add(&c.fp)
		s.fpfNext.Load().add(&c.fp) // a rebuild under way (rebuildFilterLocked)
		if front != nil {
			front.putIndex(c.fp, c.id)
			continue
		}
		if err := ib.Put(c.fp[:], le64(c.id)); err != nil {
			return nil, err
		}
	}
	for id, size := range packSizes {
		rec := decodePackRec(pb.Get(u64b(id)))
		rec.size = size
		a := addLive[id]
		rec.live += a[0]
		rec.chunks += a[1]
		rec.liveChunks += a[1]
		if err := pb.Put(u64b(id), rec.encode()); err != nil {
			return nil, err
		}
	}

	lt := &txLayers{b: tx.Bucket(bLayers), recs: map[uint64]*layerRec{}, dirty: map[uint64]bool{}, gone: map[uint64]bool{}}
	vb := tx.Bucket(bVolumes)
	var key [24]byte
	// The map values of the batch, carved from one allocation: bbolt keeps
	// a value slice (it copies only keys) until the transaction ends.
	nvals := 0
	for _, q := range batch {
		nvals += len(q.d.ops)
	}
	vals := make([]byte, 0, 8*nvals)
	val := func(v uint64) []byte {
		vals = binary.LittleEndian.AppendUint64(vals, v)
		return vals[len(vals)-8 : len(vals) : len(vals)]
	}
	ids := make([][]uint64, len(batch))
	for qi, q := range batch {
		switch q.d.typ {
		case recBlocks:
			rec, err := lt.get(q.d.layer)
			if err != nil {
				return nil, err
			}
			if rec == nil {
				continue // the layer was released after the write (I6)
			}
			ids[qi] = make([]uint64, len(q.d.ops))
			if err := s.applySizeTx(mb, lt, q.d.layer, rec, q.d.sizeMode, q.d.size); err != nil {
				return nil, err
			}
			bottom := rec.parent == 0 && rec.flags&layerRemote == 0
			for i := range q.d.ops {
				op := &q.d.ops[i]
				mapKey(key[:], rec.lineage, op.blk, q.d.layer)
				if op.kind == kindHole {
					switch {
					case front != nil && front.maps && bottom:
						front.delMap(key[:])
					case front != nil && front.maps:
						front.putMap(key[:], 0)
					case bottom:
						if err := mb.Delete(key[:]); err != nil {
							return nil, err
						}
					default:
						if err := mb.Put(key[:], val(0)); err != nil {
							return nil, err
						}
					}
					continue
				}
				id := op.chunk
				if op.kind != kindRef || id == 0 || s.isQuarantined(id) {
					// The write path's hint is the chunk GC keeps for this
					// reference (I7); without one, find it by fingerprint.
					id, err = resolveChunk(ib, fresh, known, op.fp)
				}
				if err != nil {
					return nil, fmt.Errorf("layer %d block %d: %w", q.d.layer, op.blk, err)
				}
				ids[qi][i] = id
				// The barrier for GC's lock-free map walk: a map entry
				// written while it marks keeps its chunk (section 11).
				s.gcMark.set(id)
				if front != nil && front.maps {
					front.putMap(key[:], id)
					continue
				}
				if err := mb.Put(key[:], val(id)); err != nil {
					return nil, err
				}
			}
		case recMeta:
			for i := range q.d.effs {
				if err := s.applyEffectTx(mb, vb, lt, &q.d.effs[i]); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := lt.flush(); err != nil {
		return nil, err
	}
	m := tx.Bucket(bMeta)
	openPack := uint64(0)
	if s.pack != nil {
		openPack = s.pack.id()
	}
	for _, kv := range []struct {
		k []byte
		v uint64
	}{
		{kCheckpoint, uint64(end)}, {kNextChunk, nextChunk}, {kNextPack, s.nextPack},
		{kNextID, nextID}, {kOpenPack, openPack},
	} {
		if err := m.Put(kv.k, u64b(kv.v)); err != nil {
			return nil, err
		}
	}
	if front != nil && front.nmap+front.nidx > 0 {
		// Keyed by the batch's end: journal values sort in log order.
		if err := tx.Bucket(bFront).Put(u64b(uint64(end)), front.encode()); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

func resolveChunk(ib *bolt.Bucket, fresh map[Fingerprint]*newChunk, known map[Fingerprint]uint64, fp Fingerprint) (uint64, error) {
	if c := fresh[fp]; c != nil {
		return c.id, nil
	}
	if id, ok := known[fp]; ok {
		return id, nil
	}
	if v := ib.Get(fp[:]); len(v) == 8 {
		return binary.LittleEndian.Uint64(v), nil
	}
	return 0, fmt.Errorf("blockstore: chunk %s referenced by the log is not in the index: %w", fp, ErrCorrupt)
}

// applySizeTx is applySize for bbolt: a shrink deletes the layer's entries
// past the new end and lowers its limit.
func (s *Store) applySizeTx(mb *bolt.Bucket, lt *txLayers, id uint64, rec *layerRec, mode uint8, size int64) error {
	switch mode {
	case sizeGrow:
		if size <= rec.size {
			return nil
		}
	case sizeSet:
		if size < rec.size {
			nb := blocksFor(size, s.bs)
			if nb < rec.limit {
				rec.limit = nb
			}
			if err := deleteLayerEntries(mb, rec.lineage, id, nb); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	rec.size = size
	lt.put(id, *rec)
	return nil
}

// deleteLayerEntries deletes the map entries of layer id at blocks >= from.
func deleteLayerEntries(mb *bolt.Bucket, lineage, id, from uint64) error {
	var start [24]byte
	mapKey(start[:], lineage, from, 0)
	var dead [][]byte
	c := mb.Cursor()
	for k, _ := c.Seek(start[:]); k != nil && binary.BigEndian.Uint64(k) == lineage; k, _ = c.Next() {
		if binary.BigEndian.Uint64(k[16:]) == id {
			dead = append(dead, append([]byte(nil), k...))
		}
	}
	for _, k := range dead {
		if err := mb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) applyEffectTx(mb, vb *bolt.Bucket, lt *txLayers, e *effect) error {
	switch e.kind {
	case effPutLayer:
		lt.put(e.id, e.rec)
	case effDelLayer:
		if err := deleteLayerEntries(mb, e.other, e.id, 0); err != nil {
			return err
		}
		return lt.del(e.id)
	case effPutVolume:
		return vb.Put(u64b(e.id), le64(e.other))
	case effDelVolume:
		return vb.Delete(u64b(e.id))
	case effMerge:
		if err := mergeEntries(mb, e.lineage, e.id, e.other, e.limit, s.gcMark); err != nil {
			return err
		}
		return lt.del(e.id)
	case effExt:
		if s.opts.Extension == nil {
			return fmt.Errorf("blockstore: extension payload in the log but no Extension: %w", ErrCorrupt)
		}
		return s.opts.Extension.Destage(lt.b.Tx(), e.ext)
	}
	return nil
}

// mergeEntries moves the entries of layer from into its only child into,
// except where into has its own entry or the block is not visible through
// into (at or above vis). Each moved entry's chunk is marked in mark (the
// barrier for GC's lock-free map walk; nil when no GC marks).
func mergeEntries(mb *bolt.Bucket, lineage, from, into, vis uint64, mark *bitset) error {
	var start [24]byte
	mapKey(start[:], lineage, 0, 0)
	type kv struct{ k, v []byte }
	var moves []kv
	var dead [][]byte
	c := mb.Cursor()
	for k, v := c.Seek(start[:]); k != nil && binary.BigEndian.Uint64(k) == lineage; k, v = c.Next() {
		if binary.BigEndian.Uint64(k[16:]) != from {
			continue
		}
		kk := append([]byte(nil), k...)
		dead = append(dead, kk)
		b := binary.BigEndian.Uint64(k[8:])
		if b >= vis {
			continue
		}
		var ck [24]byte
		mapKey(ck[:], lineage, b, into)
		moves = append(moves, kv{ck[:], append([]byte(nil), v...)})
	}
	for _, m := range moves {
		if mb.Get(m.k) != nil {
			continue
		}
		if len(m.v) == 8 {
			mark.set(binary.LittleEndian.Uint64(m.v))
		}
		if err := mb.Put(m.k, m.v); err != nil {
			return err
		}
	}
	for _, k := range dead {
		if err := mb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// mergeOne merges one frozen layer that nothing holds and that has exactly
// one child into that child, so chains do not grow with every released
// snapshot. The layer must have nothing pending in the log. It reports
// whether it merged one.
func (s *Store) mergeOne() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false, ErrClosed
	}
	for id := range s.mergeable {
		l := s.layers[id]
		if l == nil || !l.rec.frozen() || l.rec.holds != 0 || l.rec.children != 1 || l.rec.remote != "" {
			delete(s.mergeable, id)
			continue
		}
		if len(l.pending) > 0 || l.selfLimit != noLimit {
			continue
		}
		var child *layer
		for _, c := range s.layers {
			if c.rec.parent == id {
				child = c
				break
			}
		}
		if child == nil {
			delete(s.mergeable, id)
			continue
		}
		rec := child.rec
		vis := rec.limit
		rec.parent = l.rec.parent
		rec.limit = min(rec.limit, l.rec.limit)
		effs := []effect{
			{kind: effMerge, id: id, other: child.id, lineage: l.rec.lineage, limit: vis},
			{kind: effPutLayer, id: child.id, rec: rec},
		}
		// Unlike user operations, a merge need not be durable before it
		// returns: replay redoes it or finds it never happened.
		payload := appendMetaRec(nil, effs)
		_, err := s.appendLocked(decoded{typ: recMeta, effs: effs}, payload)
		return err == nil, err
	}
	return false, nil
}

// chunk table value (wire format): u64 pack | u64 offset | u32 sealed length |
// u8 codec | [32]fingerprint, little-endian.
const chunkRecSize = 53

func encodeChunkRec(pack uint64, off int64, n int, codec uint8, fp Fingerprint) []byte {
	b := make([]byte, 0, chunkRecSize)
	b = binary.LittleEndian.AppendUint64(b, pack)
	b = binary.LittleEndian.AppendUint64(b, uint64(off))
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = append(b, codec)
	return append(b, fp[:]...)
}

type chunkRec struct {
	pack  uint64
	off   int64
	n     int
	codec uint8
	fp    Fingerprint
}

func decodeChunkRec(v []byte) (chunkRec, error) {
	if len(v) != chunkRecSize {
		return chunkRec{}, fmt.Errorf("chunk record of %d bytes: %w", len(v), ErrCorrupt)
	}
	var r chunkRec
	r.pack = binary.LittleEndian.Uint64(v)
	r.off = int64(binary.LittleEndian.Uint64(v[8:]))
	r.n = int(binary.LittleEndian.Uint32(v[16:]))
	r.codec = v[20]
	copy(r.fp[:], v[21:])
	return r, nil
}

// pack table value (wire format): u64 committed size | u64 live bytes |
// u64 chunks | u64 live chunks, little-endian.
type packRec struct {
	size, live, chunks, liveChunks int64
}

func decodePackRec(v []byte) packRec {
	if len(v) != 32 {
		return packRec{}
	}
	return packRec{
		size:       int64(binary.LittleEndian.Uint64(v)),
		live:       int64(binary.LittleEndian.Uint64(v[8:])),
		chunks:     int64(binary.LittleEndian.Uint64(v[16:])),
		liveChunks: int64(binary.LittleEndian.Uint64(v[24:])),
	}
}

func (r packRec) encode() []byte {
	b := make([]byte, 0, 32)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.live))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.chunks))
	return binary.LittleEndian.AppendUint64(b, uint64(r.liveChunks))
}

func le64(v uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b
}
