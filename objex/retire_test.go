package objex

import (
	"context"
	"reflect"
	"testing"
	"time"
)

// TestGroupExportMarkAndRetired: an export made with ByGroup says so in
// its manifest (and one made without does not), also when it is resumed
// after a restart; Retire records survive a reopen.
func TestGroupExportMarkAndRetired(t *testing.T) {
	const bs = 4 << 10
	turl := "file://" + t.TempDir() + "/target"
	a := newNode(t, bs)
	a.writeFile("f", vdisk(3, 64, bs))
	s1 := a.snapshot("g", "f")
	s2 := a.snapshot("g")
	a.addTarget("t", turl, StoreOptions{}, keyFile(t))
	ctx := context.Background()
	j, err := a.m.Export(ctx, s1.Seq, "t", ExportOptions{ByGroup: true})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := j.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	a.export(s2.Seq, "t", "")
	snaps, err := a.m.Snapshots(ctx, "t")
	if err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots: %+v %v", snaps, err)
	}
	got := map[string]SnapshotSource{}
	for _, s := range snaps {
		got[s.Name] = s.Info.Snapshot
	}
	if src := got["g@"+s1.ID()]; !src.ByGroup || src.Seq != s1.Seq || src.DatastoreID != a.ds.Blocks.ID() {
		t.Errorf("group export: %+v", src)
	}
	if src := got["g@"+s2.ID()]; src.ByGroup || src.Seq != s2.Seq {
		t.Errorf("export by hand: %+v", src)
	}

	want := []RetiredSnapshot{{Seq: s1.Seq, ID: s1.ID(), Group: "g", DatastoreID: a.ds.Blocks.ID(), DeletedNs: 42}}
	if r, err := a.m.Retired(); err != nil || len(r) != 0 {
		t.Fatalf("retired before any: %v %v", r, err)
	}
	if err := a.m.Retire(want...); err != nil {
		t.Fatal(err)
	}
	a.reopen()
	r, err := a.m.Retired()
	if err != nil || !reflect.DeepEqual(r, map[uint64]RetiredSnapshot{s1.Seq: want[0]}) {
		t.Fatalf("retired after reopen: %+v %v", r, err)
	}
	// The mark is per job: a resumed group export keeps it.
	if !a.m.groupExport(j.Info().ID) {
		t.Error("the group export's mark is gone after a reopen")
	}
}
