// Package blockstore is dstore's durable, deduplicating, compressing block
// store: every file's data lives here as a volume, a sparse array of
// fixed-size blocks presented as a writable top layer over a chain of frozen
// layers.
//
// # Vocabulary
//
//   - Block: a fixed-size, aligned piece of a volume (the datastore's block
//     size, fixed at init; 4 KiB by default). Block N covers bytes
//     [N*B, (N+1)*B).
//   - Fingerprint: keyed BLAKE3-256 of a block's plaintext. The key is
//     meta/fp_key, or, in an encrypted datastore, derived from the
//     datastore key. Equal fingerprints mean equal blocks. The blocks of a
//     write (and of a read's pread run, to verify them) are hashed side by
//     side by internal/fphash, sixteen BLAKE3 compressions at once on
//     AVX-512.
//   - Index and its front: the bbolt bucket fingerprint -> chunk ID that
//     dedupe looks up, and fpCache, a fixed 64 Ki-entry cache of entries
//     recently found there (missing entries allowed, wrong ones never: GC
//     drops what it deletes); and fpFilter, a fixed-size Bloom filter of
//     the index's fingerprints, so a write of new data skips the index
//     lookup (false positives allowed, false negatives never: destage adds
//     what it commits before the chunk leaves the pending map).
//   - Chunk: one stored, sealed block: compressed (or raw when that does not
//     pay), optionally encrypted, identified by a chunk ID that never changes
//     and is never reused, located in a pack.
//   - Pack: an append-only file of chunk records (packs/<id>.pack). GC
//     compacts packs; chunk IDs survive compaction because only the chunk
//     table records where a chunk lives.
//   - Layer: a sparse map block -> chunk (or an explicit hole). A layer is
//     writable (the top of exactly one volume) or frozen (immutable, held by
//     snapshots, by child layers, or both). A layer has a parent (its basis),
//     a lineage (the root layer ID of its family tree), a size and a limit:
//     blocks at or above the limit are not visible from below it.
//   - Volume: a top layer. Freeze, clone, restore and release are O(1)
//     operations on layers.
//   - NVLOG: the write-ahead log. Every mutation (block writes, size changes,
//     layer operations and extension payloads) is a log record; the bbolt
//     file is a checkpoint of the log's effects up to the checkpoint LSN.
//   - Transaction: layer operations and extension payloads that Store.Update
//     (or UpdateAsync, then WaitDurable) logs as one record, atomically.
//   - Extension: the package above (snapstore), which keeps its own
//     metadata in extension payloads and its own bbolt buckets; the store
//     hands the payloads back through Load, Replay and Destage.
//   - Destage: the background step that turns log records into chunks in
//     packs and entries in bbolt, then truncates the log behind it. Packs
//     are written with direct I/O where the filesystem allows it (pack.go).
//   - Front: the map and index entries of plain block writes that destage
//     defers: journaled in bbolt bucket "front" with their batch, kept in
//     memory as deferred pending blocks (at most Options.FrontBlocks), and
//     merged into the map and the index in sorted transactions now and
//     then (front.go).
//   - Quarantine: keeping a chunk that failed verification out of
//     deduplication (in memory, and in bucket quarantine so that a
//     restart keeps it), so new writes of its content store a good copy.
//   - Repair: a read of a chunk that failed verification asks the
//     Repairer (objex: an exported copy) for the block by fingerprint,
//     serves a copy that matches it, and writes it back as the same chunk
//     ID in a new pack (repair.go).
//
// # Invariants
//
//   - I1: a write is acknowledged as stable only after its log record is
//     durable (fdatasync). Unstable writes are durable after the next Sync.
//   - I2: bbolt never references a pack byte that is not durable: pack data
//     is fdatasync'ed before the transaction that points at it commits.
//   - I3: a pack file is deleted only after the transaction that moved its
//     live chunks elsewhere (or proved it dead) has committed.
//   - I4: the in-memory state (layer graph, volume tops, pending blocks, and
//     through the Extension the state above) is bbolt's checkpoint (with
//     the front journal merged, as Open does first) plus the log after it;
//     replay on open rebuilds it from exactly that.
//   - I5: every chunk read is verified against its fingerprint (and AEAD tag
//     when encrypted); a mismatch is an error wrapping ErrCorrupt, never
//     zeros or wrong bytes.
//   - I6: layer IDs, volume IDs, chunk IDs and pack IDs are allocated
//     monotonically and never reused, so a stale log record can only name an
//     object that no longer exists (and is then skipped), never a different
//     one. A child layer's ID is always greater than its ancestors' IDs.
//   - I7: GC never removes a chunk that a layer map entry, a pending log
//     record, or a dedupe hit made while GC ran can reference. Writers hold
//     the GC lock shared from their index lookup until their record is
//     queued; GC marks hint-less pending references by fingerprint, and
//     every map entry destage writes while GC marks marks its chunk (the
//     barrier that lets GC walk the map without a lock).
//
// # Caveats
//
// A write longer than 4 MiB is logged as several records, each atomic on
// its own. Open raises GOMAXPROCS by one, once per process, unless the
// environment sets it: the log's flusher and the destage loop sit in
// system calls, each holding a scheduler processor, and the writers they
// wake need another to run on (docs/DESIGN.md section 16). The blocks of a
// large write are fingerprinted, looked up and sealed on all CPUs by
// internal/par's helpers, which stay awake for 300 µs after each write
// before they park. The function given to Update runs under the store
// mutex and must not call other Store methods. Scrub, and GC's walks of
// the map and the chunk table, hold no lock that writers or destage wait
// on (docs/DESIGN.md sections 11 and 12); GC's commit and compaction do.
//
// The on-disk formats (NVLOG records, packs, bbolt buckets) are specified
// byte by byte in docs/DESIGN.md; constants marked "wire format" here must
// change only with a format version bump.
package blockstore
