package nfsfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// An ONC RPC client over one TCP connection, for tests and load generators:
// calls are pipelined (any number outstanding, replies matched by xid in
// whatever order they come), which is how ESXi drives a server.

// ClientOptions configure Dial.
type ClientOptions struct {
	// Cred is sent as an AUTH_UNIX credential on every call; nil sends
	// AUTH_NONE. It is sent as given, limits unchecked, so tests can send
	// malformed credentials.
	Cred *AuthUnix
	// LocalPort binds the connection's source port (a privileged one, or
	// the same one again to look like a reconnecting ESXi host). The
	// socket gets SO_REUSEADDR so the port can be reused at once.
	LocalPort int
	// MaxReply caps a reply record. Default 4 MiB.
	MaxReply int
}

// RPCError is a call that was not accepted with SUCCESS: either denied
// (Reject, with AuthStat or the Low-High range of RPC versions) or accepted
// with another status (Accept, with the Low-High range of program versions
// for PROG_MISMATCH).
type RPCError struct {
	XID      uint32
	Denied   bool
	Accept   AcceptStat
	Reject   RejectStat
	AuthStat AuthStat
	Low      uint32
	High     uint32
}

func (e *RPCError) Error() string {
	switch {
	case e.Denied && e.Reject == RejectAuthError:
		return fmt.Sprintf("nfsfs: rpc call denied: %v", e.AuthStat)
	case e.Denied:
		return fmt.Sprintf("nfsfs: rpc call denied: %v (versions %d-%d)", e.Reject, e.Low, e.High)
	case e.Accept == AcceptProgMismatch:
		return fmt.Sprintf("nfsfs: rpc call failed: %v (versions %d-%d)", e.Accept, e.Low, e.High)
	}
	return fmt.Sprintf("nfsfs: rpc call failed: %v", e.Accept)
}

var (
	// ErrClientClosed is returned by calls on a closed client.
	ErrClientClosed = errors.New("nfsfs: rpc client closed")
	// ErrBadReply is a reply the client cannot decode.
	ErrBadReply = errors.New("nfsfs: rpc malformed reply")
	// ErrXIDInUse is returned by CallXID for an xid already outstanding.
	ErrXIDInUse = errors.New("nfsfs: rpc xid already outstanding")
)

// Client is an RPC client over one TCP connection. It is safe for
// concurrent use.
type Client struct {
	nc       net.Conn
	auth     []byte // credential and verifier, encoded once
	maxReply int
	xid      atomic.Uint32
	done     chan struct{} // closed when the reader has stopped

	// Calls append their records to wbuf and wake the writer goroutine,
	// which writes whatever has gathered in one system call: pipelined
	// calls share writes, as the server's replies do.
	wmu   sync.Mutex // guards wbuf and wfree
	wbuf  []byte
	wfree []byte        // the writer's previous buffer, for reuse
	wake  chan struct{} // capacity 1: a pending wake-up

	mu      sync.Mutex // guards pending and err
	pending map[uint32]chan result
	err     error
	quit    chan struct{} // closed with the first error
}

type result struct {
	rec []byte
	err error
}

// Dial connects to an RPC server at addr (host:port).
func Dial(ctx context.Context, addr string, o ClientOptions) (*Client, error) {
	var d net.Dialer
	if o.LocalPort != 0 {
		d.LocalAddr = &net.TCPAddr{Port: o.LocalPort}
		d.Control = reuseAddr
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewClient(nc, o), nil
}

func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// NewClient runs a client over an established connection (any net.Conn).
func NewClient(nc net.Conn, o ClientOptions) *Client {
	if o.MaxReply <= 0 {
		o.MaxReply = 4 << 20
	}
	var w XDRWriter
	if o.Cred != nil {
		w.Uint32(FlavorUnix)
		off := w.Reserve()
		o.Cred.encode(&w)
		n := w.Len() - off - 4
		w.PutUint32At(off, uint32(n)) // the body is whole units: no padding
	} else {
		w.Uint32(FlavorNone)
		w.Uint32(0)
	}
	w.Uint32(FlavorNone) // verifier
	w.Uint32(0)
	c := &Client{
		nc:       nc,
		auth:     w.Bytes(),
		maxReply: o.MaxReply,
		done:     make(chan struct{}),
		pending:  make(map[uint32]chan result),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
	}
	c.xid.Store(uint32(time.Now().UnixNano()))
	go c.readLoop()
	go c.writeLoop()
	return c
}

// LocalAddr returns the connection's source address and port.
func (c *Client) LocalAddr() netip.AddrPort { return addrPort(c.nc.LocalAddr()) }

// Close closes the connection; outstanding calls fail with ErrClientClosed.
func (c *Client) Close() error {
	c.fail(ErrClientClosed)
	<-c.done
	return nil
}

// Call sends a call with the next xid and waits for its reply. It returns
// the results of a SUCCESS reply, an *RPCError for any other reply, or the
// error that ended the connection or ctx.
func (c *Client) Call(ctx context.Context, prog, vers, proc uint32, args []byte) (*XDRReader, error) {
	return c.CallXID(ctx, c.xid.Add(1), prog, vers, proc, args)
}

// CallXID is Call with a caller-chosen xid, which is how a test
// retransmits: the same xid and arguments again, on this connection or on a
// new one from the same source port.
func (c *Client) CallXID(ctx context.Context, xid, prog, vers, proc uint32, args []byte) (*XDRReader, error) {
	ch := chanPool.Get().(chan result)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		chanPool.Put(ch)
		return nil, err
	}
	if _, dup := c.pending[xid]; dup {
		c.mu.Unlock()
		chanPool.Put(ch)
		return nil, ErrXIDInUse
	}
	c.pending[xid] = ch
	c.mu.Unlock()

	c.wmu.Lock()
	w := XDRWriter{buf: c.wbuf}
	start := w.Len()
	w.Reserve() // record mark
	w.Uint32(xid)
	w.Uint32(msgCall)
	w.Uint32(rpcVersion)
	w.Uint32(prog)
	w.Uint32(vers)
	w.Uint32(proc)
	w.buf = append(w.buf, c.auth...)
	w.buf = append(w.buf, args...)
	w.PutUint32At(start, lastFragment|uint32(w.Len()-start-4))
	c.wbuf = w.buf
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is pending; the writer will see this record
	}

	select {
	case res := <-ch:
		chanPool.Put(ch)
		if res.err != nil {
			return nil, res.err
		}
		return parseReply(xid, res.rec)
	case <-ctx.Done():
		c.mu.Lock()
		if c.pending[xid] == ch {
			delete(c.pending, xid)
		}
		c.mu.Unlock()
		// ch may still receive: it is not returned to the pool.
		return nil, ctx.Err()
	}
}

var chanPool = sync.Pool{New: func() any { return make(chan result, 1) }}

// writeLoop writes the records calls gather in wbuf, until the client
// fails. A write error fails the client: a record cut short leaves the
// stream unusable.
func (c *Client) writeLoop() {
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			return
		}
		c.wmu.Lock()
		if len(c.wbuf) == 0 {
			c.wmu.Unlock()
			continue
		}
		// Swap buffers; wfree is nil until this write is done, so calls
		// never append into the buffer being written.
		buf := c.wbuf
		c.wbuf, c.wfree = c.wfree[:0], nil
		c.wmu.Unlock()
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.wfree = buf[:0]
		c.wmu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("nfsfs: rpc client: %w", err))
			return
		}
	}
}

// fail ends the client: the connection is closed and every outstanding and
// later call returns err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		c.nc.Close()
		close(c.quit)
	}
	err = c.err
	pending := c.pending
	c.pending = make(map[uint32]chan result)
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

func (c *Client) readLoop() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var hdr [4]byte
	for {
		var rec []byte
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				c.fail(fmt.Errorf("nfsfs: rpc client: %w", err))
				return
			}
			mark := binary.BigEndian.Uint32(hdr[:])
			n := int(mark &^ lastFragment)
			if n > c.maxReply-len(rec) {
				c.fail(fmt.Errorf("%w: record over %d bytes", ErrBadReply, c.maxReply))
				return
			}
			if rec == nil && mark&lastFragment != 0 {
				rec = make([]byte, n)
			} else {
				rec = append(rec, make([]byte, n)...)
			}
			if _, err := io.ReadFull(br, rec[len(rec)-n:]); err != nil {
				c.fail(fmt.Errorf("nfsfs: rpc client: %w", err))
				return
			}
			if mark&lastFragment != 0 {
				break
			}
		}
		if len(rec) < 4 {
			continue
		}
		xid := binary.BigEndian.Uint32(rec)
		c.mu.Lock()
		ch := c.pending[xid]
		delete(c.pending, xid)
		c.mu.Unlock()
		if ch != nil {
			ch <- result{rec: rec}
		}
	}
}

// parseReply decodes a reply record's header and returns its results.
func parseReply(xid uint32, rec []byte) (*XDRReader, error) {
	r := &XDRReader{buf: rec}
	r.Uint32() // xid, matched by the reader
	if r.Uint32() != msgReply && r.err == nil {
		return nil, fmt.Errorf("%w: not a reply", ErrBadReply)
	}
	switch stat := r.Uint32(); {
	case r.err != nil:
	case stat == replyAccepted:
		r.Uint32()            // verifier flavor
		r.Opaque(maxAuthBody) // verifier body
		as := AcceptStat(r.Uint32())
		if r.err != nil {
			break
		}
		if as == AcceptSuccess {
			r.buf, r.off = r.buf[r.off:], 0
			return r, nil
		}
		e := &RPCError{XID: xid, Accept: as}
		if as == AcceptProgMismatch {
			e.Low, e.High = r.Uint32(), r.Uint32()
		}
		if r.err == nil {
			return nil, e
		}
	case stat == replyDenied:
		e := &RPCError{XID: xid, Denied: true, Reject: RejectStat(r.Uint32())}
		switch e.Reject {
		case RejectRPCMismatch:
			e.Low, e.High = r.Uint32(), r.Uint32()
		case RejectAuthError:
			e.AuthStat = AuthStat(r.Uint32())
		}
		if r.err == nil {
			return nil, e
		}
	default:
		return nil, fmt.Errorf("%w: reply_stat %d", ErrBadReply, stat)
	}
	return nil, fmt.Errorf("%w: %v", ErrBadReply, r.err)
}
