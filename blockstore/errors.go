package blockstore

import (
	"errors"
	"syscall"
)

var (
	// ErrCorrupt marks data that failed verification: a chunk whose
	// fingerprint or AEAD tag does not match, or a malformed record. It is
	// never turned into zeros.
	ErrCorrupt = errors.New("blockstore: corrupt data")
	// ErrNoSpace marks a write that could not be made durable because the
	// file system is full. Nothing acknowledged before it is lost.
	ErrNoSpace = errors.New("blockstore: no space left on device")
	// ErrClosed is returned by operations on a closed store or log.
	ErrClosed = errors.New("blockstore: closed")
	// ErrNotFound is returned for a volume or layer that does not exist.
	ErrNotFound = errors.New("blockstore: not found")
	// ErrTooLarge is returned for an offset or size past MaxVolumeSize.
	ErrTooLarge = errors.New("blockstore: offset or size too large")
	// ErrFrozen is returned when a frozen layer is used where a writable
	// one is required, or released while it still has dependents.
	ErrFrozen = errors.New("blockstore: layer is frozen")
	// ErrInUse is returned when releasing a layer that is still referenced.
	ErrInUse = errors.New("blockstore: layer in use")
)

// noSpace wraps err with ErrNoSpace when it is ENOSPC (or EDQUOT), so callers
// can test errors.Is(err, ErrNoSpace) and still see the cause.
func noSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &wrapErr{kind: ErrNoSpace, err: err}
	}
	return err
}

type wrapErr struct {
	kind error
	err  error
}

func (e *wrapErr) Error() string   { return e.kind.Error() + ": " + e.err.Error() }
func (e *wrapErr) Unwrap() []error { return []error{e.kind, e.err} }
