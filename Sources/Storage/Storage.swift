// Storage module: the Raft WAL, snapshot files, and (not written yet) the MVCC store on LMDB.
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
// Planned sync mode for LMDB (MVCC, not written yet): the applied Raft index is stored in the same
// write transaction as the data, and the WAL is replayed idempotently from that index, so LMDB
// need not fsync every commit for correctness. MDB_NOSYNC is NOT acceptable (LMDB documents that a
// system crash can then corrupt the file, not just lose transactions). MDB_NOMETASYNC keeps
// integrity and may lose only the last committed transactions on an OS crash; they are replayed
// from the WAL. The one rule: mdb_env_sync(force) must complete before WAL segments or Raft log
// entries covering the applied index are released (snapshot / releaseBefore).
