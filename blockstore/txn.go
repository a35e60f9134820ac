package blockstore

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Extension lets the package above the block store (snapstore) keep its own
// metadata in the NVLOG and in bbolt, committed atomically with layer
// operations: a file's inode and its volume, or a snapshot record and the
// freeze of its members, are one log record.
//
// The extension owns its own bbolt buckets; the block store never reads
// them.
type Extension interface {
	// Load is called by Open before replay, with bbolt holding the state as
	// of the checkpoint.
	Load(tx *bolt.Tx) error
	// Replay is called by Open for each extension payload logged after the
	// checkpoint, in log order. The payload is valid only during the call.
	Replay(payload []byte) error
	// Destage applies a payload to bbolt inside the destage transaction,
	// in log order.
	Destage(tx *bolt.Tx, payload []byte) error
}

// Txn collects layer operations and extension payloads that commit as one
// log record. Operations see the effects of earlier ones in the same Txn.
// A Txn is used only inside the function given to Store.Update.
type Txn struct {
	s      *Store
	effs   []effect
	staged map[uint64]*layerRec // layers changed or made by this Txn
	gone   map[uint64]bool      // layers deleted by this Txn
	tops   map[uint64]uint64    // volumes changed by this Txn (0: deleted)
	held   map[uint64]bool      // volumes whose rw lock Update holds
}

// Update runs fn under the store's metadata lock and commits what it did as
// one durable log record; nothing is logged if fn fails. Volumes in lock are
// held exclusively (no write in flight), which Restore requires. fn must not
// call other Store methods.
func (s *Store) Update(lock []VolumeID, fn func(t *Txn) error) error {
	end, err := s.UpdateAsync(lock, fn)
	if err != nil || end == 0 {
		return err
	}
	err = s.log.waitDurable(end)
	s.kick()
	return err
}

// UpdateAsync is Update without the wait: the record is in the log and its
// effects are visible when it returns, and it is durable once WaitDurable
// of the returned LSN returns (0: nothing was logged). Callers that hold
// their own locks release them before waiting, so concurrent operations
// share one fdatasync.
func (s *Store) UpdateAsync(lock []VolumeID, fn func(t *Txn) error) (LSN, error) {
	lock = slices.Clone(lock)
	slices.Sort(lock)
	lock = slices.Compact(lock)
	var held []*volState
	defer func() {
		for _, v := range held {
			v.rw.Unlock()
		}
	}()
	for _, id := range lock {
		s.mu.Lock()
		v := s.vols[uint64(id)]
		s.mu.Unlock()
		if v == nil {
			return 0, fmt.Errorf("volume %d: %w", id, ErrNotFound)
		}
		v.rw.Lock()
		held = append(held, v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return 0, ErrClosed
	}
	for _, v := range held {
		if s.vols[v.id] != v {
			return 0, fmt.Errorf("volume %d: %w", v.id, ErrNotFound)
		}
	}
	t := &Txn{s: s, staged: map[uint64]*layerRec{}, gone: map[uint64]bool{}, tops: map[uint64]uint64{}, held: map[uint64]bool{}}
	for _, v := range held {
		t.held[v.id] = true
	}
	if err := fn(t); err != nil {
		return 0, err
	}
	if len(t.effs) == 0 {
		return 0, nil
	}
	effs := t.final()
	return s.appendLocked(decoded{typ: recMeta, effs: effs}, appendMetaRec(nil, effs))
}

// WaitDurable returns once everything logged up to end is durable.
func (s *Store) WaitDurable(end LSN) error {
	if end == 0 {
		return nil
	}
	return s.log.waitDurable(end)
}

// final returns the effects with every layer put carrying the layer's last
// state in this Txn, one put per layer at the place of its last put.
func (t *Txn) final() []effect {
	for i := range t.effs {
		if e := &t.effs[i]; e.kind == effPutLayer {
			if r := t.staged[e.id]; r != nil {
				e.rec = *r
			}
		}
	}
	return dedupePuts(t.effs)
}

// layer returns a layer's record as this Txn sees it, staged for change.
func (t *Txn) layer(id uint64) *layerRec {
	if t.gone[id] {
		return nil
	}
	if r := t.staged[id]; r != nil {
		return r
	}
	l := t.s.layers[id]
	if l == nil {
		return nil
	}
	r := l.rec
	t.staged[id] = &r
	return &r
}

func (t *Txn) putLayer(id uint64) {
	t.effs = append(t.effs, effect{kind: effPutLayer, id: id})
}

func (t *Txn) newLayer(rec layerRec) uint64 {
	id := t.s.allocID()
	t.staged[id] = &rec
	t.putLayer(id)
	return id
}

// top returns a volume's top layer as this Txn sees it.
func (t *Txn) top(vid VolumeID) (uint64, error) {
	if top, ok := t.tops[uint64(vid)]; ok {
		if top == 0 {
			return 0, fmt.Errorf("volume %d: %w", vid, ErrNotFound)
		}
		return top, nil
	}
	v := t.s.vols[uint64(vid)]
	if v == nil {
		return 0, fmt.Errorf("volume %d: %w", vid, ErrNotFound)
	}
	return v.top, nil
}

func (t *Txn) setTop(vid, top uint64) {
	t.tops[vid] = top
	t.effs = append(t.effs, effect{kind: effPutVolume, id: vid, other: top})
}

// Top returns a volume's top layer.
func (t *Txn) Top(vid VolumeID) (LayerID, error) {
	top, err := t.top(vid)
	return LayerID(top), err
}

// Size returns a volume's size.
func (t *Txn) Size(vid VolumeID) (int64, error) {
	top, err := t.top(vid)
	if err != nil {
		return 0, err
	}
	return t.layer(top).size, nil
}

// CreateVolume makes a new, empty volume.
func (t *Txn) CreateVolume() VolumeID {
	vid := t.s.allocID()
	lid := t.s.allocID()
	t.staged[lid] = &layerRec{lineage: lid, limit: noLimit}
	t.putLayer(lid)
	t.setTop(vid, lid)
	return VolumeID(vid)
}

// CreateRemoteVolume makes a volume of the given size whose basis is the
// remote layer named name (resolved by Options.Remote). Reads of blocks the
// volume has not written fetch them from the basis and keep them.
func (t *Txn) CreateRemoteVolume(name string, size int64) (VolumeID, LayerID, error) {
	if size < 0 || size > MaxVolumeSize {
		return 0, 0, ErrTooLarge
	}
	if name == "" || len(name) > 1024 {
		return 0, 0, fmt.Errorf("blockstore: remote name length %d", len(name))
	}
	root := t.s.allocID()
	t.staged[root] = &layerRec{lineage: root, size: size, limit: noLimit, children: 1, flags: layerFrozen | layerRemote, remote: name}
	t.putLayer(root)
	vid := t.s.allocID()
	top := t.newLayer(layerRec{parent: root, lineage: root, size: size, limit: noLimit})
	t.setTop(vid, top)
	return VolumeID(vid), LayerID(root), nil
}

// Freeze freezes the top layers of the given volumes at one instant and
// gives each a new empty top: the snapshot primitive, O(1) in data size.
// The frozen layers hold exactly the writes logged before the record. Each
// returned layer carries one hold for the caller, dropped with Release.
func (t *Txn) Freeze(ids ...VolumeID) ([]LayerID, error) {
	seen := make(map[VolumeID]bool, len(ids))
	out := make([]LayerID, 0, len(ids))
	for _, id := range ids {
		if seen[id] {
			return nil, fmt.Errorf("blockstore: volume %d named twice", id)
		}
		seen[id] = true
		top, err := t.top(id)
		if err != nil {
			return nil, err
		}
		if v := t.s.vols[uint64(id)]; v != nil && v.top == top && v.allocAt != 0 {
			if l := t.s.layers[top]; l != nil {
				l.alloc, l.allocKnown = v.alloc, true // an estimate for clones (seedAlloc)
			}
		}
		rec := t.layer(top)
		rec.flags |= layerFrozen
		rec.holds++
		rec.children++
		t.putLayer(top)
		nid := t.newLayer(layerRec{parent: top, lineage: rec.lineage, size: rec.size, limit: noLimit})
		t.setTop(uint64(id), nid)
		out = append(out, LayerID(top))
	}
	return out, nil
}

// Hold adds a hold on a frozen layer.
func (t *Txn) Hold(id LayerID) error {
	rec := t.layer(uint64(id))
	if rec == nil || !rec.frozen() {
		return fmt.Errorf("frozen layer %d: %w", id, ErrNotFound)
	}
	rec.holds++
	t.putLayer(uint64(id))
	return nil
}

// Clone makes a new volume over a frozen layer: O(1), no data copied.
func (t *Txn) Clone(id LayerID) (VolumeID, error) {
	rec := t.layer(uint64(id))
	if rec == nil || !rec.frozen() {
		return 0, fmt.Errorf("frozen layer %d: %w", id, ErrNotFound)
	}
	rec.children++
	t.putLayer(uint64(id))
	vid := t.s.allocID()
	nid := t.newLayer(layerRec{parent: uint64(id), lineage: rec.lineage, size: rec.size, limit: noLimit})
	t.setTop(vid, nid)
	return VolumeID(vid), nil
}

// Restore replaces a volume's top with a new empty layer over a frozen
// layer: the volume reads as that layer did, at once; what was written to
// the old top is dropped. The volume must be in Update's lock list.
func (t *Txn) Restore(vid VolumeID, id LayerID) error {
	if !t.locked(vid) {
		return fmt.Errorf("blockstore: restore of volume %d outside its lock", vid)
	}
	old, err := t.top(vid)
	if err != nil {
		return err
	}
	rec := t.layer(uint64(id))
	if rec == nil || !rec.frozen() {
		return fmt.Errorf("frozen layer %d: %w", id, ErrNotFound)
	}
	rec.children++
	t.putLayer(uint64(id))
	nid := t.newLayer(layerRec{parent: uint64(id), lineage: rec.lineage, size: rec.size, limit: noLimit})
	t.setTop(uint64(vid), nid)
	t.drop(old)
	return nil
}

// locked reports whether no write can be in flight on the volume: Update
// holds its lock, or this Txn made it.
func (t *Txn) locked(vid VolumeID) bool {
	if t.held[uint64(vid)] {
		return true
	}
	_, made := t.tops[uint64(vid)]
	return made && t.s.vols[uint64(vid)] == nil
}

// Release drops one hold on a frozen layer. A layer with no holds and no
// children is deleted, and its ancestors with it when they become
// unreferenced; a layer with one child is merged into it in the background.
func (t *Txn) Release(id LayerID) error {
	rec := t.layer(uint64(id))
	if rec == nil || !rec.frozen() {
		return fmt.Errorf("held layer %d: %w", id, ErrNotFound)
	}
	if rec.holds == 0 {
		return fmt.Errorf("layer %d has no holds: %w", id, ErrNotFound)
	}
	rec.holds--
	if rec.holds == 0 && rec.children == 0 {
		t.drop(uint64(id))
		return nil
	}
	t.putLayer(uint64(id))
	return nil
}

// DeleteVolume removes a volume; its data stays as long as frozen layers
// (snapshots, clones) need it.
func (t *Txn) DeleteVolume(vid VolumeID) error {
	top, err := t.top(vid)
	if err != nil {
		return err
	}
	t.tops[uint64(vid)] = 0
	t.effs = append(t.effs, effect{kind: effDelVolume, id: uint64(vid)})
	t.drop(top)
	return nil
}

// drop deletes layer id and releases its parent, cascading up while
// ancestors become unreferenced.
func (t *Txn) drop(id uint64) {
	for id != 0 {
		rec := t.layer(id)
		if rec == nil {
			return
		}
		t.effs = append(t.effs, effect{kind: effDelLayer, id: id, other: rec.lineage})
		t.gone[id] = true
		delete(t.staged, id)
		p := rec.parent
		pr := t.layer(p)
		if pr == nil {
			return
		}
		if pr.children > 0 {
			pr.children--
		}
		if pr.children == 0 && pr.holds == 0 {
			id = p
			continue
		}
		t.putLayer(p)
		return
	}
}

// Ext adds an extension payload to the record. Replay and destage hand it
// to Options.Extension in log order.
func (t *Txn) Ext(payload []byte) error {
	if t.s.opts.Extension == nil {
		return fmt.Errorf("blockstore: extension payload without an Extension")
	}
	if len(payload) > 1<<20 {
		return fmt.Errorf("blockstore: extension payload of %d bytes", len(payload))
	}
	t.effs = append(t.effs, effect{kind: effExt, ext: append([]byte(nil), payload...)})
	return nil
}

// dedupePuts keeps, for each layer put more than once, only its last put, at
// the position of that last put, so effects stay in a valid order. A put of
// a layer this record deletes is dropped.
func dedupePuts(effs []effect) []effect {
	last := make(map[uint64]int)
	deleted := make(map[uint64]bool)
	for i, e := range effs {
		switch e.kind {
		case effPutLayer:
			last[e.id] = i
		case effDelLayer:
			deleted[e.id] = true
		}
	}
	out := effs[:0:0]
	for i, e := range effs {
		if e.kind == effPutLayer && (last[e.id] != i || deleted[e.id]) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// The Store methods below are one-operation transactions.

// CreateVolume makes a new, empty volume.
func (s *Store) CreateVolume() (*Volume, error) {
	var vid VolumeID
	err := s.Update(nil, func(t *Txn) error {
		vid = t.CreateVolume()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Volume{s: s, id: uint64(vid)}, nil
}

// CreateRemoteVolume is Txn.CreateRemoteVolume on its own.
func (s *Store) CreateRemoteVolume(name string, size int64) (*Volume, LayerID, error) {
	var vid VolumeID
	var root LayerID
	err := s.Update(nil, func(t *Txn) (err error) {
		vid, root, err = t.CreateRemoteVolume(name, size)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return &Volume{s: s, id: uint64(vid)}, root, nil
}

// DeleteVolume is Txn.DeleteVolume on its own.
func (s *Store) DeleteVolume(id VolumeID) error {
	return s.Update([]VolumeID{id}, func(t *Txn) error { return t.DeleteVolume(id) })
}

// Freeze is Txn.Freeze on its own: one atomic step for all the volumes.
func (s *Store) Freeze(ids ...VolumeID) ([]LayerID, error) {
	var out []LayerID
	err := s.Update(nil, func(t *Txn) (err error) {
		out, err = t.Freeze(ids...)
		return err
	})
	return out, err
}

// Hold is Txn.Hold on its own.
func (s *Store) Hold(id LayerID) error {
	return s.Update(nil, func(t *Txn) error { return t.Hold(id) })
}

// Clone is Txn.Clone on its own.
func (s *Store) Clone(id LayerID) (*Volume, error) {
	var vid VolumeID
	err := s.Update(nil, func(t *Txn) (err error) {
		vid, err = t.Clone(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Volume{s: s, id: uint64(vid)}, nil
}

// Restore is Txn.Restore on its own.
func (s *Store) Restore(vid VolumeID, id LayerID) error {
	return s.Update([]VolumeID{vid}, func(t *Txn) error { return t.Restore(vid, id) })
}

// Release is Txn.Release on its own.
func (s *Store) Release(id LayerID) error {
	return s.Update(nil, func(t *Txn) error { return t.Release(id) })
}
