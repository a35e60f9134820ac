package nfsfs

// Protocol tests of NFSv3 and MOUNT v3 over real TCP loopback against a
// real datastore, through a small NFSv3 client (nfsClient below) on the
// package's RPC Client. The client decodes every reply strictly: a reply
// with bytes missing or left over is an error, so a wrong reply layout
// fails the test that provoked it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

var (
	nfsTestLog = flag.Bool("nfs.log", false, "log the NFS test servers to stderr")
	nfsHugeDir = flag.Int("nfs.hugedir", 0, "entries of TestNFSReaddirHuge's directory (0: 100,000, a fifth under -race)")
)

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func nfsTestLogger() *slog.Logger {
	if *nfsTestLog {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// ---- server fixture ----

// nfsEnv is a datastore in a temporary directory served over loopback:
// NFS and MOUNT on one port, as `dstore serve` wires them.
type nfsEnv struct {
	t    testing.TB
	dir  string
	opts Options
	ds   *snapstore.Datastore
	nfs  *NFS
	srv  *Server
	addr string // host:port of NFS and MOUNT
}

func newNFSEnv(t testing.TB, o Options) *nfsEnv {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &nfsEnv{t: t, dir: dir, opts: o}
	e.start("127.0.0.1:0")
	t.Cleanup(e.stop)
	return e
}

// start opens the datastore if it is closed and serves it on addr (a port
// just freed by stop may take a moment to be free again).
func (e *nfsEnv) start(addr string) {
	e.t.Helper()
	if e.ds == nil {
		ds, err := snapstore.Open(e.dir, blockstore.Options{Logger: nfsTestLogger()})
		if err != nil {
			e.t.Fatal(err)
		}
		e.ds = ds
	}
	o := e.opts
	o.Logger = nfsTestLogger()
	e.nfs = NewNFS(e.ds, o)
	e.srv = NewServer(ServerOptions{Logger: nfsTestLogger()})
	e.srv.Register(e.nfs.Program())
	e.srv.Register(NewMount(e.nfs, o.Access).Program())
	l := listenRetry(e.t, addr)
	e.addr = l.Addr().String()
	go e.srv.Serve(l)
}

func listenRetry(t testing.TB, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sibling serves the same datastore with other options (another export
// policy) on another port, and returns that port's address.
func (e *nfsEnv) sibling(o Options) string {
	e.t.Helper()
	o.Logger = nfsTestLogger()
	n := NewNFS(e.ds, o)
	srv := NewServer(ServerOptions{Logger: nfsTestLogger()})
	srv.Register(n.Program())
	srv.Register(NewMount(n, o.Access).Program())
	l := listenRetry(e.t, "127.0.0.1:0")
	go srv.Serve(l)
	e.t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// stopServer shuts the server down gracefully; the datastore stays open.
func (e *nfsEnv) stopServer() {
	if e.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		e.t.Errorf("server shutdown: %v", err)
	}
	e.srv = nil
}

func (e *nfsEnv) stop() {
	e.stopServer()
	if e.ds != nil {
		if err := e.ds.Close(); err != nil {
			e.t.Errorf("datastore close: %v", err)
		}
		e.ds = nil
	}
}

// restart stops the server, closes the datastore, reopens it and serves it
// again on the same address.
func (e *nfsEnv) restart() {
	e.t.Helper()
	addr := e.addr
	e.stop()
	e.start(addr)
}

func rootCred() *AuthUnix { return &AuthUnix{Machine: "dstore-test", UID: 0, GID: 0} }

func userCred(uid, gid uint32, gids ...uint32) *AuthUnix {
	return &AuthUnix{Machine: "dstore-test", UID: uid, GID: gid, GIDs: gids}
}

// dial connects a client as cred (nil: AUTH_NONE).
func (e *nfsEnv) dial(cred *AuthUnix) *nfsClient {
	e.t.Helper()
	return dialNFS(e.t, e.addr, ClientOptions{Cred: cred})
}

func (e *nfsEnv) root() []byte { return e.nfs.RootHandle() }

// ---- client ----

// rpcCaller is what nfsClient sends calls through: a *Client, or the
// reconnecting connection of the ESXi-like test.
type rpcCaller interface {
	Call(ctx context.Context, prog, vers, proc uint32, args []byte) (*XDRReader, error)
}

// nfsClient encodes NFSv3, MOUNT and PORTMAP calls and decodes their
// replies. It is safe for concurrent use: calls are pipelined on the
// connection.
type nfsClient struct {
	t       testing.TB
	rpc     rpcCaller
	timeout time.Duration
}

func dialNFS(t testing.TB, addr string, o ClientOptions) *nfsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, o)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &nfsClient{t: t, rpc: c, timeout: 30 * time.Second}
}

func (c *nfsClient) conn() *Client { return c.rpc.(*Client) }

func (c *nfsClient) call(prog, vers, proc uint32, enc func(w *XDRWriter)) (*XDRReader, error) {
	w := NewXDRWriter(nil)
	if enc != nil {
		enc(w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.rpc.Call(ctx, prog, vers, proc, w.Bytes())
}

// stRPC marks a call that got no NFS status: the RPC failed (nfsRes.Err).
const stRPC nfsstat = 0xffffffff

var nfsStatNames = map[nfsstat]string{
	nfsOK: "NFS3_OK", nfsErrPerm: "PERM", nfsErrNoent: "NOENT", nfsErrIO: "IO", nfsErrAcces: "ACCES",
	nfsErrExist: "EXIST", nfsErrNotdir: "NOTDIR", nfsErrIsdir: "ISDIR", nfsErrInval: "INVAL", nfsErrFbig: "FBIG",
	nfsErrNospc: "NOSPC", nfsErrRofs: "ROFS", nfsErrNametool: "NAMETOOLONG", nfsErrNotempty: "NOTEMPTY",
	nfsErrStale: "STALE", nfsErrBadhdl: "BADHANDLE", nfsErrNotSync: "NOT_SYNC", nfsErrBadCook: "BAD_COOKIE",
	nfsErrNotsupp: "NOTSUPP", nfsErrToosmall: "TOOSMALL", nfsErrServer: "SERVERFAULT", nfsErrBadtype: "BADTYPE",
	stRPC: "(rpc failed)",
}

func stName(s nfsstat) string {
	if n, ok := nfsStatNames[s]; ok {
		return n
	}
	return fmt.Sprintf("nfsstat(%d)", uint32(s))
}

type nfsTime struct{ Sec, Nsec uint32 }

func (a nfsTime) String() string { return fmt.Sprintf("%d.%09d", a.Sec, a.Nsec) }

// fattr3
type fattr3 struct {
	Type, Mode, Nlink, UID, GID uint32
	Size, Used                  uint64
	Major, Minor                uint32
	FSID, FileID                uint64
	Atime, Mtime, Ctime         nfsTime
}

type wccAttr3 struct {
	Size         uint64
	Mtime, Ctime nfsTime
}

type wccData struct {
	Before *wccAttr3
	After  *fattr3
}

type dirEnt3 struct {
	FileID uint64
	Name   string
	Cookie uint64
	Attr   *fattr3 // READDIRPLUS
	FH     []byte  // READDIRPLUS
}

type fsstat3 struct {
	Tbytes, Fbytes, Abytes, Tfiles, Ffiles, Afiles uint64
	Invarsec                                       uint32
}

type fsinfo3 struct {
	Rtmax, Rtpref, Rtmult, Wtmax, Wtpref, Wtmult, Dtpref uint32
	Maxfilesize                                          uint64
	TimeDelta                                            nfsTime
	Properties                                           uint32
}

type pathconf3 struct {
	Linkmax, NameMax                                          uint32
	NoTrunc, ChownRestricted, CaseInsensitive, CasePreserving bool
}

// nfsRes is the decoded reply of any NFS procedure; which fields are set
// depends on the procedure.
type nfsRes struct {
	Err error // the RPC failed or the reply did not decode; St is stRPC or what decoded
	St  nfsstat

	FH      []byte  // LOOKUP, CREATE, MKDIR, SYMLINK, MKNOD
	Attr    *fattr3 // the object's (post-op) attributes
	DirAttr *fattr3 // LOOKUP, READDIR: the directory's
	Wcc     wccData // SETATTR, WRITE, COMMIT: the object's; the create family, REMOVE, RMDIR, LINK: the directory's; RENAME: from
	ToWcc   wccData // RENAME: to

	Access    uint32
	Target    string
	Count     uint32
	EOF       bool
	Data      []byte
	Committed uint32
	Verf      [8]byte // WRITE, COMMIT: the write verifier; READDIR: the cookie verifier
	Entries   []dirEnt3
	FSStat    fsstat3
	FSInfo    fsinfo3
	Pathconf  pathconf3
}

// check returns nil when the call succeeded with want.
func (r nfsRes) check(want nfsstat) error {
	if r.Err != nil {
		return r.Err
	}
	if r.St != want {
		return fmt.Errorf("status %s, want %s", stName(r.St), stName(want))
	}
	return nil
}

// want fails the test unless the call returned st.
func (r nfsRes) want(t testing.TB, what string, st nfsstat) nfsRes {
	t.Helper()
	if err := r.check(st); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return r
}

func (r nfsRes) ok(t testing.TB, what string) nfsRes {
	t.Helper()
	return r.want(t, what, nfsOK)
}

func getTime(r *XDRReader) nfsTime { return nfsTime{r.Uint32(), r.Uint32()} }

func getFattr(r *XDRReader) *fattr3 {
	a := &fattr3{}
	a.Type, a.Mode, a.Nlink, a.UID, a.GID = r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32()
	a.Size, a.Used = r.Uint64(), r.Uint64()
	a.Major, a.Minor = r.Uint32(), r.Uint32()
	a.FSID, a.FileID = r.Uint64(), r.Uint64()
	a.Atime, a.Mtime, a.Ctime = getTime(r), getTime(r), getTime(r)
	return a
}

func getPostOp(r *XDRReader) *fattr3 {
	if r.Bool() {
		return getFattr(r)
	}
	return nil
}

func getWcc(r *XDRReader) wccData {
	var d wccData
	if r.Bool() {
		d.Before = &wccAttr3{Size: r.Uint64(), Mtime: getTime(r), Ctime: getTime(r)}
	}
	d.After = getPostOp(r)
	return d
}

// maxESXiHandle is the longest handle the ESXi NFSv3 client takes.
const maxESXiHandle = 56

// getFH decodes an nfs_fh3, checking that it suits ESXi.
func getFH(r *XDRReader, res *nfsRes) []byte {
	fh := bytes.Clone(r.Opaque(64))
	if r.Err() == nil && (len(fh) == 0 || len(fh) > maxESXiHandle) && res.Err == nil {
		res.Err = fmt.Errorf("file handle of %d bytes (want 1 to %d)", len(fh), maxESXiHandle)
	}
	return fh
}

// nfs makes an NFSv3 call; dec decodes the results after the status.
func (c *nfsClient) nfs(proc uint32, enc func(w *XDRWriter), dec func(r *XDRReader, res *nfsRes)) nfsRes {
	r, err := c.call(ProgNFS, 3, proc, enc)
	if err != nil {
		return nfsRes{Err: fmt.Errorf("%s: %w", procName(proc), err), St: stRPC}
	}
	res := nfsRes{St: nfsstat(r.Uint32())}
	if dec != nil {
		dec(r, &res)
	}
	if err := r.DoneExact(); err != nil && res.Err == nil {
		res.Err = fmt.Errorf("%s reply (%s): %w", procName(proc), stName(res.St), err)
	}
	return res
}

// sattr3: nil fields are not set; a time is set to the client's value, or
// to the server's clock with AtimeNow/MtimeNow.
type sattr3 struct {
	Mode, UID, GID     *uint32
	Size               *uint64
	Atime, Mtime       *nfsTime
	AtimeNow, MtimeNow bool
}

func nfsRef[T any](v T) *T { return &v }

func (s sattr3) put(w *XDRWriter) {
	u32 := func(p *uint32) {
		w.Bool(p != nil)
		if p != nil {
			w.Uint32(*p)
		}
	}
	u32(s.Mode)
	u32(s.UID)
	u32(s.GID)
	w.Bool(s.Size != nil)
	if s.Size != nil {
		w.Uint64(*s.Size)
	}
	for _, x := range []struct {
		now bool
		t   *nfsTime
	}{{s.AtimeNow, s.Atime}, {s.MtimeNow, s.Mtime}} {
		switch {
		case x.now:
			w.Uint32(1) // SET_TO_SERVER_TIME
		case x.t != nil:
			w.Uint32(2) // SET_TO_CLIENT_TIME
			w.Uint32(x.t.Sec)
			w.Uint32(x.t.Nsec)
		default:
			w.Uint32(0) // DONT_CHANGE
		}
	}
}

func dirop(w *XDRWriter, dir []byte, name string) {
	w.Opaque(dir)
	w.String(name)
}

func (c *nfsClient) null() error {
	_, err := c.call(ProgNFS, 3, nfsNull, nil)
	return err
}

func (c *nfsClient) getattr(fh []byte) nfsRes {
	return c.nfs(nfsGetattr, func(w *XDRWriter) { w.Opaque(fh) }, func(r *XDRReader, res *nfsRes) {
		if res.St == nfsOK {
			res.Attr = getFattr(r)
		}
	})
}

func (c *nfsClient) setattr(fh []byte, s sattr3, guard *nfsTime) nfsRes {
	return c.nfs(nfsSetattr, func(w *XDRWriter) {
		w.Opaque(fh)
		s.put(w)
		w.Bool(guard != nil)
		if guard != nil {
			w.Uint32(guard.Sec)
			w.Uint32(guard.Nsec)
		}
	}, func(r *XDRReader, res *nfsRes) { res.Wcc = getWcc(r) })
}

func (c *nfsClient) lookup(dir []byte, name string) nfsRes {
	return c.nfs(nfsLookup, func(w *XDRWriter) { dirop(w, dir, name) }, func(r *XDRReader, res *nfsRes) {
		if res.St == nfsOK {
			res.FH = getFH(r, res)
			res.Attr = getPostOp(r)
		}
		res.DirAttr = getPostOp(r)
	})
}

func (c *nfsClient) access(fh []byte, want uint32) nfsRes {
	return c.nfs(nfsAccess, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint32(want)
	}, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		if res.St == nfsOK {
			res.Access = r.Uint32()
		}
	})
}

func (c *nfsClient) readlink(fh []byte) nfsRes {
	return c.nfs(nfsReadlink, func(w *XDRWriter) { w.Opaque(fh) }, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		if res.St == nfsOK {
			res.Target = r.String(4096)
		}
	})
}

func (c *nfsClient) read(fh []byte, off uint64, count uint32) nfsRes {
	return c.nfs(nfsRead, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint64(off)
		w.Uint32(count)
	}, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		if res.St == nfsOK {
			res.Count = r.Uint32()
			res.EOF = r.Bool()
			res.Data = r.Opaque(-1)
			if r.Err() == nil && uint32(len(res.Data)) != res.Count && res.Err == nil {
				res.Err = fmt.Errorf("READ reply: count %d, %d bytes of data", res.Count, len(res.Data))
			}
		}
	})
}

func (c *nfsClient) write(fh []byte, off uint64, data []byte, stable uint32) nfsRes {
	return c.nfs(nfsWrite, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint64(off)
		w.Uint32(uint32(len(data)))
		w.Uint32(stable)
		w.Opaque(data)
	}, func(r *XDRReader, res *nfsRes) {
		res.Wcc = getWcc(r)
		if res.St == nfsOK {
			res.Count = r.Uint32()
			res.Committed = r.Uint32()
			copy(res.Verf[:], r.FixedOpaque(8))
		}
	})
}

// decNew decodes the results of CREATE, MKDIR, SYMLINK and MKNOD.
func decNew(r *XDRReader, res *nfsRes) {
	if res.St == nfsOK {
		if r.Bool() {
			res.FH = getFH(r, res)
		}
		res.Attr = getPostOp(r)
	}
	res.Wcc = getWcc(r)
}

// create modes
const (
	createUnchecked = 0
	createGuarded   = 1
	createExclusive = 2
)

func (c *nfsClient) create(dir []byte, name string, how uint32, s sattr3, verf [8]byte) nfsRes {
	return c.nfs(nfsCreate, func(w *XDRWriter) {
		dirop(w, dir, name)
		w.Uint32(how)
		if how == createExclusive {
			w.FixedOpaque(verf[:])
		} else {
			s.put(w)
		}
	}, decNew)
}

func (c *nfsClient) mkdir(dir []byte, name string, s sattr3) nfsRes {
	return c.nfs(nfsMkdir, func(w *XDRWriter) {
		dirop(w, dir, name)
		s.put(w)
	}, decNew)
}

func (c *nfsClient) symlink(dir []byte, name string, s sattr3, target string) nfsRes {
	return c.nfs(nfsSymlink, func(w *XDRWriter) {
		dirop(w, dir, name)
		s.put(w)
		w.String(target)
	}, decNew)
}

func (c *nfsClient) mknod(dir []byte, name string, typ uint32, s sattr3, major, minor uint32) nfsRes {
	return c.nfs(nfsMknod, func(w *XDRWriter) {
		dirop(w, dir, name)
		w.Uint32(typ)
		switch snapstore.FileType(typ) {
		case snapstore.TypeChr, snapstore.TypeBlk:
			s.put(w)
			w.Uint32(major)
			w.Uint32(minor)
		case snapstore.TypeSock, snapstore.TypeFifo:
			s.put(w)
		}
	}, decNew)
}

func (c *nfsClient) remove(dir []byte, name string) nfsRes {
	return c.nfs(nfsRemove, func(w *XDRWriter) { dirop(w, dir, name) }, func(r *XDRReader, res *nfsRes) { res.Wcc = getWcc(r) })
}

func (c *nfsClient) rmdir(dir []byte, name string) nfsRes {
	return c.nfs(nfsRmdir, func(w *XDRWriter) { dirop(w, dir, name) }, func(r *XDRReader, res *nfsRes) { res.Wcc = getWcc(r) })
}

func (c *nfsClient) rename(from []byte, fname string, to []byte, tname string) nfsRes {
	return c.nfs(nfsRename, func(w *XDRWriter) {
		dirop(w, from, fname)
		dirop(w, to, tname)
	}, func(r *XDRReader, res *nfsRes) {
		res.Wcc = getWcc(r)
		res.ToWcc = getWcc(r)
	})
}

func (c *nfsClient) link(fh, dir []byte, name string) nfsRes {
	return c.nfs(nfsLink, func(w *XDRWriter) {
		w.Opaque(fh)
		dirop(w, dir, name)
	}, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		res.Wcc = getWcc(r)
	})
}

func (c *nfsClient) readdir(dir []byte, cookie uint64, verf [8]byte, count uint32) nfsRes {
	return c.readdirAny(false, dir, cookie, verf, count, count)
}

func (c *nfsClient) readdirplus(dir []byte, cookie uint64, verf [8]byte, dircount, maxcount uint32) nfsRes {
	return c.readdirAny(true, dir, cookie, verf, dircount, maxcount)
}

func (c *nfsClient) readdirAny(plus bool, dir []byte, cookie uint64, verf [8]byte, dircount, maxcount uint32) nfsRes {
	proc := uint32(nfsReaddir)
	if plus {
		proc = nfsReaddirplus
	}
	return c.nfs(proc, func(w *XDRWriter) {
		w.Opaque(dir)
		w.Uint64(cookie)
		w.FixedOpaque(verf[:])
		w.Uint32(dircount)
		if plus {
			w.Uint32(maxcount)
		}
	}, func(r *XDRReader, res *nfsRes) {
		res.DirAttr = getPostOp(r)
		if res.St != nfsOK {
			return
		}
		copy(res.Verf[:], r.FixedOpaque(8))
		for r.Err() == nil && r.Bool() {
			e := dirEnt3{FileID: r.Uint64(), Name: r.String(-1), Cookie: r.Uint64()}
			if plus {
				e.Attr = getPostOp(r)
				if r.Bool() {
					e.FH = getFH(r, res)
				}
			}
			res.Entries = append(res.Entries, e)
		}
		res.EOF = r.Bool()
	})
}

func (c *nfsClient) fsstat(fh []byte) nfsRes {
	return c.nfs(nfsFsstat, func(w *XDRWriter) { w.Opaque(fh) }, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		if res.St == nfsOK {
			s := &res.FSStat
			s.Tbytes, s.Fbytes, s.Abytes = r.Uint64(), r.Uint64(), r.Uint64()
			s.Tfiles, s.Ffiles, s.Afiles = r.Uint64(), r.Uint64(), r.Uint64()
			s.Invarsec = r.Uint32()
		}
	})
}

func (c *nfsClient) fsinfo(fh []byte) nfsRes {
	return c.nfs(nfsFsinfo, func(w *XDRWriter) { w.Opaque(fh) }, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		if res.St == nfsOK {
			s := &res.FSInfo
			s.Rtmax, s.Rtpref, s.Rtmult = r.Uint32(), r.Uint32(), r.Uint32()
			s.Wtmax, s.Wtpref, s.Wtmult = r.Uint32(), r.Uint32(), r.Uint32()
			s.Dtpref = r.Uint32()
			s.Maxfilesize = r.Uint64()
			s.TimeDelta = getTime(r)
			s.Properties = r.Uint32()
		}
	})
}

func (c *nfsClient) pathconf(fh []byte) nfsRes {
	return c.nfs(nfsPathconf, func(w *XDRWriter) { w.Opaque(fh) }, func(r *XDRReader, res *nfsRes) {
		res.Attr = getPostOp(r)
		if res.St == nfsOK {
			p := &res.Pathconf
			p.Linkmax, p.NameMax = r.Uint32(), r.Uint32()
			p.NoTrunc, p.ChownRestricted, p.CaseInsensitive, p.CasePreserving = r.Bool(), r.Bool(), r.Bool(), r.Bool()
		}
	})
}

func (c *nfsClient) commit(fh []byte, off uint64, count uint32) nfsRes {
	return c.nfs(nfsCommit, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint64(off)
		w.Uint32(count)
	}, func(r *XDRReader, res *nfsRes) {
		res.Wcc = getWcc(r)
		if res.St == nfsOK {
			copy(res.Verf[:], r.FixedOpaque(8))
		}
	})
}

// ---- MOUNT and PORTMAP ----

type mntRes struct {
	St      uint32
	FH      []byte
	Flavors []uint32
}

func (c *nfsClient) mnt(path string) (mntRes, error) {
	r, err := c.call(ProgMNT, 3, mntMnt, func(w *XDRWriter) { w.String(path) })
	if err != nil {
		return mntRes{}, err
	}
	res := mntRes{St: r.Uint32()}
	if res.St == mntOK {
		res.FH = bytes.Clone(r.Opaque(64))
		n := r.Uint32()
		for i := uint32(0); i < n && r.Err() == nil; i++ {
			res.Flavors = append(res.Flavors, r.Uint32())
		}
	}
	return res, r.DoneExact()
}

type exportEnt struct {
	Dir    string
	Groups []string
}

func (c *nfsClient) export() ([]exportEnt, error) {
	r, err := c.call(ProgMNT, 3, mntExport, nil)
	if err != nil {
		return nil, err
	}
	var out []exportEnt
	for r.Err() == nil && r.Bool() {
		e := exportEnt{Dir: r.String(1024)}
		for r.Err() == nil && r.Bool() {
			e.Groups = append(e.Groups, r.String(255))
		}
		out = append(out, e)
	}
	return out, r.DoneExact()
}

type mountEnt struct{ Host, Dir string }

func (c *nfsClient) dump() ([]mountEnt, error) {
	r, err := c.call(ProgMNT, 3, mntDump, nil)
	if err != nil {
		return nil, err
	}
	var out []mountEnt
	for r.Err() == nil && r.Bool() {
		out = append(out, mountEnt{Host: r.String(255), Dir: r.String(1024)})
	}
	return out, r.DoneExact()
}

func (c *nfsClient) mntVoid(proc uint32, path *string) error {
	r, err := c.call(ProgMNT, 3, proc, func(w *XDRWriter) {
		if path != nil {
			w.String(*path)
		}
	})
	if err != nil {
		return err
	}
	return r.DoneExact()
}

func (c *nfsClient) getport(prog, vers, prot uint32) (uint32, error) {
	r, err := c.call(PortmapProg, PortmapVers, pmapProcGetport, func(w *XDRWriter) {
		w.Uint32(prog)
		w.Uint32(vers)
		w.Uint32(prot)
		w.Uint32(0)
	})
	if err != nil {
		return 0, err
	}
	p := r.Uint32()
	return p, r.DoneExact()
}

// ---- helpers for tests ----

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// mkfile creates name in dir with data written FILE_SYNC.
func mkfile(t testing.TB, c *nfsClient, dir []byte, name string, mode uint32, data []byte) nfsRes {
	t.Helper()
	res := c.create(dir, name, createGuarded, sattr3{Mode: nfsRef(mode)}, [8]byte{}).ok(t, "CREATE "+name)
	if len(data) > 0 {
		w := c.write(res.FH, 0, data, fileSync).ok(t, "WRITE "+name)
		if w.Count != uint32(len(data)) {
			t.Fatalf("WRITE %s: count %d, want %d", name, w.Count, len(data))
		}
	}
	return res
}

func mustAttr(t testing.TB, c *nfsClient, fh []byte) *fattr3 {
	t.Helper()
	return c.getattr(fh).ok(t, "GETATTR").Attr
}

// readAll reads a whole file in chunks of n.
func readAll(t testing.TB, c *nfsClient, fh []byte, n uint32) []byte {
	t.Helper()
	var out []byte
	for {
		res := c.read(fh, uint64(len(out)), n).ok(t, "READ")
		out = append(out, res.Data...)
		if res.EOF {
			return out
		}
		if res.Count == 0 {
			t.Fatalf("READ at %d: 0 bytes without eof", len(out))
		}
	}
}

// listDir lists a directory completely with READDIR of count bytes per
// page, checking that the cookie verifier stays the same.
func listDir(t testing.TB, c *nfsClient, dir []byte, count uint32) []dirEnt3 {
	t.Helper()
	var all []dirEnt3
	var cookie uint64
	var verf [8]byte
	for pages := 0; ; pages++ {
		res := c.readdir(dir, cookie, verf, count).ok(t, "READDIR")
		if pages > 0 && res.Verf != verf {
			t.Fatalf("cookie verifier changed from %x to %x", verf, res.Verf)
		}
		verf = res.Verf
		all = append(all, res.Entries...)
		if res.EOF {
			return all
		}
		if len(res.Entries) == 0 {
			t.Fatalf("READDIR page %d: no entries and no eof", pages)
		}
		cookie = res.Entries[len(res.Entries)-1].Cookie
	}
}

// readdirSize is the encoded size of a READDIR3resok (or READDIRPLUS3resok)
// with these entries, which must not exceed the call's count (maxcount).
func readdirSize(res nfsRes) int {
	n := 4 + 8 + 8 // post_op_attr discriminant, cookieverf, end of list and eof
	if res.DirAttr != nil {
		n += 84
	}
	for _, e := range res.Entries {
		n += 4 + 8 + 4 + len(e.Name) + pad(len(e.Name)) + 8
		if e.Attr != nil || e.FH != nil {
			n += 4 + 4
			if e.Attr != nil {
				n += 84
			}
			if e.FH != nil {
				n += 4 + len(e.FH) + pad(len(e.FH))
			}
		}
	}
	return n
}

func entNames(ents []dirEnt3) map[string]int {
	m := map[string]int{}
	for _, e := range ents {
		m[e.Name]++
	}
	return m
}

func wantRPCDenied(t testing.TB, err error, stat AuthStat) {
	t.Helper()
	var re *RPCError
	if !errors.As(err, &re) || !re.Denied || re.Reject != RejectAuthError || re.AuthStat != stat {
		t.Fatalf("got %v, want a call denied with %v", err, stat)
	}
}

func wantAccept(t testing.TB, err error, stat AcceptStat) *RPCError {
	t.Helper()
	var re *RPCError
	if !errors.As(err, &re) || re.Denied || re.Accept != stat {
		t.Fatalf("got %v, want accept_stat %v", err, stat)
	}
	return re
}

// dialPrivileged connects from a free privileged source port (root only).
func dialPrivileged(t testing.TB, addr string, cred *AuthUnix) (*Client, int) {
	t.Helper()
	return dialFromPort(t, addr, cred, 600, 1024)
}

// dialFromPort connects from a free source port in [lo, hi), bound with
// SO_REUSEADDR so that the client can reconnect from it.
func dialFromPort(t testing.TB, addr string, cred *AuthUnix, lo, hi int) (*Client, int) {
	t.Helper()
	base := mrand.IntN(hi - lo)
	var last error
	for i := range min(400, hi-lo) {
		port := lo + (base+i)%(hi-lo)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, addr, ClientOptions{Cred: cred, LocalPort: port})
		cancel()
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c, port
		}
		last = err
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			break
		}
	}
	t.Fatalf("no privileged source port: %v", last)
	return nil, 0
}

// ---- tests ----

func TestNFSNullAndVersions(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	if err := c.null(); err != nil {
		t.Fatalf("NULL: %v", err)
	}
	// NULL with AUTH_NONE too.
	if err := e.dial(nil).null(); err != nil {
		t.Fatalf("NULL with AUTH_NONE: %v", err)
	}
	_, err := c.call(ProgNFS, 2, nfsNull, nil)
	if re := wantAccept(t, err, AcceptProgMismatch); re.Low != 3 || re.High != 3 {
		t.Fatalf("NFS v2: versions %d-%d, want 3-3", re.Low, re.High)
	}
	_, err = c.call(ProgNFS, 3, 22, nil)
	wantAccept(t, err, AcceptProcUnavail)
	_, err = c.call(ProgMNT, 1, mntNull, nil)
	wantAccept(t, err, AcceptProgMismatch)
}

func TestNFSGetattrRoot(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	a := mustAttr(t, c, e.root())
	if a.Type != uint32(snapstore.TypeDir) || a.FileID == 0 || a.Nlink != 2 || a.Mode&0o777 != 0o755 {
		t.Fatalf("root attributes %+v", a)
	}
	if a.FSID == 0 || a.FSID != e.ds.Blocks.ID() {
		t.Fatalf("fsid %#x, want the datastore ID %#x (non-zero)", a.FSID, e.ds.Blocks.ID())
	}
	if n := len(e.root()); n > maxESXiHandle {
		t.Fatalf("root handle of %d bytes", n)
	}
}

func TestNFSSetattr(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	data := randBytes(10000)
	f := mkfile(t, c, e.root(), "f", 0o644, data).FH

	// mode (with setuid/setgid/sticky), owner, group
	res := c.setattr(f, sattr3{Mode: nfsRef(uint32(0o7751)), UID: nfsRef(uint32(1000)), GID: nfsRef(uint32(100))}, nil).ok(t, "SETATTR mode/uid/gid")
	if a := res.Wcc.After; a == nil || a.Mode != 0o7751 || a.UID != 1000 || a.GID != 100 {
		t.Fatalf("after SETATTR: %+v", a)
	}
	if res.Wcc.Before == nil || res.Wcc.Before.Size != 10000 {
		t.Fatalf("wcc before: %+v", res.Wcc.Before)
	}

	// Guard: a ctime that is not the file's is NOT_SYNC and changes nothing.
	a := mustAttr(t, c, f)
	bad := nfsTime{a.Ctime.Sec - 1, a.Ctime.Nsec}
	c.setattr(f, sattr3{Mode: nfsRef(uint32(0o600))}, &bad).want(t, "SETATTR with a stale guard", nfsErrNotSync)
	if b := mustAttr(t, c, f); b.Mode != 0o7751 || b.Ctime != a.Ctime {
		t.Fatalf("a refused guarded SETATTR changed the file: %+v", b)
	}
	bad = nfsTime{a.Ctime.Sec, (a.Ctime.Nsec + 1) % 1e9}
	c.setattr(f, sattr3{Mode: nfsRef(uint32(0o600))}, &bad).want(t, "SETATTR with a guard 1 ns off", nfsErrNotSync)
	c.setattr(f, sattr3{Mode: nfsRef(uint32(0o600))}, &a.Ctime).ok(t, "SETATTR with the right guard")
	if b := mustAttr(t, c, f); b.Mode != 0o600 {
		t.Fatalf("mode %o after guarded SETATTR", b.Mode)
	}

	// Size: shrink, then grow: the grown part reads as zeros, not as the
	// old data.
	c.setattr(f, sattr3{Size: nfsRef(uint64(100))}, nil).ok(t, "SETATTR size 100")
	if got := readAll(t, c, f, 4096); !bytes.Equal(got, data[:100]) {
		t.Fatalf("after shrink: %d bytes, want the first 100", len(got))
	}
	c.setattr(f, sattr3{Size: nfsRef(uint64(20000))}, nil).ok(t, "SETATTR size 20000")
	got := readAll(t, c, f, 1<<20)
	want := append(bytes.Clone(data[:100]), make([]byte, 19900)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("after regrow: %d bytes, differing from the first 100 bytes and zeros", len(got))
	}
	if a := mustAttr(t, c, f); a.Size != 20000 {
		t.Fatalf("size %d", a.Size)
	}

	// Times: atime and mtime set apart, to the nanosecond; ctime is the
	// server's clock.
	at := nfsTime{1_600_000_000, 123_456_789}
	mt := nfsTime{1_500_000_000, 987_654_321}
	before := mustAttr(t, c, f)
	c.setattr(f, sattr3{Atime: &at}, nil).ok(t, "SETATTR atime")
	a1 := mustAttr(t, c, f)
	if a1.Atime != at || a1.Mtime != before.Mtime {
		t.Fatalf("after setting atime to %v: atime %v mtime %v (was %v)", at, a1.Atime, a1.Mtime, before.Mtime)
	}
	c.setattr(f, sattr3{Mtime: &mt}, nil).ok(t, "SETATTR mtime")
	a2 := mustAttr(t, c, f)
	if a2.Atime != at || a2.Mtime != mt {
		t.Fatalf("after setting mtime to %v: atime %v mtime %v", mt, a2.Atime, a2.Mtime)
	}
	if a2.Ctime == a2.Mtime || a2.Ctime == a2.Atime || a2.Ctime.Sec < uint32(time.Now().Unix()-60) {
		t.Fatalf("ctime %v should be the server's clock (atime %v, mtime %v)", a2.Ctime, a2.Atime, a2.Mtime)
	}
	c.setattr(f, sattr3{AtimeNow: true, MtimeNow: true}, nil).ok(t, "SETATTR times to server time")
	a3 := mustAttr(t, c, f)
	if now := uint32(time.Now().Unix()); a3.Atime.Sec+60 < now || a3.Mtime.Sec+60 < now {
		t.Fatalf("times set to server time: atime %v mtime %v, now %d", a3.Atime, a3.Mtime, now)
	}

	// Size of a directory: refused.
	d := c.mkdir(e.root(), "d", sattr3{}).ok(t, "MKDIR").FH
	if res := c.setattr(d, sattr3{Size: nfsRef(uint64(0))}, nil); res.Err != nil || res.St == nfsOK {
		t.Fatalf("SETATTR size of a directory: %s %v", stName(res.St), res.Err)
	}

	// Permissions: a non-owner may not chmod; the owner may; only root
	// gives files away.
	c.setattr(f, sattr3{UID: nfsRef(uint32(1000)), Mode: nfsRef(uint32(0o644))}, nil).ok(t, "chown to 1000")
	other := e.dial(userCred(2000, 2000))
	other.setattr(f, sattr3{Mode: nfsRef(uint32(0o666))}, nil).want(t, "chmod by a non-owner", nfsErrPerm)
	owner := e.dial(userCred(1000, 1000))
	owner.setattr(f, sattr3{Mode: nfsRef(uint32(0o640))}, nil).ok(t, "chmod by the owner")
	owner.setattr(f, sattr3{UID: nfsRef(uint32(2000))}, nil).want(t, "chown by the owner", nfsErrPerm)
	other.setattr(f, sattr3{Size: nfsRef(uint64(0))}, nil).want(t, "truncate without write permission", nfsErrPerm)
}

func TestNFSLookup(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	d := c.mkdir(e.root(), "dir", sattr3{}).ok(t, "MKDIR")
	f := mkfile(t, c, d.FH, "file", 0o644, []byte("hello"))

	res := c.lookup(d.FH, "file").ok(t, "LOOKUP file")
	if !bytes.Equal(res.FH, f.FH) || res.Attr == nil || res.Attr.FileID != f.Attr.FileID || res.Attr.Size != 5 {
		t.Fatalf("LOOKUP file: %x %+v, want %x", res.FH, res.Attr, f.FH)
	}
	if res.DirAttr == nil || res.DirAttr.FileID != d.Attr.FileID {
		t.Fatalf("LOOKUP dir attributes %+v", res.DirAttr)
	}
	if res := c.lookup(d.FH, ".").ok(t, "LOOKUP ."); res.Attr.FileID != d.Attr.FileID {
		t.Fatalf(`"." is fileid %d, want %d`, res.Attr.FileID, d.Attr.FileID)
	}
	root := mustAttr(t, c, e.root())
	if res := c.lookup(d.FH, "..").ok(t, "LOOKUP .."); res.Attr.FileID != root.FileID || !bytes.Equal(res.FH, e.root()) {
		t.Fatalf(`".." of dir is fileid %d, want the root %d`, res.Attr.FileID, root.FileID)
	}
	if res := c.lookup(e.root(), "..").ok(t, "LOOKUP .. of the root"); res.Attr.FileID != root.FileID {
		t.Fatalf(`".." of the root is fileid %d, want the root`, res.Attr.FileID)
	}
	res = c.lookup(d.FH, "missing").want(t, "LOOKUP missing", nfsErrNoent)
	if res.DirAttr == nil {
		t.Fatalf("LOOKUP failure without the directory's attributes")
	}
	c.lookup(f.FH, "x").want(t, "LOOKUP in a file", nfsErrNotdir)
	// Non-ASCII (UTF-8) names.
	mkfile(t, c, d.FH, "Größe-日本語.vmdk", 0o600, nil)
	c.lookup(d.FH, "Größe-日本語.vmdk").ok(t, "LOOKUP a UTF-8 name")
	// Search permission: a user without x on the directory.
	c.setattr(d.FH, sattr3{Mode: nfsRef(uint32(0o700))}, nil).ok(t, "chmod 700")
	e.dial(userCred(1000, 1000)).lookup(d.FH, "file").want(t, "LOOKUP without search permission", nfsErrAcces)
}

func TestNFSAccess(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	own := sattr3{UID: nfsRef(uint32(1000)), GID: nfsRef(uint32(100))}
	mk := func(name string, mode uint32) []byte {
		s := own
		s.Mode = nfsRef(mode)
		res := c.create(e.root(), name, createGuarded, s, [8]byte{}).ok(t, "CREATE "+name)
		if res.Attr.UID != 1000 || res.Attr.GID != 100 || res.Attr.Mode != mode {
			t.Fatalf("CREATE by root with owner and mode: %+v", res.Attr)
		}
		return res.FH
	}
	f640 := mk("f640", 0o640)
	f754 := mk("f754", 0o754)
	s := own
	s.Mode = nfsRef(uint32(0o750))
	d750 := c.mkdir(e.root(), "d750", s).ok(t, "MKDIR").FH

	const (
		all = accRead | accLookup | accModify | accExtend | accDelete | accExecute
		rw  = accRead | accModify | accExtend
	)
	users := map[string]*nfsClient{
		"owner": e.dial(userCred(1000, 1000)),
		"group": e.dial(userCred(2000, 100)),
		"supp":  e.dial(userCred(2000, 5, 7, 100)),
		"other": e.dial(userCred(3000, 3000)),
		"root":  c,
		"none":  e.dial(nil), // AUTH_NONE: anonymous, an "other"
	}
	for _, tc := range []struct {
		fh   []byte
		name string
		want map[string]uint32
	}{
		{f640, "f640", map[string]uint32{"owner": rw, "group": accRead, "supp": accRead, "other": 0, "root": rw, "none": 0}},
		{f754, "f754", map[string]uint32{"owner": rw | accExecute, "group": accRead | accExecute, "supp": accRead | accExecute,
			"other": accRead, "root": rw | accExecute, "none": accRead}},
		{d750, "d750", map[string]uint32{"owner": all &^ accExecute, "group": accRead | accLookup, "supp": accRead | accLookup,
			"other": 0, "root": all &^ accExecute, "none": 0}},
	} {
		for who, want := range tc.want {
			res := users[who].access(tc.fh, all).ok(t, "ACCESS")
			if res.Access != want {
				t.Errorf("ACCESS %s as %s: %#x, want %#x", tc.name, who, res.Access, want)
			}
			if res.Attr == nil {
				t.Errorf("ACCESS %s: no attributes", tc.name)
			}
		}
	}
	// Only what was asked is answered.
	if res := users["owner"].access(f640, accRead|accExecute).ok(t, "ACCESS"); res.Access != accRead {
		t.Errorf("ACCESS READ|EXECUTE of 0640 as owner: %#x, want READ", res.Access)
	}
	// Read-only export: nothing to modify, extend or delete.
	ro := dialNFS(t, e.sibling(Options{ReadOnly: true}), ClientOptions{Cred: rootCred()})
	if res := ro.access(d750, all).ok(t, "ACCESS read-only"); res.Access != accRead|accLookup {
		t.Errorf("ACCESS of a directory on a read-only export as root: %#x, want READ|LOOKUP", res.Access)
	}
	// READ needs read permission (or ownership).
	users["other"].read(f640, 0, 10).want(t, "READ without permission", nfsErrAcces)
	users["group"].read(f640, 0, 10).ok(t, "READ by the group")
	users["group"].write(f640, 0, []byte("x"), fileSync).want(t, "WRITE without permission", nfsErrAcces)
	users["owner"].write(f640, 0, []byte("x"), fileSync).ok(t, "WRITE by the owner")
}

func TestNFSReadlinkSymlink(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	target := "../some/where/Größe"
	l := c.symlink(e.root(), "link", sattr3{}, target).ok(t, "SYMLINK")
	if l.Attr == nil || l.Attr.Type != uint32(snapstore.TypeLnk) || l.Attr.Size != uint64(len(target)) {
		t.Fatalf("SYMLINK attributes %+v", l.Attr)
	}
	if res := c.readlink(l.FH).ok(t, "READLINK"); res.Target != target || res.Attr == nil {
		t.Fatalf("READLINK: %q, want %q", res.Target, target)
	}
	c.symlink(e.root(), "link", sattr3{}, "x").want(t, "SYMLINK over an existing name", nfsErrExist)
	f := mkfile(t, c, e.root(), "f", 0o644, nil)
	c.readlink(f.FH).want(t, "READLINK of a file", nfsErrInval)
	c.readlink(e.root()).want(t, "READLINK of a directory", nfsErrInval)
	c.read(l.FH, 0, 10).want(t, "READ of a symlink", nfsErrInval)
}

func TestNFSReadWriteCommit(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	f := mkfile(t, c, e.root(), "f", 0o644, nil).FH
	data := randBytes(3*65536 + 1234)

	w1 := c.write(f, 0, data[:65536], unstable).ok(t, "WRITE UNSTABLE")
	if w1.Committed != unstable || w1.Count != 65536 {
		t.Fatalf("WRITE UNSTABLE: committed %d count %d", w1.Committed, w1.Count)
	}
	if w1.Verf == [8]byte{} {
		t.Errorf("write verifier is zero")
	}
	if w1.Wcc.Before == nil || w1.Wcc.Before.Size != 0 || w1.Wcc.After == nil || w1.Wcc.After.Size != 65536 {
		t.Fatalf("WRITE wcc: %+v %+v", w1.Wcc.Before, w1.Wcc.After)
	}
	w2 := c.write(f, 65536, data[65536:131072], fileSync).ok(t, "WRITE FILE_SYNC")
	if w2.Committed != fileSync || w2.Verf != w1.Verf {
		t.Fatalf("WRITE FILE_SYNC: committed %d verf %x (first %x)", w2.Committed, w2.Verf, w1.Verf)
	}
	w3 := c.write(f, 131072, data[131072:], dataSync).ok(t, "WRITE DATA_SYNC")
	if w3.Committed != fileSync || w3.Verf != w1.Verf {
		t.Fatalf("WRITE DATA_SYNC: committed %d (want FILE_SYNC) verf %x", w3.Committed, w3.Verf)
	}
	cm := c.commit(f, 0, 0).ok(t, "COMMIT")
	if cm.Verf != w1.Verf {
		t.Fatalf("COMMIT verifier %x, WRITE's %x", cm.Verf, w1.Verf)
	}
	if cm.Wcc.After == nil || cm.Wcc.After.Size != uint64(len(data)) {
		t.Fatalf("COMMIT wcc after %+v", cm.Wcc.After)
	}

	size := uint64(len(data))
	if got := readAll(t, c, f, 50000); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(data))
	}
	// A read in the middle: not eof.
	if r := c.read(f, 100, 1000).ok(t, "READ middle"); r.EOF || r.Count != 1000 || !bytes.Equal(r.Data, data[100:1100]) {
		t.Fatalf("READ middle: count %d eof %v", r.Count, r.EOF)
	}
	// A read that ends exactly at the end: eof.
	if r := c.read(f, size-1000, 1000).ok(t, "READ to the end"); !r.EOF || r.Count != 1000 {
		t.Fatalf("READ ending at end of file: count %d eof %v", r.Count, r.EOF)
	}
	// A short read at the end: count < asked, eof.
	r := c.read(f, size-100, 4096).ok(t, "READ short")
	if !r.EOF || r.Count != 100 || !bytes.Equal(r.Data, data[size-100:]) {
		t.Fatalf("short READ at end: count %d eof %v", r.Count, r.EOF)
	}
	if r.Attr == nil || r.Attr.Size != size {
		t.Fatalf("READ post-op attributes %+v", r.Attr)
	}
	// Reads at and past the end: nothing, eof.
	for _, off := range []uint64{size, size + 1, size + 1<<30, 1 << 62, 1<<64 - 1} {
		if r := c.read(f, off, 4096).ok(t, fmt.Sprintf("READ at %d", off)); !r.EOF || r.Count != 0 {
			t.Fatalf("READ at %d past the end (%d): count %d eof %v", off, size, r.Count, r.EOF)
		}
	}
	// Zero-length read.
	if r := c.read(f, 0, 0).ok(t, "READ 0 bytes"); r.Count != 0 {
		t.Fatalf("READ of 0 bytes: count %d", r.Count)
	}
	// A count above rtmax is cut to rtmax.
	big := c.mkdir(e.root(), "big", sattr3{}).ok(t, "MKDIR").FH
	bf := mkfile(t, c, big, "bf", 0o644, nil).FH
	bdata := randBytes(1<<20 + 4096)
	c.write(bf, 0, bdata[:1<<20], fileSync).ok(t, "WRITE 1 MiB")
	c.write(bf, 1<<20, bdata[1<<20:], fileSync).ok(t, "WRITE tail")
	if r := c.read(bf, 0, 4<<20).ok(t, "READ 4 MiB"); r.Count != 1<<20 || r.EOF || !bytes.Equal(r.Data, bdata[:1<<20]) {
		t.Fatalf("READ of 4 MiB: count %d eof %v, want 1 MiB (rtmax) and no eof", r.Count, r.EOF)
	}
	// Writes in a hole, past the end: the gap reads as zeros.
	c.write(f, size+10000, []byte("tail"), fileSync).ok(t, "WRITE past the end")
	got := readAll(t, c, f, 1<<20)
	if uint64(len(got)) != size+10004 || !bytes.Equal(got[size:size+10000], make([]byte, 10000)) || string(got[size+10000:]) != "tail" {
		t.Fatalf("after a write past the end: %d bytes", len(got))
	}
	// Errors: a directory, offsets beyond the largest file.
	c.read(e.root(), 0, 10).want(t, "READ of a directory", nfsErrIsdir)
	c.write(e.root(), 0, []byte("x"), fileSync).want(t, "WRITE to a directory", nfsErrIsdir)
	c.write(f, 1<<63, []byte("x"), fileSync).want(t, "WRITE at 2^63", nfsErrFbig)
	maxSize := c.fsinfo(e.root()).ok(t, "FSINFO").FSInfo.Maxfilesize
	c.write(f, maxSize-1, []byte("xy"), fileSync).want(t, "WRITE across maxfilesize", nfsErrFbig)
	c.setattr(f, sattr3{Size: nfsRef(maxSize + 1)}, nil).want(t, "SETATTR size over maxfilesize", nfsErrFbig)
	c.commit(e.root(), 0, 0).ok(t, "COMMIT of a directory")
}

func TestNFSCreate(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	dir := e.root()
	data := randBytes(5000)

	// UNCHECKED: makes the file; over an existing one returns it untouched
	// unless size 0 is asked for.
	u := c.create(dir, "u", createUnchecked, sattr3{Mode: nfsRef(uint32(0o600))}, [8]byte{}).ok(t, "CREATE UNCHECKED")
	if u.Attr == nil || u.Attr.Mode != 0o600 || u.Attr.Size != 0 || u.Attr.Type != uint32(snapstore.TypeReg) {
		t.Fatalf("CREATE UNCHECKED: %+v", u.Attr)
	}
	if u.Wcc.After == nil || u.Wcc.Before == nil {
		t.Fatalf("CREATE: no directory wcc")
	}
	c.write(u.FH, 0, data, fileSync).ok(t, "WRITE")
	u2 := c.create(dir, "u", createUnchecked, sattr3{}, [8]byte{}).ok(t, "CREATE UNCHECKED over a file")
	if u2.Attr.FileID != u.Attr.FileID || u2.Attr.Size != 5000 || !bytes.Equal(u2.FH, u.FH) {
		t.Fatalf("CREATE UNCHECKED over a file: %+v", u2.Attr)
	}
	u3 := c.create(dir, "u", createUnchecked, sattr3{Mode: nfsRef(uint32(0o600)), Size: nfsRef(uint64(77))}, [8]byte{}).ok(t, "CREATE UNCHECKED size 77")
	if u3.Attr.Size != 5000 {
		t.Fatalf("CREATE UNCHECKED with size 77 over a file changed its size to %d", u3.Attr.Size)
	}
	if got := readAll(t, c, u.FH, 1<<20); !bytes.Equal(got, data) {
		t.Fatalf("CREATE UNCHECKED changed the data")
	}
	u4 := c.create(dir, "u", createUnchecked, sattr3{Size: nfsRef(uint64(0))}, [8]byte{}).ok(t, "CREATE UNCHECKED size 0")
	if u4.Attr.Size != 0 || u4.Attr.FileID != u.Attr.FileID {
		t.Fatalf("CREATE UNCHECKED size 0 over a file: size %d fileid %d", u4.Attr.Size, u4.Attr.FileID)
	}
	// A new file with a size.
	if s := c.create(dir, "sized", createUnchecked, sattr3{Size: nfsRef(uint64(1 << 20))}, [8]byte{}).ok(t, "CREATE with size"); s.Attr.Size != 1<<20 {
		t.Fatalf("CREATE with size 1 MiB: size %d", s.Attr.Size)
	}

	// GUARDED
	c.create(dir, "g", createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE GUARDED")
	c.create(dir, "g", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE GUARDED over a file", nfsErrExist)
	c.create(dir, "u", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE GUARDED over another file", nfsErrExist)

	// EXCLUSIVE: a retransmission (same verifier, another xid) gets the
	// file; another verifier gets EXIST.
	v1 := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	x := c.create(dir, "x", createExclusive, sattr3{}, v1).ok(t, "CREATE EXCLUSIVE")
	x2 := c.create(dir, "x", createExclusive, sattr3{}, v1).ok(t, "CREATE EXCLUSIVE again with the same verifier")
	if !bytes.Equal(x.FH, x2.FH) {
		t.Fatalf("EXCLUSIVE retransmission: another handle")
	}
	c.create(dir, "x", createExclusive, sattr3{}, [8]byte{8, 7, 6, 5, 4, 3, 2, 1}).want(t, "CREATE EXCLUSIVE with another verifier", nfsErrExist)
	c.create(dir, "x", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE GUARDED over an EXCLUSIVE file", nfsErrExist)
	// After EXCLUSIVE the client sets the attributes with SETATTR.
	c.setattr(x.FH, sattr3{Mode: nfsRef(uint32(0o640))}, nil).ok(t, "SETATTR after EXCLUSIVE")
	c.create(dir, "x", createExclusive, sattr3{}, v1).ok(t, "CREATE EXCLUSIVE retransmitted after SETATTR")

	// Errors
	c.mkdir(dir, "d", sattr3{}).ok(t, "MKDIR")
	if res := c.create(dir, "d", createUnchecked, sattr3{}, [8]byte{}); res.Err != nil || (res.St != nfsErrIsdir && res.St != nfsErrExist) {
		t.Fatalf("CREATE UNCHECKED over a directory: %s %v", stName(res.St), res.Err)
	}
	c.create(dir, "d", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE GUARDED over a directory", nfsErrExist)
	c.create(dir, "d", createExclusive, sattr3{}, v1).want(t, "CREATE EXCLUSIVE over a directory", nfsErrExist)
	c.create(u.FH, "in-a-file", createUnchecked, sattr3{}, [8]byte{}).want(t, "CREATE in a file", nfsErrNotdir)
}

// TestNFSGuardedCreateRace: GUARDED creates of one name racing on several
// connections (hosts taking an ESXi lock): exactly one wins, the others
// get EXIST.
func TestNFSGuardedCreateRace(t *testing.T) {
	e := newNFSEnv(t, Options{})
	var hosts []*nfsClient
	for range 4 {
		hosts = append(hosts, e.dial(rootCred()))
	}
	for round := range 30 {
		name := fmt.Sprintf(".lck-%016x", round+1)
		var won, lost atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			c := hosts[i%len(hosts)]
			wg.Go(func() {
				res := c.create(e.root(), name, createGuarded, sattr3{}, [8]byte{})
				switch {
				case res.Err != nil:
					t.Errorf("CREATE GUARDED: %v", res.Err)
				case res.St == nfsOK:
					won.Add(1)
				case res.St == nfsErrExist:
					lost.Add(1)
				default:
					t.Errorf("CREATE GUARDED: %s", stName(res.St))
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 || lost.Load() != 15 {
			t.Fatalf("16 racing GUARDED creates of %s: %d won, %d got EXIST", name, won.Load(), lost.Load())
		}
	}
}

// TestNFSCreateExclusiveZeroVerifier: EXCLUSIVE with a verifier of zeros
// over a file made by UNCHECKED or GUARDED (which store no verifier) must
// be EXIST: that file was not made by this call.
func TestNFSCreateExclusiveZeroVerifier(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	mkfile(t, c, e.root(), "plain", 0o644, []byte("data"))
	c.create(e.root(), "plain", createExclusive, sattr3{}, [8]byte{}).want(t, "CREATE EXCLUSIVE (zero verifier) over a GUARDED-created file", nfsErrExist)
}

func TestNFSMkdirSymlinkMknod(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	root0 := mustAttr(t, c, e.root())
	d := c.mkdir(e.root(), "d", sattr3{}).ok(t, "MKDIR")
	if d.Attr.Type != uint32(snapstore.TypeDir) || d.Attr.Nlink != 2 || d.Attr.Mode != 0o755 {
		t.Fatalf("MKDIR attributes %+v", d.Attr)
	}
	if a := mustAttr(t, c, e.root()); a.Nlink != root0.Nlink+1 {
		t.Fatalf("parent nlink %d after MKDIR, want %d", a.Nlink, root0.Nlink+1)
	}
	if d.Wcc.After == nil || d.Wcc.After.Nlink != root0.Nlink+1 {
		t.Fatalf("MKDIR directory wcc %+v", d.Wcc.After)
	}
	d2 := c.mkdir(e.root(), "d2", sattr3{Mode: nfsRef(uint32(0o1777))}).ok(t, "MKDIR 1777")
	if d2.Attr.Mode != 0o1777 {
		t.Fatalf("MKDIR mode %o, want 1777", d2.Attr.Mode)
	}
	c.mkdir(e.root(), "d", sattr3{}).want(t, "MKDIR over a directory", nfsErrExist)
	f := mkfile(t, c, e.root(), "f", 0o644, nil)
	c.mkdir(e.root(), "f", sattr3{}).want(t, "MKDIR over a file", nfsErrExist)
	c.mkdir(f.FH, "x", sattr3{}).want(t, "MKDIR in a file", nfsErrNotdir)

	// MKNOD
	fifo := c.mknod(d.FH, "fifo", uint32(snapstore.TypeFifo), sattr3{Mode: nfsRef(uint32(0o600))}, 0, 0).ok(t, "MKNOD fifo")
	if fifo.Attr.Type != uint32(snapstore.TypeFifo) || fifo.Attr.Mode != 0o600 {
		t.Fatalf("MKNOD fifo: %+v", fifo.Attr)
	}
	sock := c.mknod(d.FH, "sock", uint32(snapstore.TypeSock), sattr3{}, 0, 0).ok(t, "MKNOD socket")
	if sock.Attr.Type != uint32(snapstore.TypeSock) {
		t.Fatalf("MKNOD socket: %+v", sock.Attr)
	}
	chr := c.mknod(d.FH, "null", uint32(snapstore.TypeChr), sattr3{Mode: nfsRef(uint32(0o666))}, 1, 3).ok(t, "MKNOD chr by root")
	if chr.Attr.Type != uint32(snapstore.TypeChr) || chr.Attr.Major != 1 || chr.Attr.Minor != 3 {
		t.Fatalf("MKNOD chr: %+v", chr.Attr)
	}
	blk := c.mknod(d.FH, "sda", uint32(snapstore.TypeBlk), sattr3{}, 8, 0).ok(t, "MKNOD blk by root")
	if blk.Attr.Type != uint32(snapstore.TypeBlk) || blk.Attr.Major != 8 {
		t.Fatalf("MKNOD blk: %+v", blk.Attr)
	}
	if a := mustAttr(t, c, chr.FH); a.Major != 1 || a.Minor != 3 {
		t.Fatalf("GETATTR of the chr device: rdev %d,%d", a.Major, a.Minor)
	}
	user := e.dial(userCred(1000, 1000))
	c.setattr(d.FH, sattr3{Mode: nfsRef(uint32(0o777))}, nil).ok(t, "chmod 777")
	user.mknod(d.FH, "chr2", uint32(snapstore.TypeChr), sattr3{}, 1, 3).want(t, "MKNOD chr by a user", nfsErrPerm)
	user.mknod(d.FH, "fifo2", uint32(snapstore.TypeFifo), sattr3{}, 0, 0).ok(t, "MKNOD fifo by a user")
	for _, typ := range []uint32{uint32(snapstore.TypeReg), uint32(snapstore.TypeDir), uint32(snapstore.TypeLnk), 0, 8, 99} {
		c.mknod(d.FH, fmt.Sprintf("bad%d", typ), typ, sattr3{}, 0, 0).want(t, fmt.Sprintf("MKNOD of type %d", typ), nfsErrBadtype)
	}
	c.mknod(d.FH, "fifo", uint32(snapstore.TypeFifo), sattr3{}, 0, 0).want(t, "MKNOD over an existing name", nfsErrExist)
	c.read(fifo.FH, 0, 10).want(t, "READ of a fifo", nfsErrInval)
	// A user creating in a directory without write permission.
	user.mkdir(e.root(), "nope", sattr3{}).want(t, "MKDIR without write permission", nfsErrAcces)
	user.create(e.root(), "nope", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE without write permission", nfsErrAcces)
	// New objects belong to the caller.
	if uf := user.create(d.FH, "mine", createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE by a user"); uf.Attr.UID != 1000 || uf.Attr.GID != 1000 {
		t.Fatalf("a user's new file owned by %d:%d", uf.Attr.UID, uf.Attr.GID)
	}
}

func TestNFSRemoveRmdir(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	d := c.mkdir(e.root(), "d", sattr3{}).ok(t, "MKDIR")
	f := mkfile(t, c, d.FH, "f", 0o644, []byte("x"))
	sub := c.mkdir(d.FH, "sub", sattr3{}).ok(t, "MKDIR sub")

	c.remove(d.FH, "missing").want(t, "REMOVE missing", nfsErrNoent)
	c.remove(d.FH, "sub").want(t, "REMOVE of a directory", nfsErrIsdir)
	c.rmdir(e.root(), "d").want(t, "RMDIR not empty", nfsErrNotempty)
	c.rmdir(d.FH, "f").want(t, "RMDIR of a file", nfsErrNotdir)
	c.rmdir(d.FH, "missing").want(t, "RMDIR missing", nfsErrNoent)
	if res := c.rmdir(d.FH, "."); res.Err != nil || res.St == nfsOK {
		t.Fatalf(`RMDIR ".": %s %v`, stName(res.St), res.Err)
	}
	if res := c.rmdir(sub.FH, ".."); res.Err != nil || res.St == nfsOK {
		t.Fatalf(`RMDIR "..": %s %v`, stName(res.St), res.Err)
	}
	rm := c.remove(d.FH, "f").ok(t, "REMOVE")
	if rm.Wcc.Before == nil || rm.Wcc.After == nil {
		t.Fatalf("REMOVE without directory wcc")
	}
	c.getattr(f.FH).want(t, "GETATTR of a removed file", nfsErrStale)
	c.read(f.FH, 0, 1).want(t, "READ of a removed file", nfsErrStale)
	c.lookup(d.FH, "f").want(t, "LOOKUP of a removed file", nfsErrNoent)
	nl := mustAttr(t, c, d.FH).Nlink
	c.rmdir(d.FH, "sub").ok(t, "RMDIR")
	if a := mustAttr(t, c, d.FH); a.Nlink != nl-1 {
		t.Fatalf("nlink %d after RMDIR, want %d", a.Nlink, nl-1)
	}
	c.getattr(sub.FH).want(t, "GETATTR of a removed directory", nfsErrStale)
	c.create(sub.FH, "x", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE in a removed directory", nfsErrStale)
	c.rmdir(e.root(), "d").ok(t, "RMDIR now empty")
	// Sticky directory: a user may not remove another's file.
	s := c.mkdir(e.root(), "tmp", sattr3{Mode: nfsRef(uint32(0o1777))}).ok(t, "MKDIR sticky")
	mkfile(t, c, s.FH, "roots", 0o666, nil)
	user := e.dial(userCred(1000, 1000))
	user.remove(s.FH, "roots").want(t, "REMOVE of another's file in a sticky directory", nfsErrAcces)
	mkfile(t, user, s.FH, "mine", 0o644, nil)
	user.remove(s.FH, "mine").ok(t, "REMOVE of one's own file in a sticky directory")
}

func TestNFSRename(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	r := e.root()
	a := mkfile(t, c, r, "a", 0o644, []byte("AAAA"))
	b := mkfile(t, c, r, "b", 0o644, []byte("BB"))

	// Over an existing target: the target is replaced in one step.
	res := c.rename(r, "a", r, "b").ok(t, "RENAME a over b")
	if res.Wcc.After == nil || res.ToWcc.After == nil {
		t.Fatalf("RENAME without wcc data")
	}
	c.lookup(r, "a").want(t, "LOOKUP a after RENAME", nfsErrNoent)
	if l := c.lookup(r, "b").ok(t, "LOOKUP b"); l.Attr.FileID != a.Attr.FileID || !bytes.Equal(l.FH, a.FH) {
		t.Fatalf("b is fileid %d after RENAME, want a's %d", l.Attr.FileID, a.Attr.FileID)
	}
	if got := readAll(t, c, a.FH, 100); string(got) != "AAAA" {
		t.Fatalf("renamed file reads %q", got)
	}
	c.getattr(b.FH).want(t, "GETATTR of the replaced file", nfsErrStale)

	// Concurrent readers see either the old or the new file, never none.
	mkfile(t, c, r, "src", 0o644, []byte("new"))
	mkfile(t, c, r, "dst", 0o644, []byte("old"))
	var missing atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if l := c.lookup(r, "dst"); l.St != nfsOK {
					missing.Add(1)
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	c.rename(r, "src", r, "dst").ok(t, "RENAME src over dst")
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if missing.Load() != 0 {
		t.Fatalf("LOOKUP of the target failed %d times during RENAME", missing.Load())
	}

	d1 := c.mkdir(r, "d1", sattr3{}).ok(t, "MKDIR d1")
	d2 := c.mkdir(r, "d2", sattr3{}).ok(t, "MKDIR d2")
	sub := c.mkdir(d1.FH, "sub", sattr3{}).ok(t, "MKDIR d1/sub")
	mkfile(t, c, d2.FH, "full", 0o644, nil)
	c.rename(r, "d1", r, "dst").want(t, "RENAME a directory over a file", nfsErrNotdir)
	c.rename(r, "dst", r, "d1").want(t, "RENAME a file over a directory", nfsErrIsdir)
	c.rename(r, "d1", d1.FH, "x").want(t, "RENAME a directory into itself", nfsErrInval)
	c.rename(r, "d1", sub.FH, "x").want(t, "RENAME a directory below itself", nfsErrInval)
	if res := c.rename(r, "d1", r, "d2"); res.Err != nil || (res.St != nfsErrNotempty && res.St != nfsErrExist) {
		t.Fatalf("RENAME over a non-empty directory: %s %v", stName(res.St), res.Err)
	}
	c.rename(r, "missing", r, "x").want(t, "RENAME of a missing name", nfsErrNoent)
	c.rename(r, "dst", a.FH, "x").want(t, "RENAME into a file", nfsErrNotdir)

	// A directory moved to another parent: "..", nlinks.
	n1, n2 := mustAttr(t, c, d1.FH).Nlink, mustAttr(t, c, d2.FH).Nlink
	c.rename(d1.FH, "sub", d2.FH, "moved").ok(t, "RENAME a directory across directories")
	if l := c.lookup(sub.FH, "..").ok(t, "LOOKUP .."); l.Attr.FileID != d2.Attr.FileID {
		t.Fatalf(`".." of the moved directory is %d, want %d`, l.Attr.FileID, d2.Attr.FileID)
	}
	if x, y := mustAttr(t, c, d1.FH).Nlink, mustAttr(t, c, d2.FH).Nlink; x != n1-1 || y != n2+1 {
		t.Fatalf("nlinks after moving a directory: %d %d, want %d %d", x, y, n1-1, n2+1)
	}
	// A directory over an empty directory.
	empty := c.mkdir(r, "empty", sattr3{}).ok(t, "MKDIR empty")
	c.rename(r, "d1", r, "empty").ok(t, "RENAME a directory over an empty one")
	c.getattr(empty.FH).want(t, "GETATTR of the replaced directory", nfsErrStale)
	// Two names of one file: nothing happens, both stay.
	c.link(a.FH, r, "a2").ok(t, "LINK")
	c.rename(r, "b", r, "a2").ok(t, "RENAME over another name of the same file")
	c.lookup(r, "b").ok(t, "LOOKUP b")
	c.lookup(r, "a2").ok(t, "LOOKUP a2")
	// Renaming to the same name.
	c.rename(r, "b", r, "b").ok(t, "RENAME to itself")
	c.lookup(r, "b").ok(t, "LOOKUP b after RENAME to itself")
}

func TestNFSLink(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	r := e.root()
	f := mkfile(t, c, r, "f", 0o644, []byte("data"))
	d := c.mkdir(r, "d", sattr3{}).ok(t, "MKDIR")
	l := c.link(f.FH, d.FH, "g").ok(t, "LINK")
	if l.Attr == nil || l.Attr.Nlink != 2 || l.Wcc.After == nil {
		t.Fatalf("LINK results: %+v %+v", l.Attr, l.Wcc.After)
	}
	g := c.lookup(d.FH, "g").ok(t, "LOOKUP the link")
	if g.Attr.FileID != f.Attr.FileID || !bytes.Equal(g.FH, f.FH) {
		t.Fatalf("the link is fileid %d, want %d", g.Attr.FileID, f.Attr.FileID)
	}
	c.link(f.FH, d.FH, "g").want(t, "LINK over an existing name", nfsErrExist)
	if res := c.link(d.FH, r, "dirlink"); res.Err != nil || res.St == nfsOK {
		t.Fatalf("LINK of a directory: %s %v", stName(res.St), res.Err)
	}
	c.link(f.FH, f.FH, "x").want(t, "LINK into a file", nfsErrNotdir)
	c.remove(r, "f").ok(t, "REMOVE one name")
	if a := mustAttr(t, c, f.FH); a.Nlink != 1 {
		t.Fatalf("nlink %d after removing one of two names", a.Nlink)
	}
	if got := readAll(t, c, g.FH, 100); string(got) != "data" {
		t.Fatalf("the other name reads %q", got)
	}
	c.remove(d.FH, "g").ok(t, "REMOVE the last name")
	c.getattr(f.FH).want(t, "GETATTR after the last name is removed", nfsErrStale)
	// Symlinks and special files may be linked too.
	s := c.symlink(r, "s", sattr3{}, "target").ok(t, "SYMLINK")
	c.link(s.FH, r, "s2").ok(t, "LINK a symlink")
}

func TestNFSReaddir(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	d := c.mkdir(e.root(), "d", sattr3{}).ok(t, "MKDIR")
	fileids := map[string]uint64{}
	for i := range 50 {
		name := fmt.Sprintf("file-%02d", i)
		fileids[name] = mkfile(t, c, d.FH, name, 0o644, nil).Attr.FileID
	}
	sub := c.mkdir(d.FH, "sub", sattr3{}).ok(t, "MKDIR sub")
	fileids["sub"] = sub.Attr.FileID
	fileids["."] = d.Attr.FileID
	fileids[".."] = mustAttr(t, c, e.root()).FileID

	check := func(what string, ents []dirEnt3) {
		t.Helper()
		seen := entNames(ents)
		for name := range fileids {
			if seen[name] != 1 {
				t.Fatalf("%s: %q listed %d times", what, name, seen[name])
			}
		}
		if len(ents) != len(fileids) {
			t.Fatalf("%s: %d entries, want %d", what, len(ents), len(fileids))
		}
		for _, e := range ents {
			if e.FileID != fileids[e.Name] {
				t.Fatalf("%s: %q has fileid %d, want %d", what, e.Name, e.FileID, fileids[e.Name])
			}
		}
	}
	// One page.
	all := c.readdir(d.FH, 0, [8]byte{}, 64<<10).ok(t, "READDIR")
	if !all.EOF || all.DirAttr == nil {
		t.Fatalf("READDIR of 53 entries in 64 KiB: eof %v", all.EOF)
	}
	check("READDIR in one page", all.Entries)
	// Small pages: several entries each.
	pages := 0
	var ents []dirEnt3
	var cookie uint64
	verf := all.Verf
	for {
		res := c.readdir(d.FH, cookie, verf, 400).ok(t, "READDIR page")
		if n := readdirSize(res); n > 400 {
			t.Fatalf("READDIR with count 400: a reply of %d bytes", n)
		}
		if res.Verf != verf {
			t.Fatalf("cookie verifier changed: %x then %x", verf, res.Verf)
		}
		pages++
		ents = append(ents, res.Entries...)
		if res.EOF {
			break
		}
		if len(res.Entries) == 0 || pages > 100 {
			t.Fatalf("READDIR page %d: %d entries, no eof", pages, len(res.Entries))
		}
		cookie = res.Entries[len(res.Entries)-1].Cookie
	}
	if pages < 5 {
		t.Fatalf("53 entries in %d pages of 400 bytes", pages)
	}
	check("READDIR in pages of 400 bytes", ents)
	// Cookies are non-zero and distinct.
	cookies := map[uint64]bool{}
	for _, e := range ents {
		if e.Cookie == 0 || cookies[e.Cookie] {
			t.Fatalf("cookie %d of %q is zero or repeated", e.Cookie, e.Name)
		}
		cookies[e.Cookie] = true
	}

	// READDIRPLUS: attributes and handles with each entry.
	pages, cookie, ents = 0, 0, nil
	for {
		res := c.readdirplus(d.FH, cookie, verf, 200, 1200).ok(t, "READDIRPLUS page")
		if n := readdirSize(res); n > 1200 {
			t.Fatalf("READDIRPLUS with maxcount 1200: a reply of %d bytes", n)
		}
		pages++
		ents = append(ents, res.Entries...)
		if res.EOF {
			break
		}
		if len(res.Entries) == 0 || pages > 100 {
			t.Fatalf("READDIRPLUS page %d: %d entries, no eof", pages, len(res.Entries))
		}
		cookie = res.Entries[len(res.Entries)-1].Cookie
	}
	if pages < 5 {
		t.Fatalf("READDIRPLUS: 53 entries in %d pages of 1200 bytes", pages)
	}
	check("READDIRPLUS", ents)
	for _, e := range ents {
		if e.Attr == nil || e.Attr.FileID != e.FileID || e.FH == nil {
			t.Fatalf("READDIRPLUS entry %q: attributes %+v, handle %x", e.Name, e.Attr, e.FH)
		}
		if a := mustAttr(t, c, e.FH); a.FileID != e.FileID {
			t.Fatalf("READDIRPLUS handle of %q is fileid %d, want %d", e.Name, a.FileID, e.FileID)
		}
	}

	// A count too small for one entry: TOOSMALL.
	for _, n := range []uint32{0, 10, 50, 100} {
		res := c.readdir(d.FH, 0, [8]byte{}, n).want(t, fmt.Sprintf("READDIR count %d", n), nfsErrToosmall)
		if res.DirAttr == nil {
			t.Errorf("READDIR TOOSMALL without the directory's attributes")
		}
		c.readdirplus(d.FH, 0, [8]byte{}, n, n).want(t, fmt.Sprintf("READDIRPLUS maxcount %d", n), nfsErrToosmall)
	}
	// A cookie past the end: nothing more.
	if res := c.readdir(d.FH, 1<<40, verf, 4096).ok(t, "READDIR past the end"); len(res.Entries) != 0 || !res.EOF {
		t.Fatalf("READDIR past the end: %d entries, eof %v", len(res.Entries), res.EOF)
	}
	// An empty directory: "." and "..".
	if res := c.readdir(sub.FH, 0, [8]byte{}, 4096).ok(t, "READDIR empty"); len(res.Entries) != 2 || !res.EOF {
		t.Fatalf("READDIR of an empty directory: %v", res.Entries)
	}
	f := c.lookup(d.FH, "file-00").ok(t, "LOOKUP").FH
	c.readdir(f, 0, [8]byte{}, 4096).want(t, "READDIR of a file", nfsErrNotdir)
	c.readdirplus(f, 0, [8]byte{}, 4096, 4096).want(t, "READDIRPLUS of a file", nfsErrNotdir)
}

// TestNFSReaddirStableCookies removes entries, listed and not yet listed,
// between pages (enough to compact the directory), and adds some: the
// listing goes on from its cookie, listing each survivor once.
func TestNFSReaddirStableCookies(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	d := c.mkdir(e.root(), "d", sattr3{}).ok(t, "MKDIR").FH
	const n = 200
	for i := range n {
		mkfile(t, c, d, fmt.Sprintf("f%03d", i), 0o644, nil)
	}
	for _, plus := range []bool{false, true} {
		t.Run(fmt.Sprintf("plus=%v", plus), func(t *testing.T) {
			dir := c.mkdir(d, fmt.Sprintf("sub-%v", plus), sattr3{}).ok(t, "MKDIR").FH
			live := map[string]bool{}
			for i := range n {
				name := fmt.Sprintf("f%03d", i)
				mkfile(t, c, dir, name, 0o644, nil)
				live[name] = true
			}
			page := func(cookie uint64) nfsRes {
				if plus {
					return c.readdirplus(dir, cookie, [8]byte{}, 1000, 2000).ok(t, "READDIRPLUS")
				}
				return c.readdir(dir, cookie, [8]byte{}, 600).ok(t, "READDIR")
			}
			seen := map[string]int{}
			res := page(0)
			for _, e := range res.Entries {
				seen[e.Name]++
			}
			cookie := res.Entries[len(res.Entries)-1].Cookie
			// Remove every entry but one in four: some were listed, most not.
			removed := map[string]bool{}
			for i := range n {
				if i%4 != 0 {
					name := fmt.Sprintf("f%03d", i)
					c.remove(dir, name).ok(t, "REMOVE")
					removed[name] = true
					delete(live, name)
				}
			}
			mkfile(t, c, dir, "late", 0o644, nil)
			live["late"] = true
			for pages := 0; !res.EOF; pages++ {
				res = page(cookie)
				for _, e := range res.Entries {
					seen[e.Name]++
				}
				if len(res.Entries) > 0 {
					cookie = res.Entries[len(res.Entries)-1].Cookie
				} else if !res.EOF || pages > 1000 {
					t.Fatalf("empty page without eof")
				}
			}
			for name := range live {
				if seen[name] != 1 {
					t.Errorf("%q, never removed, listed %d times", name, seen[name])
				}
			}
			for name, k := range seen {
				if k > 1 {
					t.Errorf("%q listed %d times", name, k)
				}
				if !live[name] && !removed[name] && name != "." && name != ".." {
					t.Errorf("%q listed but never made", name)
				}
			}
		})
	}
}

// TestNFSReaddirHuge makes a 100,000-entry directory through the server
// (CREATEs pipelined on one connection) and lists it completely, with
// READDIR in 32 KiB pages and READDIRPLUS in 1 MiB pages.
func TestNFSReaddirHuge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	n := *nfsHugeDir
	if n == 0 {
		// 100,000 CREATEs take about 12 s on two cores, over two minutes
		// under the race detector: there, a fifth.
		n = 100_000
		if raceEnabled() {
			n = 20_000
			t.Logf("race detector on: %d entries (-nfs.hugedir=100000 for the full size)", n)
		}
	}
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	d := c.mkdir(e.root(), "huge", sattr3{}).ok(t, "MKDIR").FH

	start := time.Now()
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				name := fmt.Sprintf("vm-%06d.vmdk", i)
				if err := c.create(d, name, createGuarded, sattr3{}, [8]byte{}).check(nfsOK); err != nil {
					t.Errorf("CREATE %s: %v", name, err)
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	t.Logf("%d pipelined CREATEs in %v", n, time.Since(start))

	checkAll := func(what string, ents []dirEnt3) {
		t.Helper()
		if len(ents) != n+2 {
			t.Errorf("%s: %d entries, want %d", what, len(ents), n+2)
		}
		seen := make(map[string]bool, n+2)
		for _, e := range ents {
			if seen[e.Name] {
				t.Fatalf("%s: %q listed twice", what, e.Name)
			}
			seen[e.Name] = true
		}
		for i := range n {
			if name := fmt.Sprintf("vm-%06d.vmdk", i); !seen[name] {
				t.Fatalf("%s: %q missing", what, name)
			}
		}
	}
	start = time.Now()
	var slowest time.Duration
	var ents []dirEnt3
	var cookie uint64
	pages := 0
	for {
		t0 := time.Now()
		res := c.readdir(d, cookie, [8]byte{}, 32<<10).ok(t, "READDIR")
		slowest = max(slowest, time.Since(t0))
		pages++
		ents = append(ents, res.Entries...)
		if res.EOF {
			break
		}
		cookie = res.Entries[len(res.Entries)-1].Cookie
	}
	t.Logf("READDIR of %d entries: %d pages of 32 KiB in %v (slowest page %v)", len(ents), pages, time.Since(start), slowest)
	checkAll("READDIR", ents)

	start = time.Now()
	ents, cookie, pages = nil, 0, 0
	for {
		res := c.readdirplus(d, cookie, [8]byte{}, 64<<10, 1<<20).ok(t, "READDIRPLUS")
		pages++
		ents = append(ents, res.Entries...)
		if res.EOF {
			break
		}
		cookie = res.Entries[len(res.Entries)-1].Cookie
	}
	t.Logf("READDIRPLUS of %d entries: %d pages of 1 MiB in %v", len(ents), pages, time.Since(start))
	checkAll("READDIRPLUS", ents)
}

func TestNFSFsstatFsinfoPathconf(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	st := c.fsstat(e.root()).ok(t, "FSSTAT")
	s := st.FSStat
	if s.Tbytes == 0 || s.Fbytes > s.Tbytes || s.Abytes > s.Fbytes || st.Attr == nil {
		t.Fatalf("FSSTAT %+v", s)
	}
	if s.Tfiles == 0 || s.Ffiles > s.Tfiles || s.Afiles > s.Ffiles {
		t.Fatalf("FSSTAT files %+v", s)
	}
	fi := c.fsinfo(e.root()).ok(t, "FSINFO").FSInfo
	bs := uint32(e.ds.Blocks.BlockSize())
	if fi.Rtmax != 1<<20 || fi.Wtmax != 1<<20 || fi.Rtpref == 0 || fi.Wtpref == 0 || fi.Rtpref > fi.Rtmax || fi.Wtpref > fi.Wtmax {
		t.Fatalf("FSINFO transfer sizes %+v, want rtmax = wtmax = 1 MiB", fi)
	}
	if fi.Rtpref%bs != 0 || fi.Wtpref%bs != 0 || fi.Rtmult != bs || fi.Wtmult != bs || fi.Dtpref == 0 {
		t.Fatalf("FSINFO preferred sizes %+v do not suit the %d-byte block", fi, bs)
	}
	if fi.Maxfilesize < 1<<40 || fi.TimeDelta != (nfsTime{0, 1}) {
		t.Fatalf("FSINFO maxfilesize %d time_delta %v", fi.Maxfilesize, fi.TimeDelta)
	}
	const link, symlink, homogeneous, cansettime = 1, 2, 8, 16
	if p := fi.Properties; p&(link|symlink|homogeneous|cansettime) != link|symlink|homogeneous|cansettime {
		t.Fatalf("FSINFO properties %#x", p)
	}
	pc := c.pathconf(e.root()).ok(t, "PATHCONF").Pathconf
	if pc.NameMax != 255 || !pc.NoTrunc || !pc.CasePreserving || pc.CaseInsensitive || pc.Linkmax < 2 {
		t.Fatalf("PATHCONF %+v", pc)
	}
	f := mkfile(t, c, e.root(), "f", 0o644, nil).FH
	c.fsstat(f).ok(t, "FSSTAT of a file")
	c.fsinfo(f).ok(t, "FSINFO of a file")
	c.pathconf(f).ok(t, "PATHCONF of a file")
	// FSSTAT reports the file system's real space (logged, not checked:
	// other writers share the file system).
	before := c.fsstat(e.root()).ok(t, "FSSTAT").FSStat
	big := randBytes(1 << 20)
	for i := range 32 {
		c.write(f, uint64(i)<<20, big, unstable).ok(t, "WRITE")
	}
	c.commit(f, 0, 0).ok(t, "COMMIT")
	if err := e.ds.Blocks.Sync(); err != nil {
		t.Fatal(err)
	}
	after := c.fsstat(e.root()).ok(t, "FSSTAT").FSStat
	t.Logf("FSSTAT: %d then %d bytes free after 32 MiB written", before.Fbytes, after.Fbytes)
}

func TestNFSNames(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	r := e.root()
	f := mkfile(t, c, r, "f", 0o644, nil)
	for _, tc := range []struct {
		name string
		want nfsstat
	}{
		{"a/b", nfsErrInval},
		{"a\x00b", nfsErrInval},
		{"/", nfsErrInval},
		{"", nfsErrInval},
		{strings.Repeat("n", 256), nfsErrNametool},
	} {
		label := fmt.Sprintf("%.20q (%d bytes)", tc.name, len(tc.name))
		t.Run(fmt.Sprintf("len%d", len(tc.name)), func(t *testing.T) {
			c.create(r, tc.name, createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE "+label, tc.want)
			c.mkdir(r, tc.name, sattr3{}).want(t, "MKDIR "+label, tc.want)
			c.symlink(r, tc.name, sattr3{}, "x").want(t, "SYMLINK "+label, tc.want)
			c.mknod(r, tc.name, uint32(snapstore.TypeFifo), sattr3{}, 0, 0).want(t, "MKNOD "+label, tc.want)
			c.link(f.FH, r, tc.name).want(t, "LINK "+label, tc.want)
			c.rename(r, "f", r, tc.name).want(t, "RENAME to "+label, tc.want)
			if len(tc.name) > 255 {
				c.lookup(r, tc.name).want(t, "LOOKUP "+label, nfsErrNametool)
				c.remove(r, tc.name).want(t, "REMOVE "+label, nfsErrNametool)
			} else if res := c.lookup(r, tc.name); res.Err != nil || (res.St != nfsErrNoent && res.St != nfsErrInval) {
				t.Fatalf("LOOKUP %s: %s %v", label, stName(res.St), res.Err)
			}
		})
	}
	// "." and ".." cannot be made.
	for _, name := range []string{".", ".."} {
		if res := c.create(r, name, createUnchecked, sattr3{}, [8]byte{}); res.Err != nil || res.St == nfsOK {
			t.Fatalf("CREATE %q: %s %v", name, stName(res.St), res.Err)
		}
		if res := c.mkdir(r, name, sattr3{}); res.Err != nil || res.St == nfsOK {
			t.Fatalf("MKDIR %q: %s %v", name, stName(res.St), res.Err)
		}
	}
	// 255 bytes is fine, in UTF-8 too.
	long := strings.Repeat("x", 255)
	c.create(r, long, createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE a 255-byte name")
	c.lookup(r, long).ok(t, "LOOKUP a 255-byte name")
	utf := strings.Repeat("é", 127) // 254 bytes
	c.mkdir(r, utf, sattr3{}).ok(t, "MKDIR a 254-byte UTF-8 name")
	// The connection is still fine.
	mustAttr(t, c, r)
}

func TestNFSBadHandles(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	f := mkfile(t, c, e.root(), "f", 0o644, []byte("x"))
	gone := mkfile(t, c, e.root(), "gone", 0o644, nil)
	goneDir := c.mkdir(e.root(), "gonedir", sattr3{}).ok(t, "MKDIR")
	c.remove(e.root(), "gone").ok(t, "REMOVE")
	c.rmdir(e.root(), "gonedir").ok(t, "RMDIR")

	otherFS := bytes.Clone(f.FH)
	otherFS[8] ^= 0xff // another datastore's fsid
	badGen := bytes.Clone(f.FH)
	badGen[27] ^= 1 // another generation of the inode
	noIno := bytes.Clone(f.FH)
	binary.BigEndian.PutUint64(noIno[16:], 1<<50)
	handles := map[string][]byte{
		"random 32 bytes":  randBytes(32),
		"random 56 bytes":  randBytes(56),
		"random 64 bytes":  randBytes(64),
		"8 bytes":          randBytes(8),
		"empty":            {},
		"other datastore":  otherFS,
		"other generation": badGen,
		"unknown inode":    noIno,
		"removed file":     gone.FH,
		"removed dir":      goneDir.FH,
	}
	for what, h := range handles {
		for _, op := range []struct {
			name string
			res  func() nfsRes
		}{
			{"GETATTR", func() nfsRes { return c.getattr(h) }},
			{"SETATTR", func() nfsRes { return c.setattr(h, sattr3{Mode: nfsRef(uint32(0o600))}, nil) }},
			{"LOOKUP", func() nfsRes { return c.lookup(h, "x") }},
			{"ACCESS", func() nfsRes { return c.access(h, 0x3f) }},
			{"READLINK", func() nfsRes { return c.readlink(h) }},
			{"READ", func() nfsRes { return c.read(h, 0, 10) }},
			{"WRITE", func() nfsRes { return c.write(h, 0, []byte("x"), fileSync) }},
			{"CREATE", func() nfsRes { return c.create(h, "x", createGuarded, sattr3{}, [8]byte{}) }},
			{"MKDIR", func() nfsRes { return c.mkdir(h, "x", sattr3{}) }},
			{"SYMLINK", func() nfsRes { return c.symlink(h, "x", sattr3{}, "y") }},
			{"MKNOD", func() nfsRes { return c.mknod(h, "x", uint32(snapstore.TypeFifo), sattr3{}, 0, 0) }},
			{"REMOVE", func() nfsRes { return c.remove(h, "x") }},
			{"RMDIR", func() nfsRes { return c.rmdir(h, "x") }},
			{"RENAME from", func() nfsRes { return c.rename(h, "x", e.root(), "y") }},
			{"RENAME to", func() nfsRes { return c.rename(e.root(), "f", h, "y") }},
			{"LINK file", func() nfsRes { return c.link(h, e.root(), "y") }},
			{"LINK dir", func() nfsRes { return c.link(f.FH, h, "y") }},
			{"READDIR", func() nfsRes { return c.readdir(h, 0, [8]byte{}, 4096) }},
			{"READDIRPLUS", func() nfsRes { return c.readdirplus(h, 0, [8]byte{}, 4096, 4096) }},
			{"FSSTAT", func() nfsRes { return c.fsstat(h) }},
			{"FSINFO", func() nfsRes { return c.fsinfo(h) }},
			{"PATHCONF", func() nfsRes { return c.pathconf(h) }},
			{"COMMIT", func() nfsRes { return c.commit(h, 0, 0) }},
		} {
			if err := op.res().check(nfsErrStale); err != nil {
				t.Errorf("%s with a handle (%s): %v", op.name, what, err)
			}
		}
	}
	// The connection stayed open throughout.
	mustAttr(t, c, e.root())
	if got := mustAttr(t, c, f.FH); got.FileID != f.Attr.FileID {
		t.Fatalf("fileid changed")
	}
}

func TestNFSHandlesAndFileids(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	r := e.root()
	ids := map[uint64]string{mustAttr(t, c, r).FileID: "/"}
	handles := map[string]string{string(r): "/"}
	add := func(what string, res nfsRes) {
		t.Helper()
		res.ok(t, what)
		if len(res.FH) == 0 || len(res.FH) > maxESXiHandle {
			t.Fatalf("%s: handle of %d bytes", what, len(res.FH))
		}
		if res.Attr.FileID == 0 {
			t.Fatalf("%s: fileid 0", what)
		}
		if prev, dup := ids[res.Attr.FileID]; dup {
			t.Fatalf("%s: fileid %d already %s", what, res.Attr.FileID, prev)
		}
		if prev, dup := handles[string(res.FH)]; dup {
			t.Fatalf("%s: handle already %s", what, prev)
		}
		ids[res.Attr.FileID] = what
		handles[string(res.FH)] = what
	}
	for i := range 20 {
		d := c.mkdir(r, fmt.Sprintf("d%d", i), sattr3{})
		add(fmt.Sprintf("MKDIR d%d", i), d)
		add("CREATE", c.create(d.FH, "f", createGuarded, sattr3{}, [8]byte{}))
		add("SYMLINK", c.symlink(d.FH, "l", sattr3{}, "f"))
		add("MKNOD", c.mknod(d.FH, "p", uint32(snapstore.TypeFifo), sattr3{}, 0, 0))
		// A removed file's fileid is not given again.
		add("CREATE tmp", c.create(d.FH, "tmp", createGuarded, sattr3{}, [8]byte{}))
		c.remove(d.FH, "tmp").ok(t, "REMOVE")
	}
	// LOOKUP gives the same handle every time.
	for i := range 20 {
		d := c.lookup(r, fmt.Sprintf("d%d", i)).ok(t, "LOOKUP")
		f1 := c.lookup(d.FH, "f").ok(t, "LOOKUP f")
		f2 := c.lookup(d.FH, "f").ok(t, "LOOKUP f")
		if !bytes.Equal(f1.FH, f2.FH) || handles[string(f1.FH)] == "" {
			t.Fatalf("LOOKUP handles differ from CREATE's")
		}
	}
}

func TestNFSUsedSparse(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	f := mkfile(t, c, e.root(), "disk-flat.vmdk", 0o600, nil).FH
	const size = 10 << 30
	t0 := time.Now()
	res := c.setattr(f, sattr3{Size: nfsRef(uint64(size))}, nil).ok(t, "SETATTR size 10 GiB")
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("growing to 10 GiB took %v", d)
	}
	if res.Wcc.After == nil || res.Wcc.After.Size != size || res.Wcc.After.Used > 1<<20 {
		t.Fatalf("after growing to 10 GiB: %+v", res.Wcc.After)
	}
	a := mustAttr(t, c, f)
	if a.Size != size || a.Used > 1<<20 {
		t.Fatalf("sparse 10 GiB file: size %d used %d", a.Size, a.Used)
	}
	// Holes read as zeros.
	if r := c.read(f, 5<<30, 65536).ok(t, "READ a hole"); !bytes.Equal(r.Data, make([]byte, 65536)) || r.EOF {
		t.Fatalf("a hole read %d bytes, not all zero, eof %v", r.Count, r.EOF)
	}
	data := randBytes(4 << 20)
	for i := range 4 {
		c.write(f, 3<<30+uint64(i)<<20, data[i<<20:(i+1)<<20], fileSync).ok(t, "WRITE 1 MiB")
	}
	// used is counted from the volume map and cached for a moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a = mustAttr(t, c, f)
		if a.Used >= 4<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a.Used < 4<<20 || a.Used > 8<<20 || a.Size != size {
		t.Fatalf("after 4 MiB written: size %d used %d, want used about 4 MiB", a.Size, a.Used)
	}
	if r := c.read(f, 3<<30, 1<<20).ok(t, "READ back"); !bytes.Equal(r.Data, data[:1<<20]) {
		t.Fatalf("data read back differs")
	}
	// Shrinking gives the space back.
	c.setattr(f, sattr3{Size: nfsRef(uint64(0))}, nil).ok(t, "SETATTR size 0")
	deadline = time.Now().Add(10 * time.Second)
	for {
		a = mustAttr(t, c, f)
		if a.Used == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a.Used != 0 || a.Size != 0 {
		t.Fatalf("after truncating to 0: size %d used %d", a.Size, a.Used)
	}
}

func TestNFSReadOnlyExport(t *testing.T) {
	e := newNFSEnv(t, Options{})
	rw := e.dial(rootCred())
	f := mkfile(t, rw, e.root(), "f", 0o644, []byte("data"))
	d := rw.mkdir(e.root(), "d", sattr3{}).ok(t, "MKDIR")
	mkfile(t, rw, d.FH, "g", 0o644, nil)

	c := dialNFS(t, e.sibling(Options{ReadOnly: true}), ClientOptions{Cred: rootCred()})
	r := e.root()
	for _, op := range []struct {
		name string
		res  nfsRes
	}{
		{"SETATTR", c.setattr(f.FH, sattr3{Mode: nfsRef(uint32(0o600))}, nil)},
		{"SETATTR size", c.setattr(f.FH, sattr3{Size: nfsRef(uint64(0))}, nil)},
		{"WRITE", c.write(f.FH, 0, []byte("x"), fileSync)},
		{"WRITE UNSTABLE", c.write(f.FH, 0, []byte("x"), unstable)},
		{"CREATE", c.create(r, "new", createUnchecked, sattr3{}, [8]byte{})},
		{"CREATE EXCLUSIVE", c.create(r, "new", createExclusive, sattr3{}, [8]byte{1})},
		{"MKDIR", c.mkdir(r, "new", sattr3{})},
		{"SYMLINK", c.symlink(r, "new", sattr3{}, "x")},
		{"MKNOD", c.mknod(r, "new", uint32(snapstore.TypeFifo), sattr3{}, 0, 0)},
		{"REMOVE", c.remove(r, "f")},
		{"RMDIR", c.rmdir(d.FH, "x")},
		{"RENAME", c.rename(r, "f", r, "f2")},
		{"LINK", c.link(f.FH, r, "f2")},
	} {
		if err := op.res.check(nfsErrRofs); err != nil {
			t.Errorf("%s on a read-only export: %v", op.name, err)
		}
	}
	// Reads work.
	if got := readAll(t, c, f.FH, 100); string(got) != "data" {
		t.Fatalf("READ on a read-only export: %q", got)
	}
	c.lookup(r, "d").ok(t, "LOOKUP")
	c.readdirplus(r, 0, [8]byte{}, 4096, 4096).ok(t, "READDIRPLUS")
	c.fsstat(r).ok(t, "FSSTAT")
	c.commit(f.FH, 0, 0).ok(t, "COMMIT")
	// Nothing changed.
	if a := mustAttr(t, rw, f.FH); a.Mode != 0o644 || a.Size != 4 {
		t.Fatalf("the read-only export changed the file: %+v", a)
	}
	rw.lookup(r, "new").want(t, "LOOKUP new", nfsErrNoent)
}

func TestNFSRootSquash(t *testing.T) {
	e := newNFSEnv(t, Options{})
	rw := e.dial(rootCred())
	pub := rw.mkdir(e.root(), "pub", sattr3{Mode: nfsRef(uint32(0o777))}).ok(t, "MKDIR").FH
	secret := mkfile(t, rw, e.root(), "secret", 0o600, []byte("root only"))

	sq := dialNFS(t, e.sibling(Options{RootSquash: true}), ClientOptions{Cred: rootCred()})
	res := sq.create(pub, "made-by-root", createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE as squashed root")
	if res.Attr.UID != 65534 || res.Attr.GID != 65534 {
		t.Fatalf("a squashed root's file is owned by %d:%d, want 65534:65534", res.Attr.UID, res.Attr.GID)
	}
	// Squashed root asks for uid 0: not given.
	res = sq.create(pub, "chown-root", createGuarded, sattr3{UID: nfsRef(uint32(0))}, [8]byte{}).ok(t, "CREATE uid 0")
	if res.Attr.UID != 65534 {
		t.Fatalf("a squashed root made a file owned by %d", res.Attr.UID)
	}
	sq.read(secret.FH, 0, 10).want(t, "READ of a 0600 root file as squashed root", nfsErrAcces)
	sq.create(e.root(), "x", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE in root's 0755 directory as squashed root", nfsErrAcces)
	sq.setattr(secret.FH, sattr3{Mode: nfsRef(uint32(0o666))}, nil).want(t, "chmod root's file as squashed root", nfsErrPerm)
	if a := sq.access(secret.FH, 0x3f).ok(t, "ACCESS"); a.Access != 0 {
		t.Fatalf("ACCESS of a 0600 root file as squashed root: %#x", a.Access)
	}
	// Other users are left alone by root squash.
	if res := dialNFS(t, e.sibling(Options{RootSquash: true}), ClientOptions{Cred: userCred(1000, 1000)}).
		create(pub, "user", createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE as a user"); res.Attr.UID != 1000 {
		t.Fatalf("root squash changed uid 1000 to %d", res.Attr.UID)
	}
	// All squash maps everyone.
	all := dialNFS(t, e.sibling(Options{AllSquash: true}), ClientOptions{Cred: userCred(1000, 1000)})
	if res := all.create(pub, "all", createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE all-squashed"); res.Attr.UID != 65534 || res.Attr.GID != 65534 {
		t.Fatalf("all squash: owned by %d:%d", res.Attr.UID, res.Attr.GID)
	}
}

func TestNFSSecurePorts(t *testing.T) {
	acc := Access{Secure: true}
	e := newNFSEnv(t, Options{Access: acc})
	// An unprivileged port: NFS denies with AUTH_TOOWEAK, MNT says ACCES.
	c := e.dial(rootCred())
	if p := c.conn().LocalAddr().Port(); p < 1024 {
		t.Skipf("the kernel gave a privileged ephemeral port %d", p)
	}
	wantRPCDenied(t, c.null(), AuthTooWeak)
	wantRPCDenied(t, c.getattr(e.root()).Err, AuthTooWeak)
	if m, err := c.mnt("/"); err != nil || m.St != mntAcces {
		t.Fatalf("MNT from an unprivileged port: status %d, %v; want MNT3ERR_ACCES", m.St, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: no privileged source port for the accepted half")
	}
	pc, port := dialPrivileged(t, e.addr, rootCred())
	p := &nfsClient{t: t, rpc: pc, timeout: 30 * time.Second}
	m, err := p.mnt("/")
	if err != nil || m.St != mntOK || !bytes.Equal(m.FH, e.root()) {
		t.Fatalf("MNT from privileged port %d: status %d, %v", port, m.St, err)
	}
	if err := p.null(); err != nil {
		t.Fatalf("NULL from a privileged port: %v", err)
	}
	mustAttr(t, p, m.FH)
	mkfile(t, p, m.FH, "f", 0o644, []byte("ok"))
}

func TestNFSRestart(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	r := e.root()
	d := c.mkdir(r, "vm", sattr3{}).ok(t, "MKDIR")
	data := randBytes(300000)
	f := mkfile(t, c, d.FH, "disk.vmdk", 0o600, nil)
	w := c.write(f.FH, 0, data[:100000], unstable).ok(t, "WRITE UNSTABLE")
	c.write(f.FH, 100000, data[100000:200000], fileSync).ok(t, "WRITE FILE_SYNC")
	c.commit(f.FH, 0, 0).ok(t, "COMMIT")
	c.write(f.FH, 200000, data[200000:], unstable).ok(t, "WRITE UNSTABLE, not committed")
	l := c.symlink(d.FH, "link", sattr3{}, "disk.vmdk").ok(t, "SYMLINK")
	c.link(f.FH, r, "hard").ok(t, "LINK")
	verf := [8]byte{9, 9, 9}
	x := c.create(d.FH, "excl", createExclusive, sattr3{}, verf).ok(t, "CREATE EXCLUSIVE")
	at := nfsTime{1_234_567_890, 111_222_333}
	c.setattr(f.FH, sattr3{Atime: &at}, nil).ok(t, "SETATTR atime")
	gone := mkfile(t, c, d.FH, "gone", 0o644, nil)
	c.remove(d.FH, "gone").ok(t, "REMOVE")
	before := map[string]*fattr3{}
	handles := map[string][]byte{"root": r, "vm": d.FH, "disk": f.FH, "link": l.FH, "excl": x.FH}
	for name, h := range handles {
		before[name] = mustAttr(t, c, h)
	}
	rootHandle := bytes.Clone(r)

	e.restart()
	// The old connection is gone; a new one.
	c = e.dial(rootCred())
	if !bytes.Equal(e.root(), rootHandle) {
		t.Fatalf("the root handle changed across a restart")
	}
	for name, h := range handles {
		a := mustAttr(t, c, h)
		b := before[name]
		if a.FileID != b.FileID || a.Size != b.Size || a.Mode != b.Mode || a.Nlink != b.Nlink || a.FSID != b.FSID || a.Mtime != b.Mtime || a.Atime != b.Atime {
			t.Errorf("%s after restart: %+v, before %+v", name, a, b)
		}
	}
	c.getattr(gone.FH).want(t, "GETATTR of a file removed before the restart", nfsErrStale)
	if got := readAll(t, c, f.FH, 1<<20); !bytes.Equal(got, data) {
		t.Fatalf("after restart the file reads %d bytes, differing from the %d written", len(got), len(data))
	}
	if res := c.readlink(l.FH).ok(t, "READLINK"); res.Target != "disk.vmdk" {
		t.Fatalf("READLINK after restart: %q", res.Target)
	}
	if lk := c.lookup(d.FH, "disk.vmdk").ok(t, "LOOKUP"); !bytes.Equal(lk.FH, f.FH) {
		t.Fatalf("LOOKUP after restart gives another handle")
	}
	w2 := c.write(f.FH, 0, data[:10], unstable).ok(t, "WRITE after restart")
	if w2.Verf == w.Verf {
		t.Fatalf("the write verifier %x did not change across a restart", w.Verf)
	}
	if cm := c.commit(f.FH, 0, 0).ok(t, "COMMIT"); cm.Verf != w2.Verf {
		t.Fatalf("COMMIT verifier %x, WRITE's %x", cm.Verf, w2.Verf)
	}
	c.create(d.FH, "excl", createExclusive, sattr3{}, verf).ok(t, "CREATE EXCLUSIVE retransmitted after restart")
	// New fileids are new, and the handle of a file removed before the
	// restart stays stale: it must not come to name a new file.
	for i := range 3 {
		n := mkfile(t, c, d.FH, fmt.Sprintf("new%d", i), 0o644, []byte("new"))
		for name, b := range before {
			if n.Attr.FileID == b.FileID {
				t.Fatalf("a new file got the fileid of %s", name)
			}
		}
		if n.Attr.FileID == gone.Attr.FileID {
			t.Errorf("new file %d after the restart got fileid %d, the fileid of a file removed before it", i, n.Attr.FileID)
		}
	}
	if res := c.getattr(gone.FH); res.St != nfsErrStale {
		a := res.Attr
		t.Fatalf("the handle of a file removed before the restart now answers %s (a new file: fileid %d, size %d)", stName(res.St), a.FileID, a.Size)
	}
}

// TestNFSRetransmission: a CREATE GUARDED or REMOVE retransmitted with the
// same xid, on the same connection or from the same source port after a
// reconnection, gets the first answer (the duplicate request cache).
func TestNFSRetransmission(t *testing.T) {
	e := newNFSEnv(t, Options{})
	// The first connection too binds its port with SO_REUSEADDR, as a
	// client that means to reconnect from it does.
	cl, port := dialFromPort(t, e.addr, rootCred(), 20000, 40000)
	args := NewXDRWriter(nil)
	dirop(args, e.root(), "once")
	args.Uint32(createGuarded)
	sattr3{}.put(args)
	ctx := context.Background()
	xid := uint32(0x5eed0001)
	for i := range 2 {
		r, err := cl.CallXID(ctx, xid, ProgNFS, 3, nfsCreate, args.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if st := nfsstat(r.Uint32()); st != nfsOK {
			t.Fatalf("CREATE GUARDED, copy %d with the same xid: %s", i+1, stName(st))
		}
	}
	// From the same source port on a new connection.
	cl.Close()
	var c2 *Client
	var err error
	for range 50 {
		c2, err = Dial(ctx, e.addr, ClientOptions{Cred: rootCred(), LocalPort: port})
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("reconnecting from port %d: %v", port, err)
	}
	defer c2.Close()
	r, err := c2.CallXID(ctx, xid, ProgNFS, 3, nfsCreate, args.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if st := nfsstat(r.Uint32()); st != nfsOK {
		t.Fatalf("CREATE GUARDED retransmitted from the same port on a new connection: %s", stName(st))
	}
	// A new xid is a new call.
	r, err = c2.CallXID(ctx, xid+1, ProgNFS, 3, nfsCreate, args.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if st := nfsstat(r.Uint32()); st != nfsErrExist {
		t.Fatalf("CREATE GUARDED with a new xid: %s, want EXIST", stName(st))
	}
	// REMOVE, RENAME and LINK retransmitted get their first answers too.
	c := &nfsClient{t: t, rpc: c2, timeout: 30 * time.Second}
	mkfile(t, c, e.root(), "r1", 0o644, nil)
	mkfile(t, c, e.root(), "l1", 0o644, nil)
	l1 := c.lookup(e.root(), "l1").ok(t, "LOOKUP").FH
	for i, call := range []struct {
		proc uint32
		enc  func(w *XDRWriter)
	}{
		{nfsRemove, func(w *XDRWriter) { dirop(w, e.root(), "once") }},
		{nfsRename, func(w *XDRWriter) {
			dirop(w, e.root(), "r1")
			dirop(w, e.root(), "r2")
		}},
		{nfsLink, func(w *XDRWriter) {
			w.Opaque(l1)
			dirop(w, e.root(), "l2")
		}},
	} {
		a := NewXDRWriter(nil)
		call.enc(a)
		for copy := range 2 {
			r, err := c2.CallXID(ctx, xid+100+uint32(i), ProgNFS, 3, call.proc, a.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if st := nfsstat(r.Uint32()); st != nfsOK {
				t.Fatalf("%s, copy %d with the same xid: %s", procName(call.proc), copy+1, stName(st))
			}
		}
	}
}

func TestMountProtocol(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	if _, err := c.call(ProgMNT, 3, mntNull, nil); err != nil {
		t.Fatalf("MOUNT NULL: %v", err)
	}
	m, err := c.mnt("/")
	if err != nil || m.St != mntOK {
		t.Fatalf("MNT /: status %d, %v", m.St, err)
	}
	if !bytes.Equal(m.FH, e.root()) || len(m.FH) > maxESXiHandle {
		t.Fatalf("MNT / handle %x, want the root's %x", m.FH, e.root())
	}
	if len(m.Flavors) != 1 || m.Flavors[0] != FlavorUnix {
		t.Fatalf("MNT / auth flavors %v, want [AUTH_UNIX]", m.Flavors)
	}
	if a := mustAttr(t, c, m.FH); a.Type != uint32(snapstore.TypeDir) {
		t.Fatalf("the mounted root is not a directory")
	}
	// Spellings of the root.
	for _, p := range []string{"//", "/", ""} {
		if m, err := c.mnt(p); err != nil || m.St != mntOK {
			t.Errorf("MNT %q: status %d, %v", p, m.St, err)
		}
	}
	for _, p := range []string{"/nope", "/vm/disk", "relative"} {
		if m, err := c.mnt(p); err != nil || m.St != mntNoent {
			t.Errorf("MNT %q: status %d, %v; want MNT3ERR_NOENT", p, m.St, err)
		}
	}
	// /snapstore is the read-only snapstore namespace (snapnfs_test.go).
	if m, err := c.mnt("/snapstore"); err != nil || m.St != mntOK || !bytes.Equal(m.FH, e.nfs.SnapRootHandle()) {
		t.Errorf("MNT /snapstore: status %d, %v", m.St, err)
	}
	c.mntVoid(mntUmnt, nfsRef("/snapstore"))
	ex, err := c.export()
	if err != nil {
		t.Fatalf("EXPORT: %v", err)
	}
	dirs := map[string]bool{}
	for _, x := range ex {
		dirs[x.Dir] = true
	}
	if len(ex) != 2 || !dirs["/"] || !dirs["/snapstore"] {
		t.Fatalf("EXPORT: %+v, want / and /snapstore", ex)
	}
	mounts, err := c.dump()
	if err != nil || len(mounts) != 1 || mounts[0] != (mountEnt{"127.0.0.1", "/"}) {
		t.Fatalf("DUMP: %+v, %v", mounts, err)
	}
	root := "/"
	if err := c.mntVoid(mntUmnt, &root); err != nil {
		t.Fatalf("UMNT: %v", err)
	}
	if mounts, err := c.dump(); err != nil || len(mounts) != 0 {
		t.Fatalf("DUMP after UMNT: %+v, %v", mounts, err)
	}
	c.mnt("/")
	if err := c.mntVoid(mntUmntall, nil); err != nil {
		t.Fatalf("UMNTALL: %v", err)
	}
	if mounts, err := c.dump(); err != nil || len(mounts) != 0 {
		t.Fatalf("DUMP after UMNTALL: %+v, %v", mounts, err)
	}
	// The handle works without a mount record: NFS keeps no state.
	mustAttr(t, c, m.FH)
	_, err = c.call(ProgMNT, 3, 6, nil)
	wantAccept(t, err, AcceptProcUnavail)
	// A client outside --allow is refused.
	deny := dialNFS(t, e.sibling(Options{Access: Access{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}), ClientOptions{Cred: rootCred()})
	if m, err := deny.mnt("/"); err != nil || m.St != mntAcces {
		t.Fatalf("MNT from outside --allow: status %d, %v", m.St, err)
	}
	wantRPCDenied(t, deny.getattr(e.root()).Err, AuthTooWeak)
}

// runIsolated runs the calling test in a child process (the same test
// binary, this test only) and reports its failure here, so a test that
// makes the server panic fails alone instead of ending the whole run. It
// returns true in the child, which runs the test's body.
func runIsolated(t *testing.T) bool {
	t.Helper()
	const env = "DSTORE_NFS_ISOLATED"
	if os.Getenv(env) == t.Name() {
		return true
	}
	args := []string{"-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	if *nfsTestLog {
		args = append(args, "-nfs.log")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := string(out)
		if len(tail) > 6000 {
			tail = "...\n" + tail[len(tail)-6000:]
		}
		t.Fatalf("the test in a child process failed (%v):\n%s", err, tail)
	}
	return false
}

// TestNFSGarbageArgs sends calls whose arguments do not decode: each gets
// GARBAGE_ARGS, and the server and the connection go on. It runs in a
// child process because a server that panics takes the test binary with
// it.
func TestNFSGarbageArgs(t *testing.T) {
	if !runIsolated(t) {
		return
	}
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	f := mkfile(t, c, e.root(), "f", 0o644, []byte("data")).FH
	for _, tc := range []struct {
		what string
		proc uint32
		enc  func(w *XDRWriter)
	}{
		{"GETATTR with a truncated handle", nfsGetattr, func(w *XDRWriter) { w.Uint32(200) }},
		{"GETATTR with a 65-byte handle (over NFS3_FHSIZE)", nfsGetattr, func(w *XDRWriter) { w.Opaque(randBytes(65)) }},
		{"WRITE with a count over its data", nfsWrite, func(w *XDRWriter) {
			w.Opaque(f)
			w.Uint64(0)
			w.Uint32(100)
			w.Uint32(fileSync)
			w.Opaque([]byte("short"))
		}},
		{"WRITE with stable_how 3", nfsWrite, func(w *XDRWriter) {
			w.Opaque(f)
			w.Uint64(0)
			w.Uint32(1)
			w.Uint32(3)
			w.Opaque([]byte("x"))
		}},
		{"CREATE with createmode 3", nfsCreate, func(w *XDRWriter) {
			dirop(w, e.root(), "bad")
			w.Uint32(3)
		}},
		{"SETATTR cut short", nfsSetattr, func(w *XDRWriter) {
			w.Opaque(f)
			w.Uint32(1)
		}},
		{"READ without a count", nfsRead, func(w *XDRWriter) {
			w.Opaque(f)
			w.Uint64(0)
		}},
	} {
		_, err := c.call(ProgNFS, 3, tc.proc, tc.enc)
		var re *RPCError
		if !errors.As(err, &re) || re.Denied || re.Accept != AcceptGarbageArgs {
			t.Errorf("%s: %v, want GARBAGE_ARGS", tc.what, err)
		}
		if err := c.getattr(e.root()).check(nfsOK); err != nil {
			t.Fatalf("after %s: GETATTR on the same connection: %v", tc.what, err)
		}
	}
}

// TestNFSNameTooLong: names over 255 bytes, however long, are
// NAMETOOLONG (not GARBAGE_ARGS: filename3 is an unbounded string).
func TestNFSNameTooLong(t *testing.T) {
	e := newNFSEnv(t, Options{})
	c := e.dial(rootCred())
	r := e.root()
	f := mkfile(t, c, r, "f", 0o644, nil)
	for _, n := range []int{256, 257, 1000, 4096} {
		name := strings.Repeat("n", n)
		got := map[string][]string{} // answer -> procedures
		for _, op := range []struct {
			what string
			res  func() nfsRes
		}{
			{"LOOKUP", func() nfsRes { return c.lookup(r, name) }},
			{"CREATE", func() nfsRes { return c.create(r, name, createGuarded, sattr3{}, [8]byte{}) }},
			{"MKDIR", func() nfsRes { return c.mkdir(r, name, sattr3{}) }},
			{"SYMLINK", func() nfsRes { return c.symlink(r, name, sattr3{}, "x") }},
			{"MKNOD", func() nfsRes { return c.mknod(r, name, uint32(snapstore.TypeFifo), sattr3{}, 0, 0) }},
			{"LINK", func() nfsRes { return c.link(f.FH, r, name) }},
			{"RENAME", func() nfsRes { return c.rename(r, "f", r, name) }},
			{"REMOVE", func() nfsRes { return c.remove(r, name) }},
			{"RMDIR", func() nfsRes { return c.rmdir(r, name) }},
		} {
			res := op.res()
			answer := stName(res.St)
			if res.Err != nil {
				answer = res.Err.Error()
				if i := strings.LastIndex(answer, ": "); i >= 0 {
					answer = answer[i+2:]
				}
			}
			got[answer] = append(got[answer], op.what)
		}
		for answer, ops := range got {
			if answer != stName(nfsErrNametool) {
				t.Errorf("%s of a %d-byte name: %s, want NAMETOOLONG", strings.Join(ops, ", "), n, answer)
			}
		}
		mustAttr(t, c, r)
	}
}
