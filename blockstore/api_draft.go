package blockstore

// TEMPORARY: the exported API surface, with placeholder bodies, so that the
// CLI and tests can be written in parallel. Replaced by the real store.

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

var errDraft = errors.New("blockstore: not implemented yet")

// MaxVolumeSize is the largest size a volume can have: 64 TiB.
const MaxVolumeSize int64 = 64 << 40

type (
	VolumeID uint64
	LayerID  uint64
)

type InitOptions struct {
	BlockSize   int    // bytes, a power of two from 4 KiB to 64 KiB; 0 = default
	Encrypt     bool   // make a datastore key and seal every chunk with it
	Compression string // "" = default
}

// RemoteBasis supplies blocks of a layer that lives elsewhere (an OX manifest).
type RemoteBasis interface {
	// ReadBlock fills p (len = block size) with block n; hole=true when the block is all zeros.
	ReadBlock(ctx context.Context, n int64, p []byte) (hole bool, err error)
	Size() int64
}

type Options struct {
	Logger          *slog.Logger
	MaxLogBytes     int64 // NVLOG bound before writers are slowed; 0 = default
	CacheBytes      int64 // decoded chunk cache; 0 = default
	DestageInterval time.Duration
	// Remote resolves the name recorded in a remote-based layer to its basis.
	Remote func(name string) (RemoteBasis, error)
}

type Store struct{}
type Volume struct{}

type Stats struct {
	BlockSize        int
	Volumes          int
	Layers           int
	Chunks           int64
	LogicalBytes     int64 // bytes of non-hole blocks over all layers
	UniqueBytes      int64 // uncompressed bytes of live chunks
	StoredBytes      int64 // sealed bytes of live chunks
	PhysicalBytes    int64 // bytes of pack files on disk
	DedupeRatio      float64
	CompressionRatio float64
	LogBytes         int64
	Packs            []PackStats
}

type PackStats struct {
	ID        uint64
	Bytes     int64
	LiveBytes int64
	Chunks    int64
	Live      float64
}

type GCOptions struct {
	DryRun    bool
	Threshold float64 // compact packs whose live fraction is below this; 0 = default 0.5
}

type GCReport struct {
	ChunksFreed    int64
	BytesFreed     int64
	PacksDeleted   int
	PacksCompacted int
	BytesRewritten int64
	DryRun         bool
}

type ScrubReport struct {
	ChunksChecked int64
	BytesChecked  int64
	Corrupt       []CorruptChunk
}

type CorruptChunk struct {
	Chunk  uint64
	Pack   uint64
	Offset int64
	Err    string
}

func Init(dir string, opts InitOptions) error              { return errDraft }
func IsInitialized(dir string) bool                        { return false }
func Open(dir string, opts Options) (*Store, error)        { return nil, errDraft }
func (s *Store) Close() error                              { return errDraft }
func (s *Store) BlockSize() int                            { return 0 }
func (s *Store) CreateVolume() (*Volume, error)            { return nil, errDraft }
func (s *Store) OpenVolume(id VolumeID) (*Volume, error)   { return nil, errDraft }
func (s *Store) DeleteVolume(id VolumeID) error            { return errDraft }
func (s *Store) Volumes() []VolumeID                       { return nil }
func (s *Store) Freeze(ids ...VolumeID) ([]LayerID, error) { return nil, errDraft }
func (s *Store) Clone(l LayerID) (*Volume, error)          { return nil, errDraft }
func (s *Store) Restore(id VolumeID, l LayerID) error      { return errDraft }
func (s *Store) Release(l LayerID) error                   { return errDraft }
func (s *Store) Sync() error                               { return errDraft }
func (s *Store) Flush() error                              { return errDraft }
func (s *Store) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	return GCReport{}, errDraft
}
func (s *Store) Scrub(ctx context.Context) (ScrubReport, error) { return ScrubReport{}, errDraft }
func (s *Store) Stats() (Stats, error)                          { return Stats{}, errDraft }

func (v *Volume) ID() VolumeID                                   { return 0 }
func (v *Volume) Size() int64                                    { return 0 }
func (v *Volume) ReadAt(p []byte, off int64) (int, error)        { return 0, errDraft }
func (v *Volume) WriteAt(p []byte, off int64) (int, error)       { return 0, errDraft }
func (v *Volume) WriteAtStable(p []byte, off int64) (int, error) { return 0, errDraft }
func (v *Volume) Truncate(size int64) error                      { return errDraft }
func (v *Volume) Sync() error                                    { return errDraft }
