// Package objex is dstore's object exchange (OX): it exports snapshots to
// object stores (S3 buckets, or directories) as encrypted, deduplicated,
// integrity-protected objects, and imports them back as instant clones
// whose blocks are fetched on demand and copied in the background.
//
// # Vocabulary
//
//   - Target: a place that holds exported snapshots: s3://bucket/prefix
//     (minio-go; endpoint, region and credentials from options or
//     AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
//     AWS_SECRET_ACCESS_KEY) or file:///dir. Each has a random ID and a
//     master key, wrapped by a key file or an argon2id passphrase and
//     stored in the target (ox1/key). A copy of the target is useless
//     without the key file or passphrase.
//   - Chunk ID: keyed BLAKE3-256 (key derived from the target's master
//     key) of a block's plaintext. The same content has the same ID in a
//     target whichever datastore exports it, and the ID reveals nothing
//     without the key (no datastore fingerprint reaches the target).
//   - Data object: ox1/data/xx/<object ID>, tens of MiB of chunk records,
//     each compressed and sealed (XChaCha20-Poly1305) with its object key,
//     offset, chunk ID and codec as associated data, so a record can be
//     fetched with a ranged GET and verified on its own, and a record or
//     object moved, swapped or truncated does not open.
//   - Index object: ox1/index/<object ID>, the sealed list of a data
//     object's records; together the target's chunk index, which makes
//     exports incremental across snapshots, files and datastores.
//   - Manifest: ox1/snap/<name>, a sealed snapshot: its files, each with
//     its block map, and the chunk table (chunk ID -> object, offset,
//     length). Written last: the commit point of an export.
//   - Remote basis: what an imported file reads through: a file of a
//     manifest, served to the block store as a blockstore.RemoteBasis
//     (with RemoteIndex and RemoteBatch).
//   - Thickener: the background job that copies an imported file's
//     remaining blocks, in order, under the target's bandwidth limit, after
//     demand reads.
//   - Repair: the Manager is the block store's Repairer (installed by
//     Attach): a local chunk that fails verification is fetched from a
//     target that holds it (repair.go). A manifest may have another block
//     size than the datastore; blocks are then assembled or cut (import.go).
//
// # Invariants
//
//   - X1: a manifest is written only after every object it names is
//     stored (data object, then index object); a half-done export leaves
//     no manifest and is invisible.
//   - X2: everything read from a target is authenticated before use:
//     records (AEAD, then the chunk ID of the decompressed plaintext),
//     index objects and manifests (AEAD bound to their key); a failure is
//     an error wrapping ErrCorrupt, never zeros or wrong bytes, and a
//     manifest that fails refuses the import.
//   - X3: the local chunk cache (ox.db) only says "the target holds chunk
//     C at (object, offset, length)" after that object's data and index
//     objects are stored; exports check that reused objects still exist
//     before they commit.
//   - X4: an imported block whose content this datastore already stores
//     (known chunk ID -> fingerprint, found in the fingerprint index) is a
//     reference, never a fetch.
//   - X5: every job resumes: an export by redoing its walk (chunks already
//     in the target are skipped), a thickener by asking the block store
//     which blocks its remote layer still lacks.
//
// # Use
//
// Open a Manager on a directory of the datastore, pass Manager.Remote as
// blockstore.Options.Remote when opening the datastore, then Attach it.
// AddTarget, Targets, RemoveTarget, SetBandwidth and Rekey manage targets;
// Export, Import, Snapshots, DeleteSnapshot, Verify and Prune act on them;
// Jobs and Stats report progress. docs/DESIGN.md ("OX: object exchange")
// specifies the formats byte by byte.
package objex
