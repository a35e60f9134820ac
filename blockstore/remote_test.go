package blockstore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

// memBasis is an in-memory remote basis that counts what it serves.
type memBasis struct {
	bs   int
	data []byte
	mu   sync.Mutex
	hits map[int64]int
	fail bool
}

var errBasisDown = errors.New("basis unreachable")

func (m *memBasis) ReadBlock(_ context.Context, n int64, p []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return false, errBasisDown
	}
	m.hits[n]++
	off := n * int64(m.bs)
	clear(p)
	if off < int64(len(m.data)) {
		copy(p, m.data[off:])
	}
	return isZero(p), nil
}

func (m *memBasis) fetches() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := 0
	for _, c := range m.hits {
		t += c
	}
	return t
}

// TestRemoteBasis: a volume over a remote basis reads it on demand, keeps
// what it fetched (also across a reopen), takes writes on top, clones, and
// a failing basis fails the read, not the store.
func TestRemoteBasis(t *testing.T) {
	const bs = 4 << 10
	dir := t.TempDir()
	if err := Init(dir, InitOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	basis := &memBasis{bs: bs, data: make([]byte, 64*bs), hits: map[int64]int{}}
	fillRand(rand.New(rand.NewPCG(5, 6)), basis.data[:40*bs])
	// blocks 40..63 are zeros: holes in the basis
	opts := Options{Remote: func(name string) (RemoteBasis, error) {
		if name != "ox://t/snap" {
			return nil, errors.New("unknown basis " + name)
		}
		return basis, nil
	}}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v, root, err := s.CreateRemoteVolume("ox://t/snap", int64(len(basis.data)))
	if err != nil {
		t.Fatal(err)
	}
	if basis.fetches() != 0 {
		t.Fatal("creating the volume fetched data")
	}
	got := make([]byte, 2*bs)
	if _, err := v.ReadAt(got, 10*bs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, basis.data[10*bs:12*bs]) {
		t.Fatal("remote read: wrong bytes")
	}
	if f := basis.fetches(); f != 2 {
		t.Fatalf("reading 2 blocks fetched %d", f)
	}
	if _, err := v.ReadAt(got, 10*bs); err != nil {
		t.Fatal(err)
	}
	if f := basis.fetches(); f != 2 {
		t.Fatalf("a second read fetched again (%d fetches)", f)
	}
	// Writes go on top; unwritten parts of a partly written block come from
	// the basis.
	mine := bytes.Repeat([]byte("local!"), 100)
	if _, err := v.WriteAt(mine, 20*bs+100); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), basis.data...)
	copy(want[20*bs+100:], mine)
	// A clone of a snapshot of the remote-based volume reads the same.
	ls, err := s.Freeze(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Clone(ls[0])
	if err != nil {
		t.Fatal(err)
	}
	all := make([]byte, len(want))
	for _, vol := range []*Volume{v, c} {
		if _, err := vol.ReadAt(all, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(all, want) {
			t.Fatalf("volume %d differs at %d", vol.ID(), firstDiff(all, want))
		}
	}
	fetched := basis.fetches()
	if fetched > 64 {
		t.Fatalf("%d fetches for 64 blocks", fetched)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// After a reopen, the cached blocks are local: no fetch at all.
	if s, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err = s.OpenVolume(v.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, want) {
		t.Fatalf("after reopen: differs at %d", firstDiff(all, want))
	}
	if f := basis.fetches(); f != fetched {
		t.Fatalf("after reopen: %d more fetches", f-fetched)
	}
	// A basis that fails: a fresh remote volume's read fails with the
	// basis's error, and works once the basis is back.
	v2, _, err := s.CreateRemoteVolume("ox://t/snap", int64(len(basis.data)))
	if err != nil {
		t.Fatal(err)
	}
	basis.mu.Lock()
	basis.fail = true
	basis.mu.Unlock()
	if _, err := v2.ReadAt(got, 0); !errors.Is(err, errBasisDown) {
		t.Fatalf("read with the basis down: %v", err)
	}
	basis.mu.Lock()
	basis.fail = false
	basis.mu.Unlock()
	if _, err := v2.ReadAt(got, 0); err != nil || !bytes.Equal(got, basis.data[:2*bs]) {
		t.Fatalf("read with the basis back: %v", err)
	}
	if info, err := s.Layer(root); err != nil || info.Remote != "ox://t/snap" {
		t.Fatalf("layer info: %+v %v", info, err)
	}
	if rep, err := s.Scrub(context.Background()); err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub: %v %+v", err, rep)
	}
}
