package snapstore

import (
	"fmt"
	"time"
)

// The scheduler's state lives in the group record: Since and Missed. The
// daemon (package control) moves them through the functions below, each
// one log record, so that a restart neither runs nor reports a fire time
// twice: Scheduler reports the fire times in (Since, now] as missed when
// it starts, so Since must cover every fire time that ran or was reported.

// NoteScheduledRun records that group's scheduled run at at happened:
// Since moves to at (never back).
func (ns *Namespace) NoteScheduledRun(group string, at time.Time) error {
	return ns.updateGroupState(group, func(g *Group) bool {
		if at.UnixNano() <= g.Since {
			return false
		}
		g.Since = at.UnixNano()
		return true
	})
}

// NoteMissedRuns records that count scheduled runs of group, the first at
// first and the last at last, did not happen, as found at noted: the group's
// Missed becomes this report (the latest), and Since moves to last (never
// back), so that the same runs are not reported again after a restart.
func (ns *Namespace) NoteMissedRuns(group string, count int, first, last, noted time.Time) error {
	if count <= 0 {
		return nil
	}
	return ns.updateGroupState(group, func(g *Group) bool {
		g.Missed = &Missed{Count: count, First: first.UnixNano(), Last: last.UnixNano(), Noted: noted.UnixNano()}
		if last.UnixNano() > g.Since {
			g.Since = last.UnixNano()
		}
		return true
	})
}

// updateGroupState changes a copy of a group's record with fn and logs it
// when fn reports a change.
func (ns *Namespace) updateGroupState(name string, fn func(*Group) bool) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	old := ns.groups[name]
	if old == nil {
		return fmt.Errorf("%q: %w", name, ErrNoGroup)
	}
	g := *old
	if !fn(&g) {
		return nil
	}
	return ns.putGroupLocked(&g)
}

// UseClock makes the namespace read the time from c (creation times of
// snapshots, groups and files): for tests with a FakeClock. Call it right
// after Open, before anything else uses the namespace.
func (ns *Namespace) UseClock(c Clock) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.now = c.Now
}
