package nfsfs

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func key(xid uint32) drcKey {
	return drcKey{addr: netip.MustParseAddr("10.0.0.1"), port: 800, xid: xid, prog: 100003, vers: 3, proc: 8, sum: 1}
}

func TestDRCStates(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	d := newDRC(16, 1<<20, time.Minute, clk.now)
	e, _, st := d.begin(key(1))
	if st != drcNew || e == nil {
		t.Fatalf("first sight: state %v", st)
	}
	if _, _, st := d.begin(key(1)); st != drcInProgress {
		t.Fatalf("while running: state %v", st)
	}
	reply := []byte("reply one")
	d.finish(e, reply)
	reply[0] = 'X' // the cache keeps its own copy
	_, got, st := d.begin(key(1))
	if st != drcDone || string(got) != "reply one" {
		t.Fatalf("after finish: state %v, reply %q", st, got)
	}
	// Any part of the key differing is another call.
	for _, k := range []drcKey{
		func() drcKey { k := key(1); k.sum = 2; return k }(),
		func() drcKey { k := key(1); k.port = 801; return k }(),
		func() drcKey { k := key(1); k.addr = netip.MustParseAddr("10.0.0.2"); return k }(),
		func() drcKey { k := key(1); k.proc = 9; return k }(),
		func() drcKey { k := key(1); k.vers = 4; return k }(),
		func() drcKey { k := key(1); k.prog = 100005; return k }(),
	} {
		if _, _, st := d.begin(k); st != drcNew {
			t.Fatalf("key %+v: state %v, want new", k, st)
		}
	}
}

func TestDRCAge(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	d := newDRC(16, 1<<20, time.Minute, clk.now)
	e, _, _ := d.begin(key(1))
	d.finish(e, []byte("r"))
	running, _, _ := d.begin(key(2))

	clk.advance(59 * time.Second)
	if _, _, st := d.begin(key(1)); st != drcDone {
		t.Fatalf("young entry: state %v", st)
	}
	clk.advance(2 * time.Second)
	if _, _, st := d.begin(key(1)); st != drcNew {
		t.Fatalf("entry past its age: state %v, want new", st)
	}
	// A call still running is never aged out: its retransmissions must
	// keep being dropped.
	clk.advance(time.Hour)
	if _, _, st := d.begin(key(2)); st != drcInProgress {
		t.Fatalf("old running entry: state %v", st)
	}
	d.finish(running, []byte("late"))
	if _, r, st := d.begin(key(2)); st != drcDone || string(r) != "late" {
		t.Fatalf("finished late: %v %q", st, r)
	}
}

func TestDRCBounds(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	d := newDRC(4, 1<<20, time.Minute, clk.now)
	for i := range uint32(4) {
		e, _, _ := d.begin(key(i))
		d.finish(e, []byte{byte(i)})
	}
	// Touch 0, so 1 is the least recently used.
	if _, _, st := d.begin(key(0)); st != drcDone {
		t.Fatal("entry 0 missing")
	}
	e, _, _ := d.begin(key(4))
	d.finish(e, []byte{4})
	if d.len() != 4 {
		t.Fatalf("%d entries, bound 4", d.len())
	}
	for _, i := range []uint32{0, 2, 3, 4} {
		if _, _, st := d.begin(key(i)); st != drcDone {
			t.Fatalf("entry %d: state %v, want done", i, st)
		}
	}
	if _, _, st := d.begin(key(1)); st != drcNew {
		t.Fatalf("least recently used entry kept: %v", st)
	}

	// An entry evicted while its call runs is not cached when it finishes.
	d2 := newDRC(1, 1<<20, time.Minute, clk.now)
	first, _, _ := d2.begin(key(1))
	second, _, _ := d2.begin(key(2))
	d2.finish(first, []byte("evicted"))
	d2.finish(second, []byte("kept"))
	if _, _, st := d2.begin(key(1)); st != drcNew {
		t.Fatalf("evicted entry came back: %v", st)
	}

	// The byte bound.
	d3 := newDRC(100, 1000, time.Minute, clk.now)
	for i := range uint32(10) {
		e, _, _ := d3.begin(key(i))
		d3.finish(e, bytes.Repeat([]byte{1}, 300))
	}
	if d3.bytes > 1000 || d3.len() > 4 {
		t.Fatalf("%d bytes in %d entries over a 1000-byte bound", d3.bytes, d3.len())
	}
	if _, _, st := d3.begin(key(9)); st != drcDone {
		t.Fatalf("most recent entry evicted by the byte bound")
	}
}
