package nfsfs

import (
	"cmp"
	"context"
	"slices"
)

// PORTMAP version 2 (RFC 1833 section 3), the part a client needs to find
// the MOUNT and NFS ports by itself: ESXi has no port option and asks port
// 111, and so does a plain `mount -t nfs host:/ /mnt`. The table is fixed by
// whoever wires the server: nothing registers over the network.

// Portmap program, version and procedures (part of the wire format).
const (
	PortmapProg = 100000
	PortmapVers = 2

	pmapProcNull    = 0
	pmapProcSet     = 1
	pmapProcUnset   = 2
	pmapProcGetport = 3
	pmapProcDump    = 4
	pmapProcCallit  = 5
)

// Transport protocol numbers in a Mapping.
const (
	IPProtoTCP = 6
	IPProtoUDP = 17
)

// Mapping names one program version over one transport.
type Mapping struct {
	Prog, Vers, Prot uint32
}

type portEntry struct {
	Mapping
	port uint32
}

// NewPortmap returns the PORTMAP v2 program answering from table (copied):
// NULL; GETPORT; DUMP; SET and UNSET answered false (the table is not the
// network's to change); CALLIT, an amplifier for spoofed UDP and no use over
// TCP, PROC_UNAVAIL.
func NewPortmap(table map[Mapping]uint32) *Program {
	entries := make([]portEntry, 0, len(table))
	for m, port := range table {
		entries = append(entries, portEntry{m, port})
	}
	// DUMP lists in a stable order.
	slices.SortFunc(entries, func(a, b portEntry) int {
		return cmp.Or(cmp.Compare(a.Prog, b.Prog), cmp.Compare(a.Vers, b.Vers), cmp.Compare(a.Prot, b.Prot))
	})
	return &Program{
		Prog: PortmapProg, Low: PortmapVers, High: PortmapVers, Name: "portmap",
		Serve: func(_ context.Context, c *Call, w *XDRWriter) (AcceptStat, error) {
			switch c.Proc {
			case pmapProcNull:
				return AcceptSuccess, nil
			case pmapProcSet, pmapProcUnset:
				decodeMapping(c.Args)
				if c.Args.Done() != nil {
					return AcceptGarbageArgs, nil
				}
				w.Bool(false)
				return AcceptSuccess, nil
			case pmapProcGetport:
				m, _ := decodeMapping(c.Args)
				if c.Args.Done() != nil {
					return AcceptGarbageArgs, nil
				}
				w.Uint32(getport(entries, m))
				return AcceptSuccess, nil
			case pmapProcDump:
				for _, e := range entries {
					w.Bool(true) // another entry follows (XDR optional-data list)
					w.Uint32(e.Prog)
					w.Uint32(e.Vers)
					w.Uint32(e.Prot)
					w.Uint32(e.port)
				}
				w.Bool(false)
				return AcceptSuccess, nil
			}
			return AcceptProcUnavail, nil
		},
	}
}

// decodeMapping decodes the mapping argument of SET, UNSET and GETPORT; its
// port is ignored by GETPORT.
func decodeMapping(r *XDRReader) (Mapping, uint32) {
	m := Mapping{Prog: r.Uint32(), Vers: r.Uint32(), Prot: r.Uint32()}
	return m, r.Uint32()
}

// getport answers GETPORT: the exact version's port, else, as the original
// portmapper did, the port of the highest other version of the program on
// that transport, whose server then answers PROG_MISMATCH with the versions
// it has; 0 when the program is not there at all.
func getport(entries []portEntry, m Mapping) uint32 {
	var other uint32
	for _, e := range entries {
		if e.Prog != m.Prog || e.Prot != m.Prot {
			continue
		}
		if e.Vers == m.Vers {
			return e.port
		}
		other = e.port // entries are sorted by version: the last is the highest
	}
	return other
}
