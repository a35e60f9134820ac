package control

import (
	"bytes"
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
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
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
	mux.HandleFunc("GET /debug/pprof/{name}", s.serveProfile)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, wireError(fmt.Errorf("%s %s: %w (want POST /v1/OPERATION, GET /v1/ping or GET /debug/pprof/NAME)", r.Method, r.URL.Path, ErrUnknownOp)))
	})
	return mux
}

// maxProfileSeconds bounds a CPU profile or execution trace.
const maxProfileSeconds = 600

// serveProfile answers GET /debug/pprof/NAME with the daemon's runtime
// profile NAME in pprof's format: "profile" (CPU, for ?seconds=N, default
// 30), "trace" (execution trace, ?seconds=N, default 1), or a named
// profile (heap, allocs, goroutine, mutex, block, threadcreate; ?debug=N
// for text). The socket is the daemon's owner's alone (mode 0600), as for
// every control operation; each request is audited as debug.pprof.
func (s *Service) serveProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	secs, debug := 0, 0
	for _, q := range []struct {
		key string
		dst *int
	}{{"seconds", &secs}, {"debug", &debug}} {
		if v := r.URL.Query().Get(q.key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || (q.key == "seconds" && n > maxProfileSeconds) {
				writeError(w, wireError(fmt.Errorf("%s=%q: want a whole number from 0 to %d: %w", q.key, v, maxProfileSeconds, ErrBadRequest)))
				return
			}
			*q.dst = n
		}
	}
	var serve func() error
	switch name {
	case "profile", "trace":
		if secs == 0 {
			secs = 30
			if name == "trace" {
				secs = 1
			}
		}
		serve = func() error {
			return timedProfile(r.Context(), w, name, time.Duration(secs)*time.Second)
		}
	default:
		p := pprof.Lookup(name)
		if p == nil {
			serve = func() error {
				err := fmt.Errorf("no profile %q (profile, trace, %s): %w", name, profileNames(), ErrNoProfile)
				writeError(w, wireError(err))
				return err
			}
			break
		}
		serve = func() error {
			w.Header().Set("Content-Type", "application/octet-stream")
			if debug > 0 {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			}
			if name == "heap" && r.URL.Query().Get("gc") == "1" {
				runtime.GC()
			}
			return p.WriteTo(w, debug)
		}
	}
	who, _ := r.Context().Value(peerKey{}).(Peer)
	args, _ := json.Marshal(map[string]any{"profile": name, "seconds": secs})
	err := serve()
	if aerr := s.record("debug.pprof", args, "daemon", who, err, ""); aerr != nil {
		s.log.Error("control: audit", "err", aerr)
	}
	if err != nil {
		s.log.Warn("control: profile", "profile", name, "err", err)
	}
}

// timedProfile writes a CPU profile or an execution trace of d to w. Only
// one of each can run at a time in a process: a second is refused.
func timedProfile(ctx context.Context, w http.ResponseWriter, name string, d time.Duration) error {
	var buf bytes.Buffer
	var stop func()
	switch name {
	case "profile":
		if err := pprof.StartCPUProfile(&buf); err != nil {
			writeError(w, wireError(fmt.Errorf("CPU profile: %v: %w", err, ErrProfileBusy)))
			return err
		}
		stop = pprof.StopCPUProfile
	default:
		if err := trace.Start(&buf); err != nil {
			writeError(w, wireError(fmt.Errorf("trace: %v: %w", err, ErrProfileBusy)))
			return err
		}
		stop = trace.Stop
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	stop()
	if err := ctx.Err(); err != nil {
		return err // the caller went away
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(buf.Bytes())
	return err
}

// profileNames lists the runtime's named profiles.
func profileNames() string {
	var names []string
	for _, p := range pprof.Profiles() {
		names = append(names, p.Name())
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
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
