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
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test program's number, versions and procedures.
const (
	testProgNum = 0x20000101

	procNull     = 0
	procEcho     = 1  // opaque -> the same opaque
	procSleep    = 2  // uint32 ms, opaque -> sleeps, then the opaque
	procPanic    = 3  // panics
	procGarbage  = 4  // answers GARBAGE_ARGS
	procError    = 5  // returns an error: SYSTEM_ERR
	procDeny     = 6  // denies with AUTH_TOOWEAK
	procWhoami   = 7  // -> flavor, and the AUTH_UNIX fields
	procCount    = 8  // non-idempotent: counts executions -> the count
	procBlock    = 9  // non-idempotent: counts, then waits for the gate
	procConc     = 10 // uint32 ms: sleeps, measuring concurrency
	procBadStat  = 11 // returns an accept_stat that does not exist
	procStrict   = 12 // decodes a uint32; GARBAGE_ARGS when it cannot
	procClobber  = 13 // truncates the reply header away
	procScribble = 14 // overwrites the reply's xid
)

type testProg struct {
	gate    chan struct{} // procBlock waits until it is closed
	started chan uint32   // procBlock sends its xid when it starts
	count   atomic.Int32  // executions of procCount and procBlock
	running atomic.Int32
	maxRun  atomic.Int32
}

func newTestProg() *testProg {
	return &testProg{gate: make(chan struct{}), started: make(chan uint32, 4096)}
}

func (tp *testProg) enter() {
	n := tp.running.Add(1)
	for {
		m := tp.maxRun.Load()
		if n <= m || tp.maxRun.CompareAndSwap(m, n) {
			return
		}
	}
}

func (tp *testProg) program() *Program {
	return &Program{
		Prog: testProgNum, Low: 1, High: 2, Name: "test",
		NonIdempotent: func(_, proc uint32) bool { return proc == procCount || proc == procBlock },
		Serve: func(ctx context.Context, c *Call, w *XDRWriter) (AcceptStat, error) {
			switch c.Proc {
			case procNull:
				return AcceptSuccess, nil
			case procEcho:
				w.Opaque(c.Args.Opaque(-1))
				w.Uint32(c.XID)
			case procSleep:
				ms := c.Args.Uint32()
				b := c.Args.Opaque(-1)
				time.Sleep(time.Duration(ms) * time.Millisecond)
				w.Opaque(b)
			case procPanic:
				w.Uint32(42) // partial results, to be discarded
				panic("test handler panic")
			case procGarbage:
				w.Uint32(42)
				return AcceptGarbageArgs, nil
			case procError:
				return AcceptSuccess, errors.New("test handler failure")
			case procDeny:
				return 0, &AuthError{Stat: AuthTooWeak}
			case procWhoami:
				w.Uint32(c.Flavor)
				if u := c.Unix; u != nil {
					w.Uint32(u.Stamp)
					w.String(u.Machine)
					w.Uint32(u.UID)
					w.Uint32(u.GID)
					w.Uint32(uint32(len(u.GIDs)))
					for _, g := range u.GIDs {
						w.Uint32(g)
					}
				}
			case procCount:
				w.Uint32(uint32(tp.count.Add(1)))
			case procBlock:
				n := tp.count.Add(1)
				tp.enter()
				tp.started <- c.XID
				<-tp.gate
				tp.running.Add(-1)
				w.Uint32(uint32(n))
			case procConc:
				tp.enter()
				time.Sleep(time.Duration(c.Args.Uint32()) * time.Millisecond)
				tp.running.Add(-1)
			case procBadStat:
				return AcceptStat(99), nil
			case procClobber:
				w.Truncate(0)
				w.Uint32(1)
			case procScribble:
				w.Uint32(1)
				w.PutUint32At(4, 0xdead)
			case procStrict:
				v := c.Args.Uint32()
				if c.Args.Done() != nil {
					return AcceptGarbageArgs, nil
				}
				w.Uint32(v)
			default:
				return AcceptProcUnavail, nil
			}
			if c.Args.Err() != nil {
				return AcceptGarbageArgs, nil
			}
			return AcceptSuccess, nil
		},
	}
}

// logBuf collects a server's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", substr, l.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type testEnv struct {
	srv      *Server
	addr     string
	logs     *logBuf
	prog     *testProg
	serveErr chan error
}

func startServer(t testing.TB, o ServerOptions, extra ...*Program) *testEnv {
	t.Helper()
	env := &testEnv{logs: &logBuf{}, prog: newTestProg(), serveErr: make(chan error, 1)}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	env.srv = NewServer(o)
	env.srv.Register(env.prog.program())
	for _, p := range extra {
		env.srv.Register(p)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.addr = l.Addr().String()
	go func() { env.serveErr <- env.srv.Serve(l) }()
	t.Cleanup(func() {
		select {
		case <-env.prog.gate:
		default:
			close(env.prog.gate)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := env.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", env.logs.String())
		}
	})
	return env
}

func (env *testEnv) dial(t testing.TB, o ClientOptions) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, env.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn speaks record marking by hand, to send what a Client would not.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func (env *testEnv) raw(t testing.TB) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// send writes body as one record in fragments split at the given offsets.
func (rc *rawConn) send(body []byte, splits ...int) {
	rc.t.Helper()
	if _, err := rc.nc.Write(frame(body, splits...)); err != nil {
		rc.t.Fatal(err)
	}
}

// recv reads one reply record.
func (rc *rawConn) recv() []byte {
	rc.t.Helper()
	b, err := rc.tryRecv(10 * time.Second)
	if err != nil {
		rc.t.Fatalf("recv: %v", err)
	}
	return b
}

func (rc *rawConn) tryRecv(timeout time.Duration) ([]byte, error) {
	rc.nc.SetReadDeadline(time.Now().Add(timeout))
	var rec []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
			return nil, err
		}
		mark := binary.BigEndian.Uint32(hdr[:])
		frag := make([]byte, mark&^lastFragment)
		if _, err := io.ReadFull(rc.br, frag); err != nil {
			return nil, err
		}
		rec = append(rec, frag...)
		if mark&lastFragment != 0 {
			return rec, nil
		}
	}
}

// expectClosed waits for the server to close the connection.
func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, rc.br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		rc.t.Fatalf("connection not closed by the server: %v", err)
	}
}

// callBody encodes a call record's body. cred is the credential (flavor
// and body) and verifier, already encoded; nil means AUTH_NONE.
func callBody(xid, prog, vers, proc uint32, cred []byte, args []byte) []byte {
	var w XDRWriter
	w.Uint32(xid)
	w.Uint32(msgCall)
	w.Uint32(rpcVersion)
	w.Uint32(prog)
	w.Uint32(vers)
	w.Uint32(proc)
	if cred == nil {
		cred = authNone()
	}
	w.buf = append(w.buf, cred...)
	w.buf = append(w.buf, args...)
	return w.Bytes()
}

func authNone() []byte { return []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} }

// authUnixRaw encodes an AUTH_UNIX credential from its body, and an
// AUTH_NONE verifier.
func authUnixRaw(body []byte) []byte {
	var w XDRWriter
	w.Uint32(FlavorUnix)
	w.Opaque(body)
	w.Uint32(FlavorNone)
	w.Uint32(0)
	return w.Bytes()
}

func authUnixBody(a *AuthUnix) []byte {
	var w XDRWriter
	a.encode(&w)
	return w.Bytes()
}

func opaqueArgs(b []byte) []byte {
	var w XDRWriter
	w.Opaque(b)
	return w.Bytes()
}

func u32Args(vs ...uint32) []byte {
	var w XDRWriter
	for _, v := range vs {
		w.Uint32(v)
	}
	return w.Bytes()
}

func ctx10s(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func rpcErr(t *testing.T, err error) *RPCError {
	t.Helper()
	var re *RPCError
	if !errors.As(err, &re) {
		t.Fatalf("want an *RPCError, got %v", err)
	}
	return re
}

func TestAcceptStatuses(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t, ClientOptions{})
	ctx := ctx10s(t)

	if _, err := c.Call(ctx, testProgNum, 1, procNull, nil); err != nil {
		t.Fatalf("NULL: %v", err)
	}
	r, err := c.Call(ctx, testProgNum, 2, procEcho, opaqueArgs([]byte("hello")))
	if err != nil {
		t.Fatalf("ECHO: %v", err)
	}
	if got := r.Opaque(100); string(got) != "hello" || r.Err() != nil {
		t.Fatalf("ECHO returned %q, %v", got, r.Err())
	}

	for _, tc := range []struct {
		name             string
		prog, vers, proc uint32
		args             []byte
		want             RPCError
	}{
		{"unknown program", 0x20000999, 1, 0, nil, RPCError{Accept: AcceptProgUnavail}},
		{"version too high", testProgNum, 3, 0, nil, RPCError{Accept: AcceptProgMismatch, Low: 1, High: 2}},
		{"version too low", testProgNum, 0, 0, nil, RPCError{Accept: AcceptProgMismatch, Low: 1, High: 2}},
		{"unknown procedure", testProgNum, 1, 99, nil, RPCError{Accept: AcceptProcUnavail}},
		{"handler garbage", testProgNum, 1, procGarbage, nil, RPCError{Accept: AcceptGarbageArgs}},
		{"short arguments", testProgNum, 1, procStrict, []byte{1, 2}, RPCError{Accept: AcceptGarbageArgs}},
		{"handler error", testProgNum, 1, procError, nil, RPCError{Accept: AcceptSystemErr}},
		{"handler panic", testProgNum, 1, procPanic, nil, RPCError{Accept: AcceptSystemErr}},
		{"unknown accept_stat", testProgNum, 1, procBadStat, nil, RPCError{Accept: AcceptSystemErr}},
		{"handler clobbered the header", testProgNum, 1, procClobber, nil, RPCError{Accept: AcceptSystemErr}},
		{"handler wrote over the header", testProgNum, 1, procScribble, nil, RPCError{Accept: AcceptSystemErr}},
		{"handler denies", testProgNum, 1, procDeny, nil, RPCError{Denied: true, Reject: RejectAuthError, AuthStat: AuthTooWeak}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Call(ctx, tc.prog, tc.vers, tc.proc, tc.args)
			re := rpcErr(t, err)
			re.XID = 0
			if *re != tc.want {
				t.Fatalf("got %+v, want %+v", *re, tc.want)
			}
		})
	}
	// Trailing argument bytes are not an error.
	if r, err := c.Call(ctx, testProgNum, 1, procStrict, u32Args(7, 8, 9)); err != nil || r.Uint32() != 7 {
		t.Fatalf("strict with trailing bytes: %v", err)
	}
	if _, err := c.Call(ctx, testProgNum, 1, procNull, nil); err != nil {
		t.Fatalf("NULL after the errors: %v", err)
	}
}

// TestReplyBytes pins the encoding of each kind of reply, byte for byte.
func TestReplyBytes(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.raw(t)
	u32s := func(b []byte) []uint32 {
		var v []uint32
		for ; len(b) >= 4; b = b[4:] {
			v = append(v, binary.BigEndian.Uint32(b))
		}
		return v
	}
	for _, tc := range []struct {
		name string
		body []byte
		want []uint32
	}{
		{"success", callBody(1, testProgNum, 1, procStrict, nil, u32Args(77)), []uint32{1, 1, 0, 0, 0, 0, 77}},
		{"prog unavail", callBody(2, 0x20000999, 1, 0, nil, nil), []uint32{2, 1, 0, 0, 0, 1}},
		{"prog mismatch", callBody(3, testProgNum, 9, 0, nil, nil), []uint32{3, 1, 0, 0, 0, 2, 1, 2}},
		{"proc unavail", callBody(4, testProgNum, 1, 99, nil, nil), []uint32{4, 1, 0, 0, 0, 3}},
		{"garbage", callBody(5, testProgNum, 1, procGarbage, nil, nil), []uint32{5, 1, 0, 0, 0, 4}},
		{"system err", callBody(6, testProgNum, 1, procPanic, nil, nil), []uint32{6, 1, 0, 0, 0, 5}},
		{"auth error", callBody(7, testProgNum, 1, procDeny, nil, nil), []uint32{7, 1, 1, 1, 5}},
		{"rpc mismatch", func() []byte {
			b := callBody(8, testProgNum, 1, 0, nil, nil)
			binary.BigEndian.PutUint32(b[8:], 3)
			return b
		}(), []uint32{8, 1, 1, 0, 2, 2}},
		{"truncated header", callBody(9, testProgNum, 1, 0, nil, nil)[:22], []uint32{9, 1, 0, 0, 0, 4}},
		{"unknown msg_type", func() []byte {
			b := callBody(10, testProgNum, 1, 0, nil, nil)
			binary.BigEndian.PutUint32(b[4:], 7)
			return b
		}(), []uint32{10, 1, 0, 0, 0, 4}},
		{"credential over 400 bytes", callBody(11, testProgNum, 1, 0, authUnixRaw(make([]byte, 404)), nil), []uint32{11, 1, 0, 0, 0, 4}},
	} {
		rc.send(tc.body)
		if got := u32s(rc.recv()); !slices.Equal(got, tc.want) {
			t.Errorf("%s: reply %v, want %v", tc.name, got, tc.want)
		}
	}

	// Not answered: a record too short for an xid, and a reply. The NULL
	// after them shows nothing came back for them.
	rc.send([]byte{1, 2})
	rc.send([]byte{})
	rc.send(u32Args(12, msgReply, 0, 0, 0, 0))
	rc.send(callBody(13, testProgNum, 1, 0, nil, nil))
	if got := u32s(rc.recv()); !slices.Equal(got, []uint32{13, 1, 0, 0, 0, 0}) {
		t.Fatalf("after dropped records: %v", got)
	}
}

func TestAuthUnix(t *testing.T) {
	env := startServer(t, ServerOptions{})
	ctx := ctx10s(t)
	gids := make([]uint32, 16)
	for i := range gids {
		gids[i] = uint32(100 + i)
	}
	cred := &AuthUnix{Stamp: 0x5eed, Machine: "esx01.example", UID: 0, GID: 0, GIDs: gids}
	c := env.dial(t, ClientOptions{Cred: cred})
	for range 2 { // the second call reuses the kept machine name
		r, err := c.Call(ctx, testProgNum, 1, procWhoami, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := AuthUnix{}
		if fl := r.Uint32(); fl != FlavorUnix {
			t.Fatalf("flavor %d", fl)
		}
		got.Stamp, got.Machine, got.UID, got.GID = r.Uint32(), r.String(255), r.Uint32(), r.Uint32()
		for range r.Uint32() {
			got.GIDs = append(got.GIDs, r.Uint32())
		}
		if r.DoneExact() != nil || got.Stamp != cred.Stamp || got.Machine != cred.Machine || got.UID != 0 || !slices.Equal(got.GIDs, gids) {
			t.Fatalf("server saw %+v (%v), sent %+v", got, r.DoneExact(), cred)
		}
	}
	// AUTH_NONE reaches the handler with no credential.
	r, err := env.dial(t, ClientOptions{}).Call(ctx, testProgNum, 1, procWhoami, nil)
	if err != nil || r.Uint32() != FlavorNone || r.Len() != 0 {
		t.Fatalf("AUTH_NONE whoami: %v", err)
	}

	good := authUnixBody(&AuthUnix{Machine: "m", GIDs: []uint32{1}})
	badVerf := append(authUnixRaw(good)[:len(authUnixRaw(good))-8], 0, 0, 0, 1, 0, 0, 0, 0)
	gss := u32Args(6, 8, 1, 2, 0, 0) // RPCSEC_GSS with an 8-byte body, AUTH_NONE verifier
	for _, tc := range []struct {
		name string
		cred []byte
		proc uint32
		want AuthStat // AuthOK: accepted
	}{
		{"machine name of 255", authUnixRaw(authUnixBody(&AuthUnix{Machine: strings.Repeat("m", 255)})), procNull, AuthOK},
		{"machine name of 256", authUnixRaw(authUnixBody(&AuthUnix{Machine: strings.Repeat("m", 256)})), procNull, AuthBadCred},
		{"17 groups", authUnixRaw(authUnixBody(&AuthUnix{Machine: "m", GIDs: make([]uint32, 17)})), procNull, AuthBadCred},
		{"body truncated", authUnixRaw(good[:len(good)-4]), procNull, AuthBadCred},
		{"body with trailing bytes", authUnixRaw(append(slices.Clip(good), 0, 0, 0, 0)), procNull, AuthBadCred},
		{"empty body", authUnixRaw(nil), procNull, AuthBadCred},
		{"verifier not AUTH_NONE", badVerf, procNull, AuthBadVerf},
		{"unknown flavor, NULL", gss, procNull, AuthOK},
		{"unknown flavor, other procedure", gss, procWhoami, AuthBadCred},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := env.raw(t)
			rc.send(callBody(77, testProgNum, 1, tc.proc, tc.cred, nil))
			_, err := parseReply(77, rc.recv())
			if tc.want == AuthOK {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				return
			}
			re := rpcErr(t, err)
			if !re.Denied || re.Reject != RejectAuthError || re.AuthStat != tc.want {
				t.Fatalf("got %+v, want AUTH_ERROR %v", *re, tc.want)
			}
		})
	}
}

func TestMultiFragment(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.raw(t)
	payload := bytes.Repeat([]byte("fragmented "), 1000)
	body := callBody(5, testProgNum, 1, procEcho, nil, opaqueArgs(payload))
	// Splits inside the header, an empty fragment, and one inside the
	// arguments.
	rc.send(body, 3, 3, 17, 40, 2000, len(body)-1)
	r, err := parseReply(5, rc.recv())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Opaque(-1); !bytes.Equal(got, payload) {
		t.Fatalf("echo of a fragmented call: %d bytes, want %d", len(got), len(payload))
	}
	// The stream is still in step.
	rc.send(callBody(6, testProgNum, 1, procNull, nil, nil), 1, 2)
	if _, err := parseReply(6, rc.recv()); err != nil {
		t.Fatal(err)
	}
}

func TestPipelinedOutOfOrder(t *testing.T) {
	env := startServer(t, ServerOptions{})
	const n = 256

	// Raw: send all, then see that replies came back in another order,
	// each with its own payload.
	rc := env.raw(t)
	var all []byte
	for i := range n {
		body := callBody(uint32(1000+i), testProgNum, 1, procSleep, nil,
			append(u32Args(uint32(rand.IntN(20))), opaqueArgs(fmt.Appendf(nil, "call %d", i))...))
		all = binary.BigEndian.AppendUint32(all, lastFragment|uint32(len(body)))
		all = append(all, body...)
	}
	if _, err := rc.nc.Write(all); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	var order []uint32
	for range n {
		rec := rc.recv()
		xid := binary.BigEndian.Uint32(rec)
		r, err := parseReply(xid, rec)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("call %d", xid-1000); string(r.Opaque(-1)) != want || seen[xid] {
			t.Fatalf("reply for xid %d wrong or repeated", xid)
		}
		seen[xid] = true
		order = append(order, xid)
	}
	if slices.IsSorted(order) {
		t.Errorf("256 calls sleeping random times were answered in order")
	}

	// The client: 256 goroutines on one connection.
	c := env.dial(t, ClientOptions{})
	ctx := ctx10s(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Appendf(nil, "client call %d", i)
			r, err := c.Call(ctx, testProgNum, 1, procSleep, append(u32Args(uint32(rand.IntN(20))), opaqueArgs(want)...))
			if err == nil && !bytes.Equal(r.Opaque(-1), want) {
				err = fmt.Errorf("call %d got another call's reply", i)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestInFlightCap(t *testing.T) {
	env := startServer(t, ServerOptions{MaxInFlight: 8, Workers: 64})
	rc := env.raw(t)
	var all []byte
	for i := range 64 {
		body := callBody(uint32(i), testProgNum, 1, procConc, nil, u32Args(10))
		all = binary.BigEndian.AppendUint32(all, lastFragment|uint32(len(body)))
		all = append(all, body...)
	}
	if _, err := rc.nc.Write(all); err != nil {
		t.Fatal(err)
	}
	for range 64 {
		rc.recv()
	}
	if m := env.prog.maxRun.Load(); m != 8 {
		t.Fatalf("at most %d handlers ran at once on one connection, want exactly the cap of 8", m)
	}
}

// TestReadBudget: over two connections, no more request bytes are read and
// held than MaxReadBytes (R8), so at most three 256 KiB calls run at once
// although the worker pool and the in-flight caps would allow 32; and a
// record larger than the whole budget still gets through.
func TestReadBudget(t *testing.T) {
	pad := opaqueArgs(make([]byte, 256<<10))
	one := len(callBody(0, testProgNum, 1, procConc, nil, append(u32Args(20), pad...)))
	env := startServer(t, ServerOptions{MaxInFlight: 16, Workers: 64, MaxReadBytes: 3 * one, MaxRecord: 8 << 20})
	var wg sync.WaitGroup
	for conn := range 2 {
		rc := env.raw(t)
		var all []byte
		for i := range 16 {
			body := callBody(uint32(conn<<8|i), testProgNum, 1, procConc, nil, append(u32Args(20), pad...))
			all = binary.BigEndian.AppendUint32(all, lastFragment|uint32(len(body)))
			all = append(all, body...)
		}
		wg.Go(func() {
			if _, err := rc.nc.Write(all); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			for range 16 {
				rec := rc.recv()
				if _, err := parseReply(binary.BigEndian.Uint32(rec), rec); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if m := env.prog.maxRun.Load(); m != 3 {
		t.Fatalf("at most %d 256 KiB calls ran at once, want exactly the 3 that the read budget holds", m)
	}
	env.srv.reads.mu.Lock()
	used := env.srv.reads.used
	env.srv.reads.mu.Unlock()
	if used != 0 {
		t.Fatalf("%d bytes still charged to the read budget after every call was answered", used)
	}

	// A record larger than the whole budget, in two fragments.
	big := callBody(99, testProgNum, 1, procConc, nil, append(u32Args(1), opaqueArgs(make([]byte, 4*one))...))
	rc := env.raw(t)
	half := len(big) / 2
	var rec []byte
	rec = binary.BigEndian.AppendUint32(rec, uint32(half))
	rec = append(rec, big[:half]...)
	rec = binary.BigEndian.AppendUint32(rec, lastFragment|uint32(len(big)-half))
	rec = append(rec, big[half:]...)
	if _, err := rc.nc.Write(rec); err != nil {
		t.Fatal(err)
	}
	got := rc.recv()
	if _, err := parseReply(99, got); err != nil {
		t.Fatalf("the record larger than the read budget: %v", err)
	}
}

func TestWorkerPoolBound(t *testing.T) {
	env := startServer(t, ServerOptions{MaxInFlight: 32, Workers: 4})
	ctx := ctx10s(t)
	var wg sync.WaitGroup
	for range 3 {
		c := env.dial(t, ClientOptions{})
		for range 16 {
			wg.Go(func() {
				if _, err := c.Call(ctx, testProgNum, 1, procConc, u32Args(5)); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if m := env.prog.maxRun.Load(); m != 4 {
		t.Fatalf("at most %d handlers ran at once over 3 connections, want the pool's 4", m)
	}
}

func TestOversizedRecord(t *testing.T) {
	env := startServer(t, ServerOptions{MaxRecord: 64 << 10})
	ctx := ctx10s(t)
	other := env.dial(t, ClientOptions{})
	if _, err := other.Call(ctx, testProgNum, 1, procNull, nil); err != nil {
		t.Fatal(err)
	}

	// One fragment over the cap.
	a := env.raw(t)
	a.nc.Write(binary.BigEndian.AppendUint32(nil, lastFragment|1<<20))
	a.expectClosed()

	// Fragments each under the cap, together over it; a call before them
	// is still answered.
	b := env.raw(t)
	b.send(callBody(1, testProgNum, 1, procNull, nil, nil))
	frag := make([]byte, 40<<10)
	b.nc.Write(binary.BigEndian.AppendUint32(nil, uint32(len(frag))))
	b.nc.Write(frag)
	b.nc.Write(binary.BigEndian.AppendUint32(nil, lastFragment|uint32(len(frag))))
	b.nc.Write(frag)
	if _, err := parseReply(1, b.recv()); err != nil {
		t.Fatal(err)
	}
	b.expectClosed()
	env.logs.waitFor(t, "over the size limit")

	// A record just under the cap works; the other connection never
	// noticed.
	payload := make([]byte, 60<<10)
	if r, err := other.Call(ctx, testProgNum, 1, procEcho, opaqueArgs(payload)); err != nil || len(r.Opaque(-1)) != len(payload) {
		t.Fatalf("other connection after the oversized records: %v", err)
	}
}

func TestGarbageStreams(t *testing.T) {
	env := startServer(t, ServerOptions{MaxRecord: 256 << 10, IdleTimeout: 500 * time.Millisecond})
	ctx := ctx10s(t)
	keep := env.dial(t, ClientOptions{})
	rng := rand.New(rand.NewPCG(1, 2))
	var wg sync.WaitGroup
	for i := range 64 {
		junk := make([]byte, rng.IntN(4096))
		for j := range junk {
			junk[j] = byte(rng.Uint32())
		}
		if i%4 == 0 && len(junk) >= 4 {
			// Valid record marks with garbage inside.
			binary.BigEndian.PutUint32(junk, lastFragment|uint32(len(junk)-4))
		}
		wg.Go(func() {
			nc, err := net.Dial("tcp", env.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			nc.Write(junk)
			if i%2 == 0 {
				nc.(*net.TCPConn).CloseWrite()
				nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, nc)
			}
		})
		if _, err := keep.Call(ctx, testProgNum, 1, procNull, nil); err != nil {
			t.Fatalf("after garbage stream %d: %v", i, err)
		}
	}
	wg.Wait()
	c := env.dial(t, ClientOptions{})
	if _, err := c.Call(ctx, testProgNum, 1, procEcho, opaqueArgs([]byte("still here"))); err != nil {
		t.Fatal(err)
	}
}

func TestHandlerPanic(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t, ClientOptions{})
	ctx := ctx10s(t)
	_, err := c.Call(ctx, testProgNum, 1, procPanic, nil)
	if re := rpcErr(t, err); re.Accept != AcceptSystemErr {
		t.Fatalf("panic answered %v", re)
	}
	if _, err := c.Call(ctx, testProgNum, 1, procEcho, opaqueArgs([]byte("x"))); err != nil {
		t.Fatalf("call after a panic on the same connection: %v", err)
	}
	env.logs.waitFor(t, "handler panicked")
	if l := env.logs.String(); !strings.Contains(l, "test handler panic") || !strings.Contains(l, "goroutine ") {
		t.Fatalf("panic log line without the value or the stack:\n%s", l)
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestDRCRetransmission(t *testing.T) {
	env := startServer(t, ServerOptions{})
	ctx := ctx10s(t)
	port := freePort(t)
	dialFrom := func() *Client {
		// The previous connection from the port may linger in TIME_WAIT.
		var err error
		for range 100 {
			var c *Client
			if c, err = Dial(ctx, env.addr, ClientOptions{LocalPort: port}); err == nil {
				t.Cleanup(func() { c.Close() })
				return c
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("dial from port %d: %v", port, err)
		return nil
	}
	first := dialFrom()
	if got := first.LocalAddr().Port(); got != uint16(port) {
		t.Fatalf("bound port %d, want %d", got, port)
	}
	const xid = 0xabc
	args := opaqueArgs([]byte("create foo"))
	r, err := first.CallXID(ctx, xid, testProgNum, 1, procCount, args)
	if err != nil || r.Uint32() != 1 {
		t.Fatalf("first call: %v", err)
	}
	// The same call again on the same connection: the cached reply.
	if r, err := first.CallXID(ctx, xid, testProgNum, 1, procCount, args); err != nil || r.Uint32() != 1 {
		t.Fatalf("retransmission: %v", err)
	}
	// Other arguments under the same xid, or another xid, run.
	if r, err := first.CallXID(ctx, xid, testProgNum, 1, procCount, opaqueArgs([]byte("create bar"))); err != nil || r.Uint32() != 2 {
		t.Fatalf("same xid, other arguments: %v", err)
	}
	first.Close()

	// A new connection from the same port: still the first reply.
	second := dialFrom()
	if r, err := second.CallXID(ctx, xid, testProgNum, 1, procCount, args); err != nil || r.Uint32() != 1 {
		t.Fatalf("retransmission on a new connection from the same port: %v", err)
	}
	if n := env.prog.count.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
	// From another port the same xid is another call.
	third := env.dial(t, ClientOptions{})
	if r, err := third.CallXID(ctx, xid, testProgNum, 1, procCount, args); err != nil || r.Uint32() != 3 {
		t.Fatalf("same xid from another port: %v", err)
	}
	// Idempotent procedures are not cached.
	for want := range 2 {
		r, err := second.CallXID(ctx, 0x777, testProgNum, 1, procEcho, opaqueArgs([]byte("e")))
		if err != nil {
			t.Fatalf("echo %d: %v", want, err)
		}
		r.Opaque(-1)
	}
}

func TestDRCInProgressDropped(t *testing.T) {
	// Two workers: one holds the blocked call, so the other takes the
	// retransmission and then the NULL in order, and the NULL's reply
	// proves the retransmission was looked up while the first ran.
	env := startServer(t, ServerOptions{Workers: 2})
	rc := env.raw(t)
	body := callBody(0x55, testProgNum, 1, procBlock, nil, opaqueArgs([]byte("rename a b")))
	rc.send(body)
	<-env.prog.started
	rc.send(body) // retransmitted while the first runs
	rc.send(callBody(0x56, testProgNum, 1, procNull, nil, nil))
	if rec := rc.recv(); binary.BigEndian.Uint32(rec) != 0x56 {
		t.Fatalf("first reply is for xid %#x, want the NULL", binary.BigEndian.Uint32(rec))
	}
	close(env.prog.gate)
	r, err := parseReply(0x55, rc.recv())
	if err != nil || r.Uint32() != 1 {
		t.Fatalf("blocked call: %v", err)
	}
	if rec, err := rc.tryRecv(300 * time.Millisecond); err == nil {
		t.Fatalf("a second reply for xid %#x", binary.BigEndian.Uint32(rec))
	}
	if n := env.prog.count.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
}

func TestShutdownDrains(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t, ClientOptions{})
	ctx := ctx10s(t)
	const n = 5
	results := make(chan error, n)
	for range n {
		go func() {
			r, err := c.Call(ctx, testProgNum, 1, procBlock, nil)
			if err == nil && r.Uint32() == 0 {
				err = errors.New("empty result")
			}
			results <- err
		}()
	}
	for range n {
		<-env.prog.started
	}
	shut := make(chan error, 1)
	go func() { shut <- env.srv.Shutdown(ctx) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with calls in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	// No new connections are served.
	if nc, err := net.DialTimeout("tcp", env.addr, time.Second); err == nil {
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a connection after Shutdown was served")
		}
		nc.Close()
	}
	close(env.prog.gate)
	for range n {
		if err := <-results; err != nil {
			t.Fatalf("in-flight call during Shutdown: %v", err)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-env.serveErr:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve did not return")
	}
	// The connection is closed after the replies.
	if _, err := c.Call(ctx, testProgNum, 1, procNull, nil); err == nil {
		t.Fatalf("call after Shutdown succeeded")
	}
}

func TestShutdownDeadline(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t, ClientOptions{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), testProgNum, 1, procBlock, nil)
		done <- err
	}()
	<-env.prog.started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := env.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck handler: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatalf("the stuck call succeeded after a forced shutdown")
	}
}

func TestIdleTimeout(t *testing.T) {
	env := startServer(t, ServerOptions{IdleTimeout: 200 * time.Millisecond})
	start := time.Now()
	rc := env.raw(t)
	rc.expectClosed()
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Fatalf("idle connection closed after %v", d)
	}
	env.logs.waitFor(t, "idle; closing")

	// A call running longer than the timeout keeps its connection, and so
	// does steady traffic. A longer timeout here, so that a loaded machine
	// (-race, other tests) stretching a short sleep past it cannot fail
	// the test.
	env = startServer(t, ServerOptions{IdleTimeout: time.Second})
	c := env.dial(t, ClientOptions{})
	ctx := ctx10s(t)
	if _, err := c.Call(ctx, testProgNum, 1, procSleep, append(u32Args(1500), opaqueArgs(nil)...)); err != nil {
		t.Fatalf("long call on an otherwise idle connection: %v", err)
	}
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if _, err := c.Call(ctx, testProgNum, 1, procNull, nil); err != nil {
			t.Fatalf("steady traffic: %v", err)
		}
	}
}

func TestAcceptFilter(t *testing.T) {
	refusedPort := freePort(t)
	env := startServer(t, ServerOptions{Accept: func(remote netip.AddrPort) bool {
		return remote.Addr().IsLoopback() && int(remote.Port()) != refusedPort
	}})
	ctx := ctx10s(t)
	if _, err := env.dial(t, ClientOptions{}).Call(ctx, testProgNum, 1, procNull, nil); err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	c, err := Dial(ctx, env.addr, ClientOptions{LocalPort: refusedPort})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, testProgNum, 1, procNull, nil); err == nil {
		t.Fatalf("refused client was served")
	}
	env.logs.waitFor(t, "refused by access control")
}

func TestWriteTimeout(t *testing.T) {
	env := startServer(t, ServerOptions{WriteTimeout: 200 * time.Millisecond})
	// A client that sends large calls and never reads their replies.
	nc, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4096)
	payload := make([]byte, 512<<10)
	go func() {
		for i := range 64 {
			body := callBody(uint32(i), testProgNum, 1, procEcho, nil, opaqueArgs(payload))
			if _, err := nc.Write(append(binary.BigEndian.AppendUint32(nil, lastFragment|uint32(len(body))), body...)); err != nil {
				return
			}
		}
	}()
	env.logs.waitFor(t, "reply write failed")
	c := env.dial(t, ClientOptions{})
	if _, err := c.Call(ctx10s(t), testProgNum, 1, procNull, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	s := NewServer(ServerOptions{})
	s.Register(newTestProg().program())
	defer func() {
		if recover() == nil {
			t.Fatalf("second Register of a program did not panic")
		}
	}()
	s.Register(newTestProg().program())
}

func TestClientContext(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t, ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, testProgNum, 1, procSleep, append(u32Args(300), opaqueArgs(nil)...)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", err)
	}
	// The late reply is discarded; the client goes on.
	if _, err := c.Call(ctx10s(t), testProgNum, 1, procNull, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := c.Call(ctx10s(t), testProgNum, 1, procNull, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Call(ctx10s(t), testProgNum, 1, procNull, nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("call on a closed client: %v", err)
	}
}

// BenchmarkRPCNullPipelined measures the RPC layer alone: NULL calls with
// AUTH_UNIX, 16 outstanding on one loopback connection. Allocations count
// client and server together.
func BenchmarkRPCNullPipelined(b *testing.B) {
	env := startServer(b, ServerOptions{})
	c := env.dial(b, ClientOptions{Cred: &AuthUnix{Machine: "bench", GIDs: []uint32{0}}})
	ctx := context.Background()
	const outstanding = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range outstanding {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := c.Call(ctx, testProgNum, 1, procNull, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

// BenchmarkProcessNull measures the server's decode, dispatch and encode of
// one call, without I/O.
func BenchmarkProcessNull(b *testing.B) {
	s := NewServer(ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	s.Register(newTestProg().program())
	rec := callBody(1, testProgNum, 1, procNull, authUnixRaw(authUnixBody(&AuthUnix{Machine: "bench", GIDs: []uint32{0}})), nil)
	var machine atomic.Pointer[string]
	remote := netip.MustParseAddrPort("127.0.0.1:800")
	b.ReportAllocs()
	for b.Loop() {
		cs := callPool.Get().(*callState)
		r := getReply()
		if _, send := s.process(context.Background(), rec, remote, remote, cs, &r.w, &machine); !send {
			b.Fatal("dropped")
		}
		cs.reset()
		callPool.Put(cs)
		putReply(r)
	}
}
