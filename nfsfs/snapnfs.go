package nfsfs

// The /snapstore export: the snapstore namespace (snapstore.SnapGetAttr and
// friends) served read-only over NFSv3. Its handles carry namespace 1 and a
// snapstore.VIno; calls whose first handle is one come here. Every change
// is answered NFS3ERR_ROFS, so a client sees EROFS.

import (
	"errors"
	"sort"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// snapFSIDBit sets the snapstore's fsid apart from the live tree's, so a
// client that mounts both never takes one file for another.
const snapFSIDBit = 1 << 63

// SnapRootHandle is the handle of the snapstore namespace's root, what
// MOUNT answers for /snapstore.
func (n *NFS) SnapRootHandle() []byte {
	return n.snapHandle(snapstore.SnapRoot)
}

func (n *NFS) snapHandle(v snapstore.VIno) []byte {
	return Handle{FSID: n.fsid, NS: nsSnap, Ino: snapstore.Ino(v), Gen: 1}.encode()
}

// snapMountHandle resolves a path below /snapstore ("" for its root) to a
// directory handle, for MNT of /snapstore/GROUP and deeper.
func (n *NFS) snapMountHandle(p string) ([]byte, error) {
	a, err := n.ns.SnapResolve(p)
	if err != nil {
		return nil, err
	}
	if a.Type != snapstore.TypeDir {
		return nil, snapstore.ErrNotDir
	}
	return n.snapHandle(a.Ino), nil
}

// snapStatus maps an error from the snapstore view to an NFS status. A
// layer released under a reader (its snapshot deleted) is a stale handle.
func (n *NFS) snapStatus(err error) nfsstat {
	if errors.Is(err, blockstore.ErrNotFound) {
		return nfsErrStale
	}
	return n.statusOf(err)
}

// snapHandleArg decodes a handle argument of the snapstore export.
func (q *req) snapHandleArg() (snapstore.VAttr, nfsstat, bool) {
	b := q.r.Opaque(64)
	if q.r.Err() != nil {
		return snapstore.VAttr{}, 0, false
	}
	h, ok := decodeHandle(b)
	if !ok || h.FSID != q.n.fsid || h.NS != nsSnap || h.Gen != 1 {
		return snapstore.VAttr{}, nfsErrStale, true
	}
	a, err := q.n.ns.SnapGetAttr(snapstore.VIno(h.Ino))
	if err != nil {
		return snapstore.VAttr{}, q.n.snapStatus(err), true
	}
	return a, nfsOK, true
}

// permAttr is what the permission check needs of a snapstore object.
func permAttr(a snapstore.VAttr) snapstore.Attr {
	return snapstore.Attr{Type: a.Type, Mode: a.Mode, UID: a.UID, GID: a.GID}
}

func (q *req) putSnapFattr(a snapstore.VAttr) {
	w := q.w
	w.Uint32(uint32(a.Type))
	w.Uint32(a.Mode)
	w.Uint32(a.Nlink)
	w.Uint32(a.UID)
	w.Uint32(a.GID)
	w.Uint64(a.Size)
	// What a snapshot's file holds alone is in `dstore snapshot show`; here
	// it is charged its size, rounded to the block, like a thick copy.
	bs := uint64(q.n.ds.Blocks.BlockSize())
	w.Uint64((a.Size + bs - 1) / bs * bs)
	w.Uint32(0) // rdev
	w.Uint32(0)
	w.Uint64(q.n.fsid ^ snapFSIDBit)
	w.Uint64(uint64(a.Ino))
	putTime(w, a.Atime)
	putTime(w, a.Mtime)
	putTime(w, a.Ctime)
}

// snapPostOp writes post_op_attr: a's attributes, or none when a is the
// zero VAttr (a stale handle: VIno 0 is never valid).
func (q *req) snapPostOp(a snapstore.VAttr) {
	ok := a.Ino != 0
	q.w.Bool(ok)
	if ok {
		q.putSnapFattr(a)
	}
}

// snapServe answers a call on the snapstore export.
func (q *req) snapServe() (AcceptStat, error) {
	a, st, ok := q.snapHandleArg()
	if !ok {
		return q.garbage()
	}
	switch q.c.Proc {
	case nfsGetattr:
		q.w.Uint32(uint32(st))
		if st == nfsOK {
			q.putSnapFattr(a)
		}
	case nfsLookup:
		return q.snapLookup(a, st)
	case nfsAccess:
		return q.snapAccess(a, st)
	case nfsReadlink:
		if st == nfsOK {
			st = nfsErrInval // the snapstore holds no symlinks
		}
		q.w.Uint32(uint32(st))
		q.snapPostOp(a)
	case nfsRead:
		return q.snapRead(a, st)
	case nfsReaddir, nfsReaddirplus:
		return q.snapReaddir(a, st, q.c.Proc == nfsReaddirplus)
	case nfsFsstat:
		return q.snapFsstat(a, st)
	case nfsFsinfo, nfsPathconf:
		q.w.Uint32(uint32(st))
		q.snapPostOp(a)
		if st == nfsOK {
			if q.c.Proc == nfsFsinfo {
				q.fsinfoBody(false)
			} else {
				q.pathconfBody()
			}
		}
	case nfsSetattr, nfsWrite, nfsCommit:
		// wcc_data of the object: no pre-op attributes, the post-op ones.
		q.w.Uint32(uint32(roStatus(st)))
		q.w.Bool(false)
		q.snapPostOp(a)
	case nfsCreate, nfsMkdir, nfsSymlink, nfsMknod, nfsRemove, nfsRmdir:
		q.w.Uint32(uint32(roStatus(st)))
		q.w.Bool(false)
		q.snapPostOp(a)
	case nfsRename:
		q.w.Uint32(uint32(roStatus(st)))
		q.w.Bool(false)
		q.snapPostOp(a)
		q.w.Bool(false) // todir_wcc
		q.w.Bool(false)
	case nfsLink:
		q.w.Uint32(uint32(roStatus(st)))
		q.snapPostOp(a)
		q.w.Bool(false) // linkdir_wcc
		q.w.Bool(false)
	default:
		return AcceptProcUnavail, nil
	}
	return AcceptSuccess, nil
}

// roStatus is the answer to a change: ROFS, unless the handle is bad.
func roStatus(st nfsstat) nfsstat {
	if st != nfsOK {
		return st
	}
	return nfsErrRofs
}

func (q *req) snapLookup(dir snapstore.VAttr, st nfsstat) (AcceptStat, error) {
	name := q.r.String(maxPath)
	if q.r.Err() != nil {
		return q.garbage()
	}
	var a snapstore.VAttr
	if st == nfsOK {
		switch {
		case len(name) > maxName:
			st = nfsErrNametool
		case dir.Type != snapstore.TypeDir:
			st = nfsErrNotdir
		case !q.cr.may(permAttr(dir), 1):
			st = nfsErrAcces
		}
	}
	if st == nfsOK {
		var err error
		switch name {
		case ".":
			a = dir
		case "..":
			var p snapstore.VIno
			if p, err = q.n.ns.SnapParent(dir.Ino); err == nil {
				a, err = q.n.ns.SnapGetAttr(p)
			}
		default:
			a, err = q.n.ns.SnapLookup(dir.Ino, name)
		}
		st = q.n.snapStatus(err)
	}
	q.w.Uint32(uint32(st))
	if st != nfsOK {
		q.snapPostOp(dir)
		return AcceptSuccess, nil
	}
	q.w.Opaque(q.n.snapHandle(a.Ino))
	q.snapPostOp(a)
	q.snapPostOp(dir)
	return AcceptSuccess, nil
}

func (q *req) snapAccess(a snapstore.VAttr, st nfsstat) (AcceptStat, error) {
	want := q.r.Uint32()
	if q.r.Err() != nil {
		return q.garbage()
	}
	q.w.Uint32(uint32(st))
	if st != nfsOK {
		q.w.Bool(false)
		return AcceptSuccess, nil
	}
	pa := permAttr(a)
	var got uint32
	if q.cr.may(pa, 4) {
		got |= accRead
	}
	if q.cr.may(pa, 1) {
		if a.Type == snapstore.TypeDir {
			got |= accLookup
		} else {
			got |= accExecute
		}
	}
	q.snapPostOp(a)
	q.w.Uint32(got & want)
	return AcceptSuccess, nil
}

func (q *req) snapRead(a snapstore.VAttr, st nfsstat) (AcceptStat, error) {
	off := q.r.Uint64()
	count := q.r.Uint32()
	if q.r.Err() != nil {
		return q.garbage()
	}
	count = min(count, maxIO)
	if st == nfsOK {
		switch {
		case a.Type == snapstore.TypeDir:
			st = nfsErrIsdir
		case a.Type != snapstore.TypeReg:
			st = nfsErrInval
		case q.cr.uid != a.UID && !q.cr.may(permAttr(a), 4):
			st = nfsErrAcces
		}
	}
	if st != nfsOK {
		q.w.Uint32(uint32(st))
		q.snapPostOp(a)
		return AcceptSuccess, nil
	}
	off = min(off, uint64(blockstore.MaxVolumeSize))
	mark := q.w.Len()
	q.w.Uint32(uint32(nfsOK))
	q.snapPostOp(a)
	countAt := q.w.Reserve()
	eofAt := q.w.Reserve()
	lenAt := q.w.Len()
	buf := q.w.OpaqueSpace(int(count))
	n, eof, err := q.n.ns.SnapRead(a.Ino, buf, int64(off))
	if err != nil {
		q.w.Truncate(mark)
		st = q.n.snapStatus(err)
		q.w.Uint32(uint32(st))
		q.snapPostOp(a)
		return AcceptSuccess, nil
	}
	q.w.PutUint32At(countAt, uint32(n))
	if eof {
		q.w.PutUint32At(eofAt, 1)
	}
	q.w.PutUint32At(lenAt, uint32(n))
	q.w.Truncate(lenAt + 4 + n)
	q.w.buf = append(q.w.buf, zeroPad[:pad(n)]...)
	return AcceptSuccess, nil
}

// snapCookie is a snapstore directory entry's READDIR cookie: the part of
// its VIno that is unique within its directory (a group's sequence number
// in the root, a snapshot's in a group, the path index in a snapshot),
// plus 3, past "." (1) and ".." (2). Sequence numbers are never reused, so
// a cookie keeps its place while snapshots come and go.
func snapCookie(dir, child snapstore.VIno) uint64 {
	const low62 = 1<<62 - 1
	switch {
	case dir == snapstore.SnapRoot:
		return uint64(child)&low62 + 3
	case uint64(dir)>>62 == 1: // a group: its children are snapshots
		return (uint64(child)&low62)>>24 + 3
	}
	return uint64(child)&(1<<24-1) + 3
}

func (q *req) snapReaddir(dir snapstore.VAttr, st nfsstat, plus bool) (AcceptStat, error) {
	cookie := q.r.Uint64()
	q.r.FixedOpaque(8)
	count := q.r.Uint32()
	maxCount := count
	if plus {
		maxCount = q.r.Uint32()
	}
	if q.r.Err() != nil {
		return q.garbage()
	}
	if st == nfsOK {
		switch {
		case dir.Type != snapstore.TypeDir:
			st = nfsErrNotdir
		case !q.cr.may(permAttr(dir), 4):
			st = nfsErrAcces
		}
	}
	type ent struct {
		name   string
		a      snapstore.VAttr
		cookie uint64
	}
	var list []ent
	if st == nfsOK {
		if cookie == 0 {
			list = append(list, ent{".", dir, 1})
		}
		if cookie <= 1 {
			p, err := q.n.ns.SnapParent(dir.Ino)
			var pa snapstore.VAttr
			if err == nil {
				pa, err = q.n.ns.SnapGetAttr(p)
			}
			if err != nil {
				st = q.n.snapStatus(err)
			}
			list = append(list, ent{"..", pa, 2})
		}
	}
	if st == nfsOK {
		ents, err := q.n.ns.SnapReadDir(dir.Ino)
		if err != nil {
			st = q.n.snapStatus(err)
		}
		var rest []ent
		for _, e := range ents {
			if c := snapCookie(dir.Ino, e.Attr.Ino); c > cookie {
				rest = append(rest, ent{e.Name, e.Attr, c})
			}
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].cookie < rest[j].cookie })
		list = append(list, rest...)
	}
	budget := int(min(maxCount, maxDirRep))
	if st == nfsOK && budget < 128 {
		st = nfsErrToosmall
	}
	q.w.Uint32(uint32(st))
	if st != nfsOK {
		q.snapPostOp(dir)
		return AcceptSuccess, nil
	}
	start := q.w.Len()
	q.snapPostOp(dir)
	q.w.FixedOpaque(cookieVerf[:])
	wrote := 0
	for _, e := range list {
		mark := q.w.Len()
		q.w.Bool(true)
		q.w.Uint64(uint64(e.a.Ino))
		q.w.String(e.name)
		q.w.Uint64(e.cookie)
		if plus {
			q.snapPostOp(e.a)
			q.w.Bool(true)
			q.w.Opaque(q.n.snapHandle(e.a.Ino))
		}
		if q.w.Len()-start+8 > budget {
			q.w.Truncate(mark)
			break
		}
		wrote++
	}
	if wrote == 0 && len(list) > 0 {
		q.w.Truncate(start - 4)
		q.w.Uint32(uint32(nfsErrToosmall))
		q.snapPostOp(dir)
		return AcceptSuccess, nil
	}
	q.w.Bool(false)
	q.w.Bool(wrote == len(list))
	return AcceptSuccess, nil
}

func (q *req) snapFsstat(a snapstore.VAttr, st nfsstat) (AcceptStat, error) {
	var c blockstore.Capacity
	if st == nfsOK {
		var err error
		c, err = q.n.ds.Blocks.Capacity()
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	q.snapPostOp(a)
	if st == nfsOK {
		q.fsstatBody(c)
	}
	return AcceptSuccess, nil
}
