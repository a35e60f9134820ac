package snapstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dstore/dstore/blockstore"
	bolt "go.etcd.io/bbolt"
)

// Ino names an inode; never reused (N2).
type Ino uint64

// RootIno is the datastore's root directory.
const RootIno Ino = 1

// FileType values are NFSv3's ftype3.
type FileType uint8

const (
	TypeReg  FileType = 1
	TypeDir  FileType = 2
	TypeBlk  FileType = 3
	TypeChr  FileType = 4
	TypeLnk  FileType = 5
	TypeSock FileType = 6
	TypeFifo FileType = 7
)

// MaxNameLen is the longest name, in bytes.
const MaxNameLen = 255

// Errors; nfsfs maps them to NFS status codes.
var (
	ErrNotExist    = errors.New("snapstore: no such file or directory")
	ErrExist       = errors.New("snapstore: file exists")
	ErrNotDir      = errors.New("snapstore: not a directory")
	ErrIsDir       = errors.New("snapstore: is a directory")
	ErrNotEmpty    = errors.New("snapstore: directory not empty")
	ErrNameTooLong = errors.New("snapstore: name too long")
	ErrInvalid     = errors.New("snapstore: invalid argument")
	ErrStale       = errors.New("snapstore: stale file handle")
	ErrNotSupp     = errors.New("snapstore: operation not supported")
	ErrChanged     = errors.New("snapstore: guard ctime does not match")
)

var (
	bInodes = []byte("ns_inodes")
	bEnts   = []byte("ns_ents")
	bNSMeta = []byte("ns_meta")

	kReserved = []byte("ino_reserved")
)

// inoReserve is how many inode numbers one reservation record claims.
const inoReserve = 1024

// node is an inode in memory.
type node struct {
	inodeRec
	ents  map[string]*dent // directories
	order []*dent          // directories: entries by cookie, removed ones included until compacted
	gone  int              // removed entries still in order
	dirty bool             // times changed by writes, not yet logged
}

type dent struct {
	name   string
	ino    Ino
	cookie uint64
	gone   bool
}

// Namespace is the live tree of a datastore.
type Namespace struct {
	bs     *blockstore.Store
	logger *slog.Logger
	now    func() time.Time

	mu       sync.RWMutex // guards nodes, nextIno, reserved and every node, and the snapshot state below
	nodes    map[Ino]*node
	nextIno  Ino
	reserved Ino // inode numbers below it may have been handed out (durably)

	snaps     map[uint64]*Snapshot // by sequence number
	groups    map[string]*Group
	snapNext  uint64               // next snapshot sequence number (never reused)
	groupNext uint64               // next group sequence number (never reused)
	trees     map[uint64]*snapTree // snapstore trees built lately (snapview.go)

	viewMu sync.Mutex
	views  map[blockstore.LayerID]*blockstore.LayerView // open snapshot members, so sequential reads are seen as such (snapview.go)
}

// Attr is an inode's attributes as NFS reports them.
type Attr struct {
	Ino    Ino
	Gen    uint32
	Type   FileType
	Mode   uint32
	Nlink  uint32
	UID    uint32
	GID    uint32
	Size   uint64
	Used   uint64
	Major  uint32
	Minor  uint32
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
	Volume blockstore.VolumeID
	Target string
}

// extension adapts the namespace to blockstore.Extension.
type extension struct{ ns *Namespace }

func (e extension) Load(tx *bolt.Tx) error              { return e.ns.load(tx) }
func (e extension) Replay(p []byte) error               { return e.ns.replay(p) }
func (e extension) Destage(tx *bolt.Tx, p []byte) error { return destage(tx, p) }

// New returns an empty namespace to pass to blockstore.Open as its
// Extension; call Attach with the opened store before use.
func New(logger *slog.Logger) (*Namespace, blockstore.Extension) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ns := &Namespace{logger: logger, now: time.Now, nodes: map[Ino]*node{}, nextIno: RootIno + 1,
		snaps: map[uint64]*Snapshot{}, groups: map[string]*Group{}, snapNext: 1, groupNext: 1}
	return ns, extension{ns}
}

// Attach binds the namespace to its open block store and makes the root
// directory of a new datastore.
func (ns *Namespace) Attach(bs *blockstore.Store) error {
	ns.bs = bs
	ns.mu.Lock()
	defer ns.mu.Unlock()
	// Numbers reserved before a restart may have named files since
	// removed: never hand them out again (N2).
	ns.nextIno = max(ns.nextIno, ns.reserved)
	if ns.nodes[RootIno] != nil {
		return nil
	}
	now := ns.now().UnixNano()
	root := inodeRec{Ino: RootIno, Gen: 1, Type: TypeDir, Mode: 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now, Parent: RootIno, Next: 1}
	return ns.commit(nil, []delta{{kind: dPutInode, inode: root}}, nil)
}

func (ns *Namespace) load(tx *bolt.Tx) error {
	if b := tx.Bucket(bNSMeta); b != nil {
		if v := b.Get(kReserved); len(v) == 8 {
			ns.reserved = Ino(binary.BigEndian.Uint64(v))
		}
		if v := b.Get(kSnapNext); len(v) == 8 {
			ns.snapNext = max(ns.snapNext, binary.BigEndian.Uint64(v))
		}
		if v := b.Get(kGrpNext); len(v) == 8 {
			ns.groupNext = max(ns.groupNext, binary.BigEndian.Uint64(v))
		}
	}
	if b := tx.Bucket(bSnaps); b != nil {
		err := b.ForEach(func(_, v []byte) error {
			s, err := decodeSnap(v)
			if err != nil {
				return err
			}
			return ns.apply(&delta{kind: dPutSnap, snap: s})
		})
		if err != nil {
			return err
		}
	}
	if b := tx.Bucket(bGroups); b != nil {
		err := b.ForEach(func(_, v []byte) error {
			g, err := decodeGroup(v)
			if err != nil {
				return err
			}
			return ns.apply(&delta{kind: dPutGroup, group: g})
		})
		if err != nil {
			return err
		}
	}
	if b := tx.Bucket(bInodes); b != nil {
		err := b.ForEach(func(_, v []byte) error {
			r, _, err := decodeInode(v)
			if err != nil {
				return err
			}
			ns.putNode(r)
			return nil
		})
		if err != nil {
			return err
		}
	}
	if b := tx.Bucket(bEnts); b != nil {
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 16 || len(v) < 9 {
				return fmt.Errorf("directory entry key %x: %w", k, ErrCorrupt)
			}
			d := delta{kind: dPutEnt, dir: Ino(binary.BigEndian.Uint64(k)), cookie: binary.BigEndian.Uint64(k[8:]),
				ino: Ino(binary.LittleEndian.Uint64(v)), name: string(v[8:])}
			return ns.apply(&d)
		})
	}
	return nil
}

func (ns *Namespace) replay(p []byte) error {
	ds, err := decodePayload(p)
	if err != nil {
		return err
	}
	for i := range ds {
		if err := ns.apply(&ds[i]); err != nil {
			return err
		}
	}
	return nil
}

// destage writes deltas to the namespace buckets.
func destage(tx *bolt.Tx, p []byte) error {
	ds, err := decodePayload(p)
	if err != nil {
		return err
	}
	ib, err := tx.CreateBucketIfNotExists(bInodes)
	if err != nil {
		return err
	}
	eb, err := tx.CreateBucketIfNotExists(bEnts)
	if err != nil {
		return err
	}
	for _, d := range ds {
		switch d.kind {
		case dPutInode:
			err = ib.Put(be64(uint64(d.inode.Ino)), d.inode.appendTo(nil))
		case dDelInode:
			err = ib.Delete(be64(uint64(d.ino)))
		case dPutEnt:
			v := binary.LittleEndian.AppendUint64(nil, uint64(d.ino))
			err = eb.Put(entKey(d.dir, d.cookie), append(v, d.name...))
		case dDelEnt:
			err = eb.Delete(entKey(d.dir, d.cookie))
		case dReserve:
			var mb *bolt.Bucket
			if mb, err = tx.CreateBucketIfNotExists(bNSMeta); err == nil {
				err = mb.Put(kReserved, be64(uint64(d.ino)))
			}
		case dPutSnap:
			err = putRecord(tx, bSnaps, be64(d.snap.Seq), d.blob, kSnapNext, d.snap.Seq+1)
		case dDelSnap:
			err = deleteRecord(tx, bSnaps, be64(d.seq))
		case dPutGroup:
			err = putRecord(tx, bGroups, []byte(d.group.Name), d.blob, kGrpNext, d.group.Seq+1)
		case dDelGroup:
			err = deleteRecord(tx, bGroups, []byte(d.name))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// putRecord stores a snapshot or group record and raises its sequence
// counter in ns_meta to at least next.
func putRecord(tx *bolt.Tx, bucket, key, val, counter []byte, next uint64) error {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	if err := b.Put(key, val); err != nil {
		return err
	}
	mb, err := tx.CreateBucketIfNotExists(bNSMeta)
	if err != nil {
		return err
	}
	if v := mb.Get(counter); len(v) == 8 && binary.BigEndian.Uint64(v) >= next {
		return nil
	}
	return mb.Put(counter, be64(next))
}

func deleteRecord(tx *bolt.Tx, bucket, key []byte) error {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	return b.Delete(key)
}

func entKey(dir Ino, cookie uint64) []byte {
	return binary.BigEndian.AppendUint64(be64(uint64(dir)), cookie)
}

func (ns *Namespace) putNode(r inodeRec) *node {
	n := ns.nodes[r.Ino]
	if n == nil {
		n = &node{}
		if r.Type == TypeDir {
			n.ents = map[string]*dent{}
		}
		ns.nodes[r.Ino] = n
	}
	n.inodeRec = r
	if r.Ino >= ns.nextIno {
		ns.nextIno = r.Ino + 1
	}
	return n
}

// apply applies one delta in memory: the same code for replay and for the
// live path. REQUIRES: ns.mu held (or single-threaded replay).
func (ns *Namespace) apply(d *delta) error {
	switch d.kind {
	case dPutInode:
		ns.putNode(d.inode)
	case dDelInode:
		delete(ns.nodes, d.ino)
	case dReserve:
		ns.reserved = max(ns.reserved, d.ino)
	case dPutSnap:
		ns.snaps[d.snap.Seq] = d.snap
		ns.snapNext = max(ns.snapNext, d.snap.Seq+1)
	case dDelSnap:
		delete(ns.snaps, d.seq)
	case dPutGroup:
		ns.groups[d.group.Name] = d.group
		ns.groupNext = max(ns.groupNext, d.group.Seq+1)
	case dDelGroup:
		delete(ns.groups, d.name)
	case dPutEnt:
		dir := ns.nodes[d.dir]
		if dir == nil || dir.Type != TypeDir {
			return fmt.Errorf("entry %q in %d: no such directory: %w", d.name, d.dir, ErrCorrupt)
		}
		e := &dent{name: d.name, ino: d.ino, cookie: d.cookie}
		if old := dir.ents[d.name]; old != nil {
			old.gone = true
			dir.gone++
		}
		dir.ents[d.name] = e
		// Cookies grow, so appending keeps order sorted; a put of an
		// existing cookie (replay over loaded state) replaces in place.
		if k := len(dir.order); k > 0 && dir.order[k-1].cookie >= d.cookie {
			i := sort.Search(k, func(i int) bool { return dir.order[i].cookie >= d.cookie })
			if i < k && dir.order[i].cookie == d.cookie {
				dir.order[i] = e
				break
			}
			dir.order = append(dir.order, nil)
			copy(dir.order[i+1:], dir.order[i:])
			dir.order[i] = e
		} else {
			dir.order = append(dir.order, e)
		}
		if d.cookie >= dir.Next {
			dir.Next = d.cookie + 1
		}
	case dDelEnt:
		dir := ns.nodes[d.dir]
		if dir == nil {
			return nil // the directory went in the same record
		}
		k := len(dir.order)
		i := sort.Search(k, func(i int) bool { return dir.order[i].cookie >= d.cookie })
		if i < k && dir.order[i].cookie == d.cookie && !dir.order[i].gone {
			e := dir.order[i]
			e.gone = true
			dir.gone++
			if dir.ents[e.name] == e {
				delete(dir.ents, e.name)
			}
		}
		if dir.gone > 64 && dir.gone > len(dir.order)/2 {
			live := dir.order[:0]
			for _, e := range dir.order {
				if !e.gone {
					live = append(live, e)
				}
			}
			clear(dir.order[len(live):])
			dir.order, dir.gone = live, 0
		}
	}
	return nil
}

// commit logs deltas (with the layer operations ops makes) as one record,
// applies them in memory, and returns the LSN to wait for. REQUIRES: ns.mu
// held for writing. ops runs inside the block store transaction and may
// add deltas through the pointer it gets.
func (ns *Namespace) commitAsync(lock []blockstore.VolumeID, ds []delta, ops func(t *blockstore.Txn, ds *[]delta) error) (blockstore.LSN, error) {
	end, err := ns.bs.UpdateAsync(lock, func(t *blockstore.Txn) error {
		if ops != nil {
			if err := ops(t, &ds); err != nil {
				return err
			}
		}
		return t.Ext(appendPayload(nil, ds))
	})
	if err != nil {
		return 0, err
	}
	for i := range ds {
		if err := ns.apply(&ds[i]); err != nil {
			// The record is logged; memory disagreeing with it is a bug.
			ns.logger.Error("snapstore: applying a committed delta", "err", err)
			return end, err
		}
	}
	return end, nil
}

// commit is commitAsync followed by the wait for durability, with ns.mu
// released during the wait so concurrent operations share one fdatasync.
// REQUIRES: ns.mu held for writing; it is held again on return.
func (ns *Namespace) commit(lock []blockstore.VolumeID, ds []delta, ops func(t *blockstore.Txn, ds *[]delta) error) error {
	end, err := ns.commitAsync(lock, ds, ops)
	if err != nil {
		return err
	}
	ns.mu.Unlock()
	err = ns.bs.WaitDurable(end)
	ns.mu.Lock()
	return err
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q: %w", name, ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes: %w", len(name), ErrNameTooLong)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q: %w", name, ErrInvalid)
	}
	return nil
}

// get returns an inode. REQUIRES: ns.mu held.
func (ns *Namespace) get(ino Ino) (*node, error) {
	if n := ns.nodes[ino]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("inode %d: %w", ino, ErrStale)
}

func (ns *Namespace) dir(ino Ino) (*node, error) {
	n, err := ns.get(ino)
	if err != nil {
		return nil, err
	}
	if n.Type != TypeDir {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	return n, nil
}

// attr builds n's attributes. REQUIRES: ns.mu held.
func (ns *Namespace) attr(n *node) Attr {
	a := Attr{Ino: n.Ino, Gen: n.Gen, Type: n.Type, Mode: n.Mode, Nlink: n.Nlink, UID: n.UID, GID: n.GID,
		Size: n.Size, Major: n.Major, Minor: n.Minor, Atime: time.Unix(0, n.Atime), Mtime: time.Unix(0, n.Mtime),
		Ctime: time.Unix(0, n.Ctime), Volume: blockstore.VolumeID(n.Volume), Target: n.Target}
	switch n.Type {
	case TypeReg:
		if v, err := ns.bs.OpenVolume(blockstore.VolumeID(n.Volume)); err == nil {
			a.Size = uint64(v.Size())
			a.Used = uint64(v.Allocated())
		}
	case TypeDir:
		a.Size = uint64(4096 + 32*len(n.ents))
		a.Used = a.Size
	default:
		a.Used = a.Size
	}
	return a
}

// GetAttr returns an inode's attributes; an unknown inode is ErrStale.
func (ns *Namespace) GetAttr(ino Ino) (Attr, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	n, err := ns.get(ino)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// Lookup finds name in directory dir ("." and ".." included).
func (ns *Namespace) Lookup(dir Ino, name string) (Attr, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	d, err := ns.dir(dir)
	if err != nil {
		return Attr{}, err
	}
	switch name {
	case ".":
		return ns.attr(d), nil
	case "..":
		p, err := ns.get(d.Parent)
		if err != nil {
			return Attr{}, err
		}
		return ns.attr(p), nil
	}
	if len(name) > MaxNameLen {
		return Attr{}, ErrNameTooLong
	}
	e := d.ents[name]
	if e == nil {
		return Attr{}, fmt.Errorf("%q: %w", name, ErrNotExist)
	}
	n, err := ns.get(e.ino)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}
