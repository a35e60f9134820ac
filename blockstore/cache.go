package blockstore

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// chunkCache is a bounded LRU of decoded chunks by chunk ID. Chunk IDs are
// never reused, so an entry can never be stale. Cached slices are shared and
// must not be modified.
type chunkCache struct {
	mu    sync.Mutex // guards everything below
	max   int64
	bytes int64
	ll    *list.List
	m     map[uint64]*list.Element
}

type cacheEnt struct {
	id   uint64
	data []byte
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, ll: list.New(), m: make(map[uint64]*list.Element)}
}

func (c *chunkCache) get(id uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[id]; e != nil {
		c.ll.MoveToFront(e)
		return e.Value.(*cacheEnt).data
	}
	return nil
}

func (c *chunkCache) has(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id] != nil
}

func (c *chunkCache) put(id uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[id] != nil {
		return
	}
	c.m[id] = c.ll.PushFront(&cacheEnt{id: id, data: data})
	c.bytes += int64(cap(data))
	for c.bytes > c.max && c.ll.Len() > 0 {
		e := c.ll.Back()
		ent := e.Value.(*cacheEnt)
		c.ll.Remove(e)
		delete(c.m, ent.id)
		c.bytes -= int64(cap(ent.data))
	}
}

// packFiles keeps read-only handles on pack files. A handle is closed only
// when nobody reads through it, so eviction and GC never fail a read that is
// in flight.
type packFiles struct {
	dir string
	mu  sync.Mutex // guards m and the handles' refs and dead
	m   map[uint64]*packHandle
}

type packHandle struct {
	f    *os.File
	refs int
	dead bool // evicted or forgotten: close when refs drops to zero
}

const maxOpenPacks = 256

func newPackFiles(dir string) *packFiles {
	return &packFiles{dir: dir, m: make(map[uint64]*packHandle)}
}

// get returns an open handle on pack id; the caller must release it.
func (p *packFiles) get(id uint64) (*packHandle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.m[id]; h != nil {
		h.refs++
		return h, nil
	}
	f, err := os.Open(packPath(p.dir, id))
	if err != nil {
		return nil, err
	}
	if len(p.m) >= maxOpenPacks {
		for k, old := range p.m {
			p.dropLocked(k, old)
			break
		}
	}
	h := &packHandle{f: f, refs: 1}
	p.m[id] = h
	return h, nil
}

func (p *packFiles) release(h *packHandle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h.refs--
	if h.refs == 0 && h.dead {
		h.f.Close()
	}
}

// dropLocked removes a handle from the table. REQUIRES: p.mu held.
func (p *packFiles) dropLocked(id uint64, h *packHandle) {
	delete(p.m, id)
	h.dead = true
	if h.refs == 0 {
		h.f.Close()
	}
}

func (p *packFiles) forget(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.m[id]; h != nil {
		p.dropLocked(id, h)
	}
}

func (p *packFiles) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, h := range p.m {
		p.dropLocked(k, h)
	}
}

// readChunks returns the plaintext of the given chunks, from the cache or
// from their packs. Chunks that are near each other in a pack are read with
// one pread. Every chunk is verified (I5).
func (s *Store) readChunks(ids []uint64) ([][]byte, error) {
	out := make([][]byte, len(ids))
	var miss []int
	for i, id := range ids {
		if d := s.cache.get(id); d != nil {
			out[i] = d
		} else {
			miss = append(miss, i)
		}
	}
	if len(miss) == 0 {
		return out, nil
	}
	// A pack can disappear under a reader when GC compacts it after the
	// reader looked the chunk up; the chunk then lives in another pack.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = s.readMissing(ids, miss, out)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	return out, err
}

// nextRun returns the run of locs (sorted by place) that starts at start
// and is read with one pread: chunks of one pack with gaps of at most
// 64 KiB between them (read through rather than paying another system
// call), while the run is shorter than 8 MiB. It returns the run's end
// index and its byte range [lo, hi) in the pack.
func nextRun(locs []chunkLoc, start int) (end int, lo, hi int64) {
	const gap = 64 << 10
	end = start + 1
	lo = locs[start].rec.off
	hi = lo + int64(chunkHeaderSize+locs[start].rec.n)
	for end < len(locs) && locs[end].rec.pack == locs[start].rec.pack && locs[end].rec.off <= hi+gap && hi-lo < 8<<20 {
		hi = max(hi, locs[end].rec.off+int64(chunkHeaderSize+locs[end].rec.n))
		end++
	}
	return end, lo, hi
}

type chunkLoc struct {
	at  int // index into ids/out
	id  uint64
	rec chunkRec
}

func (s *Store) readMissing(ids []uint64, miss []int, out [][]byte) error {
	locs := make([]chunkLoc, 0, len(miss))
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bChunks)
		for _, i := range miss {
			v := cb.Get(u64b(ids[i]))
			if v == nil {
				return fmt.Errorf("blockstore: chunk %d not in the chunk table: %w", ids[i], ErrCorrupt)
			}
			rec, err := decodeChunkRec(v)
			if err != nil {
				return fmt.Errorf("chunk %d: %w", ids[i], err)
			}
			locs = append(locs, chunkLoc{at: i, id: ids[i], rec: rec})
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(locs, func(i, j int) bool {
		if locs[i].rec.pack != locs[j].rec.pack {
			return locs[i].rec.pack < locs[j].rec.pack
		}
		return locs[i].rec.off < locs[j].rec.off
	})
	for start := 0; start < len(locs); {
		end, lo, hi := nextRun(locs, start)
		if err := s.readRun(locs[start:end], lo, hi, out); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (s *Store) readRun(locs []chunkLoc, lo, hi int64, out [][]byte) error {
	pack := locs[0].rec.pack
	h, err := s.packs.get(pack)
	if err != nil {
		return fmt.Errorf("blockstore: pack %d: %w", pack, err)
	}
	buf := make([]byte, hi-lo)
	n, err := h.f.ReadAt(buf, lo)
	s.packs.release(h)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("blockstore: reading pack %d at %d: %w", pack, lo, err)
	}
	datas, errs := s.openRun(pack, buf[:n], lo, locs)
	for k, l := range locs {
		data, err := datas[k], errs[k]
		if err != nil {
			s.logger.Error("blockstore: corrupt chunk", "chunk", l.id, "pack", pack, "offset", l.rec.off, "err", err)
			s.quarantineChunk(l.id, l.rec.fp)
			good, ok := s.repairRead(l.id, l.rec, err)
			if !ok {
				return fmt.Errorf("chunk %d (pack %d offset %d): %w", l.id, pack, l.rec.off, err)
			}
			data = good
		}
		s.cache.put(l.id, data)
		out[l.at] = data
	}
	return nil
}

// openRun decodes the chunks of one run read from pack (buf holds the
// pack's bytes from offset lo on), then verifies them all side by side
// (fphash). A chunk that fails has an error and no data: nothing is
// returned before it is verified (I5).
func (s *Store) openRun(pack uint64, buf []byte, lo int64, locs []chunkLoc) ([][]byte, []error) {
	datas := make([][]byte, len(locs))
	errs := make([]error, len(locs))
	plain := make([][]byte, 0, len(locs))
	for k, l := range locs {
		rel := l.rec.off - lo
		if end := rel + int64(chunkHeaderSize+l.rec.n); rel < 0 || end > int64(len(buf)) {
			// The chunk table points past the end of the pack.
			errs[k] = fmt.Errorf("blockstore: pack %d is shorter than its chunks (%w): %w", pack, io.ErrUnexpectedEOF, ErrCorrupt)
		} else if datas[k], errs[k] = s.openChunkUnverified(buf[rel:end], l.rec); errs[k] == nil {
			plain = append(plain, datas[k])
		}
	}
	sums := make([]Fingerprint, len(plain))
	s.seal.fingerprintMany(plain, sums)
	j := 0
	for k, l := range locs {
		if errs[k] != nil {
			continue
		}
		if sums[j] != l.rec.fp {
			errs[k] = corruptf("chunk %s: plaintext has fingerprint %s", l.rec.fp, sums[j])
			datas[k] = nil
		}
		j++
	}
	return datas, errs
}

// openChunk decodes and verifies one chunk record against its chunk table
// entry.
func (s *Store) openChunk(b []byte, rec chunkRec) ([]byte, error) {
	fp, codec, sealed, _, err := decodeChunkRecord(b, s.bs)
	if err != nil {
		return nil, err
	}
	if fp != rec.fp || codec != rec.codec || len(sealed) != rec.n {
		return nil, fmt.Errorf("chunk record does not match the chunk table: %w", ErrCorrupt)
	}
	return s.seal.open(make([]byte, 0, s.bs), fp, codec, sealed)
}

// openChunkUnverified is openChunk without the fingerprint check, which
// the caller makes (readRun, for many chunks at once).
func (s *Store) openChunkUnverified(b []byte, rec chunkRec) ([]byte, error) {
	fp, codec, sealed, _, err := decodeChunkRecord(b, s.bs)
	if err != nil {
		return nil, err
	}
	if fp != rec.fp || codec != rec.codec || len(sealed) != rec.n {
		return nil, fmt.Errorf("chunk record does not match the chunk table: %w", ErrCorrupt)
	}
	return s.seal.openUnverified(make([]byte, 0, s.bs), fp, codec, sealed)
}

// bitset is GC's mark set over chunk IDs 1..n.
type bitset struct {
	mu sync.Mutex // guards w
	w  []uint64
}

func newBitset(n uint64) *bitset { return &bitset{w: make([]uint64, n/64+1)} }

// set marks i. A nil bitset ignores it (no GC is marking).
func (b *bitset) set(i uint64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if i/64 < uint64(len(b.w)) {
		b.w[i/64] |= 1 << (i % 64)
	}
	b.mu.Unlock()
}

func (b *bitset) get(i uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return i/64 < uint64(len(b.w)) && b.w[i/64]&(1<<(i%64)) != 0
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// quarantineChunk marks a chunk found corrupt. Dedupe no longer uses it:
// a new write of the same content (on the write path or in destage) stores
// a good copy, whose index entry then replaces the bad one. The corrupt
// chunk stays for those who reference it: their reads keep failing with
// ErrCorrupt, never wrong bytes; its index entry stays until replaced, so
// references already in the log still resolve. The destage loop writes it
// to bucket quarantine (persistQuarantine), so a restart keeps it out of
// dedupe too.
func (s *Store) quarantineChunk(id uint64, fp Fingerprint) {
	s.quarMu.Lock()
	if s.quarantine == nil {
		s.quarantine = make(map[uint64]Fingerprint)
	}
	_, had := s.quarantine[id]
	if !had {
		s.logger.Warn("blockstore: corrupt chunk quarantined from dedupe", "chunk", id)
		s.quarNew = append(s.quarNew, id)
	}
	s.quarantine[id] = fp
	s.quarMu.Unlock()
	if !had {
		s.kick()
	}
}

// persistQuarantine writes the chunks quarantined since the last call to
// bucket quarantine, leaving out those GC has freed meanwhile. On failure
// they are kept for the next call.
func (s *Store) persistQuarantine() {
	s.quarMu.Lock()
	var ids []uint64
	var fps []Fingerprint
	for _, id := range s.quarNew {
		if fp, ok := s.quarantine[id]; ok { // not repaired or freed since
			ids, fps = append(ids, id), append(fps, fp)
		}
	}
	s.quarNew = nil
	s.quarMu.Unlock()
	if len(ids) == 0 {
		return
	}
	s.destageMu.Lock()
	defer s.destageMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		qb, err := tx.CreateBucketIfNotExists(bQuarantine)
		if err != nil {
			return err
		}
		cb := tx.Bucket(bChunks)
		for i, id := range ids {
			if cb.Get(u64b(id)) == nil {
				continue // freed by GC
			}
			if err := qb.Put(u64b(id), fps[i][:]); err != nil {
				return err
			}
		}
		return nil
	})
	s.quarMu.Lock()
	defer s.quarMu.Unlock()
	if err != nil {
		// Said once per failing streak: the destage loop retries every
		// pass.
		if !s.quarFailing {
			s.logger.Error("blockstore: recording quarantined chunks failed; they stay quarantined in memory (a restart before a later pass succeeds forgets them), and every destage pass tries again", "chunks", len(ids), "err", err)
		}
		s.quarFailing = true
		s.quarNew = append(s.quarNew, ids...)
		return
	}
	if s.quarFailing {
		s.logger.Info("blockstore: quarantined chunks recorded after earlier failures", "chunks", len(ids))
	}
	s.quarFailing = false
}

func (s *Store) isQuarantined(id uint64) bool {
	s.quarMu.Lock()
	defer s.quarMu.Unlock()
	_, ok := s.quarantine[id]
	return ok
}
