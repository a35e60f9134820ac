package objex

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dstore/dstore/blockstore"
	bolt "go.etcd.io/bbolt"
)

// Local state, one bbolt file (ox.db) in the manager's directory:
//
//	targets            name -> JSON targetConfig
//	jobs               u64 BE job id -> JSON jobRecord
//	imports            u64 BE remote layer id -> JSON importRecord
//	meta               "datastore_id" -> u64 BE; "next_job" -> u64 BE
//	t/<target id>/c    chunk id -> [16] object | u64 LE offset | u32 LE length:
//	                   the target's chunk index (what it holds), a cache of
//	                   its index objects
//	t/<target id>/o    object id -> u64 LE size: index objects loaded into c
//	t/<target id>/f    local fingerprint -> chunk id (learned by exports)
//	t/<target id>/l    chunk id -> local fingerprint (learned by exports,
//	                   fetches and thickening)
//
// f and l are in the fingerprint space of one datastore; Attach drops them
// when the datastore's ID changes. manifests/<target id>/<name> keeps the
// sealed manifests of imports, so an imported file's basis opens without
// the network.
var (
	bTargets = []byte("targets")
	bJobs    = []byte("jobs")
	bImports = []byte("imports")
	bMetaOX  = []byte("meta")
	kDSID    = []byte("datastore_id")
	kNextJob = []byte("next_job")
)

type state struct {
	dir string
	db  *bolt.DB

	// learned buffers chunk id -> fingerprint pairs from fetches until the
	// flusher writes them (one bbolt commit per batch, not per block).
	lmu     sync.Mutex
	learned map[[16]byte]map[ChunkID]blockstore.Fingerprint
}

func openState(dir string) (*state, error) {
	if err := os.MkdirAll(filepath.Join(dir, "manifests"), 0o700); err != nil {
		return nil, fmt.Errorf("objex: state directory: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "ox.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("objex: state: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bTargets, bJobs, bImports, bMetaOX} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &state{dir: dir, db: db, learned: map[[16]byte]map[ChunkID]blockstore.Fingerprint{}}, nil
}

func (s *state) close() error {
	ferr := s.flushLearned()
	if err := s.db.Close(); err != nil {
		return err
	}
	return ferr
}

func tbucket(tid [16]byte, kind byte) []byte {
	return []byte("t/" + hex.EncodeToString(tid[:]) + "/" + string(kind))
}

func (s *state) ensureTargetBuckets(tid [16]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range []byte("cofl") {
			if _, err := tx.CreateBucketIfNotExists(tbucket(tid, k)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *state) dropTargetBuckets(tid [16]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range []byte("cofl") {
			if err := tx.DeleteBucket(tbucket(tid, k)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
}

// checkDatastore drops every fingerprint map when the state was last used
// with another datastore (fingerprints are per datastore).
func (s *state) checkDatastore(id uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bMetaOX)
		v := mb.Get(kDSID)
		if len(v) == 8 && binary.BigEndian.Uint64(v) == id {
			return nil
		}
		var drop [][]byte
		tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if n := len(name); n > 2 && name[0] == 't' && (name[n-1] == 'f' || name[n-1] == 'l') && name[n-2] == '/' {
				drop = append(drop, append([]byte(nil), name...))
			}
			return nil
		})
		for _, name := range drop {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return mb.Put(kDSID, binary.BigEndian.AppendUint64(nil, id))
	})
}

func (s *state) putJSON(bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, b) })
}

func (s *state) getJSON(bucket, key []byte, v any) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket).Get(key)
		if b == nil {
			return nil
		}
		found = true
		return json.Unmarshal(b, v)
	})
	return found, err
}

func (s *state) nextJobID() (uint64, error) {
	var id uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bMetaOX)
		v := mb.Get(kNextJob)
		id = 1
		if len(v) == 8 {
			id = binary.BigEndian.Uint64(v)
		}
		return mb.Put(kNextJob, binary.BigEndian.AppendUint64(nil, id+1))
	})
	return id, err
}

// learn notes that chunk id has fingerprint fp in this datastore.
func (s *state) learn(tid [16]byte, id ChunkID, fp blockstore.Fingerprint) {
	s.lmu.Lock()
	m := s.learned[tid]
	if m == nil {
		m = map[ChunkID]blockstore.Fingerprint{}
		s.learned[tid] = m
	}
	m[id] = fp
	n := len(m)
	s.lmu.Unlock()
	if n >= 4096 {
		s.flushLearned()
	}
}

// localFP returns the fingerprint chunk id has in this datastore, if known.
func (s *state) localFP(tid [16]byte, id ChunkID) (blockstore.Fingerprint, bool) {
	s.lmu.Lock()
	fp, ok := s.learned[tid][id]
	s.lmu.Unlock()
	if ok {
		return fp, true
	}
	s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(tbucket(tid, 'l'))
		if b == nil {
			return nil
		}
		if v := b.Get(id[:]); len(v) == 32 {
			copy(fp[:], v)
			ok = true
		}
		return nil
	})
	return fp, ok
}

func (s *state) flushLearned() error {
	s.lmu.Lock()
	all := s.learned
	s.learned = map[[16]byte]map[ChunkID]blockstore.Fingerprint{}
	s.lmu.Unlock()
	if len(all) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for tid, m := range all {
			lb := tx.Bucket(tbucket(tid, 'l'))
			if lb == nil {
				continue // the target was removed
			}
			for id, fp := range m {
				if err := lb.Put(append([]byte(nil), id[:]...), append([]byte(nil), fp[:]...)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func u64key(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
