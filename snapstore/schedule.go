package snapstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule is a parsed cron expression: five fields (minute, hour, day of
// month, month, day of week, as in crontab(5) and parsed by
// github.com/robfig/cron/v3) or one of the descriptors @hourly, @daily,
// @midnight, @weekly, @monthly, @yearly and @annually.
//
// A schedule is a set of wall-clock times; Next and Between read them in
// the location of the time they are given. Around daylight saving changes:
//
//   - a wall-clock time that does not exist (the hour skipped when clocks go
//     forward) fires once, at the instant the clocks jump: "30 2 * * *" in
//     Europe/Berlin fires at 03:00 CEST on the last Sunday of March, and
//     "*/15 * * * *" fires once at 03:00 for the whole skipped hour;
//   - a wall-clock time that occurs twice (the hour repeated when clocks go
//     back) fires once, at its first occurrence: "30 2 * * *" fires at
//     02:30 CEST on the last Sunday of October, not again at 02:30 CET, and
//     "*/15 * * * *" does not fire during the repeated hour at all.
//
// So every wall-clock fire time fires exactly once, and no day is skipped.
// The zero Schedule never fires.
type Schedule struct {
	Expr string // as given, trimmed
	spec *cron.SpecSchedule
}

// descriptors are the @-expressions ParseSchedule accepts, as five fields.
var descriptors = map[string]string{
	"@hourly":   "0 * * * *",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@weekly":   "0 0 * * 0",
	"@monthly":  "0 0 1 * *",
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
}

const scheduleSyntax = "want 5 fields (minute hour day-of-month month day-of-week), " +
	"or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"

// ParseSchedule parses a cron expression (see Schedule). Seconds fields,
// "@every", "@reboot" and time-zone prefixes are rejected: schedules run
// in the scheduler's location.
func ParseSchedule(expr string) (Schedule, error) {
	e := strings.TrimSpace(expr)
	fields := strings.Fields(e)
	switch {
	case e == "":
		return Schedule{}, fmt.Errorf("cron expression is empty; %s", scheduleSyntax)
	case strings.HasPrefix(e, "TZ=") || strings.HasPrefix(e, "CRON_TZ="):
		return Schedule{}, fmt.Errorf("cron expression %q: time-zone prefixes are not supported (schedules run in the server's time zone)", expr)
	case strings.HasPrefix(e, "@"):
		five, ok := descriptors[strings.ToLower(e)]
		if !ok {
			return Schedule{}, fmt.Errorf("cron expression %q: unknown descriptor; %s", expr, scheduleSyntax)
		}
		fields = strings.Fields(five)
	case len(fields) == 6:
		return Schedule{}, fmt.Errorf("cron expression %q has 6 fields: a seconds field is not supported; %s", expr, scheduleSyntax)
	case len(fields) != 5:
		return Schedule{}, fmt.Errorf("cron expression %q has %d fields; %s", expr, len(fields), scheduleSyntax)
	}
	spec, err := parseFive(strings.Join(fields, " "))
	if err != nil {
		return Schedule{}, fmt.Errorf("cron expression %q: %v", expr, err)
	}
	s := Schedule{Expr: e, spec: spec}
	// An expression such as "0 0 30 2 *" (February 30) never fires.
	if s.spec.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return Schedule{}, fmt.Errorf("cron expression %q never fires (no such date)", expr)
	}
	return s, nil
}

var fiveFieldParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// parseFive parses five fields with robfig/cron. The schedule it returns
// runs in UTC, which Schedule uses as a time zone without transitions to
// compute wall-clock (civil) times.
func parseFive(expr string) (spec *cron.SpecSchedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			spec, err = nil, fmt.Errorf("cannot parse: %v", r)
		}
	}()
	sched, err := fiveFieldParser.Parse(expr)
	if err != nil {
		return nil, err
	}
	s, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, errors.New("not a cron schedule")
	}
	s.Location = time.UTC
	return s, nil
}

// String returns the expression.
func (s Schedule) String() string { return s.Expr }

// Next returns the first fire time after after, in after's location, or
// the zero time when there is none (for the zero Schedule, or no fire time
// within about five years).
func (s Schedule) Next(after time.Time) time.Time {
	if s.spec == nil {
		return time.Time{}
	}
	loc := after.Location()
	// Wall-clock fire times map to instants monotonically (see instant), and
	// every wall-clock time before after's maps to an instant at or before
	// after, so the search can start at after's wall clock. Only in an hour
	// that repeats does it skip some fire times (their first occurrences
	// have passed).
	c := civil(after).Truncate(time.Second).Add(-time.Second)
	for range 100000 {
		c = s.spec.Next(c)
		if c.IsZero() {
			return time.Time{}
		}
		if t := instant(c, loc); t.After(after) {
			return t
		}
	}
	return time.Time{}
}

// Between returns the number of fire times in (from, to], counting at
// most max (no limit when max <= 0), and the first and last of them, which
// are exact even when count stopped at max. It reads wall-clock times in
// from's location.
func (s Schedule) Between(from, to time.Time, max int) (count int, first, last time.Time) {
	return between(s.Next, from, to, max)
}

// between counts the fire times of next in (from, to] (at most max, when
// max > 0) and finds the first and the last.
func between(next func(time.Time) time.Time, from, to time.Time, max int) (count int, first, last time.Time) {
	first = next(from)
	if first.IsZero() || first.After(to) {
		return 0, time.Time{}, time.Time{}
	}
	for t := first; !t.IsZero() && !t.After(to); t = next(t) {
		count++
		last = t
		if max > 0 && count >= max {
			break
		}
	}
	if max > 0 && count >= max {
		last = lastBefore(next, from, to)
	}
	return count, first, last
}

// lastBefore finds the last fire time of next in (a, b], given there is
// one, by bisection: O(log((b-a)/s)) calls to next.
func lastBefore(next func(time.Time) time.Time, a, b time.Time) time.Time {
	// Invariant: next(a) <= b, and no fire time is in (b, original b].
	for b.Sub(a) > time.Second {
		mid := a.Add(b.Sub(a) / 2)
		if n := next(mid); !n.IsZero() && !n.After(b) {
			a = mid
		} else {
			b = mid
		}
	}
	return next(a)
}

// civil returns t's wall-clock time in its location as a UTC time, a
// representation without daylight saving changes.
func civil(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return time.Date(y, mo, d, h, mi, s, t.Nanosecond(), time.UTC)
}

// instant returns the instant at which the wall-clock time c (see civil)
// happens in loc: its first occurrence when it happens twice, and the end
// of the gap when it does not happen at all (clocks jumped over it).
func instant(c time.Time, loc *time.Location) time.Time {
	y, mo, d := c.Date()
	h, mi, s := c.Clock()
	t := time.Date(y, mo, d, h, mi, s, c.Nanosecond(), loc)
	start, end := t.ZoneBounds()
	if civil(t).Equal(c) {
		// c exists. If t is its second occurrence, just after clocks went
		// back, the first occurrence is earlier by the change of offset.
		if !start.IsZero() && t.Sub(start) < 24*time.Hour {
			_, offNow := t.Zone()
			_, offBefore := start.Add(-time.Nanosecond).Zone()
			if offBefore > offNow {
				e := t.Add(-time.Duration(offBefore-offNow) * time.Second)
				if e.Before(start) && civil(e).Equal(c) {
					return e
				}
			}
		}
		return t
	}
	// c is in a gap; time.Date normalized it to one side. The gap ends at
	// the zone transition next to t.
	for _, b := range []time.Time{start, end} {
		if !b.IsZero() && civil(b).After(c) && civil(b.Add(-time.Nanosecond)).Before(c) {
			return b
		}
	}
	return t
}

// scheduleSet is the union of a group's schedules: fire times that
// coincide fire once.
type scheduleSet []Schedule

func (ss scheduleSet) next(after time.Time) time.Time {
	var best time.Time
	for _, s := range ss {
		if t := s.Next(after); !t.IsZero() && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	return best
}

// ScheduledGroup is what the Scheduler needs of a protection group.
type ScheduledGroup struct {
	Name      string
	Schedules []string  // cron expressions (see ParseSchedule)
	Since     time.Time // the last scheduled run that happened, or the group's creation
}

// Scheduler runs protection groups' cron schedules. Set the fields, then
// call Run; Wake tells it that groups or their schedules changed.
//
// When Run starts, and when it first sees a group, the fire times in
// (Since, now] are reported once through Missed and not run (a zero Since
// means no history: nothing is reported). From then on a group fires at
// each fire time of its schedules; schedules that fire at the same time
// fire once. Fire runs in its own goroutine, so groups run concurrently,
// but a group never overlaps itself: a fire time that comes while the
// group's previous Fire still runs is skipped and logged. An error from
// Fire is logged and changes nothing else.
//
// A run starts at most Grace after its fire time. When more than one fire
// time of a group has passed at once (the clock jumped forward, the
// machine was suspended), only the latest runs, if it is within Grace, and
// the others are reported through Missed: no burst of catch-up runs. When
// the clock goes back, no fire time runs twice: the group resumes with the
// first fire time after the last one handled.
//
// A run that fails is not retried before the group's next fire time (and
// as the callee did not move Since, a restart reports it as missed).
//
// Schedules run in Loc; see Schedule for daylight saving changes. An
// invalid expression is logged and ignored (the group's other schedules
// still run); ParseSchedule validates them up front.
type Scheduler struct {
	Clock  Clock                                                // nil: RealClock()
	Loc    *time.Location                                       // nil: time.Local
	Groups func() []ScheduledGroup                              // read afresh after Wake, after each fire, and at least once a minute
	Fire   func(group string, at time.Time) error               // takes the snapshot and applies retention; the callee records Since=at durably
	Missed func(group string, count int, first, last time.Time) // runs that should have happened and did not (daemon down, clock jump); reported, not run; count stops at MissedMax; called from Run's goroutine. nil: logged only
	Logger *slog.Logger                                         // nil: discard
	Grace  time.Duration                                        // how late a run may start; 0: one minute

	mu      sync.Mutex
	wakeCh  chan struct{} // buffered 1: a Wake or a finished Fire is pending
	running map[string]bool
	waiting bool          // Run is blocked with nothing pending
	timer   Timer         // the timer Run waits on
	changed chan struct{} // closed and replaced when running or waiting change
}

// MissedMax is where the count reported to Scheduler.Missed stops (the
// first and last times are exact).
const MissedMax = 100000

// maxSleep bounds how long the scheduler trusts a timer, so that it notices
// a wall-clock jump (a suspended machine, a stepped clock) within a minute.
const maxSleep = time.Minute

type groupState struct {
	parsed bool
	key    string // the schedules, joined, as last parsed
	sched  scheduleSet
	cursor time.Time // every fire time up to here is handled
	next   time.Time // the first fire time after cursor; zero: none
}

// Wake makes Run re-read the groups and recompute their fire times at
// once. It may be called at any time, also before Run and after it ended.
func (s *Scheduler) Wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifyLocked()
}

// notifyLocked makes Run do a round.
func (s *Scheduler) notifyLocked() {
	s.initLocked()
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
	s.waiting = false
	s.changedLocked()
}

func (s *Scheduler) initLocked() {
	if s.wakeCh == nil {
		s.wakeCh = make(chan struct{}, 1)
		s.running = make(map[string]bool)
		s.changed = make(chan struct{})
	}
}

func (s *Scheduler) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitIdle blocks until Run is waiting for its next fire time with no Fire
// running and no Wake pending, or until ctx ends. It is for tests, with a
// FakeClock: after WaitIdle the scheduler has handled the clock's time.
// (With the real clock it cannot see a timer that has fired but not been
// received yet.)
func (s *Scheduler) WaitIdle(ctx context.Context) error {
	for {
		s.mu.Lock()
		s.initLocked()
		if s.waiting && len(s.running) == 0 && !timerFired(s.timer) {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// timerFired reports whether t has fired and Run may not have handled it
// yet. It knows for FakeClock timers; for others it sees only a fired
// timer whose time has not been received.
func timerFired(t Timer) bool {
	switch t := t.(type) {
	case nil:
		return false
	case *fakeTimer:
		return !t.pending()
	default:
		return len(t.C()) > 0
	}
}

// Run runs the schedules until ctx ends, then waits for running Fire calls
// to return and returns nil. It returns an error at once if Groups or Fire
// is nil. Run must not be called again before it returns.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Groups == nil || s.Fire == nil {
		return errors.New("snapstore: Scheduler needs Groups and Fire")
	}
	clock := s.Clock
	if clock == nil {
		clock = RealClock()
	}
	loc := s.Loc
	if loc == nil {
		loc = time.Local
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	grace := s.Grace
	if grace <= 0 {
		grace = time.Minute
	}
	s.mu.Lock()
	s.initLocked()
	wake := s.wakeCh
	s.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	r := &schedRun{s: s, loc: loc, log: log, grace: grace, wg: &wg, states: make(map[string]*groupState), badExpr: make(map[string]bool)}

	var timer Timer
	var timerAt time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := clock.Now().In(loc)
		next := r.round(now)
		// Sleep until the next fire time, but at most maxSleep.
		due := now.Add(maxSleep)
		if !next.IsZero() && next.Before(due) {
			due = next
		}
		if timer == nil || !due.Equal(timerAt) {
			if timer != nil {
				timer.Stop()
			}
			timer = clock.NewTimer(due.Sub(now))
			timerAt = due
		}
		s.mu.Lock()
		s.waiting = len(wake) == 0
		s.timer = timer
		s.changedLocked()
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.waiting = false
			s.changedLocked()
			s.mu.Unlock()
			return nil
		case <-timer.C():
			timer = nil
		case <-wake:
		}
		s.mu.Lock()
		s.waiting = false
		s.changedLocked()
		s.mu.Unlock()
	}
}

// schedRun is the state of one Run.
type schedRun struct {
	s       *Scheduler
	loc     *time.Location
	log     *slog.Logger
	grace   time.Duration
	wg      *sync.WaitGroup
	states  map[string]*groupState
	badExpr map[string]bool // "group\x00expr" already logged as invalid
}

// round handles every group's fire times up to now and returns the
// earliest next fire time (zero: none).
func (r *schedRun) round(now time.Time) time.Time {
	groups := r.groups()
	seen := make(map[string]bool, len(groups))
	var earliest time.Time
	for _, g := range groups {
		if seen[g.Name] {
			r.log.Warn("snapstore: scheduler: duplicate group name; using the first", "group", g.Name)
			continue
		}
		seen[g.Name] = true
		st := r.states[g.Name]
		if st == nil {
			st = &groupState{cursor: now}
			r.states[g.Name] = st
			r.parse(g, st)
			if !g.Since.IsZero() {
				if n, first, last := between(st.sched.next, g.Since.In(r.loc), now, MissedMax); n > 0 {
					r.missed(g.Name, n, first, last)
				}
			}
			if g.Since.After(st.cursor) {
				st.cursor = g.Since.In(r.loc)
			}
			st.next = st.sched.next(st.cursor)
		} else {
			changed := r.parse(g, st)
			if g.Since.After(st.cursor) {
				// Someone else accounted for runs up to Since.
				st.cursor = g.Since.In(r.loc)
				changed = true
			}
			if changed {
				st.next = st.sched.next(st.cursor)
			}
		}
		if !st.next.IsZero() && !st.next.After(now) {
			r.due(g.Name, st, now)
		}
		if st.cursor.Before(now) {
			// Every fire time up to now is handled (st.next is after now),
			// so a schedule added later cannot fire in the past.
			st.cursor = now
		}
		if !st.next.IsZero() && (earliest.IsZero() || st.next.Before(earliest)) {
			earliest = st.next
		}
	}
	for name := range r.states {
		if !seen[name] {
			delete(r.states, name)
		}
	}
	return earliest
}

// due handles a group's fire times in (cursor, now]: the latest runs if it
// is within grace, the others are missed.
func (r *schedRun) due(name string, st *groupState, now time.Time) {
	n, first, last := between(st.sched.next, st.cursor, now, MissedMax)
	st.cursor = now
	st.next = st.sched.next(now)
	if n == 0 {
		return
	}
	if now.Sub(last) > r.grace {
		r.missed(name, n, first, last)
		return
	}
	if n > 1 {
		mn, mfirst, mlast := between(st.sched.next, first.Add(-time.Nanosecond), last.Add(-time.Nanosecond), MissedMax)
		r.missed(name, mn, mfirst, mlast)
	}
	r.fire(name, last)
}

func (r *schedRun) fire(name string, at time.Time) {
	s := r.s
	s.mu.Lock()
	if s.running[name] {
		s.mu.Unlock()
		r.log.Warn("snapstore: scheduled run skipped: the previous run of the group is still running", "group", name, "at", at)
		return
	}
	s.running[name] = true
	s.changedLocked()
	s.mu.Unlock()
	r.log.Info("snapstore: scheduled run", "group", name, "at", at)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		start := time.Now()
		err := callFire(s.Fire, name, at)
		if err != nil {
			r.log.Error("snapstore: scheduled run failed", "group", name, "at", at, "err", err)
		} else {
			r.log.Info("snapstore: scheduled run done", "group", name, "at", at, "took", time.Since(start))
		}
		s.mu.Lock()
		delete(s.running, name)
		s.notifyLocked() // read the groups afresh
		s.mu.Unlock()
	}()
}

func callFire(fire func(string, time.Time) error, name string, at time.Time) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fire(name, at)
}

func (r *schedRun) missed(name string, n int, first, last time.Time) {
	count := slog.Int("count", n)
	if n >= MissedMax {
		count = slog.String("count", fmt.Sprintf("%d or more", n))
	}
	r.log.Warn("snapstore: scheduled runs missed", "group", name, count, "first", first, "last", last)
	if r.s.Missed == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("snapstore: scheduler: Missed panicked", "group", name, "panic", p)
		}
	}()
	r.s.Missed(name, n, first, last)
}

func (r *schedRun) groups() (gs []ScheduledGroup) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("snapstore: scheduler: Groups panicked", "panic", p)
			gs = nil
		}
	}()
	return r.s.Groups()
}

// parse (re)parses a group's schedules when they changed and reports
// whether they did.
func (r *schedRun) parse(g ScheduledGroup, st *groupState) bool {
	key := strings.Join(g.Schedules, "\x00")
	if st.parsed && key == st.key {
		return false
	}
	st.parsed, st.key, st.sched = true, key, nil
	for _, e := range g.Schedules {
		sc, err := ParseSchedule(e)
		if err != nil {
			if k := g.Name + "\x00" + e; !r.badExpr[k] {
				r.badExpr[k] = true
				r.log.Error("snapstore: scheduler: invalid schedule ignored", "group", g.Name, "err", err)
			}
			continue
		}
		st.sched = append(st.sched, sc)
	}
	return true
}
