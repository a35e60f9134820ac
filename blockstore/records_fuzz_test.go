package blockstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// payloadFuzzBS is the block size the payload seeds are sealed for; the
// decoder only needs its sealed-length bound.
const payloadFuzzBS = 4 << 10

// FuzzDecodePayload feeds arbitrary bytes to the log payload decoder. It
// must not panic, must reject with ErrCorrupt, and whatever it accepts must
// re-encode with the writers' own encoders to exactly the input: replay
// then only ever applies records the store could have written, and no two
// byte strings mean the same record.
func FuzzDecodePayload(f *testing.F) {
	// The committed corpus (testdata/fuzz/FuzzDecodePayload) holds valid
	// records of every type and broken ones; see payloadSeeds.
	f.Fuzz(func(t *testing.T, p []byte) {
		maxSealed := maxSealedLen(payloadFuzzBS)
		in := bytes.Clone(p) // the decoder must not write to its input
		d, err := decodePayload(in, maxSealed)
		if !bytes.Equal(in, p) {
			t.Fatalf("decodePayload modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again := encodePayload(t, d)
		if !bytes.Equal(again, p) {
			t.Fatalf("accepted payload does not re-encode to its bytes\n in: %x\nout: %x", p, again)
		}
		if d.size < 0 || d.size > MaxVolumeSize {
			t.Fatalf("accepted size %d", d.size)
		}
		for i, op := range d.ops {
			if len(op.sealed) > maxSealed {
				t.Fatalf("op %d: sealed length %d > %d", i, len(op.sealed), maxSealed)
			}
			// Sealed bytes alias the payload; a clipped capacity keeps an
			// append to one from overwriting the next entry.
			if cap(op.sealed) != len(op.sealed) {
				t.Fatalf("op %d: sealed has spare capacity %d", i, cap(op.sealed)-len(op.sealed))
			}
		}
		for i, e := range d.effs {
			if e.kind == effPutLayer && (e.rec.size < 0 || e.rec.size > MaxVolumeSize) {
				t.Fatalf("effect %d: layer size %d", i, e.rec.size)
			}
		}
	})
}

// encodePayload re-encodes a decoded payload as the store writes it.
func encodePayload(t *testing.T, d decoded) []byte {
	switch d.typ {
	case recBlocks:
		b := appendBlocksHeader(nil, d.layer, d.sizeMode, d.size, len(d.ops))
		for i := range d.ops {
			b = appendBlockOp(b, &d.ops[i])
		}
		return b
	case recMeta:
		return appendMetaRec(nil, d.effs)
	}
	t.Fatalf("accepted record type %d", d.typ)
	return nil
}

// payloadSeeds are the committed corpus: every record type and entry kind
// the store writes, and damaged variants of them. Sealed bytes come from a
// real (unencrypted, so deterministic) sealer.
func payloadSeeds(t *testing.T) map[string][]byte {
	s, err := newSealer(sealerConfig{FingerprintKey: [32]byte{3}, BlockSize: payloadFuzzBS})
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("payload seed block, compressible. "), payloadFuzzBS)[:payloadFuzzBS]
	raw := make([]byte, payloadFuzzBS)
	for i := range raw {
		raw[i] = byte(i*7 + i/251)
	}
	data := func(blk uint64, block []byte) blockOp {
		op := blockOp{blk: blk, kind: kindData, fp: s.fingerprint(block)}
		op.codec, op.sealed = s.seal(nil, op.fp, block)
		return op
	}
	blocks := func(layer uint64, mode uint8, size int64, ops ...blockOp) []byte {
		b := appendBlocksHeader(nil, layer, mode, size, len(ops))
		for i := range ops {
			b = appendBlockOp(b, &ops[i])
		}
		return b
	}
	dText, dRaw := data(3, text), data(4, raw)
	write := blocks(7, sizeGrow, 5*payloadFuzzBS+100, dText, dRaw,
		blockOp{blk: 5, kind: kindRef, fp: dText.fp},
		blockOp{blk: 6, kind: kindRef, fp: dRaw.fp, chunk: 42},
		blockOp{blk: 9, kind: kindHole})
	tail := data(2, append(bytes.Clone(text[:100]), make([]byte, payloadFuzzBS-100)...))

	layer := layerRec{lineage: 7, limit: noLimit}
	frozen := layerRec{lineage: 7, size: 1 << 30, limit: noLimit, holds: 1, children: 1, flags: layerFrozen}
	remote := layerRec{lineage: 20, size: 1 << 30, limit: noLimit, children: 1, flags: layerFrozen | layerRemote, remote: "ox://manifest/abc"}
	create := appendMetaRec(nil, []effect{
		{kind: effPutLayer, id: 8, rec: layer},
		{kind: effPutVolume, id: 7, other: 8},
	})
	createRemote := appendMetaRec(nil, []effect{
		{kind: effPutLayer, id: 20, rec: remote},
		{kind: effPutLayer, id: 22, rec: layerRec{parent: 20, lineage: 20, size: 1 << 30, limit: noLimit}},
		{kind: effPutVolume, id: 21, other: 22},
	})
	freeze := appendMetaRec(nil, []effect{
		{kind: effPutLayer, id: 8, rec: frozen},
		{kind: effPutLayer, id: 9, rec: layerRec{parent: 8, lineage: 7, size: 1 << 30, limit: noLimit}},
		{kind: effPutVolume, id: 7, other: 9},
	})
	del := appendMetaRec(nil, []effect{
		{kind: effDelVolume, id: 7},
		{kind: effDelLayer, id: 9, other: 7},
		{kind: effPutLayer, id: 8, rec: layerRec{lineage: 7, size: 1 << 30, limit: noLimit, holds: 1, flags: layerFrozen}},
	})
	merge := appendMetaRec(nil, []effect{
		{kind: effMerge, id: 8, other: 9, lineage: 7, limit: 1000},
		{kind: effPutLayer, id: 9, rec: layerRec{lineage: 7, size: 1 << 30, limit: 1000}},
	})

	with := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	withU32 := func(b []byte, i int, v uint32) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b[i:], v)
		return b
	}
	withU64 := func(b []byte, i int, v uint64) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint64(b[i:], v)
		return b
	}
	const (
		hdr      = 22       // blocks header: type, layer, mode, size, count
		sizeAt   = 10       // blocks header: size
		countAt  = 18       // blocks header: entry count
		kind0At  = hdr + 8  // first entry's kind
		len0At   = hdr + 42 // first entry's sealed length
		effAt    = 5        // meta: first effect
		layer0At = effAt + 9
	)
	return map[string][]byte{
		"blocks-write":        write,
		"blocks-truncate":     blocks(7, sizeSet, 2*payloadFuzzBS+100, tail),
		"blocks-truncate-0":   blocks(7, sizeSet, 0),
		"blocks-remote-hole":  blocks(20, sizeKeep, 0, blockOp{blk: 1 << 40, kind: kindHole}),
		"meta-create":         create,
		"meta-create-remote":  createRemote,
		"meta-freeze":         freeze,
		"meta-delete":         del,
		"meta-merge":          merge,
		"meta-empty":          appendMetaRec(nil, nil),
		"bad-empty":           {},
		"bad-type":            with(create, 0, 2),
		"bad-blocks-short":    write[:hdr-3],
		"bad-sealed-past-end": write[:len(write)-5],
		"bad-sealed-too-long": withU32(write, len0At, uint32(maxSealedLen(payloadFuzzBS)+1)),
		"bad-block-kind":      with(write, kind0At, 4),
		"bad-size-mode":       with(write, 9, sizeSet+1),
		"bad-size-negative":   withU64(write, sizeAt, 1<<63),
		"bad-size-too-big":    withU64(write, sizeAt, uint64(MaxVolumeSize)+1),
		"bad-count":           withU32(write, countAt, 1<<30),
		"bad-count-short":     withU32(write, countAt, 4),
		"bad-trailing":        append(bytes.Clone(write), 0),
		"bad-effect-kind":     with(create, effAt, 6),
		"bad-effect-count":    withU32(create, 1, 3),
		"bad-layer-short":     create[:layer0At+layerRecFixed-1],
		"bad-layer-name":      appendMetaRec(nil, []effect{{kind: effPutLayer, id: 20, rec: remote}})[:layer0At+layerRecFixed+4],
		"bad-layer-size":      withU64(create, layer0At+16, uint64(MaxVolumeSize)+1),
		"bad-layer-pad":       with(create, layer0At+44, 1),
		"bad-merge-short":     merge[:effAt+20],
	}
}

// TestFuzzDecodePayloadSeeds keeps the committed corpus in step with
// payloadSeeds (DSTORE_WRITE_FUZZ_SEEDS=1 rewrites it) and checks that the
// valid seeds decode and the broken ones do not, so the fuzzer starts from
// both sides of every check.
func TestFuzzDecodePayloadSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodePayload")
	seeds := payloadSeeds(t)
	names := slices.Sorted(maps.Keys(seeds))
	write := os.Getenv("DSTORE_WRITE_FUZZ_SEEDS") != ""
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		p := seeds[name]
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(p)))
		path := filepath.Join(dir, "seed-"+name)
		if write {
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		} else if got, err := os.ReadFile(path); err != nil || string(got) != body {
			t.Errorf("%s is missing or stale (%v): run with DSTORE_WRITE_FUZZ_SEEDS=1", path, err)
		}
		_, err := decodePayload(p, maxSealedLen(payloadFuzzBS))
		if bad := name[:4] == "bad-"; bad != (err != nil) {
			t.Errorf("seed %s: decode error %v", name, err)
		}
	}
}

// TestFuzzDecodePayloadLayerPad is what the fuzzer found at once: a layer
// record's pad bytes (u8 at 41, u32 at 44) are not checked, so a record
// with non-zero padding is accepted and re-encodes differently. Elsewhere
// (pack headers, chunk records) reserved bytes must be zero; here they
// must too, or a future format can never give them a meaning. The same
// decoder reads bucket "layers".
func TestFuzzDecodePayloadLayerPad(t *testing.T) {
	rec := layerRec{lineage: 8, limit: noLimit}
	for _, at := range []int{41, 44, 45, 46, 47} {
		b := rec.appendTo(nil)
		b[at] = 1
		if _, _, err := decodeLayerRec(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("layer record with pad byte %d set: err %v; want ErrCorrupt", at, err)
		}
		p := appendMetaRec(nil, []effect{{kind: effPutLayer, id: 8, rec: rec}})
		p[5+9+at] = 1
		if _, err := decodePayload(p, maxSealedLen(payloadFuzzBS)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("payload with layer pad byte %d set: err %v; want ErrCorrupt", at, err)
		}
	}
}
