package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// The operations, by wire name. An audited operation may change the
// datastore (or, gc and prune, may: their dry runs are recorded too).
var ops = map[string]opDef{
	"group.create":    def(true, (*Service).GroupCreate),
	"group.list":      def(false, (*Service).GroupList),
	"group.show":      def(false, (*Service).GroupShow),
	"group.edit":      def(true, (*Service).GroupEdit),
	"group.delete":    def(true, (*Service).GroupDelete),
	"group.run":       def(true, (*Service).GroupRun),
	"group.prune":     def(true, (*Service).GroupPrune),
	"snapshot.create": def(true, (*Service).SnapshotCreate),
	"snapshot.list":   def(false, (*Service).SnapshotList),
	"snapshot.show":   def(false, (*Service).SnapshotShow),
	"snapshot.delete": def(true, (*Service).SnapshotDelete),
	"ls":              def(false, (*Service).Ls),
	"restore":         def(true, (*Service).Restore),
	"clone":           def(true, (*Service).Clone),
	"clone.live":      def(true, (*Service).CloneLive),
	"status":          def(false, (*Service).Status),
	"gc":              def(true, (*Service).GC),
	"verify":          def(true, (*Service).Verify),

	// Object exchange (ox.go). Arguments with credentials or passphrases
	// are audited with those redacted.
	"target.add":           def(true, (*Service).TargetAdd),
	"target.list":          def(false, (*Service).TargetList),
	"target.remove":        def(true, (*Service).TargetRemove),
	"target.set_bandwidth": def(true, (*Service).TargetSetBandwidth),
	"target.rekey":         def(true, (*Service).TargetRekey),
	"target.unlock":        def(true, (*Service).TargetUnlock),
	"target.snapshots":     def(false, (*Service).TargetSnapshots),
	"target.verify":        def(false, (*Service).TargetVerify),
	"target.prune":         def(true, (*Service).TargetPrune),
	"export":               def(true, (*Service).Export),
	"import":               def(true, (*Service).Import),
	"jobs":                 def(false, (*Service).Jobs),
	"job":                  def(false, (*Service).JobShow),
}

// callerKey carries the Peer of an operation in its context.
type callerKey struct{}

// callerOf returns who asked for the operation running with ctx.
func callerOf(ctx context.Context) Peer {
	p, _ := ctx.Value(callerKey{}).(Peer)
	return p
}

type opDef struct {
	audited bool
	call    func(s *Service, ctx context.Context, args []byte) (any, error)
}

func def[A, R any](audited bool, f func(*Service, context.Context, A) (R, error)) opDef {
	return opDef{audited: audited, call: func(s *Service, ctx context.Context, raw []byte) (any, error) {
		var a A
		dec := json.NewDecoder(bytes.NewReader(raw))
		// A field this build does not know is an error, not ignored: an
		// older daemon must not drop part of a newer client's request.
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			return nil, fmt.Errorf("arguments: %v: %w", err, ErrBadRequest)
		}
		if dec.More() {
			return nil, fmt.Errorf("arguments: trailing data: %w", ErrBadRequest)
		}
		return f(s, ctx, a)
	}}
}

// dispatch runs operation op with its JSON arguments on behalf of who,
// records it in the audit log when it is audited, and returns the JSON
// result or the error in its wire form.
func (s *Service) dispatch(ctx context.Context, who Peer, op string, args []byte) ([]byte, *Error) {
	d, ok := ops[op]
	if !ok {
		return nil, wireError(fmt.Errorf("operation %q: %w", op, ErrUnknownOp))
	}
	res, err := d.call(s, context.WithValue(ctx, callerKey{}, who), args)
	if d.audited {
		if aerr := s.record(op, auditArgs(args), s.via, who, err, detail(res, err)); aerr != nil {
			s.log.Error("control: writing the audit log", "operation", op, "err", aerr)
			if err == nil {
				err = fmt.Errorf("%s was done, but recording it failed: %w", op, aerr)
			}
		}
	}
	if err != nil {
		return nil, wireError(err)
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, wireError(fmt.Errorf("encoding the result of %s: %w", op, err))
	}
	return out, nil
}

// auditArgs is the arguments as they go into the audit log: compact JSON,
// or a JSON string of what was sent if it is not JSON.
func auditArgs(raw []byte) json.RawMessage {
	var b bytes.Buffer
	if len(raw) == 0 {
		return json.RawMessage("{}")
	}
	raw = redact(raw)
	if err := json.Compact(&b, raw); err != nil {
		q, _ := json.Marshal(string(raw))
		return q
	}
	return b.Bytes()
}

// detail summarizes what an operation made or deleted, for the audit log.
func detail(res any, err error) string {
	if err != nil {
		return ""
	}
	switch r := res.(type) {
	case Snapshot:
		return "snapshot " + r.ID
	case RunResult:
		if r.ID == "" {
			return ""
		}
		s := "snapshot " + r.ID
		if len(r.Deleted) > 0 {
			s += "; retention deleted " + strings.Join(r.Deleted, ", ")
		}
		for _, e := range r.Exports {
			if e.Error != "" {
				s += fmt.Sprintf("; export to %s did not start: %s", e.Target, e.Error)
			} else {
				s += fmt.Sprintf("; export to %s: job %d", e.Target, e.Job)
			}
		}
		return s
	case PruneResult:
		if len(r.Deleted) > 0 {
			return "deleted " + strings.Join(r.Deleted, ", ")
		}
	case GroupDeleteResult:
		if len(r.DeletedSnapshots) > 0 {
			return "deleted " + strings.Join(r.DeletedSnapshots, ", ")
		}
	case SnapshotDeleteResult:
		if r.ID != "" {
			return "deleted " + r.ID
		}
	case RestoreResult:
		if len(r.Restored) > 0 {
			return "restored " + strings.Join(r.Restored, ", ")
		}
	case CloneResult:
		if r.Path != "" {
			return r.From + " -> " + r.Path
		}
	case GCResult:
		return fmt.Sprintf("freed %d chunks (%d bytes), deleted %d packs, compacted %d", r.ChunksFreed, r.BytesFreed, r.PacksDeleted, r.PacksCompacted)
	case VerifyResult:
		return fmt.Sprintf("checked %d chunks, %d corrupt", r.ChunksChecked, len(r.Corrupt))
	case Target:
		return fmt.Sprintf("target %s (%s, ID %s)", r.Name, r.URL, r.ID)
	case TargetRemoveResult:
		return "removed target " + r.Name
	case TargetPruneResult:
		s := fmt.Sprintf("deleted %d objects (%d bytes)", r.Objects, r.Bytes)
		if r.DryRun {
			s = fmt.Sprintf("would delete %d objects (%d bytes)", r.Objects, r.Bytes)
		}
		if len(r.DeletedSnapshots) > 0 {
			s = "deleted snapshots " + strings.Join(r.DeletedSnapshots, ", ") + "; " + s
		}
		return s
	case Job:
		return fmt.Sprintf("job %d: %s of %s to target %s", r.ID, r.Kind, r.Snapshot, r.Target)
	case ImportResult:
		var fs []string
		for _, f := range r.Files {
			fs = append(fs, fmt.Sprintf("%s -> %s (job %d)", f.Member, f.Path, f.Job))
		}
		return fmt.Sprintf("from %s of target %s: %s", r.Snapshot, r.Target, strings.Join(fs, ", "))
	}
	return ""
}

// Caller runs a control operation: Client (over the daemon's socket) or
// Local (in this process). Both encode args and result as JSON and return
// errors as *Error.
type Caller interface {
	Call(ctx context.Context, op string, args, result any) error
}

// Local runs operations on a Service in this process, through the same
// encoding and dispatch as the daemon's socket.
type Local struct {
	Service *Service
	Peer    Peer
}

// Call runs op.
func (l Local) Call(ctx context.Context, op string, args, result any) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encoding the arguments of %s: %w", op, err)
	}
	out, werr := l.Service.dispatch(ctx, l.Peer, op, raw)
	if werr != nil {
		// The same error a client rebuilds from the wire.
		return errorFromWire(werr.Code, werr.Msg, werr.Status)
	}
	if err := json.Unmarshal(out, result); err != nil {
		return fmt.Errorf("decoding the result of %s: %w", op, err)
	}
	return nil
}
