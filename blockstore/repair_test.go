package blockstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// mapRepairer is a Repairer over blocks known by fingerprint: what objex
// does with a target, without the network.
type mapRepairer struct {
	mu     sync.Mutex
	blocks map[Fingerprint][]byte
	asked  int
	lie    bool // return other content than asked for
}

func (r *mapRepairer) RepairBlock(ctx context.Context, fp Fingerprint, p []byte) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked++
	b, ok := r.blocks[fp]
	if !ok {
		return "", fmt.Errorf("fingerprint %s: %w", fp, ErrNoCopy)
	}
	copy(p, b)
	if r.lie {
		p[0] ^= 1
	}
	return "test copy", nil
}

// TestRepairFromCopy: a flipped byte in a pack makes a read ask the
// Repairer; the good copy (checked against the fingerprint) is served,
// the local copy is rewritten into a new pack, and after a reopen without
// a Repairer every block reads back and scrub finds nothing. A Repairer
// without a copy, or with wrong content, leaves the read failing with
// ErrCorrupt.
func TestRepairFromCopy(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypt=%v", encrypt), func(t *testing.T) {
			dir, vol := newCorruptStore(t, encrypt, corruptOptions(0))
			lay := readCorruptLayout(t, dir)
			// Damage the chunk of block 5 (shared by blocks 5, 21, 37, 53)
			// and the chunk of block 3.
			var bad []uint64
			for _, b := range []uint64{5, 3} {
				id := lay.chunkOf[b]
				rec := lay.chunks[id]
				flipByte(t, packPath(dir, rec.pack), rec.off+int64(chunkHeaderSize)+int64(rec.n)/2)
				bad = append(bad, lay.blocksOf(id)...)
			}
			img := corruptImage()

			s, err := Open(dir, corruptOptions(0))
			if err != nil {
				t.Fatal(err)
			}
			// No Repairer, then one that knows nothing, then one that lies:
			// the damaged blocks fail with ErrCorrupt every time.
			checkCorruptReads(t, s, vol, bad)
			none := &mapRepairer{blocks: map[Fingerprint][]byte{}}
			s.SetRepairer(none)
			checkCorruptReads(t, s, vol, bad)
			if none.asked == 0 {
				t.Fatal("the Repairer was never asked")
			}
			good := &mapRepairer{blocks: map[Fingerprint][]byte{}}
			for _, b := range img {
				good.blocks[s.seal.fingerprint(b)] = bytes.Clone(b)
			}
			liar := &mapRepairer{blocks: good.blocks, lie: true}
			s.SetRepairer(liar)
			checkCorruptReads(t, s, vol, bad)
			if st := s.Repairs(); st.Served != 0 || st.Failed == 0 {
				t.Fatalf("repairs after a lying copy: %+v, want none served, some failed", st)
			}

			s.SetRepairer(good)
			checkCorruptReads(t, s, vol, nil)
			s.bg.Wait() // the rewrites
			st := s.Repairs()
			if st.Served != 2 || st.Rewritten != 2 {
				t.Fatalf("repairs: %+v, want 2 served and 2 rewritten (one per damaged chunk)", st)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// Reopen without a Repairer: the rewritten chunks are local.
			s, err = Open(dir, corruptOptions(0))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			checkCorruptReads(t, s, vol, nil)
			rep, err := s.Scrub(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Corrupt) != 0 {
				t.Fatalf("scrub after repair: %+v", rep.Corrupt)
			}
			// GC compacts the damaged packs away: the old records are no
			// longer live there, and the rest moves.
			if _, err := s.GC(context.Background(), GCOptions{Threshold: 0.99}); err != nil {
				t.Fatal(err)
			}
			checkCorruptReads(t, s, vol, nil)
			rep, err = s.Scrub(context.Background())
			if err != nil || len(rep.Corrupt) != 0 {
				t.Fatalf("scrub after GC: %+v, %v", rep.Corrupt, err)
			}
			if errors.Is(err, ErrCorrupt) {
				t.Fatal(err)
			}
		})
	}
}
