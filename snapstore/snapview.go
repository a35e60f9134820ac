package snapstore

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// The snapstore namespace: a read-only tree /GROUP/SNAPSHOT-ID/<member
// path>, built from the snapshot records (which never change), so it needs
// no storage of its own. Its inode numbers (VIno) are computed:
//
//	1                                 the root
//	1<<62 | group seq                 a group's directory
//	2<<62 | snapshot seq<<24 | idx    a snapshot's tree: idx 0 is the
//	                                  snapshot's directory, idx i >= 1 the
//	                                  i-th of its sorted directory and
//	                                  member paths
//
// A number whose group or snapshot is gone is ErrStale. Sequence numbers
// are never reused, so a stale number never names another object.

// VIno is an inode number in the snapstore namespace.
type VIno uint64

// SnapRoot is the snapstore namespace's root.
const SnapRoot VIno = 1

const (
	vGroup   = 1 << 62
	vSnap    = 2 << 62
	vIdxBits = 24
	vIdxMask = 1<<vIdxBits - 1
	vSeqMax  = 1<<(62-vIdxBits) - 1
)

// VEntry is a directory entry of the snapstore namespace.
type VEntry struct {
	Name string
	Attr VAttr
}

// VAttr describes a snapstore object.
type VAttr struct {
	Ino   VIno
	Type  FileType // TypeDir or TypeReg
	Mode  uint32
	Nlink uint32
	UID   uint32
	GID   uint32
	Size  uint64
	Atime time.Time
	Mtime time.Time
	Ctime time.Time
	Layer blockstore.LayerID // files
}

// snapTree is a snapshot's synthesized tree.
type snapTree struct {
	snap  *Snapshot
	paths []string // sorted; index i is idx i+1
	kids  map[string][]int
	mem   map[string]*Member
}

func buildTree(s *Snapshot) *snapTree {
	t := &snapTree{snap: s, kids: map[string][]int{}, mem: map[string]*Member{}}
	set := map[string]bool{}
	for i := range s.Members {
		m := &s.Members[i]
		t.mem[m.Path] = m
		set[m.Path] = true
		for d := parentOf(m.Path); d != ""; d = parentOf(d) {
			set[d] = true
		}
	}
	for p := range set {
		t.paths = append(t.paths, p)
	}
	sort.Strings(t.paths)
	for i, p := range t.paths {
		d := parentOf(p)
		t.kids[d] = append(t.kids[d], i+1)
	}
	return t
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func baseOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// tree returns snapshot seq's tree. REQUIRES: ns.mu held.
func (ns *Namespace) tree(seq uint64) (*snapTree, error) {
	s := ns.snaps[seq]
	if s == nil {
		return nil, fmt.Errorf("snapshot %d: %w", seq, ErrStale)
	}
	if t := ns.trees[seq]; t != nil && t.snap == s {
		return t, nil
	}
	t := buildTree(s)
	if ns.trees == nil {
		ns.trees = map[uint64]*snapTree{}
	}
	if len(ns.trees) > 64 {
		clear(ns.trees)
	}
	ns.trees[seq] = t
	return t, nil
}

func (ns *Namespace) groupBySeq(seq uint64) *Group {
	for _, g := range ns.groups {
		if g.Seq == seq {
			return g
		}
	}
	return nil
}

// vattr builds an object's attributes. REQUIRES: ns.mu held for writing
// (tree caches).
func (ns *Namespace) vattr(v VIno) (VAttr, error) {
	stale := fmt.Errorf("snapstore inode %#x: %w", uint64(v), ErrStale)
	dir := func(t time.Time, nlink uint32) VAttr {
		return VAttr{Ino: v, Type: TypeDir, Mode: 0o555, Nlink: nlink, Size: 4096, Atime: t, Mtime: t, Ctime: t}
	}
	switch {
	case v == SnapRoot:
		return dir(time.Unix(0, 0), uint32(2+len(ns.groups))), nil
	case v&(3<<62) == vGroup:
		g := ns.groupBySeq(uint64(v) &^ vGroup)
		if g == nil {
			return VAttr{}, stale
		}
		return dir(time.Unix(0, g.Created), 2), nil
	case v&(3<<62) == vSnap:
		seq, idx := (uint64(v)&^vSnap)>>vIdxBits, int(uint64(v)&vIdxMask)
		t, err := ns.tree(seq)
		if err != nil {
			return VAttr{}, stale
		}
		ct := time.Unix(0, t.snap.Created)
		if idx == 0 {
			return dir(ct, 2), nil
		}
		if idx > len(t.paths) {
			return VAttr{}, stale
		}
		p := t.paths[idx-1]
		m := t.mem[p]
		if m == nil {
			return dir(ct, 2), nil
		}
		return VAttr{Ino: v, Type: TypeReg, Mode: m.Mode &^ 0o7222, Nlink: 1, UID: m.UID, GID: m.GID, Size: m.Size,
			Atime: time.Unix(0, m.Atime), Mtime: time.Unix(0, m.Mtime), Ctime: ct, Layer: blockstore.LayerID(m.Layer)}, nil
	}
	return VAttr{}, stale
}

// SnapGetAttr returns a snapstore object's attributes.
func (ns *Namespace) SnapGetAttr(v VIno) (VAttr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.vattr(v)
}

// SnapReadDir lists a snapstore directory, "." and ".." left out. The
// cookie of entry i is i+1; cookie c resumes after the c-th entry.
func (ns *Namespace) SnapReadDir(v VIno) ([]VEntry, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	a, err := ns.vattr(v)
	if err != nil {
		return nil, err
	}
	if a.Type != TypeDir {
		return nil, ErrNotDir
	}
	var out []VEntry
	add := func(name string, c VIno) error {
		ca, err := ns.vattr(c)
		if err != nil {
			return err
		}
		out = append(out, VEntry{Name: name, Attr: ca})
		return nil
	}
	switch {
	case v == SnapRoot:
		gs := make([]*Group, 0, len(ns.groups))
		for _, g := range ns.groups {
			gs = append(gs, g)
		}
		sort.Slice(gs, func(i, j int) bool { return gs[i].Name < gs[j].Name })
		for _, g := range gs {
			if err := add(g.Name, VIno(vGroup|g.Seq)); err != nil {
				return nil, err
			}
		}
	case v&(3<<62) == vGroup:
		g := ns.groupBySeq(uint64(v) &^ vGroup)
		var ss []*Snapshot
		for _, s := range ns.snaps {
			if s.Group == g.Name && s.Seq <= vSeqMax {
				ss = append(ss, s)
			}
		}
		sort.Slice(ss, func(i, j int) bool { return ss[i].Seq < ss[j].Seq })
		for _, s := range ss {
			if err := add(s.ID(), VIno(vSnap|s.Seq<<vIdxBits)); err != nil {
				return nil, err
			}
		}
	default:
		seq, idx := (uint64(v)&^vSnap)>>vIdxBits, int(uint64(v)&vIdxMask)
		t, err := ns.tree(seq)
		if err != nil {
			return nil, err
		}
		d := ""
		if idx > 0 {
			d = t.paths[idx-1]
		}
		for _, k := range t.kids[d] {
			if k > vIdxMask {
				break
			}
			if err := add(baseOf(t.paths[k-1]), VIno(vSnap|seq<<vIdxBits|uint64(k))); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// SnapLookup finds name in a snapstore directory.
func (ns *Namespace) SnapLookup(dir VIno, name string) (VAttr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	a, err := ns.vattr(dir)
	if err != nil {
		return VAttr{}, err
	}
	if a.Type != TypeDir {
		return VAttr{}, ErrNotDir
	}
	missing := fmt.Errorf("%q: %w", name, ErrNotExist)
	switch {
	case dir == SnapRoot:
		if g := ns.groups[name]; g != nil {
			return ns.vattr(VIno(vGroup | g.Seq))
		}
		return VAttr{}, missing
	case dir&(3<<62) == vGroup:
		g := ns.groupBySeq(uint64(dir) &^ vGroup)
		seq, err := ParseSnapshotID(name)
		if err != nil || ns.snaps[seq] == nil || ns.snaps[seq].Group != g.Name || ns.snaps[seq].ID() != name || seq > vSeqMax {
			return VAttr{}, missing
		}
		return ns.vattr(VIno(vSnap | seq<<vIdxBits))
	}
	seq, idx := (uint64(dir)&^vSnap)>>vIdxBits, int(uint64(dir)&vIdxMask)
	t, err := ns.tree(seq)
	if err != nil {
		return VAttr{}, err
	}
	p := name
	if idx > 0 {
		p = t.paths[idx-1] + "/" + name
	}
	k := sort.SearchStrings(t.paths, p)
	if k == len(t.paths) || t.paths[k] != p || k+1 > vIdxMask {
		return VAttr{}, missing
	}
	return ns.vattr(VIno(vSnap | seq<<vIdxBits | uint64(k+1)))
}

// SnapParent returns a snapstore directory's parent.
func (ns *Namespace) SnapParent(v VIno) (VIno, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if _, err := ns.vattr(v); err != nil {
		return 0, err
	}
	switch {
	case v == SnapRoot || v&(3<<62) == vGroup:
		return SnapRoot, nil
	}
	seq, idx := (uint64(v)&^vSnap)>>vIdxBits, int(uint64(v)&vIdxMask)
	if idx == 0 {
		s := ns.snaps[seq]
		g := ns.groups[s.Group]
		if g == nil {
			return SnapRoot, nil
		}
		return VIno(vGroup | g.Seq), nil
	}
	t, err := ns.tree(seq)
	if err != nil {
		return 0, err
	}
	d := parentOf(t.paths[idx-1])
	if d == "" {
		return VIno(vSnap | seq<<vIdxBits), nil
	}
	k := sort.SearchStrings(t.paths, d)
	return VIno(vSnap | seq<<vIdxBits | uint64(k+1)), nil
}

// SnapRead reads a snapshot member's data as it was at the snapshot.
func (ns *Namespace) SnapRead(v VIno, p []byte, off int64) (n int, eof bool, err error) {
	a, err := ns.SnapGetAttr(v)
	if err != nil {
		return 0, false, err
	}
	if a.Type != TypeReg {
		return 0, false, ErrIsDir
	}
	if off >= int64(a.Size) {
		return 0, true, nil
	}
	lv, err := ns.layerView(a.Layer)
	if err != nil {
		return 0, false, err
	}
	if rem := int64(a.Size) - off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err = lv.ReadAt(p, off)
	return n, off+int64(n) >= int64(a.Size), err
}

// SnapResolve walks a path in the snapstore namespace ("GROUP/ID/path").
func (ns *Namespace) SnapResolve(p string) (VAttr, error) {
	c, err := CleanPath(p)
	if err != nil {
		return VAttr{}, err
	}
	a, err := ns.SnapGetAttr(SnapRoot)
	if err != nil || c == "" {
		return a, err
	}
	for _, name := range strings.Split(c, "/") {
		if a, err = ns.SnapLookup(a.Ino, name); err != nil {
			return VAttr{}, err
		}
	}
	return a, nil
}

// maxViews bounds the snapshot members kept open for reading.
const maxViews = 256

// layerView returns a view of a frozen layer, kept open across reads: a
// view remembers where the last read ended, and the block store reads
// ahead for a reader that goes on from there (a `cp` or a restore from
// /snapstore). A view of a released layer fails its reads with
// blockstore.ErrNotFound.
func (ns *Namespace) layerView(id blockstore.LayerID) (*blockstore.LayerView, error) {
	ns.viewMu.Lock()
	defer ns.viewMu.Unlock()
	if lv := ns.views[id]; lv != nil {
		return lv, nil
	}
	lv, err := ns.bs.OpenLayer(id)
	if err != nil {
		return nil, err
	}
	if ns.views == nil || len(ns.views) >= maxViews {
		ns.views = map[blockstore.LayerID]*blockstore.LayerView{}
	}
	ns.views[id] = lv
	return lv, nil
}
