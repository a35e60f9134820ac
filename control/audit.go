package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// AuditRecord is one line of DIR/audit.log.
type AuditRecord struct {
	Time      time.Time       `json:"time"`
	Operation string          `json:"operation"`
	Arguments json.RawMessage `json:"arguments"`
	Result    string          `json:"result"`           // "ok", or the error text
	Detail    string          `json:"detail,omitempty"` // what it made or deleted, e.g. "snapshot 20261121-143512-000042"
	Via       string          `json:"via"`              // "daemon", "direct" or "scheduler"
	UID       *int            `json:"uid,omitempty"`    // the caller (the peer of the control socket, or this process)
	PID       *int            `json:"pid,omitempty"`
}

// Peer is who asked for an operation.
type Peer struct {
	UID, PID int
	Known    bool
}

// SelfPeer is this process.
func SelfPeer() Peer { return Peer{UID: os.Getuid(), PID: os.Getpid(), Known: true} }

// auditLog appends records to the audit file, one write and one fsync
// each.
type auditLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openAudit(path string) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &auditLog{path: path, f: f}, nil
}

// append writes r and makes it durable.
func (a *auditLog) append(r AuditRecord) error {
	if len(r.Arguments) == 0 {
		r.Arguments = json.RawMessage("{}")
	}
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit log: encoding a record of %s: %w", r.Operation, err)
	}
	line = append(line, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return fmt.Errorf("audit log %s: closed", a.path)
	}
	if _, err := a.f.Write(line); err != nil {
		return fmt.Errorf("audit log %s: %w", a.path, err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("audit log %s: %w", a.path, err)
	}
	return nil
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("audit log %s: %w", a.path, err)
	}
	return nil
}

// record appends an audit line for op; an error writing it is returned.
func (s *Service) record(op string, args json.RawMessage, via string, who Peer, opErr error, detail string) error {
	r := AuditRecord{Time: s.clock.Now().UTC(), Operation: op, Arguments: args, Result: "ok", Detail: detail, Via: via}
	if opErr != nil {
		r.Result = opErr.Error()
	}
	if who.Known {
		uid, pid := who.UID, who.PID
		r.UID, r.PID = &uid, &pid
	}
	return s.audit.append(r)
}
