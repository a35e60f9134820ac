package objex

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	Snapshots int   `json:"snapshots"`
	Objects   int   `json:"objects"` // data objects the snapshots reference
	Chunks    int   `json:"chunks"`  // distinct chunks they reference
	Bytes     int64 `json:"bytes"`   // record bytes read (deep)
	// Problems lists every manifest, index or data object that failed;
	// empty when the target is sound.
	Problems []string `json:"problems"`
}

// Verify checks a target: the key opens, every manifest authenticates and
// decodes, every index object authenticates, and every data object a
// manifest names exists and is long enough. With deep, every chunk record
// a manifest names is read (under the bandwidth limit), authenticated,
// decompressed and checked against its chunk ID.
func (m *Manager) Verify(ctx context.Context, targetName string, deep bool) (VerifyReport, error) {
	var rep VerifyReport
	t, err := m.target(ctx, targetName)
	if err != nil {
		return rep, err
	}
	manifests, err := m.allManifests(ctx, t, func(name string, err error) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("manifest %s: %v", name, err))
	})
	if err != nil {
		return rep, err
	}
	rep.Snapshots = len(manifests)
	err = t.st.List(ctx, indexPrefix, func(oi ObjectInfo) error {
		o, err := parseObjectID(path.Base(oi.Key))
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: stray object", oi.Key))
			return nil
		}
		b, err := t.st.Get(ctx, oi.Key, 0, -1)
		if err == nil {
			var body []byte
			if body, err = t.keys.openMeta(metaIndex, oi.Key, b); err == nil {
				_, _, _, err = decodeIndex(body, o)
			}
		}
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("index %s: %v", o, err))
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	// What each object must hold: the records the manifests name.
	type rec struct {
		id  ChunkID
		off int64
		len int32
	}
	need := map[ObjectID]map[int64]rec{}
	for _, mf := range manifests {
		for _, c := range mf.chunks {
			o := mf.objs[c.Obj]
			if need[o] == nil {
				need[o] = map[int64]rec{}
			}
			if prev, ok := need[o][c.Off]; ok && (prev.id != c.ID || prev.len != c.Len) {
				rep.Problems = append(rep.Problems, fmt.Sprintf("object %s offset %d: manifests disagree on its record", o, c.Off))
				continue
			}
			need[o][c.Off] = rec{c.ID, c.Off, c.Len}
		}
	}
	objs := make([]ObjectID, 0, len(need))
	for o := range need {
		objs = append(objs, o)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].String() < objs[j].String() })
	rep.Objects = len(objs)
	lctx := WithLimiter(ctx, t.lim)
	for _, o := range objs {
		recs := need[o]
		rep.Chunks += len(recs)
		key := dataKey(o)
		end := int64(0)
		for _, r := range recs {
			end = max(end, r.off+int64(r.len))
		}
		st, err := t.st.Stat(ctx, key)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("object %s: %v", o, err))
			continue
		}
		if st.Size < end {
			rep.Problems = append(rep.Problems, fmt.Sprintf("object %s: %d bytes, its records need %d: truncated", o, st.Size, end))
			continue
		}
		if !deep {
			continue
		}
		data, err := t.st.Get(lctx, key, 0, st.Size)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("object %s: %v", o, err))
			continue
		}
		rep.Bytes += int64(len(data))
		bs := 0
		for _, mf := range manifests {
			bs = mf.Info.BlockSize // every manifest naming o has o's block size
			if _, ok := findObj(mf, o); ok {
				break
			}
		}
		if err := checkObjectHeader(data, bs); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("object %s: %v", o, err))
			continue
		}
		bad := 0
		for _, r := range recs {
			if _, err := t.keys.openRecord(data[r.off:r.off+int64(r.len)], key, r.off, r.id, bs); err != nil {
				bad++
				if bad <= 3 {
					rep.Problems = append(rep.Problems, fmt.Sprintf("object %s record at %d: %v", o, r.off, err))
				}
			}
		}
		if bad > 3 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("object %s: %d bad records in all", o, bad))
		}
	}
	return rep, nil
}

func findObj(mf *manifest, o ObjectID) (int, bool) {
	for i, x := range mf.objs {
		if x == o {
			return i, true
		}
	}
	return 0, false
}

// allManifests loads every manifest of the target; bad ones go to onBad.
func (m *Manager) allManifests(ctx context.Context, t *target, onBad func(string, error)) ([]*manifest, error) {
	var names []string
	err := t.st.List(ctx, manifestPrefix, func(oi ObjectInfo) error {
		names = append(names, strings.TrimPrefix(oi.Key, manifestPrefix))
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []*manifest
	for _, n := range names {
		if err := ValidSnapshotName(n); err != nil {
			onBad(n, err)
			continue
		}
		mf, _, err := m.loadManifest(ctx, t, n)
		if err != nil {
			onBad(n, err)
			continue
		}
		out = append(out, mf)
	}
	return out, nil
}

// PruneOptions tune Prune.
type PruneOptions struct {
	DryRun bool
	// Grace: objects younger than this are kept even when no manifest
	// names them, because an export (from any datastore) may be about to
	// commit a manifest that does. 0 = 24 h.
	Grace time.Duration
}

// PruneReport is what Prune deleted (or would delete).
type PruneReport struct {
	Objects int   `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// Prune deletes the data objects (and their index objects) that no
// manifest of the target names and that are older than the grace period:
// what deleted snapshots and interrupted exports left. It refuses to run
// while any manifest fails verification, since it could not know what
// that manifest names.
func (m *Manager) Prune(ctx context.Context, targetName string, o PruneOptions) (PruneReport, error) {
	var rep PruneReport
	if o.Grace == 0 {
		o.Grace = 24 * time.Hour
	}
	t, err := m.target(ctx, targetName)
	if err != nil {
		return rep, err
	}
	var bad []string
	manifests, err := m.allManifests(ctx, t, func(name string, err error) { bad = append(bad, name+": "+err.Error()) })
	if err != nil {
		return rep, err
	}
	if len(bad) > 0 {
		return rep, fmt.Errorf("objex: prune refused: %d manifests fail verification (%s)", len(bad), bad[0])
	}
	used := map[ObjectID]bool{}
	for _, mf := range manifests {
		for _, o := range mf.objs {
			used[o] = true
		}
	}
	cutoff := time.Now().Add(-o.Grace)
	var victims []ObjectInfo
	err = t.st.List(ctx, dataPrefix, func(oi ObjectInfo) error {
		id, err := parseObjectID(path.Base(oi.Key))
		if err != nil || dataKey(id) != oi.Key {
			return nil // not ours to delete
		}
		if !used[id] && oi.Modified.Before(cutoff) {
			victims = append(victims, oi)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	for _, oi := range victims {
		rep.Objects++
		rep.Bytes += oi.Size
		if o.DryRun {
			continue
		}
		id, _ := parseObjectID(path.Base(oi.Key))
		// Forget it locally first, then the index object (so no export
		// finds its chunks any more), then the data.
		if err := m.forgetObject(t, id); err != nil {
			return rep, err
		}
		if err := t.st.Delete(ctx, indexKey(id)); err != nil {
			return rep, err
		}
		if err := t.st.Delete(ctx, oi.Key); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// forgetObject drops an object from the local cache of the target's index.
func (m *Manager) forgetObject(t *target, o ObjectID) error {
	return m.st.db.Update(func(tx *bolt.Tx) error {
		cb := tx.Bucket(tbucket(t.id, 'c'))
		var drop [][]byte
		err := cb.ForEach(func(k, v []byte) error {
			if l, ok := decodeLoc(v); ok && l.Obj == o {
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := cb.Delete(k); err != nil {
				return err
			}
		}
		return tx.Bucket(tbucket(t.id, 'o')).Delete(o[:])
	})
}
