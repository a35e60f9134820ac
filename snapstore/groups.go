package snapstore

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// GroupSpec is what a user sets on a protection group.
type GroupSpec struct {
	Match     []string  `json:"match"`
	Schedules []string  `json:"schedules,omitempty"`
	Retention Retention `json:"retention"`
	Targets   []string  `json:"targets,omitempty"`
}

// Validate checks a group's name and spec.
func (s *GroupSpec) validate(name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("group name: %w", err)
	}
	if len(s.Match) == 0 {
		return fmt.Errorf("group %q: at least one --match pattern is needed: %w", name, ErrInvalid)
	}
	for _, m := range s.Match {
		if err := ValidPattern(m); err != nil {
			return err
		}
	}
	for _, e := range s.Schedules {
		if _, err := ParseSchedule(e); err != nil {
			return fmt.Errorf("group %q: schedule %q: %v: %w", name, e, err, ErrInvalid)
		}
	}
	if err := s.Retention.Validate(); err != nil {
		return fmt.Errorf("group %q: retention: %v: %w", name, err, ErrInvalid)
	}
	return nil
}

// CreateGroup makes a protection group.
func (ns *Namespace) CreateGroup(name string, spec GroupSpec) (*Group, error) {
	if err := spec.validate(name); err != nil {
		return nil, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.groups[name] != nil {
		return nil, fmt.Errorf("%q: %w", name, ErrGroupExists)
	}
	now := ns.now().UnixNano()
	g := &Group{Name: name, Seq: ns.groupNext, Match: spec.Match, Schedules: spec.Schedules,
		Retention: spec.Retention, Targets: spec.Targets, Created: now, Since: now}
	ns.groupNext++
	if err := ns.putGroupLocked(g); err != nil {
		return nil, err
	}
	return g, nil
}

func (ns *Namespace) putGroupLocked(g *Group) error {
	d, err := groupDelta(g)
	if err != nil {
		return err
	}
	return ns.commit(nil, []delta{d}, nil)
}

// EditGroup changes a group: edit gets a copy of its spec to change.
func (ns *Namespace) EditGroup(name string, edit func(*GroupSpec) error) (*Group, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	old := ns.groups[name]
	if old == nil {
		return nil, fmt.Errorf("%q: %w", name, ErrNoGroup)
	}
	spec := GroupSpec{Match: append([]string(nil), old.Match...), Schedules: append([]string(nil), old.Schedules...),
		Retention: old.Retention, Targets: append([]string(nil), old.Targets...)}
	if err := edit(&spec); err != nil {
		return nil, err
	}
	if err := spec.validate(name); err != nil {
		return nil, err
	}
	g := *old
	g.Match, g.Schedules, g.Retention, g.Targets = spec.Match, spec.Schedules, spec.Retention, spec.Targets
	if !slices.Equal(old.Schedules, spec.Schedules) {
		// New schedules have no past: a restart must not report their
		// fire times before now as missed.
		g.Since = ns.now().UnixNano()
	}
	if err := ns.putGroupLocked(&g); err != nil {
		return nil, err
	}
	return &g, nil
}

// DeleteGroup deletes a group. With snapshots left it fails unless
// withSnapshots, which deletes them first.
func (ns *Namespace) DeleteGroup(name string, withSnapshots bool) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.groups[name] == nil {
		return fmt.Errorf("%q: %w", name, ErrNoGroup)
	}
	var seqs []uint64
	for seq, s := range ns.snaps {
		if s.Group == name {
			seqs = append(seqs, seq)
		}
	}
	if len(seqs) > 0 && !withSnapshots {
		return fmt.Errorf("group %q has %d snapshots (delete them, or the group with its snapshots): %w", name, len(seqs), ErrHasSnaps)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, seq := range seqs {
		if err := ns.deleteSnapLocked(seq); err != nil {
			return err
		}
	}
	return ns.commit(nil, []delta{{kind: dDelGroup, name: name}}, nil)
}

// Group returns a group record (not to be changed).
func (ns *Namespace) Group(name string) (*Group, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	g := ns.groups[name]
	if g == nil {
		return nil, fmt.Errorf("%q: %w", name, ErrNoGroup)
	}
	return g, nil
}

// Groups lists the groups by name.
func (ns *Namespace) Groups() []*Group {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	out := make([]*Group, 0, len(ns.groups))
	for _, g := range ns.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Members lists the live files a group matches now.
func (ns *Namespace) Members(name string) ([]string, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	g := ns.groups[name]
	if g == nil {
		return nil, fmt.Errorf("%q: %w", name, ErrNoGroup)
	}
	return ns.matchFiles(g.Match), nil
}

// PlanRetention applies a group's retention policy to its snapshots and,
// unless dryRun, deletes the ones it drops. It returns the decisions,
// newest first.
func (ns *Namespace) PlanRetention(name string, dryRun bool) ([]RetentionDecision, error) {
	g, err := ns.Group(name)
	if err != nil {
		return nil, err
	}
	snaps := ns.Snapshots(name)
	rs := make([]RetentionSnap, len(snaps))
	bySeq := map[string]uint64{}
	for i, s := range snaps {
		rs[i] = RetentionSnap{ID: s.ID(), Created: time.Unix(0, s.Created)}
		bySeq[s.ID()] = s.Seq
	}
	plan := g.Retention.Plan(rs, time.Local)
	if dryRun {
		return plan, nil
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, d := range plan {
		if d.Keep {
			continue
		}
		if seq := bySeq[d.ID]; ns.snaps[seq] != nil {
			if err := ns.deleteSnapLocked(seq); err != nil {
				return plan, err
			}
		}
	}
	return plan, nil
}
