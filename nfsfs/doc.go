// Package nfsfs is dstore's NFS front end, and only the protocol: an ONC RPC
// server and client over TCP with XDR encoding, NFSv3 and MOUNT v3 over the
// snapstore namespace, and the PORTMAP program. Every name, file and volume
// lives in snapstore; nfsfs decodes calls, checks who may make them, and
// encodes answers.
//
// # Vocabulary
//
//   - Record: one RPC message on a TCP stream, sent as fragments each led by
//     a 4-byte mark (length, and a bit for the last fragment; RFC 5531
//     section 11).
//   - Call, reply, xid: a request and its answer; the xid, chosen by the
//     client, is how a reply finds its call.
//   - Program, version, procedure: what a call names (NFS is program 100003
//     version 3, MOUNT 100005 version 3, PORTMAP 100000 version 2). A
//     Program serves a range of versions.
//   - accept_stat, reject_stat, auth_stat: how a reply says why a call was
//     not served (AcceptStat, RejectStat, AuthStat).
//   - DRC: the duplicate request cache, which replays the first reply to a
//     retransmitted non-idempotent call.
//   - File handle: 32 bytes naming (datastore ID, inode, generation); it is
//     decoded, never looked up in a server-side table, so it survives
//     restarts (format in handle.go and docs/DESIGN.md).
//   - Access: which clients may call (address prefixes, privileged source
//     ports); squashing maps root, or everyone, to the anonymous user.
//   - Write verifier: 8 random bytes per server start, in WRITE and COMMIT
//     replies, so clients resend unstable writes after a restart.
//
// # Invariants
//
//   - R1: per connection one goroutine reads; at most MaxInFlight calls are
//     read and not yet answered; at the cap it stops reading, so a client
//     that sends faster than the server answers is slowed, not buffered.
//   - R2: at most Workers handlers run at once, over all connections.
//   - R3: each reply is one record, written whole by its connection's single
//     writer; replies go out in completion order, not request order.
//   - R4: a Call, its Args, and every slice Args returned are valid only
//     until the handler returns: record buffers are reused.
//   - R5: a record over MaxRecord, a write the client does not read, or
//     garbage on the stream ends that connection only.
//   - R6: no state is kept on a connection beyond the stream: the DRC is
//     keyed on client address, port, xid, program, version, procedure and an
//     argument hash, because ESXi reconnects from the same port and
//     retransmits there.
//   - R7: a handler's error or panic becomes a SYSTEM_ERR reply and a log
//     line; the connection and the server go on.
//   - R8: at most MaxReadBytes of request records are read and not yet
//     handled, over all connections; a record's first fragment waits,
//     unread, until handlers free enough (its later fragments do not wait,
//     so a record under way always completes). A record larger than the
//     whole budget is read when nothing else is charged.
//
// # Caveats
//
// Request memory is bounded by MaxReadBytes (16 MiB), plus, per
// connection, one record under way (MaxRecord) and up to MaxInFlight
// replies; the number of connections is not bounded. Without R8 it was
// MaxInFlight times MaxRecord per connection (272 MiB): 1 MiB writes
// waiting for room in the store's log held that much, and a loopback
// client (a hypervisor mounting its own datastore) had the same data in
// its page cache as well. A handler
// that never returns holds its worker and blocks Shutdown until its context
// expires. The DRC lives in memory: a retransmission after a restart runs
// again. Refused NFS clients keep their connection and get AUTH_TOOWEAK on
// every call; PORTMAP, and MOUNT apart from MNT, answer anyone.
package nfsfs
