package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketFile is the control socket's name in the datastore directory.
const SocketFile = "control.sock"

// maxSocketPath is the longest path a unix socket can have on Linux
// (sun_path is 108 bytes with its terminating NUL).
const maxSocketPath = 107

// maxRequest bounds a request body.
const maxRequest = 1 << 20

// Server serves a Service on the datastore's control socket.
type Server struct {
	svc  *Service
	path string
	ln   *net.UnixListener
	http *http.Server
}

// Listen creates the control socket DIR/control.sock, mode 0600, for svc.
// A socket file left by a daemon that died (nothing answers on it) is
// replaced; one that answers means another daemon serves the datastore,
// and Listen fails. Call it while holding the datastore (after
// snapstore.Open), so that no other daemon can be starting.
func Listen(svc *Service) (*Server, error) {
	path := filepath.Join(svc.dir, SocketFile)
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: the path is %d bytes, longer than a unix socket allows (%d); use a shorter --data path", path, len(path), maxSocketPath)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The datastore directory is 0700 too; this keeps the socket private
	// even where it is not.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	s := &Server{svc: svc, path: path, ln: ln}
	s.http = &http.Server{
		Handler:           svc.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerOf(c, svc.log))
		},
		ErrorLog: slog.NewLogLogger(svc.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// clearStale removes a socket file nothing answers on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s exists and is not a socket; move it away", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another daemon answers on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	// Its daemon is gone (killed, or the machine crashed).
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket: removing the stale %s: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers requests until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, removes the socket, and waits for the
// requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

type peerKey struct{}

// peerOf returns the credentials of the process at the other end of a unix
// socket connection.
func peerOf(c net.Conn, log *slog.Logger) Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		log.Warn("control: peer credentials", "err", err)
		return Peer{}
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		cerr = err
	}
	if cerr != nil {
		log.Warn("control: peer credentials", "err", cerr)
		return Peer{}
	}
	return Peer{UID: int(cred.Uid), PID: int(cred.Pid), Known: true}
}

// wireErrorBody is the body of an error answer.
type wireErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Handler returns the HTTP handler of the control API: POST
// /v1/OPERATION and GET /v1/ping.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		body, err := json.Marshal(Ping{Version: s.version, Dir: s.dir, PID: os.Getpid()})
		if err != nil {
			writeError(w, wireError(err))
			return
		}
		writeBody(w, http.StatusOK, body)
	})
	mux.HandleFunc("POST /v1/{op}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err != nil {
			writeError(w, wireError(fmt.Errorf("reading the request: %v: %w", err, ErrBadRequest)))
			return
		}
		who, _ := r.Context().Value(peerKey{}).(Peer)
		out, werr := s.dispatch(r.Context(), who, r.PathValue("op"), body)
		if werr != nil {
			writeError(w, werr)
			return
		}
		writeBody(w, http.StatusOK, out)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, wireError(fmt.Errorf("%s %s: %w (want POST /v1/OPERATION or GET /v1/ping)", r.Method, r.URL.Path, ErrUnknownOp)))
	})
	return mux
}

func writeError(w http.ResponseWriter, e *Error) {
	body, err := json.Marshal(wireErrorBody{Error: e.Msg, Code: e.Code})
	if err != nil {
		body = []byte(`{"error":"encoding an error failed","code":"internal"}`)
	}
	writeBody(w, e.Status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The client sees a short body as an error; nothing more to do here.
	_, _ = w.Write(append(body, '\n'))
}
