package blockstore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dstore/dstore/internal/coarse"
	"github.com/dstore/dstore/internal/par"
)

// chain is a volume's resolved layer stack at one metadata generation.
type chain struct {
	top     uint64
	lineage uint64
	// order lists the layers top-down; vis[i] is the limit below which
	// entries of order[i] are visible (the minimum limit of the layers above).
	order   []*layer
	vis     []uint64
	members map[uint64]member // layer or alias ID -> its rank in order
	remote  string            // name of the remote basis at the bottom, if any
	rootID  uint64
	rootVis uint64
}

type member struct {
	rank int
	vis  uint64
}

// chainLocked returns v's chain. REQUIRES: s.mu held.
func (s *Store) chainLocked(v *volState) (*chain, error) {
	topl := s.layers[v.top]
	if topl == nil {
		return nil, fmt.Errorf("layer %d: %w", v.top, ErrNotFound)
	}
	if v.chain != nil && v.chainGen == s.metaGen && v.chain.top == v.top {
		return v.chain, nil
	}
	c := &chain{top: v.top, members: make(map[uint64]member)}
	vis := noLimit
	for id := v.top; id != 0; {
		l := s.layers[id]
		if l == nil {
			return nil, fmt.Errorf("volume %d: layer %d missing from its chain: %w", v.id, id, ErrCorrupt)
		}
		rank := len(c.order)
		c.order = append(c.order, l)
		c.vis = append(c.vis, vis)
		c.members[id] = member{rank: rank, vis: vis}
		for _, a := range l.aliases {
			c.members[a.id] = member{rank: rank, vis: min(vis, a.vis)}
		}
		if l.rec.remote != "" {
			c.remote, c.rootID, c.rootVis = l.rec.remote, id, vis
		}
		c.lineage = l.rec.lineage
		vis = min(vis, l.rec.limit)
		id = l.rec.parent
	}
	v.chain, v.chainGen = c, s.metaGen
	return c, nil
}

// blockRef is where one block's content comes from.
type blockRef struct {
	hole   bool
	pb     *pblock // pending: in the log, not yet destaged
	chunk  uint64
	remote bool
}

func (v *Volume) state() (*volState, error) {
	s := v.s
	// Without the store mutex, which every write takes often enough: a
	// write checks again, under it, that the volume is still there before
	// it appends.
	if vs := v.vs.Load(); vs != nil && !vs.gone.Load() && !s.closed.Load() {
		return vs, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	vs := s.vols[v.id]
	if vs == nil {
		return nil, fmt.Errorf("volume %d: %w", v.id, ErrNotFound)
	}
	v.vs.Store(vs)
	return vs, nil
}

// ID returns the volume's ID.
func (v *Volume) ID() VolumeID { return VolumeID(v.id) }

// Size returns the volume's size in bytes.
func (v *Volume) Size() int64 {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.vols[v.id]
	if vs == nil || s.layers[vs.top] == nil {
		return 0
	}
	return s.layers[vs.top].rec.size
}

// Top returns the volume's writable top layer.
func (v *Volume) Top() LayerID {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if vs := s.vols[v.id]; vs != nil {
		return LayerID(vs.top)
	}
	return 0
}

// resolve finds where blocks [first, first+n) of a volume come from. The
// pending entries and the bbolt read transaction are taken at the same
// instant, under s.mu: destage removes pending entries only after their
// commit, so at that instant every write is pending, in the transaction, or
// both, and where both hold a block the pending entry is the same or newer.
// So the higher layer wins, and a pending entry wins a tie.
func (s *Store) resolve(vs *volState, first uint64, n int) ([]blockRef, *chain, error) {
	refs := make([]blockRef, n)
	pendRank := make([]int, n)
	s.mu.Lock()
	c, err := s.chainLocked(vs)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	// Only the chain's layers with pending writes are probed per block, so
	// a deep chain of destaged layers costs nothing here (4.6). vis falls
	// with rank, so stopping at the first pending layer that cannot show
	// b is stopping where a walk of every layer would.
	var pendBuf [8]int
	pend := pendBuf[:0]
	for r, l := range c.order {
		if len(l.pending) > 0 {
			pend = append(pend, r)
		}
	}
	for i := range refs {
		pendRank[i] = -1
		b := first + uint64(i)
		for _, r := range pend {
			if b >= c.vis[r] {
				break
			}
			if pb := c.order[r].pending[b]; pb != nil {
				refs[i].pb = pb
				pendRank[i] = r
				break
			}
		}
	}
	// selfLimits change with truncates: read them at the same instant.
	self := make([]uint64, len(c.order))
	for r, l := range c.order {
		self[r] = l.selfLimit
	}
	nblocks := blocksFor(l0size(s, vs), s.bs)
	tx, err := s.db.Begin(false)
	s.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback()
	s.touchedTx(tx, n)
	cur := tx.Bucket(bMap).Cursor()
	var key [24]byte
	for i := range refs {
		b := first + uint64(i)
		limitRank := len(c.order)
		if pendRank[i] >= 0 {
			limitRank = pendRank[i]
		}
		rank, chunk, found := s.lookupMap(cur, key[:], c, self, b, limitRank)
		if found && (pendRank[i] < 0 || rank < pendRank[i]) {
			refs[i].pb = nil
			if chunk == 0 {
				refs[i].hole = true
			} else {
				refs[i].chunk = chunk
			}
			continue
		}
		if pendRank[i] >= 0 {
			if refs[i].pb.kind == kindHole {
				refs[i].hole = true
				refs[i].pb = nil
			}
			continue
		}
		if c.remote != "" && b < c.rootVis && b < nblocks {
			refs[i].remote = true
			continue
		}
		refs[i].hole = true
	}
	return refs, c, nil
}

// l0size is the size of vs's top layer. REQUIRES: s.mu held.
func l0size(s *Store, vs *volState) int64 {
	if l := s.layers[vs.top]; l != nil {
		return l.rec.size
	}
	return 0
}

// lookupMap scans the map entries of block b in c's lineage from the top
// layer down and returns the first that belongs to the chain and is visible.
func (s *Store) lookupMap(cur *bolt.Cursor, key []byte, c *chain, self []uint64, b uint64, maxRank int) (int, uint64, bool) {
	mapKey(key, c.lineage, b, c.top)
	k, v := cur.Seek(key)
	if k == nil {
		k, v = cur.Last()
	} else if !bytes.Equal(k, key) {
		k, v = cur.Prev()
	}
	for ; k != nil && bytes.Equal(k[:16], key[:16]); k, v = cur.Prev() {
		m, ok := c.members[binary.BigEndian.Uint64(k[16:])]
		if !ok {
			continue
		}
		if m.rank > maxRank {
			return 0, 0, false
		}
		if b >= m.vis {
			// invisible here, so invisible below too: a zero block
			return m.rank, 0, true
		}
		if b >= self[m.rank] {
			continue // deleted by a truncate that is not destaged yet
		}
		if len(v) != 8 {
			return 0, 0, false
		}
		return m.rank, binary.LittleEndian.Uint64(v), true
	}
	return 0, 0, false
}

func mapKey(k []byte, lineage, b, layer uint64) {
	binary.BigEndian.PutUint64(k[0:], lineage)
	binary.BigEndian.PutUint64(k[8:], b)
	binary.BigEndian.PutUint64(k[16:], layer)
}

// ReadAt reads len(p) bytes at off. Past the end it returns what there is and
// io.EOF. Holes read as zeros; corrupt chunks fail with ErrCorrupt.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	vs, err := v.state()
	if err != nil {
		return 0, err
	}
	return v.s.readAt(vs, p, off)
}

func (s *Store) readAt(vs *volState, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blockstore: negative offset: %w", ErrTooLarge)
	}
	s.mu.Lock()
	topl := s.layers[vs.top]
	if topl == nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("layer %d: %w", vs.top, ErrNotFound)
	}
	size := topl.rec.size
	seq := off == vs.seqEnd
	if seq {
		vs.seqRun++
	} else {
		vs.seqRun = 0
	}
	vs.seqEnd = off + int64(len(p))
	run := vs.seqRun
	s.mu.Unlock()
	if off >= size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > size-off {
		want = int(size - off)
	}
	if want == 0 {
		return 0, nil
	}
	bs := int64(s.bs)
	first := uint64(off / bs)
	last := uint64((off + int64(want) - 1) / bs)
	n := int(last - first + 1)
	blocks, err := s.readBlocks(vs, first, n, run >= 2)
	if err != nil {
		return 0, err
	}
	done := 0
	for i := 0; i < n; i++ {
		b := first + uint64(i)
		start := int64(0)
		if i == 0 {
			start = off - int64(b)*int64(bs)
		}
		end := bs
		if rem := int64(want - done); end-start > rem {
			end = start + rem
		}
		if blocks[i] == nil {
			clear(p[done : done+int(end-start)])
		} else {
			copy(p[done:], blocks[i][start:end])
		}
		done += int(end - start)
	}
	if want < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// readBlocks returns the plaintext of n blocks (nil for a hole).
func (s *Store) readBlocks(vs *volState, first uint64, n int, seq bool) ([][]byte, error) {
	refs, c, err := s.resolve(vs, first, n)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	var chunks []uint64
	var at []int
	var remote []uint64
	var remoteAt []int
	for i, r := range refs {
		switch {
		case r.hole:
		case r.pb != nil:
			if r.pb.sealed != nil {
				out[i], err = s.seal.open(make([]byte, 0, s.bs), r.pb.fp, r.pb.codec, r.pb.sealed)
				if err != nil {
					return nil, fmt.Errorf("pending block %d: %w", first+uint64(i), err)
				}
			} else if r.pb.chunk != 0 {
				chunks = append(chunks, r.pb.chunk)
				at = append(at, i)
			} else {
				// A reference whose data was destaged: find the chunk by
				// fingerprint.
				id, err := s.chunkByFP(r.pb.fp)
				if err != nil {
					return nil, err
				}
				chunks = append(chunks, id)
				at = append(at, i)
			}
		case r.remote:
			remote = append(remote, first+uint64(i))
			remoteAt = append(remoteAt, i)
		default:
			chunks = append(chunks, r.chunk)
			at = append(at, i)
		}
	}
	if len(chunks) > 0 {
		data, err := s.readChunks(chunks)
		if err != nil {
			return nil, err
		}
		for j, i := range at {
			out[i] = data[j]
		}
	}
	if len(remote) > 0 {
		data, err := s.readRemote(c, remote)
		if err != nil {
			return nil, err
		}
		for j, i := range remoteAt {
			out[i] = data[j]
		}
	}
	if seq && len(chunks) > 0 {
		s.readAhead(vs, first+uint64(n))
	}
	return out, nil
}

func (s *Store) chunkByFP(fp Fingerprint) (uint64, error) {
	s.mu.Lock()
	pb := s.fpPending[fp]
	s.mu.Unlock()
	if pb != nil && pb.deferred {
		return pb.chunk, nil // in the front, not the index yet
	}
	var id uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bIndex).Get(fp[:])
		if len(v) != 8 {
			return fmt.Errorf("blockstore: chunk %s not in index: %w", fp, ErrCorrupt)
		}
		id = binary.LittleEndian.Uint64(v)
		return nil
	})
	return id, err
}

// readAhead warms the cache with the region after a sequential read.
func (s *Store) readAhead(vs *volState, from uint64) {
	n := int((1 << 20) / s.bs)
	if n < 4 {
		n = 4
	}
	s.mu.Lock()
	if s.closed.Load() || vs.readingAhead {
		s.mu.Unlock()
		return
	}
	vs.readingAhead = true
	s.bg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			vs.readingAhead = false
			s.mu.Unlock()
			s.bg.Done()
		}()
		refs, _, err := s.resolve(vs, from, n)
		if err != nil {
			return
		}
		var ids []uint64
		for _, r := range refs {
			if r.chunk != 0 && !s.cache.has(r.chunk) {
				ids = append(ids, r.chunk)
			}
		}
		if len(ids) > 0 {
			s.readChunks(ids) // errors surface on the real read
		}
	}()
}

// WriteAt writes p at off. The write is in the log and visible to reads when
// it returns, and durable after the next Sync (an NFS UNSTABLE write).
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	return v.write(p, off, false)
}

// WriteAtStable writes p at off and returns once it is durable (an NFS
// FILE_SYNC write).
func (v *Volume) WriteAtStable(p []byte, off int64) (int, error) {
	return v.write(p, off, true)
}

// maxRecordData bounds the data of one log record; a longer write becomes
// several records (each atomic on its own), cut at block boundaries.
const maxRecordData = 4 << 20

func (v *Volume) write(p []byte, off int64, stable bool) (int, error) {
	if off < 0 || off > MaxVolumeSize || int64(len(p)) > MaxVolumeSize-off {
		return 0, fmt.Errorf("blockstore: write of %d bytes at %d: %w", len(p), off, ErrTooLarge)
	}
	s := v.s
	vs, err := v.state()
	if err != nil {
		return 0, err
	}
	done := 0
	var end LSN
	for done < len(p) {
		n := len(p) - done
		if n > maxRecordData {
			// end the piece on a block boundary
			at := off + int64(done) + maxRecordData
			n = int(at - at%int64(s.bs) - off - int64(done))
		}
		e, err := s.writePiece(vs, v.id, p[done:done+n], off+int64(done))
		if err != nil {
			return done, err
		}
		end = e
		done += n
	}
	if stable && end != 0 {
		if err := s.log.waitDurable(end); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (s *Store) writePiece(vs *volState, id uint64, p []byte, off int64) (LSN, error) {
	if err := s.waitRoom(); err != nil {
		return 0, err
	}
	if err := s.checkSpace(int64(len(p))); err != nil {
		return 0, err
	}
	defer s.admitted.Add(-int64(len(p)))
	vs.rw.RLock()
	defer vs.rw.RUnlock()
	bs := int64(s.bs)
	unlock := s.lockStripes(id, uint64(off/bs), uint64((off+int64(len(p))-1)/bs))
	defer unlock()
	return s.writeBlocks(vs, p, off, sizeGrow, off+int64(len(p)))
}

// writeBlocks turns p at off into one log record of whole blocks (merging
// partial blocks with their current content), logs it and applies it.
// REQUIRES: the stripes of the blocks are locked.
func (s *Store) writeBlocks(vs *volState, p []byte, off int64, mode uint8, size int64) (LSN, error) {
	bs := int64(s.bs)
	first := uint64(off / bs)
	n := 0
	if len(p) > 0 {
		n = int(uint64((off+int64(len(p))-1)/bs) - first + 1)
	}
	// Partial first and last blocks need their current content.
	var old [][]byte
	headPartial := len(p) > 0 && off%bs != 0
	tailPartial := len(p) > 0 && (off+int64(len(p)))%bs != 0
	if headPartial || tailPartial {
		var err error
		if old, err = s.readPartial(vs, first, n, headPartial, tailPartial); err != nil {
			return 0, err
		}
	}
	ops := make([]blockOp, n)
	// Dedupe: a block already pending or stored costs a reference, not its
	// bytes (the in-memory front first, then the index). The GC lock is held
	// from the lookup until the record is in the queue, so a GC either sees
	// the reference in the queue or has its mark set by the hit (I7).
	// destageGen is read before any lookup: if no destage commits until
	// the record is queued, the misses are still not in the index.
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	gen := s.destageGen.Load()
	// Fingerprints, dedupe lookups and compression of a large write run on
	// all cores, each core on its own range of blocks: for duplicate data
	// hashing and lookups are nearly all the work.
	fps := make([]Fingerprint, n)
	var (
		errMu  sync.Mutex
		errOne error
	)
	miss := make([]bool, n) // kindData and in neither the front nor the index
	par.Do(n, func(lo, hi int) {
		data := make([][]byte, 0, hi-lo) // this range's blocks that are not zeros
		at := make([]int, 0, hi-lo)      // their indices in ops
		for i := lo; i < hi; i++ {
			b := first + uint64(i)
			bstart := int64(b) * bs
			blo := max(off, bstart)
			bhi := min(off+int64(len(p)), bstart+bs)
			var block []byte
			if blo == bstart && bhi == bstart+bs {
				block = p[blo-off : bhi-off]
			} else {
				block = make([]byte, bs)
				if old[i] != nil {
					copy(block, old[i])
				}
				copy(block[blo-bstart:], p[blo-off:bhi-off])
			}
			ops[i].blk = b
			if isZero(block) {
				ops[i].kind = kindHole
				continue
			}
			ops[i].kind = kindData
			ops[i].sealed = block // sealed below unless deduplicated
			data, at = append(data, block), append(at, i)
		}
		if len(at) == 0 {
			return
		}
		// The range's blocks are hashed together, side by side.
		sums := fps[lo : lo+len(data)]
		s.seal.fingerprintMany(data, sums)
		for j, i := range at {
			ops[i].fp = sums[j]
		}
		lookups := at[:0:0]
		var hits []uint64
		s.mu.Lock()
		for _, i := range at {
			if pb := s.fpPending[ops[i].fp]; pb != nil && !(pb.deferred && s.isQuarantined(pb.chunk)) {
				ops[i].kind = kindRef
				ops[i].sealed, ops[i].codec, ops[i].chunk = pb.sealed, pb.codec, pb.chunk
				if pb.deferred {
					hits = append(hits, pb.chunk) // in the front, not the index yet
				}
			} else {
				lookups = append(lookups, i)
			}
		}
		s.mu.Unlock()
		// The index's cache (fpCache), then the index for the rest.
		rest := lookups[:0:0]
		for _, i := range lookups {
			if id := s.fpc.get(&ops[i].fp); id != 0 && !s.isQuarantined(id) {
				ops[i].kind = kindRef
				ops[i].sealed = nil
				ops[i].chunk = id
				hits = append(hits, id)
			} else {
				rest = append(rest, i)
			}
		}
		lookups = rest
		// The filter rules out most new data without a bbolt search.
		searched := 0
		for _, i := range lookups {
			if s.fpf.Load().absent(&ops[i].fp) {
				miss[i] = true
			} else {
				searched++
			}
		}
		var err error
		if searched > 0 {
			err = s.db.View(func(tx *bolt.Tx) error {
				// One cursor for all lookups: Bucket.Get would build a new
				// one (and allocate its stack) per block.
				cur := tx.Bucket(bIndex).Cursor()
				for _, i := range lookups {
					if miss[i] {
						continue // ruled out by the filter
					}
					if id, ok := s.indexSeek(cur, &ops[i].fp); ok {
						ops[i].kind = kindRef
						ops[i].sealed = nil
						ops[i].chunk = id
						hits = append(hits, id)
						s.fpc.set(&ops[i].fp, ops[i].chunk)
					} else {
						miss[i] = true
					}
				}
				s.touchedTx(tx, searched)
				return nil
			})
		}
		if err != nil {
			errMu.Lock()
			errOne = cmp.Or(errOne, err)
			errMu.Unlock()
			return
		}
		if s.gcMark != nil {
			for _, id := range hits {
				s.gcMark.set(id)
			}
		}
		// The misses are sealed side by side into shared allocations.
		seal := lookups[:0:0]
		for _, i := range lookups {
			if miss[i] {
				seal = append(seal, i)
			}
		}
		s.seal.sealMany(ops, seal, &vs.guess)
	})
	if errOne != nil {
		return 0, errOne
	}
	// The record goes to the log as parts: the entry headers, and each
	// sealed block as it is, copied once, into the log buffer.
	parts := make([][]byte, 0, 2*len(ops)+1)
	parts = append(parts, nil) // the record header, once the top is known
	heads := make([]byte, 0, len(ops)*(8+1+32+1+4+8))
	for i := range ops {
		op := &ops[i]
		start := len(heads)
		heads = binary.LittleEndian.AppendUint64(heads, op.blk)
		heads = append(heads, op.kind)
		switch op.kind {
		case kindData:
			heads = append(heads, op.fp[:]...)
			heads = append(heads, op.codec)
			heads = binary.LittleEndian.AppendUint32(heads, uint32(len(op.sealed)))
			parts = append(parts, heads[start:len(heads):len(heads)], op.sealed)
		case kindRef:
			// Only the fingerprint and chunk go to the log; the sealed bytes
			// of a pending twin stay in memory for reads.
			heads = append(heads, op.fp[:]...)
			heads = binary.LittleEndian.AppendUint64(heads, op.chunk)
			parts = append(parts, heads[start:len(heads):len(heads)])
		default:
			parts = append(parts, heads[start:len(heads):len(heads)])
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vols[vs.id] != vs {
		return 0, fmt.Errorf("volume %d: %w", vs.id, ErrNotFound)
	}
	top := vs.top
	if s.destageGen.Load() == gen {
		// No destage committed since the lookups: the misses are still
		// not in the index (applyLocked checks for twins logged since).
		for i := range ops {
			if miss[i] {
				ops[i].absent = true
			}
		}
	}
	parts[0] = appendBlocksHeader(make([]byte, 0, 32), top, mode, size, n)
	return s.appendLocked(decoded{typ: recBlocks, layer: top, sizeMode: mode, size: size, ops: ops}, parts...)
}

// readPartial reads the blocks a write only partly covers.
func (s *Store) readPartial(vs *volState, first uint64, n int, head, tail bool) ([][]byte, error) {
	old := make([][]byte, n)
	idx := []int{}
	if head {
		idx = append(idx, 0)
	}
	if tail && (n > 1 || !head) {
		idx = append(idx, n-1)
	}
	for _, i := range idx {
		blocks, err := s.readBlocks(vs, first+uint64(i), 1, false)
		if err != nil {
			return nil, err
		}
		old[i] = blocks[0]
	}
	return old, nil
}

// Truncate sets the volume's size. Shrinking frees the blocks past the end;
// growing reads as zeros.
func (v *Volume) Truncate(size int64) error {
	if size < 0 || size > MaxVolumeSize {
		return fmt.Errorf("blockstore: truncate to %d: %w", size, ErrTooLarge)
	}
	s := v.s
	vs, err := v.state()
	if err != nil {
		return err
	}
	if err := s.waitRoom(); err != nil {
		return err
	}
	vs.rw.Lock()
	defer vs.rw.Unlock()
	bs := int64(s.bs)
	var tail []byte
	off := size
	if size%bs != 0 && size < v.Size() {
		// Zero the rest of the new last block, in the same record as the
		// size change.
		tail = make([]byte, bs-size%bs)
	}
	unlock := s.lockStripes(v.id, uint64(size/bs), uint64(size/bs))
	defer unlock()
	_, err = s.writeBlocks(vs, tail, off, sizeSet, size)
	return err
}

// Sync makes every write to the volume so far durable.
func (v *Volume) Sync() error {
	if _, err := v.state(); err != nil {
		return err
	}
	return v.s.log.sync()
}

// lockStripes locks the stripes covering blocks [first, last] of a volume in
// a fixed order and returns the unlock function.
func (s *Store) lockStripes(vol, first, last uint64) func() {
	const group = 64 // blocks per stripe group
	if first/group == last/group {
		// One group (every small write): no bookkeeping to allocate.
		m := &s.stripes[(vol*0x9E3779B97F4A7C15^(first/group)*0xC2B2AE3D27D4EB4F)>>52]
		m.Lock()
		return m.Unlock
	}
	var idx []int
	seen := map[int]bool{}
	for g := first / group; g <= last/group; g++ {
		i := int((vol*0x9E3779B97F4A7C15 ^ g*0xC2B2AE3D27D4EB4F) >> 52)
		if !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
		if len(idx) == len(s.stripes) {
			break
		}
	}
	sort.Ints(idx)
	for _, i := range idx {
		s.stripes[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.stripes[i].Unlock()
		}
	}
}

// waitRoom applies backpressure: while the NVLOG holds more than
// MaxLogBytes not yet destaged, writers wait for destage.
func (s *Store) waitRoom() error {
	if s.queueBytes.Load() <= s.opts.MaxLogBytes {
		return nil // the common case, without the store mutex
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queueBytes.Load() > s.opts.MaxLogBytes {
		if s.closed.Load() {
			return ErrClosed
		}
		if s.destageErr != nil {
			// Destage is failing; do not let writers queue behind it forever.
			return fmt.Errorf("blockstore: log full and destage failing: %w", s.destageErr)
		}
		s.kick()
		s.room.Wait()
	}
	return nil
}

// LayerView reads a frozen layer: the content of a volume at the instant it
// was frozen (a snapshot member).
type LayerView struct {
	s  *Store
	vs *volState // an unregistered state whose top is the layer
}

// OpenLayer returns a read-only view of a frozen layer. Reads fail with
// ErrNotFound once the layer is gone.
func (s *Store) OpenLayer(id LayerID) (*LayerView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.layers[uint64(id)]
	if l == nil || !l.rec.frozen() {
		return nil, fmt.Errorf("frozen layer %d: %w", id, ErrNotFound)
	}
	return &LayerView{s: s, vs: &volState{top: uint64(id)}}, nil
}

func (lv *LayerView) check() error {
	s := lv.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.layers[lv.vs.top] == nil {
		return fmt.Errorf("layer %d: %w", lv.vs.top, ErrNotFound)
	}
	return nil
}

// ReadAt reads the layer as a volume would.
func (lv *LayerView) ReadAt(p []byte, off int64) (int, error) {
	if err := lv.check(); err != nil {
		return 0, err
	}
	return lv.s.readAt(lv.vs, p, off)
}

// Size is the layer's size.
func (lv *LayerView) Size() int64 {
	s := lv.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.layers[lv.vs.top]; l != nil {
		return l.rec.size
	}
	return 0
}

// allocTTL is how long Allocated trusts its last count.
const allocTTL = 2 * time.Second

// Allocated returns the bytes of the volume's blocks that hold data (not
// holes, not remote blocks yet to be fetched): what a thin-provisioned file
// costs before dedupe and compression, the `used` NFS reports. Counting
// walks the volume's map entries, so the count is cached: the first call
// counts, later calls return the last count at once and refresh it in the
// background when it is older than allocTTL.
func (v *Volume) Allocated() int64 {
	vs, err := v.state()
	if err != nil {
		return 0
	}
	s := v.s
	s.mu.Lock()
	// The coarse clock: Allocated is asked on every NFS reply with
	// attributes, under s.mu, and a real clock read is a system call in
	// an emulated guest.
	known := vs.allocAt != 0
	fresh := known && coarse.UnixNano()-vs.allocAt < int64(allocTTL)
	n := vs.alloc
	refresh := known && !fresh && !vs.allocBusy && !s.closed.Load()
	if refresh {
		vs.allocBusy = true
		s.bg.Add(1)
	}
	s.mu.Unlock()
	switch {
	case fresh:
		return n
	case refresh:
		go func() {
			defer s.bg.Done()
			s.recount(vs)
		}()
		return n
	case known:
		return n // a refresh is running
	}
	return s.recount(vs)
}

// recount counts vs's allocated bytes and caches the count.
func (s *Store) recount(vs *volState) int64 {
	s.mu.Lock()
	nb := blocksFor(l0size(s, vs), s.bs)
	s.mu.Unlock()
	blocks, err := s.countAllocated(vs, nb)
	s.mu.Lock()
	defer s.mu.Unlock()
	vs.allocBusy = false
	if err != nil {
		return vs.alloc
	}
	vs.alloc, vs.allocAt = blocks*int64(s.bs), coarse.UnixNano()
	return vs.alloc
}

// countAllocated counts the blocks below nb that hold data, walking the map
// entries of the volume's lineage (O(entries), not O(size): a 40 GiB sparse
// disk with little written costs little) plus the pending ones.
func (s *Store) countAllocated(vs *volState, nb uint64) (int64, error) {
	type best struct {
		rank int
		data bool
	}
	s.mu.Lock()
	c, err := s.chainLocked(vs)
	if err != nil {
		s.mu.Unlock()
		return 0, err
	}
	pend := make(map[uint64]best)
	for r, l := range c.order {
		for b, pb := range l.pending {
			if b >= nb || b >= c.vis[r] {
				continue
			}
			if old, ok := pend[b]; !ok || r < old.rank {
				pend[b] = best{r, pb.kind != kindHole}
			}
		}
	}
	self := make([]uint64, len(c.order))
	for r, l := range c.order {
		self[r] = l.selfLimit
	}
	tx, err := s.db.Begin(false)
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var n int64
	count := func(b uint64, have bool, bb best) {
		if p, ok := pend[b]; ok && (!have || p.rank <= bb.rank) {
			bb, have = p, true
		}
		delete(pend, b)
		if have && bb.data {
			n++
		}
	}
	var start [24]byte
	mapKey(start[:], c.lineage, 0, 0)
	cur := tx.Bucket(bMap).Cursor()
	cb, have, cbest := uint64(0), false, best{}
	started := false
	for k, v := cur.Seek(start[:]); k != nil && binary.BigEndian.Uint64(k) == c.lineage; k, v = cur.Next() {
		b := binary.BigEndian.Uint64(k[8:])
		if b >= nb {
			break
		}
		if started && b != cb {
			count(cb, have, cbest)
			have = false
		}
		cb, started = b, true
		m, ok := c.members[binary.BigEndian.Uint64(k[16:])]
		if !ok || b >= m.vis || b >= self[m.rank] || len(v) != 8 {
			continue
		}
		if !have || m.rank < cbest.rank {
			cbest, have = best{m.rank, binary.LittleEndian.Uint64(v) != 0}, true
		}
	}
	if started {
		count(cb, have, cbest)
	}
	for _, p := range pend {
		if p.data {
			n++
		}
	}
	return n, nil
}
