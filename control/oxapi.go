package control

import "context"

// TargetAdd configures a target.
func (api API) TargetAdd(ctx context.Context, a TargetAddArgs) (Target, error) {
	return call[Target](ctx, api.C, "target.add", a)
}

// TargetList lists the targets by name.
func (api API) TargetList(ctx context.Context, a Empty) ([]Target, error) {
	return call[[]Target](ctx, api.C, "target.list", a)
}

// TargetRemove forgets a target.
func (api API) TargetRemove(ctx context.Context, a TargetRemoveArgs) (TargetRemoveResult, error) {
	return call[TargetRemoveResult](ctx, api.C, "target.remove", a)
}

// TargetSetBandwidth changes a target's bandwidth limit.
func (api API) TargetSetBandwidth(ctx context.Context, a TargetBandwidthArgs) (Target, error) {
	return call[Target](ctx, api.C, "target.set_bandwidth", a)
}

// TargetRekey wraps a target's key under a new key file or passphrase.
func (api API) TargetRekey(ctx context.Context, a TargetRekeyArgs) (Target, error) {
	return call[Target](ctx, api.C, "target.rekey", a)
}

// TargetUnlock gives the daemon a target's passphrase.
func (api API) TargetUnlock(ctx context.Context, a TargetUnlockArgs) (Target, error) {
	return call[Target](ctx, api.C, "target.unlock", a)
}

// TargetSnapshots lists the snapshots a target holds.
func (api API) TargetSnapshots(ctx context.Context, a TargetArgs) ([]TargetSnapshot, error) {
	return call[[]TargetSnapshot](ctx, api.C, "target.snapshots", a)
}

// TargetVerify checks a target.
func (api API) TargetVerify(ctx context.Context, a TargetVerifyArgs) (TargetVerifyResult, error) {
	return call[TargetVerifyResult](ctx, api.C, "target.verify", a)
}

// TargetPrune applies retention to a target and deletes unreferenced
// objects.
func (api API) TargetPrune(ctx context.Context, a TargetPruneArgs) (TargetPruneResult, error) {
	return call[TargetPruneResult](ctx, api.C, "target.prune", a)
}

// Export starts exporting a snapshot to a target.
func (api API) Export(ctx context.Context, a ExportArgs) (Job, error) {
	return call[Job](ctx, api.C, "export", a)
}

// Import makes live files from a snapshot in a target.
func (api API) Import(ctx context.Context, a ImportArgs) (ImportResult, error) {
	return call[ImportResult](ctx, api.C, "import", a)
}

// Jobs lists the exports and imports.
func (api API) Jobs(ctx context.Context, a Empty) ([]Job, error) {
	return call[[]Job](ctx, api.C, "jobs", a)
}

// Job describes one job.
func (api API) Job(ctx context.Context, a JobArgs) (Job, error) {
	return call[Job](ctx, api.C, "job", a)
}
