package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/control"
	"github.com/dstore/dstore/snapstore"
)

func init() {
	// Small log segments: every open scans its segment's tail, which is
	// slow under the race detector at the default 64 MiB.
	storeOptions = blockstore.Options{SegmentSize: 1 << 20, MaxLogBytes: 4 << 20}
}

// expect runs a command line and checks its exit code.
func expect(t *testing.T, code int, args ...string) (stdout, stderr string) {
	t.Helper()
	got, stdout, stderr := runApp(t, args...)
	if got != code {
		t.Fatalf("dstore %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	if code != 0 && !strings.Contains(stderr, "dstore: ") {
		t.Fatalf("dstore %s: exit %d without an error message: %q", strings.Join(args, " "), got, stderr)
	}
	return stdout, stderr
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not the JSON wanted: %v\n%s", err, s)
	}
	return v
}

// withNS opens the datastore directly and runs fn on its namespace.
func withNS(t *testing.T, dir string, fn func(ns *snapstore.Namespace)) {
	t.Helper()
	ds, err := snapstore.Open(dir, storeOptions)
	if err != nil {
		t.Fatal(err)
	}
	fn(ds.NS)
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
}

// putFile writes the file at p (making its directories).
func putFile(t *testing.T, ns *snapstore.Namespace, p, data string) {
	t.Helper()
	dir := snapstore.RootIno
	parts := strings.Split(p, "/")
	for _, c := range parts[:len(parts)-1] {
		a, err := ns.Lookup(dir, c)
		if errors.Is(err, snapstore.ErrNotExist) {
			a, err = ns.Mkdir(dir, c, snapstore.NewAttr{Mode: 0o755})
		}
		if err != nil {
			t.Fatal(err)
		}
		dir = a.Ino
	}
	a, _, err := ns.Create(dir, parts[len(parts)-1], snapstore.Unchecked, [8]byte{}, snapstore.NewAttr{Mode: 0o640, UID: 5, GID: 6})
	if err != nil {
		t.Fatal(err)
	}
	zero := uint64(0)
	if _, err := ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Size: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Write(a.Ino, []byte(data), 0, true); err != nil {
		t.Fatal(err)
	}
}

func getFile(t *testing.T, ns *snapstore.Namespace, p string) string {
	t.Helper()
	a, err := ns.LookupPath(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	buf := make([]byte, a.Size)
	if a.Size > 0 {
		if _, _, err := ns.Read(a.Ino, buf, 0); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	return string(buf)
}

// newStore makes a datastore with files.
func newStore(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ds")
	expect(t, 0, "init", "--data", dir)
	withNS(t, dir, func(ns *snapstore.Namespace) {
		for p, d := range files {
			putFile(t, ns, p, d)
		}
	})
	return dir
}

// daemonProc is "dstore serve" running in this process.
type daemonProc struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan int
	stdout *syncBuffer
	stderr *syncBuffer
}

// startServe runs "dstore serve" on dir through run, as main does, and
// waits until its control socket answers.
func startServe(t *testing.T, dir string) *daemonProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemonProc{t: t, cancel: cancel, done: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() {
		d.done <- run(ctx, []string{"dstore", "--log-level", "warn", "serve", "--data", dir, "--nfs", "127.0.0.1:0"}, d.stdout, d.stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := control.Dial(context.Background(), dir)
		if err == nil {
			_, perr := c.Ping(context.Background())
			c.Close()
			if perr == nil {
				break
			}
		}
		select {
		case code := <-d.done:
			t.Fatalf("serve exited %d: %s", code, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not answer on its control socket: %v\n%s", err, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { d.stop() })
	return d
}

// stop ends serve as SIGTERM does and checks that it exits 0.
func (d *daemonProc) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	if code := <-d.done; code != 0 {
		d.t.Errorf("serve exited %d: %s", code, d.stderr.String())
	}
}

func readAuditLog(t *testing.T, dir string) []control.AuditRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, control.AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []control.AuditRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, decode[control.AuditRecord](t, sc.Text()))
	}
	return out
}

// TestSnapshotCommands drives every new command through run, with the
// daemon running (serve in this process, the commands over its socket)
// and without (the commands open the datastore), checking outputs, JSON
// fields, exit codes and the files.
func TestSnapshotCommands(t *testing.T) {
	for _, mode := range []string{"daemon", "offline"} {
		t.Run(mode, func(t *testing.T) { testSnapshotCommands(t, mode) })
	}
}

func testSnapshotCommands(t *testing.T, mode string) {
	dir := newStore(t, map[string]string{
		"vms/web-1/disk.vmdk": "web one",
		"vms/web-2/disk.vmdk": "web two",
		"sql/mydb.img":        "database",
	})
	var d *daemonProc
	start := func() {
		if mode == "daemon" {
			d = startServe(t, dir)
		}
	}
	stop := func() {
		if d != nil {
			d.stop()
			d = nil
		}
	}
	start()
	D := []string{"--data", dir}
	cmd := func(a ...string) []string { return append(a, D...) }
	checkNote := func(stderr string) {
		t.Helper()
		note := "dstore: no daemon is running on " + dir + "; working on the datastore directly\n"
		if mode == "offline" && !strings.Contains(stderr, note) {
			t.Errorf("offline, stderr %q lacks the note %q", stderr, note)
		}
		if mode == "daemon" && strings.Contains(stderr, "no daemon") {
			t.Errorf("with a daemon, stderr says %q", stderr)
		}
	}

	// Groups.
	out, errOut := expect(t, 0, cmd("group", "create", "web", "--match", "vms/web-*/*.vmdk", "--keep-last", "2",
		"--schedule", "0,30 * * * *", "--schedule", "@daily")...)
	checkNote(errOut)
	for _, want := range []string{"created group web\n", "vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk", "keep last 2", "0,30 * * * *, @daily"} {
		if !strings.Contains(out, want) {
			t.Errorf("group create printed %q; want %q in it", out, want)
		}
	}
	_, errOut = expect(t, 1, cmd("group", "create", "web", "--match", "x")...)
	if !strings.Contains(errOut, `dstore: group "web" exists`) {
		t.Errorf("group create twice: stderr %q", errOut)
	}
	for _, bad := range [][]string{
		{"group", "create", "nomatch"},
		{"group", "create", "a/b", "--match", "x"},
		{"group", "create", "g", "--match", "x", "--schedule", "61 * * * *"},
		{"group", "create", "g", "--match", "x", "--schedule", "@every 5m"},
		{"group", "create", "g", "--match", "x", "--keep-within", "7 days"},
		{"group", "create", "g", "--match", "x", "--keep-last", "-1"},
		{"group", "create", "g", "--match", "[", "--keep-last", "1"},
		{"group", "create"},
		{"group", "create", "g", "h", "--match", "x"},
		{"group", "edit", "web"},
		{"group", "edit", "web", "--schedule", "@hourly", "--no-schedule"},
		{"group", "show"},
		{"group", "nosuch"},
		{"group"},
		{"snapshot", "show", "junk"},
		{"snapshot", "create"},
		{"ls", "notanid"},
		{"ls", "1:../x"},
		{"clone", "nocolon", "x"},
		{"clone", "1:a"},
		{"restore"},
		{"snapshot", "list", "extra"},
	} {
		_, errOut := expect(t, 2, cmd(bad...)...)
		if strings.Contains(errOut, "no daemon") {
			t.Errorf("dstore %s: a usage error reached the datastore: %q", strings.Join(bad, " "), errOut)
		}
	}

	out, _ = expect(t, 0, cmd("group", "list", "--json")...)
	gl := decode[[]map[string]any](t, out)
	if len(gl) != 1 || gl[0]["name"] != "web" || !reflect.DeepEqual(gl[0]["match"], []any{"vms/web-*/*.vmdk"}) ||
		gl[0]["policy"] != "keep last 2" || gl[0]["next_run"] == nil {
		t.Errorf("group list --json: %s", out)
	}
	out, _ = expect(t, 0, cmd("group", "list")...)
	if !strings.HasPrefix(out, "GROUP") || !strings.Contains(out, "\nweb ") {
		t.Errorf("group list: %q", out)
	}
	out, _ = expect(t, 0, cmd("group", "show", "web", "--json")...)
	gd := decode[control.GroupDetail](t, out)
	if !reflect.DeepEqual(gd.Members, []string{"vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk"}) {
		t.Errorf("group show --json: members %v", gd.Members)
	}
	_, errOut = expect(t, 1, cmd("group", "show", "nosuch")...)
	if !strings.Contains(errOut, `dstore: unknown group "nosuch"`) {
		t.Errorf("group show nosuch: stderr %q", errOut)
	}

	// Snapshots.
	out, _ = expect(t, 0, cmd("snapshot", "create", "web", "--label", "first", "--json")...)
	s1 := decode[map[string]any](t, out)
	id1, _ := s1["id"].(string)
	if _, err := snapstore.ParseSnapshotID(id1); err != nil || !strings.Contains(id1, "-") {
		t.Fatalf("snapshot create --json: id %q in %s", id1, out)
	}
	out, _ = expect(t, 0, cmd("snapshot", "create", "web")...)
	if !strings.HasPrefix(out, "created snapshot ") || !strings.Contains(out, " of group web: 2 members") {
		t.Errorf("snapshot create: %q", out)
	}
	id2 := strings.Fields(out)[2]
	_, errOut = expect(t, 1, cmd("snapshot", "create", "nosuch")...)
	if !strings.Contains(errOut, `unknown group "nosuch"`) {
		t.Errorf("snapshot create nosuch: %q", errOut)
	}

	out, _ = expect(t, 0, cmd("snapshot", "list", "--json")...)
	sl := decode[[]map[string]any](t, out)
	if len(sl) != 2 {
		t.Fatalf("snapshot list --json: %s", out)
	}
	for i, s := range sl {
		if s["id"] != []string{id1, id2}[i] || s["group"] != "web" || s["scheduled"] != false {
			t.Errorf("snapshot list --json [%d]: %v", i, s)
		}
		if _, err := time.Parse(time.RFC3339, s["created"].(string)); err != nil {
			t.Errorf("created %v is not RFC 3339: %v", s["created"], err)
		}
		if !reflect.DeepEqual(s["members"], []any{"vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk"}) {
			t.Errorf("members: %v", s["members"])
		}
	}
	if sl[0]["label"] != "first" {
		t.Errorf("label: %v", sl[0]["label"])
	}
	out, _ = expect(t, 0, cmd("snapshot", "list", "--group", "web")...)
	if !strings.Contains(out, id1) || !strings.Contains(out, id2) || !strings.Contains(out, "first") {
		t.Errorf("snapshot list: %q", out)
	}
	expect(t, 1, cmd("snapshot", "list", "--group", "nosuch")...)

	out, _ = expect(t, 0, cmd("snapshot", "show", id1, "--json")...)
	if m := decode[map[string]any](t, out); m["unique_bytes"] == nil {
		t.Errorf("snapshot show --json has no unique_bytes: %s", out)
	}
	sd := decode[control.SnapshotDetail](t, out)
	if sd.ID != id1 || len(sd.Details) != 2 || sd.Details[0].Size != 7 || sd.Details[0].Mode != "0640" || sd.Details[0].UID != 5 {
		t.Errorf("snapshot show --json: %s", out)
	}
	out, _ = expect(t, 0, cmd("snapshot", "show", id1)...)
	if !strings.Contains(out, "vms/web-1/disk.vmdk") || !strings.Contains(out, "members   2 files") || !strings.Contains(out, "unique    0 B in 0 chunks") {
		t.Errorf("snapshot show: %q", out)
	}
	_, errOut = expect(t, 1, cmd("snapshot", "show", "999")...)
	if !strings.Contains(errOut, "dstore: snapshot 999 not found") {
		t.Errorf("snapshot show 999: %q", errOut)
	}

	// The snapstore tree.
	out, _ = expect(t, 0, cmd("ls")...)
	if !strings.HasPrefix(out, "web/\n") || !strings.Contains(out, "  "+id1+"/") || !strings.Contains(out, "first") {
		t.Errorf("ls: %q", out)
	}
	out, _ = expect(t, 0, cmd("ls", "--json")...)
	var types []string
	for _, e := range decode[[]control.Entry](t, out) {
		types = append(types, e.Type+" "+e.Path)
	}
	if want := []string{"group web", "snapshot web/" + id1, "snapshot web/" + id2}; !reflect.DeepEqual(types, want) {
		t.Errorf("ls --json: %v, want %v", types, want)
	}
	out, _ = expect(t, 0, cmd("ls", id1)...)
	if want := "-r--r-----     5     6              7 "; !strings.Contains(out, want) || !strings.Contains(out, " vms/web-2/disk.vmdk\n") || !strings.Contains(out, " vms/web-1/\n") {
		t.Errorf("ls ID: %q", out)
	}
	out, _ = expect(t, 0, cmd("ls", id1+":/vms", "--json")...)
	types = nil
	for _, e := range decode[[]control.Entry](t, out) {
		types = append(types, e.Type+" "+e.Path)
	}
	if want := []string{"dir vms/web-1", "dir vms/web-2"}; !reflect.DeepEqual(types, want) {
		t.Errorf("ls ID:/vms: %v, want %v", types, want)
	}
	out, _ = expect(t, 0, cmd("ls", id1+":vms/web-1/disk.vmdk", "--json")...)
	if es := decode[[]control.Entry](t, out); len(es) != 1 || es[0].Type != "file" || es[0].Size != 7 {
		t.Errorf("ls ID:file: %s", out)
	}
	_, errOut = expect(t, 1, cmd("ls", id1+":vms/nosuch")...)
	if !strings.Contains(errOut, "no such file or directory in the snapshot") {
		t.Errorf("ls of a missing path: %q", errOut)
	}

	// Retention.
	out, _ = expect(t, 0, cmd("group", "prune", "web", "--dry-run", "--json")...)
	pr := decode[control.PruneResult](t, out)
	if !pr.DryRun || len(pr.Plan) != 2 || !pr.Plan[0].Keep || !pr.Plan[1].Keep || len(pr.Deleted) != 0 {
		t.Errorf("group prune --dry-run: %s", out)
	}
	out, _ = expect(t, 0, cmd("group", "run", "web", "--json")...)
	rr := decode[control.RunResult](t, out)
	if !reflect.DeepEqual(rr.Deleted, []string{id1}) || !reflect.DeepEqual(rr.Kept, []string{rr.ID, id2}) || !rr.Snapshot.Scheduled {
		t.Errorf("group run --json with keep-last 2: %s", out)
	}
	id3 := rr.ID
	out, _ = expect(t, 0, cmd("group", "run", "web")...)
	if !strings.Contains(out, "retention (keep last 2): kept 2, deleted 1\ndeleted snapshot "+id2+"\n") {
		t.Errorf("group run: %q", out)
	}
	out, _ = expect(t, 0, cmd("retention", "web", "--dry-run")...)
	if !strings.Contains(out, "group web: keep last 2 (dry run: nothing is deleted)") || !strings.Contains(out, "would delete 0 of 2 snapshots") || !strings.Contains(out, "keep    "+id3) {
		t.Errorf("retention --dry-run: %q", out)
	}
	expect(t, 1, cmd("snapshot", "show", id1)...)

	// Clone, restore.
	out, _ = expect(t, 0, cmd("clone", id3+":vms/web-1/disk.vmdk", "/copy.vmdk")...)
	if out != "cloned "+id3+":vms/web-1/disk.vmdk to copy.vmdk (7 B)\n" {
		t.Errorf("clone: %q", out)
	}
	out, _ = expect(t, 0, cmd("clone", "--live", "sql/mydb.img", "sql/copy.img", "--json")...)
	if c := decode[control.CloneResult](t, out); c.Path != "sql/copy.img" || c.Size != 8 {
		t.Errorf("clone --live: %s", out)
	}
	_, errOut = expect(t, 1, cmd("clone", "--live", "sql", "sql2")...)
	if !strings.Contains(errOut, "is not a regular file") {
		t.Errorf("clone --live of a directory: %q", errOut)
	}
	_, errOut = expect(t, 1, cmd("clone", id3+":nosuch", "x")...)
	if !strings.Contains(errOut, "not a member") {
		t.Errorf("clone of a non-member: %q", errOut)
	}
	expect(t, 1, cmd("clone", id3+":vms/web-1/disk.vmdk", "sql/mydb.img")...)

	// Change a live file (directly, with the daemon stopped), then restore
	// it: the daemon's restart keeps the groups and snapshots.
	stop()
	withNS(t, dir, func(ns *snapstore.Namespace) { putFile(t, ns, "vms/web-1/disk.vmdk", "changed!") })
	start()
	out, _ = expect(t, 0, cmd("restore", id3, "/vms/web-1/disk.vmdk")...)
	if out != "restored vms/web-1/disk.vmdk from "+id3+"\n" {
		t.Errorf("restore: %q", out)
	}
	_, errOut = expect(t, 1, cmd("restore", id3, "nosuch")...)
	if !strings.Contains(errOut, "not a member") {
		t.Errorf("restore of a non-member: %q", errOut)
	}
	out, _ = expect(t, 0, cmd("restore", id3, "--json")...)
	if r := decode[control.RestoreResult](t, out); !reflect.DeepEqual(r.Restored, []string{"vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk"}) {
		t.Errorf("restore of all members: %s", out)
	}

	// Edit.
	out, _ = expect(t, 0, cmd("group", "edit", "web", "--add-match", "sql/*", "--keep-daily", "7", "--no-schedule", "--json")...)
	gd = decode[control.GroupDetail](t, out)
	if !reflect.DeepEqual(gd.Match, []string{"vms/web-*/*.vmdk", "sql/*"}) || gd.Policy != "keep last 2, 7 daily" || len(gd.Schedules) != 0 ||
		!reflect.DeepEqual(gd.Members, []string{"sql/copy.img", "sql/mydb.img", "vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk"}) {
		t.Errorf("group edit: %s", out)
	}
	out, _ = expect(t, 0, cmd("group", "edit", "web", "--match", "sql/mydb.img", "--keep-last", "0")...)
	if !strings.Contains(out, "changed group web\n") || !strings.Contains(out, "keep 7 daily") || strings.Contains(out, "vms/web-1") {
		t.Errorf("group edit --match: %q", out)
	}
	_, errOut = expect(t, 1, cmd("group", "edit", "web", "--remove-match", "nosuch")...)
	if !strings.Contains(errOut, `has no pattern "nosuch"`) {
		t.Errorf("group edit --remove-match nosuch: %q", errOut)
	}

	// Status and gc.
	out, _ = expect(t, 0, cmd("status", "--json")...)
	st := decode[map[string]any](t, out)
	for _, f := range []string{"logical_bytes", "physical_bytes", "dedupe_ratio", "compression_ratio", "groups", "snapshot_count"} {
		if _, ok := st[f]; !ok {
			t.Errorf("status --json lacks %s: %s", f, out)
		}
	}
	if st["groups"] != 1.0 || st["snapshot_count"] != 2.0 {
		t.Errorf("status --json: groups %v, snapshots %v", st["groups"], st["snapshot_count"])
	}
	if us, _ := st["snapshots"].([]any); len(us) != 2 {
		t.Errorf("status --json: snapshots %v, want two", st["snapshots"])
	} else {
		for _, u := range us {
			m, _ := u.(map[string]any)
			for _, f := range []string{"seq", "id", "group", "logical_bytes", "unique_bytes"} {
				if _, ok := m[f]; !ok {
					t.Errorf("status --json: a snapshot without %s: %v", f, m)
				}
			}
		}
	}
	out, _ = expect(t, 0, cmd("status")...)
	if !strings.Contains(out, "SNAPSHOT") || !strings.Contains(out, id3) {
		t.Errorf("status does not list the snapshots' space: %q", out)
	}
	out, _ = expect(t, 0, cmd("gc", "--dry-run", "--json")...)
	if g := decode[map[string]any](t, out); g["dry_run"] != true {
		t.Errorf("gc --dry-run --json: %s", out)
	}

	// Deletes.
	out, _ = expect(t, 0, cmd("snapshot", "delete", id3)...)
	if out != "deleted snapshot "+id3+"\n" {
		t.Errorf("snapshot delete: %q", out)
	}
	_, errOut = expect(t, 1, cmd("snapshot", "delete", id3)...)
	if !strings.Contains(errOut, "snapshot "+id3+" not found") {
		t.Errorf("snapshot delete twice: %q", errOut)
	}
	_, errOut = expect(t, 1, cmd("group", "delete", "web")...)
	if !strings.Contains(errOut, `group "web" has 1 snapshots`) {
		t.Errorf("group delete with snapshots: %q", errOut)
	}
	out, _ = expect(t, 0, cmd("group", "delete", "web", "--with-snapshots")...)
	if !strings.HasPrefix(out, "deleted group web\ndeleted snapshot ") {
		t.Errorf("group delete --with-snapshots: %q", out)
	}
	out, _ = expect(t, 0, cmd("ls")...)
	if out != "no protection groups\n" {
		t.Errorf("ls with no groups: %q", out)
	}
	stop()

	// The files: the clone is the snapshot's and outlives it; the restore
	// brought the snapshot's data back.
	withNS(t, dir, func(ns *snapstore.Namespace) {
		for p, want := range map[string]string{"copy.vmdk": "web one", "vms/web-1/disk.vmdk": "web one", "sql/copy.img": "database"} {
			if got := getFile(t, ns, p); got != want {
				t.Errorf("%s reads %q, want %q", p, got, want)
			}
		}
	})

	// The audit log.
	via := map[string]string{"daemon": "daemon", "offline": "direct"}[mode]
	var ops []string
	for _, r := range readAuditLog(t, dir) {
		if r.Via != via {
			t.Errorf("audit record via %q, want %q: %+v", r.Via, via, r)
		}
		ops = append(ops, r.Operation)
	}
	for _, want := range []string{"group.create", "snapshot.create", "group.run", "group.prune", "clone", "clone.live", "restore", "group.edit", "gc", "snapshot.delete", "group.delete"} {
		if !strings.Contains(" "+strings.Join(ops, " ")+" ", " "+want+" ") {
			t.Errorf("no %s in the audit log: %v", want, ops)
		}
	}
}

// TestRequireDaemon: with --require-daemon (or DSTORE_REQUIRE_DAEMON)
// and no daemon, a command fails and leaves the datastore alone.
func TestRequireDaemon(t *testing.T) {
	dir := newStore(t, nil)
	for _, args := range [][]string{
		{"--require-daemon", "group", "list", "--data", dir},
		{"group", "list", "--data", dir, "--require-daemon"},
		{"status", "--require-daemon", "--data", dir},
	} {
		_, errOut := expect(t, 1, args...)
		if errOut != "dstore: daemon not running on "+dir+"\n" {
			t.Errorf("dstore %s: stderr %q", strings.Join(args, " "), errOut)
		}
	}
	t.Setenv(requireDaemonEnv, "true")
	_, errOut := expect(t, 1, "snapshot", "list", "--data", dir)
	if !strings.Contains(errOut, "daemon not running on "+dir) {
		t.Errorf("with %s: %q", requireDaemonEnv, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, control.AuditFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command opened the datastore (audit log: %v)", err)
	}
	// With the daemon it works.
	startServe(t, dir)
	out, _ := expect(t, 0, "group", "list", "--data", dir)
	if !strings.Contains(out, "no protection groups") {
		t.Errorf("group list: %q", out)
	}
}

// TestDaemonLocking: while the daemon holds the datastore, a command that
// cannot reach its socket fails at once and clearly instead of opening the
// datastore; a socket left by a daemon that died is taken for no daemon
// and replaced by the next serve.
func TestDaemonLocking(t *testing.T) {
	dir := newStore(t, map[string]string{"a.img": "a"})
	d := startServe(t, dir)
	sock := filepath.Join(dir, control.SocketFile)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, %v", fi, err)
	}
	// Hide the socket: the command goes for the datastore, which is held.
	hidden := filepath.Join(t.TempDir(), "hidden.sock")
	if err := os.Rename(sock, hidden); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, errOut := expect(t, 1, "group", "list", "--data", dir)
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("the command waited %v for the held datastore", took)
	}
	if !strings.Contains(errOut, "the datastore is in use by another process, but no daemon answers on "+sock) {
		t.Errorf("stderr %q", errOut)
	}
	if err := os.Rename(hidden, sock); err != nil {
		t.Fatal(err)
	}
	expect(t, 0, "group", "list", "--data", dir)
	// A second serve on the same datastore fails.
	code, _, errOut := runApp(t, "serve", "--data", dir, "--nfs", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "in use by another process") {
		t.Errorf("a second serve: exit %d, stderr %q", code, errOut)
	}
	d.stop()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve left its socket behind: %v", err)
	}

	// A dead daemon's socket: bound, never unlinked.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	_, errOut = expect(t, 0, "group", "list", "--data", dir)
	if !strings.Contains(errOut, "no daemon is running") {
		t.Errorf("with a stale socket: stderr %q", errOut)
	}
	startServe(t, dir)
	_, errOut = expect(t, 0, "group", "list", "--data", dir)
	if strings.Contains(errOut, "no daemon") {
		t.Errorf("serve did not replace the stale socket: %q", errOut)
	}
}

// TestServeScheduler: serve runs the groups' schedules (here on a fake
// clock): a schedule fires and retention applies; runs missed while serve
// was down are reported once, recorded in the group, and survive restarts.
func TestServeScheduler(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 1, 14, h, m, 0, 0, time.Local) }
	clk := snapstore.NewFakeClock(at(10, 2))
	var sched atomic.Pointer[snapstore.Scheduler]
	serveClock = clk
	serveSched = func(s *snapstore.Scheduler) { sched.Store(s) }
	defer func() { serveClock, serveSched = nil, nil }()
	idle := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := sched.Load().WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dir := newStore(t, map[string]string{"db/a.img": "a"})
	d := startServe(t, dir)
	idle()
	expect(t, 0, "group", "create", "db", "--match", "db", "--schedule", "*/5 * * * *", "--keep-last", "2", "--data", dir)
	idle()
	for _, m := range []int{5, 10, 15} {
		clk.Set(at(10, m))
		idle()
	}
	out, _ := expect(t, 0, "snapshot", "list", "--json", "--data", dir)
	var got []string
	for _, s := range decode[[]control.Snapshot](t, out) {
		if !s.Scheduled {
			t.Errorf("snapshot %s is not marked scheduled", s.ID)
		}
		got = append(got, s.Created.Local().Format("15:04"))
	}
	if want := []string{"10:10", "10:15"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after three runs with keep-last 2: snapshots at %v, want %v", got, want)
	}
	d.stop()

	clk.Set(at(10, 32)) // 10:20, 10:25, 10:30 missed
	d = startServe(t, dir)
	idle()
	out, _ = expect(t, 0, "group", "show", "db", "--json", "--data", dir)
	gd := decode[control.GroupDetail](t, out)
	if m := gd.Missed; m == nil || m.Count != 3 || !m.First.Equal(at(10, 20)) || !m.Last.Equal(at(10, 30)) || !m.Noted.Equal(at(10, 32)) {
		t.Errorf("missed runs after the restart: %+v", gd.Missed)
	}
	if gd.Snapshots != 2 {
		t.Errorf("the group has %d snapshots after the restart, want 2", gd.Snapshots)
	}
	out, _ = expect(t, 0, "group", "show", "db", "--data", dir)
	if !strings.Contains(out, "missed      3 scheduled runs from ") {
		t.Errorf("group show does not report the missed runs: %q", out)
	}
	countMissed := func() int {
		n := 0
		for _, r := range readAuditLog(t, dir) {
			if r.Operation == "schedule.missed" {
				n++
			}
		}
		return n
	}
	if n := countMissed(); n != 1 {
		t.Errorf("%d schedule.missed audit records, want 1", n)
	}
	// Restart again: nothing new is reported.
	d.stop()
	startServe(t, dir)
	idle()
	if n := countMissed(); n != 1 {
		t.Errorf("a second restart reported again: %d schedule.missed records", n)
	}
}
