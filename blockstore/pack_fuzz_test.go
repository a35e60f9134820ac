package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The fuzzers use the smallest block size so that a whole record, raw ones
// included, is within easy reach of mutation.
const fuzzBlockSize = sealMinBlockSize

// fuzzSealers opens records found by the fuzzers, so that garbage also
// reaches the decompressors and the AEAD. The keys are fixed: the committed
// seeds were sealed with them.
func fuzzSealers(t testing.TB) map[bool]*sealer {
	out := map[bool]*sealer{}
	for _, enc := range []bool{false, true} {
		out[enc] = newTestSealer(t, compressionZstdFastest, fuzzBlockSize, enc)
	}
	return out
}

// checkOpen opens a record that decoded cleanly: the only acceptable
// outcomes are the block with the right fingerprint, or ErrCorrupt.
func checkOpen(t *testing.T, sealers map[bool]*sealer, fp Fingerprint, codec uint8, sealed []byte) {
	s := sealers[codec&FlagEncrypted != 0]
	block, err := s.open(nil, fp, codec, sealed)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: error not ErrCorrupt: %v", err)
		}
		return
	}
	if len(block) != fuzzBlockSize || s.fingerprint(block) != fp {
		t.Fatalf("open returned %d bytes that do not match the fingerprint", len(block))
	}
}

func FuzzDecodeChunkRecord(f *testing.F) {
	sealers := fuzzSealers(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fp, codec, sealed, n, err := decodeChunkRecord(data, fuzzBlockSize)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if n != chunkHeaderSize+len(sealed) || n > len(data) {
			t.Fatalf("n=%d with %d sealed bytes from %d bytes", n, len(sealed), len(data))
		}
		if cap(sealed) != len(sealed) {
			t.Fatal("sealed has spare capacity into the caller's buffer")
		}
		again := appendChunkHeader(nil, &fp, codec, len(sealed))
		again = append(again, sealed...)
		if !bytes.Equal(again, data[:n]) {
			t.Fatal("record does not re-encode to the same bytes")
		}
		checkOpen(t, sealers, fp, codec, sealed)
	})
}

func FuzzScanPack(f *testing.F) {
	sealers := fuzzSealers(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		next := int64(packHeaderSize)
		err := scanPack(bytes.NewReader(data), fuzzBlockSize, func(off int64, fp Fingerprint, codec uint8, sealed []byte) error {
			if off != next {
				t.Fatalf("record at %d, expected %d", off, next)
			}
			rec := appendChunkHeader(nil, &fp, codec, len(sealed))
			rec = append(rec, sealed...)
			end := off + int64(len(rec))
			if end > int64(len(data)) || !bytes.Equal(rec, data[off:end]) {
				t.Fatalf("record at %d does not match the input", off)
			}
			checkOpen(t, sealers, fp, codec, sealed)
			next = end
			return nil
		})
		switch {
		case err == nil:
			if next != int64(len(data)) {
				t.Fatalf("clean scan stopped at %d of %d bytes", next, len(data))
			}
		case !errors.Is(err, ErrCorrupt):
			t.Fatalf("error not ErrCorrupt: %v", err)
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpora under
// testdata/fuzz. Run it with DSTORE_WRITE_FUZZ_SEEDS=1 after a format
// change; the encrypted seeds differ on every run (random nonces).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("DSTORE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set DSTORE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	sealers := fuzzSealers(t)
	r := rand.New(rand.NewPCG(42, 42))
	record := func(enc bool, block []byte) []byte {
		s := sealers[enc]
		fp := s.fingerprint(block)
		codec, sealed := s.seal(nil, fp, block)
		rec := appendChunkHeader(nil, &fp, codec, len(sealed))
		return append(rec, sealed...)
	}
	text := record(false, compressibleBlock(r, fuzzBlockSize))
	textEnc := record(true, compressibleBlock(r, fuzzBlockSize))
	zero := record(false, make([]byte, fuzzBlockSize))
	raw := record(false, randomBlock(r, fuzzBlockSize))
	rawEnc := record(true, randomBlock(r, fuzzBlockSize))
	s2rec := func() []byte {
		s, err := newSealer(sealerConfig{FingerprintKey: testFPKey(1), Compression: compressionS2, BlockSize: fuzzBlockSize})
		if err != nil {
			t.Fatal(err)
		}
		block := compressibleBlock(r, fuzzBlockSize)
		fp := s.fingerprint(block)
		codec, sealed := s.seal(nil, fp, block)
		return append(appendChunkHeader(nil, &fp, codec, len(sealed)), sealed...)
	}()
	with := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}

	writeCorpus(t, "FuzzDecodeChunkRecord", map[string][]byte{
		"valid-zstd":      text,
		"valid-zstd-enc":  textEnc,
		"valid-s2":        s2rec,
		"valid-zero":      zero,
		"valid-raw":       raw,
		"valid-raw-enc":   rawEnc,
		"trailing-bytes":  append(bytes.Clone(text), zero...),
		"truncated":       text[:len(text)-3],
		"header-only":     text[:chunkHeaderSize],
		"bad-codec":       with(text, 4, 0x07),
		"bad-reserved":    with(text, 7, 0x01),
		"zero-length":     append([]byte{0, 0, 0, 0}, text[4:]...),
		"huge-length":     with(text, 3, 0x80),
		"raw-flag-on-s2":  with(s2rec, 4, CodecRaw),
		"flipped-payload": with(text, chunkHeaderSize+5, text[chunkHeaderSize+5]^0xff),
		"empty":           {},
	})

	hdr := encodePackHeader(1, fuzzBlockSize)
	pack := func(recs ...[]byte) []byte {
		out := bytes.Clone(hdr[:])
		for _, r := range recs {
			out = append(out, r...)
		}
		return out
	}
	good := pack(text, raw, textEnc, zero, s2rec)
	otherBS := encodePackHeader(1, 2*fuzzBlockSize)
	writeCorpus(t, "FuzzScanPack", map[string][]byte{
		"valid":           good,
		"valid-enc":       pack(rawEnc, textEnc),
		"header-only":     pack(),
		"torn-tail":       good[:len(good)-7],
		"torn-header":     good[:len(good)-len(s2rec)+10],
		"bad-magic":       with(good, 0, 'X'),
		"bad-crc":         with(good, 30, good[30]^1),
		"wrong-blocksize": append(otherBS[:], text...),
		"garbage-record":  append(pack(text), bytes.Repeat([]byte{0xA5}, 64)...),
		"zero-tail":       append(pack(text), make([]byte, 64)...),
		"short":           hdr[:20],
		"empty":           {},
	})
}

func writeCorpus(t *testing.T, target string, seeds map[string][]byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFuzzSeedsValid keeps the committed seeds honest: the valid ones must
// still decode and open, or the fuzzers would only explore error paths.
func TestFuzzSeedsValid(t *testing.T) {
	sealers := fuzzSealers(t)
	read := func(target, name string) []byte {
		body, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, name))
		if err != nil {
			t.Fatal(err)
		}
		quoted, ok := strings.CutPrefix(string(body), "go test fuzz v1\n[]byte(")
		if !ok {
			t.Fatalf("%s/%s: not a fuzz corpus file", target, name)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(quoted, ")\n"))
		if err != nil {
			t.Fatalf("%s/%s: %v", target, name, err)
		}
		return []byte(s)
	}
	for _, name := range []string{"seed-valid-zstd", "seed-valid-zstd-enc", "seed-valid-s2", "seed-valid-zero", "seed-valid-raw", "seed-valid-raw-enc"} {
		data := read("FuzzDecodeChunkRecord", name)
		fp, codec, sealed, n, err := decodeChunkRecord(data, fuzzBlockSize)
		if err != nil || n != len(data) {
			t.Fatalf("%s: n=%d of %d, %v", name, n, len(data), err)
		}
		s := sealers[codec&FlagEncrypted != 0]
		if _, err := s.open(nil, fp, codec, sealed); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, want := range map[string]int{"seed-valid": 5, "seed-valid-enc": 2} {
		var got int
		err := scanPack(bytes.NewReader(read("FuzzScanPack", name)), fuzzBlockSize, func(off int64, fp Fingerprint, codec uint8, sealed []byte) error {
			got++
			_, err := sealers[codec&FlagEncrypted != 0].open(nil, fp, codec, sealed)
			return err
		})
		if err != nil || got != want {
			t.Fatalf("%s: %d records, %v", name, got, err)
		}
	}
}
