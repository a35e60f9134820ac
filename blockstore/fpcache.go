package blockstore

import (
	"encoding/binary"
	"sync"
)

// fpCache is a small, fixed-size front of the fingerprint index: the
// fingerprints most recently found in the index or added to it, with their
// chunk IDs. A write of data the store already holds (a clone written
// again, a golden image copied) then finds its chunks without one B+tree
// search per block. It is direct-mapped: a fingerprint is a keyed hash, so
// its first bytes spread entries evenly, and a newer entry simply replaces
// the older one in its slot. Its size does not depend on the datastore's.
//
// Entries may only be missing, never wrong: one is set when destage
// indexes a chunk or a lookup finds it, and dropped when GC deletes the
// index entry (under gcMu's write lock, which keeps every lookup out).
type fpCache struct {
	shards [fpCacheShards]fpShard
}

const (
	fpCacheShards = 64
	fpCacheSlots  = 1024 // per shard: 64 Ki entries, 2.5 MiB in all
)

type fpShard struct {
	mu    sync.Mutex
	slots [fpCacheSlots]fpSlot
}

type fpSlot struct {
	fp Fingerprint
	id uint64 // 0: empty
}

func (c *fpCache) slot(fp *Fingerprint) (*fpShard, int) {
	h := binary.LittleEndian.Uint64(fp[:8])
	return &c.shards[h%fpCacheShards], int(h/fpCacheShards) % fpCacheSlots
}

// get returns the chunk ID cached for fp, or 0.
func (c *fpCache) get(fp *Fingerprint) uint64 {
	sh, i := c.slot(fp)
	sh.mu.Lock()
	e := sh.slots[i]
	sh.mu.Unlock()
	if e.id != 0 && e.fp == *fp {
		return e.id
	}
	return 0
}

// set records that the index maps fp to chunk id.
func (c *fpCache) set(fp *Fingerprint, id uint64) {
	sh, i := c.slot(fp)
	sh.mu.Lock()
	sh.slots[i] = fpSlot{fp: *fp, id: id}
	sh.mu.Unlock()
}

// drop forgets fp if it is cached as chunk id.
func (c *fpCache) drop(fp *Fingerprint, id uint64) {
	sh, i := c.slot(fp)
	sh.mu.Lock()
	if e := &sh.slots[i]; e.id == id && e.fp == *fp {
		*e = fpSlot{}
	}
	sh.mu.Unlock()
}
