package blockstore

// The front: map and index entries that destage defers.
//
// A destage batch of random writes used to insert one map entry and, for
// each new chunk, one index entry into bbolt: random keys, so nearly every
// entry dirtied its own leaf page, and the commit rewrote thousands of pages
// for a 16 MiB batch (half the CPU of 64 concurrent stable writers). Now a
// batch of plain block writes commits its chunks, packs, layer sizes and
// checkpoint as before, but its index entries, and its map entries unless
// the batch is sequential, go into one value of bucket "front" (the
// journal, in the same transaction), and its pending blocks stay in memory
// as deferred pblocks that name their chunks. Once FrontBlocks wait, or
// before a batch with a metadata record or a shrinking truncate (whose
// effects on the map assume it is complete), or on Flush, GC and Stats, the
// journal is merged into the map and the index in key order, in
// transactions of a bounded size: each leaf is rewritten once for all the
// entries that land in it.
//
// Readers need no change: every reader of the map already consults the
// pending blocks first, at the same instant as its bbolt transaction, and a
// deferred pblock answers like a map entry (its chunk, or a hole). Dedupe
// finds deferred chunks through fpPending. A crash leaves the journal in
// bbolt, consistent with the checkpoint; Open merges it before it loads.

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// frontVersion is the first byte of a journal value.
const frontVersion = 1

// frontRec collects one destage batch's deferred entries, encoded as the
// journal value (wire format, docs/DESIGN.md "bucket front"):
//
//	u8 version (1)
//	uvarint n, then n map entries: [24]key | u8 op (0 delete, 1 put) | u64 LE chunk (put only)
//	uvarint m, then m index entries: [32]fingerprint | u64 LE chunk
type frontRec struct {
	maps bool   // the batch's map entries are deferred too, not only its index entries
	mapb []byte // the map entries, encoded
	nmap int
	idx  []byte
	nidx int
}

func (f *frontRec) putMap(key []byte, id uint64) {
	f.mapb = append(f.mapb, key...)
	f.mapb = append(f.mapb, 1)
	f.mapb = binary.LittleEndian.AppendUint64(f.mapb, id)
	f.nmap++
}

func (f *frontRec) delMap(key []byte) {
	f.mapb = append(f.mapb, key...)
	f.mapb = append(f.mapb, 0)
	f.nmap++
}

func (f *frontRec) putIndex(fp Fingerprint, id uint64) {
	f.idx = append(f.idx, fp[:]...)
	f.idx = binary.LittleEndian.AppendUint64(f.idx, id)
	f.nidx++
}

func (f *frontRec) encode() []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(f.mapb)+len(f.idx))
	b = append(b, frontVersion)
	b = binary.AppendUvarint(b, uint64(f.nmap))
	b = append(b, f.mapb...)
	b = binary.AppendUvarint(b, uint64(f.nidx))
	return append(b, f.idx...)
}

// decodeFront calls mapFn for each map entry and idxFn for each index entry
// of a journal value, in order. The slices it passes alias v.
func decodeFront(v []byte, mapFn func(key []byte, del bool, id uint64), idxFn func(fp []byte, id uint64)) error {
	bad := func(what string) error { return fmt.Errorf("front journal value: %s: %w", what, ErrCorrupt) }
	if len(v) < 1 || v[0] != frontVersion {
		return bad("unknown version")
	}
	v = v[1:]
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)) {
		return bad("map count")
	}
	v = v[k:]
	for range n {
		if len(v) < 25 {
			return bad("short map entry")
		}
		key, op := v[:24], v[24]
		v = v[25:]
		switch op {
		case 0:
			mapFn(key, true, 0)
		case 1:
			if len(v) < 8 {
				return bad("short map value")
			}
			mapFn(key, false, binary.LittleEndian.Uint64(v))
			v = v[8:]
		default:
			return bad("map op")
		}
	}
	m, k := binary.Uvarint(v)
	if k <= 0 || m*40 != uint64(len(v)-k) {
		return bad("index entries")
	}
	v = v[k:]
	for range m {
		idxFn(v[:32], binary.LittleEndian.Uint64(v[32:40]))
		v = v[40:]
	}
	return nil
}

// frontEnts is the journal's entries, decoded into memory the store owns,
// in key order with only the last entry for each key.
type frontEnts struct {
	maps []frontMap
	idx  []frontIdx
	recs int // journal values read
}

type frontMap struct {
	key [24]byte
	del bool
	seq uint32 // position in the journal: the later entry for a key wins
	id  uint64
}

type frontIdx struct {
	fp  Fingerprint
	seq uint32
	id  uint64
}

// readFront decodes every journal value.
func readFront(tx *bolt.Tx) (*frontEnts, error) {
	fb := tx.Bucket(bFront)
	if fb == nil {
		return nil, fmt.Errorf("blockstore: metadata has no front bucket: %w", ErrCorrupt)
	}
	f := new(frontEnts)
	err := fb.ForEach(func(k, v []byte) error {
		f.recs++
		err := decodeFront(v,
			func(key []byte, del bool, id uint64) {
				e := frontMap{del: del, id: id, seq: uint32(len(f.maps))}
				copy(e.key[:], key)
				f.maps = append(f.maps, e)
			},
			func(fp []byte, id uint64) {
				e := frontIdx{id: id, seq: uint32(len(f.idx))}
				copy(e.fp[:], fp)
				f.idx = append(f.idx, e)
			})
		if err != nil {
			return fmt.Errorf("journal value %x: %w", k, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Values come in log order and entries within one in order, so the
	// position (seq) orders two entries for a key: sorted by key, then
	// position, the later entry comes after the earlier (as a stable sort
	// would leave them, without its cost).
	slices.SortFunc(f.maps, func(a, b frontMap) int {
		return cmp.Or(bytes.Compare(a.key[:], b.key[:]), cmp.Compare(a.seq, b.seq))
	})
	slices.SortFunc(f.idx, func(a, b frontIdx) int {
		return cmp.Or(bytes.Compare(a.fp[:], b.fp[:]), cmp.Compare(a.seq, b.seq))
	})
	maps := f.maps[:0]
	for i, e := range f.maps {
		if i+1 < len(f.maps) && f.maps[i+1].key == e.key {
			continue // a later entry for the same key wins
		}
		maps = append(maps, e)
	}
	f.maps = maps
	idx := f.idx[:0]
	for i, e := range f.idx {
		if i+1 < len(f.idx) && f.idx[i+1].fp == e.fp {
			continue // a good copy stored after a quarantined one wins
		}
		idx = append(idx, e)
	}
	f.idx = idx
	return f, nil
}

// len is the entries to apply.
func (f *frontEnts) len() int { return len(f.maps) + len(f.idx) }

// apply puts entries [from, to) (map entries first, then index entries)
// into the map and the index.
func (f *frontEnts) apply(tx *bolt.Tx, from, to int) error {
	mb, ib := tx.Bucket(bMap), tx.Bucket(bIndex)
	mb.FillPercent = 0.9
	// bbolt keeps value slices until the transaction ends: carve them from
	// one allocation.
	vals := make([]byte, 0, 8*(to-from))
	val := func(v uint64) []byte {
		vals = binary.LittleEndian.AppendUint64(vals, v)
		return vals[len(vals)-8 : len(vals) : len(vals)]
	}
	for i := from; i < to; i++ {
		if i < len(f.maps) {
			e := &f.maps[i]
			if e.del {
				if err := mb.Delete(e.key[:]); err != nil {
					return err
				}
			} else if err := mb.Put(e.key[:], val(e.id)); err != nil {
				return err
			}
			continue
		}
		e := &f.idx[i-len(f.maps)]
		if err := ib.Put(e.fp[:], val(e.id)); err != nil {
			return err
		}
	}
	return nil
}

// emptyFront deletes every journal value.
func emptyFront(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bFront); err != nil {
		return err
	}
	_, err := tx.CreateBucket(bFront)
	return err
}

// applyFront merges the whole journal into the map and the index inside
// tx, and empties it. For a small journal: a large one is merged by
// mergeJournal, in pieces.
func applyFront(tx *bolt.Tx) (int, error) {
	f, err := readFront(tx)
	if err != nil || f.recs == 0 {
		return 0, err
	}
	if err := f.apply(tx, 0, f.len()); err != nil {
		return 0, err
	}
	return f.len(), emptyFront(tx)
}

// frontMergeStep is the most entries one merge transaction applies. A
// transaction holds every page it dirties in memory until it commits (bbolt
// copies each node, and spills it into a new heap buffer), and the entries
// of random writes land one per leaf: a merge of 131,072 into an index of
// two million chunks dirtied some 50,000 pages, 300 MiB of heap.
const frontMergeStep = 8192

// mergeJournal merges the journal into the map and the index in
// transactions of at most frontMergeStep entries, in key order, the last
// of which empties the journal. It returns the entries applied. A crash
// between them leaves the journal whole, and merging it again is
// idempotent: each key ends with the value the journal gives it, and
// nothing else writes the map or the index meanwhile (destageMu, or Open).
// Readers between the transactions see an entry in bbolt or as a deferred
// pblock, and both give the same answer.
func (s *Store) mergeJournal() (int, error) {
	var f *frontEnts
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		f, err = readFront(tx)
		return err
	})
	if err != nil || f.recs == 0 {
		return 0, err
	}
	for from := 0; ; from += frontMergeStep {
		to := min(from+frontMergeStep, f.len())
		last := to == f.len()
		err := s.db.Update(func(tx *bolt.Tx) error {
			if err := f.apply(tx, from, to); err != nil {
				return err
			}
			if last {
				return emptyFront(tx)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		s.dropMetaPages()
		if last {
			return f.len(), nil
		}
	}
}

// openFront upgrades a version 1 datastore (adds the front bucket) and
// merges a journal left by a crash, before load reads anything.
func (s *Store) openFront() error {
	var format uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if m == nil {
			return fmt.Errorf("blockstore: metadata has no meta bucket: %w", ErrCorrupt)
		}
		format = getU64(m, kFormat)
		return nil
	})
	if err != nil || (format != 1 && format != FormatVersion) {
		return err // load reports another version
	}
	upgrade := format == 1
	if upgrade {
		err := s.db.Update(func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists(bFront); err != nil {
				return err
			}
			return tx.Bucket(bMeta).Put(kFormat, u64b(FormatVersion))
		})
		if err != nil {
			return fmt.Errorf("blockstore: upgrading the metadata to format %d: %w", FormatVersion, noSpace(err))
		}
		return nil
	}
	n, err := s.mergeJournal()
	if err != nil {
		return fmt.Errorf("blockstore: merging the front journal: %w", noSpace(err))
	}
	if n > 0 {
		s.logger.Info("blockstore: merged the front journal left by an unclean shutdown", "entries", n)
	}
	return nil
}

// mergeFront merges the front into the map and the index.
func (s *Store) mergeFront() error {
	s.destageMu.Lock()
	defer s.destageMu.Unlock()
	return s.mergeFrontLocked()
}

// mergeFrontLocked is mergeFront. REQUIRES: s.destageMu held.
func (s *Store) mergeFrontLocked() error {
	if s.deferred == 0 {
		return nil
	}
	if _, err := s.mergeJournal(); err != nil {
		return fmt.Errorf("blockstore: merging the front: %w", noSpace(err))
	}
	s.frontMerged()
	return nil
}

// frontMerged drops the deferred pblocks once a commit has put their
// entries into the map and the index. Readers that took a chain before
// find the same answer in either place (resolve: a pending entry wins a
// tie). REQUIRES: s.destageMu held.
func (s *Store) frontMerged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.layers {
		for b, pb := range l.pending {
			if pb.deferred {
				delete(l.pending, b)
			}
		}
	}
	for fp, pb := range s.fpPending {
		if pb.deferred {
			delete(s.fpPending, fp)
		}
	}
	s.deferred, s.deferredMap, s.deferredBlocks = 0, 0, 0
	// The index changed: a write whose lookups missed must not mark its
	// blocks absent (see destageGen).
	s.destageGen.Add(1)
}

// deferLocked turns the pending blocks of q, a record of a batch whose
// entries went into the front, into deferred pblocks naming their chunks
// (ids, from applyBatch), so their sealed bytes can go: in fpPending, and
// in the layer's pending blocks if the map entries are in the front too
// (maps). Blocks written again since keep their newer pblock. A record
// whose layer was released before its destage wrote no entries: its blocks
// leave memory. REQUIRES: s.mu held.
func (s *Store) deferLocked(l *layer, q *qrec, ids []uint64, maps bool) {
	for i := range q.d.ops {
		op := &q.d.ops[i]
		var d *pblock
		if l != nil {
			if pb := l.pending[op.blk]; pb != nil && pb.lsn == q.end {
				if ids == nil || !maps {
					delete(l.pending, op.blk)
				} else {
					d = &pblock{lsn: pb.lsn, kind: pb.kind, fp: pb.fp, codec: pb.codec, chunk: ids[i], deferred: true}
					l.pending[op.blk] = d
				}
			}
		}
		if op.kind != kindData {
			continue
		}
		if pb := s.fpPending[op.fp]; pb != nil && pb.lsn == q.end && !pb.deferred {
			switch {
			case ids == nil:
				delete(s.fpPending, op.fp)
			case d != nil && d.fp == op.fp:
				s.fpPending[op.fp] = d
			default:
				s.fpPending[op.fp] = &pblock{lsn: pb.lsn, kind: kindData, fp: op.fp, codec: pb.codec, chunk: ids[i], deferred: true}
			}
		}
	}
}
