package main

// dstore snapshot ..., ls, restore, clone.

import (
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/control"
)

func snapshotCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "snapshots of protection groups",
		Subcommands: []*cli.Command{
			sub(snapshotCreateCommand(g)),
			sub(snapshotListCommand(g)),
			sub(snapshotShowCommand(g)),
			sub(snapshotDeleteCommand(g)),
		},
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("snapshot: unknown command %q (see 'dstore snapshot --help')", c.Args().First())
			}
			_ = cli.ShowSubcommandHelp(c)
			return usagef("snapshot: no command given")
		},
	}
}

func snapshotCreateCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "freeze every member of a group at one instant (no data is copied)",
		ArgsUsage: "GROUP",
		Flags:     ctlFlags(&cli.StringFlag{Name: "label", Usage: "label the snapshot with `TEXT`"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the GROUP")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				s, err := api.SnapshotCreate(c.Context, control.SnapshotCreateArgs{Group: a[0], Label: c.String("label")})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, s)
				}
				fmt.Fprintf(c.App.Writer, "created snapshot %s of group %s: %s, %s\n", s.ID, s.Group, plural(len(s.Members), "member"), formatIEC(int64(s.Size)))
				return nil
			})
		},
	}
}

func snapshotListCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list snapshots, oldest first",
		Flags: ctlFlags(&cli.StringFlag{Name: "group", Usage: "only the snapshots of `GROUP`"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, ""); err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				ss, err := api.SnapshotList(c.Context, control.SnapshotListArgs{Group: c.String("group")})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, ss)
				}
				if len(ss) == 0 {
					fmt.Fprintln(c.App.Writer, "no snapshots")
					return nil
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tGROUP\tCREATED\tMEMBERS\tSIZE\tBY\tLABEL")
				for _, s := range ss {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Group, formatTime(s.Created), len(s.Members),
						formatIEC(int64(s.Size)), by(s.Scheduled), s.Label)
				}
				return w.Flush()
			})
		},
	}
}

func by(scheduled bool) string {
	if scheduled {
		return "schedule"
	}
	return "manual"
}

func snapshotShowCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "describe a snapshot: its members and their sizes",
		ArgsUsage: "ID",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the snapshot ID")
			if err != nil {
				return err
			}
			if err := checkID(a[0]); err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				s, err := api.SnapshotShow(c.Context, control.IDArgs{ID: a[0]})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, s)
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "snapshot\t%s\n", s.ID)
				fmt.Fprintf(w, "group\t%s\n", s.Group)
				fmt.Fprintf(w, "created\t%s\n", formatTime(s.Created))
				if s.Label != "" {
					fmt.Fprintf(w, "label\t%s\n", s.Label)
				}
				fmt.Fprintf(w, "taken by\t%s\n", by(s.Scheduled))
				fmt.Fprintf(w, "members\t%s, %s\n", plural(len(s.Members), "file"), formatIEC(int64(s.Size)))
				fmt.Fprintf(w, "unique\t%s in %d chunks (freed by deleting it, and a GC)\n", formatIEC(int64(s.UniqueBytes)), s.UniqueChunks)
				if err := w.Flush(); err != nil {
					return err
				}
				w = tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "\nMEMBER\tSIZE\tMODE\tOWNER\tMODIFIED")
				for _, m := range s.Details {
					fmt.Fprintf(w, "%s\t%d\t%s\t%d:%d\t%s\n", m.Path, m.Size, m.Mode, m.UID, m.GID, formatTime(m.Mtime))
				}
				return w.Flush()
			})
		},
	}
}

func snapshotDeleteCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Usage:     "delete a snapshot (clones made from it live on)",
		ArgsUsage: "ID",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the snapshot ID")
			if err != nil {
				return err
			}
			if err := checkID(a[0]); err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.SnapshotDelete(c.Context, control.IDArgs{ID: a[0]})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				fmt.Fprintf(c.App.Writer, "deleted snapshot %s\n", r.ID)
				return nil
			})
		},
	}
}

func lsCommand(g *globals) *cli.Command {
	return sub(&cli.Command{
		Name: "ls",
		Usage: "browse the snapstore: no argument lists the groups and their snapshots, SNAPSHOT its whole member tree, " +
			"SNAPSHOT:PATH a directory of it (or the file)",
		ArgsUsage: "[SNAPSHOT[:PATH]]",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1, "")
			if err != nil {
				return err
			}
			var req control.LsArgs
			if len(a) == 1 {
				id, p, hasPath := strings.Cut(a[0], ":")
				if err := checkID(id); err != nil {
					return err
				}
				req.Snapshot = id
				if hasPath {
					if req.Path, err = checkPath(p, "path"); err != nil {
						return err
					}
					req.HasPath = true
				}
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.Ls(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r.Entries)
				}
				if req.Snapshot == "" {
					return printGroupsTree(c.App.Writer, r.Entries)
				}
				return printEntries(c.App.Writer, r.Entries)
			})
		},
	})
}

func printGroupsTree(w io.Writer, es []control.Entry) error {
	if len(es) == 0 {
		_, err := fmt.Fprintln(w, "no protection groups")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range es {
		if e.Type == "group" {
			// No cells: ends the block of the previous group's snapshots.
			fmt.Fprintf(tw, "%s/\n", e.Name)
			continue
		}
		fmt.Fprintf(tw, "  %s/\t%s\t%s", e.Name, formatTime(e.Mtime), plural(e.Members, "member"))
		if e.Label != "" {
			fmt.Fprintf(tw, "\t%s", e.Label)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// printEntries prints entries as ls -l does: mode, owner, size in bytes,
// modification time, path (directories end in '/').
func printEntries(w io.Writer, es []control.Entry) error {
	for _, e := range es {
		mode := e.Mode
		if m, err := strconv.ParseUint(e.Mode, 8, 32); err == nil {
			fm := fs.FileMode(m) & fs.ModePerm
			if e.Type == "dir" {
				fm |= fs.ModeDir
			}
			mode = fm.String()
		}
		name := e.Path
		if e.Type == "dir" {
			name += "/"
		}
		if _, err := fmt.Fprintf(w, "%s %5d %5d %14d %s %s\n", mode, e.UID, e.GID, e.Size, e.Mtime.Local().Format("2006-01-02 15:04"), name); err != nil {
			return err
		}
	}
	return nil
}

func restoreCommand(g *globals) *cli.Command {
	return sub(&cli.Command{
		Name: "restore",
		Usage: "revert live files to a snapshot, at once: the PATHs given, or every member; a file keeps its handle " +
			"(clients see a new change time and drop their caches); a member whose file is gone is made again",
		ArgsUsage: "ID [PATH...]",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, -1, "the snapshot ID")
			if err != nil {
				return err
			}
			if err := checkID(a[0]); err != nil {
				return err
			}
			req := control.RestoreArgs{ID: a[0]}
			for _, p := range a[1:] {
				cp, err := checkPath(p, "path")
				if err != nil {
					return err
				}
				req.Paths = append(req.Paths, cp)
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.Restore(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				for _, p := range r.Restored {
					fmt.Fprintf(c.App.Writer, "restored %s from %s\n", p, r.ID)
				}
				return nil
			})
		},
	})
}

func cloneCommand(g *globals) *cli.Command {
	return sub(&cli.Command{
		Name: "clone",
		Usage: "make a new live file from a snapshot member (ID:PATH), or with --live from a live file, at once " +
			"and without copying data; the clone outlives the snapshot",
		ArgsUsage: "ID:PATH NEWPATH | --live PATH NEWPATH",
		Flags:     ctlFlags(&cli.BoolFlag{Name: "live", Usage: "clone the live file PATH (through an implicit snapshot)"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 2, 2, "the source and NEWPATH")
			if err != nil {
				return err
			}
			np, err := checkPath(a[1], "NEWPATH")
			if err != nil {
				return err
			}
			if np == "" {
				return usagef("clone: NEWPATH %q names the root; want a file path", a[1])
			}
			var req control.CloneArgs
			req.NewPath = np
			if c.Bool("live") {
				if req.Path, err = checkPath(a[0], "PATH"); err != nil {
					return err
				}
			} else {
				id, p, ok := strings.Cut(a[0], ":")
				if !ok {
					return usagef("clone: %q: want ID:PATH (a snapshot member), or --live PATH for a live file", a[0])
				}
				if err := checkID(id); err != nil {
					return err
				}
				req.ID = id
				if req.Member, err = checkPath(p, "PATH"); err != nil {
					return err
				}
			}
			return withAPI(c, g, func(api control.API) error {
				var r control.CloneResult
				var err error
				if c.Bool("live") {
					r, err = api.CloneLive(c.Context, req)
				} else {
					r, err = api.Clone(c.Context, req)
				}
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				fmt.Fprintf(c.App.Writer, "cloned %s to %s (%s)\n", r.From, r.Path, formatIEC(int64(r.Size)))
				return nil
			})
		},
	})
}
