package snapstore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func writeFile(t *testing.T, ns *Namespace, dir Ino, name string, p []byte) Ino {
	t.Helper()
	a, _, err := ns.Create(dir, name, Unchecked, [8]byte{}, NewAttr{Mode: 0o644, UID: 7, GID: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Write(a.Ino, p, 0, true); err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

func readPath(t *testing.T, ns *Namespace, p string) []byte {
	t.Helper()
	a, err := ns.LookupPath(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	got := make([]byte, a.Size)
	if _, _, err := ns.Read(a.Ino, got, 0); err != nil && a.Size > 0 {
		t.Fatalf("%s: %v", p, err)
	}
	return got
}

func randBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func TestMatchPath(t *testing.T) {
	for _, c := range []struct {
		pat, p string
		want   bool
	}{
		{"*db*", "mydb.vmdk", true},
		{"*db*", "sql/mydb.vmdk", true},
		{"*db*", "sql/web.vmdk", false},
		{"vms/web-*/*.vmdk", "vms/web-1/disk.vmdk", true},
		{"vms/web-*/*.vmdk", "vms/web-1/sub/disk.vmdk", false},
		{"vms/web-*/*.vmdk", "vms/db-1/disk.vmdk", false},
		{"/vms/a.vmdk", "vms/a.vmdk", true},
		{"vms/**/*.vmdk", "vms/a.vmdk", true},
		{"vms/**/*.vmdk", "vms/x/y/a.vmdk", true},
		{"vms/**", "vms/x/y/a.vmdk", true},
		{"vms", "vms", true},
	} {
		if got := MatchPath(c.pat, c.p); got != c.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", c.pat, c.p, got, c.want)
		}
	}
}

// TestSnapshotRestoreClone: a snapshot of a group holds exactly the data
// before it; later writes do not show in it; a clone reads as the member
// did and is independent; restore brings the live file back (same inode);
// all of it survives a reopen, and a clone outlives its snapshot.
func TestSnapshotRestoreClone(t *testing.T) {
	dir := newDatastore(t)
	ds, err := Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ds.Close() }()
	ns := ds.NS
	rng := rand.New(rand.NewPCG(1, 1))
	vms, err := ns.Mkdir(RootIno, "vms", NewAttr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	a0, b0, c0 := randBytes(rng, 300<<10), randBytes(rng, 100<<10), randBytes(rng, 50<<10)
	aIno := writeFile(t, ns, vms.Ino, "a.vmdk", a0)
	writeFile(t, ns, vms.Ino, "b.vmdk", b0)
	writeFile(t, ns, RootIno, "notes.txt", c0)
	if _, err := ns.CreateGroup("vms", GroupSpec{Match: []string{"vms/*.vmdk"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.CreateGroup("vms", GroupSpec{Match: []string{"x"}}); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("second create: %v, want ErrGroupExists", err)
	}
	if _, err := ns.CreateGroup("none", GroupSpec{Match: []string{"nothing/*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.CreateSnapshot("none", "", false); !errors.Is(err, ErrNoMembers) {
		t.Fatalf("snapshot of an empty group: %v, want ErrNoMembers", err)
	}
	s1, err := ns.CreateSnapshot("vms", "before", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1.Members) != 2 || s1.Members[0].Path != "vms/a.vmdk" || s1.Members[1].Path != "vms/b.vmdk" {
		t.Fatalf("members %+v", s1.Members)
	}
	// Overwrite a in the middle, grow b.
	a1 := append([]byte(nil), a0...)
	copy(a1[100<<10:], randBytes(rng, 64<<10))
	if _, err := ns.Write(aIno, a1[100<<10:164<<10], 100<<10, true); err != nil {
		t.Fatal(err)
	}
	bA, _ := ns.LookupPath("vms/b.vmdk")
	bMore := randBytes(rng, 8<<10)
	if _, err := ns.Write(bA.Ino, bMore, int64(len(b0)), true); err != nil {
		t.Fatal(err)
	}
	if got := readPath(t, ns, "vms/a.vmdk"); !bytes.Equal(got, a1) {
		t.Fatal("live a differs after the overwrite")
	}
	// Clone from the snapshot, and a clone of the clone's live state.
	if _, err := ns.Clone(s1.Seq, "/vms/a.vmdk", "a-clone.vmdk"); err != nil {
		t.Fatal(err)
	}
	if got := readPath(t, ns, "a-clone.vmdk"); !bytes.Equal(got, a0) {
		t.Fatal("clone does not read as the member did")
	}
	if _, err := ns.Clone(s1.Seq, "vms/a.vmdk", "a-clone.vmdk"); !errors.Is(err, ErrExist) {
		t.Fatalf("clone over an existing file: %v, want ErrExist", err)
	}
	if _, err := ns.Clone(s1.Seq, "notes.txt", "n2"); !errors.Is(err, ErrNotMember) {
		t.Fatalf("clone of a non-member: %v, want ErrNotMember", err)
	}
	if _, err := ns.CloneLive("a-clone.vmdk", "a-clone2.vmdk"); err != nil {
		t.Fatal(err)
	}
	cA, _ := ns.LookupPath("a-clone.vmdk")
	if _, err := ns.Write(cA.Ino, []byte("clone write"), 0, true); err != nil {
		t.Fatal(err)
	}
	if got := readPath(t, ns, "a-clone2.vmdk"); !bytes.Equal(got, a0) {
		t.Fatal("a clone of a clone changed when its source was written")
	}
	// Restore a (in place) and b, and a removed member comes back.
	if err := ns.Remove(vms.Ino, "b.vmdk"); err != nil {
		t.Fatal(err)
	}
	done, err := ns.Restore(s1.Seq, nil)
	if err != nil || len(done) != 2 {
		t.Fatalf("restore: %v %v", done, err)
	}
	if got := readPath(t, ns, "vms/a.vmdk"); !bytes.Equal(got, a0) {
		t.Fatal("restored a differs from the snapshot")
	}
	if a, _ := ns.LookupPath("vms/a.vmdk"); a.Ino != aIno {
		t.Fatalf("restore changed a's inode: %d -> %d", aIno, a.Ino)
	}
	if got := readPath(t, ns, "vms/b.vmdk"); !bytes.Equal(got, b0) {
		t.Fatal("restored b differs from the snapshot")
	}
	// Deleting the snapshot leaves the clones; a reopen keeps everything.
	s2, err := ns.CreateSnapshot("vms", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.DeleteSnapshot(s1.Seq); err != nil {
		t.Fatal(err)
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
	if ds, err = Open(dir, testOpts()); err != nil {
		t.Fatal(err)
	}
	ns = ds.NS
	if _, err := ns.Snapshot(s1.Seq); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("deleted snapshot after reopen: %v", err)
	}
	got2, err := ns.Snapshot(s2.Seq)
	if err != nil || got2.ID() != s2.ID() || len(got2.Members) != 2 || !got2.Scheduled {
		t.Fatalf("snapshot after reopen: %+v %v", got2, err)
	}
	if got := readPath(t, ns, "a-clone2.vmdk"); !bytes.Equal(got, a0) {
		t.Fatal("a clone did not outlive its snapshot")
	}
	want := append([]byte("clone write"), a0[len("clone write"):]...)
	if got := readPath(t, ns, "a-clone.vmdk"); !bytes.Equal(got, want) {
		t.Fatal("the written clone differs after reopen")
	}
	s3, err := ns.CreateSnapshot("vms", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Seq <= s2.Seq {
		t.Fatalf("snapshot sequence went back: %d after %d", s3.Seq, s2.Seq)
	}
	if gs := ns.Groups(); len(gs) != 2 || gs[1].Name != "vms" {
		t.Fatalf("groups after reopen: %+v", gs)
	}
	if err := ns.DeleteGroup("vms", false); !errors.Is(err, ErrHasSnaps) {
		t.Fatalf("delete of a group with snapshots: %v", err)
	}
	if err := ns.DeleteGroup("vms", true); err != nil {
		t.Fatal(err)
	}
	if n := len(ns.Snapshots("")); n != 0 {
		t.Fatalf("%d snapshots left after the group was deleted with them", n)
	}
}

func TestSnapshotID(t *testing.T) {
	for _, id := range []string{"20261121-143512-000042", "42"} {
		seq, err := ParseSnapshotID(id)
		if err != nil || seq != 42 {
			t.Errorf("ParseSnapshotID(%q) = %d, %v", id, seq, err)
		}
	}
	for _, id := range []string{"", "x", "2026-1-2", "20261121-143512-x", "0"} {
		if _, err := ParseSnapshotID(id); err == nil {
			t.Errorf("ParseSnapshotID(%q) accepted", id)
		}
	}
}

// TestSnapView: the snapstore namespace shows /GROUP/ID/<member path>
// with the members' data as of the snapshot, and a deleted snapshot's
// numbers go stale.
func TestSnapView(t *testing.T) {
	ds, err := Open(newDatastore(t), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	ns := ds.NS
	rng := rand.New(rand.NewPCG(2, 2))
	vms, _ := ns.Mkdir(RootIno, "vms", NewAttr{Mode: 0o755})
	web, _ := ns.Mkdir(vms.Ino, "web", NewAttr{Mode: 0o755})
	d1, d2 := randBytes(rng, 70<<10), randBytes(rng, 5000)
	i1 := writeFile(t, ns, web.Ino, "disk.vmdk", d1)
	writeFile(t, ns, vms.Ino, "db.vmdk", d2)
	if _, err := ns.CreateGroup("g", GroupSpec{Match: []string{"*.vmdk"}}); err != nil {
		t.Fatal(err)
	}
	s, err := ns.CreateSnapshot("g", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Write(i1, randBytes(rng, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	ents, err := ns.SnapReadDir(SnapRoot)
	if err != nil || len(ents) != 1 || ents[0].Name != "g" {
		t.Fatalf("root: %+v %v", ents, err)
	}
	ents, err = ns.SnapReadDir(ents[0].Attr.Ino)
	if err != nil || len(ents) != 1 || ents[0].Name != s.ID() {
		t.Fatalf("group dir: %+v %v", ents, err)
	}
	sd := ents[0].Attr.Ino
	ents, err = ns.SnapReadDir(sd)
	if err != nil || len(ents) != 1 || ents[0].Name != "vms" || ents[0].Attr.Type != TypeDir {
		t.Fatalf("snapshot dir: %+v %v", ents, err)
	}
	ents, err = ns.SnapReadDir(ents[0].Attr.Ino)
	if err != nil || len(ents) != 2 || ents[0].Name != "db.vmdk" || ents[1].Name != "web" {
		t.Fatalf("vms dir: %+v %v", ents, err)
	}
	a, err := ns.SnapResolve("/g/" + s.ID() + "/vms/web/disk.vmdk")
	if err != nil || a.Type != TypeReg || a.Size != uint64(len(d1)) || a.Mode&0o222 != 0 {
		t.Fatalf("resolve: %+v %v", a, err)
	}
	got := make([]byte, len(d1)+100)
	n, eof, err := ns.SnapRead(a.Ino, got, 0)
	if err != nil || n != len(d1) || !eof || !bytes.Equal(got[:n], d1) {
		t.Fatalf("read: n=%d eof=%v err=%v equal=%v", n, eof, err, bytes.Equal(got[:n], d1))
	}
	if p, err := ns.SnapParent(a.Ino); err != nil {
		t.Fatal(err)
	} else if pa, _ := ns.SnapResolve("g/" + s.ID() + "/vms/web"); pa.Ino != p {
		t.Fatalf("parent of the file %#x, want %#x", p, pa.Ino)
	}
	if _, err := ns.SnapResolve("g/" + s.ID() + "/vms/nope"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing name: %v", err)
	}
	if err := ns.DeleteSnapshot(s.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.SnapGetAttr(a.Ino); !errors.Is(err, ErrStale) {
		t.Fatalf("a deleted snapshot's file: %v, want ErrStale", err)
	}
	if _, err := ns.SnapGetAttr(sd); !errors.Is(err, ErrStale) {
		t.Fatalf("a deleted snapshot's directory: %v, want ErrStale", err)
	}
}
