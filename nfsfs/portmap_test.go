package nfsfs

import (
	"slices"
	"testing"
)

func TestPortmap(t *testing.T) {
	table := map[Mapping]uint32{
		{Prog: 100003, Vers: 3, Prot: IPProtoTCP}: 2049,
		{Prog: 100005, Vers: 3, Prot: IPProtoTCP}: 20048,
		{Prog: 100005, Vers: 1, Prot: IPProtoTCP}: 20047,
	}
	env := startServer(t, ServerOptions{}, NewPortmap(table))
	table[Mapping{Prog: 1, Vers: 1, Prot: IPProtoTCP}] = 1 // NewPortmap copied the table
	c := env.dial(t, ClientOptions{Cred: &AuthUnix{Machine: "esx"}})
	ctx := ctx10s(t)

	if _, err := c.Call(ctx, PortmapProg, PortmapVers, pmapProcNull, nil); err != nil {
		t.Fatalf("NULL: %v", err)
	}
	for _, tc := range []struct {
		name string
		m    Mapping
		want uint32
	}{
		{"NFS v3 TCP", Mapping{100003, 3, IPProtoTCP}, 2049},
		{"MOUNT v3 TCP", Mapping{100005, 3, IPProtoTCP}, 20048},
		{"MOUNT v1 TCP", Mapping{100005, 1, IPProtoTCP}, 20047},
		{"MOUNT v2: the highest other version's port", Mapping{100005, 2, IPProtoTCP}, 20048},
		{"NFS v3 UDP: not served", Mapping{100003, 3, IPProtoUDP}, 0},
		{"NLM: not served", Mapping{100021, 4, IPProtoTCP}, 0},
		{"not in the copied table", Mapping{1, 1, IPProtoTCP}, 0},
	} {
		r, err := c.Call(ctx, PortmapProg, PortmapVers, pmapProcGetport, u32Args(tc.m.Prog, tc.m.Vers, tc.m.Prot, 0))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := r.Uint32(); got != tc.want || r.DoneExact() != nil {
			t.Errorf("%s: port %d, want %d", tc.name, got, tc.want)
		}
	}

	r, err := c.Call(ctx, PortmapProg, PortmapVers, pmapProcDump, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []portEntry
	for r.Bool() {
		got = append(got, portEntry{Mapping{r.Uint32(), r.Uint32(), r.Uint32()}, r.Uint32()})
	}
	want := []portEntry{
		{Mapping{100003, 3, IPProtoTCP}, 2049},
		{Mapping{100005, 1, IPProtoTCP}, 20047},
		{Mapping{100005, 3, IPProtoTCP}, 20048},
	}
	if r.DoneExact() != nil || !slices.Equal(got, want) {
		t.Fatalf("DUMP: %v (%v), want %v", got, r.DoneExact(), want)
	}

	for _, proc := range []uint32{pmapProcSet, pmapProcUnset} {
		r, err := c.Call(ctx, PortmapProg, PortmapVers, proc, u32Args(100003, 3, IPProtoTCP, 9999))
		if err != nil {
			t.Fatal(err)
		}
		if r.Bool() || r.DoneExact() != nil {
			t.Fatalf("proc %d: registration accepted", proc)
		}
	}
	if r, _ := c.Call(ctx, PortmapProg, PortmapVers, pmapProcGetport, u32Args(100003, 3, IPProtoTCP, 0)); r.Uint32() != 2049 {
		t.Fatalf("SET changed the table")
	}

	for _, tc := range []struct {
		name       string
		vers, proc uint32
		args       []byte
		want       RPCError
	}{
		{"CALLIT", PortmapVers, pmapProcCallit, u32Args(100003, 3, 0, 0), RPCError{Accept: AcceptProcUnavail}},
		{"unknown procedure", PortmapVers, 6, nil, RPCError{Accept: AcceptProcUnavail}},
		{"GETPORT with short arguments", PortmapVers, pmapProcGetport, u32Args(100003, 3), RPCError{Accept: AcceptGarbageArgs}},
		{"SET with short arguments", PortmapVers, pmapProcSet, nil, RPCError{Accept: AcceptGarbageArgs}},
		// rpcbind v3 and v4: clients fall back to v2 on PROG_MISMATCH.
		{"rpcbind v4", 4, 3, nil, RPCError{Accept: AcceptProgMismatch, Low: 2, High: 2}},
		{"rpcbind v3", 3, 3, nil, RPCError{Accept: AcceptProgMismatch, Low: 2, High: 2}},
	} {
		_, err := c.Call(ctx, PortmapProg, tc.vers, tc.proc, tc.args)
		re := rpcErr(t, err)
		re.XID = 0
		if *re != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, *re, tc.want)
		}
	}

	// An empty table answers 0 and an empty list.
	empty := startServer(t, ServerOptions{}, NewPortmap(nil))
	c2 := empty.dial(t, ClientOptions{})
	if r, err := c2.Call(ctx, PortmapProg, PortmapVers, pmapProcGetport, u32Args(100003, 3, IPProtoTCP, 0)); err != nil || r.Uint32() != 0 {
		t.Fatalf("empty GETPORT: %v", err)
	}
	if r, err := c2.Call(ctx, PortmapProg, PortmapVers, pmapProcDump, nil); err != nil || r.Bool() || r.DoneExact() != nil {
		t.Fatalf("empty DUMP: %v", err)
	}
}
