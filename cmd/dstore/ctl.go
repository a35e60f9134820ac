package main

// The commands that work on a datastore go through the control API: to the
// daemon over DIR/control.sock when one runs, else to the same service in
// this process on the datastore opened directly.

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/control"
	"github.com/dstore/dstore/snapstore"
)

const requireDaemonEnv = "DSTORE_REQUIRE_DAEMON"

// storeOptions are the block store options commands and serve open a
// datastore with (the defaults; tests make the log segments small, which
// opens faster under the race detector).
var storeOptions blockstore.Options

func requireDaemonFlag() cli.Flag {
	return &cli.BoolFlag{
		Name:    "require-daemon",
		Usage:   "fail unless dstore serve runs on the datastore (never open it directly)",
		EnvVars: []string{requireDaemonEnv},
	}
}

// requireDaemon reports whether --require-daemon was given to the command
// or to dstore itself (or set in the environment).
func requireDaemon(c *cli.Context) bool {
	for _, cc := range c.Lineage() {
		if cc.Bool("require-daemon") {
			return true
		}
	}
	return false
}

// ctlFlags are the flags of every command that goes through the control
// API.
func ctlFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{dataFlag(), requireDaemonFlag()}, more...)
}

// withAPI runs fn with the control API of the datastore in --data: the
// daemon's when one answers on its socket, else a service in this process
// on the datastore opened directly (with a note on stderr).
func withAPI(c *cli.Context, g *globals, fn func(control.API) error) (err error) {
	dir := dataDir(c)
	cl, err := control.Dial(c.Context, dir)
	if err == nil {
		defer cl.Close()
		g.logger().Debug("using the daemon", "socket", filepath.Join(dir, control.SocketFile))
		return fn(control.API{C: cl})
	}
	if !errors.Is(err, control.ErrNoDaemon) {
		return err
	}
	if requireDaemon(c) {
		return err
	}
	if !blockstore.IsInitialized(dir) {
		return fmt.Errorf("%s is not an initialized datastore (create one with: dstore init --data %s)", dir, dir)
	}
	o := storeOptions
	o.Logger = g.logger()
	ds, ox, pass, err := openDatastore(dir, o, g.logger(), false)
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("open %s: the datastore is in use by another process, but no daemon answers on %s (is dstore serve starting or stopping? try again)",
			dir, filepath.Join(dir, control.SocketFile))
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer func() {
		cerr := ox.Close()
		if dcerr := ds.Close(); cerr == nil {
			cerr = dcerr
		}
		if cerr != nil {
			if err == nil {
				err = fmt.Errorf("close %s: %w", dir, cerr)
			} else {
				g.logger().Error("close datastore", "dir", dir, "err", cerr)
			}
		}
	}()
	svc, err := control.NewService(ds, dir, control.Options{Via: "direct", Logger: g.logger(), Version: version, OX: ox, Passphrases: pass})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := svc.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	fmt.Fprintf(c.App.ErrWriter, "dstore: no daemon is running on %s; working on the datastore directly\n", dir)
	return fn(control.API{C: control.Local{Service: svc, Peer: control.SelfPeer()}})
}

// args checks a command's positional arguments: at least min, at most max
// (max < 0: no limit).
func args(c *cli.Context, min, max int, what string) ([]string, error) {
	a := c.Args().Slice()
	name := cmdName(c)
	if len(a) < min {
		return nil, usagef("%s: missing %s (see 'dstore %s --help')", name, what, name)
	}
	if max >= 0 && len(a) > max {
		return nil, usagef("%s: unexpected argument %q (see 'dstore %s --help')", name, a[max], name)
	}
	return a, nil
}

// cmdName is the command's full name, "group create".
func cmdName(c *cli.Context) string {
	var names []string
	for _, cc := range c.Lineage() {
		if cc.Command != nil && cc.Command.Name != "" && cc.Command.Name != c.App.Name {
			names = append([]string{cc.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
}

// checkGroupName refuses a name that cannot be a group's (as snapstore
// would, but as a usage error).
func checkGroupName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return usagef("group name %q: want a name such as vms or hourly-db", name)
	case len(name) > snapstore.MaxNameLen:
		return usagef("group name of %d bytes: at most %d", len(name), snapstore.MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return usagef("group name %q: no '/' allowed", name)
	}
	return nil
}

// checkID refuses a malformed snapshot ID.
func checkID(id string) error {
	if _, err := snapstore.ParseSnapshotID(id); err != nil {
		return usagef("%q is not a snapshot ID (want an ID such as 20261121-143512-000042, or its sequence number 42)", id)
	}
	return nil
}

// checkPath refuses a malformed datastore path.
func checkPath(p, what string) (string, error) {
	c, err := snapstore.CleanPath(p)
	if err != nil {
		return "", usagef("%s %q: %v", what, p, err)
	}
	return c, nil
}
