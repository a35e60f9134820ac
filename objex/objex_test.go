package objex

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// onDisk returns the file that holds key of the target at rawURL: the
// target directory's, or versitygw's posix backend's.
func onDisk(t *testing.T, rawURL, key string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme == "file" {
		return filepath.Join(u.Path, filepath.FromSlash(key))
	}
	return filepath.Join(gw.dir, u.Host, filepath.FromSlash(strings.Trim(u.Path, "/")), filepath.FromSlash(key))
}

func listKeys(t *testing.T, n *node, target, prefix string) []ObjectInfo {
	t.Helper()
	tg, err := n.m.target(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	var out []ObjectInfo
	if err := tg.st.List(context.Background(), prefix, func(oi ObjectInfo) error {
		out = append(out, oi)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitJob(t *testing.T, j *Job) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := j.Wait(ctx); err != nil {
		t.Fatalf("job %+v: %v", j.Info(), err)
	}
}

// TestExportImport: export a snapshot, import it into the same datastore
// (nothing fetched: every block is local) and into a fresh one (reads
// fetch, the thickener copies the rest, then the target is not needed);
// an incremental export after 1% of blocks changed sends little.
func TestExportImport(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			const bs = 4 << 10
			const nblocks = 4096 // 16 MiB
			turl, topts := be.url(t), be.opts(t)
			kf := keyFile(t)
			a := newNode(t, bs)
			disk := vdisk(1, nblocks, bs)
			a.writeFile("vm.img", disk)
			small := []byte("a small config file\n")
			a.writeFile("vm.cfg", small)
			s1 := a.snapshot("vms", "vm.*")
			a.addTarget("t1", turl, topts, kf)
			info := a.export(s1.Seq, "t1", "")
			if info.State != JobDone || info.BytesMoved == 0 {
				t.Fatalf("export job: %+v", info)
			}
			name := DefaultExportName(s1)
			snaps, err := a.m.Snapshots(context.Background(), "t1")
			if err != nil || len(snaps) != 1 || snaps[0].Name != name || len(snaps[0].Info.Files) != 2 {
				t.Fatalf("snapshots: %+v %v", snaps, err)
			}
			full := a.m.Stats().BytesUploaded
			t.Logf("full export: %d bytes of data, %d uploaded", len(disk), full)

			// Import into the same datastore: instant, and nothing is
			// fetched, because every block is already here.
			attr, job, err := a.m.Import(context.Background(), "t1", name, "vm.img", "clone.img")
			if err != nil {
				t.Fatal(err)
			}
			if attr.Size != uint64(len(disk)) {
				t.Fatalf("clone size %d", attr.Size)
			}
			got, err := a.readFile("clone.img")
			if err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("clone in the same datastore: %v (equal %v)", err, bytes.Equal(got, disk))
			}
			waitJob(t, job)
			if f := a.m.Stats().RemoteBytesFetched; f != 0 {
				t.Fatalf("import into the exporting datastore fetched %d bytes", f)
			}

			// Incremental: change 1% of the blocks, export again.
			ino, _ := a.ds.NS.LookupPath("vm.img")
			changed := append([]byte(nil), disk...)
			for i := 0; i < nblocks/100; i++ {
				b := (i*97 + 13) % nblocks
				blk := vdisk(uint64(100+i), 1, bs)
				blk[0] = byte(i) | 1 // never a hole, never a duplicate
				copy(changed[b*bs:], blk)
				a.writeAt(ino.Ino, blk, int64(b*bs))
			}
			s2 := a.snapshot("vms")
			before := a.m.Stats().BytesUploaded
			a.export(s2.Seq, "t1", "")
			inc := a.m.Stats().BytesUploaded - before
			t.Logf("incremental export after 1%% of blocks changed: %d bytes (%.2f%% of %d)", inc, 100*float64(inc)/float64(len(disk)), len(disk))
			if inc > int64(len(disk))*2/100 {
				t.Fatalf("incremental export sent %d bytes, more than 2%% of %d", inc, len(disk))
			}

			// A second, fresh datastore joins the target with the key.
			b := newNode(t, bs)
			b.addTarget("t1", turl, topts, kf)
			name2 := DefaultExportName(s2)
			_, job, err = b.m.Import(context.Background(), "t1", name2, "vm.img", "vm.img")
			if err != nil {
				t.Fatal(err)
			}
			// A read of 1 MiB fetches about that much.
			bino, _ := b.ds.NS.LookupPath("vm.img")
			part := make([]byte, 1<<20)
			if _, _, err := b.ds.NS.Read(bino.Ino, part, 3<<20); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(part, changed[3<<20:4<<20]) {
				t.Fatal("fresh import: first read differs")
			}
			waitJob(t, job)
			if f := b.m.Stats().RemoteBytesFetched; f > int64(len(disk)) {
				t.Fatalf("thickening fetched %d bytes for %d", f, len(disk))
			}
			got, err = b.readFile("vm.img")
			if err != nil || !bytes.Equal(got, changed) {
				t.Fatalf("fresh import: %v, equal %v", err, bytes.Equal(got, changed))
			}
			fetched := b.m.Stats().RemoteBytesFetched
			// Thick: after a restart, every read is local.
			b.reopen()
			got, err = b.readFile("vm.img")
			if err != nil || !bytes.Equal(got, changed) || b.m.Stats().RemoteBytesFetched != 0 {
				t.Fatalf("thick import after reopen: %v, fetched %d (before: %d)", err, b.m.Stats().RemoteBytesFetched, fetched)
			}
			// A whole snapshot at once, under a new directory.
			attrs, jobs, err := b.m.ImportAll(context.Background(), "t1", name, "restored/vms")
			if err != nil || len(attrs) != 2 || len(jobs) != 2 {
				t.Fatalf("ImportAll: %v", err)
			}
			if got, err := b.readFile("restored/vms/vm.img"); err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("ImportAll vm.img: %v", err)
			}
			if got, err := b.readFile("restored/vms/vm.cfg"); err != nil || !bytes.Equal(got, small) {
				t.Fatalf("ImportAll vm.cfg: %v", err)
			}
			for _, j := range jobs {
				waitJob(t, j)
			}
			// The small file of the first snapshot, alone.
			if _, _, err := b.m.Import(context.Background(), "t1", name, "vm.cfg", "vm.cfg"); err != nil {
				t.Fatal(err)
			}
			if got, err := b.readFile("vm.cfg"); err != nil || !bytes.Equal(got, small) {
				t.Fatalf("vm.cfg: %q %v", got, err)
			}
			// Writes on top of an imported file stay local.
			if _, err := b.ds.NS.Write(bino.Ino, []byte("local write"), 100, true); err != nil {
				t.Fatal(err)
			}
			copy(changed[100:], "local write")
			if got, err = b.readFile("vm.img"); err != nil || !bytes.Equal(got, changed) {
				t.Fatalf("after a write: %v", err)
			}
		})
	}
}

// TestWrongKey: a target opened with another key file, or a copy of the
// bucket without the key, yields nothing.
func TestWrongKey(t *testing.T) {
	const bs = 4 << 10
	turl := "file://" + t.TempDir() + "/target"
	a := newNode(t, bs)
	a.writeFile("f", vdisk(2, 64, bs))
	s := a.snapshot("g", "f")
	a.addTarget("t", turl, StoreOptions{}, keyFile(t))
	a.export(s.Seq, "t", "snap")
	b := newNode(t, bs)
	_, err := b.m.AddTarget(context.Background(), TargetSpec{Name: "t", URL: turl, KeyFile: keyFile(t)})
	if !errors.Is(err, ErrKey) {
		t.Fatalf("join with another key: %v", err)
	}
	// Nothing in the target reveals content: no block appears in clear.
	data := vdisk(2, 64, bs)
	err = filepath.Walk(strings.TrimPrefix(turl, "file://"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i := 0; i < 64; i++ {
			blk := data[i*bs : i*bs+64]
			if !bytes.Equal(blk, make([]byte, 64)) && bytes.Contains(b, blk) {
				t.Errorf("%s holds block %d in clear", p, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRekey: rekeying rewraps the master key only; the old key stops
// working, the new one reads everything, no data object changes.
func TestRekey(t *testing.T) {
	const bs = 4 << 10
	turl := "file://" + t.TempDir() + "/target"
	a := newNode(t, bs)
	disk := vdisk(3, 256, bs)
	a.writeFile("f", disk)
	s := a.snapshot("g", "f")
	k1 := keyFile(t)
	a.addTarget("t", turl, StoreOptions{}, k1)
	a.export(s.Seq, "t", "snap")
	objs := listKeys(t, a, "t", dataPrefix)
	env := map[string]string{"OXPASS": "correct horse battery staple"}
	a.m.cfg.Getenv = func(k string) string { return env[k] }
	if err := a.m.Rekey(context.Background(), "t", "", "OXPASS"); err != nil {
		t.Fatal(err)
	}
	if after := listKeys(t, a, "t", dataPrefix); len(after) != len(objs) || after[0].Modified != objs[0].Modified {
		t.Fatal("rekey touched data objects")
	}
	// Twice in a row, back and forth: each rekey opens with the current key.
	k2 := keyFile(t)
	if err := a.m.Rekey(context.Background(), "t", k2, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.m.Rekey(context.Background(), "t", "", "OXPASS"); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, bs)
	if _, err := b.m.AddTarget(context.Background(), TargetSpec{Name: "t", URL: turl, KeyFile: k1}); !errors.Is(err, ErrKey) {
		t.Fatalf("old key after rekey: %v", err)
	}
	b.m.cfg.Getenv = func(k string) string { return env[k] }
	if _, err := b.m.AddTarget(context.Background(), TargetSpec{Name: "t", URL: turl, PassphraseEnv: "OXPASS"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.m.Import(context.Background(), "t", "snap", "", "f"); err != nil {
		t.Fatal(err)
	}
	if got, err := b.readFile("f"); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("read after rekey: %v", err)
	}
	env["OXPASS"] = "wrong"
	c := newNode(t, bs)
	c.m.cfg.Getenv = func(k string) string { return env[k] }
	if _, err := c.m.AddTarget(context.Background(), TargetSpec{Name: "t", URL: turl, PassphraseEnv: "OXPASS"}); !errors.Is(err, ErrKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
}

// TestTamper: a flipped byte, a truncated object, swapped objects and a
// tampered manifest are detected: an error, never wrong bytes.
func TestTamper(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			const bs = 4 << 10
			turl, topts := be.url(t), be.opts(t)
			kf := keyFile(t)
			a := newNode(t, bs)
			disk := vdisk(4, 2048, bs)
			a.writeFile("vm.img", disk)
			s := a.snapshot("g", "vm.img")
			a.addTarget("t", turl, topts, kf)
			tg, err := a.m.target(context.Background(), "t")
			if err != nil {
				t.Fatal(err)
			}
			tg.osize = 1 << 20 // several objects, so some can be swapped
			a.export(s.Seq, "t", "snap")
			objs := listKeys(t, a, "t", dataPrefix)
			if len(objs) < 3 {
				t.Fatalf("%d objects", len(objs))
			}
			// Keep pristine copies.
			orig := map[string][]byte{}
			for _, o := range append(objs, listKeys(t, a, "t", manifestPrefix)...) {
				b, err := os.ReadFile(onDisk(t, turl, o.Key))
				if err != nil {
					t.Fatal(err)
				}
				orig[o.Key] = b
			}
			restore := func() {
				for k, b := range orig {
					if err := os.WriteFile(onDisk(t, turl, k), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			// tryImport imports into a fresh datastore and reads it all:
			// it must fail, and never return wrong bytes.
			i := 0
			tryImport := func(what string) {
				t.Helper()
				b := newNode(t, bs)
				b.addTarget("t", turl, topts, kf)
				i++
				_, job, err := b.m.Import(context.Background(), "t", "snap", "", "x")
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("%s: import failed without ErrCorrupt: %v", what, err)
					}
					return
				}
				got, rerr := b.readFile("x")
				if rerr == nil {
					t.Fatalf("%s: the whole file read without an error (equal: %v)", what, bytes.Equal(got, disk))
				}
				// Every block that does read is right.
				ino, _ := b.ds.NS.LookupPath("x")
				buf := make([]byte, bs)
				bad := 0
				for blk := 0; blk < 2048; blk++ {
					if _, _, err := b.ds.NS.Read(ino.Ino, buf, int64(blk*bs)); err != nil {
						bad++
						continue
					}
					if !bytes.Equal(buf, disk[blk*bs:(blk+1)*bs]) {
						t.Fatalf("%s: block %d read wrong bytes", what, blk)
					}
				}
				if bad == 0 {
					t.Fatalf("%s: no block failed", what)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := job.Wait(ctx); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: thickener: %v", what, err)
				}
			}
			// A flipped byte in the middle of an object.
			p := onDisk(t, turl, objs[1].Key)
			b := append([]byte(nil), orig[objs[1].Key]...)
			b[len(b)/2] ^= 0x40
			os.WriteFile(p, b, 0o600)
			tryImport("flipped byte")
			restore()
			// A truncated object.
			os.WriteFile(p, orig[objs[1].Key][:len(orig[objs[1].Key])*2/3], 0o600)
			tryImport("truncated object")
			restore()
			// Two objects swapped.
			os.WriteFile(onDisk(t, turl, objs[0].Key), orig[objs[2].Key], 0o600)
			os.WriteFile(onDisk(t, turl, objs[2].Key), orig[objs[0].Key], 0o600)
			tryImport("swapped objects")
			restore()
			// A tampered manifest refuses the import.
			mk := manifestKey("snap")
			mb := append([]byte(nil), orig[mk]...)
			mb[len(mb)-20] ^= 1
			os.WriteFile(onDisk(t, turl, mk), mb, 0o600)
			c := newNode(t, bs)
			c.addTarget("t", turl, topts, kf)
			if _, _, err := c.m.Import(context.Background(), "t", "snap", "", "x"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("tampered manifest: %v", err)
			}
			if _, err := c.ds.NS.LookupPath("x"); err == nil {
				t.Fatal("a refused import left a file")
			}
			// A manifest renamed to another name is refused too.
			restore()
			os.WriteFile(onDisk(t, turl, manifestKey("other")), orig[mk], 0o600)
			if _, _, err := c.m.Import(context.Background(), "t", "other", "", "y"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("renamed manifest: %v", err)
			}
			os.Remove(onDisk(t, turl, manifestKey("other")))
			// And with everything back, the import works.
			tryOK := newNode(t, bs)
			tryOK.addTarget("t", turl, topts, kf)
			if _, _, err := tryOK.m.Import(context.Background(), "t", "snap", "", "x"); err != nil {
				t.Fatal(err)
			}
			if got, err := tryOK.readFile("x"); err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("pristine: %v", err)
			}
		})
	}
}

// TestDownAndBack: with the target unreachable a read of a block not yet
// local fails (EIO above); once it is back, the same read succeeds.
func TestDownAndBack(t *testing.T) {
	const bs = 4 << 10
	endpoint := s3Endpoint(t)
	proxy := newFaultProxy(t, endpoint)
	turl := "s3://dstore-down-" + strings.ToLower(t.Name()[:4]) + "/p"
	opts := StoreOptions{Endpoint: proxy.URL(), Region: "us-east-1", AccessKey: gwAccess, SecretKey: gwSecret}
	kf := keyFile(t)
	a := newNode(t, bs)
	disk := vdisk(5, 1024, bs)
	a.writeFile("vm.img", disk)
	s := a.snapshot("g", "vm.img")
	a.addTarget("t", turl, opts, kf)
	a.export(s.Seq, "t", "snap")

	b := newNode(t, bs)
	b.m.cfg.ThickenBatch = 8
	b.addTarget("t", turl, opts, kf)
	tg, _ := b.m.target(context.Background(), "t")
	tg.lim.SetRate(64 << 10) // a slow thickener, so most blocks stay remote
	if _, _, err := b.m.Import(context.Background(), "t", "snap", "", "vm.img"); err != nil {
		t.Fatal(err)
	}
	ino, _ := b.ds.NS.LookupPath("vm.img")
	proxy.set(func(p *faultProxy) { p.down = true })
	buf := make([]byte, 64<<10)
	off := int64(3 << 20)
	_, _, err := b.ds.NS.Read(ino.Ino, buf, off)
	if err == nil {
		t.Fatal("read with the target down succeeded")
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, blockstore.ErrCorrupt) {
		t.Fatalf("target down reported as corruption: %v", err)
	}
	t.Logf("read with the target down: %v", err)
	if strings.Contains(err.Error(), gwSecret) || strings.Contains(err.Error(), gwAccess) {
		t.Fatalf("error shows credentials: %v", err)
	}
	proxy.set(func(p *faultProxy) { p.down = false })
	// Wrong credentials: a clear error that shows none of them.
	c := newNode(t, bs)
	badSecret := "not-the-secret-0123456789"
	_, err = c.m.AddTarget(context.Background(), TargetSpec{Name: "t", URL: turl, KeyFile: kf,
		Store: StoreOptions{Endpoint: endpoint, Region: "us-east-1", AccessKey: gwAccess, SecretKey: badSecret}})
	if err == nil {
		t.Fatal("wrong secret accepted")
	}
	t.Logf("wrong secret: %v", err)
	if strings.Contains(err.Error(), badSecret) || strings.Contains(err.Error(), gwAccess) {
		t.Fatalf("error shows credentials: %v", err)
	}
	if infos, _ := c.m.Targets(); len(infos) != 0 {
		t.Fatalf("a target that failed to open was added: %+v", infos)
	}
	if _, _, err := b.ds.NS.Read(ino.Ino, buf, off); err != nil {
		t.Fatalf("read with the target back: %v", err)
	}
	if !bytes.Equal(buf, disk[off:off+int64(len(buf))]) {
		t.Fatal("read with the target back: wrong bytes")
	}
}

// TestFaults: 5xx bursts, slow answers and truncated bodies end in correct
// results (retried) or clear errors, never wrong data.
func TestFaults(t *testing.T) {
	const bs = 4 << 10
	endpoint := s3Endpoint(t)
	proxy := newFaultProxy(t, endpoint)
	turl := "s3://dstore-faults/p"
	opts := StoreOptions{Endpoint: proxy.URL(), Region: "us-east-1", AccessKey: gwAccess, SecretKey: gwSecret}
	kf := keyFile(t)
	a := newNode(t, bs)
	disk := vdisk(6, 2048, bs)
	a.writeFile("vm.img", disk)
	s := a.snapshot("g", "vm.img")
	a.addTarget("t", turl, opts, kf)
	tg, _ := a.m.target(context.Background(), "t")
	tg.osize = 2 << 20
	// A burst of 503s during the export: retried, the export completes.
	proxy.set(func(p *faultProxy) { p.fail5xx = 3 })
	a.export(s.Seq, "t", "snap")
	if proxy.faults.Load() < 3 {
		t.Fatalf("only %d faults injected", proxy.faults.Load())
	}

	b := newNode(t, bs)
	b.addTarget("t", turl, opts, kf)
	// Truncated bodies on the first GETs: retried, right bytes.
	proxy.set(func(p *faultProxy) { p.truncGet = 2 })
	if _, _, err := b.m.Import(context.Background(), "t", "snap", "", "vm.img"); err != nil {
		t.Fatal(err)
	}
	proxy.set(func(p *faultProxy) { p.truncGet = 2 })
	ino, _ := b.ds.NS.LookupPath("vm.img")
	buf := make([]byte, 256<<10)
	if _, _, err := b.ds.NS.Read(ino.Ino, buf, 1<<20); err != nil {
		t.Fatalf("read through truncated bodies: %v", err)
	}
	if !bytes.Equal(buf, disk[1<<20:1<<20+len(buf)]) {
		t.Fatal("truncated bodies: wrong bytes")
	}
	// Slow answers beyond the attempt timeout: a clear error, then fine.
	b.m.cfg.DemandRetry.Timeout = 200 * time.Millisecond
	tb, _ := b.m.target(context.Background(), "t")
	tb.fast = withRetry(tb.fast.(*retrying).ObjectStore, RetryPolicy{Attempts: 2, Base: 10 * time.Millisecond, Timeout: 200 * time.Millisecond})
	proxy.set(func(p *faultProxy) { p.delay = time.Second })
	_, _, err := b.ds.NS.Read(ino.Ino, buf, 5<<20)
	if err == nil || !strings.Contains(err.Error(), "attempts") {
		t.Fatalf("read through a stalled target: %v", err)
	}
	proxy.set(func(p *faultProxy) { p.delay = 50 * time.Millisecond })
	if _, _, err := b.ds.NS.Read(ino.Ino, buf, 5<<20); err != nil || !bytes.Equal(buf, disk[5<<20:5<<20+len(buf)]) {
		t.Fatalf("slow but within the timeout: %v", err)
	}
	proxy.set(func(p *faultProxy) { p.delay = 0; p.fail5xx = 2 })
	if _, _, err := b.ds.NS.Read(ino.Ino, buf, 6<<20); err != nil || !bytes.Equal(buf, disk[6<<20:6<<20+len(buf)]) {
		t.Fatalf("read through a 503 burst: %v", err)
	}
	if got, err := b.readFile("vm.img"); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("whole file: %v", err)
	}
}
