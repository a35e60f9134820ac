package main

// Maintenance commands: verify (scrub) and gc.

import (
	"fmt"
	"math"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/control"
)

func verifyCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "read and check every chunk; exit 1 if any is corrupt",
		Flags: ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			return withAPI(c, g, func(api control.API) error {
				r, err := api.Verify(c.Context, control.Empty{})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					if err := writeJSON(c.App.Writer, r); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(c.App.Writer, "checked %d chunks (%s)\n", r.ChunksChecked, formatIEC(r.BytesChecked))
					for _, b := range r.Corrupt {
						fmt.Fprintf(c.App.Writer, "corrupt: chunk %d in pack %d at offset %d: %s\n", b.Chunk, b.Pack, b.Offset, b.Error)
					}
					if len(r.Corrupt) == 0 {
						fmt.Fprintln(c.App.Writer, "no corruption found")
					}
				}
				if n := len(r.Corrupt); n > 0 {
					return fmt.Errorf("verify: %d of %d chunks are corrupt", n, r.ChunksChecked)
				}
				return nil
			})
		},
	}
}

func gcCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "free chunks no layer references and compact packs that are mostly dead",
		Flags: ctlFlags(
			&cli.BoolFlag{Name: "dry-run", Usage: "plan only: report what would be freed and change nothing"},
			&cli.Float64Flag{
				Name:  "threshold",
				Usage: "compact packs whose live fraction is below `F`, between 0 and 1 (0: the store's default)",
			},
			jsonFlag(),
		),
		Action: func(c *cli.Context) error {
			opts := control.GCArgs{DryRun: c.Bool("dry-run"), Threshold: c.Float64("threshold")}
			if t := opts.Threshold; math.IsNaN(t) || t < 0 || t > 1 {
				return usagef("--threshold %v: want a fraction between 0 and 1", t)
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.GC(c.Context, opts)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				free, del, comp := "freed", "deleted", "compacted"
				if opts.DryRun {
					fmt.Fprintln(c.App.Writer, "dry run: nothing was changed")
					free, del, comp = "would free", "would delete", "would compact"
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "%s\t%d chunks (%s)\n", free, r.ChunksFreed, formatIEC(r.BytesFreed))
				fmt.Fprintf(w, "%s\t%d packs\n", del, r.PacksDeleted)
				fmt.Fprintf(w, "%s\t%d packs, rewriting %s\n", comp, r.PacksCompacted, formatIEC(r.BytesRewritten))
				return w.Flush()
			})
		},
	}
}
