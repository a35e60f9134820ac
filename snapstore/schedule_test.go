package snapstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	for _, e := range []string{
		"* * * * *", "0 * * * *", "*/15 * * * *", "30 2 * * 1-5", "0 0 1,15 * *",
		"0 9 * jan-mar mon-fri", "0 0 29 2 *", " 5 4 * * sun ",
		"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually", "@Daily",
	} {
		s, err := ParseSchedule(e)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", e, err)
			continue
		}
		if s.Expr != strings.TrimSpace(e) || s.String() != s.Expr {
			t.Errorf("ParseSchedule(%q).Expr = %q", e, s.Expr)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"0 * * * * *", "6 fields: a seconds field is not supported"},
		{"* * * *", "has 4 fields; want 5 fields"},
		{"* * * * * * *", "has 7 fields"},
		{"@every 1h", "unknown descriptor"},
		{"@reboot", "unknown descriptor"},
		{"@", "unknown descriptor"},
		{"TZ=UTC 0 * * * *", "time-zone prefixes are not supported"},
		{"CRON_TZ=Europe/Berlin 0 * * * *", "time-zone prefixes are not supported"},
		{"TZ=", "time-zone prefixes"},
		{"60 * * * *", "above maximum"},
		{"* 24 * * *", "above maximum"},
		{"* * 0 * *", "below minimum"},
		{"* * * 13 *", "above maximum"},
		{"* * * * 8", "above maximum"},
		{"*/0 * * * *", "step"},
		{"a b c d e", `cron expression "a b c d e"`},
		{"5-1 * * * *", "beyond end"},
		{"1-2-3 * * * *", "too many hyphens"},
		{"1/2/3 * * * *", "too many slashes"},
		{"0 0 30 2 *", "never fires"},
		{"0 0 31 4,6,9,11 *", "never fires"},
	} {
		_, err := ParseSchedule(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSchedule(%q): error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
	var zero Schedule
	if !zero.Next(time.Now()).IsZero() {
		t.Error("the zero Schedule fires")
	}
	if n, _, _ := zero.Between(time.Now(), time.Now().Add(time.Hour), 0); n != 0 {
		t.Error("the zero Schedule fires")
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"*/15 * * * *", "30 2 * * 1-5", "@daily", "TZ=", "0 0 30 2 *", "1-2/3,4 */5 ? jan sun"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := ParseSchedule(expr)
		if err != nil {
			return
		}
		from := time.Date(2026, 10, 24, 0, 0, 0, 0, time.UTC)
		if n := s.Next(from); n.IsZero() || !n.After(from) {
			t.Fatalf("%q: Next(%v) = %v", expr, from, n)
		}
	})
}

func mustParse(t *testing.T, expr string) Schedule {
	t.Helper()
	s, err := ParseSchedule(expr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScheduleNext(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	utc := time.UTC
	d := func(loc *time.Location, y int, mo time.Month, day, h, mi int) time.Time {
		return time.Date(y, mo, day, h, mi, 0, 0, loc)
	}
	// 2026-11-16 is a Monday.
	for _, tc := range []struct {
		expr  string
		after time.Time
		want  []time.Time
	}{
		{"@hourly", d(utc, 2026, 11, 21, 10, 0), []time.Time{d(utc, 2026, 11, 21, 11, 0), d(utc, 2026, 11, 21, 12, 0)}},
		{"0 * * * *", d(utc, 2026, 11, 21, 10, 0).Add(-time.Nanosecond), []time.Time{d(utc, 2026, 11, 21, 10, 0), d(utc, 2026, 11, 21, 11, 0)}},
		{"*/15 * * * *", d(utc, 2026, 12, 31, 23, 40), []time.Time{d(utc, 2026, 12, 31, 23, 45), d(utc, 2027, 1, 1, 0, 0), d(utc, 2027, 1, 1, 0, 15)}},
		{"30 2 * * 1-5", d(utc, 2026, 11, 20, 3, 0), []time.Time{ // Friday after the run
			d(utc, 2026, 11, 23, 2, 30), d(utc, 2026, 11, 24, 2, 30), d(utc, 2026, 11, 25, 2, 30),
			d(utc, 2026, 11, 26, 2, 30), d(utc, 2026, 11, 27, 2, 30), d(utc, 2026, 11, 30, 2, 30)}},
		{"@weekly", d(utc, 2026, 11, 21, 10, 0), []time.Time{d(utc, 2026, 11, 22, 0, 0), d(utc, 2026, 11, 29, 0, 0)}},
		{"@monthly", d(utc, 2026, 11, 21, 10, 0), []time.Time{d(utc, 2026, 12, 1, 0, 0), d(utc, 2027, 1, 1, 0, 0)}},
		{"@yearly", d(utc, 2026, 11, 21, 10, 0), []time.Time{d(utc, 2027, 1, 1, 0, 0), d(utc, 2028, 1, 1, 0, 0)}},
		{"0 0 29 2 *", d(utc, 2026, 3, 1, 0, 0), []time.Time{d(utc, 2028, 2, 29, 0, 0), d(utc, 2032, 2, 29, 0, 0)}},
		// Day of month and day of week both restricted: either matches (cron).
		{"0 0 1 * mon", d(utc, 2026, 11, 21, 0, 0), []time.Time{d(utc, 2026, 11, 23, 0, 0), d(utc, 2026, 11, 30, 0, 0), d(utc, 2026, 12, 1, 0, 0)}},
		// Wall-clock times in the location of after.
		{"0 9 * * *", d(berlin, 2026, 11, 21, 9, 0), []time.Time{d(berlin, 2026, 11, 22, 9, 0)}},
		// DST starts in Berlin on 2026-03-29: 02:00 CET becomes 03:00 CEST.
		{"30 2 * * *", d(berlin, 2026, 3, 28, 3, 0), []time.Time{
			d(berlin, 2026, 3, 29, 3, 0), // 02:30 does not exist: at the jump
			d(berlin, 2026, 3, 30, 2, 30)}},
		{"*/15 * * * *", d(berlin, 2026, 3, 29, 1, 40), []time.Time{
			d(berlin, 2026, 3, 29, 1, 45), d(berlin, 2026, 3, 29, 3, 0), d(berlin, 2026, 3, 29, 3, 15)}},
		// DST ends in Berlin on 2026-10-25: 03:00 CEST becomes 02:00 CET.
		{"30 2 * * *", d(berlin, 2026, 10, 24, 3, 0), []time.Time{
			time.Date(2026, 10, 25, 0, 30, 0, 0, utc), // 02:30 CEST, the first 02:30
			d(berlin, 2026, 10, 26, 2, 30)}},
		{"*/15 * * * *", time.Date(2026, 10, 25, 0, 40, 0, 0, utc).In(berlin), []time.Time{
			time.Date(2026, 10, 25, 0, 45, 0, 0, utc), // 02:45 CEST
			time.Date(2026, 10, 25, 2, 0, 0, 0, utc),  // 03:00 CET: the repeated hour does not fire again
		}},
		// From inside the repeated hour.
		{"*/15 * * * *", time.Date(2026, 10, 25, 1, 10, 0, 0, utc).In(berlin), []time.Time{ // 02:10 CET
			time.Date(2026, 10, 25, 2, 0, 0, 0, utc)}},
		{"0 * * * *", time.Date(2026, 10, 24, 23, 30, 0, 0, utc).In(berlin), []time.Time{ // 01:30 CEST
			time.Date(2026, 10, 25, 0, 0, 0, 0, utc), // 02:00 CEST
			time.Date(2026, 10, 25, 2, 0, 0, 0, utc), // 03:00 CET, two hours later
		}},
	} {
		s := mustParse(t, tc.expr)
		var got []time.Time
		at := tc.after
		for range tc.want {
			at = s.Next(at)
			got = append(got, at)
		}
		if !sameTimes(got, tc.want) {
			t.Errorf("%q after %v: got %v, want %v", tc.expr, tc.after, fmtTimes(got), fmtTimes(tc.want))
		}
		for _, g := range got {
			if g.Location() != tc.after.Location() {
				t.Errorf("%q: Next returned a time in %v, want %v", tc.expr, g.Location(), tc.after.Location())
				break
			}
		}
	}
}

func sameTimes(a, b []time.Time) bool {
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

func fmtTimes(ts []time.Time) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Format("2006-01-02 15:04 MST"))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func TestScheduleBetween(t *testing.T) {
	utc := time.UTC
	base := time.Date(2026, 11, 21, 10, 0, 0, 0, utc)
	hourly := mustParse(t, "@hourly")
	for _, tc := range []struct {
		s           Schedule
		from, to    time.Time
		max         int
		count       int
		first, last time.Time
	}{
		{hourly, base, base, 0, 0, time.Time{}, time.Time{}},
		{hourly, base, base.Add(59 * time.Minute), 0, 0, time.Time{}, time.Time{}},
		{hourly, base.Add(-time.Nanosecond), base, 0, 1, base, base}, // (from, to]
		{hourly, base, base.Add(5 * time.Hour), 0, 5, base.Add(time.Hour), base.Add(5 * time.Hour)},
		{hourly, base, base.Add(5*time.Hour + 30*time.Minute), 10, 5, base.Add(time.Hour), base.Add(5 * time.Hour)},
		// Counting stops at max; first and last are exact.
		{hourly, base, base.Add(5 * time.Hour), 2, 2, base.Add(time.Hour), base.Add(5 * time.Hour)},
		{hourly, base, base.AddDate(10, 0, 0).Add(30 * time.Minute), 3, 3, base.Add(time.Hour), base.AddDate(10, 0, 0)},
		{mustParse(t, "* * * * *"), base, base.AddDate(0, 0, 7), 0, 7 * 24 * 60, base.Add(time.Minute), base.AddDate(0, 0, 7)},
		{mustParse(t, "0 0 29 2 *"), base, base.AddDate(20, 0, 0), 1, 1,
			time.Date(2028, 2, 29, 0, 0, 0, 0, utc), time.Date(2044, 2, 29, 0, 0, 0, 0, utc)},
		{hourly, base, base.Add(-time.Hour), 0, 0, time.Time{}, time.Time{}}, // to before from
	} {
		n, first, last := tc.s.Between(tc.from, tc.to, tc.max)
		if n != tc.count || !first.Equal(tc.first) || !last.Equal(tc.last) {
			t.Errorf("%q.Between(%v, %v, %d) = %d, %v, %v; want %d, %v, %v",
				tc.s.Expr, tc.from, tc.to, tc.max, n, first, last, tc.count, tc.first, tc.last)
		}
	}
}

// --- Scheduler tests ---

// schedHarness runs a Scheduler on a FakeClock against an in-memory group
// table whose Fire records runs and sets Since, as the daemon does.
type schedHarness struct {
	t     *testing.T
	clock *FakeClock
	s     *Scheduler
	logs  *logCapture

	mu      sync.Mutex
	groups  []ScheduledGroup
	fires   []string // "group@time"
	missed  []string // "group count first last"
	fireErr map[string]error
	block   map[string]chan struct{} // Fire of the group waits on it
	started chan string              // "group@time" when a Fire starts

	cancel context.CancelFunc
	done   chan error
}

const tfmt = "01-02 15:04 MST"

func newHarness(t *testing.T, start time.Time, loc *time.Location, groups ...ScheduledGroup) *schedHarness {
	t.Helper()
	h := &schedHarness{
		t: t, clock: NewFakeClock(start), logs: newLogCapture(),
		groups: groups, fireErr: map[string]error{}, block: map[string]chan struct{}{},
		started: make(chan string, 1000),
	}
	h.s = &Scheduler{
		Clock:  h.clock,
		Loc:    loc,
		Logger: slog.New(h.logs),
		Groups: func() []ScheduledGroup {
			h.mu.Lock()
			defer h.mu.Unlock()
			out := make([]ScheduledGroup, len(h.groups))
			copy(out, h.groups)
			return out
		},
		Fire: func(group string, at time.Time) error {
			if at.Location() != loc {
				t.Errorf("Fire at %v in %v, want %v", at, at.Location(), loc)
			}
			rec := group + "@" + at.Format(tfmt)
			h.mu.Lock()
			h.fires = append(h.fires, rec)
			err, block := h.fireErr[group], h.block[group]
			h.mu.Unlock()
			h.started <- rec
			if block != nil {
				<-block
			}
			if err != nil {
				if err.Error() == "panic" {
					panic("fire panicked")
				}
				return err
			}
			h.mu.Lock()
			for i := range h.groups {
				if h.groups[i].Name == group {
					h.groups[i].Since = at
				}
			}
			h.mu.Unlock()
			return nil
		},
		Missed: func(group string, count int, first, last time.Time) {
			h.mu.Lock()
			defer h.mu.Unlock()
			f := tfmt
			if first.Year() != last.Year() {
				f = "2006-" + tfmt
			}
			h.missed = append(h.missed, fmt.Sprintf("%s %d %s %s", group, count, first.Format(f), last.Format(f)))
		},
	}
	h.start()
	return h
}

// start runs the scheduler (again, for a restart) and waits until it is idle.
func (h *schedHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	s := h.s
	go func() { h.done <- s.Run(ctx) }()
	h.t.Cleanup(h.stop)
	h.idle()
}

// stop ends Run and waits for it.
func (h *schedHarness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
}

// restart replaces the scheduler with a new one on the same groups, as a
// daemon restart does.
func (h *schedHarness) restart() {
	h.stop()
	old := h.s
	h.s = &Scheduler{Clock: old.Clock, Loc: old.Loc, Logger: old.Logger, Groups: old.Groups, Fire: old.Fire, Missed: old.Missed}
	h.start()
}

func (h *schedHarness) idle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.s.WaitIdle(ctx); err != nil {
		h.t.Fatalf("scheduler not idle: %v", err)
	}
}

// waitLoop waits until Run sleeps on a timer that has not fired and no
// Fire call runs but those of the groups named.
func (h *schedHarness) waitLoop(blocked ...string) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	s := h.s
	for {
		s.mu.Lock()
		others := 0
		for name := range s.running {
			if !slices.Contains(blocked, name) {
				others++
			}
		}
		if s.waiting && others == 0 && !timerFired(s.timer) {
			s.mu.Unlock()
			return
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			h.t.Fatal("the scheduler's loop did not go to sleep")
		}
	}
}

// set moves the clock and waits until the scheduler has handled it.
func (h *schedHarness) set(t time.Time) {
	h.t.Helper()
	h.clock.Set(t)
	h.idle()
}

// take returns and forgets the runs and missed reports so far.
func (h *schedHarness) take() (fires, missed []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fires, missed = h.fires, h.missed
	h.fires, h.missed = nil, nil
	return fires, missed
}

func (h *schedHarness) expect(what string, fires, missed []string) {
	h.t.Helper()
	gotF, gotM := h.take()
	if !reflect.DeepEqual(gotF, fires) {
		h.t.Errorf("%s: runs %q, want %q", what, gotF, fires)
	}
	if !reflect.DeepEqual(gotM, missed) {
		h.t.Errorf("%s: missed %q, want %q", what, gotM, missed)
	}
}

func (h *schedHarness) edit(f func(gs []ScheduledGroup) []ScheduledGroup) {
	h.mu.Lock()
	h.groups = f(h.groups)
	h.mu.Unlock()
	h.s.Wake()
	h.idle()
}

// logCapture is a slog.Handler that keeps messages and lets a test wait for one.
type logCapture struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogCapture() *logCapture { return &logCapture{changed: make(chan struct{})} }

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCapture) WithGroup(string) slog.Handler            { return l }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, line)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return nil
}

// count returns the number of lines containing all of subs.
func (l *logCapture) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// waitFor waits until n lines contain all of subs.
func (l *logCapture) waitFor(t *testing.T, n int, subs ...string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if l.count(subs...) >= n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no log line with %q", subs)
		}
	}
}

func TestSchedulerFiresAcrossAWeek(t *testing.T) {
	start := time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC)
	if start.Weekday() != time.Monday {
		t.Fatal("2026-11-16 is not a Monday")
	}
	groups := []ScheduledGroup{
		{Name: "h", Schedules: []string{"@hourly"}, Since: start},
		{Name: "q", Schedules: []string{"*/15 * * * *"}, Since: start},
		{Name: "w", Schedules: []string{"30 2 * * 1-5"}, Since: start},
	}
	h := newHarness(t, start, time.UTC, groups...)
	h.expect("start", nil, nil)

	// The expected runs, by brute force over every minute of the week.
	type instant struct {
		at     time.Time
		groups []string
	}
	var want []instant
	for m := 1; m <= 7*24*60; m++ {
		at := start.Add(time.Duration(m) * time.Minute)
		var gs []string
		if at.Minute() == 0 {
			gs = append(gs, "h")
		}
		if at.Minute()%15 == 0 {
			gs = append(gs, "q")
		}
		if at.Hour() == 2 && at.Minute() == 30 && at.Weekday() >= time.Monday && at.Weekday() <= time.Friday {
			gs = append(gs, "w")
		}
		if gs != nil {
			want = append(want, instant{at, gs})
		}
	}
	total := map[string]int{}
	for _, w := range want {
		// A moment before: nothing runs.
		h.set(w.at.Add(-time.Second))
		h.expect("before "+w.at.Format(tfmt), nil, nil)
		h.set(w.at)
		var wantF []string
		for _, g := range w.groups {
			wantF = append(wantF, g+"@"+w.at.Format(tfmt))
			total[g]++
		}
		gotF, gotM := h.take()
		// Groups run concurrently: compare as sets.
		if !reflect.DeepEqual(sortedCopy(gotF), sortedCopy(wantF)) || gotM != nil {
			t.Fatalf("at %s: runs %q missed %q, want runs %q", w.at.Format(tfmt), gotF, gotM, wantF)
		}
	}
	if total["h"] != 168 || total["q"] != 672 || total["w"] != 5 {
		t.Errorf("runs per group = %v", total)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestSchedulerMissedAfterRestart(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC)
	h := newHarness(t, t0, time.UTC,
		ScheduledGroup{Name: "a", Schedules: []string{"@hourly"}, Since: t0},
		// Overlapping schedules count each instant once.
		ScheduledGroup{Name: "b", Schedules: []string{"0 * * * *", "@hourly", "*/30 * * * *"}, Since: t0},
		// A group with no history reports nothing.
		ScheduledGroup{Name: "c", Schedules: []string{"@hourly"}},
	)
	for _, step := range []struct {
		at   time.Duration
		runs int
	}{{30 * time.Minute, 3}, {60 * time.Minute, 1}, {90 * time.Minute, 3}} { // 10:00, 10:30, 11:00
		h.set(t0.Add(step.at))
		if fires, missed := h.take(); len(fires) != step.runs || missed != nil {
			t.Fatalf("at %s: runs %q, missed %q", t0.Add(step.at).Format(tfmt), fires, missed)
		}
	}
	// The daemon goes down at 11:10 and comes back at 14:40.
	h.set(t0.Add(100 * time.Minute))
	h.stop()
	h.clock.Set(time.Date(2026, 11, 21, 14, 40, 0, 0, time.UTC))
	h.restart()
	h.expect("restart", nil, []string{
		"a 3 11-21 12:00 UTC 11-21 14:00 UTC",
		"b 7 11-21 11:30 UTC 11-21 14:30 UTC",
		"c 3 11-21 12:00 UTC 11-21 14:00 UTC", // c ran at 11:00 before the restart
	})
	h.set(time.Date(2026, 11, 21, 15, 0, 0, 0, time.UTC))
	fires, missed := h.take()
	if want := []string{"a@11-21 15:00 UTC", "b@11-21 15:00 UTC", "c@11-21 15:00 UTC"}; !reflect.DeepEqual(sortedCopy(fires), want) || missed != nil {
		t.Errorf("after the restart: runs %q missed %q, want %q", fires, missed, want)
	}
}

func TestSchedulerMissedAtStart(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 10, 0, 0, time.UTC)
	h := newHarness(t, now, time.UTC,
		ScheduledGroup{Name: "down", Schedules: []string{"@hourly"}, Since: now.Add(-5*time.Hour - 40*time.Minute)},
		ScheduledGroup{Name: "fresh", Schedules: []string{"@hourly"}, Since: now.Add(-5 * time.Minute)},
		ScheduledGroup{Name: "never", Schedules: []string{"@hourly"}},
		ScheduledGroup{Name: "minutely", Schedules: []string{"* * * * *"}, Since: now.AddDate(-1, 0, 0)},
	)
	// (Since, now]: 07:00 ... 12:00. The count of the minutely group stops
	// at MissedMax; its first and last are exact.
	h.expect("start", nil, []string{
		"down 6 11-21 07:00 UTC 11-21 12:00 UTC",
		fmt.Sprintf("minutely %d 2025-11-21 12:11 UTC 2026-11-21 12:10 UTC", MissedMax),
	})
	if h.logs.count("scheduled runs missed", "group=minutely", "count=100000 or more") != 1 {
		t.Errorf("the capped count is not logged as such: %q", h.logs.lines)
	}
	h.set(now.Add(50 * time.Minute))
	fires, missed := h.take()
	// The minutely group missed 12:11 to 12:59 in the jump to 13:00.
	if len(fires) != 4 || !reflect.DeepEqual(missed, []string{"minutely 49 11-21 12:11 UTC 11-21 12:59 UTC"}) {
		t.Errorf("13:00: runs %q missed %q", fires, missed)
	}
}

func TestSchedulerWake(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	h := newHarness(t, t0, time.UTC, ScheduledGroup{Name: "a", Schedules: []string{"@hourly"}, Since: t0})
	h.set(t0.Add(30 * time.Second))

	// An edit takes effect at once: the scheduler's timer moves to the new
	// schedule's first time, before its periodic re-check.
	if d := h.clock.Deadlines(); len(d) != 1 || !d[0].Equal(t0.Add(time.Minute)) {
		t.Fatalf("deadlines %v", d)
	}
	h.edit(func(gs []ScheduledGroup) []ScheduledGroup {
		gs[0].Schedules = []string{"*/10 * * * *", "0 * * * *"}
		return gs
	})
	h.set(t0.Add(10 * time.Minute))
	h.expect("10:10", []string{"a@11-21 10:10 UTC"}, nil)
	h.edit(func(gs []ScheduledGroup) []ScheduledGroup {
		gs[0].Schedules = []string{"45 * * * *"}
		return gs
	})
	h.set(t0.Add(20 * time.Minute))
	h.expect("10:20 after the edit", nil, nil)
	// An edit does not run fire times that passed before it.
	h.set(t0.Add(44 * time.Minute))
	h.edit(func(gs []ScheduledGroup) []ScheduledGroup {
		gs[0].Schedules = []string{"30 * * * *", "45 * * * *"}
		return gs
	})
	h.expect("edit", nil, nil)
	h.set(t0.Add(45 * time.Minute))
	h.expect("10:45", []string{"a@11-21 10:45 UTC"}, nil)

	// Removed: nothing runs.
	h.edit(func([]ScheduledGroup) []ScheduledGroup { return nil })
	h.set(t0.Add(3 * time.Hour))
	h.expect("removed", nil, nil)

	// Created again: a new group, from its creation.
	h.edit(func([]ScheduledGroup) []ScheduledGroup {
		return []ScheduledGroup{{Name: "a", Schedules: []string{"@hourly"}, Since: t0.Add(3 * time.Hour)}}
	})
	h.set(t0.Add(4 * time.Hour))
	h.expect("created again", []string{"a@11-21 14:00 UTC"}, nil)

	// An invalid schedule is logged once and ignored; the valid one runs.
	h.edit(func(gs []ScheduledGroup) []ScheduledGroup {
		gs[0].Schedules = []string{"@every 1h", "30 * * * *"}
		return gs
	})
	h.set(t0.Add(4*time.Hour + 30*time.Minute))
	h.set(t0.Add(5 * time.Hour))
	h.expect("invalid schedule", []string{"a@11-21 14:30 UTC"}, nil)
	if n := h.logs.count("invalid schedule ignored", "@every 1h"); n != 1 {
		t.Errorf("invalid schedule logged %d times", n)
	}
}

func TestSchedulerWakeBeforeRun(t *testing.T) {
	var s Scheduler
	s.Wake()
	s.Wake()
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("Run without Groups and Fire returned no error")
	}
}

func TestSchedulerFireErrors(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	h := newHarness(t, t0, time.UTC,
		ScheduledGroup{Name: "bad", Schedules: []string{"@hourly"}, Since: t0},
		ScheduledGroup{Name: "boom", Schedules: []string{"@hourly"}, Since: t0},
		ScheduledGroup{Name: "good", Schedules: []string{"@hourly"}, Since: t0},
	)
	h.fireErr["bad"] = errors.New("disk on fire")
	h.fireErr["boom"] = errors.New("panic")
	for i := 1; i <= 3; i++ {
		at := t0.Add(time.Duration(i) * time.Hour)
		h.set(at)
		fires, missed := h.take()
		want := []string{"bad@" + at.Format(tfmt), "boom@" + at.Format(tfmt), "good@" + at.Format(tfmt)}
		if !reflect.DeepEqual(sortedCopy(fires), want) || missed != nil {
			t.Fatalf("%s: runs %q missed %q", at.Format(tfmt), fires, missed)
		}
	}
	if n := h.logs.count("scheduled run failed", "group=bad", "disk on fire"); n != 3 {
		t.Errorf("%d failures of bad logged, want 3", n)
	}
	if n := h.logs.count("scheduled run failed", "group=boom", "panic: fire panicked"); n != 3 {
		t.Errorf("%d panics of boom logged, want 3", n)
	}
}

func TestSchedulerNoOverlap(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	h := newHarness(t, t0, time.UTC,
		ScheduledGroup{Name: "slow", Schedules: []string{"@hourly"}, Since: t0},
		ScheduledGroup{Name: "other", Schedules: []string{"@hourly"}, Since: t0},
	)
	release := make(chan struct{})
	h.block["slow"] = release

	h.clock.Set(t0.Add(time.Hour))
	waitStarted(t, h, "slow@11-21 11:00 UTC", "other@11-21 11:00 UTC")
	// Before the clock moves, other's 11:00 run must have ended (else its
	// 12:00 run is rightly skipped too) and the loop must be asleep on its
	// 12:00 timer (moved between its reading of the time and its new
	// timer, the timer would count its hour from 12:00). idle cannot be
	// used: slow's run goes on.
	h.waitLoop("slow")
	// 12:00 comes while slow's 11:00 run still runs: skipped and logged;
	// the other group runs.
	h.clock.Set(t0.Add(2 * time.Hour))
	waitStarted(t, h, "other@11-21 12:00 UTC")
	h.logs.waitFor(t, 1, "scheduled run skipped", "group=slow")
	close(release)
	h.idle()
	fires, missed := h.take()
	if want := []string{"other@11-21 11:00 UTC", "other@11-21 12:00 UTC", "slow@11-21 11:00 UTC"}; !reflect.DeepEqual(sortedCopy(fires), want) || missed != nil {
		t.Fatalf("runs %q missed %q, want %q", fires, missed, want)
	}
	h.set(t0.Add(3 * time.Hour))
	fires, _ = h.take()
	if want := []string{"other@11-21 13:00 UTC", "slow@11-21 13:00 UTC"}; !reflect.DeepEqual(sortedCopy(fires), want) {
		t.Fatalf("13:00: runs %q, want %q", fires, want)
	}
}

func waitStarted(t *testing.T, h *schedHarness, want ...string) {
	t.Helper()
	var got []string
	for len(got) < len(want) {
		select {
		case s := <-h.started:
			got = append(got, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("runs started %q, want %q", got, want)
		}
	}
	if !reflect.DeepEqual(sortedCopy(got), sortedCopy(want)) {
		t.Fatalf("runs started %q, want %q", got, want)
	}
}

func TestSchedulerClockJumps(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	h := newHarness(t, t0, time.UTC, ScheduledGroup{Name: "a", Schedules: []string{"@hourly"}, Since: t0})

	// Forward by three days, landing between fire times: everything missed,
	// reported once, nothing run.
	h.set(t0.AddDate(0, 0, 3).Add(30 * time.Minute))
	h.expect("jump to 10:30", nil, []string{"a 72 11-21 11:00 UTC 11-24 10:00 UTC"})
	h.set(t0.AddDate(0, 0, 3).Add(time.Hour))
	h.expect("11:00", []string{"a@11-24 11:00 UTC"}, nil)

	// Forward landing just after a fire time (within the grace): that one
	// runs, the others are reported.
	h.set(t0.AddDate(0, 0, 4).Add(20 * time.Second))
	h.expect("jump to 10:00:20", []string{"a@11-25 10:00 UTC"}, []string{"a 22 11-24 12:00 UTC 11-25 09:00 UTC"})

	// Backward by two hours and forward again: nothing runs twice.
	h.set(t0.AddDate(0, 0, 4).Add(-2 * time.Hour))
	h.set(t0.AddDate(0, 0, 4).Add(-time.Hour))
	h.set(t0.AddDate(0, 0, 4))
	h.expect("back and forth", nil, nil)
	h.set(t0.AddDate(0, 0, 4).Add(time.Hour))
	h.expect("11:00 after the clock went back", []string{"a@11-25 11:00 UTC"}, nil)

	// A run one minute and one second late is missed; one minute late runs.
	h.set(t0.AddDate(0, 0, 4).Add(2*time.Hour + time.Minute + time.Second))
	h.expect("late by 61s", nil, []string{"a 1 11-25 12:00 UTC 11-25 12:00 UTC"})
	h.set(t0.AddDate(0, 0, 4).Add(3*time.Hour + time.Minute))
	h.expect("late by 60s", []string{"a@11-25 13:00 UTC"}, nil)
}

func TestSchedulerDSTBerlin(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     []string
	}{
		{
			// Clocks go from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30
			// does not exist that day, and the run happens at the jump.
			name: "spring",
			from: time.Date(2026, 3, 27, 12, 0, 0, 0, berlin),
			to:   time.Date(2026, 3, 31, 12, 0, 0, 0, berlin),
			want: []string{"a@03-28 02:30 CET", "a@03-29 03:00 CEST", "a@03-30 02:30 CEST", "a@03-31 02:30 CEST"},
		},
		{
			// Clocks go from 03:00 CEST back to 02:00 CET on 2026-10-25:
			// 02:30 happens twice and runs once, at the first.
			name: "autumn",
			from: time.Date(2026, 10, 23, 12, 0, 0, 0, berlin),
			to:   time.Date(2026, 10, 27, 12, 0, 0, 0, berlin),
			want: []string{"a@10-24 02:30 CEST", "a@10-25 02:30 CEST", "a@10-26 02:30 CET", "a@10-27 02:30 CET"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.from, berlin, ScheduledGroup{Name: "a", Schedules: []string{"30 2 * * *"}, Since: tc.from})
			// Every 5 minutes of real time.
			for at := tc.from; !at.After(tc.to); at = at.Add(5 * time.Minute) {
				h.set(at)
			}
			h.expect(tc.name, tc.want, nil)
		})
	}
}

func TestSchedulerRealClockDefaults(t *testing.T) {
	// Nil Clock, Loc and Logger: the real clock, time.Local, no logging.
	s := &Scheduler{
		Groups: func() []ScheduledGroup {
			return []ScheduledGroup{{Name: "a", Schedules: []string{"@yearly"}, Since: time.Now()}}
		},
		Fire: func(string, time.Time) error { return nil },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := s.WaitIdle(wctx); err != nil {
		t.Fatal(err)
	}
	s.Wake()
	if err := s.WaitIdle(wctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
