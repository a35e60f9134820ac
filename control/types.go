package control

import (
	"time"

	"github.com/dstore/dstore/snapstore"
)

// Arguments and results of the operations. Their JSON field names are
// part of the command line's interface (dstore ... --json prints the
// results as they are): add fields, do not rename them. Times are UTC and
// encode as RFC 3339; modes are octal strings such as "0644".

// NameArgs names a protection group.
type NameArgs struct {
	Name string `json:"name"`
}

// GroupCreateArgs are the arguments of group.create.
type GroupCreateArgs struct {
	Name      string              `json:"name"`
	Match     []string            `json:"match"`
	Schedules []string            `json:"schedules,omitempty"`
	Retention snapstore.Retention `json:"retention"`
	Targets   []string            `json:"targets,omitempty"`
}

// GroupEditArgs are the arguments of group.edit. Changes apply in this
// order: Match (when not empty) replaces the patterns, RemoveMatch removes
// patterns (each must be there), AddMatch adds patterns (one already there
// is kept once); Schedules (when not empty) replaces the schedules,
// NoSchedule removes them all; Targets replaces the targets, NoTarget
// removes them; each retention rule that is not nil is set (0 removes the
// rule).
type GroupEditArgs struct {
	Name        string              `json:"name"`
	Match       []string            `json:"match,omitempty"`
	AddMatch    []string            `json:"add_match,omitempty"`
	RemoveMatch []string            `json:"remove_match,omitempty"`
	Schedules   []string            `json:"schedules,omitempty"`
	NoSchedule  bool                `json:"no_schedule,omitempty"`
	Targets     []string            `json:"targets,omitempty"`
	NoTarget    bool                `json:"no_target,omitempty"`
	KeepLast    *int                `json:"keep_last,omitempty"`
	KeepWithin  *snapstore.Duration `json:"keep_within,omitempty"`
	KeepHourly  *int                `json:"keep_hourly,omitempty"`
	KeepDaily   *int                `json:"keep_daily,omitempty"`
	KeepWeekly  *int                `json:"keep_weekly,omitempty"`
}

// GroupDeleteArgs are the arguments of group.delete.
type GroupDeleteArgs struct {
	Name          string `json:"name"`
	WithSnapshots bool   `json:"with_snapshots,omitempty"`
}

// GroupRunArgs are the arguments of group.run.
type GroupRunArgs struct {
	Name  string `json:"name"`
	Label string `json:"label,omitempty"`
}

// PruneArgs are the arguments of group.prune.
type PruneArgs struct {
	Name   string `json:"name"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// Group describes a protection group.
type Group struct {
	Name      string              `json:"name"`
	Match     []string            `json:"match"`
	Schedules []string            `json:"schedules"`
	Retention snapstore.Retention `json:"retention"`
	Policy    string              `json:"policy"` // the retention as text: "keep last 3, 7 daily"
	Targets   []string            `json:"targets"`
	Created   time.Time           `json:"created"`
	// Since: every fire time of the schedules up to here has run or been
	// reported missed. Absent when the group has no history.
	Since     *time.Time `json:"since,omitempty"`
	NextRun   *time.Time `json:"next_run,omitempty"` // the schedules' next fire time; absent without schedules
	Missed    *Missed    `json:"missed,omitempty"`   // the latest scheduled runs that did not happen
	Snapshots int        `json:"snapshots"`          // how many it has
	Latest    string     `json:"latest,omitempty"`   // the ID of its newest snapshot
}

// Missed reports scheduled runs that did not happen (the daemon was down,
// the clock jumped): how many, the first and the last fire time, and when
// the daemon found them.
type Missed struct {
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	Noted time.Time `json:"noted"`
}

// GroupDetail is a group with the live files its patterns match now.
type GroupDetail struct {
	Group
	Members []string `json:"members"`
}

// GroupDeleteResult is the result of group.delete.
type GroupDeleteResult struct {
	Name             string   `json:"name"`
	DeletedSnapshots []string `json:"deleted_snapshots"`
}

// RunResult is the result of group.run: the snapshot taken, what
// retention then kept and deleted (IDs, newest first), and the exports
// started to the group's targets.
type RunResult struct {
	ID       string        `json:"id"`
	Snapshot Snapshot      `json:"snapshot"`
	Policy   string        `json:"policy"`
	Kept     []string      `json:"kept"`
	Deleted  []string      `json:"deleted"`
	Exports  []ExportStart `json:"exports"`
}

// PruneResult is the result of group.prune: the plan, newest first, and
// what was deleted (nothing when DryRun).
type PruneResult struct {
	Group   string     `json:"group"`
	Policy  string     `json:"policy"`
	DryRun  bool       `json:"dry_run"`
	Plan    []Decision `json:"plan"`
	Deleted []string   `json:"deleted"`
}

// Decision is what retention decided for one snapshot; Reasons names every
// rule that keeps it ("last 3", "daily 2026-11-21", ...).
type Decision struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons"`
}

// SnapshotCreateArgs are the arguments of snapshot.create.
type SnapshotCreateArgs struct {
	Group string `json:"group"`
	Label string `json:"label,omitempty"`
}

// SnapshotListArgs are the arguments of snapshot.list ("" lists all).
type SnapshotListArgs struct {
	Group string `json:"group,omitempty"`
}

// IDArgs name a snapshot by ID or by sequence number.
type IDArgs struct {
	ID string `json:"id"`
}

// Snapshot describes a snapshot. Members are the member paths (no leading
// '/'), sorted; Size is the sum of their sizes.
type Snapshot struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq"`
	Group     string    `json:"group"`
	Created   time.Time `json:"created"`
	Label     string    `json:"label"`
	Scheduled bool      `json:"scheduled"`
	Members   []string  `json:"members"`
	Size      uint64    `json:"size"`
}

// SnapshotDetail is a snapshot with each member's attributes and its
// space: UniqueBytes is what deleting it alone (and a GC) would free
// (snapstore.Namespace.SnapshotUsage).
type SnapshotDetail struct {
	Snapshot
	UniqueBytes  uint64       `json:"unique_bytes"`
	UniqueChunks uint64       `json:"unique_chunks"`
	Details      []MemberInfo `json:"details"`
}

// MemberInfo is one member of a snapshot as it was at the snapshot.
type MemberInfo struct {
	Path  string    `json:"path"`
	Size  uint64    `json:"size"`
	Mode  string    `json:"mode"`
	UID   uint32    `json:"uid"`
	GID   uint32    `json:"gid"`
	Mtime time.Time `json:"mtime"`
	Ino   uint64    `json:"ino"`   // the live file it was taken from
	Layer uint64    `json:"layer"` // its frozen layer
}

// SnapshotDeleteResult is the result of snapshot.delete.
type SnapshotDeleteResult struct {
	ID string `json:"id"`
}

// LsArgs are the arguments of ls: no Snapshot lists the groups and their
// snapshots; a Snapshot without HasPath its whole member tree; with
// HasPath, Path in the snapshot (a directory's entries, or the file).
type LsArgs struct {
	Snapshot string `json:"snapshot,omitempty"`
	Path     string `json:"path,omitempty"`
	HasPath  bool   `json:"has_path,omitempty"`
}

// Entry is one line of ls. Path is the entry's path in the snapstore tree
// below the snapshot (the member path) for snapshot contents, else
// "GROUP" or "GROUP/ID". Type is "group", "snapshot", "dir" or "file".
type Entry struct {
	Path    string    `json:"path"`
	Name    string    `json:"name"`
	Type    string    `json:"type"`
	Mode    string    `json:"mode"`
	UID     uint32    `json:"uid"`
	GID     uint32    `json:"gid"`
	Size    uint64    `json:"size"`
	Mtime   time.Time `json:"mtime"`
	ID      string    `json:"id,omitempty"`      // snapshots
	Group   string    `json:"group,omitempty"`   // snapshots
	Label   string    `json:"label,omitempty"`   // snapshots
	Members int       `json:"members,omitempty"` // snapshots: member count
}

// LsResult is the result of ls.
type LsResult struct {
	Entries []Entry `json:"entries"`
}

// RestoreArgs are the arguments of restore (no Paths: every member).
type RestoreArgs struct {
	ID    string   `json:"id"`
	Paths []string `json:"paths,omitempty"`
}

// RestoreResult is the result of restore.
type RestoreResult struct {
	ID       string   `json:"id"`
	Restored []string `json:"restored"`
}

// CloneArgs are the arguments of clone (ID and Member) and clone.live
// (Path).
type CloneArgs struct {
	ID      string `json:"id,omitempty"`
	Member  string `json:"member,omitempty"`
	Path    string `json:"path,omitempty"`
	NewPath string `json:"new_path"`
}

// CloneResult is the result of clone and clone.live.
type CloneResult struct {
	From string `json:"from"` // "ID:PATH" or the live path
	Path string `json:"path"`
	Size uint64 `json:"size"`
}

// Status is the result of status. The fields up to Packs are the block
// store's Stats (blockstore.Stats); their names are the CLI's contract.
type Status struct {
	BlockSize        int          `json:"block_size"`
	Volumes          int          `json:"volumes"`
	Layers           int          `json:"layers"`
	Chunks           int64        `json:"chunks"`
	LogicalBytes     int64        `json:"logical_bytes"`
	UniqueBytes      int64        `json:"unique_bytes"`
	StoredBytes      int64        `json:"stored_bytes"`
	PhysicalBytes    int64        `json:"physical_bytes"`
	LogBytes         int64        `json:"log_bytes"`
	DedupeRatio      float64      `json:"dedupe_ratio"`
	CompressionRatio float64      `json:"compression_ratio"`
	Packs            []PackStatus `json:"packs"`
	Groups           int          `json:"groups"`
	SnapshotCount    int          `json:"snapshot_count"`
	// Snapshots: each snapshot's logical bytes (its members' sizes) and
	// unique bytes (what deleting it alone, and a GC, would free), oldest
	// first.
	Snapshots []snapstore.SnapshotUsage `json:"snapshots"`
	// RemoteBytesFetched: bytes read from OX targets (GETs of imported
	// files' blocks, by reads and thickening) since the daemon (or this
	// command) started.
	RemoteBytesFetched int64 `json:"remote_bytes_fetched"`
}

// PackStatus describes one pack.
type PackStatus struct {
	ID        uint64  `json:"id"`
	Bytes     int64   `json:"bytes"`
	LiveBytes int64   `json:"live_bytes"`
	Chunks    int64   `json:"chunks"`
	Live      float64 `json:"live"`
}

// GCArgs are the arguments of gc.
type GCArgs struct {
	DryRun    bool    `json:"dry_run,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
}

// GCResult is the result of gc.
type GCResult struct {
	DryRun         bool  `json:"dry_run"`
	ChunksFreed    int64 `json:"chunks_freed"`
	BytesFreed     int64 `json:"bytes_freed"`
	PacksDeleted   int   `json:"packs_deleted"`
	PacksCompacted int   `json:"packs_compacted"`
	BytesRewritten int64 `json:"bytes_rewritten"`
}

// VerifyResult is the result of verify.
type VerifyResult struct {
	ChunksChecked int64          `json:"chunks_checked"`
	BytesChecked  int64          `json:"bytes_checked"`
	Corrupt       []CorruptChunk `json:"corrupt"`
}

// CorruptChunk names a chunk that failed verification.
type CorruptChunk struct {
	Chunk  uint64 `json:"chunk"`
	Pack   uint64 `json:"pack"`
	Offset int64  `json:"offset"`
	Error  string `json:"error"`
}

// Ping is the answer of GET /v1/ping.
type Ping struct {
	Version string `json:"version"`
	Dir     string `json:"dir"`
	PID     int    `json:"pid"`
}

// Empty is the arguments of operations that take none.
type Empty struct{}
