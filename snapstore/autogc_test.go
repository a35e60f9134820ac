package snapstore

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// TestRemoveStartsGC: removing files, renaming over one and truncating one
// tell the background GC what was let go (NoteFreed), so their space comes
// back without an explicit GC, while the file kept reads back intact.
func TestRemoveStartsGC(t *testing.T) {
	dir := newDatastore(t)
	ds, err := Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	ds.StartAutoGC(blockstore.AutoGCOptions{Check: 20 * time.Millisecond, Interval: -1, LowSpace: 1, BigFree: 5 << 20})
	rng := rand.New(rand.NewPCG(7, 8))
	data := map[string][]byte{}
	inos := map[string]Ino{}
	for _, name := range []string{"a", "b", "c", "keep"} {
		a, _, err := ds.NS.Create(RootIno, name, Unchecked, [8]byte{}, NewAttr{Mode: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 2<<20)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := ds.NS.Write(a.Ino, p, 0, true); err != nil {
			t.Fatal(err)
		}
		data[name], inos[name] = p, a.Ino
	}
	if err := ds.Blocks.Flush(); err != nil {
		t.Fatal(err)
	}
	packBytes := func() int64 {
		st, err := ds.Blocks.Stats()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, p := range st.Packs {
			n += p.Bytes
		}
		return n
	}
	before := packBytes()
	// 2 MiB freed: below BigFree, nothing runs yet. (BigFree is above the
	// 4 MiB that the rename below brings it to, so that the GC runs once,
	// after the truncate too: with 3 MiB it could run between the two,
	// and the truncate's 2 MiB alone would then stay below the threshold.)
	if err := ds.NS.Remove(RootIno, "a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := packBytes(); got != before {
		t.Fatalf("GC ran after 2 MiB freed (BigFree 5 MiB): %d -> %d", before, got)
	}
	// A rename over b frees b; a truncate frees most of c: 2+2+2 MiB.
	if err := ds.NS.Rename(RootIno, "c", RootIno, "b"); err != nil {
		t.Fatal(err)
	}
	size := uint64(4096)
	if _, err := ds.NS.SetAttr(inos["c"], SetAttrArgs{Size: &size}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for packBytes() > before-5<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("pack bytes %d (were %d) 10 s after 6 MiB of files were let go", packBytes(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := make([]byte, len(data["keep"]))
	if _, _, err := ds.NS.Read(inos["keep"], got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data["keep"]) {
		t.Fatal("the kept file differs after the background GC")
	}
	got = make([]byte, 4096)
	if _, _, err := ds.NS.Read(inos["c"], got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data["c"][:4096]) {
		t.Fatal("the truncated file's first block differs after the background GC")
	}
}
