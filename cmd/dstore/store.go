package main

// Commands that create a datastore and report on it: init, status.

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
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
			dir := c.String("data")
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

// statusJSON is the --json form of blockstore.Stats. Field names are part
// of the CLI's interface: add fields, do not rename them.
type statusJSON struct {
	BlockSize        int            `json:"block_size"`
	Volumes          int            `json:"volumes"`
	Layers           int            `json:"layers"`
	Chunks           int64          `json:"chunks"`
	LogicalBytes     int64          `json:"logical_bytes"`
	UniqueBytes      int64          `json:"unique_bytes"`
	StoredBytes      int64          `json:"stored_bytes"`
	PhysicalBytes    int64          `json:"physical_bytes"`
	LogBytes         int64          `json:"log_bytes"`
	DedupeRatio      float64        `json:"dedupe_ratio"`
	CompressionRatio float64        `json:"compression_ratio"`
	Packs            []packStatJSON `json:"packs"`
}

type packStatJSON struct {
	ID        uint64  `json:"id"`
	Bytes     int64   `json:"bytes"`
	LiveBytes int64   `json:"live_bytes"`
	Chunks    int64   `json:"chunks"`
	Live      float64 `json:"live"`
}

func newStatusJSON(st blockstore.Stats) statusJSON {
	out := statusJSON{
		BlockSize:        st.BlockSize,
		Volumes:          st.Volumes,
		Layers:           st.Layers,
		Chunks:           st.Chunks,
		LogicalBytes:     st.LogicalBytes,
		UniqueBytes:      st.UniqueBytes,
		StoredBytes:      st.StoredBytes,
		PhysicalBytes:    st.PhysicalBytes,
		LogBytes:         st.LogBytes,
		DedupeRatio:      finite(st.DedupeRatio),
		CompressionRatio: finite(st.CompressionRatio),
		Packs:            make([]packStatJSON, 0, len(st.Packs)),
	}
	for _, p := range st.Packs {
		out.Packs = append(out.Packs, packStatJSON{
			ID: p.ID, Bytes: p.Bytes, LiveBytes: p.LiveBytes, Chunks: p.Chunks, Live: finite(p.Live),
		})
	}
	return out
}

func statusCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "report the datastore's size, dedupe and compression ratios, and packs",
		Flags: []cli.Flag{dataFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			dir := c.String("data")
			return withStore(g, dir, func(s *blockstore.Store) error {
				st, err := s.Stats()
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, newStatusJSON(st))
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
				return w.Flush()
			})
		},
	}
}

// withStore opens the datastore in dir, runs fn and closes the store. An
// error from Close is returned when fn succeeded, logged otherwise.
func withStore(g *globals, dir string, fn func(*blockstore.Store) error) (err error) {
	if !blockstore.IsInitialized(dir) {
		return fmt.Errorf("%s is not an initialized datastore (create one with: dstore init --data %s)", dir, dir)
	}
	// The namespace comes along: its records in the log must destage too.
	ds, err := snapstore.Open(dir, blockstore.Options{Logger: g.logger()})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("open %s: the datastore is in use by another process (is dstore serve running?)", dir)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	s := ds.Blocks
	defer func() {
		cerr := ds.Close()
		if cerr == nil {
			return
		}
		if err == nil {
			err = fmt.Errorf("close %s: %w", dir, cerr)
		} else {
			g.logger().Error("close datastore", "dir", dir, "err", cerr)
		}
	}()
	return fn(s)
}
