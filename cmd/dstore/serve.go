package main

// dstore serve: the NFSv3 server.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/control"
	"github.com/dstore/dstore/nfsfs"
	"github.com/dstore/dstore/snapstore"
)

func serveCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the datastore over NFSv3 (MOUNT and NFS on one port; PORTMAP optional)",
		Flags: []cli.Flag{
			dataFlag(),
			&cli.StringFlag{Name: "nfs", Value: "127.0.0.1:2049", Usage: "listen for NFS and MOUNT on `ADDR:PORT`"},
			&cli.StringFlag{Name: "portmap", Usage: "also serve PORTMAP v2 on `ADDR:PORT` (111 for ESXi and a plain mount)"},
			&cli.StringFlag{Name: "allow", Usage: "clients allowed, `CIDR[,CIDR...]` (default: loopback only)"},
			&cli.BoolFlag{Name: "read-only", Usage: "refuse every change"},
			&cli.BoolFlag{Name: "root-squash", Usage: "map uid 0 to nobody (ESXi needs root: leave off for ESXi)"},
			&cli.BoolFlag{Name: "all-squash", Usage: "map every uid to nobody"},
			&cli.BoolFlag{Name: "secure", Usage: "accept only privileged source ports (< 1024)"},
			&cli.DurationFlag{Name: "gc-interval", Value: time.Hour, Usage: "collect garbage at least this often while data changes (0: only when space runs low or much was freed)"},
		},
		Action: func(c *cli.Context) error {
			var access nfsfs.Access
			if s := c.String("allow"); s != "" {
				for _, part := range strings.Split(s, ",") {
					p, err := netip.ParsePrefix(strings.TrimSpace(part))
					if err != nil {
						return usagef("--allow %q: %v", part, err)
					}
					access.Allow = append(access.Allow, p.Masked())
				}
			}
			access.Secure = c.Bool("secure")
			gc := blockstore.AutoGCOptions{Interval: c.Duration("gc-interval")}
			if gc.Interval <= 0 {
				gc.Interval = -1
			}
			return serve(c.Context, g, dataDir(c), c.String("nfs"), c.String("portmap"), gc, nfsfs.Options{
				Logger:     g.logger(),
				ReadOnly:   c.Bool("read-only"),
				RootSquash: c.Bool("root-squash"),
				AllSquash:  c.Bool("all-squash"),
				Access:     access,
			}, c.App.Writer)
		},
	}
}

// Test hooks: serveClock, when set, is the time source of the scheduler,
// the audit log and the namespace in serve; serveSched, when set, is given
// the scheduler before it runs.
var (
	serveClock snapstore.Clock
	serveSched func(*snapstore.Scheduler)
)

// serve runs the server until ctx ends (SIGTERM, SIGINT), then drains
// in-flight requests, syncs and closes the datastore. Besides NFS it serves
// the control API on DIR/control.sock and runs the groups' schedules.
func serve(ctx context.Context, g *globals, dir, nfsAddr, pmapAddr string, gc blockstore.AutoGCOptions, o nfsfs.Options, out interface{ Write([]byte) (int, error) }) (err error) {
	log := g.logger()
	if !blockstore.IsInitialized(dir) {
		if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
			return fmt.Errorf("initializing %s: %w", dir, err)
		}
		log.Info("initialized a new datastore", "dir", dir)
	}
	so := storeOptions
	so.Logger = log
	ds, ox, pass, err := openDatastore(dir, so, log, true)
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("open %s: the datastore is in use by another process (is another dstore serve running?)", dir)
	}
	if err != nil {
		return err
	}
	if serveClock != nil {
		ds.NS.UseClock(serveClock)
	}
	// From here on, everything started is stopped in reverse order.
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		// Its jobs stop (they resume at the next start); before the
		// datastore, whose remote layers it serves.
		if cerr := ox.Close(); cerr != nil {
			log.Error("closing the object exchange", "dir", dir, "err", cerr)
		}
		if cerr := ds.Close(); cerr != nil {
			if err == nil {
				err = cerr
			} else {
				log.Error("closing the datastore", "dir", dir, "err", cerr)
			}
			return
		}
		log.Info("datastore closed", "dir", dir)
	}()
	if err := blockstore.CheckIOFlusher(); err != nil {
		log.Warn("the log and pack writers cannot be marked as I/O flushers (needs CAP_SYS_RESOURCE): an NFS client on this same machine may stall under memory pressure", "err", err)
	}
	ds.StartAutoGC(gc)

	svc, err := control.NewService(ds, dir, control.Options{Via: "daemon", Clock: serveClock, Logger: log, Version: version,
		OX: ox, Passphrases: pass})
	if err != nil {
		return err
	}
	stops = append(stops, func() {
		if cerr := svc.Close(); cerr != nil {
			log.Error("closing the audit log", "err", cerr)
		}
	})
	sched := svc.NewScheduler(log)
	if serveSched != nil {
		serveSched(sched)
	}
	schedCtx, schedCancel := context.WithCancel(context.Background())
	schedDone := make(chan error, 1)
	go func() { schedDone <- sched.Run(schedCtx) }()
	stops = append(stops, func() {
		schedCancel()
		if serr := <-schedDone; serr != nil {
			log.Error("scheduler", "err", serr)
		}
	})

	nfs := nfsfs.NewNFS(ds, o)
	srv := nfsfs.NewServer(nfsfs.ServerOptions{Logger: log})
	srv.Register(nfs.Program())
	srv.Register(nfsfs.NewMount(nfs, o.Access).Program())
	l, err := net.Listen("tcp", nfsAddr)
	if err != nil {
		return err
	}
	port := uint32(l.Addr().(*net.TCPAddr).Port)
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(l) }()
	stops = append(stops, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if serr := srv.Shutdown(sctx); serr != nil && !errors.Is(serr, context.Canceled) {
			log.Warn("shutdown", "err", serr)
		}
	})
	if pmapAddr != "" {
		pl, err := net.Listen("tcp", pmapAddr)
		if err != nil {
			return err
		}
		pmap := nfsfs.NewServer(nfsfs.ServerOptions{Logger: log})
		const tcp = 6
		pmap.Register(nfsfs.NewPortmap(map[nfsfs.Mapping]uint32{
			{Prog: nfsfs.ProgNFS, Vers: 3, Prot: tcp}:  port,
			{Prog: nfsfs.ProgMNT, Vers: 3, Prot: tcp}:  port,
			{Prog: nfsfs.ProgPMAP, Vers: 2, Prot: tcp}: uint32(pl.Addr().(*net.TCPAddr).Port),
		}))
		go func() { errc <- pmap.Serve(pl) }()
		stops = append(stops, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pmap.Shutdown(sctx)
		})
	}

	ctl, err := control.Listen(svc)
	if err != nil {
		return err
	}
	go func() {
		if cerr := ctl.Serve(); cerr != nil {
			errc <- fmt.Errorf("control socket: %w", cerr)
		}
	}()
	stops = append(stops, func() {
		// First: no control operation runs while the rest stops.
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if serr := ctl.Shutdown(sctx); serr != nil {
			log.Warn("control socket shutdown", "err", serr)
		}
	})

	host, _, _ := net.SplitHostPort(l.Addr().String())
	log.Info("serving NFSv3", "dir", dir, "nfs", l.Addr().String(), "portmap", pmapAddr, "control", ctl.Path())
	fmt.Fprintf(out, "dstore %s serving %s over NFSv3 on %s\n", version, dir, l.Addr())
	fmt.Fprintf(out, "Linux:  mount -t nfs -o vers=3,tcp,nolock,port=%d,mountport=%d %s:/ /mnt\n", port, port, host)
	if pmapAddr != "" {
		fmt.Fprintf(out, "        (with the portmapper: mount -t nfs -o vers=3,nolock %s:/ /mnt)\n", host)
		fmt.Fprintf(out, "ESXi:   esxcli storage nfs add --host %s --share / --volume-name dstore\n", host)
	} else {
		fmt.Fprintf(out, "ESXi:   needs --portmap 0.0.0.0:111 and NFS on port 2049, then: esxcli storage nfs add --host %s --share / --volume-name dstore\n", host)
	}
	fmt.Fprintf(out, "control: %s (dstore group, snapshot, ls, restore, clone, target, export, import, jobs, status, gc use it)\n", ctl.Path())
	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("server stopped", "err", err)
	}
	log.Info("shutting down: draining requests")
	return err
}
