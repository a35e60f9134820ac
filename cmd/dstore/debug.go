package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/control"
)

func debugCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "debug",
		Usage: "look inside a running daemon",
		Subcommands: []*cli.Command{
			sub(debugPprofCommand(g)),
		},
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("debug: unknown command %q (see 'dstore debug --help')", c.Args().First())
			}
			_ = cli.ShowSubcommandHelp(c)
			return usagef("debug: no command given")
		},
	}
}

// debugPprofCommand takes a runtime profile of the daemon through its
// control socket, for `go tool pprof`.
func debugPprofCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "pprof",
		Usage: "save a profile of the running daemon for 'go tool pprof' (CPU by default)",
		Description: "Examples:\n" +
			"   dstore debug pprof --data /srv/ds --seconds 30 --out cpu.pprof   # CPU, while the load runs\n" +
			"   dstore debug pprof --data /srv/ds --profile heap --out heap.pprof\n" +
			"   go tool pprof -top bin/dstore cpu.pprof",
		Flags: []cli.Flag{
			dataFlag(),
			&cli.StringFlag{Name: "profile", Value: "cpu", Usage: "`NAME`: cpu, trace, heap, allocs, goroutine, mutex, block, threadcreate"},
			&cli.IntFlag{Name: "seconds", Value: 30, Usage: "how long a cpu profile or trace runs (1 to 600)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "write the profile to `FILE` (- for standard output)", TakesFile: true},
		},
		Action: func(c *cli.Context) error {
			name := c.String("profile")
			secs := 0
			switch name {
			case "cpu":
				name = "profile"
				fallthrough
			case "profile", "trace":
				secs = c.Int("seconds")
				if secs < 1 || secs > 600 {
					return usagef("--seconds %d: want 1 to 600", secs)
				}
			}
			dir := dataDir(c)
			cl, err := control.Dial(c.Context, dir)
			if err != nil {
				if errors.Is(err, control.ErrNoDaemon) {
					return fmt.Errorf("%w: a profile is taken of a running 'dstore serve'", err)
				}
				return err
			}
			defer cl.Close()
			out := c.String("out")
			if out == "-" {
				return cl.Profile(c.Context, name, secs, c.App.Writer)
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), ".pprof-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if secs > 0 {
				fmt.Fprintf(c.App.ErrWriter, "profiling the daemon on %s for %d s...\n", dir, secs)
			}
			if err := cl.Profile(c.Context, name, secs, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "wrote %s\n", out)
			return nil
		},
	}
}
