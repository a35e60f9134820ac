package blockstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"

	"github.com/dstore/dstore/internal/par"
	"github.com/klauspost/compress/s2"
	bolt "go.etcd.io/bbolt"
)

// This file serves exporters (package objex): they enumerate a frozen
// layer's blocks as fingerprints, without reading data, and read only the
// blocks the target lacks, in their stored compressed form so nothing is
// compressed twice.

// ExportBlock is one block of a frozen layer, as LayerBlocks resolved it.
type ExportBlock struct {
	Block uint64
	// Hole: the block reads as zeros.
	Hole bool
	// Remote: the block is not local yet; it lives in the remote basis at
	// the bottom of the layer's chain. Read it with LayerView.ReadAt (which
	// fetches it and keeps it).
	Remote bool
	// FP is the block's fingerprint (data blocks that are local).
	FP Fingerprint

	pb    *pblock // pending in the log
	chunk uint64  // destaged chunk
}

// ExportData is the content of a block for an exporter.
type ExportData struct {
	// Plain is the block's plaintext, verified against its fingerprint.
	Plain []byte
	// Codec is how Packed is compressed: CodecS2 or CodecZstd; CodecRaw
	// when the block is stored uncompressed (Packed is then nil).
	Codec  uint8
	Packed []byte
}

// LayerBlocks resolves blocks [first, first+n) of the frozen layer id
// (clipped to its size) as a read of the layer would: the layer's own
// entries, then its basis down the chain. The layer should carry a hold
// for as long as the caller uses the result (ReadExport), so that GC
// cannot free its chunks meanwhile.
func (s *Store) LayerBlocks(id LayerID, first uint64, n int) ([]ExportBlock, error) {
	s.mu.Lock()
	l := s.layers[uint64(id)]
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if l == nil || !l.rec.frozen() {
		s.mu.Unlock()
		return nil, fmt.Errorf("frozen layer %d: %w", id, ErrNotFound)
	}
	nb := blocksFor(l.rec.size, s.bs)
	s.mu.Unlock()
	if first >= nb || n <= 0 {
		return nil, nil
	}
	if uint64(n) > nb-first {
		n = int(nb - first)
	}
	vs := &volState{top: uint64(id)}
	refs, _, err := s.resolve(vs, first, n)
	if err != nil {
		return nil, err
	}
	out := make([]ExportBlock, n)
	var need []int
	for i, r := range refs {
		b := &out[i]
		b.Block = first + uint64(i)
		switch {
		case r.hole:
			b.Hole = true
		case r.remote:
			b.Remote = true
		case r.pb != nil:
			b.pb, b.FP = r.pb, r.pb.fp
		default:
			b.chunk = r.chunk
			need = append(need, i)
		}
	}
	if len(need) > 0 {
		err := s.db.View(func(tx *bolt.Tx) error {
			cb := tx.Bucket(bChunks)
			for _, i := range need {
				v := cb.Get(u64b(out[i].chunk))
				if v == nil {
					return fmt.Errorf("blockstore: chunk %d not in the chunk table: %w", out[i].chunk, ErrCorrupt)
				}
				rec, err := decodeChunkRec(v)
				if err != nil {
					return fmt.Errorf("chunk %d: %w", out[i].chunk, err)
				}
				out[i].FP = rec.fp
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ReadExport reads data blocks that LayerBlocks returned (not holes, not
// remote), verified, with their compressed form where the store keeps
// one. Chunks near each other in a pack are read with one pread, and
// opened on all CPUs.
func (s *Store) ReadExport(blocks []ExportBlock) ([]ExportData, error) {
	out := make([]ExportData, len(blocks))
	var ids []uint64
	var at []int
	var mem []int
	for i := range blocks {
		b := &blocks[i]
		if b.Hole || b.Remote {
			return nil, fmt.Errorf("blockstore: block %d is not local data", b.Block)
		}
		switch {
		case b.pb != nil && b.pb.sealed != nil:
			mem = append(mem, i)
		case b.pb != nil:
			id := b.pb.chunk
			if id == 0 {
				var err error
				if id, err = s.chunkByFP(b.pb.fp); err != nil {
					return nil, fmt.Errorf("block %d: %w", b.Block, err)
				}
			}
			ids, at = append(ids, id), append(at, i)
		default:
			ids, at = append(ids, b.chunk), append(at, i)
		}
	}
	var err error
	// A pack can disappear under the reader when GC compacts it after the
	// lookup; the chunk then lives in another pack (IDs survive).
	for attempt := 0; attempt < 3 && len(ids) > 0; attempt++ {
		err = s.readExportChunks(ids, at, out)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(mem))
	par.Do(len(mem), func(lo, hi int) {
		for j := lo; j < hi; j++ {
			pb := blocks[mem[j]].pb
			out[mem[j]], errs[j] = s.openExport(pb.fp, pb.codec, pb.sealed)
		}
	})
	for j, e := range errs {
		if e != nil {
			return nil, fmt.Errorf("pending block %d: %w", blocks[mem[j]].Block, e)
		}
	}
	return out, nil
}

// readExportChunks reads chunks ids into out[at[i]].
func (s *Store) readExportChunks(ids []uint64, at []int, out []ExportData) error {
	locs := make([]chunkLoc, len(ids))
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bChunks)
		for i, id := range ids {
			v := cb.Get(u64b(id))
			if v == nil {
				return fmt.Errorf("blockstore: chunk %d not in the chunk table: %w", id, ErrCorrupt)
			}
			rec, err := decodeChunkRec(v)
			if err != nil {
				return fmt.Errorf("chunk %d: %w", id, err)
			}
			locs[i] = chunkLoc{at: at[i], id: id, rec: rec}
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(locs, func(i, j int) bool {
		if locs[i].rec.pack != locs[j].rec.pack {
			return locs[i].rec.pack < locs[j].rec.pack
		}
		return locs[i].rec.off < locs[j].rec.off
	})
	for start := 0; start < len(locs); {
		end, lo, hi := nextRun(locs, start)
		run := locs[start:end]
		pack := run[0].rec.pack
		h, err := s.packs.get(pack)
		if err != nil {
			return fmt.Errorf("blockstore: pack %d: %w", pack, err)
		}
		buf := make([]byte, hi-lo)
		_, err = h.f.ReadAt(buf, lo)
		s.packs.release(h)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("blockstore: pack %d is shorter than its chunks (%w): %w", pack, err, ErrCorrupt)
			}
			return fmt.Errorf("blockstore: reading pack %d at %d: %w", pack, lo, err)
		}
		errs := make([]error, len(run))
		par.Do(len(run), func(a, b int) {
			for k := a; k < b; k++ {
				l := &run[k]
				out[l.at], errs[k] = s.openExportRecord(buf[l.rec.off-lo:], l.rec)
			}
		})
		for k, e := range errs {
			if e != nil {
				l := &run[k]
				s.logger.Error("blockstore: corrupt chunk", "chunk", l.id, "pack", pack, "offset", l.rec.off, "err", e)
				s.quarantineChunk(l.id, l.rec.fp)
				return fmt.Errorf("chunk %d (pack %d offset %d): %w", l.id, pack, l.rec.off, e)
			}
		}
		start = end
	}
	return nil
}

// openExportRecord decodes a chunk record against its chunk table entry.
func (s *Store) openExportRecord(b []byte, rec chunkRec) (ExportData, error) {
	fp, codec, sealed, _, err := decodeChunkRecord(b, s.bs)
	if err != nil {
		return ExportData{}, err
	}
	if fp != rec.fp || codec != rec.codec || len(sealed) != rec.n {
		return ExportData{}, fmt.Errorf("chunk record does not match the chunk table: %w", ErrCorrupt)
	}
	return s.openExport(fp, codec, sealed)
}

// openExport opens a sealed chunk and keeps its compressed payload.
func (s *Store) openExport(fp Fingerprint, codec uint8, sealed []byte) (ExportData, error) {
	plain, err := s.seal.open(make([]byte, 0, s.bs), fp, codec, sealed)
	if err != nil {
		return ExportData{}, err
	}
	d := ExportData{Plain: plain, Codec: codec &^ FlagEncrypted}
	if d.Codec == CodecRaw {
		return d, nil
	}
	if codec&FlagEncrypted == 0 {
		d.Packed = slices.Clone(sealed)
		return d, nil
	}
	// open verified the tag; decrypting again only recovers the payload.
	ad := sealAD(&fp, codec)
	d.Packed, err = s.seal.aead.Open(nil, sealed[:sealNonceSize], sealed[sealNonceSize:], ad[:])
	if err != nil {
		return ExportData{}, corruptf("chunk %s: %v", fp, err)
	}
	return d, nil
}

// DecompressBlock decodes a block payload compressed with codec (CodecRaw,
// CodecS2 or CodecZstd, no FlagEncrypted) that must decode to exactly bs
// bytes. Hostile input fails with an error wrapping ErrCorrupt; it never
// makes the decoder allocate more than one block.
func DecompressBlock(codec uint8, payload []byte, bs int) ([]byte, error) {
	if !validBlockSize(bs) {
		return nil, fmt.Errorf("blockstore: block size %d: %w", bs, ErrCorrupt)
	}
	switch codec {
	case CodecRaw:
		if len(payload) != bs {
			return nil, corruptf("raw block of %d bytes, want %d", len(payload), bs)
		}
		return slices.Clone(payload), nil
	case CodecS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, corruptf("s2: %v", err)
		}
		if n != bs {
			return nil, corruptf("s2 header declares %d bytes, want %d", n, bs)
		}
		out, err := s2.Decode(make([]byte, bs), payload)
		if err != nil || len(out) != bs {
			return nil, corruptf("s2: %v", err)
		}
		return out, nil
	case CodecZstd:
		d, err := sharedZstdDecoder(bs)
		if err != nil {
			return nil, err
		}
		out, err := d.DecodeAll(payload, make([]byte, 0, bs))
		if err != nil {
			return nil, corruptf("zstd: %v", err)
		}
		if len(out) != bs {
			return nil, corruptf("zstd decoded %d bytes, want %d", len(out), bs)
		}
		return out, nil
	}
	return nil, corruptf("unknown codec %#02x", codec)
}

// CompressS2 compresses a block with s2 and reports whether that saves at
// least an eighth (the rule the store seals by); otherwise the block should
// be kept raw.
func CompressS2(block []byte) ([]byte, bool) {
	out := s2.Encode(nil, block)
	return out, len(out) <= len(block)-len(block)/8
}
