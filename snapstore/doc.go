// Package snapstore holds dstore's namespaces: the live tree of the
// datastore (inodes, directories, attributes, and for each regular file the
// block store volume that holds its data) and, with the snapshot issue, the
// snapstore of frozen snapshots. NFS (package nfsfs) only speaks the
// protocol; every name, attribute and file-to-volume mapping lives here.
//
// # Vocabulary
//
//   - Inode: a file, directory, symlink or special file, named by an inode
//     number (ino) that is never reused, and a generation.
//   - Directory entry: a name in a directory, with a cookie: the entry's
//     sequence number in its directory, increasing and never reused, so a
//     READDIR resumes at a cookie in constant work and stays stable while
//     the directory changes.
//   - Delta: one change to the namespace (put or delete an inode, put or
//     delete an entry). Every namespace operation is a list of deltas that
//     commits in one blockstore transaction, together with the layer
//     operations it needs (a new file's volume, a removed file's volume).
//
// # Invariants
//
//   - N1: the namespace in memory is the authority; bbolt holds it as of the
//     block store's checkpoint, and the NVLOG holds the deltas after it
//     (through blockstore.Extension), so a namespace operation is durable
//     when Update returns and costs a group-committed log append, not a
//     bbolt transaction.
//   - N2: inode numbers and directory cookies are allocated monotonically and
//     never reused; a file handle (ino, generation) of a removed file stays
//     stale forever.
//   - N3: every regular file has exactly one volume; the volume is deleted in
//     the same transaction as the last link to the file.
//   - N4: link counts equal the number of entries naming the inode (plus "."
//     and ".." for directories, which are implicit).
package snapstore
