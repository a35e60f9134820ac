package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/objex"
	"github.com/dstore/dstore/snapstore"
)

// AuditFile is the audit log's name in the datastore directory.
const AuditFile = "audit.log"

// Options configure a Service.
type Options struct {
	// Via says who runs the service, for the audit log: "daemon" (dstore
	// serve) or "direct" (a command that opened the datastore itself).
	Via string
	// Clock is the time source of the scheduler, the audit log and the
	// group views. nil: the real clock.
	Clock snapstore.Clock
	// Logger: nil discards.
	Logger *slog.Logger
	// Version is reported by ping.
	Version string
	// OX is the datastore's object exchange (opened on DIR/ox, attached to
	// the datastore); nil: the OX operations fail with ErrNoOX.
	OX *objex.Manager
	// Passphrases are the OX manager's Getenv (objex.Config.Getenv); nil:
	// a new one, which then only the service reads.
	Passphrases *Passphrases
}

// Service performs the control operations on an open datastore and
// records them in DIR/audit.log. It is safe for concurrent use.
type Service struct {
	ds      *snapstore.Datastore
	dir     string
	audit   *auditLog
	clock   snapstore.Clock
	log     *slog.Logger
	via     string
	version string

	ox          *objex.Manager
	passphrases *Passphrases

	mu   sync.Mutex
	wake func() // tells the scheduler that groups changed
}

// NewService makes a Service for ds, the datastore in dir, and opens the
// audit log (creating it, mode 0600). Close closes the audit log, not ds.
func NewService(ds *snapstore.Datastore, dir string, o Options) (*Service, error) {
	a, err := openAudit(filepath.Join(dir, AuditFile))
	if err != nil {
		return nil, err
	}
	s := &Service{ds: ds, dir: dir, audit: a, clock: o.Clock, log: o.Logger, via: o.Via, version: o.Version,
		ox: o.OX, passphrases: o.Passphrases}
	if s.passphrases == nil {
		s.passphrases = NewPassphrases()
	}
	if s.clock == nil {
		s.clock = snapstore.RealClock()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.via == "" {
		s.via = "direct"
	}
	return s, nil
}

// Close closes the audit log.
func (s *Service) Close() error { return s.audit.close() }

// Dir returns the datastore directory.
func (s *Service) Dir() string { return s.dir }

func (s *Service) ns() *snapstore.Namespace { return s.ds.NS }

// groupsChanged wakes the scheduler, if one runs.
func (s *Service) groupsChanged() {
	s.mu.Lock()
	w := s.wake
	s.mu.Unlock()
	if w != nil {
		w()
	}
}

// group returns a group or an "unknown group" error.
func (s *Service) group(name string) (*snapstore.Group, error) {
	g, err := s.ns().Group(name)
	if errors.Is(err, snapstore.ErrNoGroup) {
		return nil, &msgError{fmt.Sprintf("unknown group %q", name), snapstore.ErrNoGroup}
	}
	return g, err
}

// snapshot finds a snapshot by ID or sequence number.
func (s *Service) snapshot(id string) (*snapstore.Snapshot, error) {
	if id == "" {
		return nil, fmt.Errorf("no snapshot ID given: %w", snapstore.ErrInvalid)
	}
	seq, err := snapstore.ParseSnapshotID(id)
	if err != nil {
		return nil, err
	}
	snap, err := s.ns().Snapshot(seq)
	if errors.Is(err, snapstore.ErrNoSnapshot) || (err == nil && strings.Contains(id, "-") && snap.ID() != id) {
		return nil, &msgError{fmt.Sprintf("snapshot %s not found", id), snapstore.ErrNoSnapshot}
	}
	return snap, err
}

func utc(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func modeString(m uint32) string { return fmt.Sprintf("%04o", m&0o7777) }

// nextRun is the first fire time of the schedules after now.
func (s *Service) nextRun(schedules []string) *time.Time {
	now := s.clock.Now().In(time.Local)
	var best time.Time
	for _, e := range schedules {
		sc, err := snapstore.ParseSchedule(e)
		if err != nil {
			continue
		}
		if t := sc.Next(now); !t.IsZero() && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	if best.IsZero() {
		return nil
	}
	best = best.UTC()
	return &best
}

func (s *Service) groupView(g *snapstore.Group) Group {
	v := Group{
		Name:      g.Name,
		Match:     nonNil(g.Match),
		Schedules: nonNil(g.Schedules),
		Retention: g.Retention,
		Policy:    g.Retention.String(),
		Targets:   nonNil(g.Targets),
		Created:   utc(g.Created),
		NextRun:   s.nextRun(g.Schedules),
	}
	if g.Since != 0 {
		t := utc(g.Since)
		v.Since = &t
	}
	if m := g.Missed; m != nil {
		v.Missed = &Missed{Count: m.Count, First: utc(m.First), Last: utc(m.Last), Noted: utc(m.Noted)}
	}
	snaps := s.ns().Snapshots(g.Name)
	v.Snapshots = len(snaps)
	if len(snaps) > 0 {
		v.Latest = snaps[len(snaps)-1].ID()
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func snapshotView(sn *snapstore.Snapshot) Snapshot {
	v := Snapshot{ID: sn.ID(), Seq: sn.Seq, Group: sn.Group, Created: utc(sn.Created), Label: sn.Label,
		Scheduled: sn.Scheduled, Members: make([]string, 0, len(sn.Members))}
	for _, m := range sn.Members {
		v.Members = append(v.Members, m.Path)
		v.Size += m.Size
	}
	return v
}

// GroupCreate makes a protection group.
func (s *Service) GroupCreate(_ context.Context, a GroupCreateArgs) (GroupDetail, error) {
	for _, m := range a.Match {
		if err := snapstore.ValidPattern(m); err != nil {
			return GroupDetail{}, err
		}
	}
	if err := s.checkTargets(a.Targets); err != nil {
		return GroupDetail{}, err
	}
	g, err := s.ns().CreateGroup(a.Name, snapstore.GroupSpec{Match: a.Match, Schedules: a.Schedules,
		Retention: a.Retention, Targets: a.Targets})
	if errors.Is(err, snapstore.ErrGroupExists) {
		return GroupDetail{}, &msgError{fmt.Sprintf("group %q exists", a.Name), snapstore.ErrGroupExists}
	}
	if err != nil {
		return GroupDetail{}, err
	}
	s.groupsChanged()
	return s.groupDetail(g)
}

func (s *Service) groupDetail(g *snapstore.Group) (GroupDetail, error) {
	members, err := s.ns().Members(g.Name)
	if err != nil {
		return GroupDetail{}, err
	}
	return GroupDetail{Group: s.groupView(g), Members: nonNil(members)}, nil
}

// GroupList lists the groups by name.
func (s *Service) GroupList(context.Context, Empty) ([]Group, error) {
	out := []Group{}
	for _, g := range s.ns().Groups() {
		out = append(out, s.groupView(g))
	}
	return out, nil
}

// GroupShow describes a group and the files it matches now.
func (s *Service) GroupShow(_ context.Context, a NameArgs) (GroupDetail, error) {
	g, err := s.group(a.Name)
	if err != nil {
		return GroupDetail{}, err
	}
	return s.groupDetail(g)
}

// GroupEdit changes a group (see GroupEditArgs).
func (s *Service) GroupEdit(_ context.Context, a GroupEditArgs) (GroupDetail, error) {
	if _, err := s.group(a.Name); err != nil {
		return GroupDetail{}, err
	}
	if len(a.Schedules) > 0 && a.NoSchedule {
		return GroupDetail{}, fmt.Errorf("both new schedules and no schedule given: %w", snapstore.ErrInvalid)
	}
	if len(a.Targets) > 0 && a.NoTarget {
		return GroupDetail{}, fmt.Errorf("both new targets and no target given: %w", snapstore.ErrInvalid)
	}
	for _, m := range slices.Concat(a.Match, a.AddMatch) {
		if err := snapstore.ValidPattern(m); err != nil {
			return GroupDetail{}, err
		}
	}
	if err := s.checkTargets(a.Targets); err != nil {
		return GroupDetail{}, err
	}
	g, err := s.ns().EditGroup(a.Name, func(sp *snapstore.GroupSpec) error {
		if len(a.Match) > 0 {
			sp.Match = slices.Clone(a.Match)
		}
		for _, m := range a.RemoveMatch {
			i := slices.Index(sp.Match, m)
			if i < 0 {
				return fmt.Errorf("group %q has no pattern %q (its patterns: %s): %w", a.Name, m, strings.Join(sp.Match, ", "), snapstore.ErrInvalid)
			}
			sp.Match = slices.Delete(sp.Match, i, i+1)
		}
		for _, m := range a.AddMatch {
			if !slices.Contains(sp.Match, m) {
				sp.Match = append(sp.Match, m)
			}
		}
		if len(a.Schedules) > 0 {
			sp.Schedules = slices.Clone(a.Schedules)
		}
		if a.NoSchedule {
			sp.Schedules = nil
		}
		if len(a.Targets) > 0 {
			sp.Targets = slices.Clone(a.Targets)
		}
		if a.NoTarget {
			sp.Targets = nil
		}
		r := &sp.Retention
		for _, f := range []struct {
			v   *int
			dst *int
		}{{a.KeepLast, &r.KeepLast}, {a.KeepHourly, &r.KeepHourly}, {a.KeepDaily, &r.KeepDaily}, {a.KeepWeekly, &r.KeepWeekly}} {
			if f.v != nil {
				*f.dst = *f.v
			}
		}
		if a.KeepWithin != nil {
			r.KeepWithin = *a.KeepWithin
		}
		return nil
	})
	if errors.Is(err, snapstore.ErrNoGroup) {
		return GroupDetail{}, &msgError{fmt.Sprintf("unknown group %q", a.Name), snapstore.ErrNoGroup}
	}
	if err != nil {
		return GroupDetail{}, err
	}
	s.groupsChanged()
	return s.groupDetail(g)
}

// GroupDelete deletes a group, and with WithSnapshots its snapshots.
func (s *Service) GroupDelete(_ context.Context, a GroupDeleteArgs) (GroupDeleteResult, error) {
	if _, err := s.group(a.Name); err != nil {
		return GroupDeleteResult{}, err
	}
	res := GroupDeleteResult{Name: a.Name, DeletedSnapshots: []string{}}
	var ids []string
	if a.WithSnapshots {
		for _, sn := range s.ns().Snapshots(a.Name) {
			ids = append(ids, sn.ID())
		}
	}
	err := s.ns().DeleteGroup(a.Name, a.WithSnapshots)
	if errors.Is(err, snapstore.ErrHasSnaps) {
		n := len(s.ns().Snapshots(a.Name))
		return res, &msgError{fmt.Sprintf("group %q has %d snapshots: delete them first, or the group with --with-snapshots", a.Name, n), snapstore.ErrHasSnaps}
	}
	if err != nil {
		return res, err
	}
	res.DeletedSnapshots = nonNil(ids)
	s.groupsChanged()
	return res, nil
}

// GroupRun takes a snapshot of the group now, applies its retention and
// starts the exports to its targets: what a system crontab calls.
func (s *Service) GroupRun(ctx context.Context, a GroupRunArgs) (RunResult, error) {
	return s.runGroup(ctx, a.Name, a.Label, true, s.via, callerOf(ctx))
}

// runGroup snapshots a group, applies its retention and starts an export
// of the new snapshot to each of the group's targets (on behalf of via and
// who, for the audit log). A retention that fails leaves the snapshot and
// returns the error with the result; an export that does not start is
// reported in the result (Exports), logged and audited.
func (s *Service) runGroup(ctx context.Context, name, label string, scheduled bool, via string, who Peer) (RunResult, error) {
	g, err := s.group(name)
	if err != nil {
		return RunResult{}, err
	}
	sn, err := s.createSnapshot(name, label, scheduled)
	if err != nil {
		return RunResult{}, err
	}
	res := RunResult{ID: sn.ID(), Snapshot: snapshotView(sn), Policy: g.Retention.String(), Kept: []string{}, Deleted: []string{},
		Exports: []ExportStart{}}
	pr, err := s.prune(name, false)
	res.Kept, res.Deleted = kept(pr.Plan), pr.Deleted
	if len(g.Targets) > 0 && !slices.Contains(res.Deleted, res.ID) {
		res.Exports = s.startExports(ctx, g, sn, via, who)
	}
	if err != nil {
		return res, fmt.Errorf("snapshot %s taken, but retention failed: %w", res.ID, err)
	}
	return res, nil
}

func kept(plan []Decision) []string {
	out := []string{}
	for _, d := range plan {
		if d.Keep {
			out = append(out, d.ID)
		}
	}
	return out
}

func (s *Service) createSnapshot(group, label string, scheduled bool) (*snapstore.Snapshot, error) {
	sn, err := s.ns().CreateSnapshot(group, label, scheduled)
	if errors.Is(err, snapstore.ErrNoGroup) {
		return nil, &msgError{fmt.Sprintf("unknown group %q", group), snapstore.ErrNoGroup}
	}
	return sn, err
}

// GroupPrune applies a group's retention (or, DryRun, only plans it).
func (s *Service) GroupPrune(_ context.Context, a PruneArgs) (PruneResult, error) {
	return s.prune(a.Name, a.DryRun)
}

func (s *Service) prune(name string, dryRun bool) (PruneResult, error) {
	g, err := s.group(name)
	if err != nil {
		return PruneResult{}, err
	}
	res := PruneResult{Group: name, Policy: g.Retention.String(), DryRun: dryRun, Plan: []Decision{}, Deleted: []string{}}
	plan, err := s.ns().PlanRetention(name, dryRun)
	for _, d := range plan {
		res.Plan = append(res.Plan, Decision{ID: d.ID, Created: d.Created.UTC(), Keep: d.Keep, Reasons: nonNil(d.Reasons)})
		if d.Keep || dryRun {
			continue
		}
		// Deleted unless it is still there (a failure stopped the plan).
		if seq, perr := snapstore.ParseSnapshotID(d.ID); perr == nil {
			if _, gerr := s.ns().Snapshot(seq); errors.Is(gerr, snapstore.ErrNoSnapshot) {
				res.Deleted = append(res.Deleted, d.ID)
			}
		}
	}
	s.retire(name, res.Deleted)
	return res, err
}

// SnapshotCreate takes a snapshot of a group.
func (s *Service) SnapshotCreate(_ context.Context, a SnapshotCreateArgs) (Snapshot, error) {
	sn, err := s.createSnapshot(a.Group, a.Label, false)
	if err != nil {
		return Snapshot{}, err
	}
	return snapshotView(sn), nil
}

// SnapshotList lists the snapshots, oldest first.
func (s *Service) SnapshotList(_ context.Context, a SnapshotListArgs) ([]Snapshot, error) {
	if a.Group != "" {
		if _, err := s.group(a.Group); err != nil {
			return nil, err
		}
	}
	out := []Snapshot{}
	for _, sn := range s.ns().Snapshots(a.Group) {
		out = append(out, snapshotView(sn))
	}
	return out, nil
}

// SnapshotShow describes a snapshot and its members.
func (s *Service) SnapshotShow(_ context.Context, a IDArgs) (SnapshotDetail, error) {
	sn, err := s.snapshot(a.ID)
	if err != nil {
		return SnapshotDetail{}, err
	}
	d := SnapshotDetail{Snapshot: snapshotView(sn), Details: make([]MemberInfo, 0, len(sn.Members))}
	us, err := s.ns().SnapshotUsage()
	if err != nil {
		return SnapshotDetail{}, fmt.Errorf("snapshot %s: its space: %w", a.ID, err)
	}
	found := false
	for _, u := range us {
		if u.Seq == sn.Seq {
			d.UniqueBytes, d.UniqueChunks, found = u.UniqueBytes, u.UniqueChunks, true
		}
	}
	if !found {
		// Deleted while its space was measured.
		return SnapshotDetail{}, &msgError{fmt.Sprintf("snapshot %s not found", a.ID), snapstore.ErrNoSnapshot}
	}
	for _, m := range sn.Members {
		d.Details = append(d.Details, MemberInfo{Path: m.Path, Size: m.Size, Mode: modeString(m.Mode), UID: m.UID, GID: m.GID,
			Mtime: utc(m.Mtime), Ino: uint64(m.Ino), Layer: m.Layer})
	}
	return d, nil
}

// SnapshotDelete deletes a snapshot.
func (s *Service) SnapshotDelete(_ context.Context, a IDArgs) (SnapshotDeleteResult, error) {
	sn, err := s.snapshot(a.ID)
	if err != nil {
		return SnapshotDeleteResult{}, err
	}
	if err := s.ns().DeleteSnapshot(sn.Seq); err != nil {
		if errors.Is(err, snapstore.ErrNoSnapshot) {
			return SnapshotDeleteResult{}, &msgError{fmt.Sprintf("snapshot %s not found", a.ID), snapstore.ErrNoSnapshot}
		}
		return SnapshotDeleteResult{}, err
	}
	return SnapshotDeleteResult{ID: sn.ID()}, nil
}

// Ls lists the snapstore tree (see LsArgs).
func (s *Service) Ls(_ context.Context, a LsArgs) (LsResult, error) {
	ns := s.ns()
	res := LsResult{Entries: []Entry{}}
	if a.Snapshot == "" {
		for _, g := range ns.Groups() {
			res.Entries = append(res.Entries, Entry{Path: g.Name, Name: g.Name, Type: "group", Mode: "0555",
				Size: 4096, Mtime: utc(g.Created)})
			for _, sn := range ns.Snapshots(g.Name) {
				res.Entries = append(res.Entries, Entry{Path: g.Name + "/" + sn.ID(), Name: sn.ID(), Type: "snapshot",
					Mode: "0555", Size: 4096, Mtime: utc(sn.Created), ID: sn.ID(), Group: sn.Group, Label: sn.Label,
					Members: len(sn.Members)})
			}
		}
		return res, nil
	}
	sn, err := s.snapshot(a.Snapshot)
	if err != nil {
		return res, err
	}
	root := sn.Group + "/" + sn.ID()
	if !a.HasPath {
		top, err := ns.SnapResolve(root)
		if err != nil {
			return res, err
		}
		err = s.walk(top.Ino, "", &res.Entries)
		return res, err
	}
	p, err := snapstore.CleanPath(a.Path)
	if err != nil {
		return res, err
	}
	target := root
	if p != "" {
		target += "/" + p
	}
	at, err := ns.SnapResolve(target)
	if errors.Is(err, snapstore.ErrNotExist) {
		return res, &msgError{fmt.Sprintf("%s:%s: no such file or directory in the snapshot", sn.ID(), p), snapstore.ErrNotExist}
	}
	if err != nil {
		return res, err
	}
	if at.Type != snapstore.TypeDir {
		res.Entries = append(res.Entries, entry(p, baseName(p), at))
		return res, nil
	}
	ents, err := ns.SnapReadDir(at.Ino)
	if err != nil {
		return res, err
	}
	for _, e := range ents {
		res.Entries = append(res.Entries, entry(join(p, e.Name), e.Name, e.Attr))
	}
	return res, nil
}

// walk lists a snapstore directory's tree, depth first.
func (s *Service) walk(dir snapstore.VIno, prefix string, out *[]Entry) error {
	ents, err := s.ns().SnapReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := join(prefix, e.Name)
		*out = append(*out, entry(p, e.Name, e.Attr))
		if e.Attr.Type == snapstore.TypeDir {
			if err := s.walk(e.Attr.Ino, p, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func entry(p, name string, a snapstore.VAttr) Entry {
	t := "file"
	if a.Type == snapstore.TypeDir {
		t = "dir"
	}
	return Entry{Path: p, Name: name, Type: t, Mode: modeString(a.Mode), UID: a.UID, GID: a.GID, Size: a.Size, Mtime: a.Mtime.UTC()}
}

// Restore reverts live files to a snapshot.
func (s *Service) Restore(_ context.Context, a RestoreArgs) (RestoreResult, error) {
	sn, err := s.snapshot(a.ID)
	if err != nil {
		return RestoreResult{}, err
	}
	done, err := s.ns().Restore(sn.Seq, a.Paths)
	res := RestoreResult{ID: sn.ID(), Restored: nonNil(done)}
	if err != nil && len(done) > 0 {
		err = fmt.Errorf("%w (restored before the failure: %s)", err, strings.Join(done, ", "))
	}
	return res, err
}

// Clone makes a new live file from a snapshot member.
func (s *Service) Clone(_ context.Context, a CloneArgs) (CloneResult, error) {
	sn, err := s.snapshot(a.ID)
	if err != nil {
		return CloneResult{}, err
	}
	m, err := snapstore.CleanPath(a.Member)
	if err != nil {
		return CloneResult{}, err
	}
	attr, err := s.ns().Clone(sn.Seq, m, a.NewPath)
	if err != nil {
		return CloneResult{}, err
	}
	np, _ := snapstore.CleanPath(a.NewPath)
	return CloneResult{From: sn.ID() + ":" + m, Path: np, Size: attr.Size}, nil
}

// CloneLive makes a new live file from a live file.
func (s *Service) CloneLive(_ context.Context, a CloneArgs) (CloneResult, error) {
	p, err := snapstore.CleanPath(a.Path)
	if err != nil {
		return CloneResult{}, err
	}
	attr, err := s.ns().CloneLive(p, a.NewPath)
	if err != nil {
		return CloneResult{}, err
	}
	np, _ := snapstore.CleanPath(a.NewPath)
	return CloneResult{From: p, Path: np, Size: attr.Size}, nil
}

// Status reports the datastore's space.
func (s *Service) Status(context.Context, Empty) (Status, error) {
	st, err := s.ds.Blocks.Stats()
	if err != nil {
		return Status{}, err
	}
	out := Status{
		BlockSize:        st.BlockSize,
		Volumes:          st.Volumes,
		Layers:           st.Layers,
		Chunks:           st.Chunks,
		LogicalBytes:     st.LogicalBytes,
		UniqueBytes:      st.UniqueBytes,
		StoredBytes:      st.StoredBytes,
		PhysicalBytes:    st.PhysicalBytes,
		LogBytes:         st.LogBytes,
		DedupeRatio:      finite(st.DedupeRatio),
		CompressionRatio: finite(st.CompressionRatio),
		Packs:            make([]PackStatus, 0, len(st.Packs)),
		Groups:           len(s.ns().Groups()),
		SnapshotCount:    len(s.ns().Snapshots("")),
	}
	for _, p := range st.Packs {
		out.Packs = append(out.Packs, PackStatus{ID: p.ID, Bytes: p.Bytes, LiveBytes: p.LiveBytes, Chunks: p.Chunks, Live: finite(p.Live)})
	}
	us, err := s.ns().SnapshotUsage()
	if err != nil {
		return Status{}, fmt.Errorf("snapshot space: %w", err)
	}
	out.Snapshots = us
	if out.Snapshots == nil {
		out.Snapshots = []snapstore.SnapshotUsage{}
	}
	out.SnapshotCount = len(us)
	if s.ox != nil {
		out.RemoteBytesFetched = s.ox.Stats().RemoteBytesFetched
	}
	return out, nil
}

// GC collects garbage.
func (s *Service) GC(ctx context.Context, a GCArgs) (GCResult, error) {
	if a.Threshold < 0 || a.Threshold > 1 || math.IsNaN(a.Threshold) {
		return GCResult{}, fmt.Errorf("gc threshold %v: want a fraction between 0 and 1: %w", a.Threshold, snapstore.ErrInvalid)
	}
	r, err := s.ds.Blocks.GC(ctx, blockstore.GCOptions{DryRun: a.DryRun, Threshold: a.Threshold})
	if err != nil {
		return GCResult{}, fmt.Errorf("gc: %w", err)
	}
	return GCResult{DryRun: a.DryRun, ChunksFreed: r.ChunksFreed, BytesFreed: r.BytesFreed, PacksDeleted: r.PacksDeleted,
		PacksCompacted: r.PacksCompacted, BytesRewritten: r.BytesRewritten}, nil
}

// Verify reads and checks every chunk.
func (s *Service) Verify(ctx context.Context, _ Empty) (VerifyResult, error) {
	r, err := s.ds.Blocks.Scrub(ctx)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify: %w", err)
	}
	out := VerifyResult{ChunksChecked: r.ChunksChecked, BytesChecked: r.BytesChecked, Corrupt: make([]CorruptChunk, 0, len(r.Corrupt))}
	for _, b := range r.Corrupt {
		out.Corrupt = append(out.Corrupt, CorruptChunk{Chunk: b.Chunk, Pack: b.Pack, Offset: b.Offset, Error: b.Err})
	}
	return out, nil
}

// finite returns f, or 0 when f is NaN or infinite (a ratio over nothing),
// which JSON cannot represent.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
