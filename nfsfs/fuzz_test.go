package nfsfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the committed fuzz seed corpora under testdata/fuzz")

// FuzzXDRReader drives a reader over arbitrary bytes with an arbitrary
// sequence of decodes: no panic, results within their limits and within the
// input, and errors sticky.
func FuzzXDRReader(f *testing.F) {
	for _, s := range xdrSeeds() {
		f.Add(s.data, s.ops)
	}
	f.Fuzz(func(t *testing.T, data, ops []byte) {
		r := NewXDRReader(data)
		var failed error
		for _, op := range ops {
			before := r.Len()
			pos := len(data) - before
			max := int(op >> 3)
			if op>>3 == 31 {
				max = -1 // unlimited
			}
			var consumed int // what a successful decode must consume
			switch op & 7 {
			case 0:
				r.Uint32()
				consumed = 4
			case 1:
				r.Uint64()
				consumed = 8
			case 2:
				r.Int32()
				consumed = 4
			case 3:
				if r.Bool(); r.Err() == nil && binary.BigEndian.Uint32(data[pos:]) > 1 {
					t.Fatalf("Bool accepted %x", data[pos:pos+4])
				}
				consumed = 4
			case 4, 5:
				var b []byte
				if op&7 == 4 {
					b = r.Opaque(max)
				} else {
					b = []byte(r.String(max))
				}
				if r.Err() == nil {
					if max >= 0 && len(b) > max {
						t.Fatalf("opaque of %d over limit %d", len(b), max)
					}
					if !bytes.Equal(b, data[pos+4:pos+4+len(b)]) {
						t.Fatalf("opaque is not the input's bytes")
					}
					consumed = 4 + len(b) + pad(len(b))
				}
			case 6:
				b := r.FixedOpaque(max)
				if r.Err() == nil {
					if len(b) != max || !bytes.Equal(b, data[pos:pos+max]) {
						t.Fatalf("fixed opaque of %d: %d bytes", max, len(b))
					}
					consumed = max + pad(max)
				}
			case 7:
				if rem := r.Remaining(); len(rem) != before {
					t.Fatalf("Remaining %d bytes, Len %d", len(rem), before)
				}
			}
			if failed != nil {
				if r.Err() != failed || r.Len() != 0 {
					t.Fatalf("error not sticky: %v then %v", failed, r.Err())
				}
				continue
			}
			if r.Err() != nil {
				failed = r.Err()
				if r.Len() != 0 {
					t.Fatalf("%d bytes remain after an error", r.Len())
				}
				continue
			}
			if before-r.Len() != consumed {
				t.Fatalf("op %d consumed %d bytes, want %d", op&7, before-r.Len(), consumed)
			}
		}
		if r.Done() != failed {
			t.Fatalf("Done %v, first error %v", r.Done(), failed)
		}
	})
}

type xdrSeed struct{ data, ops []byte }

func xdrSeeds() []xdrSeed {
	var w XDRWriter
	w.Uint32(1)
	w.Uint64(2)
	w.Bool(true)
	w.Opaque([]byte("hello"))
	w.String("name")
	w.FixedOpaque([]byte{1, 2, 3})
	return []xdrSeed{
		{w.Bytes(), []byte{0, 1, 3, 4 | 31<<3, 5 | 8<<3, 6 | 3<<3, 7}},
		{[]byte{0xff, 0xff, 0xff, 0xff, 1, 2}, []byte{4 | 31<<3, 0}},
		{[]byte{0, 0, 0, 9, 'x'}, []byte{5 | 2<<3, 0}},
		{[]byte{0, 0, 0, 2}, []byte{3, 3}},
		{nil, []byte{0, 1, 2, 3, 4, 5, 6, 7}},
	}
}

// fuzzProgram is the test program without the procedures that wait (on a
// gate, or for a time the input chooses), so no input can hang a fuzz run.
func fuzzProgram() *Program {
	tp := newTestProg()
	p := tp.program()
	inner := p.Serve
	p.Serve = func(ctx context.Context, c *Call, w *XDRWriter) (AcceptStat, error) {
		switch c.Proc {
		case procSleep, procConc, procBlock:
			return AcceptProcUnavail, nil
		}
		return inner(ctx, c, w)
	}
	return p
}

func fuzzServer(o ServerOptions) *Server {
	o.Logger = slog.New(slog.DiscardHandler)
	s := NewServer(o)
	s.Register(fuzzProgram())
	s.Register(NewPortmap(map[Mapping]uint32{{100003, 3, IPProtoTCP}: 2049}))
	return s
}

// FuzzRPCCall hands arbitrary bytes to the call decoder and dispatcher as
// one record: no panic, and either no reply (only for a record too short
// for an xid, or a reply message) or one well-formed reply record for the
// call's xid.
func FuzzRPCCall(f *testing.F) {
	for _, s := range rpcCallSeeds() {
		f.Add(s)
	}
	s := fuzzServer(ServerOptions{})
	var machine atomic.Pointer[string]
	remote := netip.MustParseAddrPort("192.0.2.1:800")
	local := netip.MustParseAddrPort("192.0.2.2:2049")
	f.Fuzz(func(t *testing.T, rec []byte) {
		var cs callState
		var w XDRWriter
		cached, send := s.process(context.Background(), rec, remote, local, &cs, &w, &machine)
		if !send {
			if len(rec) >= 4 && (len(rec) < 8 || binary.BigEndian.Uint32(rec[4:]) != msgReply) {
				t.Fatalf("a call with a readable xid was dropped")
			}
			return
		}
		reply := w.Bytes()
		if cached != nil {
			reply = cached
		}
		checkReply(t, rec, reply)
	})
}

// checkReply checks a reply record against RFC 5531: its mark, xid, and a
// header that says exactly as much as its status requires.
func checkReply(t *testing.T, call, reply []byte) {
	t.Helper()
	if len(reply) < 4 || binary.BigEndian.Uint32(reply) != lastFragment|uint32(len(reply)-4) {
		t.Fatalf("bad record mark on a %d-byte reply", len(reply))
	}
	r := NewXDRReader(reply[4:])
	if xid := r.Uint32(); xid != binary.BigEndian.Uint32(call) {
		t.Fatalf("reply xid %#x for call %#x", xid, binary.BigEndian.Uint32(call))
	}
	if r.Uint32() != msgReply {
		t.Fatalf("not a reply")
	}
	switch r.Uint32() {
	case replyAccepted:
		if r.Uint32() != FlavorNone || r.Uint32() != 0 {
			t.Fatalf("verifier not AUTH_NONE")
		}
		switch AcceptStat(r.Uint32()) {
		case AcceptSuccess:
			return // results are the program's business
		case AcceptProgMismatch:
			if lo, hi := r.Uint32(), r.Uint32(); lo > hi {
				t.Fatalf("PROG_MISMATCH range %d-%d", lo, hi)
			}
		case AcceptProgUnavail, AcceptProcUnavail, AcceptGarbageArgs, AcceptSystemErr:
		default:
			t.Fatalf("unknown accept_stat")
		}
	case replyDenied:
		switch RejectStat(r.Uint32()) {
		case RejectRPCMismatch:
			if r.Uint32() != rpcVersion || r.Uint32() != rpcVersion {
				t.Fatalf("RPC_MISMATCH range is not 2-2")
			}
		case RejectAuthError:
			if st := AuthStat(r.Uint32()); st == AuthOK || st > AuthFailed {
				t.Fatalf("auth_stat %v", st)
			}
		default:
			t.Fatalf("unknown reject_stat")
		}
	default:
		t.Fatalf("unknown reply_stat")
	}
	if err := r.DoneExact(); err != nil {
		t.Fatalf("reply: %v", err)
	}
}

func rpcCallSeeds() [][]byte {
	unix := authUnixRaw(authUnixBody(&AuthUnix{Stamp: 1, Machine: "esx01", GIDs: []uint32{0, 1}}))
	var seeds [][]byte
	for _, c := range []struct {
		prog, vers, proc uint32
		cred, args       []byte
	}{
		{testProgNum, 1, procNull, nil, nil},
		{testProgNum, 1, procEcho, unix, opaqueArgs([]byte("echo"))},
		{testProgNum, 2, procWhoami, unix, nil},
		{testProgNum, 1, procCount, unix, opaqueArgs([]byte("count"))},
		{testProgNum, 1, procPanic, nil, nil},
		{testProgNum, 1, procDeny, nil, nil},
		{testProgNum, 1, procError, nil, nil},
		{testProgNum, 1, procStrict, nil, u32Args(5)},
		{testProgNum, 7, procNull, nil, nil},
		{PortmapProg, PortmapVers, pmapProcGetport, nil, u32Args(100003, 3, IPProtoTCP, 0)},
		{PortmapProg, PortmapVers, pmapProcDump, nil, nil},
		{0x20000999, 1, 0, nil, nil},
		{testProgNum, 1, procNull, u32Args(6, 4, 0, 0, 0), nil},
	} {
		seeds = append(seeds, callBody(1, c.prog, c.vers, c.proc, c.cred, c.args))
	}
	rpc3 := callBody(2, testProgNum, 1, 0, nil, nil)
	binary.BigEndian.PutUint32(rpc3[8:], 3)
	badCred := authUnixRaw(authUnixBody(&AuthUnix{GIDs: make([]uint32, 17)}))
	seeds = append(seeds,
		rpc3,
		callBody(3, testProgNum, 1, 0, badCred, nil),
		callBody(4, testProgNum, 1, 0, nil, nil)[:18],
		u32Args(5, msgReply, 0),
		[]byte{1, 2, 3},
		nil,
	)
	return seeds
}

// FuzzRecordMarking feeds an arbitrary byte stream into a real server
// connection (over net.Pipe) while draining its replies: no panic, and the
// connection ends soon after the stream does.
func FuzzRecordMarking(f *testing.F) {
	for _, s := range recordMarkingSeeds() {
		f.Add(s)
	}
	s := fuzzServer(ServerOptions{MaxRecord: 4096, MaxInFlight: 4, Workers: 4, IdleTimeout: -1})
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		if !s.track(nil) {
			t.Fatal("server shut down")
		}
		done := make(chan struct{})
		go func() {
			s.serveConn(server)
			close(done)
		}()
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(io.Discard, client) })
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := client.Write(stream)
		if os.IsTimeout(err) {
			t.Fatalf("server stopped reading a %d-byte stream", len(stream))
		}
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("connection still served 5 s after its stream ended")
		}
		wg.Wait()
	})
}

// frame frames body as one record in fragments split at the offsets.
func frame(body []byte, splits ...int) []byte {
	var out []byte
	prev := 0
	for _, s := range append(splits, len(body)) {
		mark := uint32(s - prev)
		if s == len(body) {
			mark |= lastFragment
		}
		out = binary.BigEndian.AppendUint32(out, mark)
		out = append(out, body[prev:s]...)
		prev = s
	}
	return out
}

func recordMarkingSeeds() [][]byte {
	null := callBody(1, testProgNum, 1, procNull, nil, nil)
	echo := callBody(2, testProgNum, 1, procEcho, nil, opaqueArgs(bytes.Repeat([]byte("e"), 100)))
	var many []byte
	for range 16 {
		many = append(many, frame(null)...)
	}
	return [][]byte{
		frame(null),
		append(frame(null), frame(echo, 10, 10, 50)...),
		many,
		binary.BigEndian.AppendUint32(nil, lastFragment|1<<20),                  // over MaxRecord
		append(binary.BigEndian.AppendUint32(nil, 3000), make([]byte, 3000)...), // unfinished
		append(frame(null), 0, 0),
		frame(nil),
		frame(append(null, make([]byte, 5000)...)),
	}
}

// TestFuzzSeeds keeps the committed corpora in step with the seeds above:
// go test -run TestFuzzSeeds -update-seeds rewrites them.
func TestFuzzSeeds(t *testing.T) {
	corpora := map[string][][][]byte{}
	for _, s := range xdrSeeds() {
		corpora["FuzzXDRReader"] = append(corpora["FuzzXDRReader"], [][]byte{s.data, s.ops})
	}
	for _, s := range rpcCallSeeds() {
		corpora["FuzzRPCCall"] = append(corpora["FuzzRPCCall"], [][]byte{s})
	}
	for _, s := range recordMarkingSeeds() {
		corpora["FuzzRecordMarking"] = append(corpora["FuzzRecordMarking"], [][]byte{s})
	}
	for target, seeds := range corpora {
		dir := filepath.Join("testdata", "fuzz", target)
		for i, args := range seeds {
			var b bytes.Buffer
			b.WriteString("go test fuzz v1\n")
			for _, a := range args {
				fmt.Fprintf(&b, "[]byte(%q)\n", a)
			}
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			if *updateSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, b.Bytes()) {
				t.Errorf("%s is missing or stale: go test -run TestFuzzSeeds -update-seeds ./nfsfs/", path)
			}
		}
	}
}
