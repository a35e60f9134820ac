package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// halfDeadStore writes n unique 4 KiB blocks, then makes every other one a
// hole, so every pack is half dead and a GC at threshold 0.9 frees n/2
// chunks and compacts every pack. It returns the volume and its content.
func halfDeadStore(t *testing.T, s *Store, seed uint64, n int) (*Volume, []byte) {
	t.Helper()
	const bs = 4 << 10
	v, err := s.CreateVolume()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, n*bs)
	fillRand(rand.New(rand.NewPCG(seed, seed)), want)
	writeFlush(t, s, v, want, 0)
	zero := make([]byte, bs)
	for i := 0; i < n; i += 2 {
		if _, err := v.WriteAt(zero, int64(i*bs)); err != nil {
			t.Fatal(err)
		}
		copy(want[i*bs:], zero)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	return v, want
}

// TestScrubOnline: a scrub holds nothing that writers, destage or GC wait
// on. While a scrub is paused after reading the places of its first step's
// chunks, new writes are destaged (Flush) and a GC frees half of those
// chunks and moves the rest into new packs, deleting the old ones. The
// scrub then skips the freed chunks, verifies the moved ones where they now
// are, reports nothing corrupt, and checks exactly the chunks that are live
// at its end, each once.
func TestScrubOnline(t *testing.T) {
	const bs = 4 << 10
	_, s := open4K(t, Options{})
	n := 3 * scrubStep // three steps of chunks
	v, want := halfDeadStore(t, s, 5, n)
	wait := pauseAt(t, &scrubStepRead, func() (ScrubReport, error) { return s.Scrub(context.Background()) })

	var gc GCReport
	within(t, "writes, destage and GC beside a scrub", func() error {
		more := make([]byte, 64*bs)
		fillRand(rand.New(rand.NewPCG(6, 6)), more)
		if _, err := v.WriteAt(more, int64(n*bs)); err != nil {
			return err
		}
		want = append(want, more...)
		if err := s.Flush(); err != nil {
			return err
		}
		var err error
		gc, err = s.GC(context.Background(), GCOptions{Threshold: 0.9})
		return err
	})
	if gc.ChunksFreed != int64(n/2) || gc.PacksCompacted == 0 {
		t.Fatalf("GC freed %d chunks (want %d) and compacted %d packs: the test needs both", gc.ChunksFreed, n/2, gc.PacksCompacted)
	}
	rep, err := wait()
	if err != nil || len(rep.Corrupt) > 0 {
		t.Fatalf("scrub beside GC: %v, corrupt %+v", err, rep.Corrupt)
	}
	live := int64(chunkCount(t, s))
	if live != int64(n/2+64) {
		t.Fatalf("%d chunks live after GC, want %d", live, n/2+64)
	}
	if rep.ChunksChecked != live {
		t.Fatalf("scrub checked %d chunks, want the %d live at its end", rep.ChunksChecked, live)
	}
	// A scrub with nothing beside it agrees, and the data reads back.
	ref, err := s.Scrub(context.Background())
	if err != nil || len(ref.Corrupt) > 0 || ref.ChunksChecked != live || ref.BytesChecked != rep.BytesChecked {
		t.Fatalf("second scrub: %v, checked %d chunks %d bytes (online: %d, %d), corrupt %+v",
			err, ref.ChunksChecked, ref.BytesChecked, rep.ChunksChecked, rep.BytesChecked, ref.Corrupt)
	}
	got := make([]byte, len(want))
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("volume reads back wrong after scrub beside GC")
	}
}

// TestScrubFindsCorruptionAfterMove: a chunk whose bytes are wrong is
// reported where the chunk table places it even when the scrub looked it up
// at an older place (GC moved it meanwhile).
func TestScrubFindsCorruptionAfterMove(t *testing.T) {
	dir, s := open4K(t, Options{})
	const n = 256
	halfDeadStore(t, s, 7, n)
	wait := pauseAt(t, &scrubStepRead, func() (ScrubReport, error) { return s.Scrub(context.Background()) })
	before := chunkRecs(t, s)
	gc, err := s.GC(context.Background(), GCOptions{Threshold: 0.9})
	if err != nil || gc.PacksCompacted == 0 {
		t.Fatalf("GC: %v, compacted %d packs", err, gc.PacksCompacted)
	}
	// The first chunk left: one the scrub's step placed in a deleted pack.
	var id uint64
	var after chunkRec
	for k, r := range chunkRecs(t, s) {
		if id == 0 || k < id {
			id, after = k, r
		}
	}
	if after.pack == before[id].pack {
		t.Fatalf("chunk %d stayed in pack %d: the test needs it moved", id, after.pack)
	}
	flipByte(t, packPath(dir, after.pack), after.off+chunkHeaderSize+int64(after.n)/2)
	rep, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Corrupt) != 1 || rep.Corrupt[0].Chunk != id || rep.Corrupt[0].Pack != after.pack || rep.Corrupt[0].Offset != after.off {
		t.Fatalf("scrub reported %+v, want chunk %d at pack %d offset %d", rep.Corrupt, id, after.pack, after.off)
	}
	if rep.ChunksChecked != int64(n/2-1) {
		t.Fatalf("scrub checked %d chunks, want %d", rep.ChunksChecked, n/2-1)
	}
}

// chunkRecs returns the chunk table.
func chunkRecs(t *testing.T, s *Store) map[uint64]chunkRec {
	t.Helper()
	out := make(map[uint64]chunkRec)
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bChunks).ForEach(func(k, v []byte) error {
			rec, err := decodeChunkRec(v)
			out[binary.BigEndian.Uint64(k)] = rec
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
