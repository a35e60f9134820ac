package main

// Commands that create a datastore and report on it: init, status.

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/control"
)

func initCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a new, empty datastore in DIR",
		Flags: []cli.Flag{
			dataFlag(),
			&cli.StringFlag{
				Name:  "block-size",
				Usage: "block `SIZE`: a power of two from 4K to 64K, e.g. 16K or 16KiB (default: the store's default)",
			},
			&cli.BoolFlag{
				Name:  "encrypt",
				Usage: "make a datastore key and encrypt every chunk with it",
			},
			&cli.StringFlag{
				Name:  "compression",
				Usage: "compression codec `NAME` (default: the store's default)",
			},
			&cli.BoolFlag{
				Name:  "exist-ok",
				Usage: "succeed without changes if DIR is already a datastore (its settings are not compared)",
			},
		},
		Action: func(c *cli.Context) error {
			dir := dataDir(c)
			opts := blockstore.InitOptions{
				Encrypt:     c.Bool("encrypt"),
				Compression: c.String("compression"),
			}
			if s := c.String("block-size"); s != "" {
				n, err := parseSize(s)
				if err != nil {
					return usagef("--block-size: %v", err)
				}
				if int64(int(n)) != n {
					return usagef("--block-size %s: too large", s)
				}
				opts.BlockSize = int(n)
			}
			if blockstore.IsInitialized(dir) {
				if c.Bool("exist-ok") {
					fmt.Fprintf(c.App.Writer, "%s is already a datastore; left as it is\n", dir)
					return nil
				}
				return fmt.Errorf("%s is already an initialized datastore; refusing to initialize it again", dir)
			}
			if err := blockstore.Init(dir, opts); err != nil {
				return fmt.Errorf("init %s: %w", dir, err)
			}
			g.logger().Debug("initialized datastore", "dir", dir, "block_size", opts.BlockSize,
				"encrypt", opts.Encrypt, "compression", opts.Compression)
			bs := "default"
			if opts.BlockSize != 0 {
				bs = formatIEC(int64(opts.BlockSize))
			}
			enc := "off"
			if opts.Encrypt {
				enc = "on"
			}
			fmt.Fprintf(c.App.Writer, "initialized datastore %s (block size %s, encryption %s)\n", dir, bs, enc)
			return nil
		},
	}
}

func statusCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "report the datastore's size, dedupe and compression ratios, packs, groups and snapshots",
		Flags: ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			dir := dataDir(c)
			return withAPI(c, g, func(api control.API) error {
				st, err := api.Status(c.Context, control.Empty{})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, st)
				}
				var packBytes, liveBytes int64
				for _, p := range st.Packs {
					packBytes += p.Bytes
					liveBytes += p.LiveBytes
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "datastore\t%s\n", dir)
				fmt.Fprintf(w, "block size\t%s\n", formatIEC(int64(st.BlockSize)))
				fmt.Fprintf(w, "volumes\t%d (%d layers)\n", st.Volumes, st.Layers)
				fmt.Fprintf(w, "logical\t%s\n", formatIEC(st.LogicalBytes))
				fmt.Fprintf(w, "unique\t%s in %d chunks\n", formatIEC(st.UniqueBytes), st.Chunks)
				fmt.Fprintf(w, "stored\t%s\n", formatIEC(st.StoredBytes))
				fmt.Fprintf(w, "physical\t%s in %d packs (%s live)\n",
					formatIEC(st.PhysicalBytes), len(st.Packs), formatPercent(liveBytes, packBytes))
				fmt.Fprintf(w, "log\t%s\n", formatIEC(st.LogBytes))
				fmt.Fprintf(w, "dedupe ratio\t%s\n", formatRatio(st.DedupeRatio))
				fmt.Fprintf(w, "compression ratio\t%s\n", formatRatio(st.CompressionRatio))
				fmt.Fprintf(w, "groups\t%d\n", st.Groups)
				fmt.Fprintf(w, "snapshots\t%d\n", st.SnapshotCount)
				fmt.Fprintf(w, "fetched from targets\t%s\n", formatIEC(st.RemoteBytesFetched))
				if err := w.Flush(); err != nil {
					return err
				}
				if len(st.Snapshots) == 0 {
					return nil
				}
				// Unique: what deleting the snapshot alone, and a GC, frees.
				w = tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "\nSNAPSHOT\tGROUP\tLOGICAL\tUNIQUE")
				for _, u := range st.Snapshots {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", u.ID, u.Group, formatIEC(int64(u.LogicalBytes)), formatIEC(int64(u.UniqueBytes)))
				}
				return w.Flush()
			})
		},
	}
}
