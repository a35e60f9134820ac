package objex

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Retention on targets. An export made because a snapshot's protection
// group names the target (ExportOptions.ByGroup) says so in its manifest
// (SnapshotSource.ByGroup). When the group's retention later deletes the
// snapshot locally, the caller records it with Retire; a prune of the
// target (control's "target prune") then deletes exactly the manifests
// that this datastore exported by group and whose snapshots retention
// deleted: SnapshotSource.DatastoreID is this datastore's, ByGroup is set,
// and Retired holds its sequence number with the same snapshot ID.
// Manifests of other datastores, of exports made by hand, and of snapshots
// deleted by hand are never touched.
//
// State (ox.db):
//
//	group_exports  u64 BE job id -> empty: export jobs made with ByGroup
//	retired        u64 BE snapshot seq -> JSON RetiredSnapshot

var (
	bGroupExports = []byte("group_exports")
	bRetired      = []byte("retired")
)

// RetiredSnapshot is a snapshot of this datastore that retention deleted.
type RetiredSnapshot struct {
	Seq         uint64 `json:"seq"`
	ID          string `json:"id"`
	Group       string `json:"group"`
	DatastoreID uint64 `json:"datastore_id"`
	DeletedNs   int64  `json:"deleted_ns"`
}

// markGroupExport notes that export job id was made with ByGroup.
func (m *Manager) markGroupExport(id uint64) error {
	return m.st.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bGroupExports)
		if err != nil {
			return err
		}
		return b.Put(u64key(id), nil)
	})
}

// groupExport reports whether export job id was made with ByGroup.
func (m *Manager) groupExport(id uint64) bool {
	var found bool
	m.st.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bGroupExports); b != nil {
			found = b.Get(u64key(id)) != nil
		}
		return nil
	})
	return found
}

// Retire records, durably, that retention deleted these snapshots, so
// that a later prune of a target may delete their group exports there.
func (m *Manager) Retire(snaps ...RetiredSnapshot) error {
	if len(snaps) == 0 {
		return nil
	}
	return m.st.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bRetired)
		if err != nil {
			return err
		}
		for _, s := range snaps {
			v, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := b.Put(u64key(s.Seq), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Retired returns the snapshots Retire recorded, by sequence number.
func (m *Manager) Retired() (map[uint64]RetiredSnapshot, error) {
	out := map[uint64]RetiredSnapshot{}
	err := m.st.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bRetired)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var s RetiredSnapshot
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("objex: retired snapshot record: %w", err)
			}
			out[s.Seq] = s
			return nil
		})
	})
	return out, err
}
