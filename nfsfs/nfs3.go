package nfsfs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// NFSv3 (RFC 1813) program, procedures and status codes.
const (
	ProgNFS  = 100003
	ProgMNT  = 100005
	ProgPMAP = 100000

	nfsNull        = 0
	nfsGetattr     = 1
	nfsSetattr     = 2
	nfsLookup      = 3
	nfsAccess      = 4
	nfsReadlink    = 5
	nfsRead        = 6
	nfsWrite       = 7
	nfsCreate      = 8
	nfsMkdir       = 9
	nfsSymlink     = 10
	nfsMknod       = 11
	nfsRemove      = 12
	nfsRmdir       = 13
	nfsRename      = 14
	nfsLink        = 15
	nfsReaddir     = 16
	nfsReaddirplus = 17
	nfsFsstat      = 18
	nfsFsinfo      = 19
	nfsPathconf    = 20
	nfsCommit      = 21
)

type nfsstat uint32

const (
	nfsOK          nfsstat = 0
	nfsErrPerm     nfsstat = 1
	nfsErrNoent    nfsstat = 2
	nfsErrIO       nfsstat = 5
	nfsErrAcces    nfsstat = 13
	nfsErrExist    nfsstat = 17
	nfsErrXdev     nfsstat = 18
	nfsErrNotdir   nfsstat = 20
	nfsErrIsdir    nfsstat = 21
	nfsErrInval    nfsstat = 22
	nfsErrFbig     nfsstat = 27
	nfsErrNospc    nfsstat = 28
	nfsErrRofs     nfsstat = 30
	nfsErrNametool nfsstat = 63
	nfsErrNotempty nfsstat = 66
	nfsErrStale    nfsstat = 70
	nfsErrBadhdl   nfsstat = 10001
	nfsErrNotSync  nfsstat = 10002
	nfsErrBadCook  nfsstat = 10003
	nfsErrNotsupp  nfsstat = 10004
	nfsErrToosmall nfsstat = 10005
	nfsErrServer   nfsstat = 10006
	nfsErrBadtype  nfsstat = 10007
)

// Transfer sizes advertised in FSINFO.
const (
	maxIO     = 1 << 20
	maxName   = snapstore.MaxNameLen
	maxPath   = 4096
	maxDirRep = 1 << 20
)

// stable_how
const (
	unstable = 0
	dataSync = 1
	fileSync = 2
)

// Options are an export's policy.
type Options struct {
	Logger     *slog.Logger
	ReadOnly   bool
	RootSquash bool // uid 0 becomes AnonUID
	AllSquash  bool // every uid becomes AnonUID
	AnonUID    uint32
	AnonGID    uint32
	Access     Access // who may call; refused calls get AUTH_TOOWEAK and a log line
}

// NFS serves NFSv3 over a datastore's live namespace.
type NFS struct {
	ds   *snapstore.Datastore
	ns   *snapstore.Namespace
	fsid uint64
	verf [8]byte // write verifier: changes at every start, so clients resend unstable writes after a restart
	opts Options
	log  *slog.Logger
	boot time.Time
}

// NewNFS serves ds.
func NewNFS(ds *snapstore.Datastore, o Options) *NFS {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AnonUID == 0 && o.AnonGID == 0 {
		o.AnonUID, o.AnonGID = 65534, 65534
	}
	n := &NFS{ds: ds, ns: ds.NS, fsid: ds.Blocks.ID(), opts: o, log: o.Logger, boot: time.Now()}
	rand.Read(n.verf[:])
	return n
}

// RootHandle is the handle of the datastore's root directory.
func (n *NFS) RootHandle() []byte {
	return Handle{FSID: n.fsid, Ino: snapstore.RootIno, Gen: 1}.encode()
}

// cred is the caller's identity after squashing.
type cred struct {
	uid, gid uint32
	gids     []uint32
}

func (n *NFS) credOf(c *Call) cred {
	cr := cred{uid: n.opts.AnonUID, gid: n.opts.AnonGID}
	if c.Unix != nil {
		cr = cred{uid: c.Unix.UID, gid: c.Unix.GID, gids: c.Unix.GIDs}
	}
	if n.opts.AllSquash || (n.opts.RootSquash && cr.uid == 0) {
		cr = cred{uid: n.opts.AnonUID, gid: n.opts.AnonGID}
	}
	return cr
}

func (cr cred) inGroup(g uint32) bool {
	if cr.gid == g {
		return true
	}
	for _, x := range cr.gids {
		if x == g {
			return true
		}
	}
	return false
}

// may reports whether cr has the rwx bits want (4, 2, 1) on a.
func (cr cred) may(a snapstore.Attr, want uint32) bool {
	if cr.uid == 0 {
		// root may do anything but execute a file nobody may execute
		return want&1 == 0 || a.Type == snapstore.TypeDir || a.Mode&0o111 != 0
	}
	var bits uint32
	switch {
	case cr.uid == a.UID:
		bits = a.Mode >> 6
	case cr.inGroup(a.GID):
		bits = a.Mode >> 3
	default:
		bits = a.Mode
	}
	return bits&7&want == want
}

// statusOf maps an error to its NFS status, logging the unexpected.
func (n *NFS) statusOf(err error) nfsstat {
	switch {
	case err == nil:
		return nfsOK
	case errors.Is(err, snapstore.ErrNotExist):
		return nfsErrNoent
	case errors.Is(err, snapstore.ErrExist):
		return nfsErrExist
	case errors.Is(err, snapstore.ErrNotDir):
		return nfsErrNotdir
	case errors.Is(err, snapstore.ErrIsDir):
		return nfsErrIsdir
	case errors.Is(err, snapstore.ErrNotEmpty):
		return nfsErrNotempty
	case errors.Is(err, snapstore.ErrNameTooLong):
		return nfsErrNametool
	case errors.Is(err, snapstore.ErrInvalid):
		return nfsErrInval
	case errors.Is(err, snapstore.ErrStale):
		return nfsErrStale
	case errors.Is(err, snapstore.ErrNotSupp):
		return nfsErrNotsupp
	case errors.Is(err, snapstore.ErrChanged):
		return nfsErrNotSync
	case errors.Is(err, blockstore.ErrNoSpace):
		return nfsErrNospc
	case errors.Is(err, blockstore.ErrTooLarge):
		return nfsErrFbig
	case errors.Is(err, blockstore.ErrCorrupt):
		n.log.Error("nfs: corrupt data", "err", err)
		return nfsErrIO
	}
	n.log.Error("nfs: operation failed", "err", err)
	return nfsErrIO
}

// Program returns the NFS program for an RPC server.
func (n *NFS) Program() *Program {
	return &Program{
		Prog: ProgNFS, Low: 3, High: 3,
		Serve: n.serve,
		NonIdempotent: func(_, proc uint32) bool {
			switch proc {
			case nfsCreate, nfsMkdir, nfsSymlink, nfsMknod, nfsRemove, nfsRmdir, nfsRename, nfsLink, nfsSetattr:
				return true
			}
			return false
		},
	}
}

// req is one decoded call in progress.
type req struct {
	n  *NFS
	c  *Call
	r  *XDRReader
	w  *XDRWriter
	cr cred
}

func (n *NFS) serve(ctx context.Context, c *Call, w *XDRWriter) (AcceptStat, error) {
	if !n.opts.Access.Allowed(c.Remote) {
		n.log.Warn("nfs: call refused", "client", c.Remote.String(), "proc", procName(c.Proc))
		return 0, &AuthError{Stat: AuthTooWeak}
	}
	q := &req{n: n, c: c, r: c.Args, w: w, cr: n.credOf(c)}
	if c.Proc != nfsNull && isSnapHandle(c.Args.Remaining()) {
		return q.snapServe()
	}
	var st nfsstat
	switch c.Proc {
	case nfsNull:
		return AcceptSuccess, nil
	case nfsGetattr:
		return q.getattr()
	case nfsSetattr:
		return q.setattr()
	case nfsLookup:
		return q.lookup()
	case nfsAccess:
		return q.access()
	case nfsReadlink:
		return q.readlink()
	case nfsRead:
		return q.read()
	case nfsWrite:
		return q.write()
	case nfsCreate:
		return q.create()
	case nfsMkdir:
		return q.mkdir()
	case nfsSymlink:
		return q.symlink()
	case nfsMknod:
		return q.mknod()
	case nfsRemove, nfsRmdir:
		return q.remove(c.Proc == nfsRmdir)
	case nfsRename:
		return q.rename()
	case nfsLink:
		return q.link()
	case nfsReaddir:
		return q.readdir(false)
	case nfsReaddirplus:
		return q.readdir(true)
	case nfsFsstat:
		return q.fsstat()
	case nfsFsinfo:
		return q.fsinfo()
	case nfsPathconf:
		return q.pathconf()
	case nfsCommit:
		return q.commit()
	default:
		_ = st
		return AcceptProcUnavail, nil
	}
}

// handle decodes a file handle argument. A malformed handle, or one from
// another datastore, is stale: the client drops it; the connection stays.
func (q *req) handle() (snapstore.Ino, nfsstat, bool) {
	b := q.r.Opaque(64)
	if q.r.Err() != nil {
		return 0, 0, false
	}
	h, ok := decodeHandle(b)
	if !ok || h.FSID != q.n.fsid {
		return 0, nfsErrStale, true
	}
	if h.NS != nsLive {
		// A snapstore handle where a live one belongs: the second
		// handle of RENAME or LINK, across the two exports.
		return 0, nfsErrXdev, true
	}
	a, err := q.n.ns.GetAttr(h.Ino)
	if err != nil || a.Gen != h.Gen {
		return 0, nfsErrStale, true
	}
	return h.Ino, nfsOK, true
}

func (q *req) putHandle(ino snapstore.Ino, gen uint32) {
	q.w.Opaque(Handle{FSID: q.n.fsid, Ino: ino, Gen: gen}.encode())
}

func putTime(w *XDRWriter, t time.Time) {
	w.Uint32(uint32(t.Unix()))
	w.Uint32(uint32(t.Nanosecond()))
}

// putFattr writes a fattr3.
func (q *req) putFattr(a snapstore.Attr) {
	w := q.w
	w.Uint32(uint32(a.Type))
	w.Uint32(a.Mode)
	w.Uint32(a.Nlink)
	w.Uint32(a.UID)
	w.Uint32(a.GID)
	w.Uint64(a.Size)
	w.Uint64(a.Used)
	w.Uint32(a.Major)
	w.Uint32(a.Minor)
	w.Uint64(q.n.fsid)
	w.Uint64(uint64(a.Ino))
	putTime(w, a.Atime)
	putTime(w, a.Mtime)
	putTime(w, a.Ctime)
}

// postOp writes post_op_attr for ino.
func (q *req) postOp(ino snapstore.Ino) {
	a, err := q.n.ns.GetAttr(ino)
	if err != nil {
		q.w.Bool(false)
		return
	}
	q.w.Bool(true)
	q.putFattr(a)
}

// preOp captures pre_op_attr.
type preOp struct {
	ok    bool
	size  uint64
	mtime time.Time
	ctime time.Time
}

func (q *req) pre(ino snapstore.Ino) preOp {
	a, err := q.n.ns.GetAttr(ino)
	if err != nil {
		return preOp{}
	}
	return preOp{ok: true, size: a.Size, mtime: a.Mtime, ctime: a.Ctime}
}

// wcc writes wcc_data: the attributes before and after.
func (q *req) wcc(p preOp, ino snapstore.Ino) {
	q.w.Bool(p.ok)
	if p.ok {
		q.w.Uint64(p.size)
		putTime(q.w, p.mtime)
		putTime(q.w, p.ctime)
	}
	q.postOp(ino)
}

// garbage reports undecodable arguments (the server drops what was
// written to w).
func (q *req) garbage() (AcceptStat, error) {
	return AcceptGarbageArgs, nil
}

func (q *req) getattr() (AcceptStat, error) {
	ino, st, ok := q.handle()
	if !ok {
		return q.garbage()
	}
	if st != nfsOK {
		q.w.Uint32(uint32(st))
		return AcceptSuccess, nil
	}
	a, err := q.n.ns.GetAttr(ino)
	if st = q.n.statusOf(err); st != nfsOK {
		q.w.Uint32(uint32(st))
		return AcceptSuccess, nil
	}
	q.w.Uint32(uint32(nfsOK))
	q.putFattr(a)
	return AcceptSuccess, nil
}

// sattr3
type sattr struct {
	args    snapstore.SetAttrArgs
	setTime bool // a time set to the server's clock (needs write permission only)
}

func (q *req) sattr() sattr {
	var s sattr
	r := q.r
	if r.Bool() {
		v := r.Uint32() & 0o7777
		s.args.Mode = &v
	}
	if r.Bool() {
		v := r.Uint32()
		s.args.UID = &v
	}
	if r.Bool() {
		v := r.Uint32()
		s.args.GID = &v
	}
	if r.Bool() {
		v := r.Uint64()
		s.args.Size = &v
	}
	for _, dst := range []**time.Time{&s.args.Atime, &s.args.Mtime} {
		switch r.Uint32() {
		case 1: // SET_TO_SERVER_TIME
			t := time.Now()
			*dst = &t
			s.setTime = true
		case 2: // SET_TO_CLIENT_TIME
			sec, nsec := r.Uint32(), r.Uint32()
			t := time.Unix(int64(sec), int64(nsec%1e9))
			*dst = &t
		}
	}
	return s
}

// mayChange checks SETATTR permissions: the owner (or root) may change
// mode and times; only root may give a file away; a size change needs write
// permission.
func (q *req) mayChange(a snapstore.Attr, s sattr) bool {
	cr := q.cr
	if cr.uid == 0 {
		return true
	}
	owner := cr.uid == a.UID
	if s.args.UID != nil && *s.args.UID != a.UID {
		return false
	}
	if s.args.GID != nil && *s.args.GID != a.GID && !(owner && cr.inGroup(*s.args.GID)) {
		return false
	}
	if s.args.Mode != nil && !owner {
		return false
	}
	if (s.args.Atime != nil || s.args.Mtime != nil) && !owner && !(s.setTime && cr.may(a, 2)) {
		return false
	}
	if s.args.Size != nil && !owner && !cr.may(a, 2) {
		return false
	}
	return true
}

func (q *req) setattr() (AcceptStat, error) {
	ino, st, ok := q.handle()
	s := q.sattr()
	var guard *time.Time
	if q.r.Bool() {
		t := time.Unix(int64(q.r.Uint32()), int64(q.r.Uint32()))
		guard = &t
	}
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	p := q.pre(ino)
	if st == nfsOK && q.n.opts.ReadOnly {
		st = nfsErrRofs
	}
	if st == nfsOK {
		a, err := q.n.ns.GetAttr(ino)
		switch {
		case err != nil:
			st = q.n.statusOf(err)
		case !q.mayChange(a, s):
			st = nfsErrPerm
		default:
			s.args.GuardCtime = guard
			_, err = q.n.ns.SetAttr(ino, s.args)
			st = q.n.statusOf(err)
		}
	}
	q.w.Uint32(uint32(st))
	q.wcc(p, ino)
	return AcceptSuccess, nil
}

// dirop decodes diropargs3 (a directory handle and a name).
func (q *req) dirop() (snapstore.Ino, string, nfsstat, bool) {
	dir, st, ok := q.handle()
	// Read names up to a path's length, so an overlong one is answered
	// NAMETOOLONG rather than as undecodable.
	name := q.r.String(maxPath)
	if !ok || q.r.Err() != nil {
		return 0, "", 0, false
	}
	if st == nfsOK && len(name) > maxName {
		st = nfsErrNametool
	}
	return dir, name, st, true
}

// dirAttr returns a directory's attributes, checking the caller may do
// want (rwx bits) in it.
func (q *req) dirPerm(dir snapstore.Ino, want uint32) nfsstat {
	a, err := q.n.ns.GetAttr(dir)
	if err != nil {
		return q.n.statusOf(err)
	}
	if a.Type != snapstore.TypeDir {
		return nfsErrNotdir
	}
	if !q.cr.may(a, want) {
		return nfsErrAcces
	}
	return nfsOK
}

func (q *req) lookup() (AcceptStat, error) {
	dir, name, st, ok := q.dirop()
	if !ok {
		return q.garbage()
	}
	if st == nfsOK {
		st = q.dirPerm(dir, 1)
	}
	var a snapstore.Attr
	if st == nfsOK {
		var err error
		a, err = q.n.ns.Lookup(dir, name)
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	if st != nfsOK {
		q.postOp(dir)
		return AcceptSuccess, nil
	}
	q.putHandle(a.Ino, a.Gen)
	q.w.Bool(true)
	q.putFattr(a)
	q.postOp(dir)
	return AcceptSuccess, nil
}

// ACCESS bits
const (
	accRead    = 0x01
	accLookup  = 0x02
	accModify  = 0x04
	accExtend  = 0x08
	accDelete  = 0x10
	accExecute = 0x20
)

func (q *req) access() (AcceptStat, error) {
	ino, st, ok := q.handle()
	want := q.r.Uint32()
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	var a snapstore.Attr
	if st == nfsOK {
		var err error
		a, err = q.n.ns.GetAttr(ino)
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	if st != nfsOK {
		q.w.Bool(false)
		return AcceptSuccess, nil
	}
	var got uint32
	if q.cr.may(a, 4) {
		got |= accRead
	}
	if q.cr.may(a, 2) && !q.n.opts.ReadOnly {
		got |= accModify | accExtend
		if a.Type == snapstore.TypeDir {
			got |= accDelete
		}
	}
	if q.cr.may(a, 1) {
		if a.Type == snapstore.TypeDir {
			got |= accLookup
		} else {
			got |= accExecute
		}
	}
	q.w.Bool(true)
	q.putFattr(a)
	q.w.Uint32(got & want)
	return AcceptSuccess, nil
}

func (q *req) readlink() (AcceptStat, error) {
	ino, st, ok := q.handle()
	if !ok {
		return q.garbage()
	}
	var target string
	if st == nfsOK {
		var err error
		target, err = q.n.ns.Readlink(ino)
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	q.postOp(ino)
	if st == nfsOK {
		q.w.String(target)
	}
	return AcceptSuccess, nil
}

func (q *req) read() (AcceptStat, error) {
	ino, st, ok := q.handle()
	off := q.r.Uint64()
	count := q.r.Uint32()
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	if count > maxIO {
		count = maxIO
	}
	var a snapstore.Attr
	if st == nfsOK {
		var err error
		a, err = q.n.ns.GetAttr(ino)
		st = q.n.statusOf(err)
		if st == nfsOK && a.Type != snapstore.TypeReg {
			st = nfsErrInval
			if a.Type == snapstore.TypeDir {
				st = nfsErrIsdir
			}
		}
		// The owner may read what it opened, whatever the mode says now.
		if st == nfsOK && q.cr.uid != a.UID && !q.cr.may(a, 4) {
			st = nfsErrAcces
		}
	}
	if st != nfsOK {
		q.w.Uint32(uint32(st))
		q.postOp(ino)
		return AcceptSuccess, nil
	}
	if off > uint64(blockstore.MaxVolumeSize) {
		off = uint64(blockstore.MaxVolumeSize)
	}
	// The data goes straight into the reply: status, attributes, count,
	// eof, then the opaque, shrunk to what was read.
	mark := q.w.Len()
	q.w.Uint32(uint32(nfsOK))
	q.postOp(ino)
	countAt := q.w.Reserve()
	eofAt := q.w.Reserve()
	lenAt := q.w.Len()
	buf := q.w.OpaqueSpace(int(count))
	n, eof, err := q.n.ns.Read(ino, buf, int64(off))
	if err != nil {
		q.w.Truncate(mark)
		q.w.Uint32(uint32(q.n.statusOf(err)))
		q.postOp(ino)
		return AcceptSuccess, nil
	}
	q.w.PutUint32At(countAt, uint32(n))
	if eof {
		q.w.PutUint32At(eofAt, 1)
	}
	q.w.PutUint32At(lenAt, uint32(n))
	end := lenAt + 4 + n
	q.w.Truncate(end)
	q.w.buf = append(q.w.buf, zeroPad[:pad(n)]...)
	return AcceptSuccess, nil
}

func (q *req) write() (AcceptStat, error) {
	ino, st, ok := q.handle()
	off := q.r.Uint64()
	count := q.r.Uint32()
	how := q.r.Uint32()
	data := q.r.Opaque(maxIO)
	if !ok || q.r.Err() != nil || how > fileSync {
		return q.garbage()
	}
	if uint32(len(data)) < count {
		return q.garbage()
	}
	data = data[:count]
	p := q.pre(ino)
	if st == nfsOK && q.n.opts.ReadOnly {
		st = nfsErrRofs
	}
	if st == nfsOK {
		a, err := q.n.ns.GetAttr(ino)
		st = q.n.statusOf(err)
		if st == nfsOK && a.Type != snapstore.TypeReg {
			st = nfsErrInval
			if a.Type == snapstore.TypeDir {
				st = nfsErrIsdir
			}
		}
		if st == nfsOK && q.cr.uid != a.UID && !q.cr.may(a, 2) {
			st = nfsErrAcces
		}
	}
	if st == nfsOK {
		if off > uint64(blockstore.MaxVolumeSize) {
			st = nfsErrFbig
		} else {
			_, err := q.n.ns.Write(ino, data, int64(off), how != unstable)
			st = q.n.statusOf(err)
		}
	}
	q.w.Uint32(uint32(st))
	q.wcc(p, ino)
	if st == nfsOK {
		q.w.Uint32(count)
		if how == unstable {
			q.w.Uint32(unstable)
		} else {
			q.w.Uint32(fileSync)
		}
		q.w.FixedOpaque(q.n.verf[:])
	}
	return AcceptSuccess, nil
}

// modifying reports whether a directory operation may go ahead: the export
// is writable and the caller may write and search the directory.
func (q *req) modifying(dir snapstore.Ino) nfsstat {
	if q.n.opts.ReadOnly {
		return nfsErrRofs
	}
	return q.dirPerm(dir, 3)
}

// newResult writes a diropres3 for a made inode.
func (q *req) newResult(st nfsstat, a snapstore.Attr, p preOp, dir snapstore.Ino) {
	q.w.Uint32(uint32(st))
	if st == nfsOK {
		q.w.Bool(true)
		q.putHandle(a.Ino, a.Gen)
		q.w.Bool(true)
		q.putFattr(a)
	}
	q.wcc(p, dir)
}

func (q *req) newAttr(s sattr) snapstore.NewAttr {
	na := snapstore.NewAttr{Mode: 0o644, UID: q.cr.uid, GID: q.cr.gid}
	if s.args.Mode != nil {
		na.Mode = *s.args.Mode
	}
	if s.args.UID != nil && q.cr.uid == 0 {
		na.UID = *s.args.UID
	}
	if s.args.GID != nil && (q.cr.uid == 0 || q.cr.inGroup(*s.args.GID)) {
		na.GID = *s.args.GID
	}
	return na
}

func (q *req) create() (AcceptStat, error) {
	dir, name, st, ok := q.dirop()
	mode := q.r.Uint32()
	var s sattr
	var verf [8]byte
	switch mode {
	case 0, 1: // UNCHECKED, GUARDED
		s = q.sattr()
	case 2: // EXCLUSIVE
		copy(verf[:], q.r.FixedOpaque(8))
	default:
		return q.garbage()
	}
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	p := q.pre(dir)
	if st == nfsOK {
		st = q.modifying(dir)
	}
	var a snapstore.Attr
	if st == nfsOK {
		na := q.newAttr(s)
		var created bool
		var err error
		a, created, err = q.n.ns.Create(dir, name, snapstore.CreateHow(mode), verf, na)
		st = q.n.statusOf(err)
		// UNCHECKED over an existing file truncates only when size 0 is
		// asked for; other attributes in the call apply to it too.
		if st == nfsOK && !created && mode == 0 && (s.args.Size != nil || s.args.Mode != nil) {
			if s.args.Size != nil && *s.args.Size != 0 {
				s.args.Size = nil
			}
			if s.args.Size != nil || s.args.Mode != nil {
				if !q.mayChange(a, s) {
					st = nfsErrAcces
				} else {
					a, err = q.n.ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Size: s.args.Size, Mode: s.args.Mode})
					st = q.n.statusOf(err)
				}
			}
		}
		if st == nfsOK && created && (s.args.Size != nil && *s.args.Size != 0) {
			a, err = q.n.ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Size: s.args.Size})
			st = q.n.statusOf(err)
		}
	}
	q.newResult(st, a, p, dir)
	return AcceptSuccess, nil
}

func (q *req) mkdir() (AcceptStat, error) {
	dir, name, st, ok := q.dirop()
	s := q.sattr()
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	p := q.pre(dir)
	if st == nfsOK {
		st = q.modifying(dir)
	}
	var a snapstore.Attr
	if st == nfsOK {
		na := q.newAttr(s)
		if s.args.Mode == nil {
			na.Mode = 0o755
		}
		var err error
		a, err = q.n.ns.Mkdir(dir, name, na)
		st = q.n.statusOf(err)
	}
	q.newResult(st, a, p, dir)
	return AcceptSuccess, nil
}

func (q *req) symlink() (AcceptStat, error) {
	dir, name, st, ok := q.dirop()
	s := q.sattr()
	target := q.r.String(maxPath)
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	p := q.pre(dir)
	if st == nfsOK {
		st = q.modifying(dir)
	}
	var a snapstore.Attr
	if st == nfsOK {
		na := q.newAttr(s)
		if s.args.Mode == nil {
			na.Mode = 0o777
		}
		var err error
		a, err = q.n.ns.Symlink(dir, name, target, na)
		st = q.n.statusOf(err)
	}
	q.newResult(st, a, p, dir)
	return AcceptSuccess, nil
}

func (q *req) mknod() (AcceptStat, error) {
	dir, name, st, ok := q.dirop()
	t := snapstore.FileType(q.r.Uint32())
	var s sattr
	var major, minor uint32
	switch t {
	case snapstore.TypeChr, snapstore.TypeBlk:
		s = q.sattr()
		major, minor = q.r.Uint32(), q.r.Uint32()
	case snapstore.TypeSock, snapstore.TypeFifo:
		s = q.sattr()
	default:
		if !ok || q.r.Err() != nil {
			return q.garbage()
		}
		p := q.pre(dir)
		q.newResult(nfsErrBadtype, snapstore.Attr{}, p, dir)
		return AcceptSuccess, nil
	}
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	p := q.pre(dir)
	if st == nfsOK {
		st = q.modifying(dir)
	}
	if st == nfsOK && (t == snapstore.TypeChr || t == snapstore.TypeBlk) && q.cr.uid != 0 {
		st = nfsErrPerm
	}
	var a snapstore.Attr
	if st == nfsOK {
		var err error
		a, err = q.n.ns.Mknod(dir, name, t, major, minor, q.newAttr(s))
		st = q.n.statusOf(err)
	}
	q.newResult(st, a, p, dir)
	return AcceptSuccess, nil
}

// sticky reports whether the sticky bit of dir forbids the caller to
// remove or rename name.
func (q *req) sticky(dir snapstore.Ino, name string) bool {
	if q.cr.uid == 0 {
		return false
	}
	d, err := q.n.ns.GetAttr(dir)
	if err != nil || d.Mode&0o1000 == 0 || d.UID == q.cr.uid {
		return false
	}
	a, err := q.n.ns.Lookup(dir, name)
	return err == nil && a.UID != q.cr.uid
}

func (q *req) remove(rmdir bool) (AcceptStat, error) {
	dir, name, st, ok := q.dirop()
	if !ok {
		return q.garbage()
	}
	p := q.pre(dir)
	if st == nfsOK {
		st = q.modifying(dir)
	}
	if st == nfsOK && q.sticky(dir, name) {
		st = nfsErrAcces
	}
	if st == nfsOK {
		var err error
		if rmdir {
			err = q.n.ns.Rmdir(dir, name)
		} else {
			err = q.n.ns.Remove(dir, name)
		}
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	q.wcc(p, dir)
	return AcceptSuccess, nil
}

func (q *req) rename() (AcceptStat, error) {
	from, fname, st1, ok1 := q.dirop()
	to, tname, st2, ok2 := q.dirop()
	if !ok1 || !ok2 {
		return q.garbage()
	}
	fp, tp := q.pre(from), q.pre(to)
	st := st1
	if st == nfsOK {
		st = st2
	}
	if st == nfsOK {
		st = q.modifying(from)
	}
	if st == nfsOK {
		st = q.modifying(to)
	}
	if st == nfsOK && (q.sticky(from, fname) || q.sticky(to, tname)) {
		st = nfsErrAcces
	}
	if st == nfsOK {
		st = q.n.statusOf(q.n.ns.Rename(from, fname, to, tname))
	}
	q.w.Uint32(uint32(st))
	q.wcc(fp, from)
	q.wcc(tp, to)
	return AcceptSuccess, nil
}

func (q *req) link() (AcceptStat, error) {
	ino, st, ok := q.handle()
	dir, name, st2, ok2 := q.dirop()
	if !ok || !ok2 {
		return q.garbage()
	}
	if st == nfsOK {
		st = st2
	}
	p := q.pre(dir)
	if st == nfsOK {
		st = q.modifying(dir)
	}
	if st == nfsOK {
		_, err := q.n.ns.Link(ino, dir, name)
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	q.postOp(ino)
	q.wcc(p, dir)
	return AcceptSuccess, nil
}

// cookieVerf is the READDIR cookie verifier: cookies never change meaning,
// so one constant serves every directory.
var cookieVerf = [8]byte{'d', 's', 't', 'o', 'r', 'e', 0, 1}

func (q *req) readdir(plus bool) (AcceptStat, error) {
	dir, st, ok := q.handle()
	cookie := q.r.Uint64()
	q.r.FixedOpaque(8) // verifier: cookies are stable, so any is accepted
	count := q.r.Uint32()
	maxCount := count
	if plus {
		maxCount = q.r.Uint32()
	}
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	if st == nfsOK {
		st = q.dirPerm(dir, 4)
	}
	q.w.Uint32(uint32(st))
	if st != nfsOK {
		q.postOp(dir)
		return AcceptSuccess, nil
	}
	budget := int(min(maxCount, maxDirRep))
	if budget < 128 {
		q.w.Truncate(q.w.Len() - 4)
		q.w.Uint32(uint32(nfsErrToosmall))
		q.postOp(dir)
		return AcceptSuccess, nil
	}
	start := q.w.Len()
	q.postOp(dir)
	q.w.FixedOpaque(cookieVerf[:])
	// Cookies 1 and 2 are "." and ".."; entries' own cookies are offset by 2.
	type ent struct {
		name   string
		ino    snapstore.Ino
		cookie uint64
	}
	var list []ent
	if cookie == 0 {
		list = append(list, ent{".", dir, 1})
	}
	if cookie <= 1 {
		if a, err := q.n.ns.Lookup(dir, ".."); err == nil {
			list = append(list, ent{"..", a.Ino, 2})
		}
	}
	after := uint64(0)
	if cookie > 2 {
		after = cookie - 2
	}
	ents, eof, err := q.n.ns.ReadDir(dir, after, budget/32+2)
	if err != nil {
		q.w.Truncate(start - 4)
		q.w.Uint32(uint32(q.n.statusOf(err)))
		q.postOp(dir)
		return AcceptSuccess, nil
	}
	for _, e := range ents {
		list = append(list, ent{e.Name, e.Ino, e.Cookie + 2})
	}
	wrote := 0
	for _, e := range list {
		mark := q.w.Len()
		q.w.Bool(true)
		q.w.Uint64(uint64(e.ino))
		q.w.String(e.name)
		q.w.Uint64(e.cookie)
		if plus {
			if a, err := q.n.ns.GetAttr(e.ino); err == nil {
				q.w.Bool(true)
				q.putFattr(a)
				q.w.Bool(true)
				q.putHandle(a.Ino, a.Gen)
			} else {
				q.w.Bool(false)
				q.w.Bool(false)
			}
		}
		if q.w.Len()-start+8 > budget {
			q.w.Truncate(mark)
			eof = false
			break
		}
		wrote++
	}
	if wrote == 0 && len(list) > 0 {
		q.w.Truncate(start - 4)
		q.w.Uint32(uint32(nfsErrToosmall))
		q.postOp(dir)
		return AcceptSuccess, nil
	}
	q.w.Bool(false)
	q.w.Bool(eof && wrote == len(list))
	return AcceptSuccess, nil
}

func (q *req) fsstat() (AcceptStat, error) {
	ino, st, ok := q.handle()
	if !ok {
		return q.garbage()
	}
	var c blockstore.Capacity
	if st == nfsOK {
		var err error
		c, err = q.n.ds.Blocks.Capacity()
		st = q.n.statusOf(err)
	}
	q.w.Uint32(uint32(st))
	q.postOp(ino)
	if st == nfsOK {
		q.fsstatBody(c)
	}
	return AcceptSuccess, nil
}

// fsstatBody writes FSSTAT's results after the attributes.
func (q *req) fsstatBody(c blockstore.Capacity) {
	q.w.Uint64(c.Total)
	q.w.Uint64(c.Free)
	q.w.Uint64(c.Avail)
	q.w.Uint64(c.Files)
	q.w.Uint64(c.FreeFiles)
	q.w.Uint64(c.FreeFiles)
	q.w.Uint32(0) // invarsec
}

func (q *req) fsinfo() (AcceptStat, error) {
	ino, st, ok := q.handle()
	if !ok {
		return q.garbage()
	}
	q.w.Uint32(uint32(st))
	q.postOp(ino)
	if st == nfsOK {
		q.fsinfoBody(true)
	}
	return AcceptSuccess, nil
}

// fsinfoBody writes FSINFO's results after the attributes; setTime says
// whether the export can set times (the read-only snapstore cannot).
func (q *req) fsinfoBody(setTime bool) {
	bs := uint32(q.n.ds.Blocks.BlockSize())
	q.w.Uint32(maxIO) // rtmax
	q.w.Uint32(maxIO) // rtpref
	q.w.Uint32(bs)    // rtmult
	q.w.Uint32(maxIO) // wtmax
	q.w.Uint32(maxIO) // wtpref
	q.w.Uint32(bs)    // wtmult
	q.w.Uint32(64 << 10)
	q.w.Uint64(uint64(blockstore.MaxVolumeSize))
	q.w.Uint32(0) // time_delta: nanoseconds
	q.w.Uint32(1)
	// properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME
	props := uint32(0x0001 | 0x0002 | 0x0008)
	if setTime {
		props |= 0x0010
	}
	q.w.Uint32(props)
}

func (q *req) pathconf() (AcceptStat, error) {
	ino, st, ok := q.handle()
	if !ok {
		return q.garbage()
	}
	q.w.Uint32(uint32(st))
	q.postOp(ino)
	if st == nfsOK {
		q.pathconfBody()
	}
	return AcceptSuccess, nil
}

// pathconfBody writes PATHCONF's results after the attributes.
func (q *req) pathconfBody() {
	q.w.Uint32(1 << 16) // linkmax
	q.w.Uint32(maxName)
	q.w.Bool(true)  // no_trunc
	q.w.Bool(true)  // chown_restricted
	q.w.Bool(false) // case_insensitive
	q.w.Bool(true)  // case_preserving
}

func (q *req) commit() (AcceptStat, error) {
	ino, st, ok := q.handle()
	q.r.Uint64() // offset and count: everything is committed
	q.r.Uint32()
	if !ok || q.r.Err() != nil {
		return q.garbage()
	}
	p := q.pre(ino)
	if st == nfsOK {
		st = q.n.statusOf(q.n.ns.Commit(ino))
	}
	q.w.Uint32(uint32(st))
	q.wcc(p, ino)
	if st == nfsOK {
		q.w.FixedOpaque(q.n.verf[:])
	}
	return AcceptSuccess, nil
}

// String names a procedure for logs.
func procName(p uint32) string {
	names := []string{"NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ", "WRITE", "CREATE",
		"MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK", "READDIR", "READDIRPLUS", "FSSTAT",
		"FSINFO", "PATHCONF", "COMMIT"}
	if int(p) < len(names) {
		return names[p]
	}
	return fmt.Sprintf("PROC%d", p)
}
