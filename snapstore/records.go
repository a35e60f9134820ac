package snapstore

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt marks a namespace record that does not decode.
var ErrCorrupt = errors.New("snapstore: corrupt namespace record")

// Extension payloads (wire format; docs/DESIGN.md, "Namespace"): a version
// byte, a count, then deltas, little-endian:
//
//	u8 version = 1 | u32 n | n x delta
//	delta: u8 kind | kind-specific
//	  dPutInode: inode record
//	  dDelInode: u64 ino
//	  dPutEnt:   u64 dir | u64 cookie | u64 ino | u16 name length | name
//	  dDelEnt:   u64 dir | u64 cookie
//	  dReserve:  u64 inode numbers below this are taken (N2 across restarts)
const (
	payloadVersion = 1

	dPutInode uint8 = 1
	dDelInode uint8 = 2
	dPutEnt   uint8 = 3
	dDelEnt   uint8 = 4
	dReserve  uint8 = 5
)

// inode record (wire format, also the value in bucket ns_inodes), 106 bytes
// plus the symlink target:
//
//	u64 ino | u32 gen | u8 type | u8 flags | u16 pad | u32 mode | u32 nlink |
//	u32 uid | u32 gid | u64 size | u32 rdev major | u32 rdev minor |
//	i64 atime ns | i64 mtime ns | i64 ctime ns | u64 volume | u64 parent |
//	u64 next cookie | [8] create verifier | u16 target length | target
const inodeFixed = 8 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 2

type delta struct {
	kind   uint8
	inode  inodeRec
	ino    Ino // dDelInode; dPutEnt: the entry's inode
	dir    Ino
	cookie uint64
	name   string    // dPutEnt; dDelGroup: the group
	seq    uint64    // dDelSnap
	blob   []byte    // dPutSnap, dPutGroup: the JSON record
	snap   *Snapshot // dPutSnap: blob decoded
	group  *Group    // dPutGroup: blob decoded
}

// inodeRec is an inode's persistent state.
type inodeRec struct {
	Ino    Ino
	Gen    uint32
	Type   FileType
	Mode   uint32 // permission bits with setuid, setgid, sticky (07777)
	Nlink  uint32
	UID    uint32
	GID    uint32
	Size   uint64 // symlinks and special files; a regular file's size is its volume's
	Major  uint32
	Minor  uint32
	Atime  int64 // ns since the Unix epoch
	Mtime  int64
	Ctime  int64
	Volume uint64  // regular files
	Parent Ino     // directories
	Next   uint64  // directories: the next entry cookie
	Verf   [8]byte // EXCLUSIVE create verifier
	Flags  uint8   // flagExclusive
	Target string  // symlinks
}

func (r *inodeRec) appendTo(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Ino))
	b = binary.LittleEndian.AppendUint32(b, r.Gen)
	b = append(b, byte(r.Type), r.Flags, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, r.Mode)
	b = binary.LittleEndian.AppendUint32(b, r.Nlink)
	b = binary.LittleEndian.AppendUint32(b, r.UID)
	b = binary.LittleEndian.AppendUint32(b, r.GID)
	b = binary.LittleEndian.AppendUint64(b, r.Size)
	b = binary.LittleEndian.AppendUint32(b, r.Major)
	b = binary.LittleEndian.AppendUint32(b, r.Minor)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Atime))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Ctime))
	b = binary.LittleEndian.AppendUint64(b, r.Volume)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Parent))
	b = binary.LittleEndian.AppendUint64(b, r.Next)
	b = append(b, r.Verf[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.Target)))
	return append(b, r.Target...)
}

func decodeInode(b []byte) (inodeRec, int, error) {
	var r inodeRec
	if len(b) < inodeFixed {
		return r, 0, fmt.Errorf("inode record of %d bytes: %w", len(b), ErrCorrupt)
	}
	r.Ino = Ino(binary.LittleEndian.Uint64(b))
	r.Gen = binary.LittleEndian.Uint32(b[8:])
	r.Type = FileType(b[12])
	r.Flags = b[13]
	if r.Flags&^flagExclusive != 0 || b[14] != 0 || b[15] != 0 {
		return r, 0, fmt.Errorf("inode record padding: %w", ErrCorrupt)
	}
	r.Mode = binary.LittleEndian.Uint32(b[16:])
	r.Nlink = binary.LittleEndian.Uint32(b[20:])
	r.UID = binary.LittleEndian.Uint32(b[24:])
	r.GID = binary.LittleEndian.Uint32(b[28:])
	r.Size = binary.LittleEndian.Uint64(b[32:])
	r.Major = binary.LittleEndian.Uint32(b[40:])
	r.Minor = binary.LittleEndian.Uint32(b[44:])
	r.Atime = int64(binary.LittleEndian.Uint64(b[48:]))
	r.Mtime = int64(binary.LittleEndian.Uint64(b[56:]))
	r.Ctime = int64(binary.LittleEndian.Uint64(b[64:]))
	r.Volume = binary.LittleEndian.Uint64(b[72:])
	r.Parent = Ino(binary.LittleEndian.Uint64(b[80:]))
	r.Next = binary.LittleEndian.Uint64(b[88:])
	copy(r.Verf[:], b[96:104])
	n := int(binary.LittleEndian.Uint16(b[104:]))
	if len(b) < inodeFixed+n {
		return r, 0, fmt.Errorf("inode record: target past the end: %w", ErrCorrupt)
	}
	r.Target = string(b[inodeFixed : inodeFixed+n])
	if r.Ino == 0 || r.Type < TypeReg || r.Type > TypeFifo || r.Mode&^07777 != 0 {
		return r, 0, fmt.Errorf("inode record %d: type %d mode %o: %w", r.Ino, r.Type, r.Mode, ErrCorrupt)
	}
	return r, inodeFixed + n, nil
}

// inode flags (wire format)
const flagExclusive uint8 = 1 // made by an EXCLUSIVE create: Verf is its verifier

func appendPayload(b []byte, ds []delta) []byte {
	b = append(b, payloadVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ds)))
	for i := range ds {
		d := &ds[i]
		b = append(b, d.kind)
		switch d.kind {
		case dPutInode:
			b = d.inode.appendTo(b)
		case dDelInode:
			b = binary.LittleEndian.AppendUint64(b, uint64(d.ino))
		case dPutEnt:
			b = binary.LittleEndian.AppendUint64(b, uint64(d.dir))
			b = binary.LittleEndian.AppendUint64(b, d.cookie)
			b = binary.LittleEndian.AppendUint64(b, uint64(d.ino))
			b = binary.LittleEndian.AppendUint16(b, uint16(len(d.name)))
			b = append(b, d.name...)
		case dDelEnt:
			b = binary.LittleEndian.AppendUint64(b, uint64(d.dir))
			b = binary.LittleEndian.AppendUint64(b, d.cookie)
		case dReserve:
			b = binary.LittleEndian.AppendUint64(b, uint64(d.ino))
		case dPutSnap, dPutGroup:
			b = binary.LittleEndian.AppendUint32(b, uint32(len(d.blob)))
			b = append(b, d.blob...)
		case dDelSnap:
			b = binary.LittleEndian.AppendUint64(b, d.seq)
		case dDelGroup:
			b = binary.LittleEndian.AppendUint16(b, uint16(len(d.name)))
			b = append(b, d.name...)
		}
	}
	return b
}

func decodePayload(b []byte) ([]delta, error) {
	bad := func(what string) ([]delta, error) {
		return nil, fmt.Errorf("namespace payload: %s: %w", what, ErrCorrupt)
	}
	if len(b) < 5 || b[0] != payloadVersion {
		return bad("header")
	}
	n := binary.LittleEndian.Uint32(b[1:])
	b = b[5:]
	if uint64(n) > uint64(len(b)) {
		return bad("count")
	}
	ds := make([]delta, 0, n)
	for i := uint32(0); i < n; i++ {
		if len(b) < 1 {
			return bad("short")
		}
		d := delta{kind: b[0]}
		b = b[1:]
		switch d.kind {
		case dPutInode:
			r, used, err := decodeInode(b)
			if err != nil {
				return nil, err
			}
			d.inode, b = r, b[used:]
		case dDelInode, dReserve:
			if len(b) < 8 {
				return bad("short")
			}
			d.ino, b = Ino(binary.LittleEndian.Uint64(b)), b[8:]
		case dPutEnt:
			if len(b) < 26 {
				return bad("short")
			}
			d.dir = Ino(binary.LittleEndian.Uint64(b))
			d.cookie = binary.LittleEndian.Uint64(b[8:])
			d.ino = Ino(binary.LittleEndian.Uint64(b[16:]))
			ln := int(binary.LittleEndian.Uint16(b[24:]))
			if len(b) < 26+ln || ln == 0 || ln > MaxNameLen {
				return bad("entry name")
			}
			d.name, b = string(b[26:26+ln]), b[26+ln:]
		case dDelEnt:
			if len(b) < 16 {
				return bad("short")
			}
			d.dir = Ino(binary.LittleEndian.Uint64(b))
			d.cookie, b = binary.LittleEndian.Uint64(b[8:]), b[16:]
		case dPutSnap, dPutGroup:
			blob, rest, err := decodeBlob(b)
			if err != nil {
				return nil, err
			}
			if d.kind == dPutSnap {
				d.snap, err = decodeSnap(blob)
			} else {
				d.group, err = decodeGroup(blob)
			}
			if err != nil {
				return nil, err
			}
			d.blob, b = blob, rest
		case dDelSnap:
			if len(b) < 8 {
				return bad("short")
			}
			d.seq, b = binary.LittleEndian.Uint64(b), b[8:]
		case dDelGroup:
			if len(b) < 2 {
				return bad("short")
			}
			ln := int(binary.LittleEndian.Uint16(b))
			if len(b) < 2+ln || ln == 0 || ln > MaxNameLen {
				return bad("group name")
			}
			d.name, b = string(b[2:2+ln]), b[2+ln:]
		default:
			return bad(fmt.Sprintf("delta kind %d", d.kind))
		}
		ds = append(ds, d)
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return ds, nil
}
