package snapstore

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/dstore/dstore/blockstore"
)

// Errors of the snapshot operations.
var (
	ErrNoGroup     = errors.New("snapstore: no such protection group")
	ErrNoSnapshot  = errors.New("snapstore: no such snapshot")
	ErrNoMembers   = errors.New("snapstore: the group matches no files")
	ErrNotMember   = errors.New("snapstore: not a member of the snapshot")
	ErrGroupExists = errors.New("snapstore: protection group exists")
	ErrHasSnaps    = errors.New("snapstore: the group has snapshots")
)

// CleanPath turns a datastore path given by a user ("/vms/a.vmdk",
// "vms//a.vmdk") into its canonical form without a leading '/' ("" is the
// root). ".." components are refused.
func CleanPath(p string) (string, error) {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("path %q: '..' is not allowed: %w", p, ErrInvalid)
		}
		if len(c) > MaxNameLen {
			return "", fmt.Errorf("path %q: %w", p, ErrNameTooLong)
		}
		if strings.IndexByte(c, 0) >= 0 {
			return "", fmt.Errorf("path %q: %w", p, ErrInvalid)
		}
	}
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/"), nil
}

// resolve walks a clean path from the root. REQUIRES: ns.mu held.
func (ns *Namespace) resolve(p string) (*node, error) {
	n, err := ns.get(RootIno)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return n, nil
	}
	for _, c := range strings.Split(p, "/") {
		if n.Type != TypeDir {
			return nil, fmt.Errorf("%q: %w", p, ErrNotDir)
		}
		e := n.ents[c]
		if e == nil {
			return nil, fmt.Errorf("%q: %w", p, ErrNotExist)
		}
		if n, err = ns.get(e.ino); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// LookupPath returns the attributes of the file at a datastore path.
func (ns *Namespace) LookupPath(p string) (Attr, error) {
	c, err := CleanPath(p)
	if err != nil {
		return Attr{}, err
	}
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	n, err := ns.resolve(c)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// matchFiles returns the paths of the regular files that match any of the
// patterns, sorted. REQUIRES: ns.mu held.
func (ns *Namespace) matchFiles(patterns []string) []string {
	var out []string
	var walk func(n *node, prefix string, inMatch bool)
	walk = func(n *node, prefix string, inMatch bool) {
		for _, e := range n.order {
			if e.gone {
				continue
			}
			c, err := ns.get(e.ino)
			if err != nil {
				continue
			}
			p := e.name
			if prefix != "" {
				p = prefix + "/" + e.name
			}
			m := inMatch || matchAny(patterns, p)
			switch c.Type {
			case TypeReg:
				if m {
					out = append(out, p)
				}
			case TypeDir:
				walk(c, p, m)
			}
		}
	}
	if root, err := ns.get(RootIno); err == nil {
		walk(root, "", false)
	}
	sort.Strings(out)
	return out
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if MatchPath(pat, p) {
			return true
		}
	}
	return false
}

// MatchPath reports whether a group's member pattern matches a datastore
// path (clean, no leading '/'). A pattern without '/' matches the last
// component at any depth ("*db*" matches "sql/mydb.vmdk"); a pattern with
// '/' matches the whole path from the root, component by component, where
// "**" matches any number of components ("vms/**/*.vmdk"). Components use
// path.Match syntax (*, ?, [...]). A pattern that matches a directory
// makes every file below it a member (the caller walks the tree).
func MatchPath(pattern, p string) bool {
	pattern = strings.Trim(pattern, "/")
	if pattern == "" {
		return false
	}
	if !strings.Contains(pattern, "/") {
		ok, _ := path.Match(pattern, path.Base(p))
		return ok
	}
	return matchParts(strings.Split(pattern, "/"), strings.Split(p, "/"))
}

func matchParts(pat, parts []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(parts); i++ {
				if matchParts(pat[1:], parts[i:]) {
					return true
				}
			}
			return false
		}
		if len(parts) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], parts[0]); !ok {
			return false
		}
		pat, parts = pat[1:], parts[1:]
	}
	return len(parts) == 0
}

// ValidPattern checks a member pattern's syntax.
func ValidPattern(pattern string) error {
	t := strings.Trim(pattern, "/")
	if t == "" {
		return fmt.Errorf("member pattern %q is empty: %w", pattern, ErrInvalid)
	}
	for _, c := range strings.Split(t, "/") {
		if c == ".." {
			return fmt.Errorf("member pattern %q: '..' is not allowed: %w", pattern, ErrInvalid)
		}
		if _, err := path.Match(c, ""); err != nil {
			return fmt.Errorf("member pattern %q: %v: %w", pattern, err, ErrInvalid)
		}
	}
	return nil
}

// CreateSnapshot freezes every current member of a group at one instant,
// in one log record: O(1) in data size, no I/O pause, holding exactly the
// writes acknowledged before it.
func (ns *Namespace) CreateSnapshot(group, label string, scheduled bool) (*Snapshot, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	g := ns.groups[group]
	if g == nil {
		return nil, fmt.Errorf("%q: %w", group, ErrNoGroup)
	}
	paths := ns.matchFiles(g.Match)
	if len(paths) == 0 {
		return nil, fmt.Errorf("group %q (%s): %w", group, strings.Join(g.Match, ", "), ErrNoMembers)
	}
	return ns.freezeLocked(group, label, scheduled, paths)
}

// freezeLocked snapshots the files at paths. REQUIRES: ns.mu held for writing.
func (ns *Namespace) freezeLocked(group, label string, scheduled bool, paths []string) (*Snapshot, error) {
	now := ns.now().UnixNano()
	snap := &Snapshot{Seq: ns.snapNext, Group: group, Label: label, Created: now, Scheduled: scheduled}
	var vols []blockstore.VolumeID
	volIdx := map[uint64]int{} // volume -> index in vols
	memVol := make([]int, 0, len(paths))
	for _, p := range paths {
		n, err := ns.resolve(p)
		if err != nil {
			return nil, err
		}
		if n.Type != TypeReg {
			return nil, fmt.Errorf("%q is not a regular file: %w", p, ErrInvalid)
		}
		a := ns.attr(n)
		if _, ok := volIdx[n.Volume]; !ok {
			volIdx[n.Volume] = len(vols)
			vols = append(vols, blockstore.VolumeID(n.Volume))
		}
		memVol = append(memVol, volIdx[n.Volume])
		snap.Members = append(snap.Members, Member{Path: p, Ino: n.Ino, Size: a.Size, Mode: n.Mode, UID: n.UID, GID: n.GID,
			Atime: n.Atime, Mtime: n.Mtime, Ctime: n.Ctime})
	}
	ns.snapNext++
	err := ns.commit(nil, nil, func(t *blockstore.Txn, ds *[]delta) error {
		layers, err := t.Freeze(vols...)
		if err != nil {
			return err
		}
		for i := range snap.Members {
			snap.Members[i].Layer = uint64(layers[memVol[i]])
		}
		d, err := snapDelta(snap)
		if err != nil {
			return err
		}
		*ds = append(*ds, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// Snapshot returns a snapshot by sequence number. The record must not be
// changed.
func (ns *Namespace) Snapshot(seq uint64) (*Snapshot, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	s := ns.snaps[seq]
	if s == nil {
		return nil, fmt.Errorf("snapshot %d: %w", seq, ErrNoSnapshot)
	}
	return s, nil
}

// Snapshots lists the snapshots, oldest first; group "" lists all.
func (ns *Namespace) Snapshots(group string) []*Snapshot {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	var out []*Snapshot
	for _, s := range ns.snaps {
		if group == "" || s.Group == group {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// DeleteSnapshot deletes a snapshot: its layers lose the snapshot's hold;
// what no file or clone still sees is merged away and its space comes back
// at the next GC.
func (ns *Namespace) DeleteSnapshot(seq uint64) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.deleteSnapLocked(seq)
}

func (ns *Namespace) deleteSnapLocked(seq uint64) error {
	s := ns.snaps[seq]
	if s == nil {
		return fmt.Errorf("snapshot %d: %w", seq, ErrNoSnapshot)
	}
	err := ns.commit(nil, []delta{{kind: dDelSnap, seq: seq}}, func(t *blockstore.Txn, _ *[]delta) error {
		for _, l := range snapLayers(s) {
			if err := t.Release(blockstore.LayerID(l)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var size int64
	for _, m := range s.Members {
		size += int64(m.Size)
	}
	ns.bs.NoteFreed(size)
	return nil
}

// snapLayers lists a snapshot's distinct layers (hard links share one).
func snapLayers(s *Snapshot) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, m := range s.Members {
		if !seen[m.Layer] {
			seen[m.Layer] = true
			out = append(out, m.Layer)
		}
	}
	return out
}

// member finds a member of s by path. REQUIRES: nothing (records are
// immutable).
func (s *Snapshot) member(p string) (*Member, error) {
	c, err := CleanPath(p)
	if err != nil {
		return nil, err
	}
	for i := range s.Members {
		if s.Members[i].Path == c {
			return &s.Members[i], nil
		}
	}
	return nil, fmt.Errorf("%q in snapshot %s: %w", c, s.ID(), ErrNotMember)
}

// Restore reverts live files to a snapshot at once: the members at paths,
// or every member when paths is empty. A live file keeps its inode and
// handle, gets the member's data, size, mode and owner, and new mtime and
// ctime so clients drop their caches; a member whose path no longer holds
// a file is recreated there (with missing directories). It returns the
// paths restored.
func (ns *Namespace) Restore(seq uint64, paths []string) ([]string, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	s := ns.snaps[seq]
	if s == nil {
		return nil, fmt.Errorf("snapshot %d: %w", seq, ErrNoSnapshot)
	}
	var ms []*Member
	if len(paths) == 0 {
		for i := range s.Members {
			ms = append(ms, &s.Members[i])
		}
	}
	for _, p := range paths {
		m, err := s.member(p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	var done []string
	for _, m := range ms {
		if err := ns.restoreOne(m); err != nil {
			return done, fmt.Errorf("restoring %q: %w", m.Path, err)
		}
		done = append(done, m.Path)
	}
	return done, nil
}

// restoreOne restores one member. REQUIRES: ns.mu held for writing.
func (ns *Namespace) restoreOne(m *Member) error {
	n, err := ns.resolve(m.Path)
	if errors.Is(err, ErrNotExist) {
		return ns.cloneLocked(*m, m.Path, true)
	}
	if err != nil {
		return err
	}
	if n.Type != TypeReg {
		return fmt.Errorf("%q is not a regular file: %w", m.Path, ErrInvalid)
	}
	now := ns.now().UnixNano()
	rec := n.inodeRec
	rec.Mode, rec.UID, rec.GID = m.Mode, m.UID, m.GID
	rec.Mtime, rec.Ctime = now, now
	vid := blockstore.VolumeID(n.Volume)
	n.dirty = false
	return ns.commit([]blockstore.VolumeID{vid}, []delta{{kind: dPutInode, inode: rec}}, func(t *blockstore.Txn, _ *[]delta) error {
		return t.Restore(vid, blockstore.LayerID(m.Layer))
	})
}

// Clone makes a new live file at newPath from a snapshot member: instant,
// no data copied; it outlives the snapshot. The parent directory of
// newPath must exist.
func (ns *Namespace) Clone(seq uint64, member, newPath string) (Attr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	s := ns.snaps[seq]
	if s == nil {
		return Attr{}, fmt.Errorf("snapshot %d: %w", seq, ErrNoSnapshot)
	}
	m, err := s.member(member)
	if err != nil {
		return Attr{}, err
	}
	np, err := CleanPath(newPath)
	if err != nil {
		return Attr{}, err
	}
	if err := ns.cloneLocked(*m, np, false); err != nil {
		return Attr{}, err
	}
	n, err := ns.resolve(np)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// CloneLive makes a new live file at newPath from the live file at p,
// through an implicit snapshot of p that only the two files share.
func (ns *Namespace) CloneLive(p, newPath string) (Attr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	sp, err := CleanPath(p)
	if err != nil {
		return Attr{}, err
	}
	np, err := CleanPath(newPath)
	if err != nil {
		return Attr{}, err
	}
	src, err := ns.resolve(sp)
	if err != nil {
		return Attr{}, err
	}
	if src.Type != TypeReg {
		return Attr{}, fmt.Errorf("%q is not a regular file: %w", sp, ErrInvalid)
	}
	d, name, err := ns.parentFor(np, false)
	if err != nil {
		return Attr{}, err
	}
	rec := ns.newInode(TypeReg, NewAttr{Mode: src.Mode, UID: src.UID, GID: src.GID})
	n, err := ns.link(d, name, rec, func(t *blockstore.Txn, r *inodeRec) error {
		ls, err := t.Freeze(blockstore.VolumeID(src.Volume))
		if err != nil {
			return err
		}
		vid, err := t.Clone(ls[0])
		if err != nil {
			return err
		}
		r.Volume = uint64(vid)
		return t.Release(ls[0])
	})
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// parentFor finds (or, with mkdirs, makes) the directory that will hold
// p, and checks that p's name is free there. REQUIRES: ns.mu held for
// writing.
func (ns *Namespace) parentFor(p string, mkdirs bool) (*node, string, error) {
	if p == "" {
		return nil, "", fmt.Errorf("the root cannot be a file: %w", ErrExist)
	}
	dir, name := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	d, err := ns.resolve(dir)
	if errors.Is(err, ErrNotExist) && mkdirs {
		d, err = ns.get(RootIno)
		for _, c := range strings.Split(dir, "/") {
			if err != nil {
				break
			}
			if e := d.ents[c]; e != nil {
				d, err = ns.get(e.ino)
				continue
			}
			if err = checkName(c); err == nil {
				d, err = ns.link(d, c, ns.newInode(TypeDir, NewAttr{Mode: 0o755}), nil)
			}
		}
	}
	if err != nil {
		return nil, "", err
	}
	if d.Type != TypeDir {
		return nil, "", fmt.Errorf("%q: %w", dir, ErrNotDir)
	}
	if err := checkName(name); err != nil {
		return nil, "", err
	}
	if d.ents[name] != nil {
		return nil, "", fmt.Errorf("%q: %w", p, ErrExist)
	}
	return d, name, nil
}

// cloneLocked makes a file at p over member m's layer. REQUIRES: ns.mu
// held for writing.
func (ns *Namespace) cloneLocked(m Member, p string, mkdirs bool) error {
	d, name, err := ns.parentFor(p, mkdirs)
	if err != nil {
		return err
	}
	rec := ns.newInode(TypeReg, NewAttr{Mode: m.Mode, UID: m.UID, GID: m.GID})
	_, err = ns.link(d, name, rec, func(t *blockstore.Txn, r *inodeRec) error {
		vid, err := t.Clone(blockstore.LayerID(m.Layer))
		r.Volume = uint64(vid)
		return err
	})
	return err
}
