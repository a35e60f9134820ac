package snapstore

import (
	"sort"

	"github.com/dstore/dstore/blockstore"
	bolt "go.etcd.io/bbolt"
)

// SnapshotUsage is a snapshot's space: what it shows and what it alone
// keeps.
type SnapshotUsage struct {
	Seq          uint64 `json:"seq"`
	ID           string `json:"id"`
	Group        string `json:"group"`
	LogicalBytes uint64 `json:"logical_bytes"` // sum of member sizes
	UniqueBytes  uint64 `json:"unique_bytes"`  // physical bytes only this snapshot holds: what deleting it (and a GC) would free
	UniqueChunks uint64 `json:"unique_chunks"` // the chunks behind UniqueBytes
}

// SnapshotUsage reports every snapshot's logical size and unique bytes,
// oldest first. UniqueBytes is what deleting that snapshot alone (every
// other snapshot, file and clone kept) would let a GC free once the
// block store's merges have run: the pack records (40-byte header plus
// sealed, that is compressed, bytes) of the chunks no surviving layer
// would reference any more (blockstore.Store.ReleaseUsage; DESIGN 18A.4).
//
// The report is of one instant, a destage checkpoint taken after the call
// began: every snapshot created before the call is in it, one deleted
// before the call is not. It walks the block store's whole map once, in
// one read transaction, without the namespace lock.
func (ns *Namespace) SnapshotUsage() ([]SnapshotUsage, error) {
	var snaps []*Snapshot
	res, err := ns.bs.ReleaseUsage(func(tx *bolt.Tx) ([][]blockstore.LayerID, error) {
		if b := tx.Bucket(bSnaps); b != nil {
			err := b.ForEach(func(_, v []byte) error {
				s, err := decodeSnap(v)
				if err != nil {
					return err
				}
				snaps = append(snaps, s)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		sort.Slice(snaps, func(i, j int) bool { return snaps[i].Seq < snaps[j].Seq })
		sets := make([][]blockstore.LayerID, len(snaps))
		for i, s := range snaps {
			// A snapshot holds each of its distinct layers once.
			for _, l := range snapLayers(s) {
				sets[i] = append(sets[i], blockstore.LayerID(l))
			}
		}
		return sets, nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]SnapshotUsage, len(snaps))
	for i, s := range snaps {
		u := SnapshotUsage{Seq: s.Seq, ID: s.ID(), Group: s.Group,
			UniqueBytes: uint64(res[i].Bytes), UniqueChunks: uint64(res[i].Chunks)}
		for _, m := range s.Members {
			u.LogicalBytes += m.Size
		}
		out[i] = u
	}
	return out, nil
}
