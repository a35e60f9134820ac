package objex

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// TestRepairFromTarget: every pack of a datastore is damaged (a byte
// flipped every 64 KiB). A file that was exported reads back exactly,
// served from the target, and its chunks are rewritten locally, so it
// reads back without the manager too; a file that was never exported
// fails with ErrCorrupt, never wrong bytes.
func TestRepairFromTarget(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			const bs = 4 << 10
			a := newNode(t, bs)
			disk := vdisk(7, 1024, bs) // 4 MiB
			a.writeFile("vm.img", disk)
			other := make([]byte, 1<<20)
			rand.Read(other)
			a.writeFile("other.img", other)
			s := a.snapshot("vms", "vm.img")
			a.addTarget("t1", be.url(t), be.opts(t), keyFile(t))
			a.export(s.Seq, "t1", "")
			a.close() // everything destaged into packs

			packs, err := filepath.Glob(filepath.Join(a.dir, "data", "packs", "*"))
			if err != nil || len(packs) == 0 {
				t.Fatalf("no packs: %v", err)
			}
			flipped := 0
			for _, p := range packs {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				for off := 4096; off < len(b); off += 64 << 10 {
					b[off] ^= 0x41
					flipped++
				}
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d bytes flipped in %d packs", flipped, len(packs))

			a.open()
			got, err := a.readFile("vm.img")
			if err != nil {
				t.Fatalf("read of the exported file over damaged packs: %v", err)
			}
			if !bytes.Equal(got, disk) {
				t.Fatal("the exported file reads back different over damaged packs")
			}
			rs := a.ds.Blocks.Repairs()
			if rs.Served == 0 {
				t.Fatalf("repairs %+v: nothing was served from the target", rs)
			}
			if f := a.m.Stats().RemoteBytesFetched; f == 0 {
				t.Fatal("remote_bytes_fetched is 0 after repairs")
			}
			if _, err := a.readFile("other.img"); !errors.Is(err, blockstore.ErrCorrupt) {
				t.Fatalf("read of a damaged file never exported: %v, want ErrCorrupt", err)
			}
			served := rs.Served
			a.close() // waits for the rewrites

			// Without the manager: the repaired chunks are local now.
			ds, err := snapstore.Open(filepath.Join(a.dir, "data"), blockstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			a.ds = ds
			got, err = a.readFile("vm.img")
			if err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("after the rewrite, without the target: %v (equal %v)", err, bytes.Equal(got, disk))
			}
			if rs := ds.Blocks.Repairs(); rs.Served != 0 {
				t.Fatalf("repairs after the rewrite: %+v", rs)
			}
			t.Logf("%d chunks served from the target and rewritten", served)
		})
	}
}
