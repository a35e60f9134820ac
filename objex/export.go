package objex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/internal/par"
	"github.com/dstore/dstore/snapstore"
	bolt "go.etcd.io/bbolt"
)

// ExportOptions tune an export.
type ExportOptions struct {
	// Name of the snapshot in the target; "" = "<group>@<snapshot ID>".
	Name string
	// ByGroup marks an export made because the snapshot's protection group
	// names the target (scheduled exports): the manifest says so
	// (SnapshotSource.ByGroup), so that the group's retention may later
	// delete it from the target (see Retire).
	ByGroup bool
}

// DefaultExportName is the name an export gives a snapshot by default.
func DefaultExportName(s *snapstore.Snapshot) string { return s.Group + "@" + s.ID() }

// Export starts exporting snapshot seq to the target and returns its job.
// It runs in the background; after an interruption (an error, Close, a
// crash) it resumes at the next Attach, or when Export is called again with
// the same snapshot, target and name, and sends only what the target does
// not hold yet.
func (m *Manager) Export(ctx context.Context, seq uint64, targetName string, o ExportOptions) (*Job, error) {
	ds, err := m.datastore()
	if err != nil {
		return nil, err
	}
	snap, err := ds.NS.Snapshot(seq)
	if err != nil {
		return nil, err
	}
	if _, err := m.target(ctx, targetName); err != nil {
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = DefaultExportName(snap)
	}
	if err := ValidSnapshotName(name); err != nil {
		return nil, err
	}
	recs, err := m.jobRecords()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Kind == "export" && r.TargetName == targetName && r.Name == name && r.State != JobDone {
			if r.Seq != seq {
				return nil, fmt.Errorf("objex: an export to %s named %s (snapshot %d) is unfinished", targetName, name, r.Seq)
			}
			m.mu.Lock()
			j := m.jobs[r.ID]
			m.mu.Unlock()
			if j != nil && j.Info().State == JobRunning {
				return j, nil
			}
			return m.startExport(r), nil
		}
	}
	id, err := m.st.nextJobID()
	if err != nil {
		return nil, err
	}
	if o.ByGroup {
		// Before the record: a mark without a record is harmless, a record
		// without its mark would export unmarked (kept by retention).
		if err := m.markGroupExport(id); err != nil {
			return nil, err
		}
	}
	r := jobRecord{ID: id, Kind: "export", State: JobQueued, TargetName: targetName, Seq: seq, Name: name}
	if err := m.st.putJSON(bJobs, u64key(id), &r); err != nil {
		return nil, err
	}
	return m.startExport(r), nil
}

func (m *Manager) startExport(r jobRecord) *Job {
	j := newJob(JobInfo{ID: r.ID, Kind: "export", State: JobQueued, Target: r.TargetName, Snapshot: r.Name})
	m.mu.Lock()
	m.jobs[r.ID] = j
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.runExport(m.ctx, j, &r)
		if err != nil && m.ctx.Err() != nil {
			// Stopped by Close: the record stays running and resumes.
			j.finish(err)
			return
		}
		r.State = JobDone
		r.Error = ""
		if err != nil {
			r.State, r.Error = JobFailed, err.Error()
			m.log.Error("objex: export failed", "job", r.ID, "target", r.TargetName, "snapshot", r.Name, "err", err)
		} else {
			m.log.Info("objex: export done", "job", r.ID, "target", r.TargetName, "snapshot", r.Name)
		}
		in := j.Info()
		r.BytesDone, r.BytesTotal = in.BytesDone, in.BytesTotal
		if perr := m.st.putJSON(bJobs, u64key(r.ID), &r); perr != nil && err == nil {
			err = perr
		}
		j.finish(err)
	}()
	return j
}

// exporter is the state of one export.
type exporter struct {
	m     *Manager
	t     *target
	store *blockstore.Store
	bs    int
	job   *Job

	mf       manifest
	chunkIdx map[ChunkID]uint32
	objIdx   map[ObjectID]uint32

	cur     *objBuilder
	uploads chan *objBuilder
	upDone  chan struct{} // closed when the uploader ends
	upErr   error         // why it ended; read after upDone is closed
	sent    map[ObjectID]bool
	learned []fpPair // fingerprint <-> chunk ID pairs not saved yet
}

// objBuilder is a data object being filled.
type objBuilder struct {
	id   ObjectID
	key  string
	buf  []byte
	ents []indexEntry
}

func (m *Manager) runExport(ctx context.Context, j *Job, r *jobRecord) error {
	ds, err := m.datastore()
	if err != nil {
		return err
	}
	t, err := m.target(ctx, r.TargetName)
	if err != nil {
		return err
	}
	t.expMu.Lock()
	defer t.expMu.Unlock()
	r.State = JobRunning
	if err := m.st.putJSON(bJobs, u64key(r.ID), r); err != nil {
		return err
	}
	j.update(func(in *JobInfo) { in.State = JobRunning })
	snap, err := ds.NS.Snapshot(r.Seq)
	if err != nil {
		return err
	}
	// A manifest already there: this export committed before it could say
	// so, or the name is taken by another snapshot.
	if sealed, err := t.st.Get(ctx, manifestKey(r.Name), 0, -1); err == nil {
		mf, err := m.openManifest(t, r.Name, sealed)
		if err == nil && mf.Info.Snapshot.Seq == snap.Seq && mf.Info.Snapshot.DatastoreID == ds.Blocks.ID() {
			j.update(func(in *JobInfo) { in.BytesDone, in.BytesTotal = mf.Info.Bytes, mf.Info.Bytes })
			return nil
		}
		return fmt.Errorf("objex: target %s already holds a snapshot named %s", r.TargetName, r.Name)
	} else if !errors.Is(err, ErrNotExist) {
		return err
	}
	if err := m.syncIndex(ctx, t); err != nil {
		return err
	}
	e := &exporter{m: m, t: t, store: ds.Blocks, bs: ds.Blocks.BlockSize(), job: j,
		chunkIdx: map[ChunkID]uint32{}, objIdx: map[ObjectID]uint32{},
		uploads: make(chan *objBuilder), upDone: make(chan struct{}), sent: map[ObjectID]bool{}}
	var total int64
	for _, mem := range snap.Members {
		total += int64(mem.Size)
	}
	j.update(func(in *JobInfo) { in.BytesTotal = total })
	go e.uploader(ctx)
	err = e.run(ctx, snap)
	if err == nil {
		err = e.flush(ctx)
	}
	close(e.uploads)
	<-e.upDone
	if err == nil {
		err = e.upErr
	}
	if err != nil {
		return err
	}
	// Objects this export did not upload may have been pruned since the
	// index was read: a manifest must never name a missing object.
	for _, o := range e.mf.objs {
		if e.sent[o] {
			continue
		}
		if _, err := t.st.Stat(ctx, dataKey(o)); err != nil {
			if errors.Is(err, ErrNotExist) {
				m.forgetObject(t, o)
				return fmt.Errorf("objex: object %s vanished from the target during the export (pruned?); run the export again: %w", o, err)
			}
			return err
		}
	}
	// The commit point: the manifest, after every object it names.
	e.mf.Info = ManifestInfo{Format: manifestFormat, Version: 1, Name: r.Name, ExportedNs: time.Now().UnixNano(),
		BlockSize: e.bs, Files: e.mf.Info.Files, Bytes: e.mf.Info.Bytes,
		Snapshot: SnapshotSource{ID: snap.ID(), Seq: snap.Seq, Group: snap.Group, Label: snap.Label,
			CreatedNs: snap.Created, DatastoreID: ds.Blocks.ID(), ByGroup: m.groupExport(r.ID)}}
	for _, o := range e.mf.objs {
		e.mf.Info.Objects = append(e.mf.Info.Objects, o.String())
	}
	for _, c := range e.mf.chunks {
		e.mf.Info.Stored += int64(c.Len)
	}
	body, err := encodeManifest(&e.mf)
	if err != nil {
		return err
	}
	sealed, err := t.keys.sealMeta(metaManifest, manifestKey(r.Name), body)
	if err != nil {
		return err
	}
	if err := t.st.Put(ctx, manifestKey(r.Name), sealed); err != nil {
		return err
	}
	m.uploaded.Add(int64(len(sealed)))
	return m.st.flushLearned()
}

// exportBatch is how many blocks are resolved and looked up at a time.
const exportBatch = 1024

func (e *exporter) run(ctx context.Context, snap *snapstore.Snapshot) error {
	seen := map[uint64]int{} // layer -> file index (hard links share a layer)
	for _, mem := range snap.Members {
		fi := FileInfo{Path: mem.Path, Size: int64(mem.Size), Mode: mem.Mode, UID: mem.UID, GID: mem.GID,
			Atime: mem.Atime, Mtime: mem.Mtime, Ctime: mem.Ctime}
		if prev, ok := seen[mem.Layer]; ok {
			fi.DataBlocks = e.mf.Info.Files[prev].DataBlocks
			e.mf.Info.Files = append(e.mf.Info.Files, fi)
			e.mf.files = append(e.mf.files, e.mf.files[prev])
			e.mf.Info.Bytes += fi.DataBlocks * int64(e.bs)
			continue
		}
		seen[mem.Layer] = len(e.mf.files)
		fm, err := e.file(ctx, blockstore.LayerID(mem.Layer), int64(mem.Size))
		if err != nil {
			return fmt.Errorf("objex: export of %s: %w", mem.Path, err)
		}
		fi.DataBlocks = int64(len(fm.blocks))
		e.mf.Info.Bytes += fi.DataBlocks * int64(e.bs)
		e.mf.Info.Files = append(e.mf.Info.Files, fi)
		e.mf.files = append(e.mf.files, fm)
	}
	return nil
}

// file exports one frozen layer and returns its block map.
func (e *exporter) file(ctx context.Context, layer blockstore.LayerID, size int64) (fileMap, error) {
	var fm fileMap
	nb := uint64((size + int64(e.bs) - 1) / int64(e.bs))
	var lv *blockstore.LayerView
	for first := uint64(0); first < nb; first += exportBatch {
		if err := ctx.Err(); err != nil {
			return fm, err
		}
		select {
		case <-e.upDone:
			if e.upErr != nil {
				return fm, e.upErr
			}
		default:
		}
		blocks, err := e.store.LayerBlocks(layer, first, exportBatch)
		if err != nil {
			return fm, err
		}
		// Known content: fingerprint -> chunk ID -> a chunk the target or
		// this export already has.
		ids := make([]ChunkID, len(blocks))
		have := make([]bool, len(blocks))
		locs := make([]chunkLoc, len(blocks))
		err = e.m.st.db.View(func(tx *bolt.Tx) error {
			fb := tx.Bucket(tbucket(e.t.id, 'f'))
			cb := tx.Bucket(tbucket(e.t.id, 'c'))
			for i, b := range blocks {
				if b.Hole || b.Remote {
					continue
				}
				v := fb.Get(b.FP[:])
				if len(v) != 32 {
					continue
				}
				copy(ids[i][:], v)
				if _, ok := e.chunkIdx[ids[i]]; ok {
					have[i] = true
				} else if l, ok := decodeLoc(cb.Get(v)); ok {
					have[i], locs[i] = true, l
				}
			}
			return nil
		})
		if err != nil {
			return fm, err
		}
		var read []blockstore.ExportBlock
		var readAt []int
		for i, b := range blocks {
			if !b.Hole && !b.Remote && !have[i] {
				read = append(read, b)
				readAt = append(readAt, i)
			}
		}
		var data []blockstore.ExportData
		if len(read) > 0 {
			if data, err = e.store.ReadExport(read); err != nil {
				return fm, err
			}
		}
		// Blocks not local yet (a file imported from a target, not
		// thick): read through the layer, which fetches them.
		for i, b := range blocks {
			if !b.Remote {
				continue
			}
			if lv == nil {
				if lv, err = e.store.OpenLayer(layer); err != nil {
					return fm, err
				}
			}
			plain := make([]byte, e.bs)
			if _, err := lv.ReadAt(plain, int64(b.Block)*int64(e.bs)); err != nil {
				return fm, fmt.Errorf("block %d: %w", b.Block, err)
			}
			read = append(read, b)
			readAt = append(readAt, i)
			data = append(data, blockstore.ExportData{Plain: plain})
		}
		// Chunk IDs and compression on all CPUs.
		newIDs := make([]ChunkID, len(data))
		par.Do(len(data), func(lo, hi int) {
			for k := lo; k < hi; k++ {
				d := &data[k]
				newIDs[k] = e.t.keys.chunkID(d.Plain)
				if d.Codec == blockstore.CodecRaw {
					if z, ok := blockstore.CompressS2(d.Plain); ok {
						d.Codec, d.Packed = blockstore.CodecS2, z
					}
				}
			}
		})
		// Content the target holds already (sent by any datastore).
		held := make([]chunkLoc, len(data))
		isHeld := make([]bool, len(data))
		err = e.m.st.db.View(func(tx *bolt.Tx) error {
			cb := tx.Bucket(tbucket(e.t.id, 'c'))
			for k, id := range newIDs {
				if _, ok := e.chunkIdx[id]; !ok {
					held[k], isHeld[k] = decodeLoc(cb.Get(id[:]))
				}
			}
			return nil
		})
		if err != nil {
			return fm, err
		}
		byBlock := make(map[int]int, len(readAt))
		for k, i := range readAt {
			byBlock[i] = k
		}
		for i, b := range blocks {
			if b.Hole {
				continue
			}
			var idx uint32
			switch k, isNew := byBlock[i]; {
			case !isNew && e.hasChunk(ids[i]):
				idx = e.chunkIdx[ids[i]]
			case !isNew:
				idx = e.addKnown(ids[i], locs[i])
			default:
				id := newIDs[k]
				if !b.Remote {
					e.learned = append(e.learned, fpPair{b.FP, id})
				}
				switch {
				case e.hasChunk(id):
					idx = e.chunkIdx[id]
				case isHeld[k]:
					idx = e.addKnown(id, held[k])
				default:
					if idx, err = e.addRecord(ctx, id, data[k]); err != nil {
						return fm, err
					}
				}
			}
			fm.blocks = append(fm.blocks, b.Block)
			fm.chunk = append(fm.chunk, idx)
		}
		if len(e.learned) >= 16*exportBatch {
			if err := e.saveLearned(); err != nil {
				return fm, err
			}
		}
		done := min(int64(first+exportBatch), int64(nb)) * int64(e.bs)
		e.job.update(func(in *JobInfo) { in.BytesDone += min(done, size) - min(int64(first)*int64(e.bs), size) })
	}
	return fm, e.saveLearned()
}

type fpPair struct {
	fp blockstore.Fingerprint
	id ChunkID
}

// saveLearned writes the fingerprint <-> chunk ID pairs the export
// learned, in key order (bbolt inserts in order touch each page once).
// They are a cache: losing them costs re-reading, never correctness.
func (e *exporter) saveLearned() error {
	if len(e.learned) == 0 {
		return nil
	}
	pairs := e.learned
	e.learned = nil
	return e.m.st.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(tbucket(e.t.id, 'f'))
		lb := tx.Bucket(tbucket(e.t.id, 'l'))
		sort.Slice(pairs, func(i, j int) bool { return bytes.Compare(pairs[i].fp[:], pairs[j].fp[:]) < 0 })
		for _, p := range pairs {
			if err := fb.Put(append([]byte(nil), p.fp[:]...), append([]byte(nil), p.id[:]...)); err != nil {
				return err
			}
		}
		sort.Slice(pairs, func(i, j int) bool { return bytes.Compare(pairs[i].id[:], pairs[j].id[:]) < 0 })
		for _, p := range pairs {
			if err := lb.Put(append([]byte(nil), p.id[:]...), append([]byte(nil), p.fp[:]...)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *exporter) hasChunk(id ChunkID) bool {
	_, ok := e.chunkIdx[id]
	return ok
}

// addKnown adds a chunk the target holds at loc to the manifest.
func (e *exporter) addKnown(id ChunkID, loc chunkLoc) uint32 {
	if idx, ok := e.chunkIdx[id]; ok {
		return idx
	}
	oi, ok := e.objIdx[loc.Obj]
	if !ok {
		oi = uint32(len(e.mf.objs))
		e.objIdx[loc.Obj] = oi
		e.mf.objs = append(e.mf.objs, loc.Obj)
	}
	idx := uint32(len(e.mf.chunks))
	e.chunkIdx[id] = idx
	e.mf.chunks = append(e.mf.chunks, manifestChunk{ID: id, Obj: oi, Off: loc.Off, Len: loc.Len})
	return idx
}

// addRecord appends a record of new content id to the object being built
// and returns its index in the manifest's chunk table.
func (e *exporter) addRecord(ctx context.Context, id ChunkID, d blockstore.ExportData) (uint32, error) {
	codec, payload := d.Codec, d.Packed
	if codec == blockstore.CodecRaw {
		payload = d.Plain
	}
	if e.cur == nil {
		o := newObjectID()
		e.sent[o] = true
		e.cur = &objBuilder{id: o, key: dataKey(o), buf: append(make([]byte, 0, e.t.osize+int64(maxRecordLen(e.bs))), objectHeader(e.bs)...)}
	}
	off := int64(len(e.cur.buf))
	e.cur.buf = e.t.keys.appendRecord(e.cur.buf, e.cur.key, off, id, codec, payload, e.bs)
	n := int32(int64(len(e.cur.buf)) - off)
	e.cur.ents = append(e.cur.ents, indexEntry{ID: id, Off: off, Len: n})
	idx := e.addKnown(id, chunkLoc{Obj: e.cur.id, Off: off, Len: n})
	if int64(len(e.cur.buf)) >= e.t.osize {
		if err := e.flush(ctx); err != nil {
			return 0, err
		}
	}
	return idx, nil
}

// flush hands the object being built to the uploader.
func (e *exporter) flush(ctx context.Context) error {
	if e.cur == nil {
		return nil
	}
	b := e.cur
	e.cur = nil
	select {
	case e.uploads <- b:
		return nil
	case <-e.upDone:
		if e.upErr != nil {
			return e.upErr
		}
		return errors.New("objex: uploader stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// uploader sends objects one at a time while the next one is built: the
// data object, then its index object, then notes its chunks locally. So a
// chunk is known to be in the target only once both are stored.
func (e *exporter) uploader(ctx context.Context) {
	defer close(e.upDone)
	for b := range e.uploads {
		if err := e.upload(ctx, b); err != nil {
			e.upErr = err
			return
		}
	}
}

func (e *exporter) upload(ctx context.Context, b *objBuilder) error {
	lctx := WithLimiter(ctx, e.t.lim)
	if err := e.t.st.Put(lctx, b.key, b.buf); err != nil {
		return err
	}
	idx, err := e.t.keys.sealMeta(metaIndex, indexKey(b.id), encodeIndex(b.id, e.bs, int64(len(b.buf)), b.ents))
	if err != nil {
		return err
	}
	if err := e.t.st.Put(lctx, indexKey(b.id), idx); err != nil {
		return err
	}
	moved := int64(len(b.buf) + len(idx))
	e.m.uploaded.Add(moved)
	e.job.update(func(in *JobInfo) { in.BytesMoved += moved })
	return e.m.noteObject(e.t, b.id, int64(len(b.buf)), b.ents)
}
