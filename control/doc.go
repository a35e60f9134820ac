// Package control is dstore's control API: the operations the command
// line runs on a datastore (protection groups, snapshots, retention,
// restore and clone, the snapstore listing, status, gc, verify), the
// daemon's HTTP/JSON server for them on the unix socket DIR/control.sock,
// a client for that socket, and the wiring of snapstore's Scheduler to the
// datastore.
//
// One code path: a Service performs every operation on an open
// snapstore.Datastore. Callers reach it through a Caller: a Client that
// talks HTTP to the daemon (dstore serve), or Local, which runs the same
// Service in the calling process on a datastore it opened itself (no
// daemon). Both encode the arguments and the result as JSON and turn errors
// into the same wire form (a code and the message), so a command prints
// the same bytes and exits with the same status either way; the codes map
// back to the same sentinel errors (snapstore.ErrNoGroup, ...), so
// errors.Is works on both paths.
//
// Every operation that may change something is appended to DIR/audit.log
// as one JSON line (time, operation, arguments, result: "ok" or the error
// text, and who asked), written with one write and fsynced before the
// answer goes back. Runs and missed runs of the scheduler are recorded the
// same way.
//
// Wire protocol: POST /v1/OPERATION with the arguments as a JSON object;
// 200 and the result as JSON, or an error status with {"error": message,
// "code": code}. GET /v1/ping answers {"version", "dir", "pid"}. See
// docs/DESIGN.md, "Control API".
package control
