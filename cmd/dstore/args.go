package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs lets flags follow a command's positional arguments, as in
// "dstore group create NAME --match GLOB": urfave/cli stops parsing flags
// at the first positional argument, so for the command a line names (a
// command without subcommands) the flags are moved in front of the
// positional arguments, which follow a "--". A "--" in the line ends the
// flags: everything after it is positional. Lines that name no such
// command are left as they are, for the parser to report.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	flags, cmds := app.Flags, app.Commands
	i := 1
	var leaf *cli.Command
	for leaf == nil {
		// This level's flags, up to the next positional argument.
		for i < len(args) && args[i] != "--" && isFlagArg(args[i]) {
			out = append(out, args[i])
			i++
			if takesValue(flags, args[i-1]) && i < len(args) {
				out = append(out, args[i])
				i++
			}
		}
		if i >= len(args) || args[i] == "--" {
			return append(out, args[i:]...)
		}
		cmd := findCommand(cmds, args[i])
		if cmd == nil {
			return append(out, args[i:]...)
		}
		out = append(out, args[i])
		i++
		if len(cmd.Subcommands) == 0 {
			leaf = cmd
		}
		flags, cmds = cmd.Flags, cmd.Subcommands
	}
	var fl, pos []string
	for i < len(args) {
		a := args[i]
		i++
		switch {
		case a == "--":
			pos = append(pos, args[i:]...)
			i = len(args)
		case isFlagArg(a):
			fl = append(fl, a)
			if takesValue(flags, a) && i < len(args) {
				fl = append(fl, args[i])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	out = append(out, fl...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}

func isFlagArg(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue reports whether the flag a names (as "-x", "--name") takes
// its value from the next argument.
func takesValue(flags []cli.Flag, a string) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if tv, ok := f.(interface{ TakesValue() bool }); ok {
				return tv.TakesValue()
			}
			return false
		}
	}
	return false
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
