package objex

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// TestImportOtherBlockSize: a snapshot exported from a datastore with one
// block size imports into a datastore with another, both ways: the clone
// reads back exactly at once (demand fetches assembled from, or cut out of,
// the manifest's blocks), holes stay holes, and after the thickening it
// reads back exactly without the target.
func TestImportOtherBlockSize(t *testing.T) {
	for _, c := range []struct{ from, to, nblocks int }{{4 << 10, 16 << 10, 1001}, {16 << 10, 4 << 10, 251}} {
		t.Run(fmt.Sprintf("%dK-to-%dK", c.from>>10, c.to>>10), func(t *testing.T) {
			be := backends()[0] // file://
			turl, kf := be.url(t), keyFile(t)
			a := newNode(t, c.from)
			disk := vdisk(3, c.nblocks, c.from)
			disk = append(disk, []byte("an unaligned tail")...)
			a.writeFile("vm.img", disk)
			s := a.snapshot("g", "vm.img")
			a.addTarget("t", turl, be.opts(t), kf)
			a.export(s.Seq, "t", "snap")

			b := newNode(t, c.to)
			b.addTarget("t", turl, be.opts(t), kf)
			if err := b.m.SetBandwidth("t", 1); err != nil { // demand reads first
				t.Fatal(err)
			}
			attr, job, err := b.m.Import(context.Background(), "t", "snap", "vm.img", "vm.img")
			if err != nil {
				t.Fatal(err)
			}
			if attr.Size != uint64(len(disk)) {
				t.Fatalf("size %d, want %d", attr.Size, len(disk))
			}
			got, err := b.readFile("vm.img")
			if err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("demand read: %v (equal %v)", err, bytes.Equal(got, disk))
			}
			if b.m.Stats().RemoteBytesFetched == 0 {
				t.Fatal("nothing fetched")
			}
			if err := b.m.SetBandwidth("t", 0); err != nil {
				t.Fatal(err)
			}
			// The thickener may be asleep in the 1 B/s limiter: a restart
			// picks the new rate up at once.
			b.reopen()
			for _, j := range b.m.Jobs() {
				if jj, ok := b.m.Job(j.ID); ok {
					waitJob(t, jj)
				}
			}
			_ = job
			b.close()
			b.cfg.Dir = t.TempDir() // no target, no manager state: only local data
			b.open()
			got, err = b.readFile("vm.img")
			if err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("after thickening, without the target: %v (equal %v)", err, bytes.Equal(got, disk))
			}
		})
	}
}
