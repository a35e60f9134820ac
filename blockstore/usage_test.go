package blockstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestReleaseUsageRandom builds random layer graphs (writes with shared and
// unique blocks, truncates, freezes, clones of held layers, restores,
// deleted volumes, released holds with merges left undone), asks
// ReleaseUsage about every held layer and some sets of several, and then,
// for each set, releases it for real in a copy of the datastore, settles
// and collects: the GC must free exactly the chunks and bytes predicted.
func TestReleaseUsageRandom(t *testing.T) {
	seeds := 6
	if testing.Short() {
		seeds = 3
	}
	if n, err := strconv.Atoi(os.Getenv("DSTORE_USAGE_SEEDS")); err == nil && n > 0 {
		seeds = n
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { releaseUsageRun(t, seed) })
	}
}

func releaseUsageRun(t *testing.T, seed uint64) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	opts := Options{PackSize: 64 << 10, SegmentSize: 1 << 20, MaxLogBytes: 1 << 20}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 77))
	pool := make([][]byte, 4)
	for i := range pool {
		pool[i] = make([]byte, bs)
		fillRand(rng, pool[i])
	}
	var vols []*Volume
	holds := map[LayerID]int{}
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	vols = append(vols, v)
	block := func() []byte {
		if rng.IntN(3) == 0 {
			return pool[rng.IntN(len(pool))]
		}
		b := make([]byte, bs)
		fillRand(rng, b)
		return b
	}
	var held []LayerID
	heldList := func() []LayerID {
		held = held[:0]
		for l, n := range holds {
			if n > 0 {
				held = append(held, l)
			}
		}
		// map order is random: sort for a reproducible run
		for i := 1; i < len(held); i++ {
			for j := i; j > 0 && held[j] < held[j-1]; j-- {
				held[j], held[j-1] = held[j-1], held[j]
			}
		}
		return held
	}
	for i := 0; i < 120; i++ {
		if len(vols) == 0 {
			v, err := s.CreateVolume()
			if err != nil {
				t.Fatal(err)
			}
			vols = append(vols, v)
		}
		vi := rng.IntN(len(vols))
		v := vols[vi]
		switch op := rng.IntN(20); {
		case op < 9:
			n := 1 + rng.IntN(4)
			for k := 0; k < n; k++ {
				if _, err := v.WriteAt(block(), int64(rng.IntN(24))*bs); err != nil {
					t.Fatal(err)
				}
			}
		case op < 10:
			if err := v.Truncate(int64(rng.IntN(24*bs + 1))); err != nil {
				t.Fatal(err)
			}
		case op < 13:
			ls, err := s.Freeze(v.ID())
			if err != nil {
				t.Fatal(err)
			}
			holds[ls[0]]++
		case op < 15:
			if hl := heldList(); len(hl) > 0 {
				c, err := s.Clone(hl[rng.IntN(len(hl))])
				if err != nil {
					t.Fatal(err)
				}
				vols = append(vols, c)
			}
		case op < 16:
			if hl := heldList(); len(hl) > 0 {
				if err := s.Restore(v.ID(), hl[rng.IntN(len(hl))]); err != nil {
					t.Fatal(err)
				}
			}
		case op < 17:
			if len(vols) > 1 {
				if err := s.DeleteVolume(v.ID()); err != nil {
					t.Fatal(err)
				}
				vols = append(vols[:vi], vols[vi+1:]...)
			}
		case op < 19:
			if hl := heldList(); len(hl) > 2 {
				l := hl[rng.IntN(len(hl))]
				if err := s.Release(l); err != nil {
					t.Fatal(err)
				}
				holds[l]--
			}
		default:
			if err := s.Settle(); err != nil {
				t.Fatal(err)
			}
		}
	}
	hl := heldList()
	var sets [][]LayerID
	for _, l := range hl {
		sets = append(sets, []LayerID{l})
	}
	for k := 0; k < 4 && len(hl) > 1; k++ {
		a, b := hl[rng.IntN(len(hl))], hl[rng.IntN(len(hl))]
		if a != b {
			sets = append(sets, []LayerID{a, b})
		}
	}
	got, err := s.ReleaseUsage(func(*bolt.Tx) ([][]LayerID, error) { return sets, nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	some := false
	for i, set := range sets {
		cp := filepath.Join(t.TempDir(), "copy")
		copyDir(t, dir, cp)
		c, err := Open(cp, opts)
		if err != nil {
			t.Fatal(err)
		}
		// What merges due anyway free is charged to no set: collect it first.
		if err := c.Settle(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GC(context.Background(), GCOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, l := range set {
			if err := c.Release(l); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Settle(); err != nil {
			t.Fatal(err)
		}
		rep, err := c.GC(context.Background(), GCOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.ChunksFreed != got[i].Chunks || rep.BytesFreed != got[i].Bytes {
			t.Errorf("releasing %v: predicted %d chunks, %d bytes; GC freed %d chunks, %d bytes",
				set, got[i].Chunks, got[i].Bytes, rep.ChunksFreed, rep.BytesFreed)
		}
		some = some || rep.ChunksFreed > 0
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d sets over %d held layers; something freed: %v", len(sets), len(hl), some)
}

// TestCloneAllocatedSeed: a clone and a restored volume answer Allocated
// at once with the count of their basis (seedAlloc), the volume that was
// frozen keeps its own, and a later recount agrees.
func TestCloneAllocatedSeed(t *testing.T) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Allocated(); got != 0 {
		t.Fatalf("new volume: allocated %d", got)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	p := make([]byte, 10*bs)
	fillRand(rng, p)
	if _, err := v.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	// The cache is fresh for allocTTL: count now.
	if got := s.recount(mustState(t, v)); got != 10*bs {
		t.Fatalf("after 10 blocks: allocated %d", got)
	}
	ls, err := s.Freeze(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Allocated(); got != 10*bs {
		t.Errorf("the frozen volume: allocated %d, want %d", got, 10*bs)
	}
	c, err := s.Clone(ls[0])
	if err != nil {
		t.Fatal(err)
	}
	cs := mustState(t, c)
	s.mu.Lock()
	seeded := cs.allocAt != 0
	s.mu.Unlock()
	if !seeded {
		t.Fatal("the clone's count is not seeded: its first Allocated would walk the lineage")
	}
	if got := c.Allocated(); got != 10*bs {
		t.Errorf("the clone: allocated %d, want %d", got, 10*bs)
	}
	if _, err := v.WriteAt(p[:bs], 20*bs); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(v.ID(), ls[0]); err != nil {
		t.Fatal(err)
	}
	if got := v.Allocated(); got != 10*bs {
		t.Errorf("restored: allocated %d, want %d", got, 10*bs)
	}
	if got := s.recount(cs); got != 10*bs {
		t.Errorf("the clone recounted: %d, want %d", got, 10*bs)
	}
}

func mustState(t *testing.T, v *Volume) *volState {
	t.Helper()
	vs, err := v.state()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}
