package objex

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillChild is the child process of TestSIGKILL: it opens the
// datastore in $OX_KILL_CHILD, which resumes its jobs at Attach, and
// waits to be killed.
func TestKillChild(t *testing.T) {
	dir := os.Getenv("OX_KILL_CHILD")
	if dir == "" {
		t.Skip("only run as TestSIGKILL's child")
	}
	n := &node{t: t, dir: dir, cfg: Config{Dir: filepath.Join(dir, "data", "ox"), Retry: fastRetry()}}
	n.open()
	time.Sleep(2 * time.Minute)
	t.Fatal("not killed")
}

// startChild runs the datastore in dir in a child process.
func startChild(t *testing.T, dir string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$")
	cmd.Env = append(os.Environ(), "OX_KILL_CHILD="+dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// countObjects counts the data objects and tells whether a manifest
// exists, through a store of its own (the node under test is closed).
func countObjects(t *testing.T, url string, opts StoreOptions) (n int, manifest bool) {
	t.Helper()
	st, err := OpenStore(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.List(context.Background(), dataPrefix, func(o ObjectInfo) error {
		if !strings.Contains(o.Key, ".tmp-") {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.List(context.Background(), manifestPrefix, func(ObjectInfo) error {
		manifest = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n, manifest
}

// TestSIGKILL: a process killed with SIGKILL mid-export and mid-thicken
// leaves a datastore and a target that resume where they stopped: the
// export commits with nothing visible before, the import reads right and
// thickens to the end. Against file:// and versitygw (the child reaches
// the parent's versitygw through the target's stored endpoint). The e2e
// scenario ox does the same to a real dstore serve.
func TestSIGKILL(t *testing.T) {
	if os.Getenv("OX_KILL_CHILD") != "" {
		t.Skip("child")
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) { testSIGKILL(t, be) })
	}
}

func testSIGKILL(t *testing.T, be backend) {
	const bs = 4 << 10
	turl, topts := be.url(t), be.opts(t)
	kf := keyFile(t)
	disk := vdisk(11, 4096, bs)
	for i := 0; i < len(disk); i += bs { // every block distinct data
		disk[i], disk[i+1], disk[i+2] = byte(i/bs)|1, byte(i/bs>>8), 0xAB
	}

	// Export: queue it, stop, and let a child run it slowly.
	a := newNode(t, bs)
	a.writeFile("vm.img", disk)
	s := a.snapshot("g", "vm.img")
	a.addTarget("t", turl, topts, kf)
	if err := a.m.SetBandwidth("t", 2<<20); err != nil {
		t.Fatal(err)
	}
	tg, _ := a.m.target(context.Background(), "t")
	tg.cfg.ObjectSize = 1 << 20
	if err := a.m.st.putJSON(bTargets, []byte("t"), &tg.cfg); err != nil {
		t.Fatal(err)
	}
	a.m.mu.Lock()
	delete(a.m.targets, "t") // reopen with the small object size
	a.m.mu.Unlock()
	if _, err := a.m.Export(context.Background(), s.Seq, "t", ExportOptions{Name: "snap"}); err != nil {
		t.Fatal(err)
	}
	a.close()
	child := startChild(t, a.dir)
	deadline := time.Now().Add(time.Minute)
	for n, _ := countObjects(t, turl, topts); n < 3 && time.Now().Before(deadline); n, _ = countObjects(t, turl, topts) {
		time.Sleep(10 * time.Millisecond)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	n, manifest := countObjects(t, turl, topts)
	if n < 3 || n > 10 {
		t.Fatalf("%d objects when the child was killed", n)
	}
	if manifest {
		t.Fatal("a manifest exists before the export finished")
	}
	a.open() // Attach resumes the export
	if err := a.m.SetBandwidth("t", 0); err != nil {
		t.Fatal(err)
	}
	var job *Job
	for _, ji := range a.m.Jobs() {
		if ji.Kind == "export" {
			job, _ = a.m.Job(ji.ID)
		}
	}
	if job == nil {
		t.Fatalf("export did not resume: %+v", a.m.Jobs())
	}
	waitJob(t, job)
	if rep, err := a.m.Verify(context.Background(), "t", true); err != nil || len(rep.Problems) > 0 {
		t.Fatalf("verify after a killed export: %+v %v", rep, err)
	}

	// Thickening: import, stop, let a child thicken slowly, kill it.
	b := newNode(t, bs)
	b.addTarget("t", turl, topts, kf)
	if err := b.m.SetBandwidth("t", 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.m.Import(context.Background(), "t", "snap", "", "vm.img"); err != nil {
		t.Fatal(err)
	}
	b.close()
	child = startChild(t, b.dir)
	time.Sleep(2 * time.Second)
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	b.open()
	if err := b.m.SetBandwidth("t", 0); err != nil {
		t.Fatal(err)
	}
	job = nil
	for _, ji := range b.m.Jobs() {
		if ji.Kind == "import" {
			job, _ = b.m.Job(ji.ID)
		}
	}
	if job == nil {
		t.Fatalf("thickener did not resume: %+v", b.m.Jobs())
	}
	waitJob(t, job)
	fetched := b.m.Stats().RemoteBytesFetched
	if fetched >= int64(len(disk)) {
		t.Fatalf("the resumed thickener fetched %d bytes of %d: it started over", fetched, len(disk))
	}
	t.Logf("after the kill the thickener fetched %d of %d bytes", fetched, len(disk))
	b.close()
	b.cfg.Dir = t.TempDir() // thick: no target, no manager state needed
	b.open()
	if got, err := b.readFile("vm.img"); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("thick import after a kill: %v", err)
	}
}
