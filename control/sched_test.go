package control

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// daemon is a datastore on disk with a Service and its Scheduler running
// on a FakeClock, as dstore serve runs them.
type daemon struct {
	t      *testing.T
	dir    string
	ds     *snapstore.Datastore
	svc    *Service
	sched  *snapstore.Scheduler
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(t *testing.T, dir string, clk *snapstore.FakeClock) *daemon {
	t.Helper()
	ds, err := snapstore.Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	ds.NS.UseClock(clk)
	svc, err := NewService(ds, dir, Options{Via: "daemon", Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: dir, ds: ds, svc: svc, sched: svc.NewScheduler(nil), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- d.sched.Run(ctx) }()
	d.idle()
	return d
}

// idle waits until the scheduler has handled the clock's time.
func (d *daemon) idle() {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.sched.WaitIdle(ctx); err != nil {
		d.t.Fatalf("scheduler not idle: %v", err)
	}
}

func (d *daemon) stop() {
	d.t.Helper()
	d.cancel()
	if err := <-d.done; err != nil {
		d.t.Errorf("scheduler: %v", err)
	}
	if err := d.svc.Close(); err != nil {
		d.t.Error(err)
	}
	if err := d.ds.Close(); err != nil {
		d.t.Error(err)
	}
}

func (d *daemon) snapTimes(group string) []time.Time {
	var out []time.Time
	for _, s := range d.ds.NS.Snapshots(group) {
		if !s.Scheduled {
			d.t.Errorf("snapshot %s was not marked scheduled", s.ID())
		}
		out = append(out, time.Unix(0, s.Created).In(time.Local))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

func auditOps(t *testing.T, dir, op string) []AuditRecord {
	var out []AuditRecord
	for _, r := range readAudit(t, dir) {
		if r.Operation == op {
			out = append(out, r)
		}
	}
	return out
}

// TestSchedulerInDaemon: with an injected clock, a group's schedule
// fires, each run applies retention and keeps exactly what the policy
// says; a restart (the datastore closed and opened again from disk) keeps
// the group and its history, reports the runs missed while it was down
// once, durably, and not again at the next restart; a group made through
// the API is scheduled at once (Wake).
func TestSchedulerInDaemon(t *testing.T) {
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	// Local time, away from daylight saving changes.
	at := func(h, m int) time.Time { return time.Date(2026, 6, 10, h, m, 0, 0, time.Local) }
	clk := snapstore.NewFakeClock(at(9, 50))
	d := startDaemon(t, dir, clk)
	writeFile(t, d.ds.NS, "vms/a.vmdk", []byte("a"))
	api := API{Local{Service: d.svc, Peer: SelfPeer()}}
	ctx := context.Background()
	_, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "vms", Match: []string{"vms"}, Schedules: []string{"*/20 * * * *"},
		Retention: snapstore.Retention{KeepLast: 2, KeepHourly: 3}})
	if err != nil {
		t.Fatal(err)
	}
	d.idle()
	// Fire times 10:00, 10:20, ..., 12:40: nine runs.
	for m := 10 * 60; m <= 12*60+40; m += 20 {
		clk.Set(at(m/60, m%60))
		d.idle()
	}
	// keep last 2: 12:40, 12:20; 3 hourly: the newest of hours 12, 11, 10.
	want := []time.Time{at(10, 40), at(11, 40), at(12, 20), at(12, 40)}
	if got := d.snapTimes("vms"); !equalTimes(got, want) {
		t.Fatalf("after nine runs the group keeps %v, want %v", got, want)
	}
	if n := len(auditOps(t, dir, "schedule.run")); n != 9 {
		t.Errorf("%d schedule.run audit records, want 9", n)
	}
	g, _ := d.ds.NS.Group("vms")
	if g.Since != at(12, 40).UnixNano() || g.Missed != nil {
		t.Errorf("after the runs: Since %v, Missed %+v; want the last run and nothing missed", time.Unix(0, g.Since), g.Missed)
	}
	ids := func() []string {
		var out []string
		for _, s := range d.ds.NS.Snapshots("vms") {
			out = append(out, s.ID())
		}
		return out
	}
	before := ids()
	d.stop()

	// Down from 12:45 to 15:10: 13:00 ... 15:00 (seven runs) are missed.
	clk.Set(at(15, 10))
	d = startDaemon(t, dir, clk)
	if got := ids(); !reflect.DeepEqual(got, before) {
		t.Errorf("after a restart the snapshots are %v, want %v", got, before)
	}
	g, err = d.ds.NS.Group("vms")
	if err != nil {
		t.Fatalf("the group is gone after a restart: %v", err)
	}
	if g.Retention != (snapstore.Retention{KeepLast: 2, KeepHourly: 3}) || !reflect.DeepEqual(g.Schedules, []string{"*/20 * * * *"}) {
		t.Errorf("the group changed across the restart: %+v", g)
	}
	wantMissed := snapstore.Missed{Count: 7, First: at(13, 0).UnixNano(), Last: at(15, 0).UnixNano(), Noted: at(15, 10).UnixNano()}
	if g.Missed == nil || *g.Missed != wantMissed {
		t.Errorf("missed runs recorded as %+v, want %+v", g.Missed, wantMissed)
	}
	if g.Since != at(15, 0).UnixNano() {
		t.Errorf("Since %v after the missed runs were reported, want 15:00", time.Unix(0, g.Since))
	}
	missed := auditOps(t, dir, "schedule.missed")
	if len(missed) != 1 || missed[0].Result != "ok" || missed[0].Via != "scheduler" {
		t.Errorf("schedule.missed audit records: %+v", missed)
	}
	if got := d.snapTimes("vms"); !equalTimes(got, want) {
		t.Errorf("missed runs were run: the group has %v", got)
	}
	api = API{Local{Service: d.svc, Peer: SelfPeer()}}
	gv, err := api.GroupShow(ctx, NameArgs{Name: "vms"})
	if err != nil {
		t.Fatal(err)
	}
	if m := gv.Missed; m == nil || m.Count != 7 || !m.First.Equal(at(13, 0)) || !m.Last.Equal(at(15, 0)) || gv.NextRun == nil || !gv.NextRun.Equal(at(15, 20)) {
		t.Errorf("group show after the restart: missed %+v, next run %v", gv.Missed, gv.NextRun)
	}
	d.stop()

	// A second restart reports nothing again.
	clk.Set(at(15, 15))
	d = startDaemon(t, dir, clk)
	if n := len(auditOps(t, dir, "schedule.missed")); n != 1 {
		t.Errorf("a second restart reported missed runs again (%d records)", n)
	}
	if g, _ = d.ds.NS.Group("vms"); g.Missed == nil || *g.Missed != wantMissed {
		t.Errorf("after a second restart Missed is %+v, want %+v", g.Missed, wantMissed)
	}
	// The next fire time runs.
	clk.Set(at(15, 20))
	d.idle()
	// last 2: 15:20, 12:40; 3 hourly: the hours that hold snapshots, 15, 12, 11.
	want = []time.Time{at(11, 40), at(12, 40), at(15, 20)}
	if got := d.snapTimes("vms"); !equalTimes(got, want) {
		t.Errorf("after the 15:20 run the group keeps %v, want %v", got, want)
	}

	// A group made through the API is scheduled at once: the scheduler was
	// woken (its minute timer has not run out when the group fires).
	clk.Set(at(15, 20).Add(30 * time.Second))
	d.idle()
	api = API{Local{Service: d.svc, Peer: SelfPeer()}}
	writeFile(t, d.ds.NS, "db/x.img", []byte("x"))
	if _, err := api.GroupCreate(ctx, GroupCreateArgs{Name: "db", Match: []string{"db"}, Schedules: []string{"* * * * *"}}); err != nil {
		t.Fatal(err)
	}
	d.idle()
	clk.Set(at(15, 21))
	d.idle()
	if got := d.snapTimes("db"); !equalTimes(got, []time.Time{at(15, 21)}) {
		t.Errorf("the new group's snapshots: %v, want one at 15:21", got)
	}
	d.stop()
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
