package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/dstore/dstore/blockstore"
)

// version is set at link time: -ldflags "-X main.version=...".
var version = "dev"

const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// defaultDataDir is where the datastore lives when neither --data nor
// $DSTORE_DATA says otherwise.
const defaultDataDir = "/var/lib/dstore"

func init() {
	// urfave's default prints "dstore version X"; the convention here is
	// "dstore X".
	cli.VersionPrinter = func(c *cli.Context) {
		fmt.Fprintf(c.App.Writer, "%s %s\n", c.App.Name, c.App.Version)
	}
}

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(blockstore.MemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err != nil && err.Error() != "" {
		fmt.Fprintf(stderr, "dstore: %v\n", err)
	}
	return exitCode(err)
}

// globals holds what the root command sets up for its subcommands.
type globals struct {
	log *slog.Logger
}

func (g *globals) logger() *slog.Logger {
	if g.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.log
}

// newApp builds the command tree. It never calls os.Exit: errors come back
// from Run, and exitCode turns them into the process status.
func newApp() *cli.App {
	g := &globals{}
	app := &cli.App{
		Name:    "dstore",
		Usage:   "a deduplicating, compressing datastore for VM disks",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "log-level",
				Usage:   "log `LEVEL` on stderr: debug, info, warn or error",
				EnvVars: []string{"DSTORE_LOG_LEVEL"},
				Value:   "info",
			},
			requireDaemonFlag(),
			// Also accepted before the command, as users type it:
			// dstore --data DIR group run NAME.
			&cli.StringFlag{Name: "data", Usage: "datastore `DIR` for the command (the command's own --data wins)", TakesFile: true},
		},
		// Cron expressions and glob patterns have commas: a repeated flag
		// gives one value per use.
		DisableSliceFlagSeparator: true,
		Before: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usagef("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			g.log = slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
			return nil
		},
		// Reached only when no known command was named.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q (see 'dstore --help')", c.Args().First())
			}
			_ = cli.ShowAppHelp(c)
			return usagef("no command given")
		},
		OnUsageError: onUsageError,
		// Keep urfave from calling os.Exit on its own errors.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			leaf(initCommand(g)),
			leaf(statusCommand(g)),
			leaf(verifyCommand(g)),
			leaf(gcCommand(g)),
			leaf(serveCommand(g)),
			groupCommand(g),
			snapshotCommand(g),
			retentionCommand(g),
			lsCommand(g),
			restoreCommand(g),
			cloneCommand(g),
			targetCommand(g),
			exportCommand(g),
			importCommand(g),
			jobsCommand(g),
			benchCommand(g),
			debugCommand(g),
		},
	}
	return app
}

// leaf finishes a command that takes flags but no arguments and no
// subcommands: flag errors and stray arguments become usage errors.
func leaf(cmd *cli.Command) *cli.Command {
	cmd.OnUsageError = onUsageError
	cmd.HideHelpCommand = true
	action := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if c.NArg() > 0 {
			return usagef("%s: unexpected argument %q (see 'dstore %s --help')", cmd.Name, c.Args().First(), cmd.Name)
		}
		return action(c)
	}
	return cmd
}

func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	where := "dstore"
	if isSubcommand {
		where = "dstore " + c.Command.Name
	}
	return usageError{fmt.Errorf("%w (see '%s --help')", err, where)}
}

// usageError marks an error as the user's command line being wrong, as
// opposed to the operation failing.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCode maps the error a command returned to the process exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	// Our commands never return cli.ExitCoder; urfave does, for help on an
	// unknown topic ("dstore help nosuch"): a usage error too.
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return exitUsage
	}
	return exitFailed
}

// dataFlag is the --data flag every command that touches a datastore takes.
func dataFlag() cli.Flag {
	return &cli.StringFlag{
		Name:      "data",
		Usage:     "datastore `DIR`",
		EnvVars:   []string{"DSTORE_DATA"},
		Value:     defaultDataDir,
		TakesFile: true,
	}
}

// dataDir is the datastore directory a command works on: its own --data
// when given on the command line, else one given before the command
// (dstore --data DIR ...), else $DSTORE_DATA, else the default. The root
// flag has no environment variable, so it is set only when typed; the
// command's flag reads the environment, so a value that differs from
// $DSTORE_DATA (or the default) was typed there.
func dataDir(c *cli.Context) string {
	v := c.String("data")
	// The contexts above the command's: IsSet and String there find the
	// root flag (no command between defines --data).
	var outer *cli.Context
	for _, cc := range c.Lineage()[1:] {
		if cc.IsSet("data") {
			outer = cc
			break
		}
	}
	if outer == nil {
		return v
	}
	fallback := defaultDataDir
	if e, ok := os.LookupEnv("DSTORE_DATA"); ok {
		fallback = e
	}
	if v != fallback {
		return v
	}
	return outer.String("data")
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print the report as one JSON object"}
}
