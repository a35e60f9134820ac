package nfsfs

import (
	"encoding/binary"

	"github.com/dstore/dstore/snapstore"
)

// File handles (wire format, 32 bytes; ESXi accepts at most 56):
//
//	[0:4]   magic "DSFH"
//	[4]     version 1
//	[5]     namespace: 0 = the live tree (export /), 1 = the snapstore
//	        (export /snapstore; the inode is a snapstore.VIno)
//	[6:8]   zero
//	[8:16]  fsid (the datastore's ID), big-endian
//	[16:24] inode number, big-endian
//	[24:28] generation, big-endian
//	[28:32] zero
//
// A handle names an inode forever: inode numbers are never reused, so a
// removed file's handle, like any handle that does not decode, is stale.
const handleLen = 32

var handleMagic = [4]byte{'D', 'S', 'F', 'H'}

// Handle namespaces.
const (
	nsLive = 0
	nsSnap = 1
)

// Handle is a decoded file handle.
type Handle struct {
	FSID uint64
	NS   uint8 // nsLive or nsSnap
	Ino  snapstore.Ino
	Gen  uint32
}

func (h Handle) encode() []byte {
	b := make([]byte, handleLen)
	copy(b, handleMagic[:])
	b[4] = 1
	b[5] = h.NS
	binary.BigEndian.PutUint64(b[8:], h.FSID)
	binary.BigEndian.PutUint64(b[16:], uint64(h.Ino))
	binary.BigEndian.PutUint32(b[24:], h.Gen)
	return b
}

// decodeHandle parses a handle; ok is false for anything malformed.
func decodeHandle(b []byte) (Handle, bool) {
	if len(b) != handleLen || [4]byte(b[:4]) != handleMagic || b[4] != 1 || b[5] > nsSnap ||
		b[6] != 0 || b[7] != 0 || binary.BigEndian.Uint32(b[28:]) != 0 {
		return Handle{}, false
	}
	return Handle{
		FSID: binary.BigEndian.Uint64(b[8:]),
		NS:   b[5],
		Ino:  snapstore.Ino(binary.BigEndian.Uint64(b[16:])),
		Gen:  binary.BigEndian.Uint32(b[24:]),
	}, true
}

// isSnapHandle reports whether args begin with a well-formed snapstore
// handle, without consuming them: such calls go to the snapstore export.
func isSnapHandle(args []byte) bool {
	if len(args) < 4+handleLen || binary.BigEndian.Uint32(args) != handleLen {
		return false
	}
	h, ok := decodeHandle(args[4 : 4+handleLen])
	return ok && h.NS == nsSnap
}
