package nfsfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/go-git/go-billy/v5/util"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

func billyDatastore(t *testing.T) (*snapstore.Datastore, string) {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, err := snapstore.Open(dir, blockstore.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return ds, dir
}

// TestBillyFS: the billy view reads and writes the same namespace NFS
// serves, with os-style errors, and what it wrote survives a reopen.
func TestBillyFS(t *testing.T) {
	ds, dir := billyDatastore(t)
	fs := NewBillyFS(ds.NS, 0, 0)
	if err := fs.MkdirAll("vms/web-1", 0o755); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("disk block "), 10000)
	if err := util.WriteFile(fs, "vms/web-1/disk.vmdk", want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("vms/web-1/disk.vmdk", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("XY")); err != nil {
		t.Fatal(err)
	}
	copy(want[5:], "XY")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fs.Symlink("web-1/disk.vmdk", "vms/current"); err != nil {
		t.Fatal(err)
	}
	got, err := util.ReadFile(fs, "vms/current")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read through symlink: %v, equal=%v", err, bytes.Equal(got, want))
	}
	if fi, err := fs.Lstat("vms/current"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("lstat: %v %v", fi, err)
	}
	if fi, err := fs.Stat("vms/current"); err != nil || fi.Size() != int64(len(want)) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v %v", fi, err)
	}
	if err := fs.Rename("vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk"); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat("vms/web-1/disk.vmdk"); !os.IsNotExist(err) {
		t.Fatalf("old name after rename: %v", err)
	}
	if err := fs.Remove("vms"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("remove of a full dir: %v", err)
	}
	if _, err := fs.OpenFile("vms/web-2/disk.vmdk", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !os.IsExist(err) {
		t.Fatalf("O_EXCL on an existing file: %v", err)
	}
	ents, err := fs.ReadDir("vms")
	if err != nil || len(ents) != 3 || ents[0].Name() != "current" || !ents[1].IsDir() {
		t.Fatalf("readdir: %v %v", ents, err)
	}
	tf, err := fs.TempFile("tmp", "x")
	if err != nil {
		t.Fatal(err)
	}
	tf.Close()
	sub, err := fs.Chroot("vms/web-2")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := util.ReadFile(sub, "disk.vmdk"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("chroot read: %v", err)
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
	if ds, err = snapstore.Open(dir, blockstore.Options{SegmentSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	fs = NewBillyFS(ds.NS, 0, 0)
	if got, err := util.ReadFile(fs, "vms/web-2/disk.vmdk"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after reopen: %v", err)
	}
}
