package snapstore

import "github.com/dstore/dstore/blockstore"

// CreateRemote makes a new regular file at newPath whose content is the
// remote basis named basis (an OX manifest, resolved by the block store's
// Options.Remote): an instant clone of data that is not local yet. The
// parent directory must exist, unless mkdirs (then missing directories
// are made, mode 0755). It returns the file's attributes and the remote
// layer at the bottom of its volume (what a thickener fills).
func (ns *Namespace) CreateRemote(newPath, basis string, size int64, na NewAttr, mkdirs bool) (Attr, blockstore.LayerID, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	np, err := CleanPath(newPath)
	if err != nil {
		return Attr{}, 0, err
	}
	d, name, err := ns.parentFor(np, mkdirs)
	if err != nil {
		return Attr{}, 0, err
	}
	var root blockstore.LayerID
	rec := ns.newInode(TypeReg, na)
	n, err := ns.link(d, name, rec, func(t *blockstore.Txn, r *inodeRec) error {
		vid, l, err := t.CreateRemoteVolume(basis, size)
		r.Volume, root = uint64(vid), l
		return err
	})
	if err != nil {
		return Attr{}, 0, err
	}
	return ns.attr(n), root, nil
}
