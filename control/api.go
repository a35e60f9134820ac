package control

import "context"

// API is the typed face of a Caller: one method per operation.
type API struct{ C Caller }

func call[R any](ctx context.Context, c Caller, op string, args any) (R, error) {
	var r R
	err := c.Call(ctx, op, args, &r)
	return r, err
}

// GroupCreate makes a protection group.
func (api API) GroupCreate(ctx context.Context, a GroupCreateArgs) (GroupDetail, error) {
	return call[GroupDetail](ctx, api.C, "group.create", a)
}

// GroupList lists the groups by name.
func (api API) GroupList(ctx context.Context, a Empty) ([]Group, error) {
	return call[[]Group](ctx, api.C, "group.list", a)
}

// GroupShow describes a group and the files it matches now.
func (api API) GroupShow(ctx context.Context, a NameArgs) (GroupDetail, error) {
	return call[GroupDetail](ctx, api.C, "group.show", a)
}

// GroupEdit changes a group (see GroupEditArgs).
func (api API) GroupEdit(ctx context.Context, a GroupEditArgs) (GroupDetail, error) {
	return call[GroupDetail](ctx, api.C, "group.edit", a)
}

// GroupDelete deletes a group (with its snapshots, if asked).
func (api API) GroupDelete(ctx context.Context, a GroupDeleteArgs) (GroupDeleteResult, error) {
	return call[GroupDeleteResult](ctx, api.C, "group.delete", a)
}

// GroupRun snapshots a group now and applies its retention.
func (api API) GroupRun(ctx context.Context, a GroupRunArgs) (RunResult, error) {
	return call[RunResult](ctx, api.C, "group.run", a)
}

// GroupPrune applies (or plans) a group's retention.
func (api API) GroupPrune(ctx context.Context, a PruneArgs) (PruneResult, error) {
	return call[PruneResult](ctx, api.C, "group.prune", a)
}

// SnapshotCreate takes a snapshot of a group.
func (api API) SnapshotCreate(ctx context.Context, a SnapshotCreateArgs) (Snapshot, error) {
	return call[Snapshot](ctx, api.C, "snapshot.create", a)
}

// SnapshotList lists snapshots, oldest first.
func (api API) SnapshotList(ctx context.Context, a SnapshotListArgs) ([]Snapshot, error) {
	return call[[]Snapshot](ctx, api.C, "snapshot.list", a)
}

// SnapshotShow describes a snapshot and its members.
func (api API) SnapshotShow(ctx context.Context, a IDArgs) (SnapshotDetail, error) {
	return call[SnapshotDetail](ctx, api.C, "snapshot.show", a)
}

// SnapshotDelete deletes a snapshot.
func (api API) SnapshotDelete(ctx context.Context, a IDArgs) (SnapshotDeleteResult, error) {
	return call[SnapshotDeleteResult](ctx, api.C, "snapshot.delete", a)
}

// Ls lists the snapstore tree.
func (api API) Ls(ctx context.Context, a LsArgs) (LsResult, error) {
	return call[LsResult](ctx, api.C, "ls", a)
}

// Restore reverts live files to a snapshot.
func (api API) Restore(ctx context.Context, a RestoreArgs) (RestoreResult, error) {
	return call[RestoreResult](ctx, api.C, "restore", a)
}

// Clone makes a live file from a snapshot member.
func (api API) Clone(ctx context.Context, a CloneArgs) (CloneResult, error) {
	return call[CloneResult](ctx, api.C, "clone", a)
}

// CloneLive makes a live file from a live file.
func (api API) CloneLive(ctx context.Context, a CloneArgs) (CloneResult, error) {
	return call[CloneResult](ctx, api.C, "clone.live", a)
}

// Status reports the datastore's space.
func (api API) Status(ctx context.Context, a Empty) (Status, error) {
	return call[Status](ctx, api.C, "status", a)
}

// GC collects garbage.
func (api API) GC(ctx context.Context, a GCArgs) (GCResult, error) {
	return call[GCResult](ctx, api.C, "gc", a)
}

// Verify reads and checks every chunk.
func (api API) Verify(ctx context.Context, a Empty) (VerifyResult, error) {
	return call[VerifyResult](ctx, api.C, "verify", a)
}
