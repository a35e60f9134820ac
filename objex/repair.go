package objex

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/dstore/dstore/blockstore"
	bolt "go.etcd.io/bbolt"
)

// Repair: when a local chunk fails verification, the block store asks the
// manager (a blockstore.Repairer, installed by Attach) for the block by its
// local fingerprint. A target holds it when this datastore exported it
// (bucket f: fingerprint -> chunk ID) or fetched it from there (bucket l,
// searched the other way), and the target's chunk index (bucket c) says
// where. The record is fetched with a ranged GET and opened like any
// remote read: authenticated, decompressed, and checked against its chunk
// ID; the block store then checks the plaintext against the fingerprint.

var _ blockstore.Repairer = (*Manager)(nil)

// repairCand is one place a block may be found.
type repairCand struct {
	target string
	id     ChunkID
	loc    chunkLoc
}

// RepairBlock implements blockstore.Repairer.
func (m *Manager) RepairBlock(ctx context.Context, fp blockstore.Fingerprint, p []byte) (string, error) {
	cands, err := m.repairCandidates(fp)
	if err != nil {
		return "", err
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("objex: no target holds a copy: %w", blockstore.ErrNoCopy)
	}
	var errs []error
	for _, c := range cands {
		src, err := m.fetchChunk(ctx, c, p)
		if err == nil {
			return src, nil
		}
		m.log.Error("objex: repair: reading the exported copy failed", "target", c.target, "chunk", c.id, "err", err)
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// repairCandidates lists the targets' copies of the block with local
// fingerprint fp.
func (m *Manager) repairCandidates(fp blockstore.Fingerprint) ([]repairCand, error) {
	var out []repairCand
	err := m.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bTargets).ForEach(func(k, v []byte) error {
			var c targetConfig
			if err := jsonUnmarshal(v, &c); err != nil {
				return err
			}
			var tid [16]byte
			b, err := hex.DecodeString(c.ID)
			if err != nil || len(b) != len(tid) {
				return nil
			}
			copy(tid[:], b)
			cb := tx.Bucket(tbucket(tid, 'c'))
			if cb == nil {
				return nil
			}
			var id ChunkID
			found := false
			if fb := tx.Bucket(tbucket(tid, 'f')); fb != nil {
				if v := fb.Get(fp[:]); len(v) == len(id) {
					copy(id[:], v)
					found = true
				}
			}
			if !found {
				// Chunks fetched by imports are known the other way round.
				if lb := tx.Bucket(tbucket(tid, 'l')); lb != nil {
					lc := lb.Cursor()
					for k, v := lc.First(); k != nil; k, v = lc.Next() {
						if bytes.Equal(v, fp[:]) && len(k) == len(id) {
							copy(id[:], k)
							found = true
							break
						}
					}
				}
			}
			if !found {
				return nil
			}
			loc, ok := decodeLoc(cb.Get(id[:]))
			if !ok {
				return nil
			}
			out = append(out, repairCand{target: c.Name, id: id, loc: loc})
			return nil
		})
	})
	return out, err
}

// fetchChunk reads one chunk record from its target into p.
func (m *Manager) fetchChunk(ctx context.Context, c repairCand, p []byte) (string, error) {
	t, err := m.target(ctx, c.target)
	if err != nil {
		return "", err
	}
	key := dataKey(c.loc.Obj)
	rec, err := t.fast.Get(ctx, key, c.loc.Off, int64(c.loc.Len))
	if err != nil {
		return "", err
	}
	m.fetched.Add(int64(len(rec)))
	plain, err := t.keys.openRecord(rec, key, c.loc.Off, c.id, len(p))
	if err != nil {
		return "", err
	}
	copy(p, plain)
	return fmt.Sprintf("target %s, %s at %d", c.target, key, c.loc.Off), nil
}
