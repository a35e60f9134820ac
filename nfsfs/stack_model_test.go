package nfsfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
)

// TestStackModel is a model-based random test over the whole stack: a real
// datastore on disk (snapstore.Open), written through the billy view, with
// protection groups, snapshots, clones of snapshots and of live files (and
// of clones), restores of all members and of some, snapshot and group
// deletes, retention, GC (with and without settling merges first), and
// daemon restarts: clean (Close, Open) and unclean (the data directory of
// a quiescent, still-open datastore copied and opened, what a SIGKILL at
// that instant leaves). After every few steps every live file is read
// through billy and every snapshot member through the snapview API, byte
// for byte, against the model: map[path][]byte for the live tree and
// map[snapshot]map[path][]byte for the snapshots.
//
// It runs a fixed seed, the seeds that found bugs, and one seed from the
// clock (logged). DSTORE_STACK_SEED runs one seed alone, DSTORE_STACK_OPS
// sets the number of operations (default 400, 200 with -short), e.g.
//
//	DSTORE_STACK_OPS=5000 go test -run TestStackModel ./nfsfs/
func TestStackModel(t *testing.T) {
	ops := 400
	if testing.Short() {
		ops = 200
	}
	if n, err := strconv.Atoi(os.Getenv("DSTORE_STACK_OPS")); err == nil && n > 0 {
		ops = n
	}
	if s := os.Getenv("DSTORE_STACK_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DSTORE_STACK_SEED=%q: %v", s, err)
		}
		runStackModel(t, seed, ops)
		return
	}
	for _, seed := range stackRegressionSeeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runStackModel(t, seed, ops) })
	}
	seed := uint64(time.Now().UnixNano())
	t.Run("random", func(t *testing.T) { runStackModel(t, seed, ops) })
}

// stackRegressionSeeds: seed 1, and every seed that found a bug.
var stackRegressionSeeds = []uint64{1}

// Names: files and directories never share a name, so a member's path can
// always be restored and a rename never meets a directory.
var (
	stackDirs  = []string{"vm1", "vm2", "vm1/sub", "data"}
	stackFiles = []string{"a.img", "b.img", "db1.img", "db2.dat", "log.txt", "c1.img", "c2.img", "web.vmdk"}
	stackPats  = []string{"*.img", "db*", "vm1", "vm2/*.img", "vm1/**/*.img", "a.img", "*", "data/**", "*.vmdk"}
)

// mFile is a live file's content, shared by its hard links.
type mFile struct{ data []byte }

type mSnap struct {
	seq     uint64
	id      string
	group   string
	members map[string][]byte
}

type stackRun struct {
	t      *testing.T
	seed   uint64
	rng    *rand.Rand
	dir    string
	ds     *snapstore.Datastore
	fs     *BillyFS
	bs     int
	crashy bool // this session can be copied while open (no background destage)

	files  map[string]*mFile // live files by path; hard links share one
	dirs   map[string]bool   // live directories by path ("" is the root)
	groups map[string][]string
	snaps  map[uint64]*mSnap
	pool   [][]byte // block-sized contents used again and again, for dedupe
	log    []string
	step   int
	counts map[string]int // operations by kind, for the summary
}

func (r *stackRun) logf(format string, a ...any) {
	r.log = append(r.log, fmt.Sprintf("%d: ", r.step)+fmt.Sprintf(format, a...))
	kind := strings.Fields(format)[0]
	if kind == "snapshot" || kind == "group" || kind == "clone" || kind == "restart" {
		kind = strings.Join(strings.Fields(format)[:2], " ")
	}
	r.counts[kind]++
}

func (r *stackRun) fatalf(format string, a ...any) {
	r.t.Helper()
	tail := r.log
	if len(tail) > 40 {
		tail = tail[len(tail)-40:]
	}
	r.t.Fatalf("seed %d, step %d: %s\nlast operations:\n  %s", r.seed, r.step, fmt.Sprintf(format, a...), strings.Join(tail, "\n  "))
}

func (r *stackRun) must(what string, err error) {
	r.t.Helper()
	if err != nil {
		r.fatalf("%s: %v", what, err)
	}
}

func runStackModel(t *testing.T, seed uint64, ops int) {
	t.Logf("seed %d, %d operations (DSTORE_STACK_SEED=%d to repeat)", seed, ops, seed)
	dir := filepath.Join(t.TempDir(), "ds0")
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	r := &stackRun{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0xd5)), dir: dir,
		files: map[string]*mFile{}, dirs: map[string]bool{"": true}, groups: map[string][]string{},
		snaps: map[uint64]*mSnap{}, counts: map[string]int{}}
	r.open()
	defer func() {
		if r.ds != nil {
			r.ds.Close()
		}
	}()
	r.bs = r.ds.Blocks.BlockSize()
	for i := 0; i < 6; i++ {
		r.pool = append(r.pool, r.random(r.bs))
	}
	for r.step = 0; r.step < ops; r.step++ {
		r.do()
		if r.step%7 == 6 {
			r.check()
		}
	}
	r.check()
	r.restart(false)
	r.check()
	rep, err := r.ds.Blocks.Scrub(context.Background())
	if err != nil || len(rep.Corrupt) > 0 {
		r.fatalf("scrub: %v %+v", err, rep.Corrupt)
	}
	var sum []string
	for _, k := range sortedKeys(r.counts) {
		sum = append(sum, fmt.Sprintf("%s %d", k, r.counts[k]))
	}
	t.Logf("operations: %s; at the end %d files, %d snapshots, %d groups", strings.Join(sum, ", "), len(r.files), len(r.snaps), len(r.groups))
}

// open opens the datastore at r.dir. A crashy session never destages or
// merges in the background (the delay is an hour and the log never fills),
// so its files only change when the test asks, and a copy of them taken
// between operations is a state a crash could leave.
func (r *stackRun) open() {
	o := blockstore.Options{SegmentSize: 1 << 20, PackSize: 128 << 10, CacheBytes: 1 << 20}
	r.crashy = r.rng.IntN(2) == 0
	if r.crashy {
		o.DestageDelay = time.Hour
		o.MaxLogBytes = 256 << 20
	} else {
		o.DestageDelay = time.Duration(1+r.rng.IntN(20)) * time.Millisecond
		o.MaxLogBytes = 256 << 10
	}
	ds, err := snapstore.Open(r.dir, o)
	r.must("open", err)
	r.ds = ds
	r.fs = NewBillyFS(ds.NS, 0, 0)
	r.logf("open %s (crashy %v, destage delay %v)", filepath.Base(r.dir), r.crashy, o.DestageDelay)
}

// restart closes and reopens the datastore; unclean: opens a copy of its
// directory taken while it is open and idle, as a kill would leave it.
func (r *stackRun) restart(unclean bool) {
	if !unclean {
		r.logf("restart (clean)")
		r.must("close", r.ds.Close())
		r.ds = nil
		r.open()
		return
	}
	r.logf("restart (unclean copy)")
	// Uncommitted unstable writes become durable here, as an NFS COMMIT
	// or the flusher would make them; a kill after this loses nothing
	// acknowledged.
	r.must("sync", r.ds.Blocks.Sync())
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(r.dir), "ds"))
	cp := filepath.Join(filepath.Dir(r.dir), fmt.Sprintf("ds%d", n+1))
	r.must("copy", copyDataDir(r.dir, cp))
	old := r.ds
	oldDir := r.dir
	r.dir = cp
	r.open()
	r.must("closing the original", old.Close())
	r.must("removing the original", os.RemoveAll(oldDir))
}

// copyDataDir copies a datastore's files: meta.db first, then the log,
// then the packs. The caller guarantees nothing destages meanwhile; the
// log may still grow at its tail (file times), which a crash may cut
// anywhere too.
func copyDataDir(src, dst string) error {
	for _, sub := range []string{"", "nvlog", "packs"} {
		if err := os.MkdirAll(filepath.Join(dst, sub), 0o700); err != nil {
			return err
		}
		ents, err := os.ReadDir(filepath.Join(src, sub))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(src, sub, e.Name()))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dst, sub, e.Name()), b, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *stackRun) random(n int) []byte {
	p := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.rng.Uint64()
		for k := 0; k < 8; k++ {
			p[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		p[i] = byte(r.rng.Uint32())
	}
	return p
}

// content is what a write writes: random bytes, blocks of the pool
// (deduplicated against each other and earlier writes), zeros, or a copy
// of part of another file.
func (r *stackRun) content(n int) []byte {
	switch r.rng.IntN(5) {
	case 0, 1:
		return r.random(n)
	case 2:
		p := make([]byte, 0, n)
		for len(p) < n {
			p = append(p, r.pool[r.rng.IntN(len(r.pool))]...)
		}
		return p[:n]
	case 3:
		return make([]byte, n)
	default:
		if ps := r.paths(); len(ps) > 0 {
			src := r.files[ps[r.rng.IntN(len(ps))]].data
			if len(src) >= n {
				off := r.rng.IntN(len(src)-n+1) &^ (r.bs - 1)
				return bytes.Clone(src[off : off+n])
			}
		}
		return r.random(n)
	}
}

func (r *stackRun) paths() []string {
	ps := make([]string, 0, len(r.files))
	for p := range r.files {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func (r *stackRun) dirList() []string {
	ds := make([]string, 0, len(r.dirs))
	for d := range r.dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	return ds
}

func (r *stackRun) seqs() []uint64 {
	ss := make([]uint64, 0, len(r.snaps))
	for s := range r.snaps {
		ss = append(ss, s)
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i] < ss[j] })
	return ss
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// freePath picks a path in an existing directory where no file is.
func (r *stackRun) freePath() (string, bool) {
	ds := r.dirList()
	for try := 0; try < 20; try++ {
		p := join(ds[r.rng.IntN(len(ds))], stackFiles[r.rng.IntN(len(stackFiles))])
		if r.files[p] == nil {
			return p, true
		}
	}
	return "", false
}

// anyPath picks a file path, existing or not, in any directory of the
// vocabulary.
func (r *stackRun) anyPath() string {
	d := ""
	if r.rng.IntN(3) > 0 {
		d = stackDirs[r.rng.IntN(len(stackDirs))]
	}
	return join(d, stackFiles[r.rng.IntN(len(stackFiles))])
}

func (r *stackRun) pickFile() (string, bool) {
	ps := r.paths()
	if len(ps) == 0 {
		return "", false
	}
	return ps[r.rng.IntN(len(ps))], true
}

func (r *stackRun) pickSnap() (*mSnap, bool) {
	ss := r.seqs()
	if len(ss) == 0 {
		return nil, false
	}
	return r.snaps[ss[r.rng.IntN(len(ss))]], true
}

// addDirs records the directories above p as existing.
func (r *stackRun) addDirs(p string) {
	for d := path.Dir(p); d != "." && d != ""; d = path.Dir(d) {
		r.dirs[d] = true
	}
}

// members computes which live files a group's patterns match now: a
// pattern matching a file, or a directory above it.
func (r *stackRun) members(pats []string) []string {
	var out []string
	for _, p := range r.paths() {
		hit := false
		for q := p; q != "." && !hit; q = path.Dir(q) {
			for _, pat := range pats {
				if snapstore.MatchPath(pat, q) {
					hit = true
					break
				}
			}
		}
		if hit {
			out = append(out, p)
		}
	}
	return out
}

func (r *stackRun) do() {
	ns := r.ds.NS
	switch op := r.rng.IntN(100); {
	case op < 22:
		r.write()
	case op < 27:
		r.truncate()
	case op < 31: // remove a file
		if p, ok := r.pickFile(); ok {
			r.logf("remove %s", p)
			r.must("remove "+p, r.fs.Remove(p))
			delete(r.files, p)
		}
	case op < 35: // rename a file, maybe over another, maybe to a new directory
		if p, ok := r.pickFile(); ok {
			to := r.anyPath()
			r.logf("rename %s %s", p, to)
			r.must("rename", r.fs.Rename(p, to))
			// Two names of one file: POSIX rename does nothing.
			if to != p && r.files[to] != r.files[p] {
				r.files[to] = r.files[p]
				delete(r.files, p)
			}
			r.addDirs(to)
		}
	case op < 37: // mkdir, or rmdir of an empty directory
		d := stackDirs[r.rng.IntN(len(stackDirs))]
		if r.dirs[d] && r.dirEmpty(d) {
			r.logf("rmdir %s", d)
			r.must("rmdir "+d, r.fs.Remove(d))
			delete(r.dirs, d)
		} else {
			r.logf("mkdir %s", d)
			r.must("mkdir "+d, r.fs.MkdirAll(d, 0o755))
			r.dirs[d] = true
			r.addDirs(d + "/x")
		}
	case op < 40: // create a group
		name := fmt.Sprintf("g%d", r.rng.IntN(5))
		pats := []string{stackPats[r.rng.IntN(len(stackPats))]}
		if r.rng.IntN(2) == 0 {
			pats = append(pats, stackPats[r.rng.IntN(len(stackPats))])
		}
		_, err := ns.CreateGroup(name, snapstore.GroupSpec{Match: pats})
		r.logf("group create %s %v: %v", name, pats, err)
		if r.groups[name] != nil {
			if !errors.Is(err, snapstore.ErrGroupExists) {
				r.fatalf("group create %s over an existing group: %v", name, err)
			}
			return
		}
		r.must("group create", err)
		r.groups[name] = pats
	case op < 52:
		r.snapshot()
	case op < 58: // clone ID:PATH NEWPATH
		s, ok := r.pickSnap()
		if !ok || len(s.members) == 0 {
			return
		}
		ms := sortedMembers(s)
		m := ms[r.rng.IntN(len(ms))]
		to, ok := r.freePath()
		if !ok {
			return
		}
		r.logf("clone %s:%s %s", s.id, m, to)
		_, err := ns.Clone(s.seq, m, to)
		r.must("clone", err)
		r.files[to] = &mFile{bytes.Clone(s.members[m])}
	case op < 64: // clone --live, often of a clone
		p, ok := r.pickFile()
		if !ok {
			return
		}
		to, ok := r.freePath()
		if !ok {
			return
		}
		r.logf("clone --live %s %s", p, to)
		_, err := ns.CloneLive(p, to)
		r.must("clone --live", err)
		r.files[to] = &mFile{bytes.Clone(r.files[p].data)}
	case op < 66: // clone onto an existing file: refused, nothing changes
		s, ok := r.pickSnap()
		p, ok2 := r.pickFile()
		if !ok || !ok2 || len(s.members) == 0 {
			return
		}
		m := sortedMembers(s)[0]
		r.logf("clone %s:%s %s (exists)", s.id, m, p)
		if _, err := ns.Clone(s.seq, m, p); !errors.Is(err, snapstore.ErrExist) {
			r.fatalf("clone onto existing %s: %v, want ErrExist", p, err)
		}
	case op < 68: // a hard link (no billy call for it): the two names share a file
		p, ok := r.pickFile()
		to, ok2 := r.freePath()
		if !ok || !ok2 {
			return
		}
		a, err := ns.LookupPath(p)
		r.must("lookup "+p, err)
		d, err := ns.LookupPath(path.Dir(to))
		if path.Dir(to) == "." {
			d, err = ns.LookupPath("")
		}
		r.must("lookup dir of "+to, err)
		r.logf("link %s %s", p, to)
		_, err = ns.Link(a.Ino, d.Ino, path.Base(to))
		r.must("link", err)
		r.files[to] = r.files[p]
	case op < 72:
		r.restore()
	case op < 77: // delete a snapshot
		if s, ok := r.pickSnap(); ok {
			r.logf("snapshot delete %s", s.id)
			r.must("snapshot delete", ns.DeleteSnapshot(s.seq))
			delete(r.snaps, s.seq)
		}
	case op < 80:
		r.retention()
	case op < 81: // delete a group with its snapshots
		for _, g := range sortedKeys(r.groups) {
			if r.rng.IntN(3) != 0 {
				continue
			}
			r.logf("group delete %s", g)
			r.must("group delete", ns.DeleteGroup(g, true))
			delete(r.groups, g)
			for seq, s := range r.snaps {
				if s.group == g {
					delete(r.snaps, seq)
				}
			}
			break
		}
	case op < 87:
		r.gc()
	case op < 91:
		r.restart(r.crashy && r.rng.IntN(2) == 0)
		r.check()
	default: // a whole new file
		p := r.anyPath()
		data := r.content(r.rng.IntN(6 * r.bs))
		r.logf("create %s (%d bytes)", p, len(data))
		r.must("mkdirall", r.fs.MkdirAll(path.Dir(p), 0o755))
		r.addDirs(p)
		f, err := r.fs.Create(p)
		r.must("create "+p, err)
		_, err = f.Write(data)
		r.must("write "+p, err)
		r.must("close "+p, f.Close())
		r.set(p, data)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedMembers(s *mSnap) []string { return sortedKeys(s.members) }

func (r *stackRun) dirEmpty(d string) bool {
	for p := range r.files {
		if strings.HasPrefix(p, d+"/") {
			return false
		}
	}
	for o := range r.dirs {
		if strings.HasPrefix(o, d+"/") {
			return false
		}
	}
	return true
}

// write writes at a random offset (past the end sometimes, so the file
// grows with a hole), across block boundaries.
func (r *stackRun) write() {
	p, ok := r.pickFile()
	if !ok || r.rng.IntN(10) == 0 {
		p = r.anyPath()
	}
	var cur []byte
	if f := r.files[p]; f != nil {
		cur = f.data
	}
	off := r.rng.IntN(len(cur) + 2*r.bs)
	if r.rng.IntN(3) == 0 {
		off &^= r.bs - 1 // aligned: whole blocks, so the pool deduplicates
	}
	n := 1 + r.rng.IntN(3*r.bs)
	data := r.content(n)
	r.logf("write %s at %d, %d bytes", p, off, n)
	r.must("mkdirall", r.fs.MkdirAll(path.Dir(p), 0o755))
	r.addDirs(p)
	f, err := r.fs.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	r.must("open "+p, err)
	_, err = f.Seek(int64(off), io.SeekStart)
	r.must("seek", err)
	_, err = f.Write(data)
	r.must("write "+p, err)
	// An unstable write left uncommitted is acknowledged all the same: it
	// is in every later snapshot, clone and read, and durable after the
	// next Sync (which an unclean restart makes first).
	if r.rng.IntN(3) > 0 {
		r.must("close "+p, f.Close())
	} else {
		r.logf("(left uncommitted)")
	}
	if end := off + n; end > len(cur) {
		cur = append(cur, make([]byte, end-len(cur))...)
	}
	copy(cur[off:], data)
	r.set(p, cur)
}

// set gives the file at p (and its other links) new content, or makes it.
func (r *stackRun) set(p string, data []byte) {
	if f := r.files[p]; f != nil {
		f.data = data
		return
	}
	r.files[p] = &mFile{data}
}

func (r *stackRun) truncate() {
	p, ok := r.pickFile()
	if !ok {
		return
	}
	cur := r.files[p].data
	size := r.rng.IntN(len(cur) + 3*r.bs + 1)
	r.logf("truncate %s to %d (from %d)", p, size, len(cur))
	f, err := r.fs.OpenFile(p, os.O_RDWR, 0)
	r.must("open "+p, err)
	r.must("truncate "+p, f.Truncate(int64(size)))
	r.must("close "+p, f.Close())
	if size <= len(cur) {
		cur = cur[:size:size]
	} else {
		cur = append(cur, make([]byte, size-len(cur))...)
	}
	r.set(p, cur)
}

func (r *stackRun) snapshot() {
	gs := sortedKeys(r.groups)
	if len(gs) == 0 {
		return
	}
	g := gs[r.rng.IntN(len(gs))]
	want := r.members(r.groups[g])
	s, err := r.ds.NS.CreateSnapshot(g, "", false)
	if len(want) == 0 {
		r.logf("snapshot create %s: no members: %v", g, err)
		if !errors.Is(err, snapstore.ErrNoMembers) {
			r.fatalf("snapshot of %s, which matches nothing: %v, want ErrNoMembers", g, err)
		}
		return
	}
	r.must("snapshot create "+g, err)
	r.logf("snapshot create %s: %s %v", g, s.ID(), want)
	var got []string
	for _, m := range s.Members {
		got = append(got, m.Path)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		r.fatalf("snapshot of %s %v has members %v, want %v", g, r.groups[g], got, want)
	}
	ms := &mSnap{seq: s.Seq, id: s.ID(), group: g, members: map[string][]byte{}}
	for _, p := range want {
		ms.members[p] = bytes.Clone(r.files[p].data)
	}
	r.snaps[s.Seq] = ms
}

func (r *stackRun) restore() {
	s, ok := r.pickSnap()
	if !ok {
		return
	}
	var paths []string
	if r.rng.IntN(2) == 0 {
		ms := sortedMembers(s)
		for _, m := range ms {
			if r.rng.IntN(2) == 0 {
				paths = append(paths, m)
			}
		}
	}
	r.logf("restore %s %v", s.id, paths)
	done, err := r.ds.NS.Restore(s.seq, paths)
	r.must("restore", err)
	want := paths
	if len(want) == 0 {
		want = sortedMembers(s)
	}
	if strings.Join(done, ",") != strings.Join(want, ",") {
		r.fatalf("restore of %s restored %v, want %v", s.id, done, want)
	}
	for _, p := range want {
		r.set(p, bytes.Clone(s.members[p]))
		r.addDirs(p)
	}
}

// retention gives a group a keep-last policy and applies it: the newest
// n snapshots stay, the others go.
func (r *stackRun) retention() {
	gs := sortedKeys(r.groups)
	if len(gs) == 0 {
		return
	}
	g := gs[r.rng.IntN(len(gs))]
	n := r.rng.IntN(4)
	ns := r.ds.NS
	_, err := ns.EditGroup(g, func(spec *snapstore.GroupSpec) error {
		spec.Retention = snapstore.Retention{KeepLast: n}
		return nil
	})
	r.must("group edit", err)
	var mine []uint64
	for _, seq := range r.seqs() {
		if r.snaps[seq].group == g {
			mine = append(mine, seq)
		}
	}
	keep := map[string]bool{}
	for i, seq := range mine {
		if n == 0 || i >= len(mine)-n { // keep-last 0 is no policy: keep all
			keep[r.snaps[seq].id] = true
		}
	}
	dry := r.rng.IntN(4) == 0
	r.logf("retention %s keep-last %d (dry run %v) over %d snapshots", g, n, dry, len(mine))
	plan, err := ns.PlanRetention(g, dry)
	r.must("retention", err)
	if len(plan) != len(mine) {
		r.fatalf("retention plan of %s has %d decisions, want %d", g, len(plan), len(mine))
	}
	for _, d := range plan {
		if d.Keep != keep[d.ID] {
			r.fatalf("retention of %s keep-last %d: %s keep=%v, want %v", g, n, d.ID, d.Keep, keep[d.ID])
		}
	}
	if dry {
		return
	}
	for _, seq := range mine {
		if !keep[r.snaps[seq].id] {
			if _, err := ns.Snapshot(seq); !errors.Is(err, snapstore.ErrNoSnapshot) {
				r.fatalf("retention dropped %s but it is still there (%v)", r.snaps[seq].id, err)
			}
			delete(r.snaps, seq)
		}
	}
}

func (r *stackRun) gc() {
	bs := r.ds.Blocks
	if r.rng.IntN(2) == 0 {
		r.logf("settle")
		r.must("settle", bs.Settle())
	}
	o := blockstore.GCOptions{Threshold: 0.3 + 0.7*r.rng.Float64(), DryRun: r.rng.IntN(5) == 0}
	rep, err := bs.GC(context.Background(), o)
	r.logf("gc %+v: %+v", o, rep)
	r.must("gc", err)
}

// check reads the whole live tree through billy and every snapshot member
// through the snapview API.
func (r *stackRun) check() {
	r.t.Helper()
	gotFiles := map[string]bool{}
	gotDirs := map[string]bool{"": true}
	var walk func(d string)
	walk = func(d string) {
		ents, err := r.fs.ReadDir("/" + d)
		r.must("readdir /"+d, err)
		for _, e := range ents {
			p := join(d, e.Name())
			if e.IsDir() {
				gotDirs[p] = true
				walk(p)
				continue
			}
			gotFiles[p] = true
			wf, ok := r.files[p]
			if !ok {
				r.fatalf("%s is in the datastore, not in the model", p)
			}
			want := wf.data
			if e.Size() != int64(len(want)) {
				r.fatalf("%s: size %d, want %d", p, e.Size(), len(want))
			}
			f, err := r.fs.Open(p)
			r.must("open "+p, err)
			got, err := io.ReadAll(f)
			r.must("read "+p, err)
			r.must("close "+p, f.Close())
			if !bytes.Equal(got, want) {
				r.fatalf("%s: %s", p, diffAt(got, want))
			}
		}
	}
	walk("")
	for p := range r.files {
		if !gotFiles[p] {
			r.fatalf("%s is missing from the datastore", p)
		}
	}
	for d := range r.dirs {
		if !gotDirs[d] {
			r.fatalf("directory %s is missing from the datastore", d)
		}
	}
	for d := range gotDirs {
		if !r.dirs[d] {
			r.fatalf("directory %s is in the datastore, not in the model", d)
		}
	}

	ns := r.ds.NS
	snaps := ns.Snapshots("")
	if len(snaps) != len(r.snaps) {
		r.fatalf("%d snapshots, want %d", len(snaps), len(r.snaps))
	}
	for _, s := range snaps {
		ms := r.snaps[s.Seq]
		if ms == nil || ms.id != s.ID() || ms.group != s.Group {
			r.fatalf("snapshot %s of %s is not in the model", s.ID(), s.Group)
		}
		if len(s.Members) != len(ms.members) {
			r.fatalf("snapshot %s has %d members, want %d", ms.id, len(s.Members), len(ms.members))
		}
		for p, want := range ms.members {
			a, err := ns.SnapResolve(ms.group + "/" + ms.id + "/" + p)
			r.must("snapresolve "+ms.id+":"+p, err)
			if a.Size != uint64(len(want)) {
				r.fatalf("snapshot %s:%s size %d, want %d", ms.id, p, a.Size, len(want))
			}
			got := make([]byte, len(want)+1)
			n, eof, err := ns.SnapRead(a.Ino, got, 0)
			r.must("snapread "+ms.id+":"+p, err)
			if !eof || !bytes.Equal(got[:n], want) {
				r.fatalf("snapshot %s:%s (eof %v): %s", ms.id, p, eof, diffAt(got[:n], want))
			}
		}
	}
	gs := ns.Groups()
	if len(gs) != len(r.groups) {
		r.fatalf("%d groups, want %d", len(gs), len(r.groups))
	}
}

func diffAt(got, want []byte) string {
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			return fmt.Sprintf("%d bytes, want %d; first difference at byte %d (block %d): %#x, want %#x",
				len(got), len(want), i, i/4096, got[i], want[i])
		}
	}
	return fmt.Sprintf("%d bytes, want %d (equal up to the shorter)", len(got), len(want))
}
