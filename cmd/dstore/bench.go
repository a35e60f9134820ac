package main

// dstore bench: load generators. `bench nfs` drives any NFSv3 server.

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/bench/nfsload"
	"github.com/dstore/dstore/nfsfs"
)

func benchCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:            "bench",
		Usage:           "load generators (see 'dstore bench nfs --help')",
		HideHelpCommand: true,
		OnUsageError:    onUsageError,
		Subcommands:     []*cli.Command{leaf(benchNFSCommand(g))},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("bench: unknown load generator %q (see 'dstore bench --help')", c.Args().First())
			}
			_ = cli.ShowSubcommandHelp(c)
			return usagef("bench: which one? (nfs)")
		},
	}
}

func benchNFSCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "nfs",
		Usage: "drive an NFSv3 server (any, over TCP, no kernel mount) and report MB/s, IOPS and latency",
		Description: "Mounts --export with MOUNT v3, makes the directory " + nfsload.WorkDir + " in it and a test file there,\n" +
			"and keeps --qd calls outstanding on each of --conns connections for --duration.\n" +
			"Workloads: seqwrite, seqread, randwrite, randread, mixed (70% reads), metadata\n" +
			"(create, write --bs bytes, GETATTR, LOOKUP and remove batches of small files).\n" +
			"Read workloads fill the file first (not timed). Unstable writes end with a COMMIT,\n" +
			"counted in the time. MB are 10^6 bytes.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Usage: "NFS server `HOST:PORT` (required)"},
			&cli.IntFlag{Name: "mount-port", Usage: "MOUNT `PORT` (default: the portmapper on port 111 if it maps NFS to --server's port, else the NFS port)"},
			&cli.StringFlag{Name: "export", Value: "/", Usage: "export `PATH` to mount"},
			&cli.StringFlag{Name: "workload", Usage: "`NAME` (required): " + strings.Join(nfsload.Workloads, ", ")},
			&cli.StringFlag{Name: "bs", Usage: "bytes per READ or WRITE, a multiple of 4K (default 1M for seq*, 4K otherwise); metadata: bytes per file", DefaultText: "1M or 4K"},
			&cli.IntFlag{Name: "qd", Value: 16, Usage: "calls outstanding per connection"},
			&cli.IntFlag{Name: "conns", Value: 1, Usage: "TCP connections"},
			&cli.StringFlag{Name: "size", Value: "256M", Usage: "test file `SIZE`"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long to issue calls"},
			&cli.StringFlag{Name: "stable", Value: "unstable", Usage: "WRITE stability: unstable (then COMMIT), datasync or filesync"},
			&cli.BoolFlag{Name: "verify", Usage: "check every block read, and read back and check every block written"},
			&cli.StringFlag{Name: "file", Usage: "test file `NAME` under " + nfsload.WorkDir + "/ (default: a new one per run)"},
			&cli.BoolFlag{Name: "keep", Usage: "leave the test file; a read workload reuses a kept file that holds the data"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "data pattern seed"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			cfg, err := benchNFSConfig(c)
			if err != nil {
				return err
			}
			if !c.Bool("json") {
				cfg.Log = c.App.ErrWriter
			}
			g.logger().Debug("bench nfs", "server", cfg.Server, "workload", cfg.Workload)
			res, err := nfsload.Run(c.Context, cfg)
			if err != nil {
				return fmt.Errorf("bench nfs: %w", err)
			}
			if c.Bool("json") {
				if err := writeJSON(c.App.Writer, res); err != nil {
					return err
				}
			} else {
				printBenchNFS(c.App.Writer, res)
			}
			if res.Errors > 0 {
				return fmt.Errorf("bench nfs: %d calls or blocks failed; the first: %s", res.Errors, res.FirstError)
			}
			return nil
		},
	}
}

func benchNFSConfig(c *cli.Context) (nfsload.Config, error) {
	cfg := nfsload.Config{
		Server:    c.String("server"),
		MountPort: c.Int("mount-port"),
		Export:    c.String("export"),
		Workload:  c.String("workload"),
		QD:        c.Int("qd"),
		Conns:     c.Int("conns"),
		Duration:  c.Duration("duration"),
		Verify:    c.Bool("verify"),
		File:      c.String("file"),
		Keep:      c.Bool("keep"),
		Seed:      c.Uint64("seed"),
	}
	if cfg.Server == "" {
		return cfg, usagef("bench nfs: --server HOST:PORT is required")
	}
	known := false
	for _, w := range nfsload.Workloads {
		known = known || w == cfg.Workload
	}
	if !known {
		return cfg, usagef("--workload %q: want one of %s", cfg.Workload, strings.Join(nfsload.Workloads, ", "))
	}
	switch cfg.BS = 4096; {
	case c.IsSet("bs"):
		n, err := parseSize(c.String("bs"))
		if err != nil {
			return cfg, usagef("--bs: %v", err)
		}
		if n > 16<<20 {
			return cfg, usagef("--bs %s: at most 16M", c.String("bs"))
		}
		cfg.BS = int(n)
	case cfg.Workload == nfsload.SeqWrite || cfg.Workload == nfsload.SeqRead:
		cfg.BS = 1 << 20
	}
	if cfg.Workload != nfsload.Metadata && (cfg.BS < nfsload.Unit || cfg.BS%nfsload.Unit != 0) {
		return cfg, usagef("--bs %s: want a multiple of 4K", c.String("bs"))
	}
	size, err := parseSize(c.String("size"))
	if err != nil {
		return cfg, usagef("--size: %v", err)
	}
	cfg.Size = size
	if cfg.Workload != nfsload.Metadata && size < int64(cfg.BS) {
		return cfg, usagef("--size %s is smaller than --bs", c.String("size"))
	}
	switch c.String("stable") {
	case "unstable":
		cfg.Stable = nfsfs.StableUnstable
	case "datasync":
		cfg.Stable = nfsfs.StableDataSync
	case "filesync":
		cfg.Stable = nfsfs.StableFileSync
	default:
		return cfg, usagef("--stable %q: want unstable, datasync or filesync", c.String("stable"))
	}
	switch {
	case cfg.QD < 1 || cfg.QD > 4096:
		return cfg, usagef("--qd %d: want 1 to 4096", cfg.QD)
	case cfg.Conns < 1 || cfg.Conns > 256:
		return cfg, usagef("--conns %d: want 1 to 256", cfg.Conns)
	case cfg.Duration <= 0:
		return cfg, usagef("--duration %v: want a positive duration such as 10s", cfg.Duration)
	case cfg.MountPort < 0 || cfg.MountPort > 65535:
		return cfg, usagef("--mount-port %d: want 1 to 65535", cfg.MountPort)
	}
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return cfg, usagef("--server %q: want HOST:PORT", cfg.Server)
	}
	return cfg, nil
}

func printBenchNFS(w io.Writer, r nfsload.Result) {
	conns := "connection"
	if r.Conns != 1 {
		conns += "s"
	}
	what := fmt.Sprintf("%s, %s per call, QD %d on %d %s, file %s", r.Workload, formatIEC(int64(r.BS)), r.QD, r.Conns, conns, formatIEC(r.Size))
	if r.Workload == nfsload.Metadata {
		what = fmt.Sprintf("%s, %s per file, QD %d on %d %s", r.Workload, formatIEC(int64(r.BS)), r.QD, r.Conns, conns)
	}
	fmt.Fprintf(w, "%s against %s (%s writes)\n", what, r.Server, r.Stable)
	fmt.Fprintf(w, "  %d ops in %.2fs, %s, %d errors\n", r.Ops, r.Seconds, formatIEC(r.Bytes), r.Errors)
	fmt.Fprintf(w, "  %.1f MB/s, %.0f IOPS\n", r.MBPerS, r.IOPS)
	fmt.Fprintf(w, "  latency: mean %.0f us, p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us\n",
		r.MeanUs, r.P50Us, r.P99Us, r.P999Us, r.MaxUs)
	if r.CommitUs > 0 {
		fmt.Fprintf(w, "  final COMMIT: %.0f us\n", r.CommitUs)
	}
	if r.Files > 0 {
		fmt.Fprintf(w, "  %d files created, stat'ed and removed\n", r.Files)
	}
	if r.Verified > 0 {
		fmt.Fprintf(w, "  %s verified\n", formatIEC(r.Verified))
	}
}
