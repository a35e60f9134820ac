package snapstore

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// CreateHow is NFSv3's createmode3.
type CreateHow int

const (
	Unchecked CreateHow = iota // an existing file is returned as it is
	Guarded                    // an existing name is ErrExist
	Exclusive                  // idempotent by verifier: a retransmission returns the file
)

// NewAttr are the attributes a new inode starts with.
type NewAttr struct {
	Mode     uint32
	UID, GID uint32
}

// Create makes a regular file, or returns the existing one as how allows.
// created reports whether a new file was made.
func (ns *Namespace) Create(dir Ino, name string, how CreateHow, verf [8]byte, na NewAttr) (a Attr, created bool, err error) {
	if err := checkName(name); err != nil {
		return Attr{}, false, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, err := ns.dir(dir)
	if err != nil {
		return Attr{}, false, err
	}
	if e := d.ents[name]; e != nil {
		n, err := ns.get(e.ino)
		if err != nil {
			return Attr{}, false, err
		}
		switch how {
		case Unchecked:
			if n.Type == TypeDir {
				return Attr{}, false, ErrIsDir
			}
			return ns.attr(n), false, nil
		case Exclusive:
			if n.Type == TypeReg && n.Flags&flagExclusive != 0 && n.Verf == verf {
				return ns.attr(n), false, nil
			}
		}
		return Attr{}, false, fmt.Errorf("%q: %w", name, ErrExist)
	}
	rec := ns.newInode(TypeReg, na)
	if how == Exclusive {
		rec.Verf = verf
		rec.Flags |= flagExclusive
	}
	n, err := ns.link(d, name, rec, func(t *blockstore.Txn, r *inodeRec) error {
		r.Volume = uint64(t.CreateVolume())
		return nil
	})
	if err != nil {
		return Attr{}, false, err
	}
	return ns.attr(n), true, nil
}

// newInode fills a new inode. REQUIRES: ns.mu held for writing.
func (ns *Namespace) newInode(t FileType, na NewAttr) inodeRec {
	now := ns.now().UnixNano()
	ino := ns.nextIno
	ns.nextIno++
	return inodeRec{Ino: ino, Gen: 1, Type: t, Mode: na.Mode & 0o7777, Nlink: 1, UID: na.UID, GID: na.GID,
		Atime: now, Mtime: now, Ctime: now}
}

// link commits a new inode under name in d. prep may make layer
// operations and complete the record. REQUIRES: ns.mu held for writing.
func (ns *Namespace) link(d *node, name string, rec inodeRec, prep func(t *blockstore.Txn, r *inodeRec) error) (*node, error) {
	now := ns.now().UnixNano()
	dirRec := d.inodeRec
	dirRec.Mtime, dirRec.Ctime = now, now
	cookie := dirRec.Next
	dirRec.Next++
	if rec.Type == TypeDir {
		dirRec.Nlink++
		rec.Nlink = 2
		rec.Parent = d.Ino
		rec.Next = 1
	}
	err := ns.commit(nil, nil, func(t *blockstore.Txn, ds *[]delta) error {
		if prep != nil {
			if err := prep(t, &rec); err != nil {
				return err
			}
		}
		if rec.Ino >= ns.reserved {
			*ds = append(*ds, delta{kind: dReserve, ino: rec.Ino + inoReserve})
		}
		*ds = append(*ds,
			delta{kind: dPutInode, inode: rec},
			delta{kind: dPutEnt, dir: d.Ino, cookie: cookie, ino: rec.Ino, name: name},
			delta{kind: dPutInode, inode: dirRec})
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := ns.nodes[rec.Ino]
	if n == nil {
		return nil, fmt.Errorf("inode %d vanished after its create: %w", rec.Ino, ErrStale)
	}
	return n, nil
}

// lockedCreate checks that name is free in dir. REQUIRES: ns.mu held.
func (ns *Namespace) free(dir Ino, name string) (*node, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	d, err := ns.dir(dir)
	if err != nil {
		return nil, err
	}
	if d.ents[name] != nil {
		return nil, fmt.Errorf("%q: %w", name, ErrExist)
	}
	return d, nil
}

// Mkdir makes a directory.
func (ns *Namespace) Mkdir(dir Ino, name string, na NewAttr) (Attr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, err := ns.free(dir, name)
	if err != nil {
		return Attr{}, err
	}
	n, err := ns.link(d, name, ns.newInode(TypeDir, na), nil)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// Symlink makes a symbolic link to target.
func (ns *Namespace) Symlink(dir Ino, name, target string, na NewAttr) (Attr, error) {
	if len(target) == 0 || len(target) > 4096 || len(target) > 65535 {
		return Attr{}, fmt.Errorf("symlink target of %d bytes: %w", len(target), ErrInvalid)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, err := ns.free(dir, name)
	if err != nil {
		return Attr{}, err
	}
	rec := ns.newInode(TypeLnk, na)
	rec.Target, rec.Size = target, uint64(len(target))
	if na.Mode == 0 {
		rec.Mode = 0o777
	}
	n, err := ns.link(d, name, rec, nil)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// Mknod makes a device, socket or fifo.
func (ns *Namespace) Mknod(dir Ino, name string, t FileType, major, minor uint32, na NewAttr) (Attr, error) {
	switch t {
	case TypeBlk, TypeChr, TypeSock, TypeFifo:
	default:
		return Attr{}, fmt.Errorf("mknod of type %d: %w", t, ErrInvalid)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, err := ns.free(dir, name)
	if err != nil {
		return Attr{}, err
	}
	rec := ns.newInode(t, na)
	if t == TypeBlk || t == TypeChr {
		rec.Major, rec.Minor = major, minor
	}
	n, err := ns.link(d, name, rec, nil)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// Link makes another name for a non-directory.
func (ns *Namespace) Link(ino, dir Ino, name string) (Attr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n, err := ns.get(ino)
	if err != nil {
		return Attr{}, err
	}
	if n.Type == TypeDir {
		return Attr{}, ErrIsDir
	}
	d, err := ns.free(dir, name)
	if err != nil {
		return Attr{}, err
	}
	now := ns.now().UnixNano()
	rec := n.inodeRec
	rec.Nlink++
	rec.Ctime = now
	dirRec := d.inodeRec
	dirRec.Mtime, dirRec.Ctime = now, now
	cookie := dirRec.Next
	dirRec.Next++
	err = ns.commit(nil, []delta{
		{kind: dPutInode, inode: rec},
		{kind: dPutEnt, dir: d.Ino, cookie: cookie, ino: ino, name: name},
		{kind: dPutInode, inode: dirRec},
	}, nil)
	if err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// unlinkDeltas returns the deltas and layer operation that drop one link
// to n, deleting it (and its volume) with the last one. REQUIRES: ns.mu held.
func unlinkDeltas(n *node, now int64, ds []delta) ([]delta, *blockstore.VolumeID) {
	rec := n.inodeRec
	last := rec.Nlink <= 1 || rec.Type == TypeDir
	if !last {
		rec.Nlink--
		rec.Ctime = now
		return append(ds, delta{kind: dPutInode, inode: rec}), nil
	}
	ds = append(ds, delta{kind: dDelInode, ino: rec.Ino})
	if rec.Type == TypeReg {
		v := blockstore.VolumeID(rec.Volume)
		return ds, &v
	}
	return ds, nil
}

// entry finds name in directory dir and the inode it names.
// REQUIRES: ns.mu held.
func (ns *Namespace) entry(dir Ino, name string) (*node, *dent, *node, error) {
	if err := checkName(name); err != nil {
		return nil, nil, nil, err
	}
	d, err := ns.dir(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	e := d.ents[name]
	if e == nil {
		return nil, nil, nil, fmt.Errorf("%q: %w", name, ErrNotExist)
	}
	n, err := ns.get(e.ino)
	if err != nil {
		return nil, nil, nil, err
	}
	return d, e, n, nil
}

// Remove removes a non-directory's name.
func (ns *Namespace) Remove(dir Ino, name string) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, e, n, err := ns.entry(dir, name)
	if err != nil {
		return err
	}
	if n.Type == TypeDir {
		return ErrIsDir
	}
	now := ns.now().UnixNano()
	dirRec := d.inodeRec
	dirRec.Mtime, dirRec.Ctime = now, now
	ds := []delta{{kind: dDelEnt, dir: d.Ino, cookie: e.cookie}, {kind: dPutInode, inode: dirRec}}
	ds, vol := unlinkDeltas(n, now, ds)
	size := ns.volSize(vol)
	if err := ns.commit(volList(vol), ds, dropVolume(vol)); err != nil {
		return err
	}
	ns.bs.NoteFreed(size)
	return nil
}

// volSize is the size of a volume about to be deleted, for the block
// store's background GC (NoteFreed); 0 for none.
func (ns *Namespace) volSize(vol *blockstore.VolumeID) int64 {
	if vol == nil {
		return 0
	}
	v, err := ns.bs.OpenVolume(*vol)
	if err != nil {
		return 0
	}
	return v.Size()
}

func volList(v *blockstore.VolumeID) []blockstore.VolumeID {
	if v == nil {
		return nil
	}
	return []blockstore.VolumeID{*v}
}

func dropVolume(v *blockstore.VolumeID) func(*blockstore.Txn, *[]delta) error {
	if v == nil {
		return nil
	}
	return func(t *blockstore.Txn, _ *[]delta) error { return t.DeleteVolume(*v) }
}

// Rmdir removes an empty directory.
func (ns *Namespace) Rmdir(dir Ino, name string) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, e, n, err := ns.entry(dir, name)
	if err != nil {
		return err
	}
	if n.Type != TypeDir {
		return ErrNotDir
	}
	if len(n.ents) > 0 {
		return ErrNotEmpty
	}
	now := ns.now().UnixNano()
	dirRec := d.inodeRec
	dirRec.Mtime, dirRec.Ctime = now, now
	dirRec.Nlink--
	return ns.commit(nil, []delta{
		{kind: dDelEnt, dir: d.Ino, cookie: e.cookie},
		{kind: dDelInode, ino: n.Ino},
		{kind: dPutInode, inode: dirRec},
	}, nil)
}

// Rename moves fromName in fromDir to toName in toDir atomically, replacing
// what toName named (POSIX rename).
func (ns *Namespace) Rename(fromDir Ino, fromName string, toDir Ino, toName string) error {
	if err := checkName(fromName); err != nil {
		return err
	}
	if err := checkName(toName); err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	fd, err := ns.dir(fromDir)
	if err != nil {
		return err
	}
	td, err := ns.dir(toDir)
	if err != nil {
		return err
	}
	se := fd.ents[fromName]
	if se == nil {
		return fmt.Errorf("%q: %w", fromName, ErrNotExist)
	}
	src, err := ns.get(se.ino)
	if err != nil {
		return err
	}
	te := td.ents[toName]
	if te != nil && te.ino == se.ino {
		return nil // two names of one file: nothing to do
	}
	if src.Type == TypeDir {
		// A directory cannot move into itself or below itself.
		for p := td; ; {
			if p.Ino == src.Ino {
				return fmt.Errorf("rename of a directory into itself: %w", ErrInvalid)
			}
			if p.Ino == RootIno || p.Parent == p.Ino {
				break
			}
			if p, err = ns.get(p.Parent); err != nil {
				return err
			}
		}
	}
	now := ns.now().UnixNano()
	recs := map[Ino]*inodeRec{}
	stage := func(n *node) *inodeRec {
		if r := recs[n.Ino]; r != nil {
			return r
		}
		r := n.inodeRec
		recs[n.Ino] = &r
		return &r
	}
	var ds []delta
	var vol *blockstore.VolumeID
	var freed int64
	if te != nil {
		dst, err := ns.get(te.ino)
		if err != nil {
			return err
		}
		switch {
		case src.Type == TypeDir && dst.Type != TypeDir:
			return ErrNotDir
		case src.Type != TypeDir && dst.Type == TypeDir:
			return ErrIsDir
		case dst.Type == TypeDir && len(dst.ents) > 0:
			return ErrNotEmpty
		}
		ds = append(ds, delta{kind: dDelEnt, dir: td.Ino, cookie: te.cookie})
		if dst.Type == TypeDir {
			stage(td).Nlink--
			ds = append(ds, delta{kind: dDelInode, ino: dst.Ino})
		} else {
			ds, vol = unlinkDeltas(dst, now, ds)
			freed = ns.volSize(vol)
		}
	}
	ds = append(ds, delta{kind: dDelEnt, dir: fd.Ino, cookie: se.cookie})
	tr := stage(td)
	cookie := tr.Next
	tr.Next++
	ds = append(ds, delta{kind: dPutEnt, dir: td.Ino, cookie: cookie, ino: src.Ino, name: toName})
	sr := stage(src)
	sr.Ctime = now
	if src.Type == TypeDir && fd.Ino != td.Ino {
		sr.Parent = td.Ino
		stage(fd).Nlink--
		stage(td).Nlink++
	}
	for _, n := range []*node{fd, td} {
		r := stage(n)
		r.Mtime, r.Ctime = now, now
	}
	for _, r := range recs {
		ds = append(ds, delta{kind: dPutInode, inode: *r})
	}
	if err := ns.commit(volList(vol), ds, dropVolume(vol)); err != nil {
		return err
	}
	ns.bs.NoteFreed(freed)
	return nil
}

// SetAttrArgs are the changes of a SETATTR; nil fields are left alone.
type SetAttrArgs struct {
	Mode       *uint32
	UID, GID   *uint32
	Size       *uint64
	Atime      *time.Time
	Mtime      *time.Time
	GuardCtime *time.Time // when set, the change applies only if ctime equals it
}

// SetAttr changes attributes. A size change truncates or grows the file's
// volume (growing is sparse: instant, no space).
func (ns *Namespace) SetAttr(ino Ino, s SetAttrArgs) (Attr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n, err := ns.get(ino)
	if err != nil {
		return Attr{}, err
	}
	if s.GuardCtime != nil && s.GuardCtime.UnixNano() != n.Ctime {
		return Attr{}, ErrChanged
	}
	now := ns.now().UnixNano()
	rec := n.inodeRec
	if s.Size != nil {
		if n.Type == TypeDir {
			return Attr{}, ErrIsDir
		}
		if n.Type != TypeReg {
			return Attr{}, ErrInvalid
		}
		if *s.Size > uint64(blockstore.MaxVolumeSize) {
			return Attr{}, blockstore.ErrTooLarge
		}
		v, err := ns.bs.OpenVolume(blockstore.VolumeID(n.Volume))
		if err != nil {
			return Attr{}, err
		}
		if old := uint64(v.Size()); old != *s.Size {
			if err := v.Truncate(int64(*s.Size)); err != nil {
				return Attr{}, err
			}
			rec.Mtime = now
			if *s.Size < old {
				ns.bs.NoteFreed(int64(old - *s.Size))
			}
		}
	}
	if s.Mode != nil {
		rec.Mode = *s.Mode & 0o7777
	}
	if s.UID != nil {
		rec.UID = *s.UID
	}
	if s.GID != nil {
		rec.GID = *s.GID
	}
	if s.Atime != nil {
		rec.Atime = s.Atime.UnixNano()
	}
	if s.Mtime != nil {
		rec.Mtime = s.Mtime.UnixNano()
	}
	rec.Ctime = now
	n.dirty = false
	if err := ns.commit(nil, []delta{{kind: dPutInode, inode: rec}}, nil); err != nil {
		return Attr{}, err
	}
	return ns.attr(n), nil
}

// volume returns a regular file's volume. REQUIRES: ns.mu held.
func (ns *Namespace) volume(ino Ino) (*node, *blockstore.Volume, error) {
	n, err := ns.get(ino)
	if err != nil {
		return nil, nil, err
	}
	switch n.Type {
	case TypeReg:
	case TypeDir:
		return nil, nil, ErrIsDir
	default:
		return nil, nil, ErrInvalid
	}
	v, err := ns.bs.OpenVolume(blockstore.VolumeID(n.Volume))
	if err != nil {
		return nil, nil, err
	}
	return n, v, nil
}

// Read reads a regular file at off; eof reports that the read reached the
// end of the file.
func (ns *Namespace) Read(ino Ino, p []byte, off int64) (n int, eof bool, err error) {
	ns.mu.RLock()
	_, v, err := ns.volume(ino)
	ns.mu.RUnlock()
	if err != nil {
		return 0, false, err
	}
	n, err = v.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return n, true, nil
	}
	if err != nil {
		return n, false, err
	}
	return n, off+int64(n) >= v.Size(), nil
}

// Write writes to a regular file. With stable, the data and the file's new
// times are durable when it returns; without, after Commit.
func (ns *Namespace) Write(ino Ino, p []byte, off int64, stable bool) (Attr, error) {
	ns.mu.RLock()
	_, v, err := ns.volume(ino)
	ns.mu.RUnlock()
	if err != nil {
		return Attr{}, err
	}
	if _, err := v.WriteAt(p, off); err != nil {
		return Attr{}, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n, err := ns.get(ino)
	if err != nil {
		return Attr{}, err
	}
	now := ns.now().UnixNano()
	n.Mtime, n.Ctime = now, now
	n.dirty = true
	if stable {
		if err := ns.flushLocked(n); err != nil {
			return Attr{}, err
		}
	}
	return ns.attr(n), nil
}

// flushLocked logs n's times if writes changed them, and waits until that
// record, and with it every write logged before it, is durable.
// REQUIRES: ns.mu held for writing.
func (ns *Namespace) flushLocked(n *node) error {
	if !n.dirty {
		ns.mu.Unlock()
		err := ns.bs.Sync()
		ns.mu.Lock()
		return err
	}
	n.dirty = false
	return ns.commit(nil, []delta{{kind: dPutInode, inode: n.inodeRec}}, nil)
}

// Commit makes a file's writes and attributes durable (NFS COMMIT).
func (ns *Namespace) Commit(ino Ino) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n, err := ns.get(ino)
	if err != nil {
		return err
	}
	return ns.flushLocked(n)
}

// DirEntry is one READDIR entry.
type DirEntry struct {
	Name   string
	Ino    Ino
	Cookie uint64
}

// ReadDir lists dir from after cookie (0: from the start), at most max
// entries; "." and ".." come first with cookies 1 and 2 is left to the
// caller. eof reports the end of the directory. Cookies are stable: an
// entry keeps its cookie until removed, and resuming costs a binary search.
func (ns *Namespace) ReadDir(dir Ino, cookie uint64, max int) (ents []DirEntry, eof bool, err error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	d, err := ns.dir(dir)
	if err != nil {
		return nil, false, err
	}
	i := searchCookie(d.order, cookie)
	for ; i < len(d.order) && len(ents) < max; i++ {
		if e := d.order[i]; !e.gone {
			ents = append(ents, DirEntry{Name: e.name, Ino: e.ino, Cookie: e.cookie})
		}
	}
	for ; i < len(d.order) && d.order[i].gone; i++ {
	}
	return ents, i >= len(d.order), nil
}

func searchCookie(order []*dent, after uint64) int {
	lo, hi := 0, len(order)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if order[m].cookie <= after {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Readlink returns a symlink's target.
func (ns *Namespace) Readlink(ino Ino) (string, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	n, err := ns.get(ino)
	if err != nil {
		return "", err
	}
	if n.Type != TypeLnk {
		return "", ErrInvalid
	}
	return n.Target, nil
}
