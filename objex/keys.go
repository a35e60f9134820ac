package objex

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// KeySource is what opens a target's key: a key file or a passphrase
// (exactly one). Neither is ever stored in the target or in logs.
type KeySource struct {
	// KeyFile is a file of at least 32 bytes (e.g. head -c 32 /dev/urandom).
	KeyFile string
	// Passphrase is stretched with argon2id.
	Passphrase []byte
	// Argon2 overrides the argon2id cost for new wrappings (tests); zero
	// fields are defaults.
	Argon2 Argon2Params
}

// Argon2Params is the argon2id cost; it is stored with the wrapped key.
type Argon2Params struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// Default argon2id cost for new passphrase wrappings: 3 passes over
// 64 MiB (about 0.2 s on one core), the parameters RFC 9106 suggests for
// memory-constrained uses.
var defaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

func (s KeySource) check() error {
	if (s.KeyFile == "") == (len(s.Passphrase) == 0) {
		return errors.New("objex: give exactly one of a key file and a passphrase")
	}
	return nil
}

// keyObject is the JSON stored at key "ox1/key": the target's master key,
// wrapped. Everything in it is public except what the wrapping hides.
type keyObject struct {
	Format   string        `json:"format"` // "dstore-ox-key"
	Version  int           `json:"version"`
	TargetID string        `json:"target_id"` // 32 hex digits
	KDF      string        `json:"kdf"`       // "argon2id" or "keyfile"
	Salt     []byte        `json:"salt"`
	Argon2   *Argon2Params `json:"argon2,omitempty"`
	Nonce    []byte        `json:"nonce"`
	Wrapped  []byte        `json:"wrapped"` // XChaCha20-Poly1305(KEK, MK)
}

const (
	keyObjectKey    = "ox1/key"
	keyObjectFormat = "dstore-ox-key"
)

// keys are the working keys derived from a target's master key.
type keys struct {
	targetID [16]byte
	id       [32]byte // keyed BLAKE3 of a block's plaintext: its chunk ID
	data     [32]byte // chunk records
	meta     [32]byte // index objects and manifests
}

func deriveKeys(targetID [16]byte, mk []byte) *keys {
	k := &keys{targetID: targetID}
	blake3.DeriveKey("dstore ox1 chunk id", mk, k.id[:])
	blake3.DeriveKey("dstore ox1 chunk record", mk, k.data[:])
	blake3.DeriveKey("dstore ox1 metadata", mk, k.meta[:])
	return k
}

// kek derives the key-encryption key from the source and the stored
// parameters.
func kek(src KeySource, ko *keyObject) ([]byte, error) {
	switch ko.KDF {
	case "keyfile":
		if src.KeyFile == "" {
			return nil, fmt.Errorf("this target's key is wrapped by a key file, not a passphrase: %w", ErrKey)
		}
		b, err := os.ReadFile(src.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("objex: key file: %w", err)
		}
		if len(b) < 32 {
			return nil, fmt.Errorf("objex: key file %s holds %d bytes, want at least 32", src.KeyFile, len(b))
		}
		h := blake3.NewDeriveKey("dstore ox1 key-file kek")
		h.Write(ko.Salt)
		h.Write(b)
		return h.Sum(nil), nil
	case "argon2id":
		if len(src.Passphrase) == 0 {
			return nil, fmt.Errorf("this target's key is wrapped by a passphrase, not a key file: %w", ErrKey)
		}
		p := ko.Argon2
		if p == nil || p.Time == 0 || p.Time > 100 || p.MemoryKiB < 8 || p.MemoryKiB > 4<<20 || p.Threads == 0 {
			return nil, fmt.Errorf("objex: key object: argon2id parameters out of range: %w", ErrCorrupt)
		}
		return argon2.IDKey(src.Passphrase, ko.Salt, p.Time, p.MemoryKiB, p.Threads, 32), nil
	default:
		return nil, fmt.Errorf("objex: key object: unknown kdf %q: %w", ko.KDF, ErrCorrupt)
	}
}

func wrapAD(targetID string) []byte { return []byte("dstore ox1 key wrap " + targetID) }

// wrapKey makes a key object holding mk wrapped under src.
func wrapKey(targetID [16]byte, mk []byte, src KeySource) (*keyObject, error) {
	if err := src.check(); err != nil {
		return nil, err
	}
	ko := &keyObject{Format: keyObjectFormat, Version: 1, TargetID: hex.EncodeToString(targetID[:]),
		Salt: make([]byte, 16), Nonce: make([]byte, chacha20poly1305.NonceSizeX)}
	rand.Read(ko.Salt)
	rand.Read(ko.Nonce)
	if src.KeyFile != "" {
		ko.KDF = "keyfile"
	} else {
		ko.KDF = "argon2id"
		p := defaultArgon2
		if src.Argon2.Time != 0 {
			p = src.Argon2
		}
		ko.Argon2 = &p
	}
	k, err := kek(src, ko)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	ko.Wrapped = aead.Seal(nil, ko.Nonce, mk, wrapAD(ko.TargetID))
	return ko, nil
}

// unwrapKey opens a key object with src and returns the target ID and the
// master key.
func unwrapKey(ko *keyObject, src KeySource) ([16]byte, []byte, error) {
	var id [16]byte
	if ko.Format != keyObjectFormat || ko.Version != 1 {
		return id, nil, fmt.Errorf("objex: key object format %q version %d: %w", ko.Format, ko.Version, ErrCorrupt)
	}
	raw, err := hex.DecodeString(ko.TargetID)
	if err != nil || len(raw) != 16 || len(ko.Nonce) != chacha20poly1305.NonceSizeX || len(ko.Salt) < 16 {
		return id, nil, fmt.Errorf("objex: key object malformed: %w", ErrCorrupt)
	}
	copy(id[:], raw)
	k, err := kek(src, ko)
	if err != nil {
		return id, nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return id, nil, err
	}
	mk, err := aead.Open(nil, ko.Nonce, ko.Wrapped, wrapAD(ko.TargetID))
	if err != nil || len(mk) != 32 {
		return id, nil, ErrKey
	}
	return id, mk, nil
}

// loadKeyObject reads and parses the target's key object.
func loadKeyObject(ctx context.Context, st ObjectStore) (*keyObject, error) {
	b, err := st.Get(ctx, keyObjectKey, 0, -1)
	if err != nil {
		return nil, err
	}
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("objex: key object of %d bytes: %w", len(b), ErrCorrupt)
	}
	var ko keyObject
	if err := json.Unmarshal(b, &ko); err != nil {
		return nil, fmt.Errorf("objex: key object: %v: %w", err, ErrCorrupt)
	}
	return &ko, nil
}

func putKeyObject(ctx context.Context, st ObjectStore, ko *keyObject) error {
	b, err := json.MarshalIndent(ko, "", "  ")
	if err != nil {
		return err
	}
	return st.Put(ctx, keyObjectKey, b)
}
