package nfsfs

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// The duplicate request cache (DRC). Over TCP a client retransmits only
// after it lost the connection (or gave up waiting), and a non-idempotent
// procedure run twice gives the wrong answer the second time: a
// retransmitted REMOVE would report NOENT for the file it just removed, a
// CREATE GUARDED would report EXIST for the file it created. So for the
// procedures a Program marks NonIdempotent, the first reply is kept and
// replayed.
//
// Entries are keyed by what identifies a call from the client's side:
// address, source port, xid, program, version, procedure, plus a hash of the
// arguments, so a reused xid with other arguments (a rebooted client) runs.
// Nothing is tied to the connection (R6): ESXi reconnects from the same
// source port and retransmits there.

const (
	defaultDRCEntries = 4096
	defaultDRCMaxAge  = 120 * time.Second
	// defaultDRCBytes bounds the cached reply bytes, in case a program
	// marks a procedure with large replies.
	defaultDRCBytes = 32 << 20
)

type drcKey struct {
	addr netip.Addr
	port uint16
	xid  uint32
	prog uint32
	vers uint32
	proc uint32
	sum  uint64
}

// drcSeed is per process: the cache does not outlive it.
var drcSeed = maphash.MakeSeed()

func drcKeyOf(c *Call, args []byte) drcKey {
	return drcKey{
		addr: c.Remote.Addr(),
		port: c.Remote.Port(),
		xid:  c.XID,
		prog: c.Prog,
		vers: c.Vers,
		proc: c.Proc,
		sum:  maphash.Bytes(drcSeed, args),
	}
}

type drcState int

const (
	drcNew        drcState = iota // not seen: run it, then finish
	drcInProgress                 // running: drop the retransmission
	drcDone                       // answered: replay the reply
)

type drcEntry struct {
	key     drcKey
	reply   []byte    // the whole reply record; nil while in progress
	at      time.Time // when the reply was cached
	removed bool      // evicted while in progress: finish does not cache

	prev, next *drcEntry // LRU list, most recent after the head
}

type drc struct {
	maxEntries int
	maxBytes   int
	maxAge     time.Duration
	now        func() time.Time

	mu    sync.Mutex // guards everything below
	m     map[drcKey]*drcEntry
	head  drcEntry // sentinel of the LRU list
	bytes int      // cached reply bytes
}

func newDRC(maxEntries, maxBytes int, maxAge time.Duration, now func() time.Time) *drc {
	d := &drc{maxEntries: maxEntries, maxBytes: maxBytes, maxAge: maxAge, now: now, m: make(map[drcKey]*drcEntry)}
	d.head.prev, d.head.next = &d.head, &d.head
	return d
}

// begin looks a call up. For drcNew the returned entry is in the cache,
// marked in progress, and the caller must call finish with the reply it
// sends. For drcDone the reply is the cached record, which is
// never modified and may be written as is.
func (d *drc) begin(k drcKey) (*drcEntry, []byte, drcState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.expire(now)
	if e := d.m[k]; e != nil && e.reply != nil && now.Sub(e.at) > d.maxAge {
		d.remove(e)
	}
	if e := d.m[k]; e != nil {
		if e.reply == nil {
			return nil, nil, drcInProgress
		}
		d.unlink(e)
		d.pushFront(e)
		return nil, e.reply, drcDone
	}
	e := &drcEntry{key: k}
	d.m[k] = e
	d.pushFront(e)
	d.evict()
	return e, nil, drcNew
}

// finish caches a copy of the reply record sent for e's call.
func (d *drc) finish(e *drcEntry, reply []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.removed {
		return
	}
	e.reply = append(make([]byte, 0, len(reply)), reply...)
	e.at = d.now()
	d.bytes += len(e.reply)
	d.evict()
}

// expire drops answered entries older than maxAge from the cold end of the
// list, stopping at the first that is young or in progress (those behind it
// are bounded by the count; begin checks the age of what it finds anyway).
// Entries in progress stay: their retransmissions must still be dropped.
// REQUIRES: d.mu is held.
func (d *drc) expire(now time.Time) {
	for e := d.head.prev; e != &d.head; e = d.head.prev {
		if e.reply == nil || now.Sub(e.at) <= d.maxAge {
			return
		}
		d.remove(e)
	}
}

// evict drops least recently used entries over the count or byte bounds.
// REQUIRES: d.mu is held.
func (d *drc) evict() {
	for (len(d.m) > d.maxEntries || d.bytes > d.maxBytes) && d.head.prev != &d.head {
		d.remove(d.head.prev)
	}
}

// REQUIRES: d.mu is held.
func (d *drc) remove(e *drcEntry) {
	d.unlink(e)
	delete(d.m, e.key)
	d.bytes -= len(e.reply)
	e.removed = true
}

func (d *drc) unlink(e *drcEntry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (d *drc) pushFront(e *drcEntry) {
	e.prev = &d.head
	e.next = d.head.next
	d.head.next.prev = e
	d.head.next = e
}

// len returns the number of entries (tests).
func (d *drc) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}
