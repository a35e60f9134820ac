// Package snapstore holds dstore's namespaces: the live tree of the
// datastore (inodes, directories, attributes, and for each regular file the
// block store volume that holds its data) and the snapstore: protection
// groups, their snapshots, and the read-only tree /GROUP/SNAPSHOT-ID/<member
// path> computed from the snapshot records (snapview.go). NFS (package
// nfsfs) only speaks the protocol; every name, attribute and file-to-volume
// mapping lives here. Retention plans (retention.go) and cron schedules
// with a scheduler on an injected clock (schedule.go, clock.go) are here
// too.
//
// # Vocabulary
//
//   - Inode: a file, directory, symlink or special file, named by an inode
//     number (ino) and a generation. The root directory is ino 1.
//   - Directory entry: a name in a directory, with a cookie: the entry's
//     sequence number in its directory, from the directory's next-cookie
//     counter, increasing and never reused, so a READDIR resumes at a cookie
//     with a binary search and stays stable while the directory changes.
//   - Delta: one change to the namespace (put or delete an inode, put or
//     delete an entry). Every namespace operation is a list of deltas that
//     commits in one blockstore transaction, together with the layer
//     operations it needs (a new file's volume, a removed file's volume).
//   - Payload: the deltas of one operation as a blockstore extension
//     payload; its format, and the buckets ns_inodes and ns_ents, are in
//     docs/DESIGN.md ("Namespace").
//   - Protection group: member patterns matched afresh at every snapshot,
//     schedules, retention. Snapshot: one log record that freezes every
//     member's volume and stores the record (path, attributes, frozen
//     layer per member); restore, clone and delete are one record each
//     (docs/DESIGN.md, "Snapshots and protection groups").
//
// # Invariants
//
//   - N1: the namespace in memory is the authority; bbolt holds it as of the
//     block store's checkpoint, and the NVLOG holds the deltas after it
//     (through blockstore.Extension), so a namespace operation costs a
//     group-committed log append, not a bbolt transaction, and is durable
//     when it returns.
//   - N2: inode numbers, directory cookies and snapshot and group sequence
//     numbers are allocated monotonically and never reused (inode numbers
//     are reserved durably in blocks of 1024; the sequence counters live in
//     ns_meta); a file handle of a removed file stays stale forever.
//   - N3: every regular file has exactly one volume; the volume is created in
//     the same transaction as the file and deleted in the same transaction
//     as the last link to the file.
//   - N4: a non-directory's link count is the number of entries naming it; a
//     directory's is 2 (its entry and ".") plus one per subdirectory ("..").
//
// # Caveats
//
// The whole namespace is in memory, O(files + names), and one lock guards
// it: every change, and every WRITE (to set the file's times), takes it for
// writing. File times changed by writes are logged once a second, so after
// a crash they can lag the data by about that much.
package snapstore
