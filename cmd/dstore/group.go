package main

// dstore group ...: protection groups; dstore retention.

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/control"
	"github.com/dstore/dstore/snapstore"
)

// specFlags are the flags group create and group edit share.
func specFlags(edit bool) []cli.Flag {
	match := "member `GLOB` (repeatable): a pattern without '/' matches a file name at any depth (*db*), " +
		"one with '/' the whole path (vms/web-*/*.vmdk, ** for any depth); a directory's files are all members"
	sched := "cron `EXPR` (repeatable): 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, ...; " +
		"runs while dstore serve runs"
	target := "export every snapshot of the group to `TARGET` (repeatable; see dstore target add); dstore target prune then applies the retention there too"
	if edit {
		match = "replace the member patterns with these `GLOB`s (repeatable; see also --add-match, --remove-match)"
		sched = "replace the schedules with these cron `EXPR`s (repeatable)"
		target = "replace the targets with these (repeatable)"
	}
	fs := []cli.Flag{
		&cli.StringSliceFlag{Name: "match", Usage: match},
		&cli.StringSliceFlag{Name: "schedule", Usage: sched},
		&cli.IntFlag{Name: "keep-last", Usage: "retention: keep the `N` newest snapshots"},
		&cli.StringFlag{Name: "keep-within", Usage: "retention: keep the snapshots taken within `DURATION` (72h, 7d, 2w) of the newest"},
		&cli.IntFlag{Name: "keep-hourly", Usage: "retention: keep the newest snapshot of each of the last `N` hours that have one"},
		&cli.IntFlag{Name: "keep-daily", Usage: "retention: keep the newest snapshot of each of the last `N` days that have one"},
		&cli.IntFlag{Name: "keep-weekly", Usage: "retention: keep the newest snapshot of each of the last `N` weeks that have one"},
		&cli.StringSliceFlag{Name: "target", Usage: target},
		jsonFlag(),
	}
	if edit {
		fs = append(fs,
			&cli.StringSliceFlag{Name: "add-match", Usage: "add member `GLOB`s (repeatable)"},
			&cli.StringSliceFlag{Name: "remove-match", Usage: "remove member `GLOB`s (repeatable; each must be one of the group's)"},
			&cli.BoolFlag{Name: "no-schedule", Usage: "remove every schedule"},
			&cli.BoolFlag{Name: "no-target", Usage: "remove every target"},
		)
	}
	return ctlFlags(fs...)
}

func checkPatterns(flag string, ps []string) error {
	for _, p := range ps {
		if err := snapstore.ValidPattern(p); err != nil {
			return usagef("--%s: %v", flag, err)
		}
	}
	return nil
}

func checkSchedules(ss []string) error {
	for _, e := range ss {
		if _, err := snapstore.ParseSchedule(e); err != nil {
			return usagef("--schedule: %v", err)
		}
	}
	return nil
}

// retentionFlag reads one count rule; set reports whether it was given.
func retentionFlag(c *cli.Context, name string) (n int, set bool, err error) {
	if !c.IsSet(name) {
		return 0, false, nil
	}
	n = c.Int(name)
	if n < 0 {
		return 0, false, usagef("--%s %d: want 0 (no rule) or more", name, n)
	}
	return n, true, nil
}

func keepWithin(c *cli.Context) (*snapstore.Duration, error) {
	if !c.IsSet("keep-within") {
		return nil, nil
	}
	d, err := snapstore.ParseDuration(c.String("keep-within"))
	if err != nil {
		return nil, usagef("--keep-within: %v", err)
	}
	return &d, nil
}

func groupCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "group",
		Usage: "protection groups: member patterns, schedules and retention",
		Subcommands: []*cli.Command{
			sub(groupCreateCommand(g)),
			sub(groupListCommand(g)),
			sub(groupShowCommand(g)),
			sub(groupEditCommand(g)),
			sub(groupDeleteCommand(g)),
			sub(groupRunCommand(g)),
			sub(groupPruneCommand(g, "prune")),
		},
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("group: unknown command %q (see 'dstore group --help')", c.Args().First())
			}
			_ = cli.ShowSubcommandHelp(c)
			return usagef("group: no command given")
		},
	}
}

// sub finishes a subcommand: flag errors are usage errors.
func sub(cmd *cli.Command) *cli.Command {
	cmd.OnUsageError = onUsageError
	cmd.HideHelpCommand = true
	return cmd
}

func groupCreateCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "make a protection group",
		ArgsUsage: "NAME --match GLOB [--match GLOB...]",
		Flags:     specFlags(false),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the group NAME")
			if err != nil {
				return err
			}
			if err := checkGroupName(a[0]); err != nil {
				return err
			}
			req := control.GroupCreateArgs{Name: a[0], Match: c.StringSlice("match"), Schedules: c.StringSlice("schedule"),
				Targets: c.StringSlice("target")}
			if len(req.Match) == 0 {
				return usagef("group create: at least one --match GLOB is needed")
			}
			if err := checkPatterns("match", req.Match); err != nil {
				return err
			}
			if err := checkSchedules(req.Schedules); err != nil {
				return err
			}
			r := &req.Retention
			for _, f := range []struct {
				name string
				dst  *int
			}{{"keep-last", &r.KeepLast}, {"keep-hourly", &r.KeepHourly}, {"keep-daily", &r.KeepDaily}, {"keep-weekly", &r.KeepWeekly}} {
				n, _, err := retentionFlag(c, f.name)
				if err != nil {
					return err
				}
				*f.dst = n
			}
			kw, err := keepWithin(c)
			if err != nil {
				return err
			}
			if kw != nil {
				r.KeepWithin = *kw
			}
			return withAPI(c, g, func(api control.API) error {
				gd, err := api.GroupCreate(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, gd)
				}
				fmt.Fprintf(c.App.Writer, "created group %s\n", gd.Name)
				return printGroup(c.App.Writer, gd)
			})
		},
	}
}

func groupListCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the protection groups",
		Flags: ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, ""); err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				gs, err := api.GroupList(c.Context, control.Empty{})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, gs)
				}
				if len(gs) == 0 {
					fmt.Fprintln(c.App.Writer, "no protection groups (make one with: dstore group create NAME --match GLOB)")
					return nil
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "GROUP\tSNAPSHOTS\tLATEST\tMATCH\tSCHEDULES\tRETENTION\tNEXT RUN\tMISSED")
				for _, gr := range gs {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", gr.Name, gr.Snapshots, dash(gr.Latest),
						strings.Join(gr.Match, " "), dash(strings.Join(gr.Schedules, ", ")), gr.Policy,
						optTime(gr.NextRun), missedShort(gr.Missed))
				}
				return w.Flush()
			})
		},
	}
}

func groupShowCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "describe a protection group and the files it matches now",
		ArgsUsage: "NAME",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the group NAME")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				gd, err := api.GroupShow(c.Context, control.NameArgs{Name: a[0]})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, gd)
				}
				return printGroup(c.App.Writer, gd)
			})
		},
	}
}

func groupEditCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "edit",
		Usage: "change a protection group: --match replaces the patterns, --add-match and --remove-match change them; --schedule replaces the schedules, --no-schedule drops them; each --keep-* sets its rule (0 drops it)",
		ArgsUsage: "NAME [--match GLOB...] [--add-match GLOB...] [--remove-match GLOB...] [--schedule CRON... | --no-schedule] " +
			"[--keep-last N] [--keep-within DURATION] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--target T... | --no-target]",
		Flags: specFlags(true),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the group NAME")
			if err != nil {
				return err
			}
			req := control.GroupEditArgs{Name: a[0], Match: c.StringSlice("match"), AddMatch: c.StringSlice("add-match"),
				RemoveMatch: c.StringSlice("remove-match"), Schedules: c.StringSlice("schedule"), NoSchedule: c.Bool("no-schedule"),
				Targets: c.StringSlice("target"), NoTarget: c.Bool("no-target")}
			for _, f := range []struct {
				name string
				ps   []string
			}{{"match", req.Match}, {"add-match", req.AddMatch}} {
				if err := checkPatterns(f.name, f.ps); err != nil {
					return err
				}
			}
			if len(req.Schedules) > 0 && req.NoSchedule {
				return usagef("group edit: --schedule and --no-schedule together")
			}
			if len(req.Targets) > 0 && req.NoTarget {
				return usagef("group edit: --target and --no-target together")
			}
			if err := checkSchedules(req.Schedules); err != nil {
				return err
			}
			changed := len(req.Match)+len(req.AddMatch)+len(req.RemoveMatch)+len(req.Schedules)+len(req.Targets) > 0 || req.NoSchedule || req.NoTarget
			for _, f := range []struct {
				name string
				dst  **int
			}{{"keep-last", &req.KeepLast}, {"keep-hourly", &req.KeepHourly}, {"keep-daily", &req.KeepDaily}, {"keep-weekly", &req.KeepWeekly}} {
				n, set, err := retentionFlag(c, f.name)
				if err != nil {
					return err
				}
				if set {
					*f.dst = &n
					changed = true
				}
			}
			if req.KeepWithin, err = keepWithin(c); err != nil {
				return err
			}
			if req.KeepWithin != nil {
				changed = true
			}
			if !changed {
				return usagef("group edit %s: nothing to change (see 'dstore group edit --help')", a[0])
			}
			return withAPI(c, g, func(api control.API) error {
				gd, err := api.GroupEdit(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, gd)
				}
				fmt.Fprintf(c.App.Writer, "changed group %s\n", gd.Name)
				return printGroup(c.App.Writer, gd)
			})
		},
	}
}

func groupDeleteCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Usage:     "delete a protection group (one with snapshots only with --with-snapshots, which deletes them too)",
		ArgsUsage: "NAME",
		Flags: ctlFlags(&cli.BoolFlag{Name: "with-snapshots", Usage: "delete the group's snapshots too"},
			jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the group NAME")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.GroupDelete(c.Context, control.GroupDeleteArgs{Name: a[0], WithSnapshots: c.Bool("with-snapshots")})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				fmt.Fprintf(c.App.Writer, "deleted group %s\n", r.Name)
				for _, id := range r.DeletedSnapshots {
					fmt.Fprintf(c.App.Writer, "deleted snapshot %s\n", id)
				}
				return nil
			})
		},
	}
}

func groupRunCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "take a snapshot of the group now and apply its retention (what a system crontab calls)",
		ArgsUsage: "NAME",
		Flags:     ctlFlags(&cli.StringFlag{Name: "label", Usage: "label the snapshot with `TEXT`"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the group NAME")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.GroupRun(c.Context, control.GroupRunArgs{Name: a[0], Label: c.String("label")})
				if r.ID != "" {
					if c.Bool("json") {
						if jerr := writeJSON(c.App.Writer, r); jerr != nil && err == nil {
							err = jerr
						}
						return err
					}
					s := r.Snapshot
					fmt.Fprintf(c.App.Writer, "snapshot %s of group %s: %s, %s\n", s.ID, s.Group, plural(len(s.Members), "member"), formatIEC(int64(s.Size)))
					fmt.Fprintf(c.App.Writer, "retention (%s): kept %d, deleted %d\n", r.Policy, len(r.Kept), len(r.Deleted))
					for _, id := range r.Deleted {
						fmt.Fprintf(c.App.Writer, "deleted snapshot %s\n", id)
					}
					printExportStarts(c.App.Writer, r.Exports)
				}
				return err
			})
		},
	}
}

func groupPruneCommand(g *globals, name string) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     "apply a group's retention now: delete the snapshots its policy does not keep (--dry-run: show the plan only)",
		ArgsUsage: "GROUP",
		Flags:     ctlFlags(&cli.BoolFlag{Name: "dry-run", Usage: "show the plan, delete nothing"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the GROUP")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.GroupPrune(c.Context, control.PruneArgs{Name: a[0], DryRun: c.Bool("dry-run")})
				if r.Group == "" {
					return err
				}
				if c.Bool("json") {
					if jerr := writeJSON(c.App.Writer, r); jerr != nil && err == nil {
						err = jerr
					}
					return err
				}
				w := c.App.Writer
				head := fmt.Sprintf("group %s: %s", r.Group, r.Policy)
				if r.DryRun {
					head += " (dry run: nothing is deleted)"
				}
				fmt.Fprintln(w, head)
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				if len(r.Plan) > 0 {
					fmt.Fprintln(tw, "ACTION\tSNAPSHOT\tCREATED\tKEPT BY")
				}
				del := 0
				for _, d := range r.Plan {
					act := "keep"
					if !d.Keep {
						act = "delete"
						del++
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", act, d.ID, formatTime(d.Created), dash(strings.Join(d.Reasons, ", ")))
				}
				if ferr := tw.Flush(); ferr != nil && err == nil {
					err = ferr
				}
				if r.DryRun {
					fmt.Fprintf(w, "would delete %d of %d snapshots\n", del, len(r.Plan))
				} else {
					fmt.Fprintf(w, "deleted %d of %d snapshots\n", len(r.Deleted), len(r.Plan))
				}
				return err
			})
		},
	}
}

// retentionCommand is "dstore retention GROUP [--dry-run]": group prune.
func retentionCommand(g *globals) *cli.Command {
	cmd := sub(groupPruneCommand(g, "retention"))
	cmd.Usage += " (the same as dstore group prune)"
	return cmd
}

func printGroup(w io.Writer, gd control.GroupDetail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "group\t%s\n", gd.Name)
	fmt.Fprintf(tw, "match\t%s\n", strings.Join(gd.Match, " "))
	fmt.Fprintf(tw, "schedules\t%s\n", dash(strings.Join(gd.Schedules, ", ")))
	fmt.Fprintf(tw, "retention\t%s\n", gd.Policy)
	if len(gd.Targets) > 0 {
		fmt.Fprintf(tw, "targets\t%s\n", strings.Join(gd.Targets, ", "))
	}
	fmt.Fprintf(tw, "created\t%s\n", formatTime(gd.Created))
	if len(gd.Schedules) > 0 {
		fmt.Fprintf(tw, "next run\t%s\n", optTime(gd.NextRun))
		fmt.Fprintf(tw, "runs up to\t%s\n", optTime(gd.Since))
	}
	if m := gd.Missed; m != nil {
		fmt.Fprintf(tw, "missed\t%s from %s to %s (found %s)\n", plural(m.Count, "scheduled run"), formatTime(m.First), formatTime(m.Last), formatTime(m.Noted))
	}
	snaps := fmt.Sprint(gd.Snapshots)
	if gd.Latest != "" {
		snaps += " (latest " + gd.Latest + ")"
	}
	fmt.Fprintf(tw, "snapshots\t%s\n", snaps)
	fmt.Fprintf(tw, "members\t%s now\n", plural(len(gd.Members), "file"))
	for _, m := range gd.Members {
		fmt.Fprintf(tw, "\t%s\n", m)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// formatTime is how text reports show a time: local, to the second.
func formatTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

func optTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}

func missedShort(m *control.Missed) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%d (last %s)", m.Count, formatTime(m.Last))
}
