// Command dstore is the dstore binary: one program that creates a datastore,
// reports on it, maintains it and serves it over NFSv3 (and, as the project
// grows, moves its snapshots to and from S3).
//
// Commands: init makes a datastore. serve opens it with its namespace
// (snapstore), making one with the defaults if --data holds none, serves
// NFS and MOUNT on one TCP port (--nfs), PORTMAP optionally on another
// (--portmap), and the control API on the unix socket DIR/control.sock
// (package control), and runs the protection groups' cron schedules,
// until SIGINT or SIGTERM; then it drains the calls already read for up to
// 30 s and closes the datastore, which destages the whole log.
//
// The other commands (group, snapshot, retention, ls, restore, clone,
// status, verify, gc) are control operations: they go to the daemon over
// its socket when one runs, else they open the datastore themselves and
// run the same control.Service in this process, saying so on stderr
// (--require-daemon, or DSTORE_REQUIRE_DAEMON, makes that an error). Both
// ways print the same bytes and exit with the same status. Flags may follow
// a command's positional arguments (reorderArgs).
//
// This package is wiring only. It parses flags with urfave/cli/v2, builds a
// logger, opens the store and calls the library; every operation it offers is
// a call into a package (blockstore, snapstore, control, nfsfs) that tests
// can make without the binary. The process runs with the Go memory limit
// blockstore.MemoryLimit unless GOMEMLIMIT is set.
//
// Exit codes: 0 when the command did what was asked (for serve: it stopped
// on a signal and closed cleanly), 1 when the operation failed (including
// "verify found corrupt chunks", an unknown group or snapshot, a daemon
// that is not running with --require-daemon, and a serve whose listener
// failed), 2 for a usage error (an unknown command or flag, a missing or
// malformed argument or value). Errors go to stderr as "dstore: <message>";
// reports go to stdout, as text or, with --json, as JSON.
package main
