package blockstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"
	bolt "go.etcd.io/bbolt"

	"github.com/dstore/dstore/internal/coarse"
)

// MaxVolumeSize is the largest size a volume can have: 64 TiB.
const MaxVolumeSize int64 = 64 << 40

// MemoryLimit is the Go memory limit a process serving a datastore should
// run with (runtime/debug.SetMemoryLimit) unless GOMEMLIMIT says otherwise:
// with it the garbage collector keeps the heap near what the store holds
// (the log bound, the cache, a destage batch) instead of letting it double.
const MemoryLimit = 256 << 20

// FormatVersion is the on-disk format version recorded in bucket "meta".
// Version 2 added bucket "front" (the journal of deferred map and index
// entries); a version 1 datastore is upgraded when it is opened, and a
// build that reads only version 1 refuses a version 2 one instead of
// ignoring its journal.
const FormatVersion = 2

// DefaultBlockSize is the block size of a datastore made without
// --block-size: 4 KiB, the block guest file systems write, so their writes
// need no read-modify-write, and the size that deduplicates similar vDisks
// best. docs/DESIGN.md ("Measurements: block size") records the figures.
const DefaultBlockSize = 4 << 10

type (
	// VolumeID names a volume; never reused.
	VolumeID uint64
	// LayerID names a layer; never reused, and a child's ID is greater than
	// its ancestors' (I6).
	LayerID uint64
)

// InitOptions are fixed for the life of a datastore.
type InitOptions struct {
	BlockSize   int    // bytes, a power of two from 4 KiB to 64 KiB; 0 = DefaultBlockSize
	Encrypt     bool   // make a datastore key and seal every chunk with it
	Compression string // "" = the default codec
}

// RemoteBasis supplies the blocks of a layer that lives elsewhere (an OX
// manifest). The store caches what it returns as chunks of the remote layer.
// A basis may also implement RemoteIndex (so blocks the store already holds
// are never fetched) and RemoteBatch (several blocks per request); see
// remote.go.
type RemoteBasis interface {
	// ReadBlock fills p (len = block size) with block n; hole reports an
	// all-zero block (p is then undefined).
	ReadBlock(ctx context.Context, n int64, p []byte) (hole bool, err error)
}

// Options tune an open store; the zero value is sensible.
type Options struct {
	Logger *slog.Logger
	// MaxLogBytes bounds what is logged but not destaged (and so held in
	// memory); writers wait for destage beyond it. 0 = 64 MiB.
	MaxLogBytes int64
	CacheBytes  int64 // decoded chunk cache. 0 = 32 MiB
	// DestageDelay is how long destage lets a partial batch gather. 0 =
	// 250ms: a larger batch rewrites fewer bbolt pages per block (random
	// writes share index and map leaves) and pays its syncs less often.
	DestageDelay time.Duration
	// SegmentSize of NVLOG files. 0 = 64 MiB.
	SegmentSize int64
	// PackSize is the size at which a pack is closed. 0 = 32 MiB.
	PackSize int64
	// ReserveBytes is free space kept back from data writes so that
	// destage, deletes, truncates and GC can always make progress on a full
	// file system. 0 = 2*SegmentSize + 32 MiB.
	ReserveBytes int64
	// Remote resolves the name recorded in a remote layer to its basis.
	Remote func(name string) (RemoteBasis, error)
	// Extension keeps the metadata of the package above in the NVLOG and
	// bbolt (see Extension).
	Extension Extension
	// FrontBlocks bounds the blocks whose map or index entries destage
	// defers (the front, see docs/DESIGN.md), each held in memory as a
	// deferred pblock: the entries are merged into the map and the index
	// in sorted transactions once this many blocks wait. 0 = 262144 (1 GiB
	// of 4 KiB blocks); negative = no front, every destage writes its
	// entries into the map and the index directly.
	FrontBlocks int
	// FilterBytes is the size of the Bloom filter that lets a write of new
	// data skip the index lookup (fpfilter.go). 0 = 8 MiB (about 2% false
	// positives up to 6.7 million chunks); negative = no filter.
	FilterBytes int

	noSpaceCheck bool // tests: let writes run into the real ENOSPC paths
}

const (
	defaultMaxLog      = 64 << 20
	defaultCache       = 32 << 20
	defaultFrontBlocks = 256 << 10
	defaultPackSize    = 32 << 20
	destageBatchBytes  = 16 << 20
	destageBatchOps    = 64 << 10
	dbFile             = "meta.db"
	keyFile            = "datastore.key"
)

// bbolt buckets and keys (wire format; docs/DESIGN.md, "Metadata").
var (
	bMeta    = []byte("meta")
	bVolumes = []byte("volumes")
	bLayers  = []byte("layers")
	bMap     = []byte("map")
	bChunks  = []byte("chunks")
	bIndex   = []byte("index")
	bPacks   = []byte("packs")
	bFront   = []byte("front")
	// bQuarantine (made at the first quarantine): chunk ID -> fingerprint
	// of chunks found corrupt, kept out of deduplication (rule 21).
	bQuarantine = []byte("quarantine")

	kFormat      = []byte("format")
	kBlockSize   = []byte("block_size")
	kFPKey       = []byte("fp_key")
	kCompression = []byte("compression")
	kEncrypted   = []byte("encrypted")
	kCheckpoint  = []byte("checkpoint")
	kNextID      = []byte("next_id")
	kNextChunk   = []byte("next_chunk")
	kNextPack    = []byte("next_pack")
	kOpenPack    = []byte("open_pack")
	kID          = []byte("datastore_id")
)

// Store is an open datastore's block store. All methods are safe for
// concurrent use.
//
// Lock order: vol.rw -> stripes -> gcMu -> mu. destageMu is never taken
// while holding mu.
type Store struct {
	dir    string
	opts   Options
	logger *slog.Logger
	// refusedLogAt: when a refused write was last logged (unix ns).
	refusedLogAt atomic.Int64
	// For the space check (space.go), read without mu (every data write
	// makes that check). unpacked: queueBytes less what the destage batch
	// in progress has already written to pack files, which the file
	// system counts as used while it is still in queueBytes; set back to
	// queueBytes, under mu and destageMu, as the batch leaves the queue or
	// fails. admitted: bytes of data writes let in by the space check and
	// not yet in queueBytes. spaceGen moves when packs grew or the queue
	// shrank, so the cached free space is read again.
	unpacked atomic.Int64
	admitted atomic.Int64
	spaceGen atomic.Uint64
	db       *bolt.DB
	log      *nvlog
	seal     *sealer
	bs       int
	id       uint64 // datastore identity (meta "datastore_id")
	cache    *chunkCache
	packs    *packFiles

	mu         sync.Mutex // guards everything below up to destageMu
	layers     map[uint64]*layer
	vols       map[uint64]*volState
	queue      []*qrec                 // log records not yet destaged, in LSN order
	queueBytes atomic.Int64            // written under mu, read without it by writers' fast check
	queuedOps  int                     // block ops in queue
	fpPending  map[Fingerprint]*pblock // pending (and deferred) data blocks by fingerprint
	nextID     uint64
	metaGen    uint64 // bumped by every layer graph change; invalidates chains
	mergeable  map[uint64]struct{}
	truncated  map[uint64]*layer // layers with shrinks not destaged yet
	room       *sync.Cond        // signalled when destage frees log space
	destageErr error
	// destageGen counts destage commits, the only writes that add index
	// entries. A write whose index misses were looked up with no commit
	// between the lookup and its append marks those blocks absent.
	destageGen atomic.Uint64 // written under mu, read without it
	closed     atomic.Bool   // set under mu, read without it by Volume.state
	replaying  bool          // Open is replaying the log
	replayErr  error         // the first extension replay error

	destageMu     sync.Mutex // serializes destage and GC: the bbolt and pack writers
	pack          *packWriter
	packCommitted int64
	nextChunk     uint64
	nextPack      uint64
	// deferred counts the entries in the front (front.go): destaged,
	// journaled in bucket "front", not yet in the map or the index (the
	// journal is empty exactly when it is 0); deferredMap those of them
	// for the map.
	deferred    int
	deferredMap int
	// deferredBlocks counts the blocks of those entries (a block defers a
	// map entry, an index entry or both): the memory the front holds.
	deferredBlocks int

	gcMu sync.RWMutex // write path dedupe hits vs GC sweep
	// gcRunMu: one GC at a time (its mark runs outside destageMu).
	gcRunMu sync.Mutex
	// chunkMoves counts repairs that moved chunks (under destageMu): a
	// GC's lock-free count of the chunk table is stale if it changed.
	chunkMoves atomic.Uint64
	gcMark     *bitset // non-nil while a GC marks (I7)

	quarMu      sync.Mutex             // guards quarantine and repairing
	quarantine  map[uint64]Fingerprint // corrupt chunks, kept out of dedupe (rule 21)
	quarNew     []uint64               // quarantined, not yet in bucket quarantine
	quarFailing bool                   // the last persistQuarantine failed
	repairing   map[uint64]bool        // corrupt chunks queued or being rewritten (repair.go)
	repairQ     []repairItem           // good copies to write back
	repairBusy  bool                   // repairLoop is running

	repairer atomic.Pointer[Repairer]
	repStats struct{ served, rewritten, failed atomic.Int64 }

	stripes [4096]sync.Mutex

	space spaceGauge
	// touches counts random bbolt page visits since the mapping was last
	// dropped (see touchedTx).
	touches atomic.Int64
	agc     autoGCState // background GC's triggers (autogc.go)
	fpc     *fpCache    // recently found index entries (fpcache.go)
	// fpf: what the index certainly lacks (fpfilter.go); nil when off.
	// fpfNext: the filter a rebuild after GC fills, which destage adds
	// to as well until it replaces fpf (both swapped under destageMu).
	fpf, fpfNext atomic.Pointer[fpFilter]

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup // the destage loop
	bg   sync.WaitGroup // read-aheads
}

// layer is the in-memory state of a layer: its record as of the log head,
// plus the blocks written to it that are not destaged yet.
type layer struct {
	id      uint64
	rec     layerRec
	pending map[uint64]*pblock
	// selfLimit hides this layer's own bbolt entries at or above it while a
	// shrinking truncate that will delete them is not destaged yet: the
	// minimum block limit of truncs, the shrinks still in the log. Every
	// bbolt entry predates every such shrink, so no entry written after one
	// is hidden by it.
	selfLimit uint64
	truncs    []trunc
	// aliases are layers merged into this one whose entries may still sit
	// under their own IDs in bbolt until the merge is destaged.
	aliases []alias
	// alloc is what Allocated last knew of the volume this layer was the
	// top of when it was frozen (allocKnown): a clone or restore over it
	// starts from that estimate instead of counting before it answers.
	alloc      int64
	allocKnown bool
}

type alias struct{ id, vis uint64 }

// trunc is a shrinking truncate not destaged yet.
type trunc struct {
	lsn LSN
	nb  uint64
}

// pblock is a block write that is in the log but not yet destaged, or
// destaged with its map entry deferred (in the front). A pblock is never
// changed once made: readers use it after dropping s.mu.
type pblock struct {
	lsn    LSN
	kind   uint8
	fp     Fingerprint
	codec  uint8
	sealed []byte // kindData, or kindRef to a pending data block
	chunk  uint64 // kindRef: destaged chunk it refers to, when known; deferred: its chunk
	// deferred: destaged, its map (and, for a new chunk, index) entry in
	// the front; chunk is set unless kind is kindHole, sealed is nil.
	deferred bool
}

type qrec struct {
	end   LSN
	d     decoded
	bytes int64
}

type volState struct {
	id  uint64
	top uint64
	// gone: the volume was deleted (set under Store.mu, read without it).
	gone atomic.Bool
	// rw: writes hold it shared; truncate and restore exclusively, so a
	// read-modify-write never spans them.
	rw sync.RWMutex
	// chain cache, valid while gen == Store.metaGen (guarded by Store.mu)
	chain    *chain
	chainGen uint64
	seqEnd   int64 // where the last read ended, for read-ahead (guarded by Store.mu)
	seqRun   int
	// readingAhead: a read-ahead of this volume is running (guarded by Store.mu)
	readingAhead bool
	// alloc caches Allocated, counted at allocAt (guarded by Store.mu)
	alloc     int64
	allocAt   int64 // unix ns (coarse clock); 0: not counted
	allocBusy bool  // a background recount is running
	// guess: whether this volume's next new block is worth compressing
	guess compressGuess
}

// Volume is a handle on a volume. Handles are cheap; several may name the
// same volume.
type Volume struct {
	s  *Store
	id uint64
	// vs caches the volume's state once found: a volState is made once per
	// volume (IDs are never reused) and only marked gone.
	vs atomic.Pointer[volState]
}

// IsInitialized reports whether dir holds a datastore.
func IsInitialized(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, dbFile))
	return err == nil
}

// Init makes a new datastore in dir (created if missing, must not already
// hold one).
func Init(dir string, o InitOptions) error {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < 4<<10 || o.BlockSize > 64<<10 || o.BlockSize&(o.BlockSize-1) != 0 {
		return fmt.Errorf("blockstore: block size %d: must be a power of two from 4 KiB to 64 KiB", o.BlockSize)
	}
	if IsInitialized(dir) {
		return fmt.Errorf("blockstore: %s already holds a datastore", dir)
	}
	var fpKey [32]byte
	if _, err := rand.Read(fpKey[:]); err != nil {
		return err
	}
	// The datastore's identity: the NFS fsid, stable for its life, never 0.
	var id [8]byte
	for binary.BigEndian.Uint64(id[:]) == 0 {
		if _, err := rand.Read(id[:]); err != nil {
			return err
		}
	}
	// Validate the codec name before anything is written.
	if _, err := newSealer(sealerConfig{FingerprintKey: fpKey, Compression: o.Compression, BlockSize: o.BlockSize}); err != nil {
		return err
	}
	for _, d := range []string{dir, filepath.Join(dir, "packs"), filepath.Join(dir, "nvlog")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if o.Encrypt {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		// A key file left by an init that stopped before meta.db existed
		// protects nothing yet: replace it.
		if err := writeFileSync(filepath.Join(dir, keyFile), key, 0o600); err != nil {
			return err
		}
	}
	// An encrypted datastore keeps no fingerprint key in meta.db: it is
	// derived from the datastore key, so meta.db alone cannot be used to
	// test guesses of block contents.
	storedFPKey := fpKey[:]
	if o.Encrypt {
		storedFPKey = []byte{}
	}
	tmp := filepath.Join(dir, dbFile+".init")
	os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bVolumes, bLayers, bMap, bChunks, bIndex, bPacks, bFront} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		enc := byte(0)
		if o.Encrypt {
			enc = 1
		}
		for _, kv := range []struct {
			k, v []byte
		}{
			{kFormat, u64b(FormatVersion)},
			{kBlockSize, u64b(uint64(o.BlockSize))},
			{kFPKey, storedFPKey},
			{kCompression, []byte(o.Compression)},
			{kEncrypted, []byte{enc}},
			{kCheckpoint, u64b(0)},
			{kNextID, u64b(1)},
			{kNextChunk, u64b(1)},
			{kNextPack, u64b(1)},
			{kOpenPack, u64b(0)},
			{kID, id[:]},
		} {
			if err := m.Put(kv.k, kv.v); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// The rename makes init atomic: a half-made datastore is never mistaken
	// for one.
	if err := os.Rename(tmp, filepath.Join(dir, dbFile)); err != nil {
		return err
	}
	return syncDir(dir)
}

// initialMmap is the address space bbolt maps up front (64-bit only; the
// file does not grow with it). Each time bbolt outgrows its mapping it
// remaps, and must first copy every key and value of the nodes the open
// transaction changed out of the old mapping: in an ingest, whose destage
// transactions change thousands of map nodes, that was 40% of all
// allocations (a profile of BenchmarkIngest/duplicate).
const initialMmap = (1 << 30) * (strconv.IntSize / 64)

// Open opens the datastore in dir, replaying the NVLOG.
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxLogBytes <= 0 {
		o.MaxLogBytes = defaultMaxLog
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = defaultCache
	}
	if o.DestageDelay <= 0 {
		o.DestageDelay = 250 * time.Millisecond
	}
	if o.PackSize <= 0 {
		o.PackSize = defaultPackSize
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 64 << 20
	}
	if o.ReserveBytes <= 0 {
		o.ReserveBytes = 2*o.SegmentSize + 32<<20
	}
	if o.FrontBlocks == 0 {
		o.FrontBlocks = defaultFrontBlocks
	}
	if o.FilterBytes == 0 {
		o.FilterBytes = defaultFilterBytes
	}
	if !IsInitialized(dir) {
		return nil, fmt.Errorf("blockstore: %s: no datastore (run init): %w", dir, fs.ErrNotExist)
	}
	spareProc(o.Logger)
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType, InitialMmapSize: initialMmap})
	if err != nil {
		return nil, fmt.Errorf("blockstore: open metadata: %w", err)
	}
	s := &Store{
		dir: dir, opts: o, logger: o.Logger, db: db, fpc: new(fpCache),
		layers:    make(map[uint64]*layer),
		vols:      make(map[uint64]*volState),
		fpPending: make(map[Fingerprint]*pblock),
		mergeable: make(map[uint64]struct{}),
		truncated: make(map[uint64]*layer),
		cache:     newChunkCache(o.CacheBytes),
		packs:     newPackFiles(dir),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	s.room = sync.NewCond(&s.mu)
	// The front journal left by a crash goes into the map and the index
	// before anything reads them.
	if err := s.openFront(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.load(); err != nil {
		db.Close()
		s.packs.closeAll()
		return nil, err
	}
	if o.FilterBytes > 0 {
		s.fpf.Store(newFPFilter(o.FilterBytes))
	}
	s.wg.Add(2)
	go s.destageLoop()
	go s.dropLoop()
	if f := s.fpf.Load(); f != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := f.build(s.db, s.stop); err != nil && !errors.Is(err, errFilterStopped) {
				s.logger.Warn("blockstore: building the index filter; every lookup goes to the index", "err", err)
			}
		}()
	}
	return s, nil
}

func (s *Store) load() error {
	var (
		fpKey       [32]byte
		storedFP    []byte
		compression string
		encrypted   bool
		checkpoint  LSN
		openPack    uint64
		openSize    int64
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if m == nil {
			return fmt.Errorf("blockstore: metadata has no meta bucket: %w", ErrCorrupt)
		}
		if v := getU64(m, kFormat); v != FormatVersion { // openFront upgraded version 1
			return fmt.Errorf("blockstore: format version %d, this build reads %d", v, FormatVersion)
		}
		s.bs = int(getU64(m, kBlockSize))
		storedFP = append([]byte(nil), m.Get(kFPKey)...)
		copy(fpKey[:], storedFP)
		compression = string(m.Get(kCompression))
		encrypted = len(m.Get(kEncrypted)) == 1 && m.Get(kEncrypted)[0] == 1
		checkpoint = LSN(getU64(m, kCheckpoint))
		s.nextID = getU64(m, kNextID)
		s.nextChunk = getU64(m, kNextChunk)
		s.nextPack = getU64(m, kNextPack)
		openPack = getU64(m, kOpenPack)
		s.id = getU64(m, kID)
		if openPack != 0 {
			if v := tx.Bucket(bPacks).Get(u64b(openPack)); v != nil {
				openSize = int64(binary.LittleEndian.Uint64(v))
			}
		}
		err := tx.Bucket(bLayers).ForEach(func(k, v []byte) error {
			rec, _, err := decodeLayerRec(v)
			if err != nil {
				return err
			}
			id := binary.BigEndian.Uint64(k)
			s.layers[id] = &layer{id: id, rec: rec, selfLimit: noLimit}
			return nil
		})
		if err != nil {
			return err
		}
		if qb := tx.Bucket(bQuarantine); qb != nil {
			err := qb.ForEach(func(k, v []byte) error {
				if len(k) != 8 || len(v) != len(Fingerprint{}) {
					return fmt.Errorf("blockstore: quarantine entry of %d+%d bytes: %w", len(k), len(v), ErrCorrupt)
				}
				if s.quarantine == nil {
					s.quarantine = make(map[uint64]Fingerprint)
				}
				s.quarantine[binary.BigEndian.Uint64(k)] = Fingerprint(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return tx.Bucket(bVolumes).ForEach(func(k, v []byte) error {
			id := binary.BigEndian.Uint64(k)
			s.vols[id] = &volState{id: id, top: binary.LittleEndian.Uint64(v)}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if s.bs < 4<<10 || s.bs > 64<<10 {
		return fmt.Errorf("blockstore: block size %d in metadata: %w", s.bs, ErrCorrupt)
	}
	cfg := sealerConfig{FingerprintKey: fpKey, Compression: compression, BlockSize: s.bs}
	if encrypted {
		key, err := os.ReadFile(filepath.Join(s.dir, keyFile))
		if err != nil {
			return fmt.Errorf("blockstore: datastore is encrypted: %w", err)
		}
		if len(key) != 32 {
			return fmt.Errorf("blockstore: %s: want 32 bytes, have %d", keyFile, len(key))
		}
		cfg.EncryptionKey = key
		switch len(storedFP) {
		case 0:
			cfg.FingerprintKey = deriveFPKey(key)
		case 32:
		default:
			return fmt.Errorf("blockstore: fingerprint key of %d bytes in metadata: %w", len(storedFP), ErrCorrupt)
		}
	}
	if !encrypted && len(storedFP) != 32 {
		return fmt.Errorf("blockstore: fingerprint key of %d bytes in metadata: %w", len(storedFP), ErrCorrupt)
	}
	if s.seal, err = newSealer(cfg); err != nil {
		return err
	}
	if err := s.removeOrphanPacks(openPack); err != nil {
		return err
	}
	if openPack != 0 {
		w, err := openPackAppend(packPath(s.dir, openPack), openPack, s.bs, openSize)
		switch {
		case err == nil:
			s.pack, s.packCommitted = w, openSize
		case errors.Is(err, ErrCorrupt) || errors.Is(err, fs.ErrNotExist):
			// A damaged open pack costs the chunks in it (their reads fail
			// with ErrCorrupt), not the datastore: new chunks go to a new
			// pack.
			s.logger.Error("blockstore: open pack is damaged; starting a new one", "pack", openPack, "err", err)
		default:
			return fmt.Errorf("blockstore: open pack %d: %w", openPack, err)
		}
	}
	for id, l := range s.layers {
		if l.rec.holds == 0 && l.rec.children == 1 && l.rec.frozen() {
			s.mergeable[id] = struct{}{}
		}
	}
	s.log, err = openLog(filepath.Join(s.dir, "nvlog"), logOptions{SegmentSize: s.opts.SegmentSize, MaxFiles: logBudgetFiles})
	if err != nil {
		return err
	}
	s.log.onDisk = s.space.invalidate
	if ext := s.opts.Extension; ext != nil {
		if err := s.db.View(ext.Load); err != nil {
			s.log.close()
			return fmt.Errorf("blockstore: extension load: %w", err)
		}
	}
	maxSealed := maxSealedLen(s.bs)
	n := 0
	s.replaying = true
	defer func() { s.replaying = false }()
	_, err = s.log.replay(checkpoint, func(start LSN, payload []byte) error {
		end := logRecordEnd(start, len(payload))
		p := append([]byte(nil), payload...)
		d, err := decodePayload(p, maxSealed)
		if err != nil {
			return fmt.Errorf("blockstore: replay at LSN %d: %w", end, err)
		}
		n++
		s.applyLocked(d, end, int64(len(p)))
		return s.replayErr
	})
	if err != nil {
		s.log.close()
		return err
	}
	if n > 0 {
		s.logger.Info("blockstore: replayed NVLOG", "records", n, "bytes", s.queueBytes.Load())
	}
	return nil
}

// removeOrphanPacks deletes pack files that no committed transaction knows:
// a pack created just before a crash (I2 keeps anything referenced).
func (s *Store) removeOrphanPacks(openPack uint64) error {
	ents, err := os.ReadDir(filepath.Join(s.dir, "packs"))
	if err != nil {
		return err
	}
	known := make(map[uint64]bool)
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bPacks).ForEach(func(k, _ []byte) error {
			known[binary.BigEndian.Uint64(k)] = true
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, e := range ents {
		id, ok := parsePackName(e.Name())
		if !ok {
			continue
		}
		if !known[id] && id != openPack {
			s.logger.Warn("blockstore: removing uncommitted pack", "pack", id)
			if err := os.Remove(filepath.Join(s.dir, "packs", e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// deriveFPKey derives an encrypted datastore's fingerprint key from its
// datastore key.
func deriveFPKey(key []byte) [32]byte {
	var out [32]byte
	blake3.DeriveKey("dstore blockstore v1 fingerprint key", key, out[:])
	return out
}

// parsePackName accepts exactly the names packPath makes.
func parsePackName(name string) (uint64, bool) {
	if len(name) != 16+len(".pack") || !strings.HasSuffix(name, ".pack") {
		return 0, false
	}
	id, err := strconv.ParseUint(name[:16], 16, 64)
	if err != nil || fmt.Sprintf("%016x.pack", id) != name {
		return 0, false
	}
	return id, true
}

// Close destages everything, syncs and closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return ErrClosed
	}
	s.mu.Unlock()
	ferr := s.Flush()
	s.mu.Lock()
	s.closed.Store(true)
	s.room.Broadcast()
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	s.bg.Wait()
	s.persistQuarantine()
	err := s.log.close()
	s.destageMu.Lock()
	if s.pack != nil {
		if cerr := s.pack.close(); err == nil {
			err = cerr
		}
		s.pack = nil
	}
	s.destageMu.Unlock()
	s.packs.closeAll()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	if ferr != nil && !errors.Is(ferr, ErrClosed) {
		return ferr
	}
	return err
}

// ID is the datastore's identity: random at init, never 0, stable for its
// life (the NFS fsid).
func (s *Store) ID() uint64 { return s.id }

// BlockSize is the datastore's block size in bytes.
func (s *Store) BlockSize() int { return s.bs }

// Sync makes every write so far durable.
func (s *Store) Sync() error { return s.log.sync() }

// Flush destages every record logged before it was called, and merges the
// front into the map and the index (tests,
// shutdown, GC, Settle). Records logged meanwhile may stay queued: under
// steady writes the queue is never empty, and a Flush that waited for that
// did not end while they lasted (the auto GC's destage-first took minutes
// under make bench's dd and fio).
func (s *Store) Flush() error {
	s.mu.Lock()
	var target LSN
	if n := len(s.queue); n > 0 {
		target = s.queue[n-1].end
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		done := len(s.queue) == 0 || s.queue[0].end > target
		closed := s.closed.Load()
		s.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if done {
			// Everything destaged is in the map and the index too.
			return s.mergeFront()
		}
		if err := s.destage(); err != nil {
			return err
		}
	}
}

// append logs one record and applies it to the in-memory state, atomically
// with respect to every other mutation. REQUIRES: s.mu held.
func (s *Store) appendLocked(d decoded, parts ...[]byte) (LSN, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	end, err := s.log.appendv(parts...)
	if err != nil {
		return 0, err
	}
	n := int64(0)
	for _, p := range parts {
		n += int64(len(p))
	}
	s.applyLocked(d, end, n)
	return end, nil
}

// applyLocked applies a logged record to the in-memory state; the same code
// serves the live path and replay (I4). REQUIRES: s.mu held.
func (s *Store) applyLocked(d decoded, end LSN, nbytes int64) {
	switch d.typ {
	case recBlocks:
		l := s.layers[d.layer]
		if l != nil {
			d.shrinks = d.sizeMode == sizeSet && d.size < l.rec.size
			s.applySize(l, d.sizeMode, d.size, end)
		}
		pbs := make([]pblock, len(d.ops)) // one allocation for the record
		for i := range d.ops {
			op := &d.ops[i]
			pb := &pbs[i]
			*pb = pblock{lsn: end, kind: op.kind, fp: op.fp, codec: op.codec, sealed: op.sealed, chunk: op.chunk}
			switch op.kind {
			case kindData:
				if op.absent && s.fpPending[op.fp] != nil {
					// A twin was logged since the lookup: destage must
					// look (the twin may be destaged by then).
					op.absent = false
				}
				s.fpPending[op.fp] = pb
			case kindRef:
				if pb.sealed == nil && pb.chunk == 0 {
					if p := s.fpPending[op.fp]; p != nil {
						pb.sealed, pb.codec = p.sealed, p.codec
						if p.deferred {
							pb.chunk = p.chunk
						}
					}
				}
			}
			if l != nil {
				if l.pending == nil {
					l.pending = make(map[uint64]*pblock)
				}
				l.pending[op.blk] = pb
			}
		}
	case recMeta:
		for i := range d.effs {
			s.applyEffect(&d.effs[i])
		}
		s.metaGen++
	}
	s.queue = append(s.queue, &qrec{end: end, d: d, bytes: nbytes})
	s.queueBytes.Add(nbytes)
	s.unpacked.Add(nbytes)
	s.queuedOps += len(d.ops)
	if s.queuedOps >= destageBatchOps/2 {
		// Records of references are small: half a batch of them is a lot
		// of blocks, which destage need not wait for its timer to take.
		s.kick()
	}
}

// applySize applies a record's size change to l. REQUIRES: s.mu held.
func (s *Store) applySize(l *layer, mode uint8, size int64, end LSN) {
	switch mode {
	case sizeGrow:
		if size > l.rec.size {
			l.rec.size = size
		}
	case sizeSet:
		if size < l.rec.size {
			nb := blocksFor(size, s.bs)
			if nb < l.rec.limit {
				l.rec.limit = nb
			}
			for b := range l.pending {
				if b >= nb {
					delete(l.pending, b)
				}
			}
			l.truncs = append(l.truncs, trunc{lsn: end, nb: nb})
			s.truncated[l.id] = l
			l.selfLimit = min(l.selfLimit, nb)
			s.metaGen++ // the limit changed what lower layers show
		}
		l.rec.size = size
	}
}

// applyEffect applies one metadata effect in memory. REQUIRES: s.mu held.
func (s *Store) applyEffect(e *effect) {
	if e.id >= s.nextID {
		s.nextID = e.id + 1
	}
	switch e.kind {
	case effPutLayer:
		l := s.layers[e.id]
		if l == nil {
			l = &layer{id: e.id, selfLimit: noLimit}
			s.layers[e.id] = l
		}
		l.rec = e.rec
		if l.rec.frozen() && l.rec.holds == 0 && l.rec.children == 1 {
			s.mergeable[e.id] = struct{}{}
		} else {
			delete(s.mergeable, e.id)
		}
	case effDelLayer:
		delete(s.layers, e.id)
		delete(s.mergeable, e.id)
	case effPutVolume:
		if e.other >= s.nextID {
			s.nextID = e.other + 1
		}
		v := s.vols[e.id]
		if v == nil {
			v = &volState{id: e.id}
			s.vols[e.id] = v
		}
		if v.top != e.other {
			s.seedAlloc(v, e.other)
		}
		v.top = e.other
	case effDelVolume:
		if v := s.vols[e.id]; v != nil {
			v.gone.Store(true)
		}
		delete(s.vols, e.id)
	case effExt:
		if s.replaying && s.opts.Extension != nil {
			if err := s.opts.Extension.Replay(e.ext); err != nil {
				s.replayErr = fmt.Errorf("blockstore: extension replay: %w", err)
			}
		}
	case effMerge:
		from, into := s.layers[e.id], s.layers[e.other]
		if into != nil {
			into.aliases = append(into.aliases, alias{id: e.id, vis: e.limit})
			if from != nil {
				for _, a := range from.aliases {
					into.aliases = append(into.aliases, alias{id: a.id, vis: min(a.vis, e.limit)})
				}
			}
		}
		delete(s.layers, e.id)
		delete(s.mergeable, e.id)
	}
}

// seedAlloc gives a volume whose top becomes top (a new clone, a restore)
// the allocated count its basis had when it was frozen, as a count made
// now: Allocated answers with it at once, and recounts in the background
// only when asked again after allocTTL, instead of walking the lineage
// first (a clone of a large disk would otherwise wait for that walk, and
// every clone made in a burst would start one). The new top is empty, so
// the clone shows exactly its basis; the estimate is as old as the
// basis volume's cache was at the freeze. Without a known count the cache
// is cleared and the next Allocated counts. REQUIRES: s.mu held.
func (s *Store) seedAlloc(v *volState, top uint64) {
	if t := s.layers[top]; t != nil && v.top != 0 && t.rec.parent == v.top {
		return // a freeze of v itself: it still shows what it showed
	}
	v.alloc, v.allocAt = 0, 0
	if t := s.layers[top]; t != nil && !s.replaying {
		if p := s.layers[t.rec.parent]; p != nil && p.allocKnown {
			v.alloc, v.allocAt = p.alloc, coarse.UnixNano()
		}
	}
}

func (s *Store) allocID() uint64 {
	id := s.nextID
	s.nextID++
	return id
}

// OpenVolume returns a handle on an existing volume.
func (s *Store) OpenVolume(id VolumeID) (*Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vols[uint64(id)] == nil {
		return nil, fmt.Errorf("volume %d: %w", id, ErrNotFound)
	}
	return &Volume{s: s, id: uint64(id)}, nil
}

// Volumes lists every volume, in ID order.
func (s *Store) Volumes() []VolumeID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]VolumeID, 0, len(s.vols))
	for id := range s.vols {
		ids = append(ids, VolumeID(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// LayerInfo describes a layer for callers above (snapstore, objex).
type LayerInfo struct {
	ID       LayerID
	Parent   LayerID
	Lineage  LayerID
	Size     int64
	Frozen   bool
	Holds    int
	Children int
	Remote   string
}

// Layer returns a layer's description.
func (s *Store) Layer(id LayerID) (LayerInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.layers[uint64(id)]
	if l == nil {
		return LayerInfo{}, fmt.Errorf("layer %d: %w", id, ErrNotFound)
	}
	return LayerInfo{ID: id, Parent: LayerID(l.rec.parent), Lineage: LayerID(l.rec.lineage), Size: l.rec.size,
		Frozen: l.rec.frozen(), Holds: int(l.rec.holds), Children: int(l.rec.children), Remote: l.rec.remote}, nil
}

// kick wakes the destage loop.
// batchWaiting reports whether half a destage batch is queued. REQUIRES:
// s.mu held.
func (s *Store) batchWaiting() bool {
	return s.queueBytes.Load() >= destageBatchBytes/2 || s.queuedOps >= destageBatchOps/2
}

func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func blocksFor(size int64, bs int) uint64 {
	return uint64((size + int64(bs) - 1) / int64(bs))
}

func u64b(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
