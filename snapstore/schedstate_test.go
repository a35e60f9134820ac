package snapstore

import (
	"errors"
	"testing"
	"time"
)

// TestSchedState: runs and missed runs move a group's Since and Missed
// durably (across a close and reopen), Since never moves back, and a
// change of schedules starts the group's schedule history afresh.
func TestSchedState(t *testing.T) {
	dir := newDatastore(t)
	ds, err := Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 6, 10, 9, 30, 0, 0, time.UTC)
	clk := NewFakeClock(t0)
	ds.NS.UseClock(clk)
	if _, err := ds.NS.CreateGroup("g", GroupSpec{Match: []string{"*"}, Schedules: []string{"@hourly"}}); err != nil {
		t.Fatal(err)
	}
	g, _ := ds.NS.Group("g")
	if g.Since != t0.UnixNano() || g.Created != t0.UnixNano() {
		t.Fatalf("a new group: Since %d, Created %d; want both the clock's %d", g.Since, g.Created, t0.UnixNano())
	}
	run := t0.Add(30 * time.Minute)
	if err := ds.NS.NoteScheduledRun("g", run); err != nil {
		t.Fatal(err)
	}
	if err := ds.NS.NoteScheduledRun("g", t0); err != nil { // earlier: ignored
		t.Fatal(err)
	}
	first, last, noted := run.Add(time.Hour), run.Add(3*time.Hour), run.Add(3*time.Hour+10*time.Minute)
	if err := ds.NS.NoteMissedRuns("g", 3, first, last, noted); err != nil {
		t.Fatal(err)
	}
	if err := ds.NS.NoteScheduledRun("nosuch", run); !errors.Is(err, ErrNoGroup) {
		t.Errorf("NoteScheduledRun of an unknown group: %v, want ErrNoGroup", err)
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}

	ds, err = Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ds.Close() }()
	ds.NS.UseClock(clk)
	g, err = ds.NS.Group("g")
	if err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	if g.Since != last.UnixNano() {
		t.Errorf("after reopen: Since %v, want the last missed run %v", time.Unix(0, g.Since).UTC(), last)
	}
	want := Missed{Count: 3, First: first.UnixNano(), Last: last.UnixNano(), Noted: noted.UnixNano()}
	if g.Missed == nil || *g.Missed != want {
		t.Errorf("after reopen: Missed %+v, want %+v", g.Missed, want)
	}

	// Editing the retention keeps the history; new schedules start it anew.
	if _, err := ds.NS.EditGroup("g", func(s *GroupSpec) error { s.Retention.KeepLast = 2; return nil }); err != nil {
		t.Fatal(err)
	}
	if g, _ = ds.NS.Group("g"); g.Since != last.UnixNano() {
		t.Errorf("a retention edit moved Since to %v", time.Unix(0, g.Since).UTC())
	}
	later := last.Add(5 * time.Hour)
	clk.Set(later)
	if _, err := ds.NS.EditGroup("g", func(s *GroupSpec) error { s.Schedules = []string{"@daily"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if g, _ = ds.NS.Group("g"); g.Since != later.UnixNano() {
		t.Errorf("new schedules: Since %v, want now (%v)", time.Unix(0, g.Since).UTC(), later)
	}
}
