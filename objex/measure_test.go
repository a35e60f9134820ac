package objex

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestMeasure records export and import figures on a larger image; it runs
// only with DSTORE_OX_MEASURE=<MiB> (e.g. 256), against versitygw.
func TestMeasure(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("DSTORE_OX_MEASURE"))
	if mib <= 0 {
		t.Skip("set DSTORE_OX_MEASURE=<MiB> to measure")
	}
	const bs = 4 << 10
	nblocks := mib << 20 / bs
	endpoint := s3Endpoint(t)
	turl := "s3://dstore-measure/p"
	opts := StoreOptions{Endpoint: endpoint, Region: "us-east-1", AccessKey: gwAccess, SecretKey: gwSecret}
	kf := keyFile(t)
	a := newNode(t, bs)
	disk := vdisk(12, nblocks, bs)
	a.writeFile("vm.img", disk)
	s := a.snapshot("g", "vm.img")
	a.addTarget("t", turl, opts, kf)
	start := time.Now()
	a.export(s.Seq, "t", "full")
	el := time.Since(start)
	up := a.m.Stats().BytesUploaded
	t.Logf("export of %d MiB: %v, %.1f MB/s of image, %d bytes uploaded", mib, el, float64(len(disk))/el.Seconds()/1e6, up)
	mf := listKeys(t, a, "t", manifestPrefix)
	t.Logf("manifest: %d bytes (%.2f%% of the image)", mf[0].Size, 100*float64(mf[0].Size)/float64(len(disk)))

	b := newNode(t, bs)
	b.addTarget("t", turl, opts, kf)
	if err := b.m.SetBandwidth("t", 1); err != nil { // the thickener stays out of the way
		t.Fatal(err)
	}
	start = time.Now()
	_, _, err := b.m.Import(context.Background(), "t", "full", "", "vm.img")
	if err != nil {
		t.Fatal(err)
	}
	importDone := time.Since(start)
	ino, _ := b.ds.NS.LookupPath("vm.img")
	buf := make([]byte, 64<<10)
	start = time.Now()
	if _, _, err := b.ds.NS.Read(ino.Ino, buf, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("import returned in %v; first 64 KiB read %v later", importDone, time.Since(start))
	// Read 10 MiB from the middle, 64 KiB at a time.
	before := b.m.Stats().RemoteBytesFetched
	start = time.Now()
	off := int64(len(disk) / 2)
	for n := 0; n < 10<<20; n += len(buf) {
		if _, _, err := b.ds.NS.Read(ino.Ino, buf, off+int64(n)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, disk[off+int64(n):off+int64(n)+int64(len(buf))]) {
			t.Fatal("wrong bytes")
		}
	}
	got := b.m.Stats().RemoteBytesFetched - before
	t.Logf("reading 10 MiB fetched %d bytes (%.2fx the 10 MiB; the image is stored at %.2f of its size) in %v",
		got, float64(got)/float64(10<<20), float64(up)/float64(len(disk)), time.Since(start))
}
