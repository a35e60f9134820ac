package snapstore

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/dstore/dstore/blockstore"
)

var (
	nsSeed = flag.Uint64("ns.seed", 1, "seed of the namespace model test")
	nsOps  = flag.Int("ns.ops", 2500, "operations in the namespace model test")
)

// mfile is the model of an inode.
type mfile struct {
	typ    FileType
	data   []byte
	target string
	mode   uint32
	kids   map[string]*mfile // directories
	nlink  int               // non-directories: names pointing here
}

type nsRun struct {
	t    *testing.T
	rng  *rand.Rand
	dir  string
	ds   *Datastore
	root *mfile
	log  []string
}

func (r *nsRun) fail(format string, a ...any) {
	r.t.Helper()
	tail := r.log
	if len(tail) > 25 {
		tail = tail[len(tail)-25:]
	}
	r.t.Fatalf("%s\nlast operations:\n  %v", fmt.Sprintf(format, a...), tail)
}

func newDatastore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func testOpts() blockstore.Options {
	return blockstore.Options{SegmentSize: 1 << 20, MaxLogBytes: 1 << 20, PackSize: 256 << 10}
}

func TestNamespaceModel(t *testing.T) {
	r := &nsRun{t: t, rng: rand.New(rand.NewPCG(*nsSeed, 9)), dir: newDatastore(t),
		root: &mfile{typ: TypeDir, kids: map[string]*mfile{}, mode: 0o755}}
	var err error
	if r.ds, err = Open(r.dir, testOpts()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r.ds != nil {
			r.ds.Close()
		}
	}()
	for i := 0; i < *nsOps; i++ {
		r.step()
		if i%300 == 299 {
			r.check()
		}
	}
	r.check()
}

// dirs lists the model's directories with their inode numbers, found by
// walking the namespace.
func (r *nsRun) dirs() ([]*mfile, []Ino) {
	var ms []*mfile
	var inos []Ino
	var walk func(m *mfile, ino Ino)
	walk = func(m *mfile, ino Ino) {
		ms = append(ms, m)
		inos = append(inos, ino)
		names := sortedKeys(m.kids)
		for _, name := range names {
			k := m.kids[name]
			if k.typ == TypeDir {
				a, err := r.ds.NS.Lookup(ino, name)
				if err != nil {
					r.fail("lookup dir %q: %v", name, err)
				}
				walk(k, a.Ino)
			}
		}
	}
	walk(r.root, RootIno)
	return ms, inos
}

func sortedKeys(m map[string]*mfile) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (r *nsRun) name() string {
	names := []string{"a", "b", "c", "d", "vm.vmdk", "disk-flat.vmdk", ".lck-0000000000000001", "日本", "x y"}
	return names[r.rng.IntN(len(names))]
}

func (r *nsRun) pick() (*mfile, Ino) {
	ms, inos := r.dirs()
	i := r.rng.IntN(len(ms))
	return ms[i], inos[i]
}

// expect checks that err is the model's verdict.
func (r *nsRun) expect(op string, err, want error) {
	r.t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		r.fail("%s: got %v, want %v", op, err, want)
	}
}

func (r *nsRun) step() {
	ns := r.ds.NS
	na := NewAttr{Mode: 0o644, UID: 1, GID: 1}
	switch op := r.rng.IntN(100); {
	case op < 15:
		m, dino := r.pick()
		name := r.name()
		how := CreateHow(r.rng.IntN(3))
		var verf [8]byte
		verf[0] = byte(r.rng.IntN(2))
		a, created, err := ns.Create(dino, name, how, verf, na)
		r.log = append(r.log, fmt.Sprintf("create %q how=%d", name, how))
		old := m.kids[name]
		switch {
		case old == nil:
			r.expect("create", err, nil)
			if !created || a.Type != TypeReg {
				r.fail("create: created=%v type=%d", created, a.Type)
			}
			m.kids[name] = &mfile{typ: TypeReg, mode: 0o644, nlink: 1}
		case how == Guarded:
			r.expect("create guarded over existing", err, ErrExist)
		case how == Unchecked && old.typ == TypeDir:
			r.expect("create unchecked over dir", err, ErrIsDir)
		case how == Unchecked:
			r.expect("create unchecked over existing", err, nil)
			if created {
				r.fail("unchecked create made a new file over an existing one")
			}
		default: // exclusive over existing: only a retransmission (same verifier) succeeds
			if err == nil && created {
				r.fail("exclusive create made a new file over an existing one")
			}
			if err != nil && !errors.Is(err, ErrExist) {
				r.fail("exclusive create: %v", err)
			}
		}
	case op < 22:
		m, dino := r.pick()
		name := r.name()
		_, err := ns.Mkdir(dino, name, NewAttr{Mode: 0o755})
		r.log = append(r.log, "mkdir "+name)
		if m.kids[name] != nil {
			r.expect("mkdir existing", err, ErrExist)
			return
		}
		r.expect("mkdir", err, nil)
		m.kids[name] = &mfile{typ: TypeDir, kids: map[string]*mfile{}, mode: 0o755}
	case op < 26:
		m, dino := r.pick()
		name := r.name()
		target := fmt.Sprintf("../t%d", r.rng.IntN(100))
		_, err := ns.Symlink(dino, name, target, NewAttr{})
		r.log = append(r.log, "symlink "+name)
		if m.kids[name] != nil {
			r.expect("symlink existing", err, ErrExist)
			return
		}
		r.expect("symlink", err, nil)
		m.kids[name] = &mfile{typ: TypeLnk, target: target, mode: 0o777, nlink: 1}
	case op < 45:
		m, dino := r.pick()
		name := r.name()
		k := m.kids[name]
		if k == nil || k.typ != TypeReg {
			return
		}
		a, err := ns.Lookup(dino, name)
		if err != nil {
			r.fail("lookup: %v", err)
		}
		off := r.rng.IntN(64 << 10)
		p := make([]byte, 1+r.rng.IntN(20<<10))
		for i := range p {
			p[i] = byte(r.rng.IntN(4)) // compressible, sometimes zero
		}
		_, err = ns.Write(a.Ino, p, int64(off), r.rng.IntN(2) == 0)
		r.expect("write", err, nil)
		if len(k.data) < off+len(p) {
			k.data = append(k.data, make([]byte, off+len(p)-len(k.data))...)
		}
		copy(k.data[off:], p)
		r.log = append(r.log, fmt.Sprintf("write %q off=%d n=%d", name, off, len(p)))
	case op < 50:
		m, dino := r.pick()
		name := r.name()
		k := m.kids[name]
		if k == nil || k.typ != TypeReg {
			return
		}
		a, _ := ns.Lookup(dino, name)
		size := uint64(r.rng.IntN(80 << 10))
		mode := uint32(r.rng.IntN(0o7777))
		_, err := ns.SetAttr(a.Ino, SetAttrArgs{Size: &size, Mode: &mode})
		r.expect("setattr", err, nil)
		if uint64(len(k.data)) > size {
			k.data = k.data[:size]
		} else {
			k.data = append(k.data, make([]byte, size-uint64(len(k.data)))...)
		}
		k.mode = mode
		r.log = append(r.log, fmt.Sprintf("setattr %q size=%d", name, size))
	case op < 60:
		m, dino := r.pick()
		name := r.name()
		err := ns.Remove(dino, name)
		r.log = append(r.log, "remove "+name)
		k := m.kids[name]
		switch {
		case k == nil:
			r.expect("remove missing", err, ErrNotExist)
		case k.typ == TypeDir:
			r.expect("remove dir", err, ErrIsDir)
		default:
			r.expect("remove", err, nil)
			k.nlink--
			delete(m.kids, name)
		}
	case op < 66:
		m, dino := r.pick()
		name := r.name()
		err := ns.Rmdir(dino, name)
		r.log = append(r.log, "rmdir "+name)
		k := m.kids[name]
		switch {
		case k == nil:
			r.expect("rmdir missing", err, ErrNotExist)
		case k.typ != TypeDir:
			r.expect("rmdir file", err, ErrNotDir)
		case len(k.kids) > 0:
			r.expect("rmdir full", err, ErrNotEmpty)
		default:
			r.expect("rmdir", err, nil)
			delete(m.kids, name)
		}
	case op < 72:
		fm, fino := r.pick()
		name := r.name()
		k := fm.kids[name]
		if k == nil || k.typ == TypeDir {
			return
		}
		a, _ := ns.Lookup(fino, name)
		tm, tino := r.pick()
		tname := r.name()
		_, err := ns.Link(a.Ino, tino, tname)
		r.log = append(r.log, "link "+name+" "+tname)
		if tm.kids[tname] != nil {
			r.expect("link over existing", err, ErrExist)
			return
		}
		r.expect("link", err, nil)
		tm.kids[tname] = k
		k.nlink++
	case op < 88:
		fm, fino := r.pick()
		fname := r.name()
		tm, tino := r.pick()
		tname := r.name()
		err := ns.Rename(fino, fname, tino, tname)
		r.log = append(r.log, fmt.Sprintf("rename %d/%q -> %d/%q", fino, fname, tino, tname))
		src := fm.kids[fname]
		if src == nil {
			r.expect("rename missing", err, ErrNotExist)
			return
		}
		dst := tm.kids[tname]
		if dst == src {
			r.expect("rename onto itself", err, nil)
			return
		}
		if src.typ == TypeDir && (tm == src || r.below(src, tm)) {
			r.expect("rename into itself", err, ErrInvalid)
			return
		}
		if dst != nil {
			switch {
			case src.typ == TypeDir && dst.typ != TypeDir:
				r.expect("rename dir over file", err, ErrNotDir)
				return
			case src.typ != TypeDir && dst.typ == TypeDir:
				r.expect("rename file over dir", err, ErrIsDir)
				return
			case dst.typ == TypeDir && len(dst.kids) > 0:
				r.expect("rename over full dir", err, ErrNotEmpty)
				return
			}
			if dst.typ != TypeDir {
				dst.nlink--
			}
		}
		r.expect("rename", err, nil)
		delete(fm.kids, fname)
		tm.kids[tname] = src
	case op < 93:
		r.check()
	case op < 96:
		if err := r.ds.Close(); err != nil {
			r.fail("close: %v", err)
		}
		if r.ds, _ = Open(r.dir, testOpts()); r.ds == nil {
			r.fail("reopen failed")
		}
		r.log = append(r.log, "reopen")
		r.check()
	default:
		// A crash: what is on disk now, opened elsewhere, must match.
		// Unstable writes are durable only after a commit: make them so.
		if err := r.ds.Blocks.Sync(); err != nil {
			r.fail("sync: %v", err)
		}
		crash := r.t.TempDir()
		copyTree(r.t, r.dir, crash)
		ds, err := Open(crash, testOpts())
		if err != nil {
			r.fail("open after crash: %v", err)
		}
		live := r.ds
		r.ds = ds
		r.log = append(r.log, "crash check")
		r.check()
		r.ds = live
		if err := ds.Close(); err != nil {
			r.fail("close crash copy: %v", err)
		}
	}
}

// below reports whether d is a descendant of m.
func (r *nsRun) below(m, d *mfile) bool {
	for _, k := range m.kids {
		if k == d || k.typ == TypeDir && r.below(k, d) {
			return true
		}
	}
	return false
}

// check compares the whole namespace with the model.
func (r *nsRun) check() {
	r.t.Helper()
	ns := r.ds.NS
	seen := map[*mfile]Ino{}
	var walk func(m *mfile, ino Ino, path string)
	walk = func(m *mfile, ino Ino, path string) {
		ents, eof, err := ns.ReadDir(ino, 0, 1<<20)
		if err != nil || !eof {
			r.fail("readdir %s: %v eof=%v", path, err, eof)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name)
		}
		sort.Strings(names)
		if want := sortedKeys(m.kids); fmt.Sprint(names) != fmt.Sprint(want) {
			r.fail("readdir %s: %v, want %v", path, names, want)
		}
		for _, name := range sortedKeys(m.kids) {
			k := m.kids[name]
			a, err := ns.Lookup(ino, name)
			if err != nil {
				r.fail("lookup %s/%s: %v", path, name, err)
			}
			if a.Type != k.typ {
				r.fail("%s/%s: type %d, want %d", path, name, a.Type, k.typ)
			}
			if prev, ok := seen[k]; ok && prev != a.Ino {
				r.fail("%s/%s: hard link has inode %d, other name %d", path, name, a.Ino, prev)
			}
			seen[k] = a.Ino
			switch k.typ {
			case TypeDir:
				if p, err := ns.Lookup(a.Ino, ".."); err != nil || p.Ino != ino {
					r.fail("%s/%s/..: %v %d want %d", path, name, err, p.Ino, ino)
				}
				nd := 0
				for _, kk := range k.kids {
					if kk.typ == TypeDir {
						nd++
					}
				}
				if a.Nlink != uint32(2+nd) {
					r.fail("%s/%s: nlink %d, want %d", path, name, a.Nlink, 2+nd)
				}
				walk(k, a.Ino, path+"/"+name)
			case TypeReg:
				if a.Nlink != uint32(k.nlink) || a.Size != uint64(len(k.data)) || a.Mode != k.mode {
					r.fail("%s/%s: nlink %d size %d mode %o, want %d %d %o", path, name, a.Nlink, a.Size, a.Mode, k.nlink, len(k.data), k.mode)
				}
				got := make([]byte, len(k.data))
				if n, _, err := ns.Read(a.Ino, got, 0); err != nil || n != len(got) || !bytes.Equal(got, k.data) {
					r.fail("%s/%s: read %d bytes, %v; content equal=%v", path, name, n, err, bytes.Equal(got, k.data))
				}
			case TypeLnk:
				if tg, err := ns.Readlink(a.Ino); err != nil || tg != k.target {
					r.fail("%s/%s: readlink %q %v, want %q", path, name, tg, err, k.target)
				}
			}
		}
	}
	walk(r.root, RootIno, "")
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(out, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadDirResume: a 100,000-entry directory lists in pages, each resumed
// at its cookie, with entries removed between pages, and no entry lost or
// repeated.
func TestReadDirResume(t *testing.T) {
	ds, err := Open(newDatastore(t), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	ns := ds.NS
	d, err := ns.Mkdir(RootIno, "big", NewAttr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100000
	// Direct deltas keep the setup fast; the per-op path is the model test's.
	ns.mu.Lock()
	dn := ns.nodes[d.Ino]
	for i := 0; i < n; i++ {
		rec := ns.newInode(TypeFifo, NewAttr{Mode: 0o644})
		ns.putNode(rec)
		de := delta{kind: dPutEnt, dir: d.Ino, cookie: dn.Next, ino: rec.Ino, name: fmt.Sprintf("f%06d", i)}
		dn.Next++
		if err := ns.apply(&de); err != nil {
			t.Fatal(err)
		}
	}
	ns.mu.Unlock()
	seen := map[string]bool{}
	cookie := uint64(0)
	pages := 0
	for {
		ents, eof, err := ns.ReadDir(d.Ino, cookie, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if seen[e.Name] {
				t.Fatalf("%s listed twice", e.Name)
			}
			seen[e.Name] = true
			cookie = e.Cookie
		}
		pages++
		if eof {
			break
		}
	}
	if len(seen) != n || pages < n/1000 {
		t.Fatalf("listed %d entries in %d pages", len(seen), pages)
	}
}

// TestInodeNumbersNotReused: a removed file's inode number is not handed
// out again, also across a restart, so its handle stays stale (N2).
func TestInodeNumbersNotReused(t *testing.T) {
	dir := newDatastore(t)
	ds, err := Open(dir, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	var zero [8]byte
	seen := map[Ino]bool{}
	for round := 0; round < 3; round++ {
		for i := 0; i < 5; i++ {
			a, _, err := ds.NS.Create(RootIno, fmt.Sprintf("f%d-%d", round, i), Guarded, zero, NewAttr{Mode: 0o644})
			if err != nil {
				t.Fatal(err)
			}
			if seen[a.Ino] {
				t.Fatalf("round %d: inode %d handed out twice", round, a.Ino)
			}
			seen[a.Ino] = true
			if err := ds.NS.Remove(RootIno, fmt.Sprintf("f%d-%d", round, i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := ds.Close(); err != nil {
			t.Fatal(err)
		}
		if ds, err = Open(dir, testOpts()); err != nil {
			t.Fatal(err)
		}
	}
	ds.Close()
}
