package nfsfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// BillyFS is a go-billy Filesystem view of a datastore's live namespace,
// for Go code and tests: the same namespace NFS serves, without the
// protocol. Paths are slash-separated, relative to the view's root.
// Errors are *fs.PathError with an errno, so os.IsNotExist and friends work.
type BillyFS struct {
	ns   *snapstore.Namespace
	root string // the chroot, "/" for the whole datastore
	uid  uint32
	gid  uint32
}

var _ billy.Filesystem = (*BillyFS)(nil)
var _ billy.Change = (*BillyFS)(nil)

// NewBillyFS returns a view of ns; files it makes are owned by uid and gid.
func NewBillyFS(ns *snapstore.Namespace, uid, gid uint32) *BillyFS {
	return &BillyFS{ns: ns, root: "/", uid: uid, gid: gid}
}

// errno maps namespace and block store errors to the errno os callers test.
func errno(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, snapstore.ErrNotExist), errors.Is(err, snapstore.ErrStale):
		return syscall.ENOENT
	case errors.Is(err, snapstore.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, snapstore.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, snapstore.ErrIsDir):
		return syscall.EISDIR
	case errors.Is(err, snapstore.ErrNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, snapstore.ErrNameTooLong):
		return syscall.ENAMETOOLONG
	case errors.Is(err, snapstore.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, blockstore.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, blockstore.ErrTooLarge):
		return syscall.EFBIG
	case errors.Is(err, blockstore.ErrCorrupt):
		return syscall.EIO
	}
	return err
}

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: errno(err)}
}

// abs turns a view path into a datastore path.
func (b *BillyFS) abs(name string) string {
	return path.Join(b.root, path.Clean("/"+name))
}

const maxSymlinks = 40

// walk resolves p to its inode; follow decides whether a final symlink is
// followed.
func (b *BillyFS) walk(p string, follow bool) (snapstore.Attr, error) {
	return b.walkN(p, follow, 0)
}

func (b *BillyFS) walkN(p string, follow bool, depth int) (snapstore.Attr, error) {
	cur, err := b.ns.GetAttr(snapstore.RootIno)
	if err != nil {
		return cur, err
	}
	parts := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	dir := "/"
	for i, name := range parts {
		if name == "" {
			continue
		}
		next, err := b.ns.Lookup(cur.Ino, name)
		if err != nil {
			return next, err
		}
		last := i == len(parts)-1
		if next.Type == snapstore.TypeLnk && (!last || follow) {
			if depth >= maxSymlinks {
				return next, syscall.ELOOP
			}
			target := next.Target
			if !strings.HasPrefix(target, "/") {
				target = path.Join(dir, target)
			}
			rest := strings.Join(parts[i+1:], "/")
			return b.walkN(path.Join(target, rest), follow, depth+1)
		}
		if !last && next.Type != snapstore.TypeDir {
			return next, snapstore.ErrNotDir
		}
		cur = next
		dir = path.Join(dir, name)
	}
	return cur, nil
}

// parent resolves the directory of p and returns it with p's last name.
func (b *BillyFS) parent(p string) (snapstore.Attr, string, error) {
	d, name := path.Split(path.Clean(p))
	if name == "" || name == "/" {
		return snapstore.Attr{}, "", snapstore.ErrInvalid
	}
	a, err := b.walk(d, true)
	if err == nil && a.Type != snapstore.TypeDir {
		err = snapstore.ErrNotDir
	}
	return a, name, err
}

// Create makes or truncates a file, open for reading and writing.
func (b *BillyFS) Create(name string) (billy.File, error) {
	return b.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// Open opens a file for reading.
func (b *BillyFS) Open(name string) (billy.File, error) {
	return b.OpenFile(name, os.O_RDONLY, 0)
}

// OpenFile opens a file as os.OpenFile does.
func (b *BillyFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	p := b.abs(name)
	a, err := b.walk(p, true)
	switch {
	case err == nil:
		if flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0 {
			return nil, pathErr("open", name, snapstore.ErrExist)
		}
		if a.Type == snapstore.TypeDir && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
			return nil, pathErr("open", name, snapstore.ErrIsDir)
		}
	case errors.Is(err, snapstore.ErrNotExist) && flag&os.O_CREATE != 0:
		dir, base, perr := b.parent(p)
		if perr != nil {
			return nil, pathErr("open", name, perr)
		}
		var zero [8]byte
		a, _, err = b.ns.Create(dir.Ino, base, snapstore.Unchecked, zero,
			snapstore.NewAttr{Mode: uint32(perm.Perm()), UID: b.uid, GID: b.gid})
		if err != nil {
			return nil, pathErr("open", name, err)
		}
	default:
		return nil, pathErr("open", name, err)
	}
	if flag&os.O_TRUNC != 0 && a.Type == snapstore.TypeReg && a.Size != 0 {
		zero := uint64(0)
		if a, err = b.ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Size: &zero}); err != nil {
			return nil, pathErr("open", name, err)
		}
	}
	f := &billyFile{fs: b, name: name, ino: a.Ino, flag: flag}
	if flag&os.O_APPEND != 0 {
		f.off = int64(a.Size)
	}
	return f, nil
}

// Stat describes a file, following symlinks.
func (b *BillyFS) Stat(name string) (os.FileInfo, error) {
	a, err := b.walk(b.abs(name), true)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return fileInfo{name: path.Base(path.Clean("/" + name)), a: a}, nil
}

// Lstat describes a file without following a final symlink.
func (b *BillyFS) Lstat(name string) (os.FileInfo, error) {
	a, err := b.walk(b.abs(name), false)
	if err != nil {
		return nil, pathErr("lstat", name, err)
	}
	return fileInfo{name: path.Base(path.Clean("/" + name)), a: a}, nil
}

// Rename moves oldpath to newpath, replacing a file there.
func (b *BillyFS) Rename(oldpath, newpath string) error {
	fd, fname, err := b.parent(b.abs(oldpath))
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: errno(err)}
	}
	if err := b.MkdirAll(path.Dir(path.Clean("/"+newpath)), 0o755); err != nil {
		return err
	}
	td, tname, err := b.parent(b.abs(newpath))
	if err == nil {
		err = b.ns.Rename(fd.Ino, fname, td.Ino, tname)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: errno(err)}
	}
	return nil
}

// Remove removes a file or an empty directory.
func (b *BillyFS) Remove(name string) error {
	p := b.abs(name)
	d, base, err := b.parent(p)
	if err != nil {
		return pathErr("remove", name, err)
	}
	a, err := b.ns.Lookup(d.Ino, base)
	if err != nil {
		return pathErr("remove", name, err)
	}
	if a.Type == snapstore.TypeDir {
		err = b.ns.Rmdir(d.Ino, base)
	} else {
		err = b.ns.Remove(d.Ino, base)
	}
	return pathErr("remove", name, err)
}

// Join joins path elements.
func (b *BillyFS) Join(elem ...string) string { return path.Join(elem...) }

var tempSeq struct {
	sync.Mutex
	n uint64
}

// TempFile makes a new file with a unique name in dir.
func (b *BillyFS) TempFile(dir, prefix string) (billy.File, error) {
	if dir == "" {
		dir = "/tmp"
	}
	if err := b.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < 10000; i++ {
		tempSeq.Lock()
		tempSeq.n++
		n := tempSeq.n
		tempSeq.Unlock()
		name := path.Join(dir, fmt.Sprintf("%s%d%d", prefix, time.Now().UnixNano()%1e6, n))
		f, err := b.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil || !os.IsExist(err) {
			return f, err
		}
	}
	return nil, pathErr("tempfile", dir, snapstore.ErrExist)
}

// ReadDir lists a directory sorted by name.
func (b *BillyFS) ReadDir(name string) ([]os.FileInfo, error) {
	d, err := b.walk(b.abs(name), true)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	var out []os.FileInfo
	cookie := uint64(0)
	for {
		ents, eof, err := b.ns.ReadDir(d.Ino, cookie, 1024)
		if err != nil {
			return nil, pathErr("readdir", name, err)
		}
		for _, e := range ents {
			cookie = e.Cookie
			a, err := b.ns.GetAttr(e.Ino)
			if err != nil {
				continue // removed meanwhile
			}
			out = append(out, fileInfo{name: e.Name, a: a})
		}
		if eof {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// MkdirAll makes a directory and its missing parents.
func (b *BillyFS) MkdirAll(name string, perm os.FileMode) error {
	p := b.abs(name)
	cur, err := b.ns.GetAttr(snapstore.RootIno)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	walked := "/"
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		walked = path.Join(walked, part)
		next, err := b.walk(walked, true)
		if errors.Is(err, snapstore.ErrNotExist) {
			next, err = b.ns.Mkdir(cur.Ino, part, snapstore.NewAttr{Mode: uint32(perm.Perm()), UID: b.uid, GID: b.gid})
			if errors.Is(err, snapstore.ErrExist) {
				next, err = b.walk(walked, true)
			}
		}
		if err != nil {
			return pathErr("mkdir", name, err)
		}
		if next.Type != snapstore.TypeDir {
			return pathErr("mkdir", name, snapstore.ErrNotDir)
		}
		cur = next
	}
	return nil
}

// Symlink makes link point to target, making link's parents as needed.
func (b *BillyFS) Symlink(target, link string) error {
	p := b.abs(link)
	if err := b.MkdirAll(path.Dir(p), 0o755); err != nil {
		return err
	}
	d, base, err := b.parent(p)
	if err == nil {
		_, err = b.ns.Symlink(d.Ino, base, target, snapstore.NewAttr{Mode: 0o777, UID: b.uid, GID: b.gid})
	}
	return pathErr("symlink", link, err)
}

// Readlink returns a symlink's target.
func (b *BillyFS) Readlink(link string) (string, error) {
	a, err := b.walk(b.abs(link), false)
	if err == nil {
		var t string
		t, err = b.ns.Readlink(a.Ino)
		if err == nil {
			return t, nil
		}
	}
	return "", pathErr("readlink", link, err)
}

// Chroot returns the view below p.
func (b *BillyFS) Chroot(p string) (billy.Filesystem, error) {
	a, err := b.walk(b.abs(p), true)
	if err != nil {
		return nil, pathErr("chroot", p, err)
	}
	if a.Type != snapstore.TypeDir {
		return nil, pathErr("chroot", p, snapstore.ErrNotDir)
	}
	return &BillyFS{ns: b.ns, root: b.abs(p), uid: b.uid, gid: b.gid}, nil
}

// Root is the view's root in the datastore.
func (b *BillyFS) Root() string { return b.root }

// Chmod changes a file's mode bits.
func (b *BillyFS) Chmod(name string, mode os.FileMode) error {
	a, err := b.walk(b.abs(name), true)
	if err == nil {
		m := uint32(mode.Perm())
		if mode&os.ModeSetuid != 0 {
			m |= 0o4000
		}
		if mode&os.ModeSetgid != 0 {
			m |= 0o2000
		}
		if mode&os.ModeSticky != 0 {
			m |= 0o1000
		}
		_, err = b.ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Mode: &m})
	}
	return pathErr("chmod", name, err)
}

// Lchown changes the owner of name itself.
func (b *BillyFS) Lchown(name string, uid, gid int) error { return b.chown(name, uid, gid, false) }

// Chown changes the owner of what name leads to.
func (b *BillyFS) Chown(name string, uid, gid int) error { return b.chown(name, uid, gid, true) }

func (b *BillyFS) chown(name string, uid, gid int, follow bool) error {
	a, err := b.walk(b.abs(name), follow)
	if err == nil {
		var s snapstore.SetAttrArgs
		if uid >= 0 {
			u := uint32(uid)
			s.UID = &u
		}
		if gid >= 0 {
			g := uint32(gid)
			s.GID = &g
		}
		_, err = b.ns.SetAttr(a.Ino, s)
	}
	return pathErr("chown", name, err)
}

// Chtimes sets access and modification times.
func (b *BillyFS) Chtimes(name string, atime, mtime time.Time) error {
	a, err := b.walk(b.abs(name), true)
	if err == nil {
		_, err = b.ns.SetAttr(a.Ino, snapstore.SetAttrArgs{Atime: &atime, Mtime: &mtime})
	}
	return pathErr("chtimes", name, err)
}

// fileInfo is os.FileInfo over namespace attributes.
type fileInfo struct {
	name string
	a    snapstore.Attr
}

func (f fileInfo) Name() string       { return f.name }
func (f fileInfo) Size() int64        { return int64(f.a.Size) }
func (f fileInfo) ModTime() time.Time { return f.a.Mtime }
func (f fileInfo) IsDir() bool        { return f.a.Type == snapstore.TypeDir }
func (f fileInfo) Sys() any           { return f.a }
func (f fileInfo) Mode() os.FileMode {
	m := os.FileMode(f.a.Mode & 0o777)
	if f.a.Mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if f.a.Mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if f.a.Mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	switch f.a.Type {
	case snapstore.TypeDir:
		m |= os.ModeDir
	case snapstore.TypeLnk:
		m |= os.ModeSymlink
	case snapstore.TypeBlk:
		m |= os.ModeDevice
	case snapstore.TypeChr:
		m |= os.ModeDevice | os.ModeCharDevice
	case snapstore.TypeSock:
		m |= os.ModeSocket
	case snapstore.TypeFifo:
		m |= os.ModeNamedPipe
	}
	return m
}

// billyFile is an open file of the view: an inode and an offset.
type billyFile struct {
	fs     *BillyFS
	name   string
	ino    snapstore.Ino
	flag   int
	mu     sync.Mutex // guards off and closed
	off    int64
	closed bool
}

func (f *billyFile) Name() string { return f.name }

func (f *billyFile) check(write bool) error {
	if f.closed {
		return os.ErrClosed
	}
	if write && f.flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return pathErr("write", f.name, syscall.EBADF)
	}
	if !write && f.flag&os.O_WRONLY != 0 {
		return pathErr("read", f.name, syscall.EBADF)
	}
	return nil
}

func (f *billyFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(true); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		a, err := f.fs.ns.GetAttr(f.ino)
		if err != nil {
			return 0, pathErr("write", f.name, err)
		}
		f.off = int64(a.Size)
	}
	if _, err := f.fs.ns.Write(f.ino, p, f.off, false); err != nil {
		return 0, pathErr("write", f.name, err)
	}
	f.off += int64(len(p))
	return len(p), nil
}

func (f *billyFile) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(false); err != nil {
		return 0, err
	}
	n, err := f.readAt(p, f.off)
	f.off += int64(n)
	return n, err
}

func (f *billyFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(false); err != nil {
		return 0, err
	}
	return f.readAt(p, off)
}

func (f *billyFile) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, pathErr("read", f.name, syscall.EINVAL)
	}
	n, eof, err := f.fs.ns.Read(f.ino, p, off)
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	if n < len(p) && eof {
		return n, io.EOF
	}
	return n, nil
}

func (f *billyFile) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, os.ErrClosed
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.off
	case io.SeekEnd:
		a, err := f.fs.ns.GetAttr(f.ino)
		if err != nil {
			return 0, pathErr("seek", f.name, err)
		}
		base = int64(a.Size)
	default:
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	if base+offset < 0 {
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	f.off = base + offset
	return f.off, nil
}

// Close makes the file's writes durable (close-to-open, as NFS clients do).
func (f *billyFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	f.closed = true
	if f.flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return pathErr("close", f.name, f.fs.ns.Commit(f.ino))
	}
	return nil
}

// Lock and Unlock: the datastore has no byte-range locks (ESXi locks with
// files); these only satisfy the interface for a single process.
func (f *billyFile) Lock() error   { return nil }
func (f *billyFile) Unlock() error { return nil }

func (f *billyFile) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(true); err != nil {
		return err
	}
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	s := uint64(size)
	_, err := f.fs.ns.SetAttr(f.ino, snapstore.SetAttrArgs{Size: &s})
	return pathErr("truncate", f.name, err)
}
