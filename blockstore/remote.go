package blockstore

import (
	"context"
	"fmt"

	"github.com/dstore/dstore/internal/par"
	bolt "go.etcd.io/bbolt"
)

// RemoteIndex is implemented by a RemoteBasis that knows what its blocks
// are without fetching them (an OX manifest does). With it a read of a
// remote block that this datastore already stores (an import into the
// datastore that exported it, or of data it fetched for another import)
// costs a reference, not a fetch.
type RemoteIndex interface {
	// Locate reports block n: a hole, or, when the basis knows it, the
	// fingerprint the block has in this datastore (known). It must not
	// block on the network.
	Locate(n int64) (hole bool, fp Fingerprint, known bool)
	// Fetched tells the basis the fingerprint, in this datastore, of
	// block n that the store just took from it, so that later Locates
	// know it.
	Fetched(n int64, fp Fingerprint)
}

// RemoteBatch is implemented by a RemoteBasis that fetches several blocks
// in fewer requests (adjacent records in one ranged GET). p[i] has the
// block size; holes[i] reports an all-zero block.
type RemoteBatch interface {
	ReadBlocks(ctx context.Context, ns []int64, p [][]byte) (holes []bool, err error)
}

func (s *Store) remoteBasis(name string, root uint64) (RemoteBasis, error) {
	if s.opts.Remote == nil {
		return nil, fmt.Errorf("blockstore: layer %d has remote basis %q but no resolver is configured", root, name)
	}
	rb, err := s.opts.Remote(name)
	if err != nil {
		return nil, fmt.Errorf("blockstore: remote basis %q: %w", name, err)
	}
	return rb, nil
}

// readRemote returns the plaintext (nil for a hole) of blocks of the
// chain's remote basis and keeps them as blocks of the remote layer, so
// the next read is local. Blocks the basis can name by a fingerprint this
// store already holds are taken from the store, never fetched.
func (s *Store) readRemote(c *chain, blocks []uint64) ([][]byte, error) {
	rb, err := s.remoteBasis(c.remote, c.rootID)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(blocks))
	ops := make([]blockOp, 0, len(blocks))
	var fetch []int // indexes into blocks
	ri, _ := rb.(RemoteIndex)
	if ri != nil {
		var known []int
		fps := make([]Fingerprint, len(blocks))
		for i, b := range blocks {
			hole, fp, ok := ri.Locate(int64(b))
			switch {
			case hole:
				ops = append(ops, blockOp{blk: b, kind: kindHole})
			case ok:
				fps[i] = fp
				known = append(known, i)
			default:
				fetch = append(fetch, i)
			}
		}
		if len(known) > 0 {
			miss, err := s.remoteLocal(c, blocks, fps, known, out)
			if err != nil {
				return nil, err
			}
			fetch = append(fetch, miss...)
		}
	} else {
		fetch = make([]int, len(blocks))
		for i := range blocks {
			fetch[i] = i
		}
	}
	if len(fetch) == 0 {
		s.keepRemote(c.rootID, ops)
		return out, nil
	}
	bufs := make([][]byte, len(fetch))
	ns := make([]int64, len(fetch))
	for j, i := range fetch {
		bufs[j] = make([]byte, s.bs)
		ns[j] = int64(blocks[i])
	}
	var holes []bool
	if rbb, ok := rb.(RemoteBatch); ok && len(fetch) > 1 {
		holes, err = rbb.ReadBlocks(context.Background(), ns, bufs)
		if err == nil && len(holes) != len(ns) {
			err = fmt.Errorf("remote basis answered %d of %d blocks", len(holes), len(ns))
		}
		if err != nil {
			return nil, fmt.Errorf("blockstore: remote blocks %d.. of %q: %w", ns[0], c.remote, err)
		}
	} else {
		holes = make([]bool, len(ns))
		for j, n := range ns {
			if holes[j], err = rb.ReadBlock(context.Background(), n, bufs[j]); err != nil {
				return nil, fmt.Errorf("blockstore: remote block %d of %q: %w", n, c.remote, err)
			}
		}
	}
	for j, i := range fetch {
		op := blockOp{blk: blocks[i], kind: kindHole}
		if !holes[j] && !isZero(bufs[j]) {
			op.fp = s.seal.fingerprint(bufs[j])
			op.kind = kindData
			op.codec, op.sealed = s.seal.seal(nil, op.fp, bufs[j])
			out[i] = bufs[j]
			if ri != nil {
				ri.Fetched(ns[j], op.fp)
			}
		}
		ops = append(ops, op)
	}
	s.keepRemote(c.rootID, ops)
	return out, nil
}

// keepRemote logs blocks a read took from a remote basis. Failing to keep
// them does not fail the read, which has the right bytes: the next read
// fetches them again.
func (s *Store) keepRemote(root uint64, ops []blockOp) {
	if err := s.logRemote(root, ops); err != nil {
		s.logger.Warn("blockstore: could not keep remote blocks", "layer", root, "blocks", len(ops), "err", err)
	}
}

// remoteLocal serves the known-fingerprint blocks at idx from this store's
// own chunks (pending or destaged) and logs them as references in the
// remote layer. It returns the indexes it could not serve locally.
func (s *Store) remoteLocal(c *chain, blocks []uint64, fps []Fingerprint, idx []int, out [][]byte) ([]int, error) {
	// The GC lock is held from the lookups until the references are in
	// the queue (I7); nothing here waits on the network.
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	var ops []blockOp
	var ids []uint64
	var at []int
	var miss []int
	s.mu.Lock()
	pending := make([]*pblock, len(idx))
	for j, i := range idx {
		if pb := s.fpPending[fps[i]]; pb != nil && (pb.sealed != nil || pb.deferred) {
			pending[j] = pb
		}
	}
	s.mu.Unlock()
	var look []int
	for j, i := range idx {
		if pb := pending[j]; pb != nil && pb.deferred {
			// Destaged into the front: read like an index hit.
			if !s.isQuarantined(pb.chunk) {
				ids = append(ids, pb.chunk)
				at = append(at, i)
			} else {
				miss = append(miss, i)
			}
			continue
		}
		if pb := pending[j]; pb != nil {
			plain, err := s.seal.open(make([]byte, 0, s.bs), pb.fp, pb.codec, pb.sealed)
			if err != nil {
				miss = append(miss, i)
				continue
			}
			out[i] = plain
			ops = append(ops, blockOp{blk: blocks[i], kind: kindRef, fp: fps[i], codec: pb.codec, sealed: pb.sealed})
			continue
		}
		look = append(look, i)
	}
	if len(look) > 0 {
		err := s.db.View(func(tx *bolt.Tx) error {
			cur := tx.Bucket(bIndex).Cursor()
			for _, i := range look {
				if id, ok, _ := s.indexGet(cur, &fps[i]); ok {
					ids = append(ids, id)
					at = append(at, i)
				} else {
					miss = append(miss, i)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(ids) > 0 {
		if s.gcMark != nil {
			for _, id := range ids {
				s.gcMark.set(id)
			}
		}
		data, err := s.readChunks(ids)
		if err != nil {
			// A local copy that does not read is no reason to fail: the
			// basis has the block.
			s.logger.Warn("blockstore: local copy of a remote block unreadable; fetching it", "err", err)
			miss = append(miss, at...)
		} else {
			for j, i := range at {
				out[i] = data[j]
				ops = append(ops, blockOp{blk: blocks[i], kind: kindRef, fp: fps[i], chunk: ids[j]})
			}
		}
	}
	s.keepRemote(c.rootID, ops)
	return miss, nil
}

// logRemote logs blocks taken from a remote basis as blocks of the remote
// layer root, skipping blocks that someone else logged first. Nothing
// waits for durability: a lost record is fetched again.
func (s *Store) logRemote(root uint64, ops []blockOp) error {
	if len(ops) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.layers[root]
	if l == nil {
		return nil // the basis went away meanwhile; the reads were still right
	}
	keep := ops[:0]
	for _, op := range ops {
		if l.pending[op.blk] == nil {
			keep = append(keep, op)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	payload := appendBlocksHeader(nil, root, sizeKeep, 0, len(keep))
	for i := range keep {
		payload = appendBlockOp(payload, &keep[i])
	}
	_, err := s.appendLocked(decoded{typ: recBlocks, layer: root, ops: keep}, payload)
	return err
}

// remoteLayer checks that id is a remote layer and returns its lineage.
// REQUIRES: s.mu held.
func (s *Store) remoteLayerLocked(id LayerID) (*layer, error) {
	l := s.layers[uint64(id)]
	if l == nil || l.rec.flags&layerRemote == 0 {
		return nil, fmt.Errorf("remote layer %d: %w", id, ErrNotFound)
	}
	return l, nil
}

// RemoteMissing returns those of blocks (ascending) that the remote layer
// id does not hold yet: neither fetched nor filled. A thickener asks this
// before it fetches.
func (s *Store) RemoteMissing(id LayerID, blocks []uint64) ([]uint64, error) {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	l, err := s.remoteLayerLocked(id)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	lineage := l.rec.lineage
	var check []uint64
	for _, b := range blocks {
		if l.pending[b] == nil {
			check = append(check, b)
		}
	}
	tx, err := s.db.Begin(false)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	mb := tx.Bucket(bMap)
	var key [24]byte
	var out []uint64
	for _, b := range check {
		mapKey(key[:], lineage, b, uint64(id))
		if mb.Get(key[:]) == nil {
			out = append(out, b)
		}
	}
	return out, nil
}

// FillRemote stores blocks of the remote layer id that a thickener fetched
// from its basis (data[i] is the plaintext of blocks[i], nil for a hole):
// the same as a demand read keeping them, but with backpressure and the
// space check of a write, and deduplicated against the store. Blocks the
// layer already holds are skipped. It returns each block's fingerprint
// (zero for holes).
func (s *Store) FillRemote(id LayerID, blocks []uint64, data [][]byte) ([]Fingerprint, error) {
	if len(blocks) != len(data) {
		return nil, fmt.Errorf("blockstore: FillRemote: %d blocks, %d buffers", len(blocks), len(data))
	}
	for _, d := range data {
		if d != nil && len(d) != s.bs {
			return nil, fmt.Errorf("blockstore: FillRemote: a block of %d bytes, want %d", len(d), s.bs)
		}
	}
	if err := s.waitRoom(); err != nil {
		return nil, err
	}
	if err := s.checkSpace(int64(len(blocks) * s.bs)); err != nil {
		return nil, err
	}
	defer s.admitted.Add(-int64(len(blocks) * s.bs))
	s.mu.Lock()
	_, err := s.remoteLayerLocked(id)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ops := make([]blockOp, len(blocks))
	fps := make([]Fingerprint, len(blocks))
	par.Do(len(blocks), func(lo, hi int) {
		var some [][]byte
		var at []int
		for i := lo; i < hi; i++ {
			ops[i].blk = blocks[i]
			if data[i] == nil || isZero(data[i]) {
				ops[i].kind = kindHole
				continue
			}
			ops[i].kind = kindData
			some, at = append(some, data[i]), append(at, i)
		}
		sums := make([]Fingerprint, len(some))
		s.seal.fingerprintMany(some, sums)
		for j, i := range at {
			ops[i].fp = sums[j]
			fps[i] = sums[j]
		}
	})
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	var look []int
	s.mu.Lock()
	for i := range ops {
		if ops[i].kind != kindData {
			continue
		}
		if pb := s.fpPending[ops[i].fp]; pb != nil && !(pb.deferred && s.isQuarantined(pb.chunk)) {
			ops[i].kind = kindRef
			ops[i].sealed, ops[i].codec, ops[i].chunk = pb.sealed, pb.codec, pb.chunk
			if pb.deferred && s.gcMark != nil {
				s.gcMark.set(pb.chunk)
			}
		} else {
			look = append(look, i)
		}
	}
	s.mu.Unlock()
	var seal []int
	if len(look) > 0 {
		var hits []uint64
		err := s.db.View(func(tx *bolt.Tx) error {
			cur := tx.Bucket(bIndex).Cursor()
			for _, i := range look {
				if id, ok, _ := s.indexGet(cur, &ops[i].fp); ok {
					ops[i].kind = kindRef
					ops[i].chunk = id
					hits = append(hits, id)
				} else {
					seal = append(seal, i)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if s.gcMark != nil {
			for _, h := range hits {
				s.gcMark.set(h)
			}
		}
	}
	par.Do(len(seal), func(lo, hi int) {
		for _, i := range seal[lo:hi] {
			ops[i].codec, ops[i].sealed = s.seal.seal(nil, ops[i].fp, data[i])
		}
	})
	return fps, s.logRemote(uint64(id), ops)
}
