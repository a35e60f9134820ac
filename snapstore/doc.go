// Package snapstore holds dstore's namespaces: the live tree of the
// datastore (inodes, directories, attributes, and for each regular file the
// block store volume that holds its data) and, with the snapshot issue, the
// snapstore of frozen snapshots. NFS (package nfsfs) only speaks the
// protocol; every name, attribute and file-to-volume mapping lives here.
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
//
// # Invariants
//
//   - N1: the namespace in memory is the authority; bbolt holds it as of the
//     block store's checkpoint, and the NVLOG holds the deltas after it
//     (through blockstore.Extension), so a namespace operation costs a
//     group-committed log append, not a bbolt transaction, and is durable
//     when it returns.
//   - N2: inode numbers and directory cookies are allocated monotonically and
//     never reused; a file handle (ino, generation) of a removed file stays
//     stale forever.
//   - N3: every regular file has exactly one volume; the volume is created in
//     the same transaction as the file and deleted in the same transaction
//     as the last link to the file.
//   - N4: a non-directory's link count is the number of entries naming it; a
//     directory's is 2 (its entry and ".") plus one per subdirectory ("..").
//
// # Caveats
//
// N2 does not hold for inode numbers across a restart yet: the next inode
// number is recomputed at open as the highest existing one plus one, and
// every generation is 1, so the numbers of the newest removed inodes are
// handed out again (docs/DESIGN.md, "Known limits and open work").
//
// The whole namespace is in memory, O(files + names), and one lock guards
// it: every change, and every WRITE (to set the file's times), takes it for
// writing. File times changed by writes are logged once a second, so after
// a crash they can lag the data by about that much.
package snapstore
