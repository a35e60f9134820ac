// Command dstore is the dstore binary: one program that creates a datastore,
// reports on it and maintains it (and, as the project grows, serves it over
// NFSv3 and moves its snapshots to and from S3).
//
// This package is wiring only. It parses flags with urfave/cli/v2, builds a
// logger, opens the store and calls the library; every operation it offers is
// a call into a package (blockstore today) that tests can make without the
// binary. Nothing here should need a test of its own beyond flag parsing,
// output formatting and exit codes.
//
// Exit codes: 0 when the command did what was asked, 1 when the operation
// failed (including "verify found corrupt chunks"), 2 for a usage error (an
// unknown command or flag, a malformed value). Errors go to stderr as
// "dstore: <message>"; reports go to stdout, as text or, with --json, as one
// JSON object.
package main
