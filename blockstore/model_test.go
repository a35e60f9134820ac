package blockstore

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"testing"
)

var (
	modelSeed = flag.Uint64("model.seed", 1, "seed of the model-based test")
	modelOps  = flag.Int("model.ops", 3000, "operations in the model-based test")
)

// model is the trivially correct reference: every volume and every held
// frozen layer is a byte slice.
type model struct {
	vols   map[VolumeID][]byte
	layers map[LayerID][]byte
	holds  map[LayerID]int
}

type modelRun struct {
	t     *testing.T
	rng   *rand.Rand
	dir   string
	opts  Options
	s     *Store
	m     model
	bs    int
	pool  [][]byte // repeated block contents, to exercise dedupe
	trace []string
}

func (r *modelRun) logf(format string, args ...any) {
	r.trace = append(r.trace, fmt.Sprintf(format, args...))
	if len(r.trace) > 40 {
		r.trace = r.trace[1:]
	}
}

func (r *modelRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s\nlast operations:\n  %s", fmt.Sprintf(format, args...), joinLines(r.trace))
}

func joinLines(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(s)
	}
	return b.String()
}

func TestModel(t *testing.T) {
	for _, bs := range []int{4 << 10, 16 << 10} {
		t.Run(fmt.Sprintf("bs=%d", bs), func(t *testing.T) {
			runModel(t, *modelSeed, *modelOps, bs, false, 0)
		})
	}
	t.Run("encrypted", func(t *testing.T) {
		runModel(t, *modelSeed+7, *modelOps/2, 8<<10, true, 0)
	})
	// The front merged every few batches (its bound), and no front at all.
	t.Run("front=small", func(t *testing.T) {
		runModel(t, *modelSeed+11, *modelOps, 4<<10, false, 48)
	})
	t.Run("front=off", func(t *testing.T) {
		runModel(t, *modelSeed+13, *modelOps/2, 4<<10, false, -1)
	})
}

func runModel(t *testing.T, seed uint64, ops, bs int, encrypt bool, front int) {
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs, Encrypt: encrypt}); err != nil {
		t.Fatal(err)
	}
	r := &modelRun{
		t: t, rng: rand.New(rand.NewPCG(seed, uint64(bs))), dir: dir, bs: bs,
		opts: Options{MaxLogBytes: 512 << 10, PackSize: 256 << 10, SegmentSize: 1 << 20, CacheBytes: 1 << 20, FrontBlocks: front},
		m:    model{vols: map[VolumeID][]byte{}, layers: map[LayerID][]byte{}, holds: map[LayerID]int{}},
	}
	for i := 0; i < 6; i++ {
		b := make([]byte, bs)
		fillRand(r.rng, b)
		r.pool = append(r.pool, b)
	}
	r.open()
	defer func() {
		if r.s != nil {
			r.s.Close()
		}
	}()
	for i := 0; i < ops; i++ {
		r.step(i)
		if i%250 == 249 {
			r.checkAll()
		}
	}
	r.checkAll()
	if err := r.s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.GC(context.Background(), GCOptions{Threshold: 0.9}); err != nil {
		t.Fatal(err)
	}
	r.checkAll()
	rep, err := r.s.Scrub(context.Background())
	if err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
}

func (r *modelRun) open() {
	s, err := Open(r.dir, r.opts)
	if err != nil {
		r.fatalf("open: %v", err)
	}
	r.s = s
}

func fillRand(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}

func (r *modelRun) pickVol() (VolumeID, bool) {
	if len(r.m.vols) == 0 {
		return 0, false
	}
	ids := make([]VolumeID, 0, len(r.m.vols))
	for id := range r.m.vols {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids[r.rng.IntN(len(ids))], true
}

func (r *modelRun) pickLayer() (LayerID, bool) {
	if len(r.m.layers) == 0 {
		return 0, false
	}
	ids := make([]LayerID, 0, len(r.m.layers))
	for id := range r.m.layers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids[r.rng.IntN(len(ids))], true
}

func (r *modelRun) data(n int) []byte {
	b := make([]byte, n)
	switch r.rng.IntN(5) {
	case 0: // zeros: holes
	case 1: // a repeated block: dedupe
		src := r.pool[r.rng.IntN(len(r.pool))]
		for i := 0; i < n; i += len(src) {
			copy(b[i:], src)
		}
	case 2: // compressible
		for i := range b {
			b[i] = byte('a' + (i/7)%5)
		}
	default:
		fillRand(r.rng, b)
	}
	return b
}

func (r *modelRun) vol(id VolumeID) *Volume {
	v, err := r.s.OpenVolume(id)
	if err != nil {
		r.fatalf("open volume %d: %v", id, err)
	}
	return v
}

const modelMaxSize = 384 << 10

func (r *modelRun) step(i int) {
	bs := r.bs
	switch op := r.rng.IntN(100); {
	case op < 5 || len(r.m.vols) == 0:
		if len(r.m.vols) >= 6 {
			return
		}
		v, err := r.s.CreateVolume()
		if err != nil {
			r.fatalf("create: %v", err)
		}
		r.m.vols[v.ID()] = nil
		r.logf("create -> %d", v.ID())
	case op < 50:
		id, _ := r.pickVol()
		cur := r.m.vols[id]
		var off int64
		if r.rng.IntN(2) == 0 {
			off = int64(r.rng.IntN(modelMaxSize/bs)) * int64(bs)
		} else {
			off = int64(r.rng.IntN(modelMaxSize))
		}
		n := 1 + r.rng.IntN(3*bs)
		if r.rng.IntN(2) == 0 {
			n = (1 + r.rng.IntN(3)) * bs
		}
		if off+int64(n) > modelMaxSize {
			n = int(modelMaxSize - off)
		}
		if n <= 0 {
			return
		}
		p := r.data(n)
		stable := r.rng.IntN(3) == 0
		v := r.vol(id)
		var err error
		if stable {
			_, err = v.WriteAtStable(p, off)
		} else {
			_, err = v.WriteAt(p, off)
		}
		if err != nil {
			r.fatalf("write vol %d at %d len %d: %v", id, off, n, err)
		}
		if end := off + int64(n); end > int64(len(cur)) {
			cur = append(cur, make([]byte, end-int64(len(cur)))...)
		}
		copy(cur[off:], p)
		r.m.vols[id] = cur
		r.logf("write %d off=%d n=%d stable=%v", id, off, n, stable)
	case op < 58:
		id, _ := r.pickVol()
		size := int64(r.rng.IntN(modelMaxSize))
		if r.rng.IntN(3) == 0 {
			size = int64(r.rng.IntN(modelMaxSize/bs)) * int64(bs)
		}
		if err := r.vol(id).Truncate(size); err != nil {
			r.fatalf("truncate %d to %d: %v", id, size, err)
		}
		cur := r.m.vols[id]
		if size <= int64(len(cur)) {
			cur = cur[:size:size]
		} else {
			cur = append(cur, make([]byte, size-int64(len(cur)))...)
		}
		r.m.vols[id] = cur
		r.logf("truncate %d to %d", id, size)
	case op < 66:
		// freeze one to three volumes at once
		var ids []VolumeID
		for k := 0; k < 1+r.rng.IntN(3); k++ {
			id, _ := r.pickVol()
			dup := false
			for _, x := range ids {
				dup = dup || x == id
			}
			if !dup {
				ids = append(ids, id)
			}
		}
		ls, err := r.s.Freeze(ids...)
		if err != nil {
			r.fatalf("freeze %v: %v", ids, err)
		}
		for k, l := range ls {
			r.m.layers[l] = append([]byte(nil), r.m.vols[ids[k]]...)
			r.m.holds[l]++
		}
		r.logf("freeze %v -> %v", ids, ls)
	case op < 72:
		l, ok := r.pickLayer()
		if !ok || len(r.m.vols) >= 8 {
			return
		}
		v, err := r.s.Clone(l)
		if err != nil {
			r.fatalf("clone %d: %v", l, err)
		}
		r.m.vols[v.ID()] = append([]byte(nil), r.m.layers[l]...)
		r.logf("clone %d -> %d", l, v.ID())
	case op < 77:
		l, ok := r.pickLayer()
		if !ok {
			return
		}
		id, _ := r.pickVol()
		if err := r.s.Restore(id, l); err != nil {
			r.fatalf("restore %d to %d: %v", id, l, err)
		}
		r.m.vols[id] = append([]byte(nil), r.m.layers[l]...)
		r.logf("restore %d to %d", id, l)
	case op < 83:
		l, ok := r.pickLayer()
		if !ok {
			return
		}
		if err := r.s.Release(l); err != nil {
			r.fatalf("release %d: %v", l, err)
		}
		if r.m.holds[l]--; r.m.holds[l] == 0 {
			delete(r.m.holds, l)
			delete(r.m.layers, l)
		}
		r.logf("release %d", l)
	case op < 85:
		l, ok := r.pickLayer()
		if !ok {
			return
		}
		if err := r.s.Hold(l); err != nil {
			r.fatalf("hold %d: %v", l, err)
		}
		r.m.holds[l]++
		r.logf("hold %d", l)
	case op < 88:
		if len(r.m.vols) <= 1 {
			return
		}
		id, _ := r.pickVol()
		if err := r.s.DeleteVolume(id); err != nil {
			r.fatalf("delete %d: %v", id, err)
		}
		delete(r.m.vols, id)
		r.logf("delete %d", id)
	case op < 95:
		r.checkRandomRead()
	case op < 96:
		rep, err := r.s.GC(context.Background(), GCOptions{DryRun: r.rng.IntN(2) == 0, Threshold: 0.7})
		if err != nil {
			r.fatalf("gc: %v", err)
		}
		r.logf("gc %+v", rep)
	case op < 98:
		if err := r.s.Close(); err != nil {
			r.fatalf("close: %v", err)
		}
		r.s = nil
		r.open()
		r.logf("reopen")
	default:
		if err := r.s.Flush(); err != nil {
			r.fatalf("flush: %v", err)
		}
		r.logf("flush")
	}
}

func (r *modelRun) checkRandomRead() {
	id, ok := r.pickVol()
	if !ok {
		return
	}
	want := r.m.vols[id]
	off := int64(r.rng.IntN(modelMaxSize))
	n := 1 + r.rng.IntN(4*r.bs)
	got := make([]byte, n)
	k, err := r.vol(id).ReadAt(got, off)
	var exp []byte
	if off < int64(len(want)) {
		exp = want[off:min(int64(len(want)), off+int64(n))]
	}
	if len(exp) < n {
		if !errors.Is(err, io.EOF) {
			r.fatalf("read vol %d at %d len %d: want EOF, got %v", id, off, n, err)
		}
	} else if err != nil {
		r.fatalf("read vol %d at %d: %v", id, off, err)
	}
	if k != len(exp) || !bytes.Equal(got[:k], exp) {
		r.fatalf("read vol %d at %d len %d: got %d bytes, want %d; first diff at %d", id, off, n, k, len(exp), firstDiff(got[:k], exp))
	}
	r.logf("read %d off=%d n=%d ok", id, off, n)
}

func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func (r *modelRun) checkAll() {
	r.t.Helper()
	if got := len(r.s.Volumes()); got != len(r.m.vols) {
		r.fatalf("store has %d volumes, model %d", got, len(r.m.vols))
	}
	for id, want := range r.m.vols {
		v := r.vol(id)
		if v.Size() != int64(len(want)) {
			r.fatalf("volume %d: size %d, want %d", id, v.Size(), len(want))
		}
		got := make([]byte, len(want))
		if _, err := v.ReadAt(got, 0); err != nil && len(want) > 0 {
			r.fatalf("volume %d: read: %v", id, err)
		}
		if !bytes.Equal(got, want) {
			r.fatalf("volume %d: content differs at %d (size %d)", id, firstDiff(got, want), len(want))
		}
	}
	for id, want := range r.m.layers {
		lv, err := r.s.OpenLayer(id)
		if err != nil {
			r.fatalf("layer %d: %v", id, err)
		}
		if lv.Size() != int64(len(want)) {
			r.fatalf("layer %d: size %d, want %d", id, lv.Size(), len(want))
		}
		got := make([]byte, len(want))
		if _, err := lv.ReadAt(got, 0); err != nil && len(want) > 0 {
			r.fatalf("layer %d: read: %v", id, err)
		}
		if !bytes.Equal(got, want) {
			r.fatalf("layer %d: content differs at %d", id, firstDiff(got, want))
		}
	}
}
