package nfsfs

import (
	"bytes"
	"testing"

	"github.com/dstore/dstore/snapstore"
)

// TestSnapstoreExport serves a snapshot at /snapstore/GROUP/ID/<path>: it
// browses and reads as the members were at the snapshot, refuses every
// change with ROFS, keeps its handles across a restart, and turns stale
// when the snapshot is deleted.
func TestSnapstoreExport(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	vms := c.mkdir(e.root(), "vms", sattr3{Mode: nfsRef(uint32(0o755))}).ok(t, "MKDIR vms")
	web := c.mkdir(vms.FH, "web", sattr3{Mode: nfsRef(uint32(0o755))}).ok(t, "MKDIR web")
	orig := randBytes(300 << 10)
	disk := mkfile(t, c, web.FH, "disk.vmdk", 0o640, orig)
	mkfile(t, c, e.root(), "notes.txt", 0o644, []byte("not a member"))

	ns := e.ds.NS
	if _, err := ns.CreateGroup("web", snapstore.GroupSpec{Match: []string{"*.vmdk"}}); err != nil {
		t.Fatal(err)
	}
	snap, err := ns.CreateSnapshot("web", "before", false)
	if err != nil {
		t.Fatal(err)
	}
	// The live file moves on; the snapshot must not.
	c.write(disk.FH, 4096, bytes.Repeat([]byte{0xee}, 8192), fileSync).ok(t, "WRITE after the snapshot")

	m, err := c.mnt("/snapstore")
	if err != nil || m.St != mntOK {
		t.Fatalf("MNT /snapstore: status %d, %v", m.St, err)
	}
	root := m.FH
	ra := mustAttr(t, c, root)
	if ra.Type != uint32(snapstore.TypeDir) || ra.FSID == mustAttr(t, c, e.root()).FSID {
		t.Fatalf("/snapstore root: %+v (its fsid must differ from the live tree's)", ra)
	}
	names := func(dir []byte) []string {
		t.Helper()
		var out []string
		for _, x := range c.readdirplus(dir, 0, [8]byte{}, 4096, 64<<10).ok(t, "READDIRPLUS").Entries {
			out = append(out, x.Name)
		}
		return out
	}
	if got := names(root); len(got) != 3 || got[2] != "web" {
		t.Fatalf("/snapstore lists %q, want ., .., web", got)
	}
	g := c.lookup(root, "web").ok(t, "LOOKUP web")
	if got := names(g.FH); len(got) != 3 || got[2] != snap.ID() {
		t.Fatalf("/snapstore/web lists %q, want ., .., %s", got, snap.ID())
	}
	sd := c.lookup(g.FH, snap.ID()).ok(t, "LOOKUP "+snap.ID())
	if up := c.lookup(sd.FH, "..").ok(t, "LOOKUP .."); !bytes.Equal(up.FH, g.FH) {
		t.Fatalf("LOOKUP .. of the snapshot's directory: %x, want the group's %x", up.FH, g.FH)
	}
	if got := names(sd.FH); len(got) != 3 || got[2] != "vms" {
		t.Fatalf("the snapshot lists %q, want only vms (notes.txt is no member)", got)
	}
	c.lookup(sd.FH, "notes.txt").want(t, "LOOKUP of a non-member", nfsErrNoent)
	v := c.lookup(sd.FH, "vms").ok(t, "LOOKUP vms")
	w := c.lookup(v.FH, "web").ok(t, "LOOKUP web")
	f := c.lookup(w.FH, "disk.vmdk").ok(t, "LOOKUP disk.vmdk")
	if f.Attr.Size != uint64(len(orig)) || f.Attr.Mode != 0o440 || f.Attr.Type != uint32(snapstore.TypeReg) {
		t.Fatalf("snapshot member attributes %+v: want size %d, mode 0440 (write bits cleared)", f.Attr, len(orig))
	}
	if len(f.FH) > maxESXiHandle {
		t.Fatalf("snapstore handle of %d bytes", len(f.FH))
	}
	if got := readAll(t, c, f.FH, 64<<10); !bytes.Equal(got, orig) {
		t.Fatalf("the snapshot member reads %d bytes that differ from what was written before the snapshot", len(got))
	}
	if got := readAll(t, c, disk.FH, 64<<10); bytes.Equal(got, orig) {
		t.Fatal("the live file did not change: the test proves nothing")
	}

	// Every change is refused with ROFS; nothing changes.
	c.write(f.FH, 0, []byte("x"), fileSync).want(t, "WRITE", nfsErrRofs)
	c.setattr(f.FH, sattr3{Size: nfsRef(uint64(0))}, nil).want(t, "SETATTR", nfsErrRofs)
	c.commit(f.FH, 0, 0).want(t, "COMMIT", nfsErrRofs)
	c.create(w.FH, "new", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE", nfsErrRofs)
	c.mkdir(w.FH, "d", sattr3{}).want(t, "MKDIR", nfsErrRofs)
	c.symlink(w.FH, "l", sattr3{}, "x").want(t, "SYMLINK", nfsErrRofs)
	c.mknod(w.FH, "p", 7, sattr3{}, 0, 0).want(t, "MKNOD", nfsErrRofs)
	c.remove(w.FH, "disk.vmdk").want(t, "REMOVE", nfsErrRofs)
	c.rmdir(v.FH, "web").want(t, "RMDIR", nfsErrRofs)
	c.rename(w.FH, "disk.vmdk", w.FH, "moved").want(t, "RENAME", nfsErrRofs)
	c.link(f.FH, w.FH, "hard").want(t, "LINK", nfsErrRofs)
	// Across the two exports: EXDEV, as between two file systems.
	c.rename(e.root(), "notes.txt", w.FH, "notes.txt").want(t, "RENAME live -> snapstore", nfsErrXdev)
	c.link(disk.FH, w.FH, "x").want(t, "LINK of a live file into the snapstore", nfsErrXdev)
	c.link(f.FH, e.root(), "x").want(t, "LINK of a snapshot file into the live tree", nfsErrRofs)
	if got := c.access(f.FH, accRead|accModify|accExtend|accDelete|accExecute).ok(t, "ACCESS").Access; got != accRead {
		t.Fatalf("ACCESS of a snapshot file grants %#x, want read only", got)
	}
	if got := c.access(w.FH, accRead|accLookup|accModify|accExtend|accDelete).ok(t, "ACCESS dir").Access; got != accRead|accLookup {
		t.Fatalf("ACCESS of a snapshot directory grants %#x, want read and lookup", got)
	}
	if got := readAll(t, c, f.FH, 64<<10); !bytes.Equal(got, orig) {
		t.Fatal("the snapshot changed")
	}
	if fi := c.fsinfo(root).ok(t, "FSINFO"); fi.FSInfo.Properties&0x10 != 0 || fi.FSInfo.Rtmax != maxIO {
		t.Fatalf("FSINFO of /snapstore: %+v", fi.FSInfo)
	}
	c.fsstat(root).ok(t, "FSSTAT")
	c.pathconf(f.FH).ok(t, "PATHCONF")
	c.readlink(f.FH).want(t, "READLINK of a file", nfsErrInval)
	c.read(sd.FH, 0, 10).want(t, "READ of a directory", nfsErrIsdir)

	// A user who may not read the member does not.
	other := e.dial(userCred(4242, 4242))
	other.read(f.FH, 0, 10).want(t, "READ by another user of a 0440 file", nfsErrAcces)

	// MNT of a directory below /snapstore; a file or a missing path is refused.
	if m, err := c.mnt("/snapstore/web/" + snap.ID() + "/vms"); err != nil || m.St != mntOK || !bytes.Equal(m.FH, v.FH) {
		t.Fatalf("MNT of a snapshot's directory: status %d, %v", m.St, err)
	}
	if m, err := c.mnt("/snapstore/web/" + snap.ID() + "/vms/web/disk.vmdk"); err != nil || m.St != mntNotdir {
		t.Fatalf("MNT of a snapshot file: status %d, %v; want NOTDIR", m.St, err)
	}
	if m, err := c.mnt("/snapstore/nosuch"); err != nil || m.St != mntNoent {
		t.Fatalf("MNT of a missing group: status %d, %v; want NOENT", m.St, err)
	}

	// Handles survive a restart.
	e.restart()
	c = e.dial(rootCred())
	if got := readAll(t, c, f.FH, 64<<10); !bytes.Equal(got, orig) {
		t.Fatal("after a restart the snapshot member reads differently")
	}

	// Forged handles are stale, and the connection keeps serving.
	bad := Handle{FSID: e.ds.Blocks.ID(), NS: nsSnap, Ino: 1 << 61, Gen: 1}.encode()
	c.getattr(bad).want(t, "GETATTR of an unknown snapstore inode", nfsErrStale)
	badGen := Handle{FSID: e.ds.Blocks.ID(), NS: nsSnap, Ino: snapstore.Ino(snapstore.SnapRoot), Gen: 9}.encode()
	c.getattr(badGen).want(t, "GETATTR of a snapstore handle with another generation", nfsErrStale)
	c.read(bad, 0, 10).want(t, "READ of a forged handle", nfsErrStale)
	c.write(bad, 0, []byte("x"), fileSync).want(t, "WRITE to a forged handle", nfsErrStale)

	// Deleting the snapshot makes its handles stale.
	if err := e.ds.NS.DeleteSnapshot(snap.Seq); err != nil {
		t.Fatal(err)
	}
	c.getattr(f.FH).want(t, "GETATTR after the snapshot was deleted", nfsErrStale)
	c.read(f.FH, 0, 10).want(t, "READ after the snapshot was deleted", nfsErrStale)
	c.lookup(sd.FH, "vms").want(t, "LOOKUP in a deleted snapshot", nfsErrStale)
	if got := names(g.FH); len(got) != 2 {
		t.Fatalf("the group still lists %q", got)
	}
	mustAttr(t, c, root)
}

// TestSnapstoreReaddirCookies pages through a group's snapshots while
// snapshots are deleted and taken between pages: no snapshot that stays
// is listed twice or skipped.
func TestSnapstoreReaddirCookies(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	mkfile(t, c, e.root(), "a.img", 0o644, []byte("a"))
	ns := e.ds.NS
	if _, err := ns.CreateGroup("g", snapstore.GroupSpec{Match: []string{"a.img"}}); err != nil {
		t.Fatal(err)
	}
	var ids []*snapstore.Snapshot
	for range 40 {
		s, err := ns.CreateSnapshot("g", "", false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s)
	}
	m, err := c.mnt("/snapstore/g")
	if err != nil || m.St != mntOK {
		t.Fatalf("MNT /snapstore/g: %d, %v", m.St, err)
	}
	seen := map[string]int{}
	cookie := uint64(0)
	for page := 0; ; page++ {
		res := c.readdir(m.FH, cookie, [8]byte{}, 300).ok(t, "READDIR")
		for _, x := range res.Entries {
			seen[x.Name]++
			cookie = x.Cookie
		}
		if res.EOF {
			break
		}
		if page > 100 {
			t.Fatal("READDIR never reached EOF")
		}
		// Between pages: delete the oldest snapshot left, take a new one.
		if err := ns.DeleteSnapshot(ids[0].Seq); err != nil {
			t.Fatal(err)
		}
		delete(seen, ids[0].ID()) // may or may not have been listed
		ids = ids[1:]
		s, err := ns.CreateSnapshot("g", "", false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s)
	}
	for _, s := range ids {
		if seen[s.ID()] != 1 {
			t.Errorf("snapshot %s listed %d times", s.ID(), seen[s.ID()])
		}
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", name, n)
		}
	}
}
