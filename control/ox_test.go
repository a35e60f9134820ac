package control

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/objex"
	"github.com/dstore/dstore/snapstore"
)

// oxNode is a datastore on disk opened as dstore serve opens it: the
// objex manager on DIR/ox (its Remote resolving imported files), the
// datastore, the manager attached, and a Service with both.
type oxNode struct {
	t   *testing.T
	dir string
	ds  *snapstore.Datastore
	m   *objex.Manager
	svc *Service
	pp  *Passphrases
	clk snapstore.Clock
}

func newOXNode(t *testing.T, clk snapstore.Clock) *oxNode {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	n := &oxNode{t: t, dir: dir, clk: clk}
	n.open()
	t.Cleanup(n.close)
	return n
}

func (n *oxNode) open() {
	n.t.Helper()
	n.pp = NewPassphrases()
	m, err := objex.Open(objex.Config{Dir: filepath.Join(n.dir, "ox"), Getenv: n.pp.Getenv, Logger: slog.New(slog.DiscardHandler),
		Retry: objex.RetryPolicy{Attempts: 2, Base: 10 * time.Millisecond, Max: 50 * time.Millisecond, Timeout: 10 * time.Second}})
	if err != nil {
		n.t.Fatal(err)
	}
	o := testOpts()
	o.Remote = m.Remote
	ds, err := snapstore.Open(n.dir, o)
	if err != nil {
		n.t.Fatal(err)
	}
	if n.clk != nil {
		ds.NS.UseClock(n.clk)
	}
	if err := m.Attach(ds); err != nil {
		n.t.Fatal(err)
	}
	svc, err := NewService(ds, n.dir, Options{Via: "daemon", OX: m, Passphrases: n.pp, Clock: n.clk})
	if err != nil {
		n.t.Fatal(err)
	}
	n.ds, n.m, n.svc = ds, m, svc
}

func (n *oxNode) close() {
	if n.svc == nil {
		return
	}
	if err := n.svc.Close(); err != nil {
		n.t.Error(err)
	}
	if err := n.m.Close(); err != nil {
		n.t.Error(err)
	}
	if err := n.ds.Close(); err != nil {
		n.t.Error(err)
	}
	n.svc = nil
}

// wait waits for a job to end and returns it as it ended.
func wait(t *testing.T, api API, id uint64) Job {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		j, err := api.Job(context.Background(), JobArgs{ID: id})
		if err != nil {
			t.Fatalf("job %d: %v", id, err)
		}
		if j.State == objex.JobDone || j.State == objex.JobFailed {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d did not end: %+v", id, j)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeKeyFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "ox.key")
	if err := os.WriteFile(p, randBytes(32), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOXOverSocket drives the OX operations through the daemon's socket
// on real parts (a file:// target): target add, list, export of a
// snapshot, target snapshots, import of one file and of a whole snapshot
// whose bytes equal the snapshot's, jobs, set_bandwidth, verify, remove;
// and the errors that name what was wrong.
func TestOXOverSocket(t *testing.T) {
	n := newOXNode(t, nil)
	disk := randBytes(300 << 10)
	writeFile(t, n.ds.NS, "vms/a.img", disk)
	// A partial last block (imported where its content is local).
	small := append(bytes.Repeat([]byte("0123456789abcdef"), 256), "small file"...)
	writeFile(t, n.ds.NS, "vms/b.img", small)
	api := API{serveSocket(t, n.svc)}
	ctx := context.Background()
	if _, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "vms", Match: []string{"vms"}}); err != nil {
		t.Fatal(err)
	}
	sn, err := api.SnapshotCreate(ctx, SnapshotCreateArgs{Group: "vms"})
	if err != nil {
		t.Fatal(err)
	}
	turl := "file://" + t.TempDir() + "/target"
	kf := writeKeyFile(t)

	if _, err := api.TargetList(ctx, Empty{}); err != nil {
		t.Fatal(err)
	}
	tg, err := api.TargetAdd(ctx, TargetAddArgs{Name: "nas", URL: turl, KeyFile: kf, Bandwidth: 50e6})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name != "nas" || tg.URL != turl || len(tg.ID) != 32 || tg.KeyFile != kf || tg.Bandwidth != 50e6 || len(tg.Groups) != 0 {
		t.Errorf("target add: %+v", tg)
	}
	if _, err := api.TargetAdd(ctx, TargetAddArgs{Name: "nas", URL: turl, KeyFile: kf}); !errors.Is(err, snapstore.ErrExist) || err.Error() != `target "nas" exists` {
		t.Errorf("target add twice: %v", err)
	}
	if _, err := api.TargetAdd(ctx, TargetAddArgs{Name: "x", URL: turl}); !errors.Is(err, snapstore.ErrInvalid) {
		t.Errorf("target add without a key: %v", err)
	}
	ts, err := api.TargetList(ctx, Empty{})
	if err != nil || len(ts) != 1 || !reflect.DeepEqual(ts[0], tg) {
		t.Errorf("target list: %+v %v", ts, err)
	}

	// Export.
	if _, err := api.Export(ctx, ExportArgs{Snapshot: sn.ID, Target: "nosuch"}); !errors.Is(err, ErrNoTarget) || err.Error() != `unknown target "nosuch"` {
		t.Errorf("export to an unknown target: %v", err)
	}
	if _, err := api.Export(ctx, ExportArgs{Snapshot: "99", Target: "nas"}); !errors.Is(err, snapstore.ErrNoSnapshot) || err.Error() != "snapshot 99 not found" {
		t.Errorf("export of an unknown snapshot: %v", err)
	}
	j, err := api.Export(ctx, ExportArgs{Snapshot: sn.ID, Target: "nas"})
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != "export" || j.Target != "nas" || j.Snapshot != "vms@"+sn.ID || j.ID == 0 {
		t.Errorf("export: %+v", j)
	}
	j = wait(t, api, j.ID)
	if j.State != objex.JobDone || j.BytesTotal != int64(len(disk)+len(small)) || j.BytesDone != j.BytesTotal || j.BytesMoved == 0 || j.Error != "" || j.Finished == nil {
		t.Errorf("export job at its end: %+v", j)
	}
	ss, err := api.TargetSnapshots(ctx, TargetArgs{Name: "nas"})
	if err != nil || len(ss) != 1 {
		t.Fatalf("target snapshots: %+v %v", ss, err)
	}
	s0 := ss[0]
	if s0.Name != "vms@"+sn.ID || s0.Snapshot != sn.ID || s0.Seq != sn.Seq || s0.Group != "vms" || !s0.ThisDatastore || s0.ByGroup ||
		s0.DatastoreID != n.ds.Blocks.ID() || len(s0.Files) != 2 || s0.Files[0].Path != "vms/a.img" || s0.Files[0].Size != int64(len(disk)) ||
		s0.Files[0].Mode != "0644" || s0.Stored == 0 || s0.Exported == nil {
		t.Errorf("target snapshots: %+v", s0)
	}

	// Import one file and the whole snapshot: bytes equal the snapshot's.
	r, err := api.Import(ctx, ImportArgs{Target: "nas", Snapshot: s0.Name, Path: "/vms/a.img", HasPath: true, NewPath: "copy/a.img"})
	if err == nil || !errors.Is(err, snapstore.ErrNotExist) {
		// copy/ does not exist: a single import makes no directories.
		t.Errorf("import into a missing directory: %+v %v", r, err)
	}
	if _, err := api.Import(ctx, ImportArgs{Target: "nas", Snapshot: "nosuch", NewPath: "x"}); !errors.Is(err, objex.ErrNotExist) ||
		err.Error() != `target nas has no snapshot "nosuch" (see dstore target snapshots nas)` {
		t.Errorf("import of a missing snapshot: %v", err)
	}
	r, err = api.Import(ctx, ImportArgs{Target: "nas", Snapshot: s0.Name, Path: "/vms/a.img", HasPath: true, NewPath: "a-copy.img"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Files) != 1 || r.Files[0] != (ImportedFile{Member: "vms/a.img", Path: "a-copy.img", Size: uint64(len(disk)), Job: r.Files[0].Job}) || r.Files[0].Job == 0 {
		t.Errorf("import: %+v", r)
	}
	if got := readLive(t, n.ds.NS, "a-copy.img"); !bytes.Equal(got, disk) {
		t.Error("the imported file differs from the snapshot's")
	}
	ra, err := api.Import(ctx, ImportArgs{Target: "nas", Snapshot: s0.Name, NewPath: "restored"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ra.Files) != 2 || ra.Files[0].Member != "vms/a.img" || ra.Files[0].Path != "restored/vms/a.img" || ra.Files[1].Path != "restored/vms/b.img" || ra.Files[1].Size != uint64(len(small)) {
		t.Errorf("import of every file: %+v", ra)
	}
	if got := readLive(t, n.ds.NS, "restored/vms/b.img"); !bytes.Equal(got, small) {
		t.Errorf("restored/vms/b.img = %q", got)
	}
	for _, f := range append(r.Files, ra.Files...) {
		if j := wait(t, api, f.Job); j.State != objex.JobDone || j.Kind != "import" || j.Path != f.Path || j.BytesDone != j.BytesTotal {
			t.Errorf("import job of %s: %+v", f.Path, j)
		}
	}
	if got := readLive(t, n.ds.NS, "restored/vms/a.img"); !bytes.Equal(got, disk) {
		t.Error("restored/vms/a.img differs from the snapshot's")
	}
	js, err := api.Jobs(ctx, Empty{})
	if err != nil || len(js) != 4 || js[0].Kind != "export" || js[1].Kind != "import" || js[3].Path != "restored/vms/b.img" {
		t.Errorf("jobs: %+v %v", js, err)
	}
	if _, err := api.Job(ctx, JobArgs{ID: 999}); !errors.Is(err, ErrNoJob) || err.Error() != "job 999 not found" {
		t.Errorf("job 999: %v", err)
	}
	st, err := api.Status(ctx, Empty{})
	if err != nil || st.RemoteBytesFetched != 0 {
		// An import into the datastore that exported fetches nothing.
		t.Errorf("status: remote_bytes_fetched %d, %v", st.RemoteBytesFetched, err)
	}

	// Bandwidth, verify, and the group that names the target.
	if tg, err := api.TargetSetBandwidth(ctx, TargetBandwidthArgs{Name: "nas", Bandwidth: 1 << 20}); err != nil || tg.Bandwidth != 1<<20 {
		t.Errorf("set bandwidth: %+v %v", tg, err)
	}
	v, err := api.TargetVerify(ctx, TargetVerifyArgs{Name: "nas", Deep: true})
	if err != nil || v.Snapshots != 1 || v.Objects != 1 || v.Chunks == 0 || v.Bytes == 0 || len(v.Problems) != 0 || !v.Deep {
		t.Errorf("target verify: %+v %v", v, err)
	}
	if _, err := api.GroupEdit(ctx, GroupEditArgs{Name: "vms", Targets: []string{"nosuch"}}); !errors.Is(err, ErrNoTarget) {
		t.Errorf("group edit with an unknown target: %v", err)
	}
	if _, err := api.GroupEdit(ctx, GroupEditArgs{Name: "vms", Targets: []string{"nas"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.TargetRemove(ctx, TargetRemoveArgs{Name: "nas"}); err == nil || !strings.Contains(err.Error(), "groups export to it (vms)") {
		t.Errorf("target remove while a group exports to it: %v", err)
	}
	if rr, err := api.TargetRemove(ctx, TargetRemoveArgs{Name: "nas", Force: true}); err != nil || rr.Name != "nas" {
		t.Errorf("target remove --force: %+v %v", rr, err)
	}
	if ts, err := api.TargetList(ctx, Empty{}); err != nil || len(ts) != 0 {
		t.Errorf("target list after remove: %+v %v", ts, err)
	}
	if _, err := api.TargetSnapshots(ctx, TargetArgs{Name: "nas"}); !errors.Is(err, ErrNoTarget) {
		t.Errorf("snapshots of a removed target: %v", err)
	}

	var ops []string
	for _, a := range readAudit(t, n.dir) {
		ops = append(ops, a.Operation+" "+a.Result)
	}
	for _, want := range []string{"target.add ok", `target.add target "nas" exists`, "export ok", "import ok", "target.set_bandwidth ok", "target.remove ok"} {
		if !contains(ops, want) {
			t.Errorf("audit log lacks %q: %v", want, ops)
		}
	}
	for _, notWant := range []string{"target.list ok", "target.snapshots ok", "jobs ok", "job ok", "target.verify ok"} {
		if contains(ops, notWant) {
			t.Errorf("audit log has %q, a read", notWant)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestOXPassphrases: a passphrase sent with target.add opens the target
// and goes nowhere else (audit log, results); rekey to another variable
// works with the current one sent, unlock refuses a wrong one.
func TestOXPassphrases(t *testing.T) {
	n := newOXNode(t, nil)
	local := API{Local{Service: n.svc, Peer: SelfPeer()}}
	ctx := context.Background()
	const pass, pass2 = "correct horse battery staple", "tr0ub4dor&3 is a worse one"
	turl := "file://" + t.TempDir() + "/target"
	if _, err := local.TargetAdd(ctx, TargetAddArgs{Name: "p", URL: turl, PassphraseEnv: "DSTORE_TEST_UNSET_VAR"}); err == nil ||
		!strings.Contains(err.Error(), "DSTORE_TEST_UNSET_VAR is empty or unset") {
		t.Errorf("target add with an unset variable: %v", err)
	}
	tg, err := local.TargetAdd(ctx, TargetAddArgs{Name: "p", URL: turl, PassphraseEnv: "DSTORE_TEST_PASS", Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	if tg.PassphraseEnv != "DSTORE_TEST_PASS" || tg.KeyFile != "" {
		t.Errorf("target add: %+v", tg)
	}
	if _, err := local.TargetRekey(ctx, TargetRekeyArgs{Name: "p", PassphraseEnv: "DSTORE_TEST_PASS", Passphrase: pass2}); !errors.Is(err, snapstore.ErrInvalid) {
		t.Errorf("rekey to the same variable: %v", err)
	}
	// A restarted daemon whose environment lacks the variable.
	n.close()
	n.open()
	local = API{Local{Service: n.svc, Peer: SelfPeer()}}
	if _, err := local.TargetSnapshots(ctx, TargetArgs{Name: "p"}); err == nil || !strings.Contains(err.Error(), "DSTORE_TEST_PASS is empty or unset") {
		t.Errorf("snapshots without the passphrase: %v", err)
	}
	if _, err := local.TargetUnlock(ctx, TargetUnlockArgs{Name: "p", Passphrase: pass2}); !errors.Is(err, objex.ErrKey) {
		t.Errorf("unlock with a wrong passphrase: %v", err)
	}
	if _, err := local.TargetUnlock(ctx, TargetUnlockArgs{Name: "p", Passphrase: pass}); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if ss, err := local.TargetSnapshots(ctx, TargetArgs{Name: "p"}); err != nil || len(ss) != 0 {
		t.Errorf("snapshots after unlock: %+v %v", ss, err)
	}
	tg, err = local.TargetRekey(ctx, TargetRekeyArgs{Name: "p", PassphraseEnv: "DSTORE_TEST_PASS2", Passphrase: pass2, CurrentPassphrase: pass})
	if err != nil || tg.PassphraseEnv != "DSTORE_TEST_PASS2" {
		t.Fatalf("rekey: %+v %v", tg, err)
	}
	// Only the new passphrase opens the target now.
	n.close()
	n.open()
	local = API{Local{Service: n.svc, Peer: SelfPeer()}}
	if _, err := local.TargetUnlock(ctx, TargetUnlockArgs{Name: "p", Passphrase: pass}); !errors.Is(err, objex.ErrKey) {
		t.Errorf("unlock with the old passphrase after rekey: %v", err)
	}
	if _, err := local.TargetUnlock(ctx, TargetUnlockArgs{Name: "p", Passphrase: pass2}); err != nil {
		t.Errorf("unlock with the new passphrase: %v", err)
	}

	audit, err := os.ReadFile(filepath.Join(n.dir, AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(audit, []byte(pass)) || bytes.Contains(audit, []byte(pass2)) || bytes.Contains(audit, []byte("correct horse")) {
		t.Errorf("the audit log holds a passphrase:\n%s", audit)
	}
	if c := bytes.Count(audit, []byte(`"passphrase":"(redacted)"`)); c < 4 {
		t.Errorf("the audit log shows %d redacted passphrases, want at least 4:\n%s", c, audit)
	}
	ox, err := os.ReadFile(filepath.Join(n.dir, "ox", "ox.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ox, []byte(pass)) || bytes.Contains(ox, []byte(pass2)) {
		t.Error("ox.db holds a passphrase")
	}
}

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"name":"s3","secret_key":"SEKRIT","access_key":"AKIA","passphrase":"pw","url":"s3://b"}`,
			`{"access_key":"(redacted)","name":"s3","passphrase":"(redacted)","secret_key":"(redacted)","url":"s3://b"}`},
		{`{"name":"g","match":["a"]}`, `{"name":"g","match":["a"]}`},
		{`{"name":"n","secret_key":""}`, `{"name":"n","secret_key":""}`},
		{`{"current_passphrase":"old"}`, `{"current_passphrase":"(redacted)"}`},
		{`not json with secret_key SEKRIT`, `"(redacted: not a JSON object)"`},
	} {
		if got := string(auditArgs([]byte(c.in))); got != c.want {
			t.Errorf("auditArgs(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestScheduledExportsAndTargetPrune: a group that names a target exports
// every snapshot group run and the scheduler take (audited as export);
// target prune deletes exactly the manifests of snapshots this datastore
// exported for the group and that retention deleted here: not a snapshot
// exported by hand, not one deleted by hand, not another datastore's;
// then the objects only those named.
func TestScheduledExportsAndTargetPrune(t *testing.T) {
	clk := snapstore.NewFakeClock(time.Date(2026, 11, 21, 10, 0, 30, 0, time.Local))
	a := newOXNode(t, clk)
	b := newOXNode(t, nil)
	ctx := context.Background()
	turl := "file://" + t.TempDir() + "/target"
	kf := writeKeyFile(t)
	v1, v2, v3 := randBytes(96<<10), randBytes(96<<10), randBytes(96<<10)
	writeFile(t, a.ds.NS, "db.img", v1)
	writeFile(t, b.ds.NS, "b.img", randBytes(64<<10))
	apiA, apiB := API{Local{Service: a.svc, Peer: SelfPeer()}}, API{Local{Service: b.svc, Peer: SelfPeer()}}
	for _, x := range []API{apiA, apiB} {
		if _, err := x.TargetAdd(ctx, TargetAddArgs{Name: "off", URL: turl, KeyFile: kf}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := apiA.GroupCreate(ctx, GroupCreateArgs{Name: "db", Match: []string{"db.img"}, Targets: []string{"nosuch"}}); !errors.Is(err, ErrNoTarget) {
		t.Errorf("group create with an unknown target: %v", err)
	}
	if _, err := apiA.GroupCreate(ctx, GroupCreateArgs{Name: "db", Match: []string{"db.img"}, Targets: []string{"off"},
		Retention: snapstore.Retention{KeepLast: 2}, Schedules: []string{"@hourly"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apiB.GroupCreate(ctx, GroupCreateArgs{Name: "db", Match: []string{"b.img"}, Targets: []string{"off"},
		Retention: snapstore.Retention{KeepLast: 1}}); err != nil {
		t.Fatal(err)
	}
	run := func(api API, g string) RunResult {
		t.Helper()
		r, err := api.GroupRun(ctx, GroupRunArgs{Name: g})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Exports) != 1 || r.Exports[0].Target != "off" || r.Exports[0].Error != "" || r.Exports[0].Name != "db@"+r.ID {
			t.Fatalf("group run exports: %+v", r.Exports)
		}
		if j := wait(t, api, r.Exports[0].Job); j.State != objex.JobDone {
			t.Fatalf("the group's export: %+v", j)
		}
		return r
	}
	// B: two runs, retention (keep last 1) deletes B's first.
	b1 := run(apiB, "db")
	b2 := run(apiB, "db")
	if !reflect.DeepEqual(b2.Deleted, []string{b1.ID}) {
		t.Fatalf("B's retention: %+v", b2)
	}

	// A: a run (v1), a snapshot exported by hand (v2), a scheduled run
	// (v3) whose retention (keep last 2) deletes the first.
	r1 := run(apiA, "db")
	ino, _ := a.ds.NS.LookupPath("db.img")
	if _, err := a.ds.NS.Write(ino.Ino, v2, 0, true); err != nil {
		t.Fatal(err)
	}
	sHand, err := apiA.SnapshotCreate(ctx, SnapshotCreateArgs{Group: "db"})
	if err != nil {
		t.Fatal(err)
	}
	jh, err := apiA.Export(ctx, ExportArgs{Snapshot: sHand.ID, Target: "off"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, apiA, jh.ID)
	if _, err := a.ds.NS.Write(ino.Ino, v3, 0, true); err != nil {
		t.Fatal(err)
	}
	sched := a.svc.NewScheduler(nil)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sched.Run(sctx) }()
	idle := func() {
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		if err := sched.WaitIdle(wctx); err != nil {
			t.Fatal(err)
		}
	}
	idle()
	clk.Advance(time.Hour)
	idle()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var schedExport AuditRecord
	for _, r := range auditOps(t, a.dir, "export") {
		if r.Via == "scheduler" {
			schedExport = r
		}
	}
	var ea exportArgs
	if err := json.Unmarshal(schedExport.Arguments, &ea); err != nil || ea.Target != "off" || ea.Group != "db" || schedExport.Result != "ok" || !strings.HasPrefix(schedExport.Detail, "job ") {
		t.Fatalf("the scheduler's export in the audit log: %+v (%v)", schedExport, err)
	}
	sn, err := a.ds.NS.Snapshot(mustSeq(t, ea.Snapshot))
	if err != nil || !sn.Scheduled {
		t.Fatalf("the scheduled snapshot %s: %v", ea.Snapshot, err)
	}
	var schedJob Job
	js, _ := apiA.Jobs(ctx, Empty{})
	for _, j := range js {
		if j.Snapshot == "db@"+ea.Snapshot {
			schedJob = wait(t, apiA, j.ID)
		}
	}
	if schedJob.State != objex.JobDone {
		t.Fatalf("the scheduled snapshot's export: %+v", schedJob)
	}
	// keep-last 2 kept the scheduled one and the one by hand: r1 is gone.
	if _, err := a.ds.NS.Snapshot(mustSeq(t, r1.ID)); !errors.Is(err, snapstore.ErrNoSnapshot) {
		t.Fatalf("retention kept %s: %v", r1.ID, err)
	}
	// The scheduled one deleted by hand; one more run, which keeps the
	// last two (the one by hand and itself).
	if _, err := apiA.SnapshotDelete(ctx, IDArgs{ID: ea.Snapshot}); err != nil {
		t.Fatal(err)
	}
	r3 := run(apiA, "db")
	if len(r3.Deleted) != 0 {
		t.Fatalf("the last run's retention deleted %v", r3.Deleted)
	}
	names := func(api API) []string {
		ss, err := api.TargetSnapshots(ctx, TargetArgs{Name: "off"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	all := []string{"db@" + b1.ID, "db@" + b2.ID, "db@" + r1.ID, "db@" + sHand.ID, "db@" + ea.Snapshot, "db@" + r3.ID}
	if got := names(apiA); !reflect.DeepEqual(got, all) {
		t.Fatalf("target snapshots: %v, want %v", got, all)
	}

	dry, err := apiA.TargetPrune(ctx, TargetPruneArgs{Name: "off", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"db@" + b1.ID:       "keep exported by another datastore",
		"db@" + b2.ID:       "keep exported by another datastore",
		"db@" + r1.ID:       "delete retention deleted " + r1.ID,
		"db@" + sHand.ID:    "keep exported by hand",
		"db@" + ea.Snapshot: "keep deleted here, not by retention",
		"db@" + r3.ID:       "keep kept here",
	}
	got := map[string]string{}
	for _, d := range dry.Plan {
		act := "keep"
		if !d.Keep {
			act = "delete"
		}
		got[d.Name] = act + " " + d.Reason
		if !strings.HasPrefix(got[d.Name], "keep exported by another datastore") {
			continue
		}
		got[d.Name] = "keep exported by another datastore"
	}
	if !reflect.DeepEqual(got, want) || len(dry.DeletedSnapshots) != 0 || !dry.DryRun {
		t.Fatalf("target prune --dry-run:\n%+v\nwant %+v", dry, want)
	}
	if got := names(apiA); !reflect.DeepEqual(got, all) {
		t.Fatalf("a dry run changed the target: %v", got)
	}
	zero := snapstore.Duration(0)
	pr, err := apiA.TargetPrune(ctx, TargetPruneArgs{Name: "off", Grace: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pr.DeletedSnapshots, []string{"db@" + r1.ID}) || pr.Objects != 1 || pr.Bytes < int64(len(v1)) {
		// The object of r1 (v1) is named by no other snapshot.
		t.Fatalf("target prune: %+v", pr)
	}
	left := []string{"db@" + b1.ID, "db@" + b2.ID, "db@" + sHand.ID, "db@" + ea.Snapshot, "db@" + r3.ID}
	if got := names(apiA); !reflect.DeepEqual(got, left) {
		t.Fatalf("after target prune: %v, want %v", got, left)
	}
	// B prunes its own.
	prB, err := apiB.TargetPrune(ctx, TargetPruneArgs{Name: "off", Grace: &zero})
	if err != nil || !reflect.DeepEqual(prB.DeletedSnapshots, []string{"db@" + b1.ID}) {
		t.Fatalf("B's target prune: %+v %v", prB, err)
	}
	if v, err := apiA.TargetVerify(ctx, TargetVerifyArgs{Name: "off", Deep: true}); err != nil || len(v.Problems) != 0 || v.Snapshots != 4 {
		t.Fatalf("verify after the prunes: %+v %v", v, err)
	}
	// What is left still imports, byte for byte.
	r, err := apiA.Import(ctx, ImportArgs{Target: "off", Snapshot: "db@" + sHand.ID, Path: "db.img", HasPath: true, NewPath: "hand.img"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, apiA, r.Files[0].Job)
	if got := readLive(t, a.ds.NS, "hand.img"); !bytes.Equal(got, v2) {
		t.Error("the hand export's import differs from its snapshot")
	}
	var prAudit []AuditRecord
	for _, r := range auditOps(t, a.dir, "target.prune") {
		prAudit = append(prAudit, r)
	}
	if len(prAudit) != 2 || !strings.Contains(prAudit[1].Detail, "deleted snapshots db@"+r1.ID) {
		t.Errorf("target prune in the audit log: %+v", prAudit)
	}
}

func mustSeq(t *testing.T, id string) uint64 {
	t.Helper()
	seq, err := snapstore.ParseSnapshotID(id)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestExportNotStarted: a group run whose target cannot be reached still
// takes its snapshot; the export's failure is in the result, the log and
// the audit log.
func TestExportNotStarted(t *testing.T) {
	n := newOXNode(t, nil)
	writeFile(t, n.ds.NS, "f.img", []byte("data"))
	ctx := context.Background()
	api := API{Local{Service: n.svc, Peer: SelfPeer()}}
	dir := t.TempDir() + "/target"
	if _, err := api.TargetAdd(ctx, TargetAddArgs{Name: "gone", URL: "file://" + dir, KeyFile: writeKeyFile(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "g", Match: []string{"f.img"}, Targets: []string{"gone"}}); err != nil {
		t.Fatal(err)
	}
	// The target loses its key object: opening it fails.
	n.close()
	if err := os.Remove(filepath.Join(dir, "ox1", "key")); err != nil {
		t.Fatal(err)
	}
	n.open()
	api = API{Local{Service: n.svc, Peer: SelfPeer()}}
	r, err := api.GroupRun(ctx, GroupRunArgs{Name: "g"})
	if err != nil || r.ID == "" {
		t.Fatalf("group run: %+v %v", r, err)
	}
	if len(r.Exports) != 1 || r.Exports[0].Error == "" || r.Exports[0].Job != 0 {
		t.Fatalf("exports: %+v", r.Exports)
	}
	ex := auditOps(t, n.dir, "export")
	if len(ex) != 1 || ex[0].Result != r.Exports[0].Error || ex[0].Via != "daemon" || ex[0].PID == nil {
		t.Errorf("the failed export in the audit log: %+v", ex)
	}
	gr := auditOps(t, n.dir, "group.run")
	if len(gr) != 1 || gr[0].Result != "ok" || !strings.Contains(gr[0].Detail, "export to gone did not start") {
		t.Errorf("group.run in the audit log: %+v", gr)
	}
}
