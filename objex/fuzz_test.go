package objex

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dstore/dstore/blockstore"
)

func fuzzKeys() *keys {
	var id [16]byte
	return deriveKeys(id, bytes.Repeat([]byte{7}, 32))
}

func sampleManifest(t testing.TB) []byte {
	m := &manifest{
		Info: ManifestInfo{Format: manifestFormat, Version: 1, Name: "snap", BlockSize: 4096,
			Objects: []string{ObjectID{1}.String(), ObjectID{2}.String()},
			Files:   []FileInfo{{Path: "a", Size: 10 * 4096, DataBlocks: 3}, {Path: "b", Size: 5000, DataBlocks: 1}}},
		files:  []fileMap{{blocks: []uint64{0, 4, 9}, chunk: []uint32{0, 1, 0}}, {blocks: []uint64{1}, chunk: []uint32{1}}},
		chunks: []manifestChunk{{ID: ChunkID{9}, Obj: 0, Off: 16, Len: 200}, {ID: ChunkID{8}, Obj: 1, Off: 216, Len: 4096 + 80}},
	}
	b, err := encodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestManifestRoundTrip: what encodeManifest writes, decodeManifest reads.
func TestManifestRoundTrip(t *testing.T) {
	b := sampleManifest(t)
	m, err := decodeManifest(b, "snap")
	if err != nil {
		t.Fatal(err)
	}
	if idx, ok := m.files[0].lookup(9); !ok || idx != 0 {
		t.Fatal("lookup of block 9")
	}
	if _, ok := m.files[0].lookup(5); ok {
		t.Fatal("block 5 is a hole")
	}
	if m.chunks[1].Len != 4096+80 || m.objs[1] != (ObjectID{2}) {
		t.Fatalf("%+v", m.chunks)
	}
	if _, err := decodeManifest(b, "other"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a manifest under another name: %v", err)
	}
	// Every truncation is refused.
	for n := 0; n < len(b); n++ {
		if _, err := decodeManifest(b[:n], "snap"); err == nil {
			t.Fatalf("a manifest cut at %d decoded", n)
		}
	}
}

// FuzzDecodeManifest: hostile manifest bodies fail cleanly.
func FuzzDecodeManifest(f *testing.F) {
	f.Add(sampleManifest(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b, "snap")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error without ErrCorrupt: %v", err)
			}
			return
		}
		for _, f := range m.files {
			for _, c := range f.chunk {
				if int(c) >= len(m.chunks) {
					t.Fatal("chunk index past the table")
				}
			}
		}
		for _, c := range m.chunks {
			if int(c.Obj) >= len(m.objs) {
				t.Fatal("object index past the list")
			}
		}
	})
}

// FuzzOpenRecord: a hostile record never opens as anything but the chunk
// that was sealed, and never panics.
func FuzzOpenRecord(f *testing.F) {
	k := fuzzKeys()
	plain := bytes.Repeat([]byte("fuzz"), 1024)
	id := k.chunkID(plain)
	z, _ := blockstore.CompressS2(plain)
	rec := k.appendRecord(nil, "ox1/data/aa/obj", 16, id, blockstore.CodecS2, z, 4096)
	f.Add(rec, uint8(0), 0)
	f.Fuzz(func(t *testing.T, r []byte, flip uint8, at int) {
		if len(r) > 0 && flip != 0 {
			r = bytes.Clone(r)
			r[(at%len(r)+len(r))%len(r)] ^= flip
		}
		got, err := k.openRecord(r, "ox1/data/aa/obj", 16, id, 4096)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error without ErrCorrupt: %v", err)
			}
			return
		}
		if !bytes.Equal(got, plain) {
			t.Fatal("a record opened with other bytes")
		}
	})
}

// TestIndexDecode: index bodies round-trip, and records that do not tile
// the object are refused.
func TestIndexDecode(t *testing.T) {
	o := ObjectID{3}
	ents := []indexEntry{{ID: ChunkID{1}, Off: 16, Len: 100}, {ID: ChunkID{2}, Off: 116, Len: 4096 + 80}}
	b := encodeIndex(o, 4096, 116+4096+80, ents)
	bs, size, got, err := decodeIndex(b, o)
	if err != nil || bs != 4096 || size != 116+4096+80 || len(got) != 2 || got[1] != ents[1] {
		t.Fatalf("%v %v %v %v", bs, size, got, err)
	}
	if _, _, _, err := decodeIndex(b, ObjectID{4}); !errors.Is(err, ErrCorrupt) {
		t.Fatal("index of another object")
	}
	bad := encodeIndex(o, 4096, 116+4096+80, []indexEntry{ents[1], ents[0]})
	if _, _, _, err := decodeIndex(bad, o); !errors.Is(err, ErrCorrupt) {
		t.Fatal("records out of place")
	}
	for n := 0; n < len(b); n++ {
		if _, _, _, err := decodeIndex(b[:n], o); err == nil {
			t.Fatalf("index cut at %d decoded", n)
		}
	}
}
