package control

import (
	"context"
	"errors"
	"net/http"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/objex"
	"github.com/dstore/dstore/snapstore"
)

// Errors of the control API itself.
var (
	// ErrNoDaemon: no daemon answers on the datastore's control socket
	// (none is running, or it was killed and left its socket).
	ErrNoDaemon = errors.New("daemon not running")
	// ErrBadRequest: the arguments did not decode (a client and a daemon
	// of different versions).
	ErrBadRequest = errors.New("control: bad request")
	// ErrUnknownOp: the daemon does not know the operation.
	ErrUnknownOp = errors.New("control: unknown operation")
	// ErrDaemon: the daemon failed in a way that has no sentinel error.
	ErrDaemon = errors.New("control: operation failed")
	// ErrNoProfile: the runtime has no profile of that name.
	ErrNoProfile = errors.New("control: no such profile")
	// ErrProfileBusy: a CPU profile or trace is already being taken.
	ErrProfileBusy = errors.New("control: a profile of that kind is already being taken")
)

// wireErrors maps sentinel errors to their code and HTTP status, most
// specific first: an error is sent as the first entry it wraps.
var wireErrors = []struct {
	code   string
	status int
	err    error
}{
	{"no_group", http.StatusNotFound, snapstore.ErrNoGroup},
	{"no_snapshot", http.StatusNotFound, snapstore.ErrNoSnapshot},
	{"not_member", http.StatusNotFound, snapstore.ErrNotMember},
	{"no_members", http.StatusConflict, snapstore.ErrNoMembers},
	{"group_exists", http.StatusConflict, snapstore.ErrGroupExists},
	{"has_snapshots", http.StatusConflict, snapstore.ErrHasSnaps},
	{"not_exist", http.StatusNotFound, snapstore.ErrNotExist},
	{"exist", http.StatusConflict, snapstore.ErrExist},
	{"not_dir", http.StatusBadRequest, snapstore.ErrNotDir},
	{"is_dir", http.StatusBadRequest, snapstore.ErrIsDir},
	{"not_empty", http.StatusConflict, snapstore.ErrNotEmpty},
	{"name_too_long", http.StatusBadRequest, snapstore.ErrNameTooLong},
	{"stale", http.StatusNotFound, snapstore.ErrStale},
	{"not_supported", http.StatusNotImplemented, snapstore.ErrNotSupp},
	{"changed", http.StatusConflict, snapstore.ErrChanged},
	{"invalid", http.StatusBadRequest, snapstore.ErrInvalid},
	{"corrupt_namespace", http.StatusInternalServerError, snapstore.ErrCorrupt},
	{"no_space", http.StatusInsufficientStorage, blockstore.ErrNoSpace},
	{"corrupt", http.StatusInternalServerError, blockstore.ErrCorrupt},
	{"closed", http.StatusServiceUnavailable, blockstore.ErrClosed},
	{"not_found", http.StatusNotFound, blockstore.ErrNotFound},
	{"too_large", http.StatusBadRequest, blockstore.ErrTooLarge},
	{"frozen", http.StatusConflict, blockstore.ErrFrozen},
	{"in_use", http.StatusConflict, blockstore.ErrInUse},
	{"no_target", http.StatusNotFound, ErrNoTarget},
	{"no_profile", http.StatusNotFound, ErrNoProfile},
	{"profile_busy", http.StatusConflict, ErrProfileBusy},
	{"no_job", http.StatusNotFound, ErrNoJob},
	{"no_ox", http.StatusNotImplemented, ErrNoOX},
	{"wrong_key", http.StatusForbidden, objex.ErrKey},
	{"target_corrupt", http.StatusBadGateway, objex.ErrCorrupt},
	{"no_object", http.StatusNotFound, objex.ErrNotExist},
	{"bad_request", http.StatusBadRequest, ErrBadRequest},
	{"unknown_operation", http.StatusNotFound, ErrUnknownOp},
	{"canceled", http.StatusServiceUnavailable, context.Canceled},
	{"deadline", http.StatusGatewayTimeout, context.DeadlineExceeded},
}

// Error is an error as the control API carries it: its message and code.
// It unwraps to the sentinel error of its code (ErrDaemon for an error
// without one), so errors.Is sees the same sentinels on both sides of the
// socket.
type Error struct {
	Code   string
	Msg    string
	Status int

	sentinel error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.sentinel }

// wireError turns an error into its wire form.
func wireError(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	for _, w := range wireErrors {
		if errors.Is(err, w.err) {
			return &Error{Code: w.code, Msg: err.Error(), Status: w.status, sentinel: w.err}
		}
	}
	return &Error{Code: "internal", Msg: err.Error(), Status: http.StatusInternalServerError, sentinel: ErrDaemon}
}

// errorFromWire rebuilds an error from its code and message.
func errorFromWire(code, msg string, status int) *Error {
	for _, w := range wireErrors {
		if w.code == code {
			return &Error{Code: code, Msg: msg, Status: w.status, sentinel: w.err}
		}
	}
	return &Error{Code: code, Msg: msg, Status: status, sentinel: ErrDaemon}
}

// msgError is an error with a message of its own that still wraps a
// sentinel: "unknown group \"x\"" rather than the sentinel's text.
type msgError struct {
	msg string
	err error
}

func (e *msgError) Error() string { return e.msg }
func (e *msgError) Unwrap() error { return e.err }
