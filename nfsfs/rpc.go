package nfsfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstore/dstore/internal/coarse"
)

// ONC RPC version 2 (RFC 5531) over TCP with record marking.

// Wire constants of RFC 5531 (part of the wire format).
const (
	rpcVersion = 2

	msgCall  = 0
	msgReply = 1

	replyAccepted = 0
	replyDenied   = 1

	// lastFragment is the record-marking bit that ends a record; the other
	// 31 bits are the fragment's length.
	lastFragment = 1 << 31

	// maxAuthBody is the limit RFC 5531 puts on a credential's or a
	// verifier's body.
	maxAuthBody = 400
	// maxMachineName and maxAuthGIDs are AUTH_UNIX's limits (RFC 5531
	// appendix A).
	maxMachineName = 255
	maxAuthGIDs    = 16
)

// Authentication flavors (RFC 5531 section 8.2).
const (
	FlavorNone  = 0 // AUTH_NONE
	FlavorUnix  = 1 // AUTH_UNIX, also called AUTH_SYS
	FlavorShort = 2 // AUTH_SHORT
)

// AcceptStat is the status of an accepted call (RFC 5531 accept_stat).
type AcceptStat uint32

// The accept_stat values.
const (
	AcceptSuccess      AcceptStat = 0 // the results follow
	AcceptProgUnavail  AcceptStat = 1 // the program is not served here
	AcceptProgMismatch AcceptStat = 2 // the version is not; the range follows
	AcceptProcUnavail  AcceptStat = 3 // the procedure does not exist
	AcceptGarbageArgs  AcceptStat = 4 // the arguments (or header) did not decode
	AcceptSystemErr    AcceptStat = 5 // the server failed: an error or a panic
)

var acceptNames = [...]string{"SUCCESS", "PROG_UNAVAIL", "PROG_MISMATCH", "PROC_UNAVAIL", "GARBAGE_ARGS", "SYSTEM_ERR"}

func (s AcceptStat) String() string {
	if int(s) < len(acceptNames) {
		return acceptNames[s]
	}
	return fmt.Sprintf("accept_stat(%d)", uint32(s))
}

// RejectStat is the reason a call was denied (RFC 5531 reject_stat).
type RejectStat uint32

// The reject_stat values.
const (
	RejectRPCMismatch RejectStat = 0 // rpcvers was not 2; the range follows
	RejectAuthError   RejectStat = 1 // authentication failed; an AuthStat follows
)

func (s RejectStat) String() string {
	switch s {
	case RejectRPCMismatch:
		return "RPC_MISMATCH"
	case RejectAuthError:
		return "AUTH_ERROR"
	}
	return fmt.Sprintf("reject_stat(%d)", uint32(s))
}

// AuthStat says why authentication failed (RFC 5531 auth_stat).
type AuthStat uint32

// The auth_stat values a server sends.
const (
	AuthOK           AuthStat = 0
	AuthBadCred      AuthStat = 1 // the credential is malformed
	AuthRejectedCred AuthStat = 2 // the client must begin a new session
	AuthBadVerf      AuthStat = 3 // the verifier is malformed
	AuthRejectedVerf AuthStat = 4 // the verifier expired or was replayed
	AuthTooWeak      AuthStat = 5 // refused by policy (e.g. flavor, port)
	AuthInvalidResp  AuthStat = 6
	AuthFailed       AuthStat = 7
)

var authNames = [...]string{"AUTH_OK", "AUTH_BADCRED", "AUTH_REJECTEDCRED", "AUTH_BADVERF", "AUTH_REJECTEDVERF", "AUTH_TOOWEAK", "AUTH_INVALIDRESP", "AUTH_FAILED"}

func (s AuthStat) String() string {
	if int(s) < len(authNames) {
		return authNames[s]
	}
	return fmt.Sprintf("auth_stat(%d)", uint32(s))
}

// AuthError is what a Program's Serve returns to deny a call: the reply is
// MSG_DENIED, AUTH_ERROR, with Stat.
type AuthError struct{ Stat AuthStat }

func (e *AuthError) Error() string { return "nfsfs: rpc: authentication failed: " + e.Stat.String() }

// AuthUnix is an AUTH_UNIX (AUTH_SYS) credential. Nothing in it is proved:
// it is what the client says, to be trusted as far as access control (the
// source address and port) allows.
type AuthUnix struct {
	Stamp   uint32
	Machine string
	UID     uint32
	GID     uint32
	GIDs    []uint32
}

// encode appends the credential body.
func (a *AuthUnix) encode(w *XDRWriter) {
	w.Uint32(a.Stamp)
	w.String(a.Machine)
	w.Uint32(a.UID)
	w.Uint32(a.GID)
	w.Uint32(uint32(len(a.GIDs)))
	for _, g := range a.GIDs {
		w.Uint32(g)
	}
}

// decodeAuthUnix parses a credential body into a, with the group list in
// gids. The body's length is its own (RFC 5531 opaque_auth), so anything
// left over means the credential is malformed, as is a machine name over 255
// bytes or more than 16 groups. machine, when not nil, keeps the last name
// seen so the common case (one client, one name) does not allocate.
func decodeAuthUnix(body []byte, a *AuthUnix, gids *[maxAuthGIDs]uint32, machine *atomic.Pointer[string]) bool {
	r := XDRReader{buf: body}
	a.Stamp = r.Uint32()
	name := r.Opaque(maxMachineName)
	a.UID = r.Uint32()
	a.GID = r.Uint32()
	n := r.Uint32()
	if r.err != nil || n > maxAuthGIDs {
		return false
	}
	for i := range n {
		gids[i] = r.Uint32()
	}
	if r.DoneExact() != nil {
		return false
	}
	a.GIDs = gids[:n:n]
	if machine != nil {
		if p := machine.Load(); p != nil && *p == string(name) {
			a.Machine = *p
			return true
		}
		s := string(name)
		machine.Store(&s)
		a.Machine = s
		return true
	}
	a.Machine = string(name)
	return true
}

// Call is one decoded call, as a Program's Serve sees it. It and everything
// reached through it (Args, Unix, and slices Args returned) are valid only
// until Serve returns (R4 in doc.go): their storage is reused.
type Call struct {
	XID, Prog, Vers, Proc uint32
	Flavor                uint32    // the credential's flavor: FlavorNone, FlavorUnix or another
	Unix                  *AuthUnix // the credential when Flavor is FlavorUnix, else nil
	Args                  *XDRReader
	Remote                netip.AddrPort
	Local                 netip.AddrPort
}

// A Program serves versions [Low, High] of one RPC program.
type Program struct {
	Prog, Low, High uint32
	// Name labels log lines.
	Name string
	// Serve writes the procedure's results to w and returns an
	// accept_stat: AcceptSuccess, AcceptProcUnavail, AcceptGarbageArgs or
	// AcceptSystemErr (what it wrote is discarded unless it returns
	// AcceptSuccess). It may instead return an *AuthError to deny the call,
	// or another error, which becomes SYSTEM_ERR and a log line. The server
	// has checked the program and version; Serve checks the procedure, and
	// the flavor (Call.Flavor may be anything for procedure 0, NULL).
	Serve func(ctx context.Context, c *Call, w *XDRWriter) (AcceptStat, error)
	// NonIdempotent reports which procedures go through the duplicate
	// request cache; nil means none.
	NonIdempotent func(vers, proc uint32) bool
}

// ServerOptions configure a Server; zero values take the defaults.
type ServerOptions struct {
	Logger *slog.Logger // default slog.Default()
	// MaxRecord caps a request record, all fragments together. Default
	// 1 MiB + 64 KiB: an NFS WRITE of wtmax (1 MiB) plus its headers.
	MaxRecord int
	// Workers bounds the handlers running at once, over all connections.
	// Default 64.
	Workers int
	// MaxInFlight bounds the calls of one connection that have been read
	// and not yet answered; at the cap the connection is not read
	// (backpressure). Default 256: ESXi keeps hundreds outstanding.
	MaxInFlight int
	// MaxReadBytes bounds the bytes of request records read and not yet
	// handled, over all connections (R8); at the cap no connection reads
	// a new record until a handler is done with one. Default 16 MiB:
	// enough to keep every worker busy with 256 KiB writes, and what
	// keeps a stream of 1 MiB writes, each waiting for room in the
	// store's log, from holding hundreds of MiB of request buffers.
	MaxReadBytes int
	// IdleTimeout closes a connection with no calls outstanding and no
	// bytes sent either way for that long. Default 5 min; negative
	// disables it.
	IdleTimeout time.Duration
	// WriteTimeout bounds one write of replies; a client that does not
	// read for that long is disconnected so it cannot hold a writer (and
	// through it its calls' memory) forever. Default 30 s.
	WriteTimeout time.Duration
	// Accept filters connections by source (access control); a refused
	// connection is closed at once, with a log line. Nil accepts all.
	Accept func(remote netip.AddrPort) bool
	// DRCEntries and DRCMaxAge bound the duplicate request cache. Defaults
	// 4096 entries and 120 s.
	DRCEntries int
	DRCMaxAge  time.Duration
}

// Defaults of ServerOptions.
const (
	DefaultMaxRecord    = 1<<20 + 64<<10
	DefaultWorkers      = 64
	DefaultMaxInFlight  = 256
	DefaultMaxReadBytes = 16 << 20
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 30 * time.Second
	// maxFragment is what record marking can express.
	maxFragment = 1<<31 - 1
)

// Server is an ONC RPC server over TCP: it frames records, decodes call
// headers, checks programs, versions and credentials, runs the registered
// Programs on a bounded worker pool and writes their replies.
type Server struct {
	opts ServerOptions
	log  *slog.Logger
	drc  *drc

	progs atomic.Pointer[map[uint32]*Program] // replaced whole by Register

	// Workers (R2): at most opts.Workers goroutines, started as calls
	// need them and kept until shutdown, each running one call at a time.
	// Kept, not spawned per call, so their stacks stay grown.
	jobs     chan job // unbuffered: a send succeeds when a worker takes it
	nworkers atomic.Int32
	done     chan struct{} // closed when Shutdown returns: workers exit
	doneOnce sync.Once

	ctx    context.Context // handlers' context; cancelled by a forced shutdown
	cancel context.CancelFunc
	kill   chan struct{} // closed by a forced shutdown: stop waiting for anything
	reads  readBudget    // request bytes read and not yet handled (R8)

	regMu    sync.Mutex     // serializes Register
	connWG   sync.WaitGroup // connections being served
	killOnce sync.Once

	mu        sync.Mutex // guards closing, listeners and conns
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
}

// NewServer returns a server with no programs.
func NewServer(o ServerOptions) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxRecord <= 0 {
		o.MaxRecord = DefaultMaxRecord
	}
	o.MaxRecord = min(o.MaxRecord, maxFragment)
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxReadBytes <= 0 {
		o.MaxReadBytes = DefaultMaxReadBytes
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.DRCEntries <= 0 {
		o.DRCEntries = defaultDRCEntries
	}
	if o.DRCMaxAge <= 0 {
		o.DRCMaxAge = defaultDRCMaxAge
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:      o,
		log:       o.Logger,
		drc:       newDRC(o.DRCEntries, defaultDRCBytes, o.DRCMaxAge, time.Now),
		jobs:      make(chan job),
		done:      make(chan struct{}),
		ctx:       ctx,
		cancel:    cancel,
		kill:      make(chan struct{}),
		reads:     readBudget{max: int64(o.MaxReadBytes)},
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.progs.Store(&map[uint32]*Program{})
	return s
}

// Register adds a program. It may be called while the server runs. It
// panics on a malformed Program or a second one for the same program number:
// both are wiring mistakes.
func (s *Server) Register(p *Program) {
	if p == nil || p.Serve == nil || p.Low > p.High {
		panic("nfsfs: Register: malformed Program")
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	old := *s.progs.Load()
	if _, dup := old[p.Prog]; dup {
		panic(fmt.Sprintf("nfsfs: Register: program %d registered twice", p.Prog))
	}
	m := make(map[uint32]*Program, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[p.Prog] = p
	s.progs.Store(&m)
}

// Serve accepts connections on l until Shutdown, and then returns nil;
// otherwise it returns the listener's error. It may run on several listeners
// at once (NFS and PORTMAP, say); Shutdown closes them all.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			// Out of file descriptors and the like pass; wait instead of
			// spinning, as net/http does.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("nfsfs: rpc accept failed; retrying", "listener", l.Addr(), "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
				case <-s.kill:
				}
				continue
			}
			return err
		}
		backoff = 0
		remote := addrPort(nc.RemoteAddr())
		if s.opts.Accept != nil && !s.opts.Accept(remote) {
			s.log.Warn("nfsfs: rpc connection refused by access control", "remote", remote, "local", nc.LocalAddr())
			nc.Close()
			continue
		}
		if !s.track(nil) {
			nc.Close()
			continue
		}
		go s.serveConn(nc)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// track counts a connection about to be served; false once shutting down.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	if c == nil {
		s.connWG.Add(1)
	} else {
		s.conns[c] = struct{}{}
	}
	return true
}

// Shutdown stops accepting connections and reading calls, lets the calls
// already read finish and their replies go out, then closes the
// connections. If ctx ends first it closes everything at once, cancels the
// handlers' context and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		s.doneOnce.Do(func() { close(s.done) })
		return nil
	case <-ctx.Done():
		s.forceClose()
		s.doneOnce.Do(func() { close(s.done) })
		return ctx.Err()
	}
}

// Close shuts the server down without waiting for anything.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
	return nil
}

func (s *Server) forceClose() {
	s.killOnce.Do(func() {
		close(s.kill)
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
	})
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return netip.AddrPort{}
}

// conn is one client connection: a reader goroutine (this one), handlers on
// the server's workers, and a writer goroutine.
type conn struct {
	s             *Server
	nc            net.Conn
	remote, local netip.AddrPort
	src           timedReader
	br            *bufio.Reader
	hdr           [4]byte

	// inflight holds a token per call read and not yet answered (R1); the
	// writer returns it after the reply is written.
	inflight chan struct{}
	// replies carries finished replies to the writer. Its capacity is
	// MaxInFlight, so a handler never blocks handing one over.
	replies chan *reply
	calls   sync.WaitGroup // handlers not yet done with their reply
	machine atomic.Pointer[string]
	bufs    net.Buffers // writer only
	wv      net.Buffers // writer only
	wdl     int64       // writer only: the write deadline set (unix ns)
	// lastWrite is when replies were last written (Unix nanoseconds, by
	// the coarse clock): a reply is activity too, for the idle timeout.
	lastWrite atomic.Int64

	// closing is set, under mu, by Shutdown; mu orders it with the read
	// deadline so the reader never re-arms a deadline Shutdown cut short.
	mu      sync.Mutex
	closing atomic.Bool
}

// timedReader remembers when bytes last arrived, which is what the idle
// timeout measures.
type timedReader struct {
	nc   net.Conn
	last int64 // unix ns (coarse clock) of the last byte read
}

func (t *timedReader) Read(p []byte) (int, error) {
	n, err := t.nc.Read(p)
	if n > 0 {
		t.last = coarse.UnixNano()
	}
	return n, err
}

var errRecordTooLarge = errors.New("nfsfs: rpc record too large")

func (s *Server) serveConn(nc net.Conn) {
	defer s.connWG.Done()
	c := &conn{
		s:        s,
		nc:       nc,
		remote:   addrPort(nc.RemoteAddr()),
		local:    addrPort(nc.LocalAddr()),
		inflight: make(chan struct{}, s.opts.MaxInFlight),
		replies:  make(chan *reply, s.opts.MaxInFlight),
	}
	c.src = timedReader{nc: nc, last: coarse.UnixNano()}
	c.br = bufio.NewReaderSize(&c.src, 64<<10)
	if !s.track(c) {
		nc.Close()
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()

	graceful := c.readLoop()
	c.calls.Wait()
	close(c.replies)
	<-writerDone
	if graceful {
		c.lingerClose()
	} else {
		nc.Close()
	}
}

// readLoop reads records and dispatches them until the stream ends or must
// be dropped. It reports whether the connection may be closed gracefully.
func (c *conn) readLoop() bool {
	s := c.s
	if s.opts.IdleTimeout > 0 {
		c.mu.Lock()
		if !c.closing.Load() {
			c.nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		}
		c.mu.Unlock()
	}
	for {
		rec, err := c.readRecord()
		if err != nil {
			graceful := true
			switch {
			case errors.Is(err, errRecordTooLarge):
				// The rest of the record cannot be skipped safely (its
				// length may be a lie), so the stream cannot be
				// resynchronized: drop this connection only (R5).
				s.log.Warn("nfsfs: rpc record over the size limit; closing connection", "remote", c.remote, "err", err, "max", s.opts.MaxRecord)
			case errors.Is(err, errIdle):
				s.log.Info("nfsfs: rpc connection idle; closing", "remote", c.remote, "idle", s.opts.IdleTimeout)
			case errors.Is(err, io.EOF) || c.isClosing():
			case errors.Is(err, io.ErrUnexpectedEOF):
				s.log.Debug("nfsfs: rpc connection closed inside a record", "remote", c.remote)
			default:
				s.log.Debug("nfsfs: rpc connection read failed", "remote", c.remote, "err", err)
				graceful = false
			}
			return graceful
		}
		select {
		case c.inflight <- struct{}{}:
		case <-s.kill:
			s.freeRecord(rec)
			return false
		}
		if c.isClosing() {
			<-c.inflight
			s.freeRecord(rec)
			return true
		}
		c.calls.Add(1)
		if !s.dispatch(job{c, rec}) {
			c.calls.Done()
			<-c.inflight
			s.freeRecord(rec)
			return false
		}
	}
}

// job is a call for a worker.
type job struct {
	c   *conn
	rec *record
}

// dispatch hands j to an idle worker, or starts one while fewer than
// Workers run, or waits for one (which blocks the connection's reader:
// backpressure). It returns false if the server is killed meanwhile.
func (s *Server) dispatch(j job) bool {
	select {
	case s.jobs <- j:
		return true
	default:
	}
	if s.nworkers.Add(1) <= int32(s.opts.Workers) {
		go s.worker(j)
		return true
	}
	s.nworkers.Add(-1)
	select {
	case s.jobs <- j:
		return true
	case <-s.kill:
		return false
	}
}

func (s *Server) worker(j job) {
	for {
		j.c.handle(j.rec)
		select {
		case j = <-s.jobs:
		case <-s.done:
			s.nworkers.Add(-1)
			return
		}
	}
}

func (c *conn) isClosing() bool { return c.closing.Load() }

// stopReading makes the reader stop at once (Shutdown); calls already read
// still run and are answered.
func (c *conn) stopReading() {
	c.mu.Lock()
	c.closing.Store(true)
	c.nc.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

var errIdle = errors.New("nfsfs: rpc connection idle")

// readRecord reads one record, all its fragments, into a pooled buffer,
// charging its bytes to the server's read budget first (R8): a record
// whose first fragment is over the budget waits, unread, in the socket.
func (c *conn) readRecord() (*record, error) {
	var rec *record
	charged := 0
	fail := func(err error) (*record, error) {
		if rec != nil {
			putRecord(rec)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
		}
		c.s.reads.release(charged)
		return nil, err
	}
	for {
		if err := c.readFull(c.hdr[:]); err != nil {
			return fail(err)
		}
		mark := binary.BigEndian.Uint32(c.hdr[:])
		n := int(mark &^ lastFragment)
		have := 0
		if rec != nil {
			have = len(rec.b)
		}
		if n > c.s.opts.MaxRecord-have {
			return fail(fmt.Errorf("%w: fragment of %d bytes after %d", errRecordTooLarge, n, have))
		}
		// Only a record's first fragment waits for the budget: a
		// record under way could otherwise wait for itself, or for
		// another connection's, which waits for it.
		if rec == nil {
			if err := c.s.reads.acquire(n, c.s.kill); err != nil {
				return fail(err)
			}
		} else {
			c.s.reads.force(n)
		}
		charged += n
		if rec == nil {
			rec = getRecord(n)
		} else {
			rec.grow(n)
		}
		if err := c.readFull(rec.b[have : have+n]); err != nil {
			return fail(err)
		}
		if mark&lastFragment != 0 {
			rec.charged = charged
			return rec, nil
		}
	}
}

// freeRecord returns a record read by readRecord: its bytes to the read
// budget, its buffer to the pool.
func (s *Server) freeRecord(rec *record) {
	s.reads.release(rec.charged)
	rec.charged = 0
	putRecord(rec)
}

// readBudget counts the request bytes read and not yet handled, over all
// connections (R8).
type readBudget struct {
	mu   sync.Mutex
	used int64
	max  int64
	wake chan struct{} // closed by release; nil when no one waits
}

var errShutdown = errors.New("nfsfs: server shut down")

// acquire charges n bytes, waiting while the budget is spent. A record
// larger than the whole budget is let through when nothing else is
// charged, so that it cannot wait forever. It fails only when kill is
// closed.
func (b *readBudget) acquire(n int, kill <-chan struct{}) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+int64(n) <= b.max {
			b.used += int64(n)
			b.mu.Unlock()
			return nil
		}
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-kill:
			return errShutdown
		}
	}
}

// force charges n bytes without waiting.
func (b *readBudget) force(n int) {
	b.mu.Lock()
	b.used += int64(n)
	b.mu.Unlock()
}

func (b *readBudget) release(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= int64(n)
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}

// readFull fills p, riding out read deadlines while the connection is not
// idle: the deadline is only a periodic check, so a busy connection never
// pays for resetting it per record.
func (c *conn) readFull(p []byte) error {
	for len(p) > 0 {
		n, err := c.br.Read(p)
		p = p[n:]
		if err == nil || len(p) == 0 {
			continue
		}
		if !isTimeout(err) {
			return err
		}
		if err := c.rearm(); err != nil {
			return err
		}
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rearm decides, after a read deadline passed, whether to keep waiting:
// yes while calls are outstanding (the client waits for us) or bytes went
// either way recently; no when shutting down or idle.
func (c *conn) rearm() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() {
		return net.ErrClosed
	}
	idle := c.s.opts.IdleTimeout
	if idle <= 0 {
		// Only a stray deadline (there are none without an idle timeout).
		c.nc.SetReadDeadline(time.Time{})
		return nil
	}
	if len(c.inflight) > 0 {
		c.nc.SetReadDeadline(time.Now().Add(idle))
		return nil
	}
	last := max(c.src.last, c.lastWrite.Load())
	if coarse.UnixNano()-last < int64(idle) {
		c.nc.SetReadDeadline(time.Unix(0, last).Add(idle))
		return nil
	}
	return errIdle
}

// lingerClose ends a connection whose replies have all been written: send
// FIN first and drain what the client still sends for a moment, because
// closing with unread bytes makes the kernel send RST, which can destroy
// replies the client has not read yet.
func (c *conn) lingerClose() {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		if tc.CloseWrite() == nil {
			c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			io.Copy(io.Discard, io.LimitReader(c.nc, 1<<20))
		}
	}
	c.nc.Close()
}

// handle runs one call, on a worker, and hands its reply to the writer.
func (c *conn) handle(rec *record) {
	s := c.s
	cs := callPool.Get().(*callState)
	r := getReply()
	cached, send := s.process(s.ctx, rec.b, c.remote, c.local, cs, &r.w, &c.machine)
	cs.reset()
	callPool.Put(cs)
	s.freeRecord(rec)
	if !send {
		putReply(r)
		<-c.inflight
		c.calls.Done()
		return
	}
	r.cached = cached
	c.replies <- r
	c.calls.Done()
}

// writeLoop writes replies in completion order (R3), several per system
// call when they queue up, until replies is closed. After a write error it
// keeps receiving so handlers and the in-flight count are released.
func (c *conn) writeLoop() {
	s := c.s
	var (
		batch  []*reply
		broken bool
	)
	for r := range c.replies {
		batch = append(batch[:0], r)
	more:
		for len(batch) < 64 {
			select {
			case r, ok := <-c.replies:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		if !broken {
			select {
			case <-s.kill:
				broken = true
			default:
			}
		}
		if !broken {
			c.bufs = c.bufs[:0]
			for _, r := range batch {
				c.bufs = append(c.bufs, r.bytes())
			}
			// WriteTo consumes its receiver; c.wv keeps c.bufs for reuse.
			c.wv = c.bufs
			// The deadline is moved only once it has come a quarter of
			// the timeout nearer, by the coarse clock: setting it costs
			// a clock read and a timer update, on every batch of replies.
			now := coarse.UnixNano()
			if wt := int64(s.opts.WriteTimeout); c.wdl-now < wt*3/4 {
				c.wdl = now + wt
				c.nc.SetWriteDeadline(time.Unix(0, c.wdl))
			}
			_, err := c.wv.WriteTo(c.nc)
			c.lastWrite.Store(coarse.UnixNano())
			if err != nil {
				broken = true
				s.log.Warn("nfsfs: rpc reply write failed; closing connection", "remote", c.remote, "err", err)
				// Wakes the reader, which then stops.
				c.nc.Close()
			}
		}
		for i, r := range batch {
			putReply(r)
			batch[i] = nil
			<-c.inflight
		}
	}
}

// callState is the per-call storage behind a Call, pooled.
type callState struct {
	call Call
	unix AuthUnix
	gids [maxAuthGIDs]uint32
	args XDRReader
}

func (cs *callState) reset() { *cs = callState{} }

var callPool = sync.Pool{New: func() any { return new(callState) }}

// reply is one reply record on its way to the writer: either encoded in w
// (starting with its record mark) or a cached record from the DRC.
type reply struct {
	w      XDRWriter
	cached []byte
}

func (r *reply) bytes() []byte {
	if r.cached != nil {
		return r.cached
	}
	return r.w.buf
}

var replyPool = sync.Pool{New: func() any { return &reply{w: XDRWriter{buf: make([]byte, 0, 512)}} }}

func getReply() *reply { return replyPool.Get().(*reply) }

// maxPooledReply keeps a burst of large READ replies from pinning memory.
const maxPooledReply = 2 << 20

func putReply(r *reply) {
	r.cached = nil
	if cap(r.w.buf) > maxPooledReply {
		return
	}
	r.w.buf = r.w.buf[:0]
	replyPool.Put(r)
}

// record is a request record's bytes. Buffers come from pools by power of
// two sizes, so a stream of 4 KiB writes does not hold 1 MiB buffers.
type record struct {
	b       []byte
	class   int
	charged int // bytes charged to the read budget (readRecord)
}

const (
	minRecordClass = 9  // 512 bytes
	maxRecordClass = 22 // 4 MiB; larger records are not pooled
)

var recordPools [maxRecordClass + 1]sync.Pool

func recordClass(n int) int {
	c := minRecordClass
	for c <= maxRecordClass && 1<<c < n {
		c++
	}
	return c
}

func getRecord(n int) *record {
	c := recordClass(n)
	if c <= maxRecordClass {
		if r, ok := recordPools[c].Get().(*record); ok {
			r.b = r.b[:n]
			return r
		}
		return &record{b: make([]byte, n, 1<<c), class: c}
	}
	return &record{b: make([]byte, n), class: c}
}

// grow extends the record by n bytes for the next fragment.
func (r *record) grow(n int) {
	have := len(r.b)
	if have+n <= cap(r.b) {
		r.b = r.b[:have+n]
		return
	}
	nr := getRecord(have + n)
	copy(nr.b, r.b)
	r.b, nr.b = nr.b, r.b
	r.class, nr.class = nr.class, r.class
	putRecord(nr)
}

func putRecord(r *record) {
	if r.class <= maxRecordClass && cap(r.b) == 1<<r.class {
		r.b = r.b[:0]
		recordPools[r.class].Put(r)
	}
}

// process decodes one call record, runs it and encodes its reply record
// (record mark included) into w. It returns send=false for a call that gets
// no reply (an undecodable xid, a reply message, a retransmission of a call
// still running), and cached, non-nil, when the duplicate request cache
// answers. It is the whole of a call's handling but the I/O, which is what
// the fuzz target drives.
func (s *Server) process(ctx context.Context, rec []byte, remote, local netip.AddrPort, cs *callState, w *XDRWriter, machine *atomic.Pointer[string]) (cached []byte, send bool) {
	r := XDRReader{buf: rec}
	xid := r.Uint32()
	if r.err != nil {
		s.log.Debug("nfsfs: rpc record too short for an xid; dropped", "remote", remote, "len", len(rec))
		return nil, false
	}
	mtype := r.Uint32()
	if r.err == nil && mtype == msgReply {
		// Only a confused peer sends us replies; answering would make two
		// confused peers.
		return nil, false
	}
	rpcvers := r.Uint32()
	if r.err != nil || mtype != msgCall {
		s.log.Debug("nfsfs: rpc malformed call header", "remote", remote, "xid", xid)
		acceptedHeader(w, xid, AcceptGarbageArgs)
		return nil, true
	}
	if rpcvers != rpcVersion {
		deniedHeader(w, xid, RejectRPCMismatch)
		w.Uint32(rpcVersion)
		w.Uint32(rpcVersion)
		finishRecord(w)
		return nil, true
	}
	c := &cs.call
	c.XID = xid
	c.Prog = r.Uint32()
	c.Vers = r.Uint32()
	c.Proc = r.Uint32()
	c.Flavor = r.Uint32()
	cred := r.Opaque(maxAuthBody)
	verfFlavor := r.Uint32()
	r.Opaque(maxAuthBody)
	if r.err != nil {
		s.log.Debug("nfsfs: rpc malformed call header", "remote", remote, "xid", xid, "err", r.err)
		acceptedHeader(w, xid, AcceptGarbageArgs)
		return nil, true
	}
	c.Remote, c.Local = remote, local

	// Authentication. AUTH_NONE and AUTH_UNIX are understood; other
	// flavors reach only NULL (procedure 0), which clients send to probe a
	// server before they settle on a flavor. Programs decide which flavor
	// each procedure needs.
	switch c.Flavor {
	case FlavorNone:
	case FlavorUnix:
		if !decodeAuthUnix(cred, &cs.unix, &cs.gids, machine) {
			s.log.Debug("nfsfs: rpc malformed AUTH_UNIX credential", "remote", remote, "xid", xid)
			return nil, deny(w, xid, AuthBadCred)
		}
		c.Unix = &cs.unix
	default:
		if c.Proc != 0 {
			return nil, deny(w, xid, AuthBadCred)
		}
	}
	if (c.Flavor == FlavorNone || c.Flavor == FlavorUnix) && verfFlavor != FlavorNone {
		return nil, deny(w, xid, AuthBadVerf)
	}

	p := (*s.progs.Load())[c.Prog]
	if p == nil {
		acceptedHeader(w, xid, AcceptProgUnavail)
		return nil, true
	}
	if c.Vers < p.Low || c.Vers > p.High {
		off := writeAcceptedPrefix(w, xid)
		w.PutUint32At(off, uint32(AcceptProgMismatch))
		w.Uint32(p.Low)
		w.Uint32(p.High)
		finishRecord(w)
		return nil, true
	}
	cs.args.buf = r.buf[r.off:]
	c.Args = &cs.args

	var entry *drcEntry
	if s.nonIdempotent(p, c) {
		key := drcKeyOf(c, cs.args.buf)
		var hit []byte
		var state drcState
		entry, hit, state = s.drc.begin(key)
		switch state {
		case drcInProgress:
			// The first copy's reply is coming; answering twice would
			// confuse nothing, but running twice would.
			return nil, false
		case drcDone:
			return hit, true
		}
	}

	s.serve(ctx, p, c, w)
	if entry != nil {
		s.drc.finish(entry, w.buf)
	}
	return nil, true
}

// nonIdempotent asks the program whether the call goes through the DRC.
// Program code may panic; a worker must not die of it.
func (s *Server) nonIdempotent(p *Program, c *Call) (yes bool) {
	if p.NonIdempotent == nil {
		return false
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("nfsfs: rpc NonIdempotent panicked", "prog", c.Prog, "vers", c.Vers, "proc", c.Proc, "panic", v, "stack", string(debug.Stack()))
			yes = false
		}
	}()
	return p.NonIdempotent(c.Vers, c.Proc)
}

// serve runs the program's handler and encodes the reply, turning errors
// and panics into SYSTEM_ERR (R7).
func (s *Server) serve(ctx context.Context, p *Program, c *Call, w *XDRWriter) {
	start := w.Len()
	statOff := writeAcceptedPrefix(w, c.XID)
	body := w.Len()
	var header [acceptedPrefixLen]byte
	copy(header[:], w.buf[start:body])
	stat, err := func() (stat AcceptStat, err error) {
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("nfsfs: rpc handler panicked", "program", p.Name, "prog", c.Prog, "vers", c.Vers, "proc", c.Proc, "xid", c.XID,
					"remote", c.Remote, "panic", v, "stack", string(debug.Stack()))
				stat, err = AcceptSystemErr, nil
			}
		}()
		return p.Serve(ctx, c, w)
	}()
	if w.Len() < body || !bytes.Equal(w.buf[start:body], header[:]) {
		// The handler truncated into the header or wrote over it: a
		// reply with another xid or a torn mark would derail the
		// client, so the header is written again, over a SYSTEM_ERR.
		w.Truncate(start)
		statOff = writeAcceptedPrefix(w, c.XID)
		stat, err = AcceptSystemErr, errors.New("handler overwrote the reply header")
	}
	if err != nil {
		var ae *AuthError
		if errors.As(err, &ae) && ae.Stat != AuthOK {
			w.Truncate(start)
			deny(w, c.XID, ae.Stat)
			return
		}
		s.log.Error("nfsfs: rpc handler failed", "program", p.Name, "prog", c.Prog, "vers", c.Vers, "proc", c.Proc, "xid", c.XID, "remote", c.Remote, "err", err)
		stat = AcceptSystemErr
	}
	switch stat {
	case AcceptSuccess:
	case AcceptProcUnavail, AcceptGarbageArgs, AcceptSystemErr, AcceptProgUnavail:
		w.Truncate(body)
	case AcceptProgMismatch:
		w.Truncate(body)
		w.Uint32(p.Low)
		w.Uint32(p.High)
	default:
		s.log.Error("nfsfs: rpc handler returned an unknown accept_stat", "program", p.Name, "prog", c.Prog, "proc", c.Proc, "stat", uint32(stat))
		stat = AcceptSystemErr
		w.Truncate(body)
	}
	w.PutUint32At(statOff, uint32(stat))
	finishRecord(w)
}

// acceptedPrefixLen is what writeAcceptedPrefix writes: record mark, xid,
// msg_type, reply_stat, verifier (flavor, length) and accept_stat.
const acceptedPrefixLen = 7 * 4

// writeAcceptedPrefix starts a record with an accepted reply up to
// accept_stat, whose offset it returns. The record mark is filled by
// finishRecord.
func writeAcceptedPrefix(w *XDRWriter, xid uint32) int {
	w.Reserve() // record mark
	w.Uint32(xid)
	w.Uint32(msgReply)
	w.Uint32(replyAccepted)
	w.Uint32(FlavorNone) // verifier: AUTH_NONE, empty
	w.Uint32(0)
	return w.Reserve()
}

// acceptedHeader writes a complete accepted reply with no results.
func acceptedHeader(w *XDRWriter, xid uint32, stat AcceptStat) {
	w.Truncate(0)
	off := writeAcceptedPrefix(w, xid)
	w.PutUint32At(off, uint32(stat))
	finishRecord(w)
}

// deniedHeader starts a denied reply; the caller appends the reject body and
// calls finishRecord.
func deniedHeader(w *XDRWriter, xid uint32, stat RejectStat) {
	w.Truncate(0)
	w.Reserve() // record mark
	w.Uint32(xid)
	w.Uint32(msgReply)
	w.Uint32(replyDenied)
	w.Uint32(uint32(stat))
}

// deny writes a complete AUTH_ERROR reply; it returns true (send it).
func deny(w *XDRWriter, xid uint32, stat AuthStat) bool {
	deniedHeader(w, xid, RejectAuthError)
	w.Uint32(uint32(stat))
	finishRecord(w)
	return true
}

// finishRecord fills the record mark at the start of w: one fragment, the
// last. Every reply is one record (R3).
func finishRecord(w *XDRWriter) {
	w.PutUint32At(0, lastFragment|uint32(w.Len()-4))
}
