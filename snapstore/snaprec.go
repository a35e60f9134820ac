package snapstore

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Snapshot and group deltas (wire format, after the delta kind byte):
//
//	dPutSnap:  u32 length | JSON snapshot record (Snapshot)
//	dDelSnap:  u64 snapshot sequence number
//	dPutGroup: u32 length | JSON group record (Group)
//	dDelGroup: u16 length | group name
//
// In bbolt: bucket ss_snaps maps the u64 sequence number (big-endian) to
// the JSON record, ss_groups maps the group name to its JSON record, and
// ns_meta keys snap_next and group_next hold the next sequence numbers
// (u64 big-endian), so a number is never handed out twice (N2 for
// snapshots: a /snapstore file handle never names another snapshot).
const (
	dPutSnap  uint8 = 6
	dDelSnap  uint8 = 7
	dPutGroup uint8 = 8
	dDelGroup uint8 = 9
)

var (
	bSnaps    = []byte("ss_snaps")
	bGroups   = []byte("ss_groups")
	kSnapNext = []byte("snap_next")
	kGrpNext  = []byte("group_next")
)

// maxRecord bounds a JSON record in a delta.
const maxRecord = 64 << 20

// Member is one file of a snapshot: its path, attributes and frozen layer
// at the instant of the snapshot.
type Member struct {
	Path  string `json:"path"` // datastore path, no leading '/'
	Ino   Ino    `json:"ino"`  // the live inode it was taken from
	Layer uint64 `json:"layer"`
	Size  uint64 `json:"size"`
	Mode  uint32 `json:"mode"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Atime int64  `json:"atime_ns"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

// Snapshot is a snapshot record.
type Snapshot struct {
	Seq       uint64   `json:"seq"`
	Group     string   `json:"group"`
	Label     string   `json:"label,omitempty"`
	Created   int64    `json:"created_ns"`
	Scheduled bool     `json:"scheduled,omitempty"`
	Members   []Member `json:"members"`
}

// ID is the snapshot's printable, sortable identifier: the UTC creation
// time to the second and the sequence number, e.g. 20261121-143512-000042.
func (s *Snapshot) ID() string { return SnapshotID(s.Seq, time.Unix(0, s.Created)) }

// SnapshotID formats a snapshot identifier.
func SnapshotID(seq uint64, created time.Time) string {
	return fmt.Sprintf("%s-%06d", created.UTC().Format("20060102-150405"), seq)
}

// ParseSnapshotID returns the sequence number an identifier names: a whole
// identifier, or just its sequence number.
func ParseSnapshotID(id string) (uint64, error) {
	s := id
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		if _, err := time.Parse("20060102-150405", id[:i]); err != nil {
			return 0, fmt.Errorf("snapshot %q: not an ID: %w", id, ErrInvalid)
		}
		s = id[i+1:]
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("snapshot %q: not an ID: %w", id, ErrInvalid)
	}
	return seq, nil
}

// Missed records scheduled runs that did not happen (the daemon was down).
type Missed struct {
	Count int   `json:"count"`
	First int64 `json:"first_ns"`
	Last  int64 `json:"last_ns"`
	Noted int64 `json:"noted_ns"` // when the scheduler found them
}

// Group is a protection group record.
type Group struct {
	Name      string    `json:"name"`
	Seq       uint64    `json:"seq"`
	Match     []string  `json:"match"`
	Schedules []string  `json:"schedules,omitempty"`
	Retention Retention `json:"retention"`
	Targets   []string  `json:"targets,omitempty"`
	Created   int64     `json:"created_ns"`
	Since     int64     `json:"since_ns,omitempty"` // the last scheduled run that happened
	Missed    *Missed   `json:"missed,omitempty"`   // the latest runs missed
}

// snapDelta and groupDelta encode records into deltas.
func snapDelta(s *Snapshot) (delta, error) {
	j, err := json.Marshal(s)
	if err != nil {
		return delta{}, fmt.Errorf("snapstore: encoding snapshot %d: %w", s.Seq, err)
	}
	return delta{kind: dPutSnap, blob: j, snap: s}, nil
}

func groupDelta(g *Group) (delta, error) {
	j, err := json.Marshal(g)
	if err != nil {
		return delta{}, fmt.Errorf("snapstore: encoding group %q: %w", g.Name, err)
	}
	return delta{kind: dPutGroup, blob: j, group: g}, nil
}

// decodeBlob splits a length-prefixed JSON record off b.
func decodeBlob(b []byte) (blob, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("record length: %w", ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(b)
	if n > maxRecord || uint64(len(b)-4) < uint64(n) {
		return nil, nil, fmt.Errorf("record of %d bytes: %w", n, ErrCorrupt)
	}
	return b[4 : 4+n], b[4+n:], nil
}

func decodeSnap(blob []byte) (*Snapshot, error) {
	s := new(Snapshot)
	if err := json.Unmarshal(blob, s); err != nil {
		return nil, fmt.Errorf("snapshot record: %v: %w", err, ErrCorrupt)
	}
	if s.Seq == 0 || s.Group == "" {
		return nil, fmt.Errorf("snapshot record without seq or group: %w", ErrCorrupt)
	}
	return s, nil
}

func decodeGroup(blob []byte) (*Group, error) {
	g := new(Group)
	if err := json.Unmarshal(blob, g); err != nil {
		return nil, fmt.Errorf("group record: %v: %w", err, ErrCorrupt)
	}
	if g.Name == "" || g.Seq == 0 {
		return nil, fmt.Errorf("group record without name or seq: %w", ErrCorrupt)
	}
	return g, nil
}
