package control

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/dstore/dstore/snapstore"
)

// NewScheduler returns a snapstore.Scheduler that runs the groups'
// schedules on the service's datastore: each fire takes a snapshot
// (scheduled) and applies the group's retention, then records the run in
// the group (Since); missed runs are logged and recorded in the group
// (Missed, and Since moves past them, so that a restart does not report
// them again). Every run and every missed report is also an audit line.
// Group changes through the service wake the scheduler. Run it with its
// Run method; schedules run in time.Local, as retention's days do.
func (s *Service) NewScheduler(log *slog.Logger) *snapstore.Scheduler {
	if log == nil {
		log = s.log
	}
	sc := &snapstore.Scheduler{
		Clock:  s.clock,
		Loc:    time.Local,
		Logger: log,
		Groups: s.scheduledGroups,
		Fire:   s.fire,
		Missed: s.missed,
	}
	s.mu.Lock()
	s.wake = sc.Wake
	s.mu.Unlock()
	return sc
}

func (s *Service) scheduledGroups() []snapstore.ScheduledGroup {
	gs := s.ns().Groups()
	out := make([]snapstore.ScheduledGroup, 0, len(gs))
	for _, g := range gs {
		sg := snapstore.ScheduledGroup{Name: g.Name, Schedules: g.Schedules}
		if g.Since != 0 {
			sg.Since = time.Unix(0, g.Since)
		}
		out = append(out, sg)
	}
	return out
}

type fireArgs struct {
	Group string    `json:"group"`
	At    time.Time `json:"at"`
}

type missedArgs struct {
	Group string    `json:"group"`
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// fire is one scheduled run of a group.
func (s *Service) fire(group string, at time.Time) error {
	res, err := s.runGroup(context.Background(), group, "", true, "scheduler", Peer{})
	if res.ID != "" {
		// The snapshot exists: the run happened, even if retention failed.
		if nerr := s.ns().NoteScheduledRun(group, at); nerr != nil {
			nerr = fmt.Errorf("recording the run of group %q at %s: %w", group, at.Format(time.RFC3339), nerr)
			if err == nil {
				err = nerr
			} else {
				s.log.Error("control: scheduler", "err", nerr)
			}
		}
	}
	args, _ := json.Marshal(fireArgs{Group: group, At: at.UTC()})
	note := detail(res, nil)
	if res.ID == "" {
		note = ""
	}
	if aerr := s.record("schedule.run", args, "scheduler", Peer{}, err, note); aerr != nil {
		s.log.Error("control: writing the audit log", "operation", "schedule.run", "err", aerr)
		if err == nil {
			err = aerr
		}
	}
	return err
}

// missed records runs of a group that did not happen.
func (s *Service) missed(group string, count int, first, last time.Time) {
	err := s.ns().NoteMissedRuns(group, count, first, last, s.clock.Now())
	if err != nil {
		s.log.Error("control: recording missed runs", "group", group, "err", err)
	}
	args, _ := json.Marshal(missedArgs{Group: group, Count: count, First: first.UTC(), Last: last.UTC()})
	if aerr := s.record("schedule.missed", args, "scheduler", Peer{}, err, ""); aerr != nil {
		s.log.Error("control: writing the audit log", "operation", "schedule.missed", "err", aerr)
	}
}
