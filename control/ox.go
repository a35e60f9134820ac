package control

// The object exchange operations (targets, export, import, jobs) on the
// service's objex.Manager, and the exports of scheduled snapshots.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dstore/dstore/objex"
	"github.com/dstore/dstore/snapstore"
)

// Errors of the OX operations.
var (
	// ErrNoTarget: no target has that name.
	ErrNoTarget = errors.New("no such target")
	// ErrNoJob: no job has that ID.
	ErrNoJob = errors.New("no such job")
	// ErrNoOX: the service runs without object exchange.
	ErrNoOX = errors.New("object exchange is not available")
)

// exportStartTimeout bounds how long a group run waits for one export to
// start (opening its target may need the network; the export itself runs
// in the background).
const exportStartTimeout = 30 * time.Second

// Passphrases holds target passphrases that callers sent (target.add,
// target.rekey, target.unlock), in memory only, under the name of their
// environment variable, for as long as the process runs. Getenv, the
// objex.Config.Getenv of the service's manager, answers from them first
// and then from the process's environment. So the passphrase a command
// line reads from its own environment reaches the daemon over the control
// socket (mode 0600) without being stored or audited, and a daemon that
// restarts reads the variable from its own environment (or needs
// "dstore target unlock").
type Passphrases struct {
	mu sync.Mutex
	m  map[string]string
}

// NewPassphrases makes an empty Passphrases.
func NewPassphrases() *Passphrases { return &Passphrases{m: map[string]string{}} }

// Getenv returns the passphrase sent for variable name, else the
// variable's value in the environment.
func (p *Passphrases) Getenv(name string) string {
	p.mu.Lock()
	v, ok := p.m[name]
	p.mu.Unlock()
	if ok {
		return v
	}
	return os.Getenv(name)
}

// set keeps value for name and returns a function that puts back what
// was there before.
func (p *Passphrases) set(name, value string) (undo func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.m[name]
	p.m[name] = value
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if had {
			p.m[name] = old
		} else {
			delete(p.m, name)
		}
	}
}

// secretFields are the argument fields the audit log never shows.
var secretFields = []string{"access_key", "secret_key", "passphrase", "current_passphrase"}

// redact replaces the values of secret fields of a JSON object with
// "(redacted)" (keeping that one was given); other arguments are left as
// they are.
func redact(raw []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		// Not an object: whatever it is may hold a secret.
		if slices.ContainsFunc(secretFields, func(f string) bool { return strings.Contains(string(raw), f) }) {
			return []byte(`"(redacted: not a JSON object)"`)
		}
		return raw
	}
	changed := false
	for _, f := range secretFields {
		if v, ok := m[f]; ok && string(v) != `""` && string(v) != "null" {
			m[f] = json.RawMessage(`"(redacted)"`)
			changed = true
		}
	}
	if !changed {
		return raw
	}
	out, err := json.Marshal(m)
	if err != nil {
		return []byte(`"(redacted)"`)
	}
	return out
}

func (s *Service) oxm() (*objex.Manager, error) {
	if s.ox == nil {
		return nil, fmt.Errorf("this service runs without object exchange: %w", ErrNoOX)
	}
	return s.ox, nil
}

// target returns a configured target or an "unknown target" error.
func (s *Service) target(name string) (objex.TargetInfo, error) {
	m, err := s.oxm()
	if err != nil {
		return objex.TargetInfo{}, err
	}
	ts, err := m.Targets()
	if err != nil {
		return objex.TargetInfo{}, err
	}
	for _, t := range ts {
		if t.Name == name {
			return t, nil
		}
	}
	return objex.TargetInfo{}, &msgError{fmt.Sprintf("unknown target %q", name), ErrNoTarget}
}

// checkTargets refuses target names that are not configured (groups
// naming them would fail every export).
func (s *Service) checkTargets(names []string) error {
	if s.ox == nil {
		return nil
	}
	for _, n := range names {
		if _, err := s.target(n); err != nil {
			if errors.Is(err, ErrNoTarget) {
				return &msgError{fmt.Sprintf("unknown target %q (add it first: dstore target add %s URL ...)", n, n), ErrNoTarget}
			}
			return err
		}
	}
	return nil
}

func (s *Service) targetView(t objex.TargetInfo) Target {
	v := Target{Name: t.Name, URL: t.URL, ID: t.ID, Endpoint: t.Endpoint, Region: t.Region, KeyFile: t.KeyFile,
		PassphraseEnv: t.PassEnv, Bandwidth: t.Bandwidth, Groups: []string{}}
	for _, g := range s.ns().Groups() {
		if slices.Contains(g.Targets, t.Name) {
			v.Groups = append(v.Groups, g.Name)
		}
	}
	return v
}

func utcPtr(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := utc(ns)
	return &t
}

func jobView(in objex.JobInfo) Job {
	return Job{ID: in.ID, Kind: in.Kind, State: in.State, Target: in.Target, Snapshot: in.Snapshot, Path: in.Path,
		BytesDone: in.BytesDone, BytesTotal: in.BytesTotal, BytesMoved: in.BytesMoved, Rate: finite(in.Rate),
		Started: utcPtr(in.Started), Finished: utcPtr(in.Finished), Error: in.Error}
}

// TargetAdd configures a target (and makes its key when the place holds
// no target yet).
func (s *Service) TargetAdd(ctx context.Context, a TargetAddArgs) (res Target, err error) {
	m, err := s.oxm()
	if err != nil {
		return Target{}, err
	}
	if (a.KeyFile == "") == (a.PassphraseEnv == "") {
		return Target{}, fmt.Errorf("target %s: give exactly one of a key file and a passphrase variable: %w", a.Name, snapstore.ErrInvalid)
	}
	if a.Bandwidth < 0 {
		return Target{}, fmt.Errorf("target %s: bandwidth %d: %w", a.Name, a.Bandwidth, snapstore.ErrInvalid)
	}
	if a.Passphrase != "" {
		if a.PassphraseEnv == "" {
			return Target{}, fmt.Errorf("target %s: a passphrase without its variable's name: %w", a.Name, snapstore.ErrInvalid)
		}
		undo := s.passphrases.set(a.PassphraseEnv, a.Passphrase)
		defer func() {
			if err != nil {
				undo()
			}
		}()
	}
	if _, terr := s.target(a.Name); terr == nil {
		err = &msgError{fmt.Sprintf("target %q exists", a.Name), snapstore.ErrExist}
		return Target{}, err
	}
	info, err := m.AddTarget(ctx, objex.TargetSpec{Name: a.Name, URL: a.URL,
		Store:   objex.StoreOptions{Endpoint: a.Endpoint, Region: a.Region, AccessKey: a.AccessKey, SecretKey: a.SecretKey, Insecure: a.Insecure},
		KeyFile: a.KeyFile, PassphraseEnv: a.PassphraseEnv, Bandwidth: a.Bandwidth})
	if err != nil {
		return Target{}, err
	}
	return s.targetView(info), nil
}

// TargetList lists the configured targets by name.
func (s *Service) TargetList(context.Context, Empty) ([]Target, error) {
	m, err := s.oxm()
	if err != nil {
		return nil, err
	}
	ts, err := m.Targets()
	if err != nil {
		return nil, err
	}
	out := []Target{}
	for _, t := range ts {
		out = append(out, s.targetView(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// TargetRemove forgets a target; its objects stay where they are.
func (s *Service) TargetRemove(_ context.Context, a TargetRemoveArgs) (TargetRemoveResult, error) {
	m, err := s.oxm()
	if err != nil {
		return TargetRemoveResult{}, err
	}
	t, err := s.target(a.Name)
	if err != nil {
		return TargetRemoveResult{}, err
	}
	if v := s.targetView(t); len(v.Groups) > 0 && !a.Force {
		return TargetRemoveResult{}, &msgError{fmt.Sprintf("target %q: groups export to it (%s); edit them first (dstore group edit GROUP --target ... or --no-target), or remove it with --force",
			a.Name, strings.Join(v.Groups, ", ")), snapstore.ErrInvalid}
	}
	if err := m.RemoveTarget(a.Name, a.Force); err != nil {
		return TargetRemoveResult{}, err
	}
	return TargetRemoveResult{Name: a.Name}, nil
}

// TargetSetBandwidth changes a target's bandwidth limit; running
// transfers follow at once.
func (s *Service) TargetSetBandwidth(_ context.Context, a TargetBandwidthArgs) (Target, error) {
	m, err := s.oxm()
	if err != nil {
		return Target{}, err
	}
	if _, err := s.target(a.Name); err != nil {
		return Target{}, err
	}
	if a.Bandwidth < 0 {
		return Target{}, fmt.Errorf("target %s: bandwidth %d: %w", a.Name, a.Bandwidth, snapstore.ErrInvalid)
	}
	if err := m.SetBandwidth(a.Name, a.Bandwidth); err != nil {
		return Target{}, err
	}
	t, err := s.target(a.Name)
	return s.targetView(t), err
}

// TargetRekey wraps the target's master key under a new key file or
// passphrase; no data moves.
func (s *Service) TargetRekey(ctx context.Context, a TargetRekeyArgs) (res Target, err error) {
	m, err := s.oxm()
	if err != nil {
		return Target{}, err
	}
	t, err := s.target(a.Name)
	if err != nil {
		return Target{}, err
	}
	if (a.KeyFile == "") == (a.PassphraseEnv == "") {
		return Target{}, fmt.Errorf("target %s: give exactly one new key file or passphrase variable: %w", a.Name, snapstore.ErrInvalid)
	}
	if a.PassphraseEnv != "" && a.PassphraseEnv == t.PassEnv {
		// One name cannot hold the old and the new passphrase at once.
		return Target{}, fmt.Errorf("target %s: its passphrase is in %s now; give the new one in another variable: %w", a.Name, t.PassEnv, snapstore.ErrInvalid)
	}
	if a.Passphrase != "" && a.PassphraseEnv == "" {
		return Target{}, fmt.Errorf("target %s: a passphrase without its variable's name: %w", a.Name, snapstore.ErrInvalid)
	}
	var undos []func()
	defer func() {
		if err != nil {
			for _, u := range slices.Backward(undos) {
				u()
			}
		}
	}()
	if a.CurrentPassphrase != "" && t.PassEnv != "" {
		undos = append(undos, s.passphrases.set(t.PassEnv, a.CurrentPassphrase))
	}
	if a.Passphrase != "" {
		undos = append(undos, s.passphrases.set(a.PassphraseEnv, a.Passphrase))
	}
	if err = m.Rekey(ctx, a.Name, a.KeyFile, a.PassphraseEnv); err != nil {
		return Target{}, err
	}
	t, err = s.target(a.Name)
	return s.targetView(t), err
}

// TargetUnlock gives the service a target's passphrase (when its own
// environment lacks the variable) and checks that it opens the target.
func (s *Service) TargetUnlock(ctx context.Context, a TargetUnlockArgs) (res Target, err error) {
	m, err := s.oxm()
	if err != nil {
		return Target{}, err
	}
	t, err := s.target(a.Name)
	if err != nil {
		return Target{}, err
	}
	if t.PassEnv == "" {
		return Target{}, fmt.Errorf("target %s opens with the key file %s, not a passphrase: %w", a.Name, t.KeyFile, snapstore.ErrInvalid)
	}
	if a.Passphrase == "" {
		return Target{}, fmt.Errorf("target %s: no passphrase given (the caller's %s is empty or unset): %w", a.Name, t.PassEnv, snapstore.ErrInvalid)
	}
	undo := s.passphrases.set(t.PassEnv, a.Passphrase)
	if err := m.CheckKey(ctx, a.Name); err != nil {
		undo()
		return Target{}, err
	}
	return s.targetView(t), nil
}

// TargetSnapshots lists the snapshots a target holds, oldest export first.
func (s *Service) TargetSnapshots(ctx context.Context, a TargetArgs) ([]TargetSnapshot, error) {
	m, err := s.oxm()
	if err != nil {
		return nil, err
	}
	if _, err := s.target(a.Name); err != nil {
		return nil, err
	}
	es, err := m.Snapshots(ctx, a.Name)
	if err != nil {
		return nil, err
	}
	me := s.ds.Blocks.ID()
	out := []TargetSnapshot{}
	for _, e := range es {
		in := e.Info
		v := TargetSnapshot{Name: e.Name, Snapshot: in.Snapshot.ID, Seq: in.Snapshot.Seq, Group: in.Snapshot.Group,
			Label: in.Snapshot.Label, Created: utcPtr(in.Snapshot.CreatedNs), Exported: utcPtr(in.ExportedNs),
			DatastoreID: in.Snapshot.DatastoreID, ThisDatastore: e.Err == "" && in.Snapshot.DatastoreID == me,
			ByGroup: in.Snapshot.ByGroup, BlockSize: in.BlockSize, Files: []TargetFile{}, Bytes: in.Bytes, Stored: in.Stored, Error: e.Err}
		for _, f := range in.Files {
			v.Files = append(v.Files, TargetFile{Path: f.Path, Size: f.Size, Mode: modeString(f.Mode)})
		}
		out = append(out, v)
	}
	return out, nil
}

// TargetVerify checks a target (deep: every record a manifest names).
func (s *Service) TargetVerify(ctx context.Context, a TargetVerifyArgs) (TargetVerifyResult, error) {
	m, err := s.oxm()
	if err != nil {
		return TargetVerifyResult{}, err
	}
	if _, err := s.target(a.Name); err != nil {
		return TargetVerifyResult{}, err
	}
	r, err := m.Verify(ctx, a.Name, a.Deep)
	if err != nil {
		return TargetVerifyResult{}, err
	}
	return TargetVerifyResult{Target: a.Name, Deep: a.Deep, Snapshots: r.Snapshots, Objects: r.Objects, Chunks: r.Chunks,
		Bytes: r.Bytes, Problems: nonNil(r.Problems)}, nil
}

// TargetPrune applies retention to a target: it deletes the manifests of
// snapshots this datastore exported for their group and that retention
// has since deleted here (nothing else), then the objects no manifest
// names that are older than the grace period.
func (s *Service) TargetPrune(ctx context.Context, a TargetPruneArgs) (TargetPruneResult, error) {
	res := TargetPruneResult{Target: a.Name, DryRun: a.DryRun, Plan: []TargetPruneDecision{}, DeletedSnapshots: []string{}}
	m, err := s.oxm()
	if err != nil {
		return res, err
	}
	if _, err := s.target(a.Name); err != nil {
		return res, err
	}
	grace := time.Duration(0) // objex's default
	if a.Grace != nil {
		if grace = time.Duration(*a.Grace); grace < 0 {
			return res, fmt.Errorf("grace %s: %w", a.Grace, snapstore.ErrInvalid)
		}
		if grace == 0 {
			grace = time.Nanosecond // none
		}
	}
	es, err := m.Snapshots(ctx, a.Name)
	if err != nil {
		return res, err
	}
	retired, err := m.Retired()
	if err != nil {
		return res, err
	}
	me := s.ds.Blocks.ID()
	var victims []string
	for _, e := range es {
		src := e.Info.Snapshot
		d := TargetPruneDecision{Name: e.Name, Snapshot: src.ID, Group: src.Group, Keep: true}
		r, wasRetired := retired[src.Seq]
		switch {
		case e.Err != "":
			d.Reason = "fails verification: " + e.Err
		case src.DatastoreID != me:
			d.Reason = fmt.Sprintf("exported by another datastore (%d)", src.DatastoreID)
		case !src.ByGroup:
			d.Reason = "exported by hand"
		case s.exists(src.Seq, src.ID):
			d.Reason = "kept here"
		case !wasRetired || r.ID != src.ID || r.DatastoreID != me:
			d.Reason = "deleted here, not by retention"
		default:
			d.Keep, d.Reason = false, "retention deleted "+src.ID
			victims = append(victims, e.Name)
		}
		res.Plan = append(res.Plan, d)
	}
	if !a.DryRun {
		for _, n := range victims {
			if err := m.DeleteSnapshot(ctx, a.Name, n); err != nil && !errors.Is(err, objex.ErrNotExist) {
				return res, fmt.Errorf("deleting snapshot %s from target %s: %w", n, a.Name, err)
			}
			res.DeletedSnapshots = append(res.DeletedSnapshots, n)
		}
	}
	pr, err := m.Prune(ctx, a.Name, objex.PruneOptions{DryRun: a.DryRun, Grace: grace})
	res.Objects, res.Bytes = pr.Objects, pr.Bytes
	return res, err
}

// exists reports whether snapshot seq, with this ID, is still here.
func (s *Service) exists(seq uint64, id string) bool {
	sn, err := s.ns().Snapshot(seq)
	return err == nil && sn.ID() == id
}

// Export starts exporting a snapshot to a target and returns its job.
func (s *Service) Export(ctx context.Context, a ExportArgs) (Job, error) {
	m, err := s.oxm()
	if err != nil {
		return Job{}, err
	}
	sn, err := s.snapshot(a.Snapshot)
	if err != nil {
		return Job{}, err
	}
	if _, err := s.target(a.Target); err != nil {
		return Job{}, err
	}
	if a.Name != "" {
		if err := objex.ValidSnapshotName(a.Name); err != nil {
			return Job{}, fmt.Errorf("export name: %v: %w", err, snapstore.ErrInvalid)
		}
	}
	j, err := m.Export(ctx, sn.Seq, a.Target, objex.ExportOptions{Name: a.Name})
	if err != nil {
		return Job{}, err
	}
	return jobView(j.Info()), nil
}

// Import makes live files from a snapshot in a target, at once.
func (s *Service) Import(ctx context.Context, a ImportArgs) (ImportResult, error) {
	res := ImportResult{Target: a.Target, Snapshot: a.Snapshot, Files: []ImportedFile{}}
	m, err := s.oxm()
	if err != nil {
		return res, err
	}
	if _, err := s.target(a.Target); err != nil {
		return res, err
	}
	if err := objex.ValidSnapshotName(a.Snapshot); err != nil {
		return res, fmt.Errorf("snapshot name: %v: %w", err, snapstore.ErrInvalid)
	}
	np, err := snapstore.CleanPath(a.NewPath)
	if err != nil {
		return res, err
	}
	if np == "" {
		return res, fmt.Errorf("new path %q names the root: %w", a.NewPath, snapstore.ErrInvalid)
	}
	notThere := func(err error) error {
		if errors.Is(err, objex.ErrNotExist) {
			return &msgError{fmt.Sprintf("target %s has no snapshot %q (see dstore target snapshots %s)", a.Target, a.Snapshot, a.Target), objex.ErrNotExist}
		}
		return err
	}
	if a.HasPath {
		member, err := snapstore.CleanPath(a.Path)
		if err != nil {
			return res, err
		}
		if member == "" {
			return res, fmt.Errorf("snapshot path %q names the root; give a file, or no path to import every file: %w", a.Path, snapstore.ErrInvalid)
		}
		attr, j, err := m.Import(ctx, a.Target, a.Snapshot, member, np)
		if err != nil {
			return res, notThere(err)
		}
		res.Files = append(res.Files, ImportedFile{Member: member, Path: np, Size: attr.Size, Job: j.Info().ID})
		return res, nil
	}
	attrs, jobs, err := m.ImportAll(ctx, a.Target, a.Snapshot, np)
	for i, j := range jobs {
		in := j.Info()
		res.Files = append(res.Files, ImportedFile{Member: strings.TrimPrefix(in.Path, np+"/"), Path: in.Path, Size: attrs[i].Size, Job: in.ID})
	}
	return res, notThere(err)
}

// Jobs lists the exports and imports, by ID.
func (s *Service) Jobs(context.Context, Empty) ([]Job, error) {
	m, err := s.oxm()
	if err != nil {
		return nil, err
	}
	out := []Job{}
	for _, in := range m.Jobs() {
		out = append(out, s.jobOf(in))
	}
	return out, nil
}

// jobOf is the view of a job; one that is unfinished but not running in
// this process (its record, from an earlier run; the next start of the
// daemon resumes it) is queued.
func (s *Service) jobOf(in objex.JobInfo) Job {
	v := jobView(in)
	if in.State == objex.JobRunning {
		if _, ok := s.ox.Job(in.ID); !ok {
			v.State = objex.JobQueued
		}
	}
	return v
}

// JobShow describes one job.
func (s *Service) JobShow(_ context.Context, a JobArgs) (Job, error) {
	m, err := s.oxm()
	if err != nil {
		return Job{}, err
	}
	if j, ok := m.Job(a.ID); ok {
		return jobView(j.Info()), nil
	}
	for _, in := range m.Jobs() {
		if in.ID == a.ID {
			return s.jobOf(in), nil
		}
	}
	return Job{}, &msgError{fmt.Sprintf("job %d not found", a.ID), ErrNoJob}
}

// exportArgs are the audit arguments of an export a group run started.
type exportArgs struct {
	Snapshot string `json:"snapshot"`
	Target   string `json:"target"`
	Group    string `json:"group"`
}

// startExports starts an export of sn to each target of its group g. A
// failure to start is logged, audited and reported in the result, never
// an error of the run: the snapshot exists either way.
func (s *Service) startExports(ctx context.Context, g *snapstore.Group, sn *snapstore.Snapshot, via string, who Peer) []ExportStart {
	out := []ExportStart{}
	for _, t := range g.Targets {
		es := ExportStart{Target: t}
		var j *objex.Job
		m, err := s.oxm()
		if err == nil {
			_, err = s.target(t)
		}
		if err == nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exportStartTimeout)
			j, err = m.Export(sctx, sn.Seq, t, objex.ExportOptions{ByGroup: true})
			cancel()
		}
		note := ""
		if err != nil {
			es.Error = err.Error()
			s.log.Error("control: a snapshot's export did not start", "group", g.Name, "snapshot", sn.ID(), "target", t, "err", err)
		} else {
			in := j.Info()
			es.Job, es.Name = in.ID, in.Snapshot
			note = fmt.Sprintf("job %d: %s to target %s as %s", in.ID, sn.ID(), t, in.Snapshot)
			s.log.Info("control: exporting a group's snapshot", "group", g.Name, "snapshot", sn.ID(), "target", t, "job", in.ID)
		}
		args, _ := json.Marshal(exportArgs{Snapshot: sn.ID(), Target: t, Group: g.Name})
		if aerr := s.record("export", args, via, who, err, note); aerr != nil {
			s.log.Error("control: writing the audit log", "operation", "export", "err", aerr)
		}
		out = append(out, es)
	}
	return out
}

// retire tells the manager which snapshots retention deleted, so that
// target prune may delete their group exports. A failure only keeps them
// on the targets; it is logged.
func (s *Service) retire(group string, ids []string) {
	if s.ox == nil || len(ids) == 0 {
		return
	}
	var rs []objex.RetiredSnapshot
	now := s.clock.Now().UnixNano()
	for _, id := range ids {
		seq, err := snapstore.ParseSnapshotID(id)
		if err != nil {
			continue
		}
		rs = append(rs, objex.RetiredSnapshot{Seq: seq, ID: id, Group: group, DatastoreID: s.ds.Blocks.ID(), DeletedNs: now})
	}
	if err := s.ox.Retire(rs...); err != nil {
		s.log.Error("control: recording snapshots retention deleted (their exports stay on the targets)", "group", group, "err", err)
	}
}
