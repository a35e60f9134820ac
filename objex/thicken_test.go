package objex

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// TestThickenPartialLastBlock: a file whose size is not a multiple of the
// block size, imported into the datastore that holds its content (every
// block a reference), thickens to the end: the partial last block too.
func TestThickenPartialLastBlock(t *testing.T) {
	const bs = 4 << 10
	a := newNode(t, bs)
	data := append(vdisk(5, 6, bs), []byte("a tail of 23 more bytes")...)
	a.writeFile("f", data)
	s := a.snapshot("g", "f")
	a.addTarget("t", "file://"+t.TempDir()+"/target", StoreOptions{}, keyFile(t))
	a.export(s.Seq, "t", "one")
	ctx := context.Background()
	_, j, err := a.m.Import(ctx, "t", "one", "f", "copy")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := j.Wait(wctx); err != nil {
		t.Fatalf("thickening: %v (%+v)", err, j.Info())
	}
	if in := j.Info(); in.State != JobDone || in.BytesDone != in.BytesTotal || in.BytesMoved != 0 {
		t.Errorf("thickening job: %+v", in)
	}
	recs, err := a.m.importRecords()
	if err != nil || len(recs) != 1 || recs[0].State != "thick" {
		t.Fatalf("import record: %+v %v", recs, err)
	}
	rb, err := a.m.basis(recs[0].Basis)
	if err != nil {
		t.Fatal(err)
	}
	blocks := rb.fm.blocks
	if len(blocks) == 0 || blocks[len(blocks)-1] != 6 {
		t.Fatalf("the manifest's data blocks: %v (want the partial block 6 last)", blocks)
	}
	if miss, err := a.ds.Blocks.RemoteMissing(blockstore.LayerID(recs[0].Layer), blocks); err != nil || len(miss) != 0 {
		t.Errorf("blocks still remote after thickening: %v %v", miss, err)
	}
	if got, err := a.readFile("copy"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the thick copy differs: %v", err)
	}
}

// TestNoResume: a manager opened with NoResume restarts neither an
// interrupted export nor a thickener at Attach; the next one without it
// restarts both, and they finish.
func TestNoResume(t *testing.T) {
	const bs = 4 << 10
	a := newNode(t, bs)
	a.writeFile("f", vdisk(9, 64, bs))
	s := a.snapshot("g", "f")
	turl := "file://" + t.TempDir() + "/target"
	a.addTarget("t", turl, StoreOptions{}, keyFile(t))
	a.export(s.Seq, "t", "one")
	b := newNode(t, bs)
	b.addTarget("t", turl, StoreOptions{}, a.m.mustKeyFile(t, "t"))
	ctx := context.Background()
	// An import whose thickening, and an export, are interrupted: the
	// records say so.
	if _, _, err := b.m.Import(ctx, "t", "one", "f", "copy"); err != nil {
		t.Fatal(err)
	}
	bs2 := b.snapshot("h", "copy")
	if err := b.m.st.putJSON(bJobs, u64key(99), &jobRecord{ID: 99, Kind: "export", State: JobRunning, TargetName: "t", Seq: bs2.Seq, Name: "two"}); err != nil {
		t.Fatal(err)
	}
	b.close()
	b.cfg.NoResume = true
	b.open()
	time.Sleep(50 * time.Millisecond)
	if _, ok := b.m.Job(99); ok {
		t.Error("NoResume: the export was restarted")
	}
	if len(b.m.Jobs()) != 1 || b.m.Stats().RemoteBytesFetched != 0 {
		t.Errorf("NoResume: jobs %+v, fetched %d", b.m.Jobs(), b.m.Stats().RemoteBytesFetched)
	}
	b.cfg.NoResume = false
	b.reopen()
	j, ok := b.m.Job(99)
	if !ok {
		t.Fatal("the export was not restarted")
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := j.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	for _, in := range b.m.Jobs() {
		if in.Kind == "import" {
			jj, _ := b.m.Job(in.ID)
			if err := jj.Wait(wctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	recs, err := b.m.importRecords()
	if err != nil || len(recs) != 1 || recs[0].State != "thick" {
		t.Errorf("import record after the resumed thickener: %+v %v", recs, err)
	}
}
