package nfsfs

import (
	"context"
	"fmt"
)

// An NFSv3, MOUNT v3 and PORTMAP v2 client over the pipelined RPC Client:
// the calls a load generator (dstore bench nfs) makes against any NFSv3
// server. It is safe for concurrent use; concurrent calls are pipelined on
// the connection. Replies are decoded as far as the caller needs them and
// checked for being short, never for trailing bytes, since servers differ in
// what they append.

// Stability of a WRITE (stable_how).
const (
	StableUnstable = unstable
	StableDataSync = dataSync
	StableFileSync = fileSync
)

// File types in NFS3Attr.Type (ftype3).
const (
	NF3Reg = 1
	NF3Dir = 2
)

// NFS3Error is an NFS or MOUNT status other than OK.
type NFS3Error struct {
	Proc   string // "LOOKUP", "MNT", ...
	Status uint32 // nfsstat3 or mountstat3
}

func (e *NFS3Error) Error() string {
	if e.Proc == "MNT" {
		return fmt.Sprintf("nfsfs: MOUNT MNT: mountstat3 %d", e.Status)
	}
	if n, ok := nfs3StatusNames[e.Status]; ok {
		return fmt.Sprintf("nfsfs: NFS3 %s: %s", e.Proc, n)
	}
	return fmt.Sprintf("nfsfs: NFS3 %s: nfsstat3 %d", e.Proc, e.Status)
}

// NFS3 status codes an NFS3Error may carry that callers test for.
const (
	NFS3ErrNoent = uint32(nfsErrNoent)
	NFS3ErrExist = uint32(nfsErrExist)
)

var nfs3StatusNames = map[uint32]string{
	1: "PERM", 2: "NOENT", 5: "IO", 6: "NXIO", 13: "ACCES", 17: "EXIST", 18: "XDEV", 19: "NODEV",
	20: "NOTDIR", 21: "ISDIR", 22: "INVAL", 27: "FBIG", 28: "NOSPC", 30: "ROFS", 31: "MLINK",
	63: "NAMETOOLONG", 66: "NOTEMPTY", 69: "DQUOT", 70: "STALE", 71: "REMOTE", 10001: "BADHANDLE",
	10002: "NOT_SYNC", 10003: "BAD_COOKIE", 10004: "NOTSUPP", 10005: "TOOSMALL",
	10006: "SERVERFAULT", 10007: "BADTYPE", 10008: "JUKEBOX",
}

// NFS3Attr is the part of fattr3 a client usually needs.
type NFS3Attr struct {
	Type   uint32
	Mode   uint32
	Size   uint64
	Used   uint64
	FileID uint64
}

// NFS3FSInfo is FSINFO's transfer sizes.
type NFS3FSInfo struct {
	Rtmax, Rtpref, Wtmax, Wtpref uint32
	MaxFileSize                  uint64
}

// NFS3Client makes NFSv3 calls over an RPC client.
type NFS3Client struct {
	rpc *Client
	buf chan *XDRWriter // argument buffers, reused
}

// NewNFS3Client returns an NFSv3 client over c.
func NewNFS3Client(c *Client) *NFS3Client {
	return &NFS3Client{rpc: c, buf: make(chan *XDRWriter, 64)}
}

// RPC returns the underlying RPC client.
func (c *NFS3Client) RPC() *Client { return c.rpc }

func (c *NFS3Client) getBuf() *XDRWriter {
	select {
	case w := <-c.buf:
		w.Reset()
		return w
	default:
		return NewXDRWriter(nil)
	}
}

func (c *NFS3Client) putBuf(w *XDRWriter) {
	if cap(w.buf) > 2<<20 {
		return
	}
	select {
	case c.buf <- w:
	default:
	}
}

// call makes one NFSv3 call and decodes the status; the reader is
// positioned after it. A status other than OK returns the reader too, so
// the caller may decode the failure results, and an *NFS3Error.
func (c *NFS3Client) call(ctx context.Context, proc uint32, enc func(w *XDRWriter)) (*XDRReader, error) {
	w := c.getBuf()
	enc(w)
	r, err := c.rpc.Call(ctx, ProgNFS, 3, proc, w.Bytes())
	c.putBuf(w) // Call has copied the arguments into its record
	if err != nil {
		return nil, fmt.Errorf("NFS3 %s: %w", procName(proc), err)
	}
	st := r.Uint32()
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("NFS3 %s reply: %w", procName(proc), err)
	}
	if st != 0 {
		return r, &NFS3Error{Proc: procName(proc), Status: st}
	}
	return r, nil
}

// replyErr returns the reader's decoding error, named after proc.
func replyErr(proc uint32, r *XDRReader) error {
	if err := r.Err(); err != nil {
		return fmt.Errorf("NFS3 %s reply: %w", procName(proc), err)
	}
	return nil
}

func readAttr(r *XDRReader) NFS3Attr {
	var a NFS3Attr
	a.Type = r.Uint32()
	a.Mode = r.Uint32()
	r.Uint32() // nlink
	r.Uint32() // uid
	r.Uint32() // gid
	a.Size = r.Uint64()
	a.Used = r.Uint64()
	r.Uint32() // rdev
	r.Uint32()
	r.Uint64() // fsid
	a.FileID = r.Uint64()
	for range 6 { // atime, mtime, ctime
		r.Uint32()
	}
	return a
}

// readPostOp decodes post_op_attr.
func readPostOp(r *XDRReader) (NFS3Attr, bool) {
	if r.Bool() {
		return readAttr(r), true
	}
	return NFS3Attr{}, false
}

// skipWcc decodes wcc_data and returns the after attributes.
func skipWcc(r *XDRReader) (NFS3Attr, bool) {
	if r.Bool() { // pre_op_attr: size, mtime, ctime
		r.Uint64()
		r.Uint64()
		r.Uint64()
	}
	return readPostOp(r)
}

// Null calls NFSPROC3_NULL.
func (c *NFS3Client) Null(ctx context.Context) error {
	_, err := c.call(ctx, nfsNull, func(*XDRWriter) {})
	return err
}

// Getattr returns fh's attributes.
func (c *NFS3Client) Getattr(ctx context.Context, fh []byte) (NFS3Attr, error) {
	r, err := c.call(ctx, nfsGetattr, func(w *XDRWriter) { w.Opaque(fh) })
	if err != nil {
		return NFS3Attr{}, err
	}
	a := readAttr(r)
	return a, replyErr(nfsGetattr, r)
}

// Lookup returns the handle of name in dir and its attributes (Type 0 when
// the server sent none).
func (c *NFS3Client) Lookup(ctx context.Context, dir []byte, name string) ([]byte, NFS3Attr, error) {
	r, err := c.call(ctx, nfsLookup, func(w *XDRWriter) {
		w.Opaque(dir)
		w.String(name)
	})
	if err != nil {
		return nil, NFS3Attr{}, err
	}
	fh := append([]byte(nil), r.Opaque(64)...)
	a, _ := readPostOp(r)
	readPostOp(r) // the directory's
	return fh, a, replyErr(nfsLookup, r)
}

// putSattr encodes a sattr3 that sets the mode when mode >= 0 and the size
// when size >= 0, and nothing else.
func putSattr(w *XDRWriter, mode int64, size int64) {
	w.Bool(mode >= 0)
	if mode >= 0 {
		w.Uint32(uint32(mode))
	}
	w.Bool(false) // uid
	w.Bool(false) // gid
	w.Bool(size >= 0)
	if size >= 0 {
		w.Uint64(uint64(size))
	}
	w.Uint32(0) // atime: DONT_CHANGE
	w.Uint32(0) // mtime: DONT_CHANGE
}

// createmode3 values.
const (
	howUnchecked = 0
	howGuarded   = 1
)

// Create makes a regular file name in dir with mode. With exclusive false
// an existing file is opened and truncated to zero (UNCHECKED with size 0);
// with it true an existing file is an NFS3ERR_EXIST (GUARDED).
func (c *NFS3Client) Create(ctx context.Context, dir []byte, name string, mode uint32, exclusive bool) ([]byte, error) {
	r, err := c.call(ctx, nfsCreate, func(w *XDRWriter) {
		w.Opaque(dir)
		w.String(name)
		if exclusive {
			w.Uint32(howGuarded)
			putSattr(w, int64(mode), -1)
		} else {
			w.Uint32(howUnchecked)
			putSattr(w, int64(mode), 0)
		}
	})
	if err != nil {
		return nil, err
	}
	return c.madeHandle(ctx, nfsCreate, r, dir, name)
}

// Mkdir makes a directory name in dir with mode.
func (c *NFS3Client) Mkdir(ctx context.Context, dir []byte, name string, mode uint32) ([]byte, error) {
	r, err := c.call(ctx, nfsMkdir, func(w *XDRWriter) {
		w.Opaque(dir)
		w.String(name)
		putSattr(w, int64(mode), -1)
	})
	if err != nil {
		return nil, err
	}
	return c.madeHandle(ctx, nfsMkdir, r, dir, name)
}

// madeHandle decodes the post_op_fh3 of a CREATE or MKDIR reply; a server
// may leave it out, and then it is looked up.
func (c *NFS3Client) madeHandle(ctx context.Context, proc uint32, r *XDRReader, dir []byte, name string) ([]byte, error) {
	var fh []byte
	if r.Bool() {
		fh = append([]byte(nil), r.Opaque(64)...)
	}
	if err := replyErr(proc, r); err != nil {
		return nil, err
	}
	if fh != nil {
		return fh, nil
	}
	fh, _, err := c.Lookup(ctx, dir, name)
	return fh, err
}

// Remove removes the file name from dir.
func (c *NFS3Client) Remove(ctx context.Context, dir []byte, name string) error {
	_, err := c.call(ctx, nfsRemove, func(w *XDRWriter) {
		w.Opaque(dir)
		w.String(name)
	})
	return err
}

// Rmdir removes the empty directory name from dir.
func (c *NFS3Client) Rmdir(ctx context.Context, dir []byte, name string) error {
	_, err := c.call(ctx, nfsRmdir, func(w *XDRWriter) {
		w.Opaque(dir)
		w.String(name)
	})
	return err
}

// SetSize truncates or extends fh to size.
func (c *NFS3Client) SetSize(ctx context.Context, fh []byte, size uint64) error {
	_, err := c.call(ctx, nfsSetattr, func(w *XDRWriter) {
		w.Opaque(fh)
		putSattr(w, -1, int64(size))
		w.Bool(false) // no guard
	})
	return err
}

// Write writes data at off with the given stability (StableUnstable,
// StableDataSync or StableFileSync) and returns the count the server took,
// the stability it committed to and its write verifier.
func (c *NFS3Client) Write(ctx context.Context, fh []byte, off uint64, data []byte, stable uint32) (count, committed uint32, verf [8]byte, err error) {
	r, err := c.call(ctx, nfsWrite, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint64(off)
		w.Uint32(uint32(len(data)))
		w.Uint32(stable)
		w.Opaque(data)
	})
	if err != nil {
		return 0, 0, verf, err
	}
	skipWcc(r)
	count = r.Uint32()
	committed = r.Uint32()
	copy(verf[:], r.FixedOpaque(8))
	return count, committed, verf, replyErr(nfsWrite, r)
}

// Read reads up to len(buf) bytes at off into buf and returns how many it
// read and whether that reached the end of the file.
func (c *NFS3Client) Read(ctx context.Context, fh []byte, off uint64, buf []byte) (int, bool, error) {
	r, err := c.call(ctx, nfsRead, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint64(off)
		w.Uint32(uint32(len(buf)))
	})
	if err != nil {
		return 0, false, err
	}
	readPostOp(r)
	count := r.Uint32()
	eof := r.Bool()
	data := r.Opaque(len(buf))
	if err := replyErr(nfsRead, r); err != nil {
		return 0, false, err
	}
	if int(count) != len(data) {
		return 0, false, fmt.Errorf("NFS3 READ reply: count %d but %d bytes of data", count, len(data))
	}
	return copy(buf, data), eof, nil
}

// Commit makes the range [off, off+count) of fh durable (count 0: to the
// end of the file) and returns the write verifier.
func (c *NFS3Client) Commit(ctx context.Context, fh []byte, off uint64, count uint32) ([8]byte, error) {
	var verf [8]byte
	r, err := c.call(ctx, nfsCommit, func(w *XDRWriter) {
		w.Opaque(fh)
		w.Uint64(off)
		w.Uint32(count)
	})
	if err != nil {
		return verf, err
	}
	skipWcc(r)
	copy(verf[:], r.FixedOpaque(8))
	return verf, replyErr(nfsCommit, r)
}

// FSInfo returns the server's transfer sizes for the file system of fh.
func (c *NFS3Client) FSInfo(ctx context.Context, fh []byte) (NFS3FSInfo, error) {
	var fi NFS3FSInfo
	r, err := c.call(ctx, nfsFsinfo, func(w *XDRWriter) { w.Opaque(fh) })
	if err != nil {
		return fi, err
	}
	readPostOp(r)
	fi.Rtmax = r.Uint32()
	fi.Rtpref = r.Uint32()
	r.Uint32() // rtmult
	fi.Wtmax = r.Uint32()
	fi.Wtpref = r.Uint32()
	r.Uint32() // wtmult
	r.Uint32() // dtpref
	fi.MaxFileSize = r.Uint64()
	return fi, replyErr(nfsFsinfo, r)
}

// MountPath asks the MOUNT v3 server on c for the handle of the export
// path (MOUNTPROC3_MNT).
func MountPath(ctx context.Context, c *Client, path string) ([]byte, error) {
	w := NewXDRWriter(nil)
	w.String(path)
	r, err := c.Call(ctx, ProgMNT, 3, mntMnt, w.Bytes())
	if err != nil {
		return nil, fmt.Errorf("MOUNT MNT %s: %w", path, err)
	}
	st := r.Uint32()
	if r.Err() == nil && st != mntOK {
		return nil, fmt.Errorf("MOUNT MNT %s: %w", path, &NFS3Error{Proc: "MNT", Status: st})
	}
	fh := append([]byte(nil), r.Opaque(64)...)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("MOUNT MNT reply: %w", err)
	}
	return fh, nil
}

// Unmount tells the MOUNT v3 server on c that path is no longer mounted
// (MOUNTPROC3_UMNT).
func Unmount(ctx context.Context, c *Client, path string) error {
	w := NewXDRWriter(nil)
	w.String(path)
	_, err := c.Call(ctx, ProgMNT, 3, mntUmnt, w.Bytes())
	return err
}

// PortmapGetport asks the PORTMAP v2 server on c for the port of prog and
// vers over prot (IPProtoTCP or IPProtoUDP); 0 means not registered.
func PortmapGetport(ctx context.Context, c *Client, prog, vers, prot uint32) (uint32, error) {
	w := NewXDRWriter(nil)
	w.Uint32(prog)
	w.Uint32(vers)
	w.Uint32(prot)
	w.Uint32(0)
	r, err := c.Call(ctx, PortmapProg, PortmapVers, pmapProcGetport, w.Bytes())
	if err != nil {
		return 0, fmt.Errorf("PORTMAP GETPORT: %w", err)
	}
	port := r.Uint32()
	if err := r.Err(); err != nil {
		return 0, fmt.Errorf("PORTMAP GETPORT reply: %w", err)
	}
	return port, nil
}
