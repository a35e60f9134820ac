// Command dstore is the dstore binary: one program that creates a datastore,
// reports on it, maintains it and serves it over NFSv3 (and, as the project
// grows, moves its snapshots to and from S3).
//
// Commands: init, status, verify and gc open the block store alone; serve
// opens the datastore with its namespace (snapstore), making one with the
// defaults if --data holds none, and serves NFS and MOUNT on one TCP port
// (--nfs), PORTMAP optionally on another (--portmap), until SIGINT or
// SIGTERM; then it drains the calls already read for up to 30 s and closes
// the datastore, which destages the whole log.
//
// This package is wiring only. It parses flags with urfave/cli/v2, builds a
// logger, opens the store and calls the library; every operation it offers is
// a call into a package (blockstore, snapstore, nfsfs) that tests can make
// without the binary. Nothing here should need a test of its own beyond flag
// parsing, output formatting and exit codes. The process runs with the Go
// memory limit blockstore.MemoryLimit unless GOMEMLIMIT is set.
//
// Exit codes: 0 when the command did what was asked (for serve: it stopped
// on a signal and closed cleanly), 1 when the operation failed (including
// "verify found corrupt chunks", and a serve whose listener failed), 2 for a
// usage error (an unknown command or flag, a malformed value). Errors go to
// stderr as "dstore: <message>"; reports go to stdout, as text or, with
// --json, as one JSON object.
//
// Caveat: status, verify and gc open the block store without the snapstore
// extension, so they cannot destage namespace records that an unclean stop
// of serve left in the log; they then fail when closing the store, and the
// next serve destages the log. None of them can run while serve holds the
// datastore.
package main
