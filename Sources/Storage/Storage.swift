// Storage module: the Raft WAL, snapshot files, and the MVCC store on LMDB.
//
// WAL (WAL/WAL.swift; format documented at the top of that file)
// - Directory `<wal>`: `LOCK` (flock, exclusive, non-blocking: a second opener, in this or another
//   process, gets DirectoryLockedError), segments `<seq>-<firstIndex>.wal` (16 hex digits each),
//   preallocated with posix_fallocate (64 MiB default, WALOptions.segmentSize for tests), created as
//   `.tmp`, fsynced, renamed, directory fsynced; removals (releaseBefore) fsync the directory.
// - Records 8-byte aligned: length, type (entry / hard state / snapshot marker), flags (batch end),
//   CRC32C (CRC32C.swift, slicing-by-8), batch number. `append(entries:hardState:)` = one pwrite +
//   one fdatasync. A new segment starts with the latest snapshot marker and hard state, so older
//   segments can be deleted without losing them.
// - Recovery: a bad record or an incomplete batch in the last segment, with no record of a later
//   batch after it, is a torn tail: zeroed, synced and reported in WALReplay.truncatedTail (the
//   caller logs it). Anything else is WALError.corrupt(file:offset:) / .missingSegment /
//   .indexGap: never a silent skip. After a failed write or fdatasync the WAL refuses further
//   appends (WALError.failed): after a failed fsync the page cache state is unknown, so only a
//   reopen (recovery) may decide what is durable.
// - A WAL is a non-Sendable class: it is confined to its owner (the Raft loop's WAL writer).
//
// Snapshots (Snapshot/Snapshotter.swift): `<index>-<term>.snap`, header + conf state + data + CRC32C,
// written tmp -> fsync -> rename -> fsync dir; loadNewest() skips (and reports) invalid files;
// prune(keep:).
//
// MVCC store (MVCC/*.swift; the contract is CONVENTIONS.md "Interface: MVCC store")
// - Files: `<dir>/LOCK` (flock), `db-<gen>.mdb` + `-lock` (one LMDB environment, MDB_NOSUBDIR,
//   MDB_NOTLS so reads run on any thread). `gen` changes only in defragment (new file, rename,
//   switch; open picks the highest generation and deletes older leftovers).
// - Tables: keys (user key ‖ main ‖ sub, BE, custom comparator: key bytes then revision -> 25-byte
//   header (flag, create, version, lease) + value, or a 1-byte tombstone), revs (main ‖ sub -> flag +
//   key: history in revision order, compaction, HashKV), sys (rev, compact, applied, longNextID), meta,
//   leases, leaseKeys (lease ‖ key), longKeys + longRevs (keys over 495 bytes, below).
//   No in-memory index: open reads three integers (0.3 ms at 1M keys).
// - Keys of any length (etcd's only bound is the request size, the server's job). Keys up to 495 bytes
//   (LMDB's 511-byte key limit minus the revision) live in `keys` exactly as before long keys existed
//   (no migration; an old data dir just gains two empty tables on open). A longer key K gets an id
//   (sys longNextID, assigned in apply order) and lives in longKeys (K[0..<495] ‖ hash(rest) ‖ id ->
//   rest) and longRevs (id ‖ main ‖ sub -> the same records); leaseKeys holds lease ‖ K[0..<495] ‖ id
//   -> rest for it. Since a short key s < K iff s <= K[0..<495], each group of long keys with one
//   495-byte prefix sorts right after that prefix: scans merge the key table with the long keys
//   (longKeys is ordered by prefix; one group at a time is loaded and sorted by its suffixes). revs
//   holds full keys, so history, compaction and HashKV (over the full key, as etcd) are unchanged.
//   Short-key paths cost one mdb_stat per range (is there any long key?). Details: MVCC/LongKeys.swift.
// - Reads: a range walks the key table once per user key (one cursor step per key when it has one
//   version; a seek to the newest version <= the read revision otherwise); count is of the whole
//   range (etcd). Writes: `write{}` = one LMDB write transaction; request errors are checked before
//   anything is written (etcd's order), so a failed op leaves no trace; an LMDB failure breaks the
//   batch (nothing commits). Quota: applied, then `.noSpace` (etcd's quotaApplier), so members stay
//   identical; the apply loop must catch per op, an error escaping write{} aborts the batch.
// - Sync modes (MVCCOptions.syncEachWrite). false (the server's default): commits go to the page cache
//   only (MDB_NOSYNC) and `sync()` (the server: on a thread, right after each commit) makes them
//   durable; a commit waits until the previous one is synced, each sync records its transaction id in
//   `db-<gen>.mdb-synced`, and open drops a newest commit that is one past the record (its meta page
//   is rewritten with the older one): LMDB never reuses pages of the previous snapshot, so that one
//   is intact whatever part of the newest reached the disk. Safe across an OS crash without
//   MDB_PREVSNAPSHOT (which LMDB 0.9.24 lacks); the rules and the proof: MVCC/SyncRecord.swift.
//   true: MDB_NOMETASYNC, every commit fdatasyncs its pages on the committing thread. In both modes
//   the applied Raft index is in the same commit as the data and the WAL is replayed idempotently
//   from it, so a lost or dropped commit is re-applied. The one rule for the caller: `sync()` before
//   WAL segments or Raft log entries covering the applied index are released (snapshot / releaseBefore).
// - Compaction: `compact(rev)` takes effect at once (ranges below it, history below it fail, as
//   etcd); old versions are removed in steps of MVCCOptions.compactionBatch revision entries, one
//   step per write{} (progress persisted in sys "compactNext"), like etcd's batched compaction, so
//   the apply loop never stalls for a whole key space. An empty `write { _ in }` advances it.
//   Watch history gives no prevKv for an event at the compacted revision itself (etcd reads it at
//   rev-1, which is compacted), so nothing observable depends on the progress except dbSize/hash().
// - Maintenance: hashKV is etcd's HashByRev byte for byte (checked against etcd 3.4.23 in
//   MVCCHashKVReferenceTests); hash() is Keel's own (CRC-32C of all tables). writeSnapshot(to:) is
//   LMDB's compacting copy of one read snapshot; restore validates before it replaces.
//   defragment() rebuilds the tables with MDB_APPEND (full pages) into a new file; reads may continue
//   (they finish on the old file), writes should be paused (a write during the copy makes it retry,
//   then fail after 3 attempts; nothing is lost).
