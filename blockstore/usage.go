package blockstore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ReleaseUsage is what releasing one set of holds, and nothing else, would
// give back once the merges it allows have run and a GC has followed.
type ReleaseUsage struct {
	// Chunks a GC would then free.
	Chunks int64 `json:"chunks"`
	// Bytes of their pack records: the 40-byte record header plus the
	// sealed (compressed, perhaps encrypted) bytes of each chunk. It is what
	// that GC reports as BytesFreed, and what Stats' stored bytes lose.
	Bytes int64 `json:"bytes"`
}

// ReleaseUsage reports, for each set of holds that pick returns, what
// releasing exactly those holds (one per listed layer; list a layer twice
// for two holds) would let a GC free: the chunks that every surviving map
// entry still referencing them would lose, after the deletions the release
// cascades into and the merges it makes possible (4.3, 4.4). Chunks that
// merges already due would free anyway are charged to no set.
//
// It first destages the log up to where it stood at the call, so every
// operation acknowledged before the call is in bbolt, then runs pick and
// the whole computation in one bbolt read transaction: pick may read the
// extension's buckets there, so the sets it picks and the layers, maps and
// chunks it is measured against are of one instant (a destage checkpoint).
// Writes and destage go on meanwhile; the report says nothing of what they
// do after that instant. Cost: one pass over the map bucket, for all the
// sets together, plus a chunk table lookup per chunk a set would free;
// memory is one bit per chunk ID, a counter per chunk referenced more than
// once, and per set a counter per chunk it would take a reference from.
func (s *Store) ReleaseUsage(pick func(tx *bolt.Tx) ([][]LayerID, error)) ([]ReleaseUsage, error) {
	if err := s.destageThrough(); err != nil {
		return nil, err
	}
	var out []ReleaseUsage
	err := s.db.View(func(tx *bolt.Tx) error {
		sets, err := pick(tx)
		if err != nil {
			return err
		}
		out, err = releaseUsage(tx, sets)
		return err
	})
	return out, err
}

// destageThrough destages until every record logged before the call is in
// bbolt. Unlike Flush it does not chase writes logged after the call.
func (s *Store) destageThrough() error {
	s.mu.Lock()
	var target LSN
	if n := len(s.queue); n > 0 {
		target = s.queue[n-1].end
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		closed := s.closed.Load()
		done := len(s.queue) == 0 || s.queue[0].end > target
		s.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if done {
			return nil
		}
		if err := s.destage(); err != nil {
			return err
		}
	}
}

// Settle runs now the background work that deleted snapshots and volumes
// leave behind: it destages the log, merges every layer that can be merged
// (4.4) and destages the merges, so that a GC that follows frees all that
// can be freed. The destage loop does the same in the background, one
// merge per pass.
func (s *Store) Settle() error {
	if err := s.Flush(); err != nil {
		return err
	}
	for {
		merged, err := s.mergeOne()
		if err != nil {
			return err
		}
		if !merged {
			break
		}
	}
	return s.Flush()
}

// uLayer is a layer record as releaseUsage needs it.
type uLayer struct {
	parent, limit   uint64
	holds, children uint32
	merges          bool // frozen and not remote: may be merged
	kids            []uint64
}

// uScen is one scenario: the layer graph with some holds released.
type uScen struct {
	layers   map[uint64]*uLayer
	released map[uint64]uint32 // holds released per layer
	dead     map[uint64]bool   // layers the release deletes
	lostKids map[uint64]uint32 // children deleted per layer
}

func (sc *uScen) mergeable(id uint64) bool {
	l := sc.layers[id]
	if l == nil || !l.merges || sc.dead[id] {
		return false
	}
	return l.holds-sc.released[id] == 0 && l.children-sc.lostKids[id] == 1
}

// child is the one child of a mergeable layer that survives, 0 if the
// records disagree with the count.
func (sc *uScen) child(id uint64) uint64 {
	var c uint64
	for _, k := range sc.layers[id].kids {
		if sc.dead[k] {
			continue
		}
		if c != 0 {
			return 0
		}
		c = k
	}
	return c
}

// uFate is where a mergeable layer's entries go in one scenario: into the
// layer at the end of seg (the first one that is not merged), passing the
// layers of seg, each of which shadows them with its own entries, and
// only below minLim. dead: the layer is deleted with all its entries.
type uFate struct {
	scen   int // -1: the baseline
	dead   bool
	seg    []uint64
	minLim uint64
}

// fate computes a mergeable layer's fate; ok is false when the records
// are inconsistent (the entries are then taken to survive).
func (sc *uScen) fate(id uint64, scen int) (uFate, bool) {
	f := uFate{scen: scen, minLim: noLimit}
	for y := id; ; {
		c := sc.child(y)
		if c == 0 || sc.layers[c] == nil || len(f.seg) > len(sc.layers) {
			return f, false
		}
		f.seg = append(f.seg, c)
		f.minLim = min(f.minLim, sc.layers[c].limit)
		if !sc.mergeable(c) {
			return f, true
		}
		y = c
	}
}

// survives reports whether an entry at block b of a layer with fate f
// outlives the merges: it must be visible through every layer of seg.
func (f *uFate) survives(b uint64, present func(uint64) bool) bool {
	if f.dead || b >= f.minLim {
		return false
	}
	for _, y := range f.seg {
		if present(y) {
			return false
		}
	}
	return true
}

// uInfo is what releaseUsage knows of a layer that some scenario treats
// differently from leaving it alone.
type uInfo struct {
	base  *uFate  // the baseline fate of a layer merges will remove anyway
	fates []uFate // per scenario that changes it
}

func releaseUsage(tx *bolt.Tx, sets [][]LayerID) ([]ReleaseUsage, error) {
	layers := make(map[uint64]*uLayer)
	err := tx.Bucket(bLayers).ForEach(func(k, v []byte) error {
		rec, _, err := decodeLayerRec(v)
		if err != nil {
			return fmt.Errorf("layer %x: %w", k, err)
		}
		layers[binary.BigEndian.Uint64(k)] = &uLayer{parent: rec.parent, limit: rec.limit, holds: rec.holds,
			children: rec.children, merges: rec.frozen() && rec.flags&layerRemote == 0}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for id, l := range layers {
		if p := layers[l.parent]; p != nil {
			p.kids = append(p.kids, id)
		}
	}
	info := make(map[uint64]*uInfo)
	infoOf := func(id uint64) *uInfo {
		in := info[id]
		if in == nil {
			in = &uInfo{}
			info[id] = in
		}
		return in
	}
	base := &uScen{layers: layers}
	for id := range layers {
		if base.mergeable(id) {
			if f, ok := base.fate(id, -1); ok {
				infoOf(id).base = &f
			}
		}
	}
	for i, set := range sets {
		sc := &uScen{layers: layers, released: map[uint64]uint32{}, dead: map[uint64]bool{}, lostKids: map[uint64]uint32{}}
		for _, id := range set {
			l := layers[uint64(id)]
			if l == nil {
				return nil, fmt.Errorf("blockstore: usage: layer %d: %w", id, ErrNotFound)
			}
			if sc.released[uint64(id)] >= l.holds {
				return nil, fmt.Errorf("blockstore: usage: layer %d has %d holds, the set releases more: %w", id, l.holds, ErrNotFound)
			}
			sc.released[uint64(id)]++
		}
		// Deletion cascades up from a layer left with no holds and no
		// children (Txn.drop).
		var drop func(id uint64)
		drop = func(id uint64) {
			l := layers[id]
			if l == nil || sc.dead[id] || l.holds-sc.released[id] != 0 || l.children-sc.lostKids[id] != 0 {
				return
			}
			sc.dead[id] = true
			if layers[l.parent] != nil {
				sc.lostKids[l.parent]++
				drop(l.parent)
			}
		}
		for id := range sc.released {
			drop(id)
		}
		for id := range sc.dead {
			infoOf(id).fates = append(infoOf(id).fates, uFate{scen: i, dead: true})
		}
		// A layer the release makes mergeable changes where its own
		// entries go, and where those of the mergeable layers above it go.
		seen := map[uint64]bool{}
		changed := func(id uint64) {
			for y := id; y != 0 && !seen[y] && sc.mergeable(y); y = layers[y].parent {
				seen[y] = true
				if f, ok := sc.fate(y, i); ok {
					infoOf(y).fates = append(infoOf(y).fates, f)
				}
			}
		}
		for id := range sc.released {
			changed(id)
		}
		for id := range sc.lostKids {
			changed(id)
		}
	}

	// One pass over the map: all entries of one (lineage, block) are
	// adjacent, so each entry's fate is decided with the entries that may
	// shadow it at hand.
	var maxChunk uint64
	if v := tx.Bucket(bMeta).Get(kNextChunk); len(v) == 8 {
		maxChunk = binary.BigEndian.Uint64(v)
	}
	once := make([]uint64, maxChunk/64+1)
	multi := make(map[uint64]uint32) // references beyond the first
	kill := make([]map[uint64]uint32, len(sets))
	for i := range kill {
		kill[i] = make(map[uint64]uint32)
	}
	type ent struct{ layer, chunk uint64 }
	var group []ent
	present := func(id uint64) bool {
		for _, e := range group {
			if e.layer == id {
				return true
			}
		}
		return false
	}
	flush := func(b uint64) {
		for _, e := range group {
			if e.chunk == 0 {
				continue
			}
			in := info[e.layer]
			if in != nil && in.base != nil && !in.base.survives(b, present) {
				continue // merges due anyway drop it
			}
			if e.chunk < maxChunk && once[e.chunk/64]&(1<<(e.chunk%64)) == 0 {
				once[e.chunk/64] |= 1 << (e.chunk % 64)
			} else {
				multi[e.chunk]++
			}
			if in == nil {
				continue
			}
			for k := range in.fates {
				if f := &in.fates[k]; !f.survives(b, present) {
					kill[f.scen][e.chunk]++
				}
			}
		}
		group = group[:0]
	}
	var cur [16]byte
	var curBlock uint64
	c := tx.Bucket(bMap).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 24 || len(v) != 8 {
			continue
		}
		if !bytes.Equal(k[:16], cur[:]) {
			flush(curBlock)
			copy(cur[:], k[:16])
			curBlock = binary.BigEndian.Uint64(k[8:])
		}
		group = append(group, ent{binary.BigEndian.Uint64(k[16:]), binary.LittleEndian.Uint64(v)})
	}
	flush(curBlock)

	refs := func(id uint64) uint32 {
		n := multi[id]
		if id < maxChunk && once[id/64]&(1<<(id%64)) != 0 {
			n++
		}
		return n
	}
	sizes := make(map[uint64]int64)
	cb := tx.Bucket(bChunks)
	out := make([]ReleaseUsage, len(sets))
	for i, ks := range kill {
		for id, n := range ks {
			if n != refs(id) {
				continue
			}
			sz, ok := sizes[id]
			if !ok {
				v := cb.Get(u64b(id))
				if v == nil {
					continue // referenced but missing: nothing to free
				}
				rec, err := decodeChunkRec(v)
				if err != nil {
					return nil, fmt.Errorf("chunk %d: %w", id, err)
				}
				sz = int64(chunkHeaderSize + rec.n)
				sizes[id] = sz
			}
			out[i].Chunks++
			out[i].Bytes += sz
		}
	}
	return out, nil
}
