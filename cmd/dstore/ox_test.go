package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/control"
	"github.com/dstore/dstore/nfsfs"
	"github.com/dstore/dstore/snapstore"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"100M", 100 << 20}, {"10MiB", 10 << 20}, {"50MB/s", 50e6}, {"800KB", 800e3}, {"1G/s", 1 << 30},
		{"2gb", 2e9}, {"4096", 4096}, {"0", 0}, {"unlimited", 0}, {"none", 0}, {"64KiB/s", 64 << 10},
	} {
		if got, err := parseRate(c.in); err != nil || got != c.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "fast", "-5M", "10 Mbit", "1.5M", "MB/s"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) accepted", bad)
		}
	}
}

func randString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

func keyFileFor(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "ox.key")
	if err := os.WriteFile(p, []byte(randString(32)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// withOX opens the datastore as serve does (with its object exchange, so
// imported files read) and runs fn on it.
func withOX(t *testing.T, dir string, fn func(ds *snapstore.Datastore)) {
	t.Helper()
	ds, m, _, err := openDatastore(dir, storeOptions, slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	fn(ds)
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
}

// nfsAddr is where a daemon serves NFS, from what it printed.
func (d *daemonProc) nfsAddr() string {
	d.t.Helper()
	m := regexp.MustCompile(`over NFSv3 on (\S+)\n`).FindStringSubmatch(d.stdout.String())
	if m == nil {
		d.t.Fatalf("serve printed no address: %q", d.stdout.String())
	}
	return m[1]
}

// nfsRead reads a whole file over NFS from the daemon at addr.
func nfsRead(t *testing.T, addr, path string) []byte {
	t.Helper()
	ctx := context.Background()
	c, err := nfsfs.Dial(ctx, addr, nfsfs.ClientOptions{Cred: &nfsfs.AuthUnix{Machine: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fh, err := nfsfs.MountPath(ctx, c, "/")
	if err != nil {
		t.Fatal(err)
	}
	nc := nfsfs.NewNFS3Client(c)
	var attr nfsfs.NFS3Attr
	for _, name := range strings.Split(path, "/") {
		if fh, attr, err = nc.Lookup(ctx, fh, name); err != nil {
			t.Fatalf("NFS LOOKUP %s in %s: %v", name, path, err)
		}
	}
	out := make([]byte, 0, attr.Size)
	buf := make([]byte, 64<<10)
	for {
		n, eof, err := nc.Read(ctx, fh, uint64(len(out)), buf)
		if err != nil {
			t.Fatalf("NFS READ %s at %d: %v", path, len(out), err)
		}
		out = append(out, buf[:n]...)
		if eof || n == 0 {
			return out
		}
	}
}

// waitJobsDone polls jobs --json until every job has ended and returns
// them.
func waitJobsDone(t *testing.T, D []string) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, _ := expect(t, 0, append([]string{"jobs", "--json"}, D...)...)
		js := decode[[]map[string]any](t, out)
		ended := 0
		for _, j := range js {
			if j["state"] == "done" || j["state"] == "failed" {
				ended++
			}
		}
		if ended == len(js) {
			return js
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs did not end: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOXCommands drives target, export, import and jobs through run, with
// the daemon running and without, on a file:// target: outputs, JSON
// fields, exit codes, the imported bytes, exports of group runs, and
// target prune after retention.
func TestOXCommands(t *testing.T) {
	for _, mode := range []string{"daemon", "offline"} {
		t.Run(mode, func(t *testing.T) { testOXCommands(t, mode) })
	}
}

func testOXCommands(t *testing.T, mode string) {
	web := randString(256 << 10)
	small := strings.Repeat("0123456789abcdef", 256) + "a partial last block"
	dir := newStore(t, map[string]string{"vms/web.img": web, "vms/small.img": small})
	var d *daemonProc
	if mode == "daemon" {
		d = startServe(t, dir)
	}
	D := []string{"--data", dir}
	cmd := func(a ...string) []string { return append(a, D...) }
	tdir := t.TempDir() + "/target"
	turl := "file://" + tdir
	kf := keyFileFor(t)

	// Targets.
	out, errOut := expect(t, 0, cmd("target", "add", "nas", turl, "--key-file", kf, "--bandwidth", "50MB/s", "--json")...)
	if mode == "offline" && !strings.Contains(errOut, "no daemon is running") {
		t.Errorf("offline target add: stderr %q lacks the note", errOut)
	}
	tg := decode[map[string]any](t, out)
	if tg["name"] != "nas" || tg["url"] != turl || tg["key_file"] != kf || tg["bandwidth"] != 50e6 || len(tg["id"].(string)) != 32 {
		t.Errorf("target add --json: %s", out)
	}
	for _, bad := range [][]string{
		{"target", "add", "x", turl},
		{"target", "add", "x", turl, "--key-file", kf, "--passphrase-env", "P"},
		{"target", "add", "x", "ftp://host/dir", "--key-file", kf},
		{"target", "add", "x", "file://relative/dir", "--key-file", kf},
		{"target", "add", "x/y", turl, "--key-file", kf},
		{"target", "add", "x", turl, "--key-file", kf, "--secret-key", "s"},
		{"target", "add", "x", turl, "--key-file", kf, "--bandwidth", "fast"},
		{"target", "add", "x", "s3://user:pw@bucket/p", "--key-file", kf},
		{"target", "add", "x"},
		{"target", "set-bandwidth", "nas"},
		{"target", "set-bandwidth", "nas", "quick"},
		{"target", "edit", "nas"},
		{"target", "rekey", "nas"},
		{"target", "nosuch"},
		{"export", "notanid", "nas"},
		{"export", "1"},
		{"export", "1", "nas", "--name", "a:b"},
		{"import", "nas", "snap"},
		{"import", "nas", "snap:", "x"},
		{"import", "nas", "bad/name", "x"},
		{"import", "nas", "snap:a", "/"},
		{"jobs", "extra"},
	} {
		_, errOut := expect(t, 2, cmd(bad...)...)
		if strings.Contains(errOut, "no daemon") {
			t.Errorf("dstore %s: a usage error reached the datastore: %q", strings.Join(bad, " "), errOut)
		}
	}
	_, errOut = expect(t, 1, cmd("target", "add", "nas", turl, "--key-file", kf)...)
	if !strings.Contains(errOut, `dstore: target "nas" exists`) {
		t.Errorf("target add twice: %q", errOut)
	}
	out, _ = expect(t, 0, cmd("target", "list")...)
	if !strings.HasPrefix(out, "TARGET") || !strings.Contains(out, "\nnas ") || !strings.Contains(out, "47.68 MiB/s") || !strings.Contains(out, "key file "+kf) {
		t.Errorf("target list: %q", out)
	}

	// Export of a snapshot, waited for.
	expect(t, 0, cmd("group", "create", "vms", "--match", "vms/*", "--keep-last", "1")...)
	out, _ = expect(t, 0, cmd("snapshot", "create", "vms", "--json")...)
	id1 := decode[control.Snapshot](t, out).ID
	out, _ = expect(t, 0, cmd("export", id1, "nas", "--json")...)
	ej := decode[map[string]any](t, out)
	total := float64(len(web) + len(small))
	if ej["kind"] != "export" || ej["state"] != "done" || ej["target"] != "nas" || ej["snapshot"] != "vms@"+id1 ||
		ej["bytes_total"] != total || ej["bytes_done"] != total || ej["bytes_moved"].(float64) < float64(len(web)) || ej["id"].(float64) < 1 {
		t.Errorf("export --json: %s", out)
	}
	out, _ = expect(t, 0, cmd("export", id1, "nas", "--name", "keep-me")...)
	if want := "exported " + id1 + " to target nas as keep-me: 260.02 KiB, "; !strings.HasPrefix(out, want) {
		t.Errorf("export: %q, want it to start %q", out, want)
	}
	_, errOut = expect(t, 1, cmd("export", "999", "nas")...)
	if !strings.Contains(errOut, "dstore: snapshot 999 not found") {
		t.Errorf("export 999: %q", errOut)
	}
	_, errOut = expect(t, 1, cmd("export", id1, "nosuch")...)
	if !strings.Contains(errOut, `dstore: unknown target "nosuch"`) {
		t.Errorf("export to nosuch: %q", errOut)
	}
	out, _ = expect(t, 0, cmd("target", "snapshots", "nas", "--json")...)
	ts := decode[[]control.TargetSnapshot](t, out)
	if len(ts) != 2 || ts[0].Name != "vms@"+id1 || ts[1].Name != "keep-me" || ts[0].Snapshot != id1 || ts[0].Group != "vms" ||
		!ts[0].ThisDatastore || ts[0].ByGroup || len(ts[0].Files) != 2 || ts[0].Files[1].Path != "vms/web.img" || ts[0].Files[1].Size != int64(len(web)) {
		t.Errorf("target snapshots --json: %s", out)
	}
	out, _ = expect(t, 0, cmd("target", "snapshots", "nas")...)
	if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "vms@"+id1+" ") || !strings.Contains(out, "this datastore") {
		t.Errorf("target snapshots: %q", out)
	}

	// Import: one file, and every file under a directory.
	out, _ = expect(t, 0, cmd("import", "nas", "vms@"+id1+":vms/web.img", "web-copy.img", "--wait", "--json")...)
	ir := decode[importOutput](t, out)
	if len(ir.Files) != 1 || ir.Files[0].Path != "web-copy.img" || ir.Files[0].Member != "vms/web.img" || ir.Files[0].Size != uint64(len(web)) ||
		len(ir.Jobs) != 1 || ir.Jobs[0].State != "done" || ir.Jobs[0].Kind != "import" || ir.Jobs[0].BytesDone != int64(len(web)) {
		t.Errorf("import --wait --json: %s", out)
	}
	out, errOut = expect(t, 0, cmd("import", "nas", "vms@"+id1, "restored")...)
	if !strings.Contains(out, "imported vms@"+id1+":vms/web.img of target nas as restored/vms/web.img (256 KiB, job ") ||
		!strings.Contains(out, "as restored/vms/small.img (4.02 KiB, job ") {
		t.Errorf("import of every file: %q", out)
	}
	if mode == "offline" && !strings.Contains(errOut, "resumes when dstore serve starts") {
		t.Errorf("offline import without --wait: stderr %q", errOut)
	}
	_, errOut = expect(t, 1, cmd("import", "nas", "nosuch", "x")...)
	if !strings.Contains(errOut, `dstore: target nas has no snapshot "nosuch" (see dstore target snapshots nas)`) {
		t.Errorf("import of a missing snapshot: %q", errOut)
	}
	_, errOut = expect(t, 1, cmd("import", "nas", "vms@"+id1+":vms/web.img", "web-copy.img")...)
	if !strings.Contains(errOut, "dstore: ") || !strings.Contains(errOut, "exists") {
		t.Errorf("import over an existing file: %q", errOut)
	}

	// Jobs.
	js := waitJobsDone(t, D)
	var kinds []string
	for _, j := range js {
		for _, f := range []string{"id", "kind", "state", "bytes_done", "bytes_total", "target", "snapshot", "rate"} {
			if _, ok := j[f]; !ok {
				t.Errorf("jobs --json: a job without %q: %v", f, j)
			}
		}
		kinds = append(kinds, fmt.Sprint(j["kind"], " ", j["state"]))
	}
	if js[0]["bytes_total"] != total || js[0]["bytes_done"] != total || js[0]["target"] != "nas" {
		t.Errorf("jobs --json: the first export: %v", js[0])
	}
	want := []string{"export done", "export done"}
	if mode == "daemon" {
		// Imports are jobs of the daemon's run (thickening); an offline
		// command only lists its own.
		want = append(want, "import done", "import done", "import done")
	}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("jobs: %v, want %v", kinds, want)
	}
	out, _ = expect(t, 0, cmd("jobs")...)
	if !strings.HasPrefix(out, "JOB") || !strings.Contains(out, "export  done") {
		t.Errorf("jobs: %q", out)
	}

	// A group with the target: group run exports; retention, then target
	// prune, removes what retention deleted (and only that).
	expect(t, 0, cmd("group", "edit", "vms", "--target", "nas")...)
	objects := 1
	if mode == "offline" {
		// New data, sent slowly enough that the export cannot end before
		// group run does.
		withNS(t, dir, func(ns *snapstore.Namespace) { putFile(t, ns, "vms/web.img", randString(256<<10)) })
		expect(t, 0, cmd("target", "set-bandwidth", "nas", "64KiB")...)
		objects = 2
	}
	out, _ = expect(t, 0, cmd("group", "run", "vms", "--json")...)
	r1 := decode[control.RunResult](t, out)
	if len(r1.Exports) != 1 || r1.Exports[0].Target != "nas" || r1.Exports[0].Job == 0 || r1.Exports[0].Name != "vms@"+r1.ID || !reflect.DeepEqual(r1.Deleted, []string{id1}) {
		t.Fatalf("group run --json: %s", out)
	}
	if mode == "daemon" {
		waitJobsDone(t, D)
	} else {
		// The export stopped when group run ended: it waits for the
		// daemon (queued: an offline command resumes nothing), and an
		// export of the same snapshot runs it.
		out, _ = expect(t, 0, cmd("jobs", "--json")...)
		js := decode[[]control.Job](t, out)
		if last := js[len(js)-1]; last.ID != r1.Exports[0].Job || last.State != "queued" || last.Snapshot != "vms@"+r1.ID {
			t.Errorf("jobs --json after an offline group run: %s", out)
		}
		expect(t, 0, cmd("target", "set-bandwidth", "nas", "unlimited")...)
		out, _ = expect(t, 0, cmd("export", r1.ID, "nas", "--json")...)
		if j := decode[control.Job](t, out); j.State != "done" || j.ID != r1.Exports[0].Job {
			t.Errorf("export of the group run's snapshot: %s", out)
		}
	}
	out, _ = expect(t, 0, cmd("group", "run", "vms")...)
	if !strings.Contains(out, "deleted snapshot "+r1.ID+"\n") || !strings.Contains(out, "export to nas: job ") {
		t.Errorf("group run: %q", out)
	}
	r2 := strings.Fields(out)[1]
	if mode == "daemon" {
		waitJobsDone(t, D)
	} else {
		expect(t, 0, cmd("export", r2, "nas")...)
	}
	out, _ = expect(t, 0, cmd("target", "snapshots", "nas", "--json")...)
	var names []string
	for _, s := range decode[[]control.TargetSnapshot](t, out) {
		names = append(names, s.Name)
		if s.ByGroup != (s.Name == "vms@"+r1.ID || s.Name == "vms@"+r2) {
			t.Errorf("target snapshots: %s by_group %v", s.Name, s.ByGroup)
		}
	}
	if want := []string{"vms@" + id1, "keep-me", "vms@" + r1.ID, "vms@" + r2}; !reflect.DeepEqual(names, want) {
		t.Fatalf("target snapshots: %v, want %v", names, want)
	}
	out, _ = expect(t, 0, cmd("target", "prune", "nas", "--dry-run", "--json")...)
	dry := decode[control.TargetPruneResult](t, out)
	var plan []string
	for _, p := range dry.Plan {
		plan = append(plan, fmt.Sprintf("%s %v %s", p.Name, p.Keep, p.Reason))
	}
	if want := []string{"vms@" + id1 + " true exported by hand", "keep-me true exported by hand", "vms@" + r1.ID + " false retention deleted " + r1.ID,
		"vms@" + r2 + " true kept here"}; !reflect.DeepEqual(plan, want) || !dry.DryRun || len(dry.DeletedSnapshots) != 0 {
		t.Errorf("target prune --dry-run: %v, want %v", plan, want)
	}
	out, _ = expect(t, 0, cmd("target", "prune", "nas", "--grace", "0")...)
	if !strings.Contains(out, "delete  vms@"+r1.ID) || !strings.Contains(out, "deleted 1 of 4 snapshots") {
		t.Errorf("target prune: %q", out)
	}
	out, _ = expect(t, 0, cmd("target", "snapshots", "nas", "--json")...)
	names = nil
	for _, s := range decode[[]control.TargetSnapshot](t, out) {
		names = append(names, s.Name)
	}
	if want := []string{"vms@" + id1, "keep-me", "vms@" + r2}; !reflect.DeepEqual(names, want) {
		t.Errorf("after target prune: %v, want %v", names, want)
	}

	// Verify, bandwidth, rekey, remove.
	out, _ = expect(t, 0, cmd("target", "verify", "nas", "--deep", "--json")...)
	if v := decode[control.TargetVerifyResult](t, out); v.Snapshots != 3 || v.Objects != objects || v.Bytes == 0 || len(v.Problems) != 0 {
		t.Errorf("target verify --deep --json: %s", out)
	}
	out, _ = expect(t, 0, cmd("target", "verify", "nas")...)
	if !strings.Contains(out, "target nas: checked 3 snapshots, "+plural(objects, "object")+", ") || !strings.HasSuffix(out, "no problems found\n") {
		t.Errorf("target verify: %q", out)
	}
	out, _ = expect(t, 0, cmd("target", "set-bandwidth", "nas", "10MiB")...)
	if out != "target nas: bandwidth 10 MiB/s\n" {
		t.Errorf("target set-bandwidth: %q", out)
	}
	out, _ = expect(t, 0, cmd("target", "edit", "nas", "--bandwidth", "unlimited", "--json")...)
	if decode[control.Target](t, out).Bandwidth != 0 {
		t.Errorf("target edit --bandwidth unlimited: %s", out)
	}
	kf2 := keyFileFor(t)
	out, _ = expect(t, 0, cmd("target", "rekey", "nas", "--key-file", kf2)...)
	if !strings.Contains(out, "key file "+kf2) {
		t.Errorf("target rekey: %q", out)
	}
	_, errOut = expect(t, 1, cmd("target", "remove", "nas")...)
	if !strings.Contains(errOut, `target "nas": groups export to it (vms)`) {
		t.Errorf("target remove while a group exports to it: %q", errOut)
	}
	expect(t, 0, cmd("group", "edit", "vms", "--no-target")...)
	out, _ = expect(t, 0, cmd("target", "remove", "nas")...)
	if out != "removed target nas\n" {
		t.Errorf("target remove: %q", out)
	}
	out, _ = expect(t, 0, cmd("target", "list", "--json")...)
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("target list after remove: %s", out)
	}
	// The new key file joins the target again; the old one does not.
	_, errOut = expect(t, 1, cmd("target", "add", "again", turl, "--key-file", kf)...)
	if !strings.Contains(errOut, "wrong key") {
		t.Errorf("target add with the old key: %q", errOut)
	}
	expect(t, 0, cmd("target", "add", "again", turl, "--key-file", kf2)...)

	ops := map[string]int{}
	for _, a := range readAuditLog(t, dir) {
		ops[a.Operation]++
	}
	exports, bws := 6, 2 // exports: 4 by hand (2 done, 2 refused) and 2 by group runs
	if mode == "offline" {
		exports += 2 // the group runs' exports, run again to finish them
		bws += 2
	}
	for op, n := range map[string]int{"target.add": 4, "export": exports, "import": 4, "target.prune": 2, "target.set_bandwidth": bws,
		"target.rekey": 1, "target.remove": 2} {
		if ops[op] != n {
			t.Errorf("audit log: %d %s records, want %d (%v)", ops[op], op, n, ops)
		}
	}
	if ops["jobs"]+ops["target.list"]+ops["target.snapshots"]+ops["target.verify"] != 0 {
		t.Errorf("audit log records reads: %v", ops)
	}

	// The imported files hold the snapshot's bytes.
	if d != nil {
		if got := string(nfsRead(t, d.nfsAddr(), "restored/vms/web.img")); got != web {
			t.Error("restored/vms/web.img read over NFS differs from the snapshot's")
		}
		d.stop()
	}
	withOX(t, dir, func(ds *snapstore.Datastore) {
		for p, want := range map[string]string{"web-copy.img": web, "restored/vms/web.img": web, "restored/vms/small.img": small} {
			if got := getFile(t, ds.NS, p); got != want {
				t.Errorf("%s differs from the snapshot's", p)
			}
		}
	})
}

// TestImportElsewhere: a fresh datastore with its daemon joins a target
// another datastore exported to, imports a snapshot, and reads it over
// NFS: the bytes are the snapshot's, and status reports what was fetched.
func TestImportElsewhere(t *testing.T) {
	disk := randString(512 << 10)
	a := newStore(t, map[string]string{"disk.img": disk})
	A := []string{"--data", a}
	turl := "file://" + t.TempDir() + "/target"
	kf := keyFileFor(t)
	expect(t, 0, append([]string{"target", "add", "site", turl, "--key-file", kf}, A...)...)
	expect(t, 0, append([]string{"group", "create", "g", "--match", "disk.img"}, A...)...)
	out, _ := expect(t, 0, append([]string{"snapshot", "create", "g", "--json"}, A...)...)
	id := decode[control.Snapshot](t, out).ID
	expect(t, 0, append([]string{"export", id, "site"}, A...)...)

	b := newStore(t, nil)
	B := []string{"--data", b}
	d := startServe(t, b)
	expect(t, 0, append([]string{"target", "add", "site", turl, "--key-file", kf}, B...)...)
	out, _ = expect(t, 0, append([]string{"target", "snapshots", "site", "--json"}, B...)...)
	ts := decode[[]control.TargetSnapshot](t, out)
	if len(ts) != 1 || ts[0].ThisDatastore || ts[0].Snapshot != id {
		t.Fatalf("target snapshots from the other datastore: %s", out)
	}
	out, _ = expect(t, 0, append([]string{"status", "--json"}, B...)...)
	if st := decode[map[string]any](t, out); st["remote_bytes_fetched"] != 0.0 {
		t.Errorf("status before any read: %s", out)
	}
	expect(t, 0, append([]string{"import", "site", "g@" + id + ":disk.img", "disk.img"}, B...)...)
	// The parent directory is missing: a single import makes none.
	_, errOut := expect(t, 1, append([]string{"import", "site", "g@" + id + ":disk.img", "nodir/disk.img"}, B...)...)
	if !strings.Contains(errOut, "dstore: ") {
		t.Errorf("import into a missing directory: %q", errOut)
	}
	got := nfsRead(t, d.nfsAddr(), "disk.img")
	if string(got) != disk {
		t.Fatalf("the import read over NFS: %d bytes, differs from the snapshot's %d", len(got), len(disk))
	}
	out, _ = expect(t, 0, append([]string{"status", "--json"}, B...)...)
	st := decode[map[string]any](t, out)
	fetched, _ := st["remote_bytes_fetched"].(float64)
	if fetched <= 0 {
		t.Errorf("status after reading an import: remote_bytes_fetched %v", st["remote_bytes_fetched"])
	}
	out, _ = expect(t, 0, append([]string{"status"}, B...)...)
	if !strings.Contains(out, "fetched from targets") {
		t.Errorf("status: %q", out)
	}
}

// The S3 tests run against versitygw, as objex's do: .cache/bin/versitygw
// (make test installs it) or $DSTORE_VERSITYGW; without it they skip,
// except under CI=true.
const (
	gwAccess = "dstore-cli-test-access"
	gwSecret = "dstore-cli-SECRET-0123456789abcdef"
)

func startVersitygw(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("DSTORE_VERSITYGW")
	if bin == "" {
		if p, err := filepath.Abs("../../.cache/bin/versitygw"); err == nil {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		if p, err := exec.LookPath("versitygw"); err == nil {
			bin = p
		}
	}
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("versitygw not found (make test installs it into .cache/bin); required under CI=true")
		}
		t.Skip("versitygw not found")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--access", gwAccess, "--secret", gwSecret, "--port", addr, "--quiet", "--health", "/health", "posix", t.TempDir())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	endpoint := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := http.Get(endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return endpoint
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not become healthy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOXSecrets: an s3:// target (versitygw) added with --secret-key,
// and one with the credentials in the environment, work through the
// daemon, and the secret is in no output, no JSON, no log line and not in
// the audit log; a wrong secret fails with an error that names the store
// and not the secret.
func TestOXSecrets(t *testing.T) {
	endpoint := startVersitygw(t)
	dir := newStore(t, map[string]string{"disk.img": randString(128 << 10)})
	d := startServe(t, dir)
	D := []string{"--data", dir}
	var outputs []string
	run := func(code int, a ...string) string {
		t.Helper()
		out, errOut := expect(t, code, append(a, D...)...)
		outputs = append(outputs, out, errOut)
		return out
	}
	kf := keyFileFor(t)
	out := run(0, "target", "add", "s3", "s3://dstore-cli-test/some/prefix", "--endpoint", endpoint, "--region", "us-east-1",
		"--access-key", gwAccess, "--secret-key", gwSecret, "--key-file", kf, "--json")
	if tg := decode[control.Target](t, out); tg.Endpoint != endpoint || tg.URL != "s3://dstore-cli-test/some/prefix" {
		t.Errorf("target add --json: %s", out)
	}
	// From the environment of the command (not the daemon's).
	t.Setenv("AWS_ENDPOINT_URL", endpoint)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", gwAccess)
	t.Setenv("AWS_SECRET_ACCESS_KEY", gwSecret)
	run(0, "target", "add", "s3env", "s3://dstore-cli-test-env", "--key-file", kf)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	wrong := gwSecret + "-wrong"
	run(1, "target", "add", "bad", "s3://dstore-cli-test-bad", "--endpoint", endpoint, "--access-key", gwAccess, "--secret-key", wrong, "--key-file", kf)
	if msg := outputs[len(outputs)-1]; !strings.Contains(msg, "dstore-cli-test-bad") || strings.Contains(msg, wrong) {
		t.Errorf("target add with a wrong secret: %q", msg)
	}
	run(0, "group", "create", "g", "--match", "disk.img", "--target", "s3", "--target", "s3env")
	out = run(0, "group", "run", "g", "--json")
	r := decode[control.RunResult](t, out)
	if len(r.Exports) != 2 || r.Exports[0].Error != "" || r.Exports[1].Error != "" {
		t.Fatalf("group run: %s", out)
	}
	waitJobsDone(t, D)
	run(0, "export", r.ID, "s3", "--name", "by-hand", "--json")
	for _, tg := range []string{"s3", "s3env"} {
		out = run(0, "target", "snapshots", tg, "--json")
		if ss := decode[[]control.TargetSnapshot](t, out); len(ss) == 0 || ss[0].Name != "g@"+r.ID {
			t.Errorf("target snapshots %s: %s", tg, out)
		}
		run(0, "target", "verify", tg, "--json")
		run(0, "target", "prune", tg, "--json")
	}
	run(0, "import", "s3", "by-hand:disk.img", "copy.img", "--wait", "--json")
	run(0, "target", "list", "--json")
	run(0, "target", "list")
	run(0, "jobs", "--json")
	run(0, "jobs")
	run(0, "status", "--json")
	run(0, "group", "show", "g", "--json")
	d.stop()
	outputs = append(outputs, d.stdout.String(), d.stderr.String())
	audit, err := os.ReadFile(filepath.Join(dir, control.AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{gwSecret, wrong} {
		if bytes.Contains(audit, []byte(s)) {
			t.Errorf("the audit log holds the secret %q", s)
		}
		for _, o := range outputs {
			if strings.Contains(o, s) {
				t.Errorf("an output holds the secret %q:\n%s", s, o)
			}
		}
	}
	// The audit log shows that one was given, and the rest of the call.
	var adds []map[string]any
	for _, a := range readAuditLog(t, dir) {
		if a.Operation == "target.add" {
			var m map[string]any
			if err := json.Unmarshal(a.Arguments, &m); err != nil {
				t.Fatal(err)
			}
			adds = append(adds, m)
		}
	}
	if len(adds) != 3 || adds[0]["secret_key"] != "(redacted)" || adds[0]["access_key"] != "(redacted)" || adds[0]["endpoint"] != endpoint ||
		adds[1]["secret_key"] != "(redacted)" || adds[0]["name"] != "s3" {
		t.Errorf("target.add in the audit log: %v", adds)
	}
	if len(outputs) < 40 {
		t.Errorf("only %d outputs checked", len(outputs))
	}
}

func TestProgressLine(t *testing.T) {
	for _, c := range []struct {
		what               string
		ids                []uint64
		done, total, moved int64
		rate               float64
		want               string
	}{
		{"export", []uint64{3}, 0, 0, 0, 0, "export job 3 [------------------------]   0% 0 B of 0 B, 0 B sent at 0 B/s"},
		{"export", []uint64{3}, 12 << 20, 48 << 20, 9 << 20, 5 << 20, "export job 3 [######------------------]  25% 12 MiB of 48 MiB, 9 MiB sent at 5 MiB/s"},
		{"import", []uint64{4, 5}, 10, 10, 5, 1536, "import jobs 4,5 [########################] 100% 10 B of 10 B, 5 B fetched at 1.50 KiB/s"},
	} {
		if got := progressLine(c.what, c.ids, c.done, c.total, c.moved, c.rate); got != c.want {
			t.Errorf("progressLine = %q, want %q", got, c.want)
		}
	}
}
