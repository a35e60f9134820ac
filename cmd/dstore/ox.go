package main

// Object exchange (OX): dstore target ..., export, import, jobs; and the
// opening of a datastore with its objex manager (serve and the commands
// that run without a daemon).

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/control"
	"github.com/dstore/dstore/objex"
	"github.com/dstore/dstore/snapstore"
)

// oxDir is the objex manager's directory in the datastore directory.
const oxDir = "ox"

// openDatastore opens the datastore in dir with its object exchange: the
// objex manager on DIR/ox, whose Remote resolves the remote layers of
// imported files, attached to the datastore. With resume (the daemon)
// Attach restarts unfinished exports and thickeners in this process;
// without (a command run without the daemon) they wait for the daemon,
// and only what the command starts runs, until it ends. Close the
// manager, then the datastore.
func openDatastore(dir string, so blockstore.Options, log *slog.Logger, resume bool) (*snapstore.Datastore, *objex.Manager, *control.Passphrases, error) {
	pass := control.NewPassphrases()
	m, err := objex.Open(objex.Config{Dir: filepath.Join(dir, oxDir), Logger: log, Getenv: pass.Getenv, NoResume: !resume})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open %s: object exchange: %w", dir, err)
	}
	so.Remote = m.Remote
	ds, err := snapstore.Open(dir, so)
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	if err := m.Attach(ds); err != nil {
		m.Close()
		ds.Close()
		return nil, nil, nil, fmt.Errorf("open %s: object exchange: %w", dir, err)
	}
	return ds, m, pass, nil
}

// isLocal reports whether api runs in this process (no daemon): its jobs
// stop when the command ends.
func isLocal(api control.API) bool {
	_, ok := api.C.(control.Local)
	return ok
}

var targetNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkTargetName(name string) error {
	if !targetNameRE.MatchString(name) {
		return usagef("target name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// rateUnits are the decimal units a bandwidth may use besides the binary
// ones of sizes: network rates are usually quoted in powers of 1000.
var rateUnits = map[string]int64{"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}

// parseRate parses a bandwidth in bytes per second: a whole number with
// an optional unit and an optional "/s": "100M" and "10MiB" are binary
// (as sizes are), "50MB/s" and "800KB" decimal; "0", "none" and
// "unlimited" mean no limit.
func parseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "none", "unlimited":
		return 0, nil
	}
	t = strings.TrimSpace(strings.TrimSuffix(t, "/s"))
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if mult, ok := rateUnits[strings.ToLower(strings.TrimSpace(t[i:]))]; ok && i > 0 {
		n, err := strconv.ParseInt(t[:i], 10, 64)
		if err != nil || n > (1<<62)/mult {
			return 0, fmt.Errorf("rate %q: too large", s)
		}
		return n * mult, nil
	}
	n, err := parseSize(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: want bytes per second such as 50MB/s, 10MiB or 100M (0 or unlimited: no limit)", s)
	}
	return n, nil
}

// formatRate shows a bandwidth limit.
func formatRate(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return formatIEC(n) + "/s"
}

// formatSpeed shows a measured rate.
func formatSpeed(f float64) string { return formatIEC(int64(finite(f))) + "/s" }

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func targetCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "target",
		Usage: "object exchange targets: S3 buckets or directories that hold exported snapshots",
		Subcommands: []*cli.Command{
			sub(targetAddCommand(g)),
			sub(targetListCommand(g)),
			sub(targetRemoveCommand(g)),
			sub(targetSnapshotsCommand(g)),
			sub(targetVerifyCommand(g)),
			sub(targetPruneCommand(g)),
			sub(targetRekeyCommand(g)),
			sub(targetBandwidthCommand(g, "set-bandwidth")),
			sub(targetBandwidthCommand(g, "edit")),
			sub(targetUnlockCommand(g)),
		},
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("target: unknown command %q (see 'dstore target --help')", c.Args().First())
			}
			_ = cli.ShowSubcommandHelp(c)
			return usagef("target: no command given")
		},
	}
}

// keyFlags are --key-file and --passphrase-env.
func keyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "key-file", Usage: "the target's key: a file of at least 32 bytes (keep a copy: without it the target is unreadable)", TakesFile: true},
		&cli.StringFlag{Name: "passphrase-env", Usage: "the target's key: a passphrase in the environment variable `VAR` (read by this command and sent to the daemon, which keeps it in memory; a restarted daemon reads VAR from its own environment, or needs dstore target unlock)"},
	}
}

// keySource reads --key-file or --passphrase-env (exactly one): the key
// file as an absolute path, or the variable's name and its value here.
func keySource(c *cli.Context) (keyFile, passEnv, pass string, err error) {
	keyFile, passEnv = c.String("key-file"), c.String("passphrase-env")
	if (keyFile == "") == (passEnv == "") {
		return "", "", "", usagef("%s: give exactly one of --key-file FILE and --passphrase-env VAR", cmdName(c))
	}
	if keyFile != "" {
		abs, err := filepath.Abs(keyFile)
		if err != nil {
			return "", "", "", usagef("--key-file %q: %v", keyFile, err)
		}
		return abs, "", "", nil
	}
	if strings.ContainsAny(passEnv, "= \x00") {
		return "", "", "", usagef("--passphrase-env %q: want the name of an environment variable", passEnv)
	}
	return "", passEnv, os.Getenv(passEnv), nil
}

func targetAddCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name: "add",
		Usage: "add a target: s3://bucket/prefix (the bucket is made when missing) or file:///dir; a place that holds no target " +
			"gets a new key, one that holds a target (made by any datastore) is joined with its key",
		ArgsUsage: "NAME URL (--key-file FILE | --passphrase-env VAR)",
		Flags: ctlFlags(append(keyFlags(),
			&cli.StringFlag{Name: "bandwidth", Usage: "limit exports and thickening to `RATE` bytes per second (50MB/s, 10MiB, 100M; default unlimited)"},
			&cli.StringFlag{Name: "endpoint", Usage: "S3 endpoint `URL` (http://host:port is plain HTTP; default $AWS_ENDPOINT_URL, else AWS)"},
			&cli.StringFlag{Name: "region", Usage: "S3 `REGION` (default $AWS_REGION)"},
			&cli.StringFlag{Name: "access-key", Usage: "S3 access key `ID` (default $AWS_ACCESS_KEY_ID)"},
			&cli.StringFlag{Name: "secret-key", Usage: "S3 secret `KEY` (default $AWS_SECRET_ACCESS_KEY); kept in DIR/ox/ox.db (mode 0600), never shown or logged"},
			&cli.BoolFlag{Name: "insecure", Usage: "plain HTTP to an --endpoint given as host:port"},
			&cli.BoolFlag{Name: "daemon-env", Usage: "take the endpoint, region and credentials not given by flags from the daemon's environment (and its AWS credential chain) at every use, not from this command's"},
			jsonFlag())...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 2, 2, "the target NAME and URL")
			if err != nil {
				return err
			}
			if err := checkTargetName(a[0]); err != nil {
				return err
			}
			req := control.TargetAddArgs{Name: a[0], URL: a[1], Endpoint: c.String("endpoint"), Region: c.String("region"),
				AccessKey: c.String("access-key"), SecretKey: c.String("secret-key"), Insecure: c.Bool("insecure")}
			u, perr := url.Parse(a[1])
			switch {
			case perr != nil:
				return usagef("target URL %q: %v", a[1], perr)
			case u.Scheme == "file":
				if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
					return usagef("target URL %q: want file:///absolute/dir", a[1])
				}
				for _, f := range []string{"endpoint", "region", "access-key", "secret-key", "insecure", "daemon-env"} {
					if c.IsSet(f) {
						return usagef("--%s is for s3:// targets, not %s", f, a[1])
					}
				}
			case u.Scheme == "s3":
				if u.Host == "" {
					return usagef("target URL %q: want s3://bucket/prefix", a[1])
				}
				if u.User != nil {
					return usagef("target URL: credentials do not go in the URL; use --access-key and --secret-key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
				}
				if !c.Bool("daemon-env") {
					// The command's environment, as for any command; the
					// daemon's applies only with --daemon-env.
					for _, f := range []struct {
						dst  *string
						vars []string
					}{
						{&req.Endpoint, []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}},
						{&req.Region, []string{"AWS_REGION", "AWS_DEFAULT_REGION"}},
						{&req.AccessKey, []string{"AWS_ACCESS_KEY_ID"}},
						{&req.SecretKey, []string{"AWS_SECRET_ACCESS_KEY"}},
					} {
						for _, v := range f.vars {
							if *f.dst == "" {
								*f.dst = os.Getenv(v)
							}
						}
					}
				}
			default:
				return usagef("target URL %q: want s3://bucket/prefix or file:///dir", a[1])
			}
			if req.KeyFile, req.PassphraseEnv, req.Passphrase, err = keySource(c); err != nil {
				return err
			}
			if s := c.String("bandwidth"); s != "" {
				if req.Bandwidth, err = parseRate(s); err != nil {
					return usagef("--bandwidth: %v", err)
				}
			}
			return withAPI(c, g, func(api control.API) error {
				t, err := api.TargetAdd(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, t)
				}
				fmt.Fprintf(c.App.Writer, "added target %s: %s (ID %s)\n", t.Name, t.URL, t.ID)
				return nil
			})
		},
	}
}

func keyText(t control.Target) string {
	if t.KeyFile != "" {
		return "key file " + t.KeyFile
	}
	return "passphrase $" + t.PassphraseEnv
}

func targetListCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the targets (never their credentials)",
		Flags: ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, ""); err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				ts, err := api.TargetList(c.Context, control.Empty{})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, ts)
				}
				if len(ts) == 0 {
					fmt.Fprintln(c.App.Writer, "no targets (add one with: dstore target add NAME URL --key-file FILE)")
					return nil
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "TARGET\tURL\tKEY\tBANDWIDTH\tGROUPS\tID")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.URL, keyText(t), formatRate(t.Bandwidth), dash(strings.Join(t.Groups, ", ")), t.ID)
				}
				return w.Flush()
			})
		},
	}
}

func targetRemoveCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Aliases:   []string{"rm"},
		Usage:     "forget a target (what it holds stays there); refused while groups export to it or imported files read from it, unless --force",
		ArgsUsage: "NAME",
		Flags:     ctlFlags(&cli.BoolFlag{Name: "force", Usage: "remove it even so"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the target NAME")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.TargetRemove(c.Context, control.TargetRemoveArgs{Name: a[0], Force: c.Bool("force")})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				fmt.Fprintf(c.App.Writer, "removed target %s\n", r.Name)
				return nil
			})
		},
	}
}

func targetSnapshotsCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name:      "snapshots",
		Usage:     "list the snapshots a target holds, oldest export first (NAME is what dstore import takes)",
		ArgsUsage: "TARGET",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the TARGET")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				ss, err := api.TargetSnapshots(c.Context, control.TargetArgs{Name: a[0]})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, ss)
				}
				if len(ss) == 0 {
					fmt.Fprintf(c.App.Writer, "target %s holds no snapshots\n", a[0])
					return nil
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tSNAPSHOT\tGROUP\tEXPORTED\tFILES\tSIZE\tSTORED\tFROM")
				for _, s := range ss {
					if s.Error != "" {
						fmt.Fprintf(w, "%s\t-\t-\t-\t-\t-\t-\tunreadable: %s\n", s.Name, s.Error)
						continue
					}
					from := fmt.Sprintf("datastore %d", s.DatastoreID)
					if s.ThisDatastore {
						from = "this datastore"
					}
					if s.ByGroup {
						from += ", by group"
					}
					var size int64
					for _, f := range s.Files {
						size += f.Size
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.Snapshot, s.Group, optTime(s.Exported), len(s.Files),
						formatIEC(size), formatIEC(s.Stored), from)
				}
				return w.Flush()
			})
		},
	}
}

func targetVerifyCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name: "verify",
		Usage: "check a target: its key, every manifest and index object, and that every object a snapshot needs is there " +
			"(--deep: read and check every record); exit 1 on any problem",
		ArgsUsage: "TARGET",
		Flags:     ctlFlags(&cli.BoolFlag{Name: "deep", Usage: "read every data object (under the bandwidth limit) and check every record"}, jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the TARGET")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.TargetVerify(c.Context, control.TargetVerifyArgs{Name: a[0], Deep: c.Bool("deep")})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					if err := writeJSON(c.App.Writer, r); err != nil {
						return err
					}
				} else {
					how := "checked"
					if r.Deep {
						how = fmt.Sprintf("read %s and checked", formatIEC(r.Bytes))
					}
					fmt.Fprintf(c.App.Writer, "target %s: %s %s, %s, %s\n", r.Target, how, plural(r.Snapshots, "snapshot"),
						plural(r.Objects, "object"), plural(r.Chunks, "chunk"))
					for _, p := range r.Problems {
						fmt.Fprintf(c.App.Writer, "problem: %s\n", p)
					}
					if len(r.Problems) == 0 {
						fmt.Fprintln(c.App.Writer, "no problems found")
					}
				}
				if n := len(r.Problems); n > 0 {
					return fmt.Errorf("target verify: %s in target %s", plural(n, "problem"), r.Target)
				}
				return nil
			})
		},
	}
}

func targetPruneCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name: "prune",
		Usage: "apply retention to a target: delete the snapshots this datastore exported for a group and that the group's " +
			"retention has deleted here (nothing else), then the objects no snapshot needs (older than --grace)",
		ArgsUsage: "TARGET",
		Flags: ctlFlags(&cli.BoolFlag{Name: "dry-run", Usage: "show the plan, delete nothing"},
			&cli.StringFlag{Name: "grace", Usage: "delete unreferenced objects only when older than `DURATION` (default 24h; 0 at once, unsafe while another datastore exports to the target)"},
			jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the TARGET")
			if err != nil {
				return err
			}
			req := control.TargetPruneArgs{Name: a[0], DryRun: c.Bool("dry-run")}
			if c.IsSet("grace") {
				d, err := snapstore.ParseDuration(c.String("grace"))
				if err != nil {
					return usagef("--grace: %v", err)
				}
				req.Grace = &d
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.TargetPrune(c.Context, req)
				if r.Target == "" {
					return err
				}
				if c.Bool("json") {
					if jerr := writeJSON(c.App.Writer, r); jerr != nil && err == nil {
						err = jerr
					}
					return err
				}
				w := c.App.Writer
				if r.DryRun {
					fmt.Fprintf(w, "target %s (dry run: nothing is deleted)\n", r.Target)
				} else {
					fmt.Fprintf(w, "target %s\n", r.Target)
				}
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				if len(r.Plan) > 0 {
					fmt.Fprintln(tw, "ACTION\tNAME\tGROUP\tWHY")
				}
				del := 0
				for _, d := range r.Plan {
					act := "keep"
					if !d.Keep {
						act = "delete"
						del++
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", act, d.Name, dash(d.Group), d.Reason)
				}
				if ferr := tw.Flush(); ferr != nil && err == nil {
					err = ferr
				}
				if r.DryRun {
					fmt.Fprintf(w, "would delete %d of %d snapshots, and %s (%s) no snapshot needs now\n", del, len(r.Plan),
						plural(r.Objects, "object"), formatIEC(r.Bytes))
				} else {
					fmt.Fprintf(w, "deleted %d of %d snapshots, and %s (%s)\n", len(r.DeletedSnapshots), len(r.Plan),
						plural(r.Objects, "object"), formatIEC(r.Bytes))
				}
				return err
			})
		},
	}
}

func targetRekeyCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name: "rekey",
		Usage: "wrap the target's key under a new key file or passphrase (no data moves); every datastore using the target " +
			"needs the new key from then on",
		ArgsUsage: "NAME (--key-file FILE | --passphrase-env VAR)",
		Flags:     ctlFlags(append(keyFlags(), jsonFlag())...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the target NAME")
			if err != nil {
				return err
			}
			req := control.TargetRekeyArgs{Name: a[0]}
			if req.KeyFile, req.PassphraseEnv, req.Passphrase, err = keySource(c); err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				cur, err := currentPassphrase(c, api, a[0])
				if err != nil {
					return err
				}
				req.CurrentPassphrase = cur
				t, err := api.TargetRekey(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, t)
				}
				fmt.Fprintf(c.App.Writer, "target %s: its key is now wrapped by the %s; keep it safe\n", t.Name, keyText(t))
				return nil
			})
		},
	}
}

// currentPassphrase returns the value, in this command's environment, of
// the variable that holds the target's passphrase now ("" when it uses a
// key file, or the variable is not set here).
func currentPassphrase(c *cli.Context, api control.API, name string) (string, error) {
	ts, err := api.TargetList(c.Context, control.Empty{})
	if err != nil {
		return "", err
	}
	for _, t := range ts {
		if t.Name == name && t.PassphraseEnv != "" {
			return os.Getenv(t.PassphraseEnv), nil
		}
	}
	return "", nil
}

func targetUnlockCommand(g *globals) *cli.Command {
	return &cli.Command{
		Name: "unlock",
		Usage: "give the daemon a target's passphrase, from the target's variable in this command's environment (a daemon " +
			"that restarted without the variable in its own environment cannot open the target)",
		ArgsUsage: "NAME",
		Flags:     ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "the target NAME")
			if err != nil {
				return err
			}
			return withAPI(c, g, func(api control.API) error {
				pass, err := currentPassphrase(c, api, a[0])
				if err != nil {
					return err
				}
				t, err := api.TargetUnlock(c.Context, control.TargetUnlockArgs{Name: a[0], Passphrase: pass})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, t)
				}
				fmt.Fprintf(c.App.Writer, "target %s: the passphrase opens it\n", t.Name)
				return nil
			})
		},
	}
}

func targetBandwidthCommand(g *globals, name string) *cli.Command {
	cmd := &cli.Command{
		Name:      name,
		Usage:     "change a target's bandwidth limit (exports and thickening; running transfers follow at once)",
		ArgsUsage: "NAME RATE",
		Flags:     ctlFlags(jsonFlag()),
	}
	if name == "edit" {
		cmd.ArgsUsage = "NAME --bandwidth RATE"
		cmd.Flags = ctlFlags(&cli.StringFlag{Name: "bandwidth", Usage: "`RATE` in bytes per second (50MB/s, 10MiB, 100M; 0 or unlimited: no limit)"}, jsonFlag())
	}
	cmd.Action = func(c *cli.Context) error {
		var a []string
		var err error
		rate := c.String("bandwidth")
		if name == "edit" {
			if a, err = args(c, 1, 1, "the target NAME"); err != nil {
				return err
			}
			if !c.IsSet("bandwidth") {
				return usagef("target edit %s: nothing to change (--bandwidth RATE)", a[0])
			}
		} else {
			if a, err = args(c, 2, 2, "the target NAME and the RATE"); err != nil {
				return err
			}
			rate = a[1]
		}
		n, err := parseRate(rate)
		if err != nil {
			return usagef("%s: %v", cmdName(c), err)
		}
		return withAPI(c, g, func(api control.API) error {
			t, err := api.TargetSetBandwidth(c.Context, control.TargetBandwidthArgs{Name: a[0], Bandwidth: n})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, t)
			}
			fmt.Fprintf(c.App.Writer, "target %s: bandwidth %s\n", t.Name, formatRate(t.Bandwidth))
			return nil
		})
	}
	return cmd
}

func exportCommand(g *globals) *cli.Command {
	return sub(&cli.Command{
		Name: "export",
		Usage: "export a snapshot to a target (incremental: what the target holds is not sent again) and wait for it, " +
			"with a progress bar on a terminal; exit 1 if it fails",
		ArgsUsage: "SNAPSHOT TARGET",
		Flags: ctlFlags(
			&cli.StringFlag{Name: "name", Usage: "the snapshot's `NAME` in the target (default GROUP@ID)"},
			&cli.BoolFlag{Name: "no-wait", Usage: "start the export in the daemon and return (see dstore jobs)"},
			jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 2, 2, "the SNAPSHOT and the TARGET")
			if err != nil {
				return err
			}
			if err := checkID(a[0]); err != nil {
				return err
			}
			req := control.ExportArgs{Snapshot: a[0], Target: a[1], Name: c.String("name")}
			if req.Name != "" {
				if strings.Contains(req.Name, ":") {
					return usagef("--name %q: no ':' (it separates the snapshot from a path in dstore import)", req.Name)
				}
				if err := objex.ValidSnapshotName(req.Name); err != nil {
					return usagef("--name: %v", strings.TrimPrefix(err.Error(), "objex: "))
				}
			}
			return withAPI(c, g, func(api control.API) error {
				j, err := api.Export(c.Context, req)
				if err != nil {
					return err
				}
				if c.Bool("no-wait") {
					if isLocal(api) {
						fmt.Fprintf(c.App.ErrWriter, "dstore: no daemon runs: export job %d stops with this command and resumes when dstore serve starts\n", j.ID)
					}
					if c.Bool("json") {
						return writeJSON(c.App.Writer, j)
					}
					fmt.Fprintf(c.App.Writer, "export job %d started: snapshot %s to target %s as %s (see dstore jobs)\n", j.ID, a[0], j.Target, j.Snapshot)
					return nil
				}
				js, err := waitJobs(c, api, []uint64{j.ID}, "export")
				if err != nil {
					return err
				}
				j = js[0]
				if c.Bool("json") {
					if err := writeJSON(c.App.Writer, j); err != nil {
						return err
					}
				}
				if j.State == objex.JobFailed {
					return fmt.Errorf("export job %d of %s to target %s failed: %s", j.ID, j.Snapshot, j.Target, j.Error)
				}
				if !c.Bool("json") {
					fmt.Fprintf(c.App.Writer, "exported %s to target %s as %s: %s, %s sent\n", a[0], j.Target, j.Snapshot,
						formatIEC(j.BytesTotal), formatIEC(j.BytesMoved))
				}
				return nil
			})
		},
	})
}

// importOutput is what import --json prints: the result, and with --wait
// the jobs as they ended.
type importOutput struct {
	control.ImportResult
	Jobs []control.Job `json:"jobs,omitempty"`
}

func importCommand(g *globals) *cli.Command {
	return sub(&cli.Command{
		Name: "import",
		Usage: "make live files from a snapshot in a target, at once (no data moves first): SNAPSHOT:PATH one file as NEWPATH, " +
			"SNAPSHOT every file under the directory NEWPATH; reads fetch what they need and a background job copies the rest",
		ArgsUsage: "TARGET SNAPSHOT[:PATH] NEWPATH",
		Flags: ctlFlags(
			&cli.BoolFlag{Name: "wait", Usage: "wait until every block is local (thickened), with a progress bar on a terminal"},
			jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := args(c, 3, 3, "the TARGET, SNAPSHOT[:PATH] and NEWPATH")
			if err != nil {
				return err
			}
			req := control.ImportArgs{Target: a[0]}
			snap, p, hasPath := strings.Cut(a[1], ":")
			if err := objex.ValidSnapshotName(snap); err != nil {
				return usagef("import: snapshot %q: want a name that dstore target snapshots %s lists", snap, a[0])
			}
			req.Snapshot = snap
			if hasPath {
				if req.Path, err = checkPath(p, "path"); err != nil {
					return err
				}
				if req.Path == "" {
					return usagef("import: %q names no file; give SNAPSHOT:PATH, or SNAPSHOT alone for every file", a[1])
				}
				req.HasPath = true
			}
			if req.NewPath, err = checkPath(a[2], "NEWPATH"); err != nil {
				return err
			}
			if req.NewPath == "" {
				return usagef("import: NEWPATH %q names the root; want a file or directory path", a[2])
			}
			return withAPI(c, g, func(api control.API) error {
				r, err := api.Import(c.Context, req)
				if err != nil {
					for _, f := range r.Files {
						fmt.Fprintf(c.App.ErrWriter, "dstore: imported %s as %s before the failure\n", f.Member, f.Path)
					}
					return err
				}
				out := importOutput{ImportResult: r}
				if c.Bool("wait") && len(r.Files) > 0 {
					ids := make([]uint64, len(r.Files))
					for i, f := range r.Files {
						ids[i] = f.Job
					}
					if out.Jobs, err = waitJobs(c, api, ids, "import"); err != nil {
						return err
					}
				} else if isLocal(api) {
					fmt.Fprintln(c.App.ErrWriter, "dstore: no daemon runs: the copy of the remaining blocks stops with this command and resumes when dstore serve starts")
				}
				if c.Bool("json") {
					if err := writeJSON(c.App.Writer, out); err != nil {
						return err
					}
				} else {
					for _, f := range r.Files {
						fmt.Fprintf(c.App.Writer, "imported %s:%s of target %s as %s (%s, job %d)\n", r.Snapshot, f.Member, r.Target, f.Path, formatIEC(int64(f.Size)), f.Job)
					}
				}
				for _, j := range out.Jobs {
					if j.State == objex.JobFailed {
						return fmt.Errorf("import job %d (%s) failed: %s", j.ID, j.Path, j.Error)
					}
				}
				return nil
			})
		},
	})
}

func jobsCommand(g *globals) *cli.Command {
	return leaf(&cli.Command{
		Name:  "jobs",
		Usage: "list exports and imports (their thickening): state, bytes done and total, rate",
		Flags: ctlFlags(jsonFlag()),
		Action: func(c *cli.Context) error {
			return withAPI(c, g, func(api control.API) error {
				js, err := api.Jobs(c.Context, control.Empty{})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, js)
				}
				if len(js) == 0 {
					fmt.Fprintln(c.App.Writer, "no jobs")
					return nil
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "JOB\tKIND\tSTATE\tTARGET\tSNAPSHOT\tPATH\tDONE\tTOTAL\tRATE\tERROR")
				for _, j := range js {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, j.State, j.Target, j.Snapshot, dash(j.Path),
						formatIEC(j.BytesDone), formatIEC(j.BytesTotal), formatSpeed(j.Rate), j.Error)
				}
				return w.Flush()
			})
		},
	})
}

func printExportStarts(w io.Writer, es []control.ExportStart) {
	for _, e := range es {
		if e.Error != "" {
			fmt.Fprintf(w, "export to %s did not start: %s\n", e.Target, e.Error)
		} else {
			fmt.Fprintf(w, "export to %s: job %d (%s)\n", e.Target, e.Job, e.Name)
		}
	}
}

// Progress: how often waitJobs asks, and how often it prints a line
// when stdout is not a terminal.
var (
	pollInterval  = 200 * time.Millisecond
	plainInterval = 10 * time.Second
)

// waitJobs waits until every job is done or failed and returns them as
// they ended. On a terminal (and without --json) it draws a progress bar
// of them all; otherwise it prints a line now and then (nothing with
// --json). Interrupted (Ctrl-C), it says where the jobs go on.
func waitJobs(c *cli.Context, api control.API, ids []uint64, what string) ([]control.Job, error) {
	out := c.App.Writer
	quiet := c.Bool("json")
	tty := !quiet && isTerminal(out)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	lastLine := time.Now()
	for {
		js := make([]control.Job, len(ids))
		ended := 0
		var done, total, moved int64
		var rate float64
		for i, id := range ids {
			j, err := api.Job(c.Context, control.JobArgs{ID: id})
			if err != nil {
				if c.Context.Err() != nil {
					return nil, interrupted(api, ids, what)
				}
				return nil, err
			}
			js[i] = j
			done, total, moved, rate = done+j.BytesDone, total+j.BytesTotal, moved+j.BytesMoved, rate+j.Rate
			if j.State == objex.JobDone || j.State == objex.JobFailed {
				ended++
			}
		}
		line := progressLine(what, ids, done, total, moved, rate)
		if tty {
			fmt.Fprintf(out, "\r%s\x1b[K", line)
			if ended == len(ids) {
				fmt.Fprintln(out)
			}
		} else if !quiet && time.Since(lastLine) >= plainInterval && ended < len(ids) {
			fmt.Fprintln(out, line)
			lastLine = time.Now()
		}
		if ended == len(ids) {
			return js, nil
		}
		select {
		case <-c.Context.Done():
			if tty {
				fmt.Fprintln(out)
			}
			return nil, interrupted(api, ids, what)
		case <-t.C:
		}
	}
}

func interrupted(api control.API, ids []uint64, what string) error {
	var s []string
	for _, id := range ids {
		s = append(s, strconv.FormatUint(id, 10))
	}
	where := "goes on in the daemon (see dstore jobs)"
	if isLocal(api) {
		where = "stops with this command and resumes when dstore serve starts"
	}
	return errors.New("stopped waiting: " + what + " job " + strings.Join(s, ", ") + " " + where)
}

// progressLine is "export job 3 [#####-----] 45% 12 MiB of 26.67 MiB,
// 9 MiB sent at 5 MiB/s": the work done (blocks walked) and what went over
// the network (uploads lag the walk by up to an object).
func progressLine(what string, ids []uint64, done, total, moved int64, rate float64) string {
	const width = 24
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	n := int(frac * width)
	var s []string
	for _, id := range ids {
		s = append(s, strconv.FormatUint(id, 10))
	}
	jobs := "job " + strings.Join(s, ",")
	if len(ids) > 1 {
		jobs = "jobs " + strings.Join(s, ",")
	}
	verb := "sent"
	if what != "export" {
		verb = "fetched"
	}
	return fmt.Sprintf("%s %s [%s%s] %3.0f%% %s of %s, %s %s at %s", what, jobs, strings.Repeat("#", n), strings.Repeat("-", width-n),
		100*frac, formatIEC(done), formatIEC(total), formatIEC(moved), verb, formatSpeed(rate))
}
