package objex

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"
)

// TestVerifyAndPrune: verify finds a sound target sound and names a
// damaged object; prune removes only what no manifest names.
func TestVerifyAndPrune(t *testing.T) {
	const bs = 4 << 10
	turl := "file://" + t.TempDir() + "/target"
	a := newNode(t, bs)
	disk := vdisk(7, 1024, bs)
	a.writeFile("f", disk)
	s1 := a.snapshot("g", "f")
	a.addTarget("t", turl, StoreOptions{}, keyFile(t))
	tg, _ := a.m.target(context.Background(), "t")
	tg.osize = 1 << 20
	a.export(s1.Seq, "t", "one")
	ino, _ := a.ds.NS.LookupPath("f")
	fresh := make([]byte, 960*bs) // most of the file is new, incompressible
	rand.Read(fresh)
	a.writeAt(ino.Ino, fresh, 0)
	s2 := a.snapshot("g")
	a.export(s2.Seq, "t", "two")
	ctx := context.Background()
	rep, err := a.m.Verify(ctx, "t", true)
	if err != nil || len(rep.Problems) != 0 || rep.Snapshots != 2 || rep.Chunks == 0 || rep.Bytes == 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	objs := listKeys(t, a, "t", dataPrefix)
	p := onDisk(t, turl, objs[0].Key)
	orig, _ := os.ReadFile(p)
	bad := append([]byte(nil), orig...)
	bad[len(bad)-100] ^= 1
	os.WriteFile(p, bad, 0o600)
	if rep, err := a.m.Verify(ctx, "t", false); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("shallow verify of a flipped byte: %+v %v", rep, err)
	}
	if rep, err := a.m.Verify(ctx, "t", true); err != nil || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0], objs[0].Key[len(dataPrefix)+3:]) {
		t.Fatalf("deep verify of a flipped byte: %+v %v", rep, err)
	}
	os.WriteFile(p, orig, 0o600)

	// Nothing is unreferenced yet.
	if pr, err := a.m.Prune(ctx, "t", PruneOptions{Grace: time.Nanosecond}); err != nil || pr.Objects != 0 {
		t.Fatalf("prune with every object in use: %+v %v", pr, err)
	}
	// Drop the first snapshot: the objects only it names go.
	if err := a.m.DeleteSnapshot(ctx, "t", "one"); err != nil {
		t.Fatal(err)
	}
	pr, err := a.m.Prune(ctx, "t", PruneOptions{DryRun: true, Grace: time.Nanosecond})
	if err != nil || pr.Objects == 0 {
		t.Fatalf("dry run: %+v %v", pr, err)
	}
	if n := len(listKeys(t, a, "t", dataPrefix)); n != len(objs) {
		t.Fatal("a dry run deleted objects")
	}
	if pr2, err := a.m.Prune(ctx, "t", PruneOptions{}); err != nil || pr2.Objects != 0 {
		t.Fatalf("prune within the grace period: %+v %v", pr2, err)
	}
	if pr2, err := a.m.Prune(ctx, "t", PruneOptions{Grace: time.Nanosecond}); err != nil || pr2 != pr {
		t.Fatalf("prune: %+v, dry run said %+v, %v", pr2, pr, err)
	}
	if rep, err := a.m.Verify(ctx, "t", true); err != nil || len(rep.Problems) != 0 || rep.Snapshots != 1 {
		t.Fatalf("verify after prune: %+v %v", rep, err)
	}
	b := newNode(t, bs)
	b.addTarget("t", turl, StoreOptions{}, a.m.mustKeyFile(t, "t"))
	if _, _, err := b.m.Import(ctx, "t", "two", "", "f"); err != nil {
		t.Fatal(err)
	}
	want := append(fresh, disk[960*bs:]...)
	if got, err := b.readFile("f"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("import after prune: %v", err)
	}
	// A later export must not name pruned chunks: it sends them again.
	a.export(s1.Seq, "t", "one-again")
	c := newNode(t, bs)
	c.addTarget("t", turl, StoreOptions{}, a.m.mustKeyFile(t, "t"))
	if _, _, err := c.m.Import(ctx, "t", "one-again", "", "f"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.readFile("f"); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("re-export after prune: %v", err)
	}
}

func (m *Manager) mustKeyFile(t *testing.T, name string) string {
	tg, err := m.target(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return tg.cfg.KeyFile
}

// TestExportResume: an export stopped midway (Close) resumes at the next
// Attach and sends only what was not sent.
func TestExportResume(t *testing.T) {
	const bs = 4 << 10
	turl := "file://" + t.TempDir() + "/target"
	a := newNode(t, bs)
	disk := vdisk(9, 4096, bs)
	a.writeFile("f", disk)
	s := a.snapshot("g", "f")
	a.addTarget("t", turl, StoreOptions{}, keyFile(t))
	if err := a.m.SetBandwidth("t", 4<<20); err != nil {
		t.Fatal(err)
	}
	tg, _ := a.m.target(context.Background(), "t")
	tg.osize = 1 << 20
	j, err := a.m.Export(context.Background(), s.Seq, "t", ExportOptions{Name: "snap"})
	if err != nil {
		t.Fatal(err)
	}
	for a.m.Stats().BytesUploaded < 3<<20 {
		time.Sleep(20 * time.Millisecond)
	}
	first := a.m.Stats().BytesUploaded
	a.reopen() // Close stops the export; Attach resumes it
	if j.Info().State != JobFailed {
		t.Fatalf("stopped job: %+v", j.Info())
	}
	if n := len(listKeys(t, a, "t", manifestPrefix)); n != 0 {
		t.Fatal("a half-done export is visible")
	}
	jobs := a.m.Jobs()
	if len(jobs) != 1 || jobs[0].Kind != "export" {
		t.Fatalf("jobs after reopen: %+v", jobs)
	}
	rj, ok := a.m.Job(jobs[0].ID)
	if !ok {
		t.Fatal("the export did not resume")
	}
	waitJob(t, rj)
	second := a.m.Stats().BytesUploaded
	full := int64(0)
	for _, o := range listKeys(t, a, "t", "ox1/") {
		full += o.Size
	}
	t.Logf("first run %d bytes, resumed run %d, target holds %d", first, second, full)
	// At most the object in flight at the stop is sent twice.
	if first+second > full+2<<20 {
		t.Fatalf("resume re-sent too much: %d + %d for %d", first, second, full)
	}
	b := newNode(t, bs)
	b.addTarget("t", turl, StoreOptions{}, a.m.mustKeyFile(t, "t"))
	if _, _, err := b.m.Import(context.Background(), "t", "snap", "", "f"); err != nil {
		t.Fatal(err)
	}
	if got, err := b.readFile("f"); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("resumed export: %v", err)
	}
	// Exporting again is a no-op that reports success.
	if info := a.export(s.Seq, "t", "snap"); info.State != JobDone {
		t.Fatalf("%+v", info)
	}
}

// TestThickenResumeAndLimit: a thickener holds the bandwidth limit, stops
// at Close, resumes after a restart, and reads go ahead of it.
func TestThickenResumeAndLimit(t *testing.T) {
	const bs = 4 << 10
	turl := "file://" + t.TempDir() + "/target"
	a := newNode(t, bs)
	disk := vdisk(10, 2048, bs)
	for i := 0; i < len(disk); i += bs { // no holes, no duplicates
		disk[i] = byte(i/bs) | 1
		disk[i+1] = byte(i / bs >> 8)
	}
	a.writeFile("f", disk)
	s := a.snapshot("g", "f")
	a.addTarget("t", turl, StoreOptions{}, keyFile(t))
	a.export(s.Seq, "t", "snap")

	b := newNode(t, bs)
	b.m.cfg.ThickenBatch = 16
	b.addTarget("t", turl, StoreOptions{}, a.m.mustKeyFile(t, "t"))
	const rate = 1 << 20
	if err := b.m.SetBandwidth("t", rate); err != nil {
		t.Fatal(err)
	}
	_, j, err := b.m.Import(context.Background(), "t", "snap", "", "f")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	// A demand read meanwhile is not held back by the limit.
	ino, _ := b.ds.NS.LookupPath("f")
	buf := make([]byte, 1<<20)
	start := time.Now()
	if _, _, err := b.ds.NS.Read(ino.Ino, buf, int64(len(disk))-int64(len(buf))); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Fatalf("a 1 MiB demand read took %v under a 1 MiB/s thickener", el)
	}
	if !bytes.Equal(buf, disk[len(disk)-len(buf):]) {
		t.Fatal("demand read: wrong bytes")
	}
	in := j.Info()
	measured := float64(in.BytesMoved) / time.Duration(time.Now().UnixNano()-in.Started).Seconds()
	t.Logf("thickening at %.0f B/s under a limit of %d B/s (%.1f%%)", measured, rate, 100*measured/rate)
	if measured > rate*1.1 || measured < rate*0.7 {
		t.Fatalf("thickening rate %.0f B/s, limit %d", measured, rate)
	}
	b.reopen()
	jobs := b.m.Jobs()
	var rj *Job
	for _, ji := range jobs {
		if ji.Kind == "import" {
			rj, _ = b.m.Job(ji.ID)
		}
	}
	if rj == nil {
		t.Fatalf("thickener did not resume: %+v", jobs)
	}
	if err := b.m.SetBandwidth("t", 0); err != nil {
		t.Fatal(err)
	}
	waitJob(t, rj)
	// Thick: the target can go away.
	os.RemoveAll(strings.TrimPrefix(turl, "file://"))
	b.reopen()
	if got, err := b.readFile("f"); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("thick file without its target: %v", err)
	}
}
