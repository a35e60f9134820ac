package nfsfs

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/dstore/dstore/snapstore"
)

// MOUNT v3 (RFC 1813 appendix I).
const (
	mntNull    = 0
	mntMnt     = 1
	mntDump    = 2
	mntUmnt    = 3
	mntUmntall = 4
	mntExport  = 5

	mntOK     = 0
	mntNoent  = 2
	mntAcces  = 13
	mntNotdir = 20
	mntInval  = 22

	flavorUnix = 1
)

// Export paths.
const (
	ExportRoot      = "/"
	ExportSnapstore = "/snapstore"
)

// Access is who may use the server.
type Access struct {
	Allow  []netip.Prefix // clients allowed; empty: loopback only
	Secure bool           // only privileged source ports (< 1024)
}

// Allowed reports whether a client may use the server.
func (a Access) Allowed(remote netip.AddrPort) bool {
	if a.Secure && remote.Port() >= 1024 {
		return false
	}
	ip := remote.Addr().Unmap()
	if len(a.Allow) == 0 {
		return ip.IsLoopback()
	}
	for _, p := range a.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Mount serves MOUNT v3 for an NFS server's exports.
type Mount struct {
	nfs    *NFS
	access Access
	log    *slog.Logger

	mu     sync.Mutex                 // guards mounts
	mounts map[string]map[string]bool // client host -> paths, for DUMP
}

// NewMount serves the exports of n.
func NewMount(n *NFS, a Access) *Mount {
	return &Mount{nfs: n, access: a, log: n.log, mounts: map[string]map[string]bool{}}
}

// Program returns the MOUNT program.
func (m *Mount) Program() *Program {
	return &Program{Prog: ProgMNT, Low: 3, High: 3, Name: "mount", Serve: m.serve}
}

func (m *Mount) serve(_ context.Context, c *Call, w *XDRWriter) (AcceptStat, error) {
	r := c.Args
	host := c.Remote.Addr().Unmap().String()
	switch c.Proc {
	case mntNull:
		return AcceptSuccess, nil
	case mntMnt:
		path := r.String(1024)
		if r.Err() != nil {
			return AcceptGarbageArgs, nil
		}
		if !m.access.Allowed(c.Remote) {
			m.log.Warn("mount refused", "client", c.Remote.String(), "path", path)
			w.Uint32(mntAcces)
			return AcceptSuccess, nil
		}
		clean := "/" + strings.Trim(path, "/")
		var fh []byte
		switch {
		case clean == ExportRoot:
			fh = m.nfs.RootHandle()
		case clean == ExportSnapstore || strings.HasPrefix(clean, ExportSnapstore+"/"):
			// /snapstore, or a directory below it (/snapstore/GROUP/ID).
			h, err := m.nfs.snapMountHandle(strings.TrimPrefix(clean, ExportSnapstore))
			switch {
			case errors.Is(err, snapstore.ErrNotDir):
				w.Uint32(mntNotdir)
				return AcceptSuccess, nil
			case err != nil:
				w.Uint32(mntNoent)
				return AcceptSuccess, nil
			}
			fh = h
		default:
			w.Uint32(mntNoent)
			return AcceptSuccess, nil
		}
		w.Uint32(mntOK)
		w.Opaque(fh)
		w.Uint32(1)
		w.Uint32(flavorUnix)
		m.mu.Lock()
		if m.mounts[host] == nil {
			m.mounts[host] = map[string]bool{}
		}
		m.mounts[host][clean] = true
		m.mu.Unlock()
		m.log.Info("mount", "client", c.Remote.String(), "path", clean)
		return AcceptSuccess, nil
	case mntDump:
		m.mu.Lock()
		hosts := make([]string, 0, len(m.mounts))
		for h := range m.mounts {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			paths := make([]string, 0, len(m.mounts[h]))
			for p := range m.mounts[h] {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			for _, p := range paths {
				w.Bool(true)
				w.String(h)
				w.String(p)
			}
		}
		m.mu.Unlock()
		w.Bool(false)
		return AcceptSuccess, nil
	case mntUmnt:
		path := r.String(1024)
		if r.Err() != nil {
			return AcceptGarbageArgs, nil
		}
		m.mu.Lock()
		delete(m.mounts[host], "/"+strings.Trim(path, "/"))
		if len(m.mounts[host]) == 0 {
			delete(m.mounts, host)
		}
		m.mu.Unlock()
		return AcceptSuccess, nil
	case mntUmntall:
		m.mu.Lock()
		delete(m.mounts, host)
		m.mu.Unlock()
		return AcceptSuccess, nil
	case mntExport:
		for _, e := range []string{ExportRoot, ExportSnapstore} {
			w.Bool(true)
			w.String(e)
			w.Bool(false) // no groups: access is by address (--allow)
		}
		w.Bool(false)
		return AcceptSuccess, nil
	}
	return AcceptProcUnavail, nil
}
