package control

import (
	"time"

	"github.com/dstore/dstore/snapstore"
)

// Arguments and results of the object exchange (OX) operations: targets,
// export, import and jobs. As in types.go, the JSON names are the command
// line's interface. Credentials (access_key, secret_key) and passphrases
// appear only in arguments, are redacted from the audit log, and are in no
// result.

// TargetAddArgs are the arguments of target.add. Exactly one of KeyFile
// (an absolute path the daemon can read) and PassphraseEnv (the name of
// the environment variable that holds the passphrase) is needed. When
// Passphrase is given it is the variable's value as the caller sees it:
// the service keeps it in memory, under that name, for as long as it runs
// (see Passphrases); it is never stored and never audited.
type TargetAddArgs struct {
	Name          string `json:"name"`
	URL           string `json:"url"`
	Endpoint      string `json:"endpoint,omitempty"`
	Region        string `json:"region,omitempty"`
	AccessKey     string `json:"access_key,omitempty"`
	SecretKey     string `json:"secret_key,omitempty"`
	Insecure      bool   `json:"insecure,omitempty"`
	KeyFile       string `json:"key_file,omitempty"`
	PassphraseEnv string `json:"passphrase_env,omitempty"`
	Passphrase    string `json:"passphrase,omitempty"`
	Bandwidth     int64  `json:"bandwidth,omitempty"` // bytes per second; 0 unlimited
}

// Target describes a configured target. It never holds credentials.
type Target struct {
	Name          string   `json:"name"`
	URL           string   `json:"url"`
	ID            string   `json:"id"`
	Endpoint      string   `json:"endpoint,omitempty"`
	Region        string   `json:"region,omitempty"`
	KeyFile       string   `json:"key_file,omitempty"`
	PassphraseEnv string   `json:"passphrase_env,omitempty"`
	Bandwidth     int64    `json:"bandwidth"` // bytes per second; 0 unlimited
	Groups        []string `json:"groups"`    // the groups that export to it
}

// TargetArgs name a target.
type TargetArgs struct {
	Name string `json:"name"`
}

// TargetRemoveArgs are the arguments of target.remove: Force removes a
// target that groups still name or imported files still read from.
type TargetRemoveArgs struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// TargetRemoveResult is the result of target.remove.
type TargetRemoveResult struct {
	Name string `json:"name"`
}

// TargetBandwidthArgs are the arguments of target.set_bandwidth.
type TargetBandwidthArgs struct {
	Name      string `json:"name"`
	Bandwidth int64  `json:"bandwidth"` // bytes per second; 0 unlimited
}

// TargetRekeyArgs are the arguments of target.rekey: the new key source,
// KeyFile or PassphraseEnv (with Passphrase, its value as the caller sees
// it). CurrentPassphrase, when given, is the value of the target's current
// passphrase variable as the caller sees it.
type TargetRekeyArgs struct {
	Name              string `json:"name"`
	KeyFile           string `json:"key_file,omitempty"`
	PassphraseEnv     string `json:"passphrase_env,omitempty"`
	Passphrase        string `json:"passphrase,omitempty"`
	CurrentPassphrase string `json:"current_passphrase,omitempty"`
}

// TargetUnlockArgs are the arguments of target.unlock: the passphrase of
// a target whose passphrase variable the daemon's environment lacks.
type TargetUnlockArgs struct {
	Name       string `json:"name"`
	Passphrase string `json:"passphrase"`
}

// TargetSnapshot is one snapshot a target holds (one manifest).
type TargetSnapshot struct {
	Name          string       `json:"name"`     // its name in the target: what import takes
	Snapshot      string       `json:"snapshot"` // the source snapshot's ID
	Seq           uint64       `json:"seq"`
	Group         string       `json:"group"`
	Label         string       `json:"label,omitempty"`
	Created       *time.Time   `json:"created,omitempty"`
	Exported      *time.Time   `json:"exported,omitempty"`
	DatastoreID   uint64       `json:"datastore_id"`   // the datastore that exported it
	ThisDatastore bool         `json:"this_datastore"` // ... is this one
	ByGroup       bool         `json:"by_group"`       // exported for its group (retention applies on the target)
	BlockSize     int          `json:"block_size"`
	Files         []TargetFile `json:"files"`
	Bytes         int64        `json:"bytes"`  // logical bytes of data blocks
	Stored        int64        `json:"stored"` // bytes its chunks occupy in the target
	Error         string       `json:"error,omitempty"`
}

// TargetFile is one file of a snapshot in a target.
type TargetFile struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode string `json:"mode"`
}

// TargetVerifyArgs are the arguments of target.verify.
type TargetVerifyArgs struct {
	Name string `json:"name"`
	Deep bool   `json:"deep,omitempty"`
}

// TargetVerifyResult is the result of target.verify: Problems is empty
// when the target is sound.
type TargetVerifyResult struct {
	Target    string   `json:"target"`
	Deep      bool     `json:"deep"`
	Snapshots int      `json:"snapshots"`
	Objects   int      `json:"objects"`
	Chunks    int      `json:"chunks"`
	Bytes     int64    `json:"bytes"`
	Problems  []string `json:"problems"`
}

// TargetPruneArgs are the arguments of target.prune. Grace: objects that
// no manifest names are deleted only when older than this (nil: 24h; 0:
// at once, unsafe while exports to the target run elsewhere).
type TargetPruneArgs struct {
	Name   string              `json:"name"`
	DryRun bool                `json:"dry_run,omitempty"`
	Grace  *snapstore.Duration `json:"grace,omitempty"`
}

// TargetPruneResult is the result of target.prune: for every snapshot in
// the target whether it stays and why, the manifests deleted, and the
// unreferenced objects deleted (with DryRun: what would be; objects that
// only the planned deletions free are not counted then).
type TargetPruneResult struct {
	Target           string                `json:"target"`
	DryRun           bool                  `json:"dry_run"`
	Plan             []TargetPruneDecision `json:"plan"`
	DeletedSnapshots []string              `json:"deleted_snapshots"`
	Objects          int                   `json:"objects"`
	Bytes            int64                 `json:"bytes"`
}

// TargetPruneDecision is what target.prune decided for one snapshot.
type TargetPruneDecision struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot"`
	Group    string `json:"group"`
	Keep     bool   `json:"keep"`
	Reason   string `json:"reason"`
}

// ExportArgs are the arguments of export: Snapshot is a local snapshot ID
// (or sequence number); Name its name in the target ("": GROUP@ID).
type ExportArgs struct {
	Snapshot string `json:"snapshot"`
	Target   string `json:"target"`
	Name     string `json:"name,omitempty"`
}

// ImportArgs are the arguments of import: the snapshot Snapshot of Target
// (its name there), with HasPath the file Path of it as the new file
// NewPath, without every file of it under the directory NewPath.
type ImportArgs struct {
	Target   string `json:"target"`
	Snapshot string `json:"snapshot"`
	Path     string `json:"path,omitempty"`
	HasPath  bool   `json:"has_path,omitempty"`
	NewPath  string `json:"new_path"`
}

// ImportResult is the result of import: the files made, each with the
// job that thickens it.
type ImportResult struct {
	Target   string         `json:"target"`
	Snapshot string         `json:"snapshot"`
	Files    []ImportedFile `json:"files"`
}

// ImportedFile is one file an import made.
type ImportedFile struct {
	Member string `json:"member"` // its path in the snapshot
	Path   string `json:"path"`   // the new live file
	Size   uint64 `json:"size"`
	Job    uint64 `json:"job"`
}

// JobArgs name a job.
type JobArgs struct {
	ID uint64 `json:"id"`
}

// Job is an export, or an import's thickening. State is queued, running,
// done or failed. BytesDone and BytesTotal measure the work (the
// snapshot's or the file's logical bytes), BytesMoved what went over the
// network, Rate is BytesMoved per second since the job started.
type Job struct {
	ID         uint64     `json:"id"`
	Kind       string     `json:"kind"` // "export" or "import"
	State      string     `json:"state"`
	Target     string     `json:"target"`
	Snapshot   string     `json:"snapshot"`       // its name in the target
	Path       string     `json:"path,omitempty"` // import: the new file
	BytesDone  int64      `json:"bytes_done"`
	BytesTotal int64      `json:"bytes_total"`
	BytesMoved int64      `json:"bytes_moved"`
	Rate       float64    `json:"rate"`
	Started    *time.Time `json:"started,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// ExportStart is an export a group run started (or failed to start) for
// one of the group's targets.
type ExportStart struct {
	Target string `json:"target"`
	Job    uint64 `json:"job,omitempty"`
	Name   string `json:"name,omitempty"`
	Error  string `json:"error,omitempty"`
}
