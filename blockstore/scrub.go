package blockstore

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// ScrubReport is the result of verifying every chunk.
type ScrubReport struct {
	ChunksChecked int64          `json:"chunks_checked"`
	BytesChecked  int64          `json:"bytes_checked"`
	Corrupt       []CorruptChunk `json:"corrupt"`
}

// CorruptChunk names a chunk that failed verification.
type CorruptChunk struct {
	Chunk  uint64 `json:"chunk"`
	Pack   uint64 `json:"pack"`
	Offset int64  `json:"offset"`
	Err    string `json:"error"`
}

// scrubStep is how many chunk table entries one scrub step reads and
// verifies. Memory is bounded by it (and a run's 8 MiB), not by the
// datastore.
const scrubStep = 4096

// scrubStepRead, when set (tests), is called after each step has read its
// chunks' places and before it reads their packs.
var scrubStepRead func()

// Scrub reads and verifies every chunk in the chunk table against its
// fingerprint (and AEAD tag). Corrupt chunks are reported and quarantined,
// not fatal.
//
// Scrub takes no lock that writers or destage wait on: it walks the chunk
// table in steps of scrubStep entries, each in a short read transaction,
// and reads their packs in runs as the read path does. GC may meanwhile
// free a chunk (it is then skipped) or move it into a new pack and delete
// the old one; a chunk that fails to read or verify is looked up again, and
// is reported only if the chunk table still places it where it failed.
// Chunks made after a step passed their IDs are not checked by this run.
func (s *Store) Scrub(ctx context.Context) (ScrubReport, error) {
	var rep ScrubReport
	from := uint64(0)
	for {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if s.closed.Load() {
			return rep, ErrClosed
		}
		locs, next, err := s.scrubLocs(from, &rep)
		if err != nil {
			return rep, err
		}
		if scrubStepRead != nil {
			scrubStepRead()
		}
		if err := s.scrubRuns(locs, &rep); err != nil {
			return rep, err
		}
		if next == 0 {
			return rep, nil
		}
		from = next
	}
}

// scrubLocs returns up to scrubStep chunks with IDs from `from` on, sorted
// by place, and the ID to go on from (0 at the end of the table). Entries
// that do not decode are reported corrupt.
func (s *Store) scrubLocs(from uint64, rep *ScrubReport) ([]chunkLoc, uint64, error) {
	locs := make([]chunkLoc, 0, scrubStep)
	next := uint64(0)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bChunks).Cursor()
		n := 0
		for k, v := c.Seek(u64b(from)); k != nil; k, v = c.Next() {
			id := binary.BigEndian.Uint64(k)
			if n == scrubStep {
				next = id
				return nil
			}
			n++
			rec, err := decodeChunkRec(v)
			if err != nil {
				rep.Corrupt = append(rep.Corrupt, CorruptChunk{Chunk: id, Err: err.Error()})
				continue
			}
			if rec.n > maxSealedLen(s.bs) {
				rep.Corrupt = append(rep.Corrupt, CorruptChunk{Chunk: id, Pack: rec.pack, Offset: rec.off,
					Err: fmt.Sprintf("sealed length %d: %v", rec.n, ErrCorrupt)})
				continue
			}
			locs = append(locs, chunkLoc{id: id, rec: rec})
		}
		return nil
	})
	slices.SortFunc(locs, func(a, b chunkLoc) int {
		return cmp.Or(cmp.Compare(a.rec.pack, b.rec.pack), cmp.Compare(a.rec.off, b.rec.off))
	})
	return locs, next, err
}

// scrubRuns verifies locs (sorted by place), reading chunks that lie close
// together in a pack with one pread.
func (s *Store) scrubRuns(locs []chunkLoc, rep *ScrubReport) error {
	var buf []byte
	for start := 0; start < len(locs); {
		end, lo, hi := nextRun(locs, start)
		run := locs[start:end]
		start = end
		var errs []error
		buf, errs = s.scrubRead(buf, run, lo, hi)
		for k, l := range run {
			if errs[k] == nil {
				rep.ChunksChecked++
				rep.BytesChecked += int64(chunkHeaderSize + l.rec.n)
				continue
			}
			if err := s.scrubRecheck(l, errs[k], rep); err != nil {
				return err
			}
		}
	}
	return nil
}

// scrubRead reads the bytes [lo, hi) of the run's pack into buf (grown as
// needed) and verifies each chunk of the run; errs[k] is chunk k's failure.
// A pack that cannot be opened or read fails every chunk of the run.
func (s *Store) scrubRead(buf []byte, run []chunkLoc, lo, hi int64) ([]byte, []error) {
	pack := run[0].rec.pack
	errs := make([]error, len(run))
	fail := func(err error) ([]byte, []error) {
		for k := range errs {
			errs[k] = err
		}
		return buf, errs
	}
	h, err := s.packs.get(pack)
	if err != nil {
		return fail(fmt.Errorf("pack %d: %w", pack, err))
	}
	buf = slices.Grow(buf[:0], int(hi-lo))[:hi-lo]
	n, err := h.f.ReadAt(buf, lo)
	s.packs.release(h)
	if err != nil && !errors.Is(err, io.EOF) {
		return fail(fmt.Errorf("reading pack %d at %d: %w", pack, lo, err))
	}
	_, errs = s.openRun(pack, buf[:n], lo, run)
	return buf, errs
}

// scrubRecheck decides about a chunk that failed with err. If the chunk
// table no longer has it, GC freed it meanwhile: it is skipped. If the
// chunk table has moved it (GC compaction, a repair's rewrite), it is
// verified at its new place. Only a chunk that fails where the chunk table
// still places it is reported (and quarantined if its bytes are wrong).
func (s *Store) scrubRecheck(l chunkLoc, err error, rep *ScrubReport) error {
	for range 3 {
		var cur []byte
		verr := s.db.View(func(tx *bolt.Tx) error {
			cur = append(cur, tx.Bucket(bChunks).Get(u64b(l.id))...)
			return nil
		})
		if verr != nil {
			return verr
		}
		if cur == nil {
			return nil // freed
		}
		rec, derr := decodeChunkRec(cur)
		if derr != nil {
			rep.Corrupt = append(rep.Corrupt, CorruptChunk{Chunk: l.id, Err: derr.Error()})
			return nil
		}
		if rec == l.rec {
			// Unreadable (a missing pack, an I/O error) is reported as
			// well as undecodable or unverified; only the latter is
			// quarantined, as on the read path.
			rep.Corrupt = append(rep.Corrupt, CorruptChunk{Chunk: l.id, Pack: l.rec.pack, Offset: l.rec.off, Err: err.Error()})
			if errors.Is(err, ErrCorrupt) {
				s.quarantineChunk(l.id, l.rec.fp)
			}
			return nil
		}
		l.rec = rec
		one := []chunkLoc{l}
		_, errs := s.scrubRead(nil, one, rec.off, rec.off+int64(chunkHeaderSize+rec.n))
		if errs[0] == nil {
			rep.ChunksChecked++
			rep.BytesChecked += int64(chunkHeaderSize + rec.n)
			return nil
		}
		err = errs[0]
	}
	s.logger.Warn("blockstore: scrub: chunk kept moving while it was checked; skipped", "chunk", l.id)
	return nil
}
