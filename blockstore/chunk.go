package blockstore

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dstore/dstore/blockstore/internal/fphash"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// Fingerprint is the keyed BLAKE3-256 of a block's plaintext.
type Fingerprint [32]byte

// String returns the fingerprint in lowercase hex.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// Codec values, stored in log records, pack records and the chunk table
// (wire format).
const (
	CodecRaw  uint8 = 0
	CodecS2   uint8 = 1 // klauspost/compress/s2 block format
	CodecZstd uint8 = 2 // klauspost/compress/zstd frames (EncodeAll/DecodeAll)

	// FlagEncrypted is OR'ed into the codec byte of a chunk sealed with
	// XChaCha20-Poly1305.
	FlagEncrypted uint8 = 0x80
)

// Compression names accepted in sealerConfig.Compression (and so in
// InitOptions.Compression).
const (
	compressionNone        = "none"
	compressionS2          = "s2"
	compressionZstdFastest = "zstd-fastest"
	compressionZstdDefault = "zstd-default"

	// defaultCompression is used when none is configured. See
	// docs/notes/compression.md for the benchmark behind the choice.
	defaultCompression = compressionS2
)

const (
	sealNonceSize = chacha20poly1305.NonceSizeX // 24
	sealTagSize   = chacha20poly1305.Overhead   // 16

	// Block sizes outside this range are refused by the sealer and the pack
	// header parser. The store itself only offers 4 KiB..64 KiB; the wider
	// range keeps tests cheap and bounds what a corrupt header can make us
	// allocate.
	sealMinBlockSize = 1 << 10
	sealMaxBlockSize = 1 << 20
)

// validBlockSize reports whether bs is a power of two the codec supports.
func validBlockSize(bs int) bool {
	return bs >= sealMinBlockSize && bs <= sealMaxBlockSize && bs&(bs-1) == 0
}

// validCodec reports whether c is a codec byte this version can produce.
// Unknown bits are rejected so that a flipped bit is caught as corruption
// before any decoder sees the data.
func validCodec(c uint8) bool {
	return c&^FlagEncrypted <= CodecZstd
}

// maxSealedLen bounds len(sealed) for any block of blockSize bytes. Sealing
// keeps a block raw unless compression saves at least an eighth, so the raw
// form plus the AEAD nonce and tag is the worst case.
func maxSealedLen(blockSize int) int {
	return blockSize + sealNonceSize + sealTagSize
}

type sealerConfig struct {
	FingerprintKey [32]byte
	EncryptionKey  []byte // nil = no encryption, else 32 bytes (XChaCha20-Poly1305)
	Compression    string // "none", "s2", "zstd-fastest", "zstd-default"; "" = defaultCompression
	BlockSize      int
}

// sealer turns blocks into chunks and back. It is safe for concurrent use.
type sealer struct {
	blockSize int
	codec     uint8 // compression codec used by seal, without FlagEncrypted
	aead      cipher.AEAD
	zenc      *zstd.Encoder // nil unless codec is CodecZstd
	zdec      *zstd.Decoder // always set: any stored chunk may be zstd

	// sealCap is the room seal works in: the largest intermediate
	// compressor output plus nonce and tag, so nothing reallocates midway.
	sealCap int
	// maxPacked: compressed output longer than this is stored raw.
	maxPacked int

	fp      *fphash.Hasher // keyed BLAKE3-256 of one block or of many
	scratch sync.Pool      // *[]byte of cap sealCap: seal's work area, open's decryption output
	areas   sync.Pool      // *[]byte of cap sealManyMax*sealCap: sealMany's work area
}

func newSealer(cfg sealerConfig) (*sealer, error) {
	bs := cfg.BlockSize
	if !validBlockSize(bs) {
		return nil, fmt.Errorf("blockstore: block size %d is not a power of two in [%d, %d]", bs, sealMinBlockSize, sealMaxBlockSize)
	}
	s := &sealer{blockSize: bs, maxPacked: bs - bs/8}

	var err error
	if s.fp, err = fphash.New(&cfg.FingerprintKey, bs); err != nil {
		return nil, fmt.Errorf("blockstore: fingerprint key: %w", err)
	}

	if cfg.EncryptionKey != nil {
		if len(cfg.EncryptionKey) != chacha20poly1305.KeySize {
			return nil, fmt.Errorf("blockstore: encryption key is %d bytes, want %d", len(cfg.EncryptionKey), chacha20poly1305.KeySize)
		}
		s.aead, err = chacha20poly1305.NewX(cfg.EncryptionKey)
		if err != nil {
			return nil, fmt.Errorf("blockstore: encryption key: %w", err)
		}
	}

	compression := cfg.Compression
	if compression == "" {
		compression = defaultCompression
	}
	packedBound := bs
	switch compression {
	case compressionNone:
		s.codec = CodecRaw
	case compressionS2:
		s.codec = CodecS2
		packedBound = max(packedBound, s2.MaxEncodedLen(bs))
	case compressionZstdFastest, compressionZstdDefault:
		s.codec = CodecZstd
		level := zstd.SpeedFastest
		if compression == compressionZstdDefault {
			level = zstd.SpeedDefault
		}
		s.zenc, err = sharedZstdEncoder(level, bs)
		if err != nil {
			return nil, err
		}
		packedBound = max(packedBound, s.zenc.MaxEncodedSize(bs))
	default:
		return nil, fmt.Errorf("blockstore: unknown compression %q (want none, s2, zstd-fastest or zstd-default)", cfg.Compression)
	}
	// Slack for anything a compressor appends beyond its documented bound;
	// seal copies if it ever does reallocate.
	s.sealCap = sealNonceSize + packedBound + sealTagSize + 64
	s.scratch.New = func() any {
		b := make([]byte, 0, s.sealCap)
		return &b
	}
	s.areas.New = func() any {
		b := make([]byte, 0, sealManyMax*s.sealCap)
		return &b
	}

	s.zdec, err = sharedZstdDecoder(bs)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// zstd encoders and decoders hold sizeable tables and cannot be garbage
// collected cheaply, so every sealer with the same parameters shares one.
// Both are safe for concurrent EncodeAll/DecodeAll.
var zstdShared struct {
	sync.Mutex
	enc map[zstdEncKey]*zstd.Encoder
	dec map[int]*zstd.Decoder
}

type zstdEncKey struct {
	level     zstd.EncoderLevel
	blockSize int
}

func sharedZstdEncoder(level zstd.EncoderLevel, bs int) (*zstd.Encoder, error) {
	zstdShared.Lock()
	defer zstdShared.Unlock()
	k := zstdEncKey{level, bs}
	if e := zstdShared.enc[k]; e != nil {
		return e, nil
	}
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		// A chunk is always compressed on its own, so a window beyond
		// the block only costs memory.
		zstd.WithWindowSize(max(bs, zstd.MinWindowSize)),
		// The fingerprint check on open already covers the content.
		zstd.WithEncoderCRC(false),
		zstd.WithEncoderConcurrency(0),
	)
	if err != nil {
		return nil, fmt.Errorf("blockstore: zstd encoder: %w", err)
	}
	if zstdShared.enc == nil {
		zstdShared.enc = make(map[zstdEncKey]*zstd.Encoder)
	}
	zstdShared.enc[k] = e
	return e, nil
}

func sharedZstdDecoder(bs int) (*zstd.Decoder, error) {
	zstdShared.Lock()
	defer zstdShared.Unlock()
	if d := zstdShared.dec[bs]; d != nil {
		return d, nil
	}
	// The limits make a hostile frame fail instead of allocating: a valid
	// chunk never decodes to more than one block.
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(uint64(bs)),
		zstd.WithDecoderMaxWindow(uint64(max(bs, zstd.MinWindowSize))),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		return nil, fmt.Errorf("blockstore: zstd decoder: %w", err)
	}
	if zstdShared.dec == nil {
		zstdShared.dec = make(map[int]*zstd.Decoder)
	}
	zstdShared.dec[bs] = d
	return d, nil
}

// fingerprint returns the keyed BLAKE3-256 of block.
func (s *sealer) fingerprint(block []byte) Fingerprint {
	return s.fp.Sum(block)
}

// fingerprintMany sets out[i] to the fingerprint of blocks[i]. Blocks of
// the block size are hashed side by side (fphash): for a large write that
// is several times faster than one by one.
func (s *sealer) fingerprintMany(blocks [][]byte, out []Fingerprint) {
	fphash.SumMany(s.fp, blocks, out)
}

// sealAD is the AEAD associated data: binding the fingerprint and codec
// means a valid ciphertext cannot be moved to another chunk or reinterpreted
// with another codec.
func sealAD(fp *Fingerprint, codec uint8) [33]byte {
	var ad [33]byte
	copy(ad[:32], fp[:])
	ad[32] = codec
	return ad
}

// seal compresses block (kept raw when compression saves less than 1/8 of
// the block), then, when the sealer has an encryption key, seals it with
// XChaCha20-Poly1305 under a random nonce that is prepended, with
// AD = fp || codec byte. It appends the result to dst and returns the codec
// byte (with FlagEncrypted when encrypted) and the extended slice.
//
// len(block) must be the block size: a chunk of any other length could
// never be opened, so that is treated as a programming error and panics.
func (s *sealer) seal(dst []byte, fp Fingerprint, block []byte) (codec uint8, out []byte) {
	if len(block) != s.blockSize {
		panic(fmt.Sprintf("blockstore: seal of %d bytes with block size %d", len(block), s.blockSize))
	}
	if cap(dst)-len(dst) >= s.sealCap {
		return s.sealInPlace(dst, fp, block, true)
	}
	// Sealing needs room for the compressor's worst case, often twice
	// the result. Work in scratch so that a caller keeping the result
	// (pending blocks wait in memory until destage) does not keep the
	// slack too.
	sp := s.scratch.Get().(*[]byte)
	codec, sealed := s.sealInPlace((*sp)[:0], fp, block, true)
	dst = append(dst, sealed...)
	s.scratch.Put(sp)
	return codec, dst
}

func codecOrRaw(c uint8, compress bool) uint8 {
	if !compress {
		return CodecRaw
	}
	return c
}

// compressGuess predicts, for one stream of writes (a volume), whether
// its next block will compress. After guessAfter incompressible blocks in
// a row, only every guessProbe-th block is tried (the others are stored
// raw without running the compressor) until one compresses again: random
// or already compressed data then costs a compression attempt for one
// block in guessProbe (an attempt on a 4 KiB block that does not compress
// was the largest single CPU cost of a random 4 KiB write), while a
// compressible stream never skips one. The price is the compression of up
// to guessProbe-1 blocks each time a long incompressible run turns
// compressible (real OS files: compression 1.677x -> 1.673x; with 8 and 8
// it was 1.650x; docs/DESIGN.md section 8).
type compressGuess struct {
	streak atomic.Int32 // incompressible (or untried) blocks in a row
}

const (
	guessAfter = 32
	guessProbe = 4
)

// try reports whether the next block should be compressed.
func (g *compressGuess) try() bool {
	n := g.streak.Load()
	return n < guessAfter || n%guessProbe == 0
}

// saw records whether a block compressed (false also for one not tried).
func (g *compressGuess) saw(compressed bool) {
	switch {
	case compressed:
		g.streak.Store(0)
	case g.streak.Add(1) > 1<<30:
		g.streak.Store(guessAfter)
	}
}

// sealManyMax is how many blocks sealMany seals into one work area (and
// keeps in one allocation).
const sealManyMax = 256

// sealMany seals ops[i] for every i in idx: its plaintext (ops[i].sealed,
// the full block) becomes its sealed bytes, and its codec is set. The
// results share allocations of their exact total
// size, one per sealManyMax blocks, instead of one each: they are sealed
// side by side into a pooled work area with room for the worst case, then
// copied out once, which seal does too.
func (s *sealer) sealMany(ops []blockOp, idx []int, guess *compressGuess) {
	for len(idx) > 0 {
		k := min(len(idx), sealManyMax)
		ap := s.areas.Get().(*[]byte)
		area := (*ap)[:0]
		var ends [sealManyMax]int
		for j, i := range idx[:k] {
			op := &ops[i]
			op.codec, area = s.sealInPlace(area, op.fp, op.sealed, guess.try())
			guess.saw(op.codec&^FlagEncrypted != CodecRaw)
			ends[j] = len(area)
		}
		keep := make([]byte, len(area))
		copy(keep, area)
		start := 0
		for j, i := range idx[:k] {
			ops[i].sealed = keep[start:ends[j]:ends[j]]
			start = ends[j]
		}
		*ap = area[:0]
		s.areas.Put(ap)
		idx = idx[k:]
	}
}

// sealInPlace is seal for a dst with at least sealCap spare capacity;
// with compress false it stores the block raw without trying.
func (s *sealer) sealInPlace(dst []byte, fp Fingerprint, block []byte, compress bool) (codec uint8, out []byte) {
	start := len(dst)
	body := start
	if s.aead != nil {
		body += sealNonceSize
	}
	area := dst[body:body:cap(dst)]

	codec = CodecRaw
	var payload []byte
	switch codecOrRaw(s.codec, compress) {
	case CodecS2:
		payload = s2.Encode(area, block)
		codec = CodecS2
	case CodecZstd:
		payload = s.zenc.EncodeAll(block, area)
		codec = CodecZstd
	}
	if codec == CodecRaw || len(payload) > s.maxPacked {
		codec = CodecRaw
		payload = append(area, block...)
	} else if &payload[0] != &dst[:body+1][body] {
		payload = append(area, payload...)
	}
	n := len(payload)

	if s.aead == nil {
		return codec, dst[:body+n]
	}
	codec |= FlagEncrypted
	nonce := dst[start:body]
	rand.Read(nonce) // never fails: crypto/rand aborts the process instead
	ad := sealAD(&fp, codec)
	// Encrypt in place; sealCap guarantees room for the tag.
	ct := s.aead.Seal(dst[body:body], nonce, dst[body:body+n], ad[:])
	return codec, dst[:body+len(ct)]
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("blockstore: "+format+": %w", append(args, ErrCorrupt)...)
}

// open reverses seal and appends the block's plaintext to dst. It verifies
// the codec byte, the AEAD tag, the decompressed length and finally that the
// plaintext has fingerprint fp; any failure returns dst unchanged and an
// error wrapping ErrCorrupt. It must not panic on any input: sealed may be
// arbitrary bytes read from disk.
//
// A sealer with an encryption key refuses unencrypted chunks and one without
// refuses encrypted chunks, so clearing or setting FlagEncrypted in a
// record cannot be used to slip data past the AEAD.
func (s *sealer) open(dst []byte, fp Fingerprint, codec uint8, sealed []byte) ([]byte, error) {
	start := len(dst)
	dst, err := s.openUnverified(dst, fp, codec, sealed)
	if err != nil {
		return dst, err
	}
	return s.verify(dst, start, fp)
}

// openUnverified is open without the final fingerprint check: for callers
// that verify many chunks side by side (readRun). Its output must not be
// used before it is verified (I5).
func (s *sealer) openUnverified(dst []byte, fp Fingerprint, codec uint8, sealed []byte) ([]byte, error) {
	start := len(dst)
	bs := s.blockSize
	if !validCodec(codec) {
		return dst, corruptf("chunk %s: unknown codec %#02x", fp, codec)
	}
	if len(sealed) == 0 || len(sealed) > maxSealedLen(bs) {
		return dst, corruptf("chunk %s: sealed length %d out of range", fp, len(sealed))
	}
	encrypted := codec&FlagEncrypted != 0
	if encrypted != (s.aead != nil) {
		if encrypted {
			return dst, corruptf("chunk %s: encrypted chunk in an unencrypted store", fp)
		}
		return dst, corruptf("chunk %s: unencrypted chunk in an encrypted store", fp)
	}
	alg := codec &^ FlagEncrypted

	payload := sealed
	if encrypted {
		if len(sealed) < sealNonceSize+sealTagSize {
			return dst, corruptf("chunk %s: sealed length %d shorter than nonce and tag", fp, len(sealed))
		}
		nonce, ct := sealed[:sealNonceSize], sealed[sealNonceSize:]
		ad := sealAD(&fp, codec)
		if alg == CodecRaw {
			// Raw plaintext is the block itself: decrypt straight into dst.
			if len(ct)-sealTagSize != bs {
				return dst, corruptf("chunk %s: raw chunk of %d bytes, want %d", fp, len(ct)-sealTagSize, bs)
			}
			dst = slices.Grow(dst, bs)
			if _, err := s.aead.Open(dst[start:start], nonce, ct, ad[:]); err != nil {
				return dst[:start], corruptf("chunk %s: %v", fp, err)
			}
			return dst[:start+bs], nil
		}
		sp := s.scratch.Get().(*[]byte)
		defer s.scratch.Put(sp)
		pt, err := s.aead.Open((*sp)[:0], nonce, ct, ad[:])
		if err != nil {
			return dst, corruptf("chunk %s: %v", fp, err)
		}
		payload = pt
	}

	switch alg {
	case CodecRaw:
		if len(payload) != bs {
			return dst, corruptf("chunk %s: raw chunk of %d bytes, want %d", fp, len(payload), bs)
		}
		dst = append(dst, payload...)
	case CodecS2:
		// Check the declared length first so garbage cannot make s2
		// allocate a huge buffer.
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return dst, corruptf("chunk %s: s2: %v", fp, err)
		}
		if n != bs {
			return dst, corruptf("chunk %s: s2 header declares %d bytes, want %d", fp, n, bs)
		}
		dst = slices.Grow(dst, bs)
		out, err := s2.Decode(dst[start:start+bs], payload)
		if err != nil {
			return dst, corruptf("chunk %s: s2: %v", fp, err)
		}
		if len(out) != bs || &out[0] != &dst[:start+1][start] {
			return dst, corruptf("chunk %s: s2 decoded %d bytes, want %d", fp, len(out), bs)
		}
		dst = dst[:start+bs]
	case CodecZstd:
		dst = slices.Grow(dst, bs)
		// The capacity limit (WithDecodeAllCapLimit) keeps the decoder
		// inside exactly one block of dst.
		out, err := s.zdec.DecodeAll(payload, dst[start:start:start+bs])
		if err != nil {
			return dst, corruptf("chunk %s: zstd: %v", fp, err)
		}
		if len(out) != bs || &out[0] != &dst[:start+1][start] {
			return dst, corruptf("chunk %s: zstd decoded %d bytes, want %d", fp, len(out), bs)
		}
		dst = dst[:start+bs]
	}
	return dst, nil
}

// verify checks that dst[start:] has fingerprint fp, the final guard (I5)
// that also catches decompressor bugs and chunks sealed under another key.
func (s *sealer) verify(dst []byte, start int, fp Fingerprint) ([]byte, error) {
	if got := s.fingerprint(dst[start:]); got != fp {
		return dst[:start], corruptf("chunk %s: plaintext has fingerprint %s", fp, got)
	}
	return dst, nil
}

// isZero reports whether b is all zero bytes. Holes are common (sparse
// files, zeroed regions), so this runs on every block written.
func isZero(b []byte) bool {
	for len(b) >= 32 {
		if binary.LittleEndian.Uint64(b)|binary.LittleEndian.Uint64(b[8:])|
			binary.LittleEndian.Uint64(b[16:])|binary.LittleEndian.Uint64(b[24:]) != 0 {
			return false
		}
		b = b[32:]
	}
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
