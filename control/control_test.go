package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

func testOpts() blockstore.Options {
	return blockstore.Options{SegmentSize: 1 << 20, MaxLogBytes: 1 << 20, PackSize: 256 << 10}
}

// newStore makes and opens a datastore in a fresh directory on disk.
func newStore(t *testing.T) (string, *snapstore.Datastore) {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, err := snapstore.Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	return dir, ds
}

// writeFile makes the file at p (and its directories) with data.
func writeFile(t *testing.T, ns *snapstore.Namespace, p string, data []byte) {
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
	a, _, err := ns.Create(dir, parts[len(parts)-1], snapstore.Unchecked, [8]byte{}, snapstore.NewAttr{Mode: 0o644, UID: 7, GID: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Size: ptr(uint64(0))}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Write(a.Ino, data, 0, true); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

func readLive(t *testing.T, ns *snapstore.Namespace, p string) []byte {
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
	return buf
}

// serveSocket runs a Server for svc and returns a client of it.
func serveSocket(t *testing.T, svc *Service) *Client {
	t.Helper()
	srv, err := Listen(svc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := Dial(context.Background(), svc.Dir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAudit(t *testing.T, dir string) []AuditRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []AuditRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOverSocket drives every operation over the real unix socket (HTTP
// client, server, Service, a datastore on disk) and checks the results,
// the socket's mode, the audit log and the errors.
func TestOverSocket(t *testing.T) {
	dir, ds := newStore(t)
	defer ds.Close()
	ns := ds.NS
	writeFile(t, ns, "vms/web-1/disk.vmdk", []byte("web one"))
	writeFile(t, ns, "vms/web-2/disk.vmdk", []byte("web two"))
	writeFile(t, ns, "sql/mydb.img", []byte("database"))
	writeFile(t, ns, "iso/debian.iso", []byte("iso"))

	svc, err := NewService(ds, dir, Options{Via: "daemon", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	cl := serveSocket(t, svc)
	api := API{cl}
	ctx := context.Background()

	fi, err := os.Stat(filepath.Join(dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want a socket with 0600", fi.Mode())
	}
	p, err := cl.Ping(ctx)
	if err != nil || p.Version != "test" || p.Dir != dir || p.PID != os.Getpid() {
		t.Errorf("ping: %+v, %v", p, err)
	}

	g, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "web", Match: []string{"vms/web-*/*.vmdk"},
		Schedules: []string{"@hourly"}, Retention: snapstore.Retention{KeepLast: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"vms/web-1/disk.vmdk", "vms/web-2/disk.vmdk"}; !reflect.DeepEqual(g.Members, want) {
		t.Errorf("group create: members %v, want %v", g.Members, want)
	}
	if g.Policy != "keep last 2" || g.NextRun == nil || g.Since == nil {
		t.Errorf("group create: %+v", g.Group)
	}
	if _, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "db", Match: []string{"*db*"}}); err != nil {
		t.Fatal(err)
	}

	_, err = api.GroupCreate(ctx, GroupCreateArgs{Name: "web", Match: []string{"x"}})
	if !errors.Is(err, snapstore.ErrGroupExists) || err.Error() != `group "web" exists` {
		t.Errorf("creating a group twice: %v", err)
	}

	// Snapshots; the later write does not show in the first.
	s1, err := api.SnapshotCreate(ctx, SnapshotCreateArgs{Group: "web", Label: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if s1.Group != "web" || s1.Label != "first" || s1.Scheduled || len(s1.Members) != 2 || s1.Size != 14 {
		t.Errorf("snapshot create: %+v", s1)
	}
	writeFile(t, ns, "vms/web-1/disk.vmdk", []byte("web one, changed"))
	writeFile(t, ns, "vms/web-3/disk.vmdk", []byte("web three"))

	run, err := api.GroupRun(ctx, GroupRunArgs{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Snapshot.Members) != 3 || !run.Snapshot.Scheduled || len(run.Deleted) != 0 || len(run.Kept) != 2 {
		t.Errorf("group run: %+v", run)
	}
	run2, err := api.GroupRun(ctx, GroupRunArgs{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(run2.Deleted, []string{s1.ID}) || !reflect.DeepEqual(run2.Kept, []string{run2.ID, run.ID}) {
		t.Errorf("group run with keep-last 2: kept %v, deleted %v; want kept [%s %s], deleted [%s]", run2.Kept, run2.Deleted, run2.ID, run.ID, s1.ID)
	}
	if _, err := api.SnapshotShow(ctx, IDArgs{ID: s1.ID}); !errors.Is(err, snapstore.ErrNoSnapshot) {
		t.Errorf("the snapshot retention deleted is still there: %v", err)
	}

	list, err := api.SnapshotList(ctx, SnapshotListArgs{Group: "web"})
	if err != nil || len(list) != 2 || list[0].ID != run.ID || list[1].ID != run2.ID {
		t.Fatalf("snapshot list: %+v, %v", list, err)
	}
	det, err := api.SnapshotShow(ctx, IDArgs{ID: fmt.Sprint(run.Snapshot.Seq)})
	if err != nil {
		t.Fatal(err)
	}
	if det.ID != run.ID || len(det.Details) != 3 || det.Details[0].Path != "vms/web-1/disk.vmdk" || det.Details[0].Size != 16 || det.Details[0].Mode != "0644" {
		t.Errorf("snapshot show by sequence number: %+v", det)
	}

	// ls: groups and snapshots; a snapshot's tree; a directory; a file.
	ls, err := api.Ls(ctx, LsArgs{})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range ls.Entries {
		paths = append(paths, e.Type+" "+e.Path)
	}
	if want := []string{"group db", "group web", "snapshot web/" + run.ID, "snapshot web/" + run2.ID}; !reflect.DeepEqual(paths, want) {
		t.Errorf("ls: %v, want %v", paths, want)
	}
	ls, err = api.Ls(ctx, LsArgs{Snapshot: run.ID})
	if err != nil {
		t.Fatal(err)
	}
	paths = nil
	for _, e := range ls.Entries {
		paths = append(paths, e.Type+" "+e.Path)
	}
	if want := []string{"dir vms", "dir vms/web-1", "file vms/web-1/disk.vmdk", "dir vms/web-2", "file vms/web-2/disk.vmdk",
		"dir vms/web-3", "file vms/web-3/disk.vmdk"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("ls of a snapshot: %v, want %v", paths, want)
	}
	ls, err = api.Ls(ctx, LsArgs{Snapshot: run.ID, Path: "/vms/web-3/disk.vmdk", HasPath: true})
	if err != nil || len(ls.Entries) != 1 || ls.Entries[0].Size != 9 || ls.Entries[0].Mode != "0444" {
		t.Errorf("ls of a file in a snapshot: %+v, %v", ls, err)
	}
	_, err = api.Ls(ctx, LsArgs{Snapshot: run.ID, Path: "vms/nosuch", HasPath: true})
	if !errors.Is(err, snapstore.ErrNotExist) {
		t.Errorf("ls of a missing path: %v", err)
	}

	// Clone, restore, clone of a live file.
	cr, err := api.Clone(ctx, CloneArgs{ID: run.ID, Member: "/vms/web-3/disk.vmdk", NewPath: "/restored.vmdk"})
	if err != nil || cr.Path != "restored.vmdk" || cr.Size != 9 || cr.From != run.ID+":vms/web-3/disk.vmdk" {
		t.Fatalf("clone: %+v, %v", cr, err)
	}
	if got := readLive(t, ns, "restored.vmdk"); string(got) != "web three" {
		t.Errorf("the clone reads %q", got)
	}
	writeFile(t, ns, "vms/web-3/disk.vmdk", []byte("overwritten!"))
	rr, err := api.Restore(ctx, RestoreArgs{ID: run.ID, Paths: []string{"vms/web-3/disk.vmdk"}})
	if err != nil || !reflect.DeepEqual(rr.Restored, []string{"vms/web-3/disk.vmdk"}) {
		t.Fatalf("restore: %+v, %v", rr, err)
	}
	if got := readLive(t, ns, "vms/web-3/disk.vmdk"); string(got) != "web three" {
		t.Errorf("the restored file reads %q", got)
	}
	cl2, err := api.CloneLive(ctx, CloneArgs{Path: "sql/mydb.img", NewPath: "sql/copy.img"})
	if err != nil || cl2.Size != 8 {
		t.Fatalf("clone --live: %+v, %v", cl2, err)
	}
	_, err = api.CloneLive(ctx, CloneArgs{Path: "sql", NewPath: "sql2"})
	if !errors.Is(err, snapstore.ErrInvalid) || !strings.Contains(err.Error(), "is not a regular file") {
		t.Errorf("clone --live of a directory: %v", err)
	}

	// Edit: replace, add, remove patterns; schedules; retention.
	ed, err := api.GroupEdit(ctx, GroupEditArgs{Name: "db", AddMatch: []string{"iso/*"}, NoSchedule: true, KeepDaily: ptr(3)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"*db*", "iso/*"}; !reflect.DeepEqual(ed.Match, want) || ed.Policy != "keep 3 daily" || len(ed.Schedules) != 0 {
		t.Errorf("group edit: %+v", ed.Group)
	}
	if want := []string{"iso/debian.iso", "sql/mydb.img"}; !reflect.DeepEqual(ed.Members, want) {
		t.Errorf("group edit: members %v, want %v", ed.Members, want)
	}
	_, err = api.GroupEdit(ctx, GroupEditArgs{Name: "db", RemoveMatch: []string{"nosuch"}})
	if !errors.Is(err, snapstore.ErrInvalid) {
		t.Errorf("removing a pattern the group lacks: %v", err)
	}
	ed, err = api.GroupEdit(ctx, GroupEditArgs{Name: "db", Match: []string{"iso"}, Schedules: []string{"0 3 * * *"}})
	if err != nil || !reflect.DeepEqual(ed.Match, []string{"iso"}) || !reflect.DeepEqual(ed.Schedules, []string{"0 3 * * *"}) {
		t.Errorf("group edit --match replaces: %+v, %v", ed.Group, err)
	}

	// Prune: the plan, dry and real.
	pr, err := api.GroupPrune(ctx, PruneArgs{Name: "web", DryRun: true})
	if err != nil || len(pr.Plan) != 2 || !pr.Plan[0].Keep || !pr.DryRun {
		t.Errorf("prune --dry-run: %+v, %v", pr, err)
	}

	// Errors come back as the same sentinels, with their messages.
	for _, c := range []struct {
		call func() error
		want error
		msg  string
	}{
		{func() error { _, err := api.GroupShow(ctx, NameArgs{Name: "nosuch"}); return err }, snapstore.ErrNoGroup, `unknown group "nosuch"`},
		{func() error { _, err := api.SnapshotCreate(ctx, SnapshotCreateArgs{Group: "nosuch"}); return err }, snapstore.ErrNoGroup, `unknown group "nosuch"`},
		{func() error { _, err := api.SnapshotShow(ctx, IDArgs{ID: "99"}); return err }, snapstore.ErrNoSnapshot, "snapshot 99 not found"},
		{func() error { _, err := api.SnapshotShow(ctx, IDArgs{ID: "x-y"}); return err }, snapstore.ErrInvalid, ""},
		{func() error { _, err := api.GroupDelete(ctx, GroupDeleteArgs{Name: "web"}); return err }, snapstore.ErrHasSnaps, `group "web" has 2 snapshots`},
		{func() error {
			_, err := api.Clone(ctx, CloneArgs{ID: run.ID, Member: "nosuch", NewPath: "x"})
			return err
		}, snapstore.ErrNotMember, ""},
		{func() error {
			_, err := api.Clone(ctx, CloneArgs{ID: run.ID, Member: "vms/web-1/disk.vmdk", NewPath: "sql/mydb.img"})
			return err
		}, snapstore.ErrExist, ""},
		{func() error { return cl.Call(ctx, "nosuch.op", Empty{}, new(Empty)) }, ErrUnknownOp, ""},
		{func() error { return cl.Call(ctx, "group.show", map[string]int{"bogus": 1}, new(GroupDetail)) }, ErrBadRequest, ""},
	} {
		err := c.call()
		if !errors.Is(err, c.want) {
			t.Errorf("got %v, want %v", err, c.want)
			continue
		}
		if c.msg != "" && !strings.HasPrefix(err.Error(), c.msg) {
			t.Errorf("error %q, want it to start with %q", err, c.msg)
		}
		// The same operation run in-process gives the same error.
		var we *Error
		if !errors.As(err, &we) {
			t.Errorf("%v is not an *Error", err)
		}
	}
	if _, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "empty", Match: []string{"nothing-matches"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.SnapshotCreate(ctx, SnapshotCreateArgs{Group: "empty"}); !errors.Is(err, snapstore.ErrNoMembers) {
		t.Errorf("snapshot of a group without members: %v", err)
	}

	del, err := api.GroupDelete(ctx, GroupDeleteArgs{Name: "web", WithSnapshots: true})
	if err != nil || !reflect.DeepEqual(del.DeletedSnapshots, []string{run.ID, run2.ID}) {
		t.Errorf("group delete --with-snapshots: %+v, %v", del, err)
	}
	// The clone outlives its snapshot.
	if got := readLive(t, ns, "restored.vmdk"); string(got) != "web three" {
		t.Errorf("the clone reads %q after its snapshot was deleted", got)
	}
	st, err := api.Status(ctx, Empty{})
	if err != nil || st.BlockSize == 0 || st.Groups != 2 || st.SnapshotCount != 0 {
		t.Errorf("status: %+v, %v", st, err)
	}
	gc, err := api.GC(ctx, GCArgs{DryRun: true})
	if err != nil || !gc.DryRun {
		t.Errorf("gc: %+v, %v", gc, err)
	}

	// The audit log: every changing call, with its result and its caller.
	recs := readAudit(t, dir)
	var ops []string
	for _, r := range recs {
		ops = append(ops, r.Operation)
		if r.Via != "daemon" || r.UID == nil || *r.UID != os.Getuid() || r.PID == nil || *r.PID != os.Getpid() {
			t.Errorf("audit record %+v: want via daemon and this process's uid and pid", r)
		}
		if r.Time.IsZero() {
			t.Errorf("audit record without a time: %+v", r)
		}
	}
	for _, want := range []string{"group.create", "snapshot.create", "group.run", "clone", "restore", "clone.live", "group.edit", "group.prune", "group.delete", "gc"} {
		found := false
		for _, op := range ops {
			found = found || op == want
		}
		if !found {
			t.Errorf("no audit record of %s in %v", want, ops)
		}
	}
	for _, op := range ops {
		if op == "group.list" || op == "snapshot.list" || op == "ls" || op == "status" || op == "snapshot.show" {
			t.Errorf("a read (%s) was audited", op)
		}
	}
	first := recs[0]
	if first.Operation != "group.create" || first.Result != "ok" || !bytes.Contains(first.Arguments, []byte(`"name":"web"`)) {
		t.Errorf("first audit record: %+v (arguments %s)", first, first.Arguments)
	}
	var failed, detailed bool
	for _, r := range recs {
		if r.Operation == "group.create" && r.Result == `group "web" exists` {
			failed = true
		}
		if r.Operation == "group.run" && r.Detail == "snapshot "+run2.ID+"; retention deleted "+s1.ID {
			detailed = true
		}
	}
	if !failed {
		t.Errorf("the failed group create is not in the audit log with its error")
	}
	if !detailed {
		t.Errorf("the second group run's audit record does not name its snapshot and what retention deleted")
	}
}

// TestLocalMatchesSocket: the in-process path gives the same bytes and
// errors as the socket.
func TestLocalMatchesSocket(t *testing.T) {
	dir, ds := newStore(t)
	defer ds.Close()
	writeFile(t, ds.NS, "a.img", []byte("a"))
	svc, err := NewService(ds, dir, Options{Via: "daemon"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	cl := serveSocket(t, svc)
	local := Local{Service: svc, Peer: SelfPeer()}
	ctx := context.Background()
	if _, err := (API{local}).GroupCreate(ctx, GroupCreateArgs{Name: "g", Match: []string{"*.img"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		op   string
		args any
	}{
		{"group.list", Empty{}},
		{"group.show", NameArgs{Name: "g"}},
		{"group.show", NameArgs{Name: "nosuch"}},
		{"snapshot.show", IDArgs{ID: "7"}},
		{"snapshot.show", IDArgs{ID: "junk"}},
		{"ls", LsArgs{}},
		{"nosuch", Empty{}},
	} {
		var a, b json.RawMessage
		errA := cl.Call(ctx, c.op, c.args, &a)
		errB := local.Call(ctx, c.op, c.args, &b)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: socket answered %s, in-process %s", c.op, a, b)
		}
		if fmt.Sprint(errA) != fmt.Sprint(errB) || !reflect.DeepEqual(errA, errB) {
			t.Errorf("%s: socket error %#v, in-process %#v", c.op, errA, errB)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	for _, w := range wireErrors {
		err := fmt.Errorf("context: %w", w.err)
		we := wireError(err)
		if we.Code != w.code || we.Status != w.status || we.Msg != err.Error() {
			t.Errorf("wireError(%v) = %+v", err, we)
		}
		back := errorFromWire(we.Code, we.Msg, we.Status)
		if !errors.Is(back, w.err) || back.Error() != err.Error() {
			t.Errorf("%s: came back as %v", w.code, back)
		}
	}
	we := wireError(errors.New("disk on fire"))
	if we.Code != "internal" || we.Status != 500 || !errors.Is(errorFromWire(we.Code, we.Msg, we.Status), ErrDaemon) {
		t.Errorf("an error without a sentinel: %+v", we)
	}
	// The more specific sentinel wins.
	we = wireError(&msgError{"x", snapstore.ErrNoGroup})
	if we.Code != "no_group" || we.Status != 404 {
		t.Errorf("unknown group: %+v", we)
	}
}

// TestStaleSocket: a socket left by a daemon that died is seen as no
// daemon and is replaced by the next Listen; a live one is not.
func TestStaleSocket(t *testing.T) {
	dir, ds := newStore(t)
	defer ds.Close()
	path := filepath.Join(dir, SocketFile)
	if _, err := Dial(context.Background(), dir); !errors.Is(err, ErrNoDaemon) || err.Error() != "daemon not running on "+dir {
		t.Errorf("dial without a socket: %v", err)
	}
	// A dead daemon's socket: bound, then closed without unlinking.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(context.Background(), dir); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("dial of a stale socket: %v", err)
	}
	svc, err := NewService(ds, dir, Options{Via: "daemon"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	cl := serveSocket(t, svc)
	if _, err := cl.Ping(context.Background()); err != nil {
		t.Fatalf("the daemon that replaced the stale socket: %v", err)
	}
	// A second daemon on the same socket is refused.
	if _, err := Listen(svc); err == nil || !strings.Contains(err.Error(), "another daemon answers") {
		t.Errorf("a second Listen: %v", err)
	}
	// Not a socket: refused, left alone.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, SocketFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc2, err := NewService(ds, other, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	if _, err := Listen(svc2); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
}

// TestAPICoversOps: every operation has an API method and every API
// method an operation.
func TestAPICoversOps(t *testing.T) {
	typ := reflect.TypeOf(API{})
	if typ.NumMethod() != len(ops) {
		t.Errorf("API has %d methods, the server %d operations", typ.NumMethod(), len(ops))
	}
	_, ds := newStore(t)
	defer ds.Close()
	// Each API method reaches an operation (not ErrUnknownOp).
	rec := &recorder{}
	api := reflect.ValueOf(API{rec})
	for i := range typ.NumMethod() {
		m := typ.Method(i)
		args := []reflect.Value{reflect.ValueOf(context.Background()), reflect.New(m.Type.In(2)).Elem()}
		api.Method(i).Call(args)
		if _, ok := ops[rec.op]; !ok {
			t.Errorf("API.%s calls %q, which is no operation", m.Name, rec.op)
		}
	}
}

type recorder struct{ op string }

func (r *recorder) Call(_ context.Context, op string, _, _ any) error {
	r.op = op
	return nil
}

// TestSnapshotSpace: snapshot show and status report the bytes only a
// snapshot holds: none while the live file still has its data, the old
// data's once the file is overwritten.
func TestSnapshotSpace(t *testing.T) {
	dir, ds := newStore(t)
	defer ds.Close()
	old := make([]byte, 64<<10)
	for i := range old {
		old[i] = byte(i*7 + i/251)
	}
	writeFile(t, ds.NS, "disk.img", old)
	svc, err := NewService(ds, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	api := API{serveSocket(t, svc)}
	ctx := context.Background()
	if _, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "g", Match: []string{"disk.img"}}); err != nil {
		t.Fatal(err)
	}
	s, err := api.SnapshotCreate(ctx, SnapshotCreateArgs{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := api.SnapshotShow(ctx, IDArgs{ID: s.ID})
	if err != nil || d.UniqueBytes != 0 {
		t.Errorf("a snapshot of an unchanged file: unique %d bytes, %v; want 0", d.UniqueBytes, err)
	}
	fresh := make([]byte, 64<<10)
	for i := range fresh {
		fresh[i] = byte(i*13 + i/241 + 1)
	}
	writeFile(t, ds.NS, "disk.img", fresh)
	d, err = api.SnapshotShow(ctx, IDArgs{ID: s.ID})
	if err != nil || d.UniqueBytes == 0 || d.UniqueChunks != 16 {
		t.Errorf("after the file was overwritten: unique %d bytes in %d chunks, %v; want the 16 old blocks", d.UniqueBytes, d.UniqueChunks, err)
	}
	st, err := api.Status(ctx, Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Snapshots) != 1 || st.Snapshots[0].ID != s.ID || st.Snapshots[0].UniqueBytes != d.UniqueBytes || st.Snapshots[0].LogicalBytes != 64<<10 {
		t.Errorf("status snapshots: %+v; want %s with %d unique and 65536 logical bytes", st.Snapshots, s.ID, d.UniqueBytes)
	}
}
