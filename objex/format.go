package objex

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/dstore/dstore/blockstore"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Wire formats of a target (docs/DESIGN.md, "OX: object exchange").
// Every constant here is wire format.

// ChunkID names a block's content in a target: BLAKE3-256 keyed with the
// target's chunk-ID key, of the block's plaintext. It depends on neither
// the datastore's fingerprint key nor its block layout beyond the block's
// bytes, so any datastore exporting to the target finds the chunks another
// one sent; and without the target key it says nothing about the content.
type ChunkID [32]byte

func (c ChunkID) String() string { return hex.EncodeToString(c[:]) }

// ObjectID names a sealed data object: 16 random bytes.
type ObjectID [16]byte

func (o ObjectID) String() string { return hex.EncodeToString(o[:]) }

func newObjectID() ObjectID {
	var o ObjectID
	rand.Read(o[:])
	return o
}

func parseObjectID(s string) (ObjectID, error) {
	var o ObjectID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return o, fmt.Errorf("objex: object id %q: %w", s, ErrCorrupt)
	}
	copy(o[:], b)
	return o, nil
}

// Object keys.
const (
	dataPrefix     = "ox1/data/"
	indexPrefix    = "ox1/index/"
	manifestPrefix = "ox1/snap/"
)

func dataKey(o ObjectID) string {
	s := o.String()
	return dataPrefix + s[:2] + "/" + s
}

func indexKey(o ObjectID) string { return indexPrefix + o.String() }

func manifestKey(name string) string { return manifestPrefix + name }

// ValidSnapshotName reports whether name can name a manifest: 1..200 bytes
// of letters, digits and "-_.@+=:", not starting with a dot.
func ValidSnapshotName(name string) error {
	if name == "" || len(name) > 200 || name[0] == '.' {
		return fmt.Errorf("objex: snapshot name %q: 1..200 bytes, not starting with a dot", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.@+=:", c)) {
			return fmt.Errorf("objex: snapshot name %q: only letters, digits and -_.@+=:", name)
		}
	}
	return nil
}

// Data object layout:
//
//	header   "DSTOXOB1" | u32 LE version = 1 | u32 LE block size      16 bytes
//	record*  u32 LE record length L (all of it) | u8 codec | [3] zero |
//	         [32] chunk id | [24] nonce | ciphertext || tag[16]
//
// The ciphertext is XChaCha20-Poly1305 under the target's record key of
// the block compressed with codec (0 raw, 1 s2, 2 zstd), with associated
// data recordAD: the object's key, the record's offset, the chunk id, the
// codec and the block size. So a record is verifiable on its own (a ranged
// GET of just that record), and a record moved to another offset or
// object, or an object renamed, does not open.
const (
	objMagic        = "DSTOXOB1"
	objHeaderSize   = 16
	recHeaderSize   = 64
	recOverhead     = recHeaderSize + chacha20poly1305.Overhead
	defaultObjBytes = 32 << 20
)

func objectHeader(bs int) []byte {
	h := make([]byte, 0, objHeaderSize)
	h = append(h, objMagic...)
	h = binary.LittleEndian.AppendUint32(h, 1)
	return binary.LittleEndian.AppendUint32(h, uint32(bs))
}

func checkObjectHeader(h []byte, bs int) error {
	if len(h) < objHeaderSize || string(h[:8]) != objMagic || binary.LittleEndian.Uint32(h[8:]) != 1 ||
		binary.LittleEndian.Uint32(h[12:]) != uint32(bs) {
		return fmt.Errorf("objex: data object header: %w", ErrCorrupt)
	}
	return nil
}

func recordAD(objKey string, off int64, id ChunkID, codec uint8, bs int) []byte {
	ad := make([]byte, 0, 64+len(objKey))
	ad = append(ad, "dstore ox1 record"...)
	ad = binary.LittleEndian.AppendUint16(ad, uint16(len(objKey)))
	ad = append(ad, objKey...)
	ad = binary.LittleEndian.AppendUint64(ad, uint64(off))
	ad = append(ad, id[:]...)
	ad = append(ad, codec)
	return binary.LittleEndian.AppendUint32(ad, uint32(bs))
}

// maxRecordLen bounds a record of a block of bs bytes: raw plus overhead.
func maxRecordLen(bs int) int { return recOverhead + bs }

// appendRecord seals payload (the block compressed with codec) as the
// record at offset off of object objKey.
func (k *keys) appendRecord(dst []byte, objKey string, off int64, id ChunkID, codec uint8, payload []byte, bs int) []byte {
	aead, _ := chacha20poly1305.NewX(k.data[:]) // a 32-byte key never fails
	n := recOverhead + len(payload)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, codec, 0, 0, 0)
	dst = append(dst, id[:]...)
	start := len(dst)
	dst = append(dst, make([]byte, chacha20poly1305.NonceSizeX)...)
	nonce := dst[start:]
	rand.Read(nonce)
	return aead.Seal(dst, nonce, payload, recordAD(objKey, off, id, codec, bs))
}

// openRecord verifies and opens the record rec that the manifest or index
// places at offset off of objKey as chunk id, and returns the block's
// plaintext. Every check fails with ErrCorrupt: rec is hostile input.
func (k *keys) openRecord(rec []byte, objKey string, off int64, id ChunkID, bs int) ([]byte, error) {
	if len(rec) < recOverhead+1 || len(rec) > maxRecordLen(bs) {
		return nil, fmt.Errorf("objex: record of chunk %s in %s at %d: length %d: %w", id, objKey, off, len(rec), ErrCorrupt)
	}
	if int(binary.LittleEndian.Uint32(rec)) != len(rec) || rec[5]|rec[6]|rec[7] != 0 || !bytes.Equal(rec[8:40], id[:]) {
		return nil, fmt.Errorf("objex: record of chunk %s in %s at %d: header does not match: %w", id, objKey, off, ErrCorrupt)
	}
	codec := rec[4]
	if codec > blockstore.CodecZstd {
		return nil, fmt.Errorf("objex: record of chunk %s: codec %d: %w", id, codec, ErrCorrupt)
	}
	aead, _ := chacha20poly1305.NewX(k.data[:])
	payload, err := aead.Open(nil, rec[40:64], rec[64:], recordAD(objKey, off, id, codec, bs))
	if err != nil {
		return nil, fmt.Errorf("objex: record of chunk %s in %s at %d: authentication failed: %w", id, objKey, off, ErrCorrupt)
	}
	plain, err := blockstore.DecompressBlock(codec, payload, bs)
	if err != nil {
		return nil, fmt.Errorf("objex: record of chunk %s: %v: %w", id, err, ErrCorrupt)
	}
	if k.chunkID(plain) != id {
		return nil, fmt.Errorf("objex: record of chunk %s holds other content: %w", id, ErrCorrupt)
	}
	return plain, nil
}

// chunkID is the keyed hash that names a block's content in the target.
func (k *keys) chunkID(plain []byte) ChunkID {
	h, _ := blake3.NewKeyed(k.id[:])
	h.Write(plain)
	var id ChunkID
	h.Sum(id[:0])
	return id
}

// Sealed metadata (index objects and manifests):
//
//	"DSTOXMD1" | u32 LE version = 1 | u32 LE kind | [24] nonce | ciphertext || tag
//
// The plaintext is a zstd frame of the body; the associated data is
// "dstore ox1 meta", the kind and the object's key, so a manifest cannot
// pass for another manifest or for an index object.
const (
	metaMagic     = "DSTOXMD1"
	metaIndex     = 1
	metaManifest  = 2
	metaMaxSealed = 1 << 30 // a manifest of a 64 TiB disk at 4 KiB blocks fits
)

var zstdMeta struct {
	once sync.Once
	enc  *zstd.Encoder
	dec  *zstd.Decoder
	err  error
}

func metaCodec() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdMeta.once.Do(func() {
		zstdMeta.enc, zstdMeta.err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if zstdMeta.err != nil {
			return
		}
		zstdMeta.dec, zstdMeta.err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(2*metaMaxSealed))
	})
	return zstdMeta.enc, zstdMeta.dec, zstdMeta.err
}

func metaAD(kind uint32, key string) []byte {
	ad := []byte("dstore ox1 meta")
	ad = binary.LittleEndian.AppendUint32(ad, kind)
	return append(ad, key...)
}

func (k *keys) sealMeta(kind uint32, key string, body []byte) ([]byte, error) {
	enc, _, err := metaCodec()
	if err != nil {
		return nil, err
	}
	z := enc.EncodeAll(body, nil)
	out := make([]byte, 0, 40+len(z)+16)
	out = append(out, metaMagic...)
	out = binary.LittleEndian.AppendUint32(out, 1)
	out = binary.LittleEndian.AppendUint32(out, kind)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	rand.Read(nonce)
	out = append(out, nonce...)
	aead, _ := chacha20poly1305.NewX(k.meta[:])
	return aead.Seal(out, nonce, z, metaAD(kind, key)), nil
}

func (k *keys) openMeta(kind uint32, key string, b []byte) ([]byte, error) {
	if len(b) < 40+16 || len(b) > metaMaxSealed || string(b[:8]) != metaMagic ||
		binary.LittleEndian.Uint32(b[8:]) != 1 || binary.LittleEndian.Uint32(b[12:]) != kind {
		return nil, fmt.Errorf("objex: %s: not a sealed %s: %w", key, metaKindName(kind), ErrCorrupt)
	}
	aead, _ := chacha20poly1305.NewX(k.meta[:])
	z, err := aead.Open(nil, b[16:40], b[40:], metaAD(kind, key))
	if err != nil {
		return nil, fmt.Errorf("objex: %s: authentication failed (tampered, truncated, renamed, or another key): %w", key, ErrCorrupt)
	}
	_, dec, err := metaCodec()
	if err != nil {
		return nil, err
	}
	body, err := dec.DecodeAll(z, nil)
	if err != nil {
		return nil, fmt.Errorf("objex: %s: %v: %w", key, err, ErrCorrupt)
	}
	return body, nil
}

func metaKindName(kind uint32) string {
	if kind == metaIndex {
		return "index object"
	}
	return "manifest"
}

// chunkLoc is where a chunk's record lives.
type chunkLoc struct {
	Obj ObjectID
	Off int64
	Len int32
}

func encodeLoc(l chunkLoc) []byte {
	b := make([]byte, 0, 28)
	b = append(b, l.Obj[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(l.Off))
	return binary.LittleEndian.AppendUint32(b, uint32(l.Len))
}

func decodeLoc(b []byte) (chunkLoc, bool) {
	var l chunkLoc
	if len(b) < 28 {
		return l, false
	}
	copy(l.Obj[:], b)
	l.Off = int64(binary.LittleEndian.Uint64(b[16:]))
	l.Len = int32(binary.LittleEndian.Uint32(b[24:]))
	return l, true
}

// Index object body: what one data object holds.
//
//	[16] object id | u32 LE block size | u64 LE object size | u32 LE n |
//	n × ([32] chunk id | u64 LE offset | u32 LE record length)
type indexEntry struct {
	ID  ChunkID
	Off int64
	Len int32
}

func encodeIndex(obj ObjectID, bs int, size int64, ents []indexEntry) []byte {
	b := make([]byte, 0, 32+len(ents)*44)
	b = append(b, obj[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(bs))
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ents)))
	for _, e := range ents {
		b = append(b, e.ID[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Off))
		b = binary.LittleEndian.AppendUint32(b, uint32(e.Len))
	}
	return b
}

func decodeIndex(b []byte, want ObjectID) (bs int, size int64, ents []indexEntry, err error) {
	bad := func(why string) error { return fmt.Errorf("objex: index of object %s: %s: %w", want, why, ErrCorrupt) }
	if len(b) < 32 {
		return 0, 0, nil, bad("short")
	}
	if !bytes.Equal(b[:16], want[:]) {
		return 0, 0, nil, bad("names another object")
	}
	bs = int(binary.LittleEndian.Uint32(b[16:]))
	size = int64(binary.LittleEndian.Uint64(b[20:]))
	n := binary.LittleEndian.Uint32(b[28:])
	b = b[32:]
	if uint64(n)*44 != uint64(len(b)) {
		return 0, 0, nil, bad("entry count does not match its length")
	}
	if bs < 1<<10 || bs > 1<<20 || bs&(bs-1) != 0 {
		return 0, 0, nil, bad("block size")
	}
	ents = make([]indexEntry, n)
	prevEnd := int64(objHeaderSize)
	for i := range ents {
		e := &ents[i]
		copy(e.ID[:], b)
		e.Off = int64(binary.LittleEndian.Uint64(b[32:]))
		e.Len = int32(binary.LittleEndian.Uint32(b[40:]))
		b = b[44:]
		if e.Off != prevEnd || e.Len < recOverhead+1 || int(e.Len) > maxRecordLen(bs) || e.Off+int64(e.Len) > size {
			return 0, 0, nil, bad(fmt.Sprintf("entry %d out of place", i))
		}
		prevEnd = e.Off + int64(e.Len)
	}
	if prevEnd != size {
		return 0, 0, nil, bad("records do not cover the object")
	}
	return bs, size, ents, nil
}

// Manifest: a snapshot in a target.
//
//	u32 LE header length h | [h] JSON header (ManifestInfo) |
//	per file, in header order: uvarint n, then n × (uvarint block delta,
//	  uvarint chunk table index): block = previous block + 1 + delta
//	  (the first: delta itself), strictly increasing, below the file's
//	  block count; blocks not listed are holes |
//	uvarint m | m × ([32] chunk id, uvarint object index, uvarint offset,
//	  uvarint record length)
//
// Object indexes refer to ManifestInfo.Objects.
type ManifestInfo struct {
	Format     string         `json:"format"` // "dstore-ox-manifest"
	Version    int            `json:"version"`
	Name       string         `json:"name"`
	Snapshot   SnapshotSource `json:"snapshot"`
	ExportedNs int64          `json:"exported_ns"`
	BlockSize  int            `json:"block_size"`
	Objects    []string       `json:"objects"`
	Files      []FileInfo     `json:"files"`
	// Bytes: logical bytes of data blocks (holes excluded) over all files.
	Bytes int64 `json:"bytes"`
	// Stored: record bytes the chunks of this snapshot occupy in the
	// target (shared chunks counted once).
	Stored int64 `json:"stored"`
}

// SnapshotSource says where an exported snapshot came from.
type SnapshotSource struct {
	ID          string `json:"id"`
	Seq         uint64 `json:"seq"`
	Group       string `json:"group"`
	Label       string `json:"label,omitempty"`
	CreatedNs   int64  `json:"created_ns"`
	DatastoreID uint64 `json:"datastore_id"`
	// ByGroup: exported because the snapshot's group names the target
	// (ExportOptions.ByGroup), so the group's retention applies to it on
	// the target too.
	ByGroup bool `json:"by_group,omitempty"`
}

// FileInfo is one file of an exported snapshot.
type FileInfo struct {
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	Mode       uint32 `json:"mode"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	Atime      int64  `json:"atime_ns"`
	Mtime      int64  `json:"mtime_ns"`
	Ctime      int64  `json:"ctime_ns"`
	DataBlocks int64  `json:"data_blocks"`
}

const manifestFormat = "dstore-ox-manifest"

// manifest is a decoded manifest.
type manifest struct {
	Info   ManifestInfo
	objs   []ObjectID
	files  []fileMap
	chunks []manifestChunk
}

// fileMap is a file's block map: blocks[i] holds chunk chunk[i]; sorted.
type fileMap struct {
	blocks []uint64
	chunk  []uint32
}

type manifestChunk struct {
	ID  ChunkID
	Obj uint32
	Off int64
	Len int32
}

// lookup returns the chunk table index of block b, or false for a hole.
func (f *fileMap) lookup(b uint64) (uint32, bool) {
	i, ok := slices.BinarySearch(f.blocks, b)
	if !ok {
		return 0, false
	}
	return f.chunk[i], true
}

func encodeManifest(m *manifest) ([]byte, error) {
	hdr, err := json.Marshal(m.Info)
	if err != nil {
		return nil, err
	}
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(hdr)))
	b = append(b, hdr...)
	for _, f := range m.files {
		b = binary.AppendUvarint(b, uint64(len(f.blocks)))
		next := uint64(0)
		for i, blk := range f.blocks {
			b = binary.AppendUvarint(b, blk-next)
			b = binary.AppendUvarint(b, uint64(f.chunk[i]))
			next = blk + 1
		}
	}
	b = binary.AppendUvarint(b, uint64(len(m.chunks)))
	for _, c := range m.chunks {
		b = append(b, c.ID[:]...)
		b = binary.AppendUvarint(b, uint64(c.Obj))
		b = binary.AppendUvarint(b, uint64(c.Off))
		b = binary.AppendUvarint(b, uint64(c.Len))
	}
	return b, nil
}

// decodeManifest parses and checks a manifest body (already authenticated,
// but checked as if hostile all the same: no panic, no huge allocation).
func decodeManifest(b []byte, name string) (*manifest, error) {
	bad := func(why string) error { return fmt.Errorf("objex: manifest %s: %s: %w", name, why, ErrCorrupt) }
	if len(b) < 4 {
		return nil, bad("short")
	}
	h := binary.LittleEndian.Uint32(b)
	if uint64(h) > uint64(len(b)-4) {
		return nil, bad("header length")
	}
	m := &manifest{}
	if err := json.Unmarshal(b[4:4+h], &m.Info); err != nil {
		return nil, bad("header: " + err.Error())
	}
	info := &m.Info
	if info.Format != manifestFormat || info.Version != 1 {
		return nil, bad(fmt.Sprintf("format %q version %d", info.Format, info.Version))
	}
	if info.Name != name {
		return nil, bad(fmt.Sprintf("names itself %q", info.Name))
	}
	bs := info.BlockSize
	if bs < 1<<10 || bs > 1<<20 || bs&(bs-1) != 0 {
		return nil, bad("block size")
	}
	for _, o := range info.Objects {
		id, err := parseObjectID(o)
		if err != nil {
			return nil, bad("object list")
		}
		m.objs = append(m.objs, id)
	}
	r := b[4+h:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	maxChunk := uint64(0) // largest chunk index seen, checked after the table
	for fi, f := range info.Files {
		if f.Size < 0 || f.Size > blockstore.MaxVolumeSize {
			return nil, bad(fmt.Sprintf("file %d size", fi))
		}
		nb := uint64((f.Size + int64(bs) - 1) / int64(bs))
		n, ok := uv()
		if !ok || n > nb || n > uint64(len(r))/2 {
			return nil, bad(fmt.Sprintf("file %d block count", fi))
		}
		fm := fileMap{blocks: make([]uint64, n), chunk: make([]uint32, n)}
		next := uint64(0)
		for i := range fm.blocks {
			d, ok1 := uv()
			c, ok2 := uv()
			if !ok1 || !ok2 || d >= nb || next+d >= nb || c > 1<<32-1 {
				return nil, bad(fmt.Sprintf("file %d block map", fi))
			}
			fm.blocks[i] = next + d
			fm.chunk[i] = uint32(c)
			maxChunk = max(maxChunk, c)
			next = fm.blocks[i] + 1
		}
		if int64(n) != f.DataBlocks {
			return nil, bad(fmt.Sprintf("file %d: %d blocks mapped, header says %d", fi, n, f.DataBlocks))
		}
		m.files = append(m.files, fm)
	}
	nc, ok := uv()
	if !ok || nc > uint64(len(r))/35 {
		return nil, bad("chunk table size")
	}
	m.chunks = make([]manifestChunk, nc)
	for i := range m.chunks {
		c := &m.chunks[i]
		if len(r) < 32 {
			return nil, bad("chunk table")
		}
		copy(c.ID[:], r)
		r = r[32:]
		obj, ok1 := uv()
		off, ok2 := uv()
		ln, ok3 := uv()
		if !ok1 || !ok2 || !ok3 || obj >= uint64(len(m.objs)) || off < objHeaderSize || off > 1<<40 ||
			ln < recOverhead+1 || ln > uint64(maxRecordLen(bs)) {
			return nil, bad(fmt.Sprintf("chunk %d", i))
		}
		c.Obj, c.Off, c.Len = uint32(obj), int64(off), int32(ln)
	}
	if len(r) != 0 {
		return nil, bad("trailing bytes")
	}
	for _, f := range m.files {
		if len(f.blocks) > 0 && maxChunk >= nc {
			return nil, bad("block map names a chunk past the table")
		}
	}
	return m, nil
}
