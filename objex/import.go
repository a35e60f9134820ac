package objex

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
	bolt "go.etcd.io/bbolt"
)

// A remote basis name, recorded in the remote layer of an imported file:
//
//	ox1:<target ID, 32 hex digits>/<snapshot name>#<file index>
func basisName(tid [16]byte, snap string, file int) string {
	return fmt.Sprintf("ox1:%x/%s#%d", tid, snap, file)
}

func parseBasisName(name string) (tid string, snap string, file int, err error) {
	rest, ok := strings.CutPrefix(name, "ox1:")
	if !ok {
		return "", "", 0, fmt.Errorf("objex: remote basis %q is not an OX basis", name)
	}
	tid, rest, ok = strings.Cut(rest, "/")
	i := strings.LastIndexByte(rest, '#')
	if !ok || len(tid) != 32 || i < 0 {
		return "", "", 0, fmt.Errorf("objex: remote basis %q malformed", name)
	}
	snap = rest[:i]
	file, err = strconv.Atoi(rest[i+1:])
	if err != nil || file < 0 || ValidSnapshotName(snap) != nil {
		return "", "", 0, fmt.Errorf("objex: remote basis %q malformed", name)
	}
	return tid, snap, file, nil
}

// manifestPath is where an import keeps the sealed manifest it reads from.
func (m *Manager) manifestPath(tid [16]byte, name string) string {
	return filepath.Join(m.st.dir, "manifests", hex.EncodeToString(tid[:]), name)
}

// remoteBasis serves one file of a manifest: blockstore.RemoteBasis,
// RemoteIndex and RemoteBatch.
type remoteBasis struct {
	m  *Manager
	t  *target
	mf *manifest
	fm *fileMap
	bs int // the manifest's block size
	// dbs is the datastore's block size once known (0 before Attach). When
	// it differs from bs, a datastore block is assembled from the manifest
	// blocks it overlaps, or cut from the one it lies in (see fetch).
	dbs atomic.Int64
}

// dsBlockSize is the datastore's block size, or 0 while unknown.
func (rb *remoteBasis) dsBlockSize() int {
	if v := rb.dbs.Load(); v > 0 {
		return int(v)
	}
	rb.m.mu.Lock()
	ds := rb.m.ds
	rb.m.mu.Unlock()
	if ds == nil {
		return 0
	}
	v := ds.Blocks.BlockSize()
	rb.dbs.Store(int64(v))
	return v
}

// span is the manifest blocks [lo, hi) that datastore block n (of dbs
// bytes) overlaps.
func (rb *remoteBasis) span(n int64, dbs int) (lo, hi uint64) {
	start := uint64(n) * uint64(dbs)
	lo = start / uint64(rb.bs)
	hi = (start + uint64(dbs) + uint64(rb.bs) - 1) / uint64(rb.bs)
	return lo, hi
}

// dsBlocks maps manifest blocks (sorted) to the datastore blocks (of dbs
// bytes) that hold them, sorted and unique.
func (rb *remoteBasis) dsBlocks(blocks []uint64, dbs int) []uint64 {
	if dbs == rb.bs {
		return blocks
	}
	out := make([]uint64, 0, len(blocks))
	for _, b := range blocks {
		start, end := b*uint64(rb.bs), (b+1)*uint64(rb.bs)
		for n := start / uint64(dbs); n*uint64(dbs) < end; n++ {
			if len(out) == 0 || out[len(out)-1] < n {
				out = append(out, n)
			}
		}
	}
	return out
}

func (m *Manager) basis(name string) (*remoteBasis, error) {
	m.mu.Lock()
	rb := m.bases[name]
	m.mu.Unlock()
	if rb != nil {
		return rb, nil
	}
	tid, snap, file, err := parseBasisName(name)
	if err != nil {
		return nil, err
	}
	t, err := m.targetByID(m.ctx, tid)
	if err != nil {
		return nil, err
	}
	// The local copy first: an imported file opens without the network.
	p := m.manifestPath(t.id, snap)
	var mf *manifest
	sealed, err := os.ReadFile(p)
	if err == nil {
		mf, err = m.openManifest(t, snap, sealed)
		if err != nil {
			m.log.Error("objex: cached manifest failed verification; fetching it again", "path", p, "err", err)
		}
	}
	if mf == nil {
		if mf, sealed, err = m.loadManifest(m.ctx, t, snap); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(p, sealed); err != nil {
			return nil, err
		}
	}
	if file >= len(mf.files) {
		return nil, fmt.Errorf("objex: remote basis %q: the manifest has %d files: %w", name, len(mf.files), ErrCorrupt)
	}
	rb = &remoteBasis{m: m, t: t, mf: mf, fm: &mf.files[file], bs: mf.Info.BlockSize}
	m.mu.Lock()
	if prev := m.bases[name]; prev != nil {
		rb = prev
	} else {
		m.bases[name] = rb
	}
	m.mu.Unlock()
	return rb, nil
}

func writeFileAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

// Locate implements blockstore.RemoteIndex.
func (rb *remoteBasis) Locate(n int64) (bool, blockstore.Fingerprint, bool) {
	if dbs := rb.dsBlockSize(); dbs != rb.bs {
		// Another block size: no local fingerprint can match. A hole
		// when no manifest block overlaps; unknown before Attach.
		if dbs == 0 {
			return false, blockstore.Fingerprint{}, false
		}
		lo, hi := rb.span(n, dbs)
		for b := lo; b < hi; b++ {
			if _, ok := rb.fm.lookup(b); ok {
				return false, blockstore.Fingerprint{}, false
			}
		}
		return true, blockstore.Fingerprint{}, true
	}
	idx, ok := rb.fm.lookup(uint64(n))
	if !ok {
		return true, blockstore.Fingerprint{}, true
	}
	fp, known := rb.m.st.localFP(rb.t.id, rb.mf.chunks[idx].ID)
	return false, fp, known
}

// Fetched implements blockstore.RemoteIndex.
func (rb *remoteBasis) Fetched(n int64, fp blockstore.Fingerprint) {
	if rb.dsBlockSize() != rb.bs {
		return // a datastore block is not a manifest chunk
	}
	if idx, ok := rb.fm.lookup(uint64(n)); ok {
		rb.m.st.learn(rb.t.id, rb.mf.chunks[idx].ID, fp)
	}
}

// ReadBlock implements blockstore.RemoteBasis: a demand read.
func (rb *remoteBasis) ReadBlock(ctx context.Context, n int64, p []byte) (bool, error) {
	holes, err := rb.ReadBlocks(ctx, []int64{n}, [][]byte{p})
	if err != nil {
		return false, err
	}
	return holes[0], nil
}

// ReadBlocks implements blockstore.RemoteBatch: a demand read, ahead of
// every thickener, not paced by the bandwidth limit.
func (rb *remoteBasis) ReadBlocks(ctx context.Context, ns []int64, p [][]byte) ([]bool, error) {
	rb.m.demand.Add(1)
	defer rb.m.demand.Add(-1)
	holes, _, err := rb.fetch(ctx, rb.t.fast, ns, p)
	return holes, err
}

// maxRange bounds one ranged GET of adjacent records.
const maxRange = 4 << 20

// fetch reads blocks ns into p through st: adjacent records of one object
// in one ranged GET, each record verified, decrypted and decompressed. It
// returns the holes and the bytes it fetched.
func (rb *remoteBasis) fetch(ctx context.Context, st ObjectStore, ns []int64, p [][]byte) ([]bool, int64, error) {
	if len(ns) == 0 {
		return nil, 0, nil
	}
	dbs := len(p[0])
	if dbs == rb.bs {
		return rb.fetchBlocks(ctx, st, ns, p)
	}
	rb.dbs.Store(int64(dbs))
	// Another block size: fetch the manifest blocks each datastore block
	// overlaps, once each, and copy the overlapping bytes.
	var mns []int64
	at := map[uint64]int{}
	for _, n := range ns {
		lo, hi := rb.span(n, dbs)
		for b := lo; b < hi; b++ {
			if _, ok := at[b]; !ok {
				at[b] = len(mns)
				mns = append(mns, int64(b))
			}
		}
	}
	bufs := make([][]byte, len(mns))
	for k := range bufs {
		bufs[k] = make([]byte, rb.bs)
	}
	mholes, moved, err := rb.fetchBlocks(ctx, st, mns, bufs)
	if err != nil {
		return nil, moved, err
	}
	holes := make([]bool, len(ns))
	bs := int64(rb.bs)
	for i, n := range ns {
		start := n * int64(dbs)
		end := start + int64(dbs)
		lo, hi := rb.span(n, dbs)
		clear(p[i])
		holes[i] = true
		for b := lo; b < hi; b++ {
			k := at[b]
			if mholes[k] {
				continue
			}
			holes[i] = false
			bstart := int64(b) * bs
			from, to := max(start, bstart), min(end, bstart+bs)
			copy(p[i][from-start:to-start], bufs[k][from-bstart:to-bstart])
		}
	}
	return holes, moved, nil
}

// fetchBlocks is fetch of manifest blocks ns into p (of the manifest's
// block size).
func (rb *remoteBasis) fetchBlocks(ctx context.Context, st ObjectStore, ns []int64, p [][]byte) ([]bool, int64, error) {
	var moved int64
	holes := make([]bool, len(ns))
	want := map[uint32][]int{} // chunk index -> positions
	for i, n := range ns {
		idx, ok := rb.fm.lookup(uint64(n))
		if !ok {
			holes[i] = true
			continue
		}
		want[idx] = append(want[idx], i)
	}
	idxs := make([]uint32, 0, len(want))
	for idx := range want {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(a, b int) bool {
		ca, cb := &rb.mf.chunks[idxs[a]], &rb.mf.chunks[idxs[b]]
		if ca.Obj != cb.Obj {
			return ca.Obj < cb.Obj
		}
		return ca.Off < cb.Off
	})
	for start := 0; start < len(idxs); {
		first := &rb.mf.chunks[idxs[start]]
		end := start + 1
		hi := first.Off + int64(first.Len)
		for end < len(idxs) {
			c := &rb.mf.chunks[idxs[end]]
			if c.Obj != first.Obj || c.Off != hi || hi+int64(c.Len)-first.Off > maxRange {
				break
			}
			hi += int64(c.Len)
			end++
		}
		key := dataKey(rb.mf.objs[first.Obj])
		data, err := st.Get(ctx, key, first.Off, hi-first.Off)
		if err != nil {
			return nil, moved, err
		}
		rb.m.fetched.Add(int64(len(data)))
		moved += int64(len(data))
		for _, idx := range idxs[start:end] {
			c := &rb.mf.chunks[idx]
			rel := c.Off - first.Off
			plain, err := rb.t.keys.openRecord(data[rel:rel+int64(c.Len)], key, c.Off, c.ID, rb.bs)
			if err != nil {
				rb.m.log.Error("objex: remote chunk failed verification", "target", rb.t.cfg.Name, "object", key, "offset", c.Off, "err", err)
				return nil, moved, err
			}
			for _, i := range want[idx] {
				copy(p[i], plain)
			}
		}
		start = end
	}
	return holes, moved, nil
}

// Import makes newPath a live, writable file whose content is file member
// of snapshot snap in the target, at once: no data moves before it
// returns. Reads fetch what they need; a thickener copies the rest in the
// background (the returned job), under the target's bandwidth limit. The
// manifest is authenticated first: one that fails refuses the import.
// member may be empty when the snapshot has one file.
func (m *Manager) Import(ctx context.Context, targetName, snap, member, newPath string) (snapstore.Attr, *Job, error) {
	ds, err := m.datastore()
	if err != nil {
		return snapstore.Attr{}, nil, err
	}
	t, err := m.target(ctx, targetName)
	if err != nil {
		return snapstore.Attr{}, nil, err
	}
	mf, sealed, err := m.loadManifest(ctx, t, snap)
	if err != nil {
		return snapstore.Attr{}, nil, fmt.Errorf("objex: import refused: %w", err)
	}
	fi := -1
	member = strings.Trim(member, "/")
	for i, f := range mf.Info.Files {
		if f.Path == member || member == "" && len(mf.Info.Files) == 1 {
			fi = i
			break
		}
	}
	if fi < 0 {
		if member == "" {
			return snapstore.Attr{}, nil, fmt.Errorf("objex: snapshot %s has %d files: name one", snap, len(mf.Info.Files))
		}
		return snapstore.Attr{}, nil, fmt.Errorf("objex: snapshot %s has no file %q", snap, member)
	}
	// Keep the manifest before any layer names it.
	if err := writeFileAtomic(m.manifestPath(t.id, snap), sealed); err != nil {
		return snapstore.Attr{}, nil, err
	}
	return m.importFile(ds, t, mf, fi, newPath, false)
}

// ImportAll imports every file of snapshot snap as newDir/<its path>,
// making directories as needed; see Import.
func (m *Manager) ImportAll(ctx context.Context, targetName, snap, newDir string) ([]snapstore.Attr, []*Job, error) {
	ds, err := m.datastore()
	if err != nil {
		return nil, nil, err
	}
	t, err := m.target(ctx, targetName)
	if err != nil {
		return nil, nil, err
	}
	mf, sealed, err := m.loadManifest(ctx, t, snap)
	if err != nil {
		return nil, nil, fmt.Errorf("objex: import refused: %w", err)
	}
	if err := writeFileAtomic(m.manifestPath(t.id, snap), sealed); err != nil {
		return nil, nil, err
	}
	var attrs []snapstore.Attr
	var jobs []*Job
	for fi, f := range mf.Info.Files {
		a, j, err := m.importFile(ds, t, mf, fi, strings.TrimSuffix(newDir, "/")+"/"+f.Path, true)
		if err != nil {
			return attrs, jobs, fmt.Errorf("objex: import of %s: %w", f.Path, err)
		}
		attrs, jobs = append(attrs, a), append(jobs, j)
	}
	return attrs, jobs, nil
}

// importFile makes the file of one manifest member and starts its
// thickener.
func (m *Manager) importFile(ds *snapstore.Datastore, t *target, mf *manifest, fi int, newPath string, mkdirs bool) (snapstore.Attr, *Job, error) {
	snap := mf.Info.Name
	name := basisName(t.id, snap, fi)
	f := mf.Info.Files[fi]
	attr, root, err := ds.NS.CreateRemote(newPath, name, f.Size, snapstore.NewAttr{Mode: f.Mode, UID: f.UID, GID: f.GID}, mkdirs)
	if err != nil {
		return snapstore.Attr{}, nil, err
	}
	jid, err := m.st.nextJobID()
	if err != nil {
		return attr, nil, err
	}
	r := importRecord{Layer: uint64(root), Basis: name, Target: hex.EncodeToString(t.id[:]), Name: snap, File: fi,
		Path: strings.Trim(newPath, "/"), State: "thickening", JobID: jid}
	if err := m.st.putJSON(bImports, u64key(r.Layer), &r); err != nil {
		return attr, nil, err
	}
	return attr, m.startThickener(r), nil
}

func (m *Manager) startThickener(r importRecord) *Job {
	tname := r.Target
	if t, err := m.targetByID(m.ctx, r.Target); err == nil {
		tname = t.cfg.Name
	}
	j := newJob(JobInfo{ID: r.JobID, Kind: "import", State: JobRunning, Target: tname, Snapshot: r.Name, Path: r.Path})
	m.mu.Lock()
	m.jobs[r.JobID] = j
	if m.thick[r.Layer] {
		m.mu.Unlock()
		return j
	}
	m.thick[r.Layer] = true
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.thicken(m.ctx, j, &r)
		m.mu.Lock()
		delete(m.thick, r.Layer)
		m.mu.Unlock()
		if err != nil && m.ctx.Err() != nil {
			j.finish(err) // Close: resumes at the next Attach
			return
		}
		if err != nil {
			m.log.Error("objex: thickening failed", "path", r.Path, "snapshot", r.Name, "err", err)
		} else {
			m.log.Info("objex: thickening done", "path", r.Path, "snapshot", r.Name)
		}
		j.finish(err)
	}()
	return j
}

// thicken copies every block of an imported file's remote layer that is
// not local yet, in block order, under the target's bandwidth limit, and
// always after the demand reads in flight. It is restartable at any
// point: what is local is skipped.
func (m *Manager) thicken(ctx context.Context, j *Job, r *importRecord) error {
	ds, err := m.datastore()
	if err != nil {
		return err
	}
	rb, err := m.basis(r.Basis)
	if err != nil {
		return err
	}
	// Datastore blocks: the manifest's, or those that hold them when the
	// block sizes differ.
	bs := ds.Blocks.BlockSize()
	rb.dbs.Store(int64(bs))
	root := blockstore.LayerID(r.Layer)
	blocks := rb.dsBlocks(rb.fm.blocks, bs)
	j.update(func(in *JobInfo) { in.BytesTotal = int64(len(blocks)) * int64(bs) })
	var lv *blockstore.LayerView
	batch := m.cfg.ThickenBatch
	for i := 0; i < len(blocks); {
		end := min(i+batch, len(blocks))
		miss, err := ds.Blocks.RemoteMissing(root, blocks[i:end])
		if errors.Is(err, blockstore.ErrNotFound) {
			// The file and every clone of it are gone.
			return m.dropImport(r)
		}
		if err != nil {
			return err
		}
		var local, fetch []uint64
		for _, b := range miss {
			if _, _, known := rb.Locate(int64(b)); known {
				local = append(local, b)
			} else {
				fetch = append(fetch, b)
			}
		}
		// Blocks whose content this datastore holds: a read through the
		// layer references them (no network unless the copy is gone).
		if len(local) > 0 {
			if lv == nil {
				if lv, err = ds.Blocks.OpenLayer(root); err != nil {
					return err
				}
			}
			buf := make([]byte, bs)
			size := lv.Size()
			for _, b := range local {
				// The last block may be partial: read only what the
				// file has (a full-block read there ends in io.EOF).
				off := int64(b) * int64(bs)
				if n := min(int64(bs), size-off); n > 0 {
					if _, err := lv.ReadAt(buf[:n], off); err != nil {
						return err
					}
				}
			}
		}
		if len(fetch) > 0 {
			// Demand reads go first.
			for m.demand.Load() > 0 {
				if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
					return err
				}
			}
			data := make([][]byte, len(fetch))
			ns := make([]int64, len(fetch))
			for k, b := range fetch {
				data[k] = make([]byte, bs)
				ns[k] = int64(b)
			}
			holes, moved, err := rb.fetch(WithLimiter(ctx, rb.t.lim), rb.t.st, ns, data)
			if err != nil {
				if errors.Is(err, ErrCorrupt) || ctx.Err() != nil {
					return err
				}
				// The target is unreachable: keep trying, slowly.
				j.update(func(in *JobInfo) { in.Error = "retrying: " + err.Error() })
				m.log.Warn("objex: thickening waits for the target", "path", r.Path, "err", err)
				if err := sleepCtx(ctx, 5*time.Second); err != nil {
					return err
				}
				continue
			}
			for k := range holes {
				if holes[k] {
					data[k] = nil
				}
			}
			fps, err := ds.Blocks.FillRemote(root, fetch, data)
			if errors.Is(err, blockstore.ErrNotFound) {
				return m.dropImport(r)
			}
			if err != nil {
				return err
			}
			for k, b := range fetch {
				if data[k] != nil {
					rb.Fetched(int64(b), fps[k])
				}
			}
			j.update(func(in *JobInfo) { in.BytesMoved += moved; in.Error = "" })
		}
		j.update(func(in *JobInfo) { in.BytesDone = int64(end) * int64(bs) })
		i = end
	}
	r.State = "thick"
	return m.st.putJSON(bImports, u64key(r.Layer), r)
}

func (m *Manager) dropImport(r *importRecord) error {
	m.log.Info("objex: imported file is gone; thickening stops", "path", r.Path)
	return m.st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bImports).Delete(u64key(r.Layer)) })
}
