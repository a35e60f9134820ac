package nfsfs

// An ESXi-like client (../shared/ESXI.md, last section) against a real
// server over loopback: portmap, MNT, FSINFO, heartbeats, GUARDED .lck-
// files refreshed by 84-byte writes, a thin disk grown by SETATTR, 256
// FILE_SYNC writes and reads in flight on one connection, a server restart
// in the middle, and a garbage handle. Times are scaled down: the 12 s
// heartbeat is 200 ms, the 10 s lock refresh 100 ms, and a lock is stale
// after 1.5 s without refresh (35 s on ESXi).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstore/dstore/snapstore"
)

const (
	esxHeartbeat      = 200 * time.Millisecond  // 12 s on ESXi
	esxHeartbeatLimit = 5 * time.Second         // the heartbeat's timeout, as on ESXi
	esxLockRefresh    = 100 * time.Millisecond  // 10 s
	esxLockStale      = 1500 * time.Millisecond // about 35 s: 15 refreshes, slack for a loaded test machine
	esxLockSize       = 84
)

// esxConn is one connection of an ESXi-like host: AUTH_SYS uid 0, a fixed
// source port (privileged when the test runs as root). When the connection
// breaks it reconnects from the same port and sends the call again with
// the same xid, as ESXi does; calls keep no state on the connection.
type esxConn struct {
	addr string
	cred *AuthUnix
	port int
	xid  atomic.Uint32

	mu  sync.Mutex // guards c and gen
	c   *Client
	gen int

	reconnects atomic.Int32
}

func newESXConn(t testing.TB, addr string) *esxConn {
	t.Helper()
	cred := &AuthUnix{Machine: "esxi-test-host", UID: 0, GID: 0}
	var c *Client
	var port int
	if os.Geteuid() == 0 {
		c, port = dialPrivileged(t, addr, cred)
	} else {
		c, port = dialFromPort(t, addr, cred, 20000, 40000)
	}
	e := &esxConn{addr: addr, cred: cred, port: port, c: c}
	e.xid.Store(mrand.Uint32())
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.c.Close()
	})
	return e
}

func (e *esxConn) Call(ctx context.Context, prog, vers, proc uint32, args []byte) (*XDRReader, error) {
	xid := e.xid.Add(1)
	for {
		e.mu.Lock()
		c, gen := e.c, e.gen
		e.mu.Unlock()
		r, err := c.CallXID(ctx, xid, prog, vers, proc, args)
		var re *RPCError
		if err == nil || errors.As(err, &re) || ctx.Err() != nil || errors.Is(err, ErrXIDInUse) {
			return r, err
		}
		// The connection broke: reconnect and retransmit.
		if err := e.reconnect(ctx, gen); err != nil {
			return nil, err
		}
	}
}

// reconnect replaces connection generation gen (unless another call did
// already) by a new connection from the same source port.
func (e *esxConn) reconnect(ctx context.Context, gen int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gen != gen {
		return nil
	}
	e.c.Close()
	var last error
	for {
		c, err := Dial(ctx, e.addr, ClientOptions{Cred: e.cred, LocalPort: e.port})
		if err == nil {
			e.c = c
			e.gen++
			e.reconnects.Add(1)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("reconnecting from port %d: %w (last error: %v)", e.port, ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (e *esxConn) client(t testing.TB) *nfsClient {
	return &nfsClient{t: t, rpc: e, timeout: 60 * time.Second}
}

// heartbeat GETATTRs the root every period with ESXi's 5 s timeout and
// remembers every miss and the longest wait.
type heartbeat struct {
	stop    chan struct{}
	once    sync.Once
	done    chan struct{}
	mu      sync.Mutex
	beats   int
	misses  []string
	longest time.Duration
}

// heartbeatLimit is ESXi's 5 s, or three times that under the race
// detector, which makes the server's CPU work several times slower than
// ESXi will ever see it (the limit is a latency promise, checked for real
// without -race).
func heartbeatLimit() time.Duration {
	if raceEnabled() {
		return 3 * esxHeartbeatLimit
	}
	return esxHeartbeatLimit
}

func startHeartbeat(c *nfsClient, root []byte) *heartbeat {
	h := &heartbeat{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		hc := &nfsClient{t: c.t, rpc: c.rpc, timeout: heartbeatLimit()}
		tick := time.NewTicker(esxHeartbeat)
		defer tick.Stop()
		for {
			t0 := time.Now()
			res := hc.getattr(root)
			d := time.Since(t0)
			h.mu.Lock()
			h.beats++
			h.longest = max(h.longest, d)
			if err := res.check(nfsOK); err != nil {
				h.misses = append(h.misses, fmt.Sprintf("%s: %v after %v", t0.Format("15:04:05.000"), err, d))
			} else if res.Attr.Type != uint32(snapstore.TypeDir) {
				h.misses = append(h.misses, "the root is not a directory")
			}
			h.mu.Unlock()
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heartbeat) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.misses) > 0 {
		t.Errorf("%d of %d heartbeats missed: %v", len(h.misses), h.beats, h.misses)
	}
	t.Logf("heartbeats: %d, longest %v (limit %v)", h.beats, h.longest, heartbeatLimit())
}

// halt stops the heartbeat (also on a test's failure, from a cleanup).
func (h *heartbeat) halt() {
	h.once.Do(func() { close(h.stop) })
	<-h.done
}

func (h *heartbeat) end(t *testing.T) {
	t.Helper()
	h.halt()
	h.check(t)
}

// lockName is ESXi's lock file name for fileid: ".lck-" and the fileid's
// eight bytes little-endian in hex.
func lockName(fileid uint64) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], fileid)
	return ".lck-" + hex.EncodeToString(b[:])
}

func lockContent(host string, n int) []byte {
	b := make([]byte, esxLockSize)
	copy(b, fmt.Sprintf("%s lock %d", host, n))
	return b
}

// lockRefresher rewrites a lock file's 84 bytes every esxLockRefresh, as
// the host holding it does.
type lockRefresher struct {
	stop   chan struct{}
	once   sync.Once
	done   chan struct{}
	n      atomic.Int32
	failed atomic.Pointer[string]
}

func refreshLock(c *nfsClient, fh []byte, host string) *lockRefresher {
	l := &lockRefresher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(esxLockRefresh)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			n := int(l.n.Add(1))
			w := c.write(fh, 0, lockContent(host, n), fileSync)
			if err := w.check(nfsOK); err != nil {
				s := fmt.Sprintf("refresh %d: %v", n, err)
				l.failed.CompareAndSwap(nil, &s)
			} else if w.Count != esxLockSize {
				s := fmt.Sprintf("refresh %d wrote %d bytes", n, w.Count)
				l.failed.CompareAndSwap(nil, &s)
			}
		}
	}()
	return l
}

func (l *lockRefresher) halt() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

func (l *lockRefresher) end(t *testing.T, what string) {
	t.Helper()
	l.halt()
	if f := l.failed.Load(); f != nil {
		t.Errorf("lock %s: %s", what, *f)
	}
}

// span is a written range of the disk and what it holds.
type span struct {
	off  uint64
	data []byte
}

// ioPlan hands out non-overlapping spans of the disk: sizes from 4 KiB to
// 1 MiB, offsets random in 512-byte steps inside distinct 2 MiB slots, so
// no two spans share a block.
type ioPlan struct {
	rng   *mrand.Rand
	slots map[uint64]bool
	nslot uint64
}

func (p *ioPlan) next() span {
	size := 4096 << p.rng.IntN(9) // 4 KiB .. 1 MiB
	if size > 4096 && p.rng.IntN(2) == 0 {
		size -= 512 * (1 + p.rng.IntN(7))
	}
	for {
		s := p.rng.Uint64N(p.nslot - 1) // the last slot is kept for the end-of-file test
		if p.slots[s] {
			continue
		}
		p.slots[s] = true
		off := s<<21 + 512*p.rng.Uint64N((1<<21-uint64(size))/512+1)
		data := make([]byte, size)
		for i := 0; i < size; i += 8 {
			binary.LittleEndian.PutUint64(data[i:], p.rng.Uint64())
		}
		return span{off: off, data: data}
	}
}

// inFlight runs fns all at once (they start together) and reports the
// most that were outstanding together and in what order they finished.
func inFlight(fns []func() error) (peak int, finish []int, errs []error) {
	var mu sync.Mutex
	var cur int
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs = make([]error, len(fns))
	for i, fn := range fns {
		wg.Go(func() {
			<-start
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			errs[i] = fn()
			mu.Lock()
			cur--
			finish = append(finish, i)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return peak, finish, errs
}

// inversions counts calls that finished before a call started earlier
// (indexes are the start order): replies out of order.
func inversions(finish []int) int {
	n, hi := 0, -1
	for _, i := range finish {
		if i < hi {
			n++
		}
		hi = max(hi, i)
	}
	return n
}

func firstErr(what string, errs []error) error {
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%s %d: %w", what, i, err)
		}
	}
	return nil
}

func writeSpan(c *nfsClient, fh []byte, s span) error {
	w := c.write(fh, s.off, s.data, fileSync)
	if err := w.check(nfsOK); err != nil {
		return err
	}
	if w.Count != uint32(len(s.data)) || w.Committed != fileSync {
		return fmt.Errorf("WRITE of %d bytes at %d: count %d committed %d", len(s.data), s.off, w.Count, w.Committed)
	}
	return nil
}

func readSpan(c *nfsClient, fh []byte, s span) error {
	r := c.read(fh, s.off, uint32(len(s.data)))
	if err := r.check(nfsOK); err != nil {
		return err
	}
	if r.Count != uint32(len(s.data)) || r.EOF {
		return fmt.Errorf("READ of %d bytes at %d: count %d eof %v", len(s.data), s.off, r.Count, r.EOF)
	}
	if !bytes.Equal(r.Data, s.data) {
		return fmt.Errorf("READ of %d bytes at %d: the data differs from what was written", len(s.data), s.off)
	}
	return nil
}

func TestESXiClient(t *testing.T) {
	start := time.Now()
	root := os.Geteuid() == 0
	if !root {
		t.Log("not root: source ports are not privileged and --secure is off")
	}
	e := newNFSEnv(t, Options{Access: Access{Secure: root}})
	_, nfsPortStr, _ := net.SplitHostPort(e.addr)
	var nfsPort uint32
	fmt.Sscan(nfsPortStr, &nfsPort)

	// The portmapper. ESXi asks port 111; the test's portmapper is on an
	// ephemeral port, the one thing the test client is told.
	pl := listenRetry(t, "127.0.0.1:0")
	pmap := NewServer(ServerOptions{Logger: nfsTestLogger()})
	pmap.Register(NewPortmap(map[Mapping]uint32{
		{Prog: ProgNFS, Vers: 3, Prot: IPProtoTCP}:               nfsPort,
		{Prog: ProgMNT, Vers: 3, Prot: IPProtoTCP}:               nfsPort,
		{Prog: PortmapProg, Vers: PortmapVers, Prot: IPProtoTCP}: uint32(pl.Addr().(*net.TCPAddr).Port),
	}))
	go pmap.Serve(pl)
	t.Cleanup(func() { pmap.Close() })

	// 1, 2: GETPORT MOUNT, MNT, GETPORT NFS, NULL, FSINFO, GETATTR, FSSTAT,
	// PATHCONF.
	pm := newESXConn(t, pl.Addr().String()).client(t)
	mntPort, err := pm.getport(ProgMNT, 3, IPProtoTCP)
	if err != nil || mntPort != nfsPort {
		t.Fatalf("GETPORT MOUNT v3/TCP: %d, %v; want %d", mntPort, err, nfsPort)
	}
	if p, err := pm.getport(ProgNFS, 3, IPProtoUDP); err != nil || p != 0 {
		t.Fatalf("GETPORT NFS v3/UDP: %d, %v; want 0 (TCP only)", p, err)
	}
	mntAddr := net.JoinHostPort("127.0.0.1", fmt.Sprint(mntPort))
	main := newESXConn(t, mntAddr)
	c := main.client(t)
	m, err := c.mnt("/")
	if err != nil || m.St != mntOK {
		t.Fatalf("MNT /: status %d, %v", m.St, err)
	}
	hasUnix := false
	for _, f := range m.Flavors {
		hasUnix = hasUnix || f == FlavorUnix
	}
	if !hasUnix || len(m.FH) == 0 || len(m.FH) > maxESXiHandle {
		t.Fatalf("MNT /: flavors %v, handle of %d bytes", m.Flavors, len(m.FH))
	}
	rootFH := m.FH
	nfsPort2, err := pm.getport(ProgNFS, 3, IPProtoTCP)
	if err != nil || nfsPort2 != nfsPort {
		t.Fatalf("GETPORT NFS v3/TCP: %d, %v; want %d", nfsPort2, err, nfsPort)
	}
	// NFS is on the MOUNT port: the same connection serves both.
	if err := c.null(); err != nil {
		t.Fatalf("NULL: %v", err)
	}
	fi := c.fsinfo(rootFH).ok(t, "FSINFO").FSInfo
	if fi.Rtmax != 1<<20 || fi.Wtmax != 1<<20 {
		t.Fatalf("FSINFO rtmax %d wtmax %d", fi.Rtmax, fi.Wtmax)
	}
	ra := c.getattr(rootFH).ok(t, "GETATTR root").Attr
	if ra.Type != uint32(snapstore.TypeDir) || ra.FileID == 0 {
		t.Fatalf("the root: type %d fileid %d", ra.Type, ra.FileID)
	}
	c.fsstat(rootFH).ok(t, "FSSTAT")
	if pc := c.pathconf(rootFH).ok(t, "PATHCONF").Pathconf; pc.NameMax != 255 {
		t.Fatalf("PATHCONF name_max %d", pc.NameMax)
	}

	// 4: two exports over one connection: /snapstore (read-only) and the
	// root export again.
	ms, err := c.mnt("/snapstore")
	if err != nil || ms.St != mntOK || len(ms.FH) > maxESXiHandle {
		t.Fatalf("MNT /snapstore: status %d, %v", ms.St, err)
	}
	if a := mustAttr(t, c, ms.FH); a.Type != uint32(snapstore.TypeDir) {
		t.Fatalf("/snapstore is not a directory: %+v", a)
	}
	c.create(ms.FH, "x", createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE in /snapstore", nfsErrRofs)
	m2, err := c.mnt("/")
	if err != nil || m2.St != mntOK || !bytes.Equal(m2.FH, rootFH) {
		t.Fatalf("second MNT /: status %d, %v", m2.St, err)
	}
	c.getattr(m2.FH).ok(t, "GETATTR through the second mount")
	// Then 4 connections to one export.
	var extra []*nfsClient
	for range 4 {
		x := newESXConn(t, mntAddr).client(t)
		if err := x.null(); err != nil {
			t.Fatalf("NULL on another connection: %v", err)
		}
		x.fsinfo(rootFH).ok(t, "FSINFO on another connection")
		x.getattr(rootFH).ok(t, "GETATTR on another connection")
		extra = append(extra, x)
	}

	// 5: the heartbeat, on the connection that carries the I/O.
	hb := startHeartbeat(c, rootFH)
	t.Cleanup(hb.halt)

	// 6: the VM's folder and files; the disk grown in 10 GiB steps.
	vmdir := c.mkdir(rootFH, "vm1", sattr3{Mode: nfsRef(uint32(0o755))}).ok(t, "MKDIR vm1")
	vmx := c.create(vmdir.FH, "vm1.vmx", createUnchecked, sattr3{Mode: nfsRef(uint32(0o600))}, [8]byte{}).ok(t, "CREATE .vmx")
	vmxData := []byte("config.version = \"8\"\nvirtualHW.version = \"19\"\ndisplayName = \"vm1\"\n")
	if err := writeSpan(c, vmx.FH, span{0, vmxData}); err != nil {
		t.Fatal(err)
	}
	disk := c.create(vmdir.FH, "vm1-flat.vmdk", createUnchecked, sattr3{Mode: nfsRef(uint32(0o600))}, [8]byte{}).ok(t, "CREATE -flat.vmdk")
	c.setattr(disk.FH, sattr3{Mode: nfsRef(uint32(0o600))}, nil).ok(t, "SETATTR mode")
	const diskSize = 40 << 30
	for size := uint64(10 << 30); size <= diskSize; size += 10 << 30 {
		t0 := time.Now()
		res := c.setattr(disk.FH, sattr3{Size: &size}, nil).ok(t, fmt.Sprintf("SETATTR size %d GiB", size>>30))
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("growing the disk to %d GiB took %v", size>>30, d)
		}
		if a := res.Wcc.After; a == nil || a.Size != size || a.Used > 1<<20 {
			t.Fatalf("after growing to %d GiB: %+v", size>>30, a)
		}
	}
	ids := map[uint64]string{ra.FileID: "root"}
	for name, res := range map[string]nfsRes{"vm1": vmdir, "vmx": vmx, "vmdk": disk} {
		if res.Attr.FileID == 0 || ids[res.Attr.FileID] != "" {
			t.Fatalf("fileid %d of %s is zero or repeated", res.Attr.FileID, name)
		}
		ids[res.Attr.FileID] = name
	}

	// 7: lock files. Host A (the main connection) locks the .vmx and the
	// disk; host B (another connection) finds the .vmx lock held, then
	// breaks it once A stops refreshing.
	hostB := extra[0]
	vmxLock := lockName(vmx.Attr.FileID)
	diskLock := lockName(disk.Attr.FileID)
	if vmxLock == ".lck-0000000000000000" {
		t.Fatalf("lock named for fileid 0")
	}
	lockA := c.create(vmdir.FH, vmxLock, createGuarded, sattr3{Mode: nfsRef(uint32(0o644))}, [8]byte{}).ok(t, "CREATE GUARDED "+vmxLock)
	if err := writeSpan(c, lockA.FH, span{0, lockContent("hostA", 0)}); err != nil {
		t.Fatal(err)
	}
	refA := refreshLock(c, lockA.FH, "hostA")
	t.Cleanup(refA.halt)
	hostB.create(vmdir.FH, vmxLock, createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE GUARDED of a held lock", nfsErrExist)
	// B watches the lock: it is refreshed, so not stale.
	isStale := func() bool {
		first := hostB.lookup(vmdir.FH, vmxLock).ok(t, "LOOKUP lock").Attr.Mtime
		deadline := time.Now().Add(esxLockStale)
		for time.Now().Before(deadline) {
			time.Sleep(esxLockRefresh / 2)
			res := hostB.lookup(vmdir.FH, vmxLock)
			if res.St != nfsOK || res.Attr.Mtime != first {
				return false
			}
		}
		return true
	}
	if isStale() {
		t.Fatalf("a lock refreshed every %v looks stale", esxLockRefresh)
	}
	refA.end(t, "A (vmx)")
	if got := readAll(t, hostB, lockA.FH, 4096); len(got) != esxLockSize || !bytes.HasPrefix(got, []byte("hostA lock")) {
		t.Fatalf("the lock holds %q", got)
	}
	if !isStale() {
		t.Fatalf("a lock not refreshed for %v is not stale", esxLockStale)
	}
	hostB.remove(vmdir.FH, vmxLock).ok(t, "REMOVE stale lock")
	lockB := hostB.create(vmdir.FH, vmxLock, createGuarded, sattr3{Mode: nfsRef(uint32(0o644))}, [8]byte{}).ok(t, "CREATE GUARDED the broken lock")
	c.write(lockA.FH, 0, lockContent("hostA", 99), fileSync).want(t, "A's refresh of its broken lock", nfsErrStale)
	c.create(vmdir.FH, vmxLock, createGuarded, sattr3{}, [8]byte{}).want(t, "A's CREATE GUARDED of B's lock", nfsErrExist)
	refB := refreshLock(hostB, lockB.FH, "hostB")
	t.Cleanup(refB.halt)
	lockDisk := c.create(vmdir.FH, diskLock, createGuarded, sattr3{}, [8]byte{}).ok(t, "CREATE GUARDED "+diskLock)
	refDisk := refreshLock(c, lockDisk.FH, "hostA")
	t.Cleanup(refDisk.halt)

	// 8: 256 FILE_SYNC writes in flight on one connection, then reads and
	// writes mixed, then everything read back; other connections busy
	// meanwhile.
	plan := &ioPlan{rng: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7)), slots: map[uint64]bool{}, nslot: diskSize >> 21}
	var spans []span
	for range 256 {
		spans = append(spans, plan.next())
	}
	busy := make(chan struct{})
	var busyOnce sync.Once
	var busyWG sync.WaitGroup
	stopBusy := func() {
		busyOnce.Do(func() { close(busy) })
		busyWG.Wait()
	}
	t.Cleanup(stopBusy)
	for _, x := range extra[1:] {
		busyWG.Go(func() {
			for {
				select {
				case <-busy:
					return
				default:
				}
				if err := x.getattr(disk.FH).check(nfsOK); err != nil {
					t.Errorf("GETATTR on another connection: %v", err)
					return
				}
				if err := x.read(vmx.FH, 0, 4096).check(nfsOK); err != nil {
					t.Errorf("READ on another connection: %v", err)
					return
				}
			}
		})
	}
	var fns []func() error
	var total int
	for _, s := range spans {
		total += len(s.data)
		fns = append(fns, func() error { return writeSpan(c, disk.FH, s) })
	}
	t0 := time.Now()
	peak, finish, errs := inFlight(fns)
	if err := firstErr("WRITE", errs); err != nil {
		t.Fatal(err)
	}
	t.Logf("256 FILE_SYNC WRITEs (%d MiB) in flight: %v, peak %d outstanding, %d replies out of order", total>>20, time.Since(t0), peak, inversions(finish))
	if peak < 64 {
		t.Errorf("only %d calls were outstanding together", peak)
	}
	// Mixed: reads of what was written and new writes, 256 in flight.
	fns = fns[:0]
	for i := range 128 {
		s := spans[i*2]
		fns = append(fns, func() error { return readSpan(c, disk.FH, s) })
		ns := plan.next()
		spans = append(spans, ns)
		fns = append(fns, func() error { return writeSpan(c, disk.FH, ns) })
	}
	t0 = time.Now()
	peak, finish, errs = inFlight(fns)
	if err := firstErr("READ or WRITE", errs); err != nil {
		t.Fatal(err)
	}
	t.Logf("128 READs and 128 WRITEs in flight: %v, peak %d, %d replies out of order", time.Since(t0), peak, inversions(finish))
	// Small writes to distinct sectors of the same blocks, all at once:
	// none may undo another.
	sectorBase := (plan.nslot - 1) << 21
	var sectors []span
	for i := range 64 {
		sectors = append(sectors, span{off: sectorBase + uint64(i)*512, data: randBytes(512)})
	}
	fns = fns[:0]
	for _, s := range sectors {
		fns = append(fns, func() error { return writeSpan(c, disk.FH, s) })
	}
	if _, _, errs = inFlight(fns); firstErr("sector WRITE", errs) != nil {
		t.Fatal(firstErr("sector WRITE", errs))
	}
	spans = append(spans, sectors...)
	// The last 4 KiB of the disk, and a short read at the end of file.
	tail := span{off: diskSize - 4096, data: randBytes(4096)}
	if err := writeSpan(c, disk.FH, tail); err != nil {
		t.Fatal(err)
	}
	verifyAll := func(what string) {
		t.Helper()
		var fns []func() error
		for _, s := range spans {
			fns = append(fns, func() error { return readSpan(c, disk.FH, s) })
		}
		// 256 at a time
		for len(fns) > 0 {
			n := min(256, len(fns))
			if _, _, errs := inFlight(fns[:n]); firstErr(what, errs) != nil {
				t.Fatal(firstErr(what, errs))
			}
			fns = fns[n:]
		}
		r := c.read(disk.FH, diskSize-4096, 65536).ok(t, "READ at the end")
		if r.Count != 4096 || !r.EOF || !bytes.Equal(r.Data, tail.data) {
			t.Fatalf("%s: short READ at the end of the disk: count %d eof %v", what, r.Count, r.EOF)
		}
		if r := c.read(disk.FH, diskSize, 4096).ok(t, "READ past the end"); r.Count != 0 || !r.EOF {
			t.Fatalf("%s: READ past the end: count %d eof %v", what, r.Count, r.EOF)
		}
		if got := readAll(t, c, vmx.FH, 65536); !bytes.Equal(got, vmxData) {
			t.Fatalf("%s: the .vmx reads %q", what, got)
		}
	}
	verifyAll("before the restart")
	stopBusy()
	a := c.getattr(disk.FH).ok(t, "GETATTR disk").Attr
	if a.Size != diskSize || a.Used > 1<<30 {
		t.Fatalf("the disk: size %d used %d", a.Size, a.Used)
	}
	t.Logf("the disk: size %d GiB, used %d MiB", a.Size>>30, a.Used>>20)

	// 9: restart the server mid-run: heartbeats and lock refreshes go on
	// and reconnect from their source ports.
	reconnects := main.reconnects.Load()
	t0 = time.Now()
	e.restart()
	t.Logf("server restarted in %v", time.Since(t0))
	time.Sleep(3 * esxHeartbeat)
	if main.reconnects.Load() == reconnects {
		t.Fatalf("the main connection did not reconnect across the restart")
	}
	for name, res := range map[string]nfsRes{"vm1": vmdir, "vmx": vmx, "vmdk": disk, "vmx lock": lockB, "disk lock": lockDisk} {
		a := c.getattr(res.FH).ok(t, "GETATTR after the restart: "+name).Attr
		if a.FileID != res.Attr.FileID {
			t.Fatalf("%s: fileid %d after the restart, %d before", name, a.FileID, res.Attr.FileID)
		}
	}
	if l := c.lookup(vmdir.FH, "vm1-flat.vmdk").ok(t, "LOOKUP disk"); !bytes.Equal(l.FH, disk.FH) {
		t.Fatalf("the disk's handle changed across the restart")
	}
	if m, err := c.mnt("/"); err != nil || !bytes.Equal(m.FH, rootFH) {
		t.Fatalf("MNT after the restart: %v, handle %x, before %x", err, m.FH, rootFH)
	}
	hostB.create(vmdir.FH, vmxLock, createGuarded, sattr3{}, [8]byte{}).want(t, "CREATE GUARDED of a held lock after the restart", nfsErrExist)
	verifyAll("after the restart")
	// Writes go on.
	more := plan.next()
	spans = append(spans, more)
	if err := writeSpan(c, disk.FH, more); err != nil {
		t.Fatal(err)
	}

	// 10: a garbage handle: STALE, and the connection stays open.
	reconnects = main.reconnects.Load()
	for _, h := range [][]byte{randBytes(32), randBytes(56), randBytes(8)} {
		c.getattr(h).want(t, "GETATTR of a garbage handle", nfsErrStale)
		c.read(h, 0, 4096).want(t, "READ of a garbage handle", nfsErrStale)
		c.write(h, 0, []byte("x"), fileSync).want(t, "WRITE of a garbage handle", nfsErrStale)
	}
	c.getattr(rootFH).ok(t, "GETATTR after garbage handles")
	if main.reconnects.Load() != reconnects {
		t.Fatalf("the connection was closed over a garbage handle")
	}

	// Release the locks.
	refB.end(t, "B (vmx)")
	refDisk.end(t, "A (disk)")
	hostB.remove(vmdir.FH, vmxLock).ok(t, "REMOVE lock on release")
	c.remove(vmdir.FH, diskLock).ok(t, "REMOVE lock on release")
	hb.end(t)
	names := entNames(listDir(t, c, vmdir.FH, 4096))
	var list []string
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	if len(list) != 4 {
		t.Fatalf("the VM folder holds %v", list)
	}
	t.Logf("ESXi-like run: %v", time.Since(start))
}
