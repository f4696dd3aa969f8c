#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLMDB
import KeelAPI
import Synchronization

// The MVCC store: etcd's data model (revisions, versions, history, compaction, leases) on LMDB.
//
// Files in the store directory: `LOCK` (flock: one process per directory), `db-<gen>.mdb` and its
// `db-<gen>.mdb-lock` (LMDB), `db-<gen>.mdb-synced` (without fdatasync per commit: the last synced
// transaction, SyncRecord.swift). `gen` changes in `defragment` and `restore`.
//
// Tables (one LMDB environment, see LMDB.swift):
//   keys       user key ‖ main ‖ sub (BE) -> put record (create, version, lease LE; value) or tombstone
//   revs       main ‖ sub (BE)            -> flag ‖ user key       (history in revision order, compaction)
//              A value longer than Rec.inlineValueLimit is kept in its revs entry instead (flag putRef:
//              flag ‖ key length ‖ user key ‖ value; the key-table record then ends with the sub
//              revision): revs grows only at its end, the key table takes random inserts, so a big value
//              is written into one append-only page instead of making the key table's leaves many.
//              Records of both kinds are read alike, so stores written before putRef need no migration.
//   sys        "rev", "compact", "applied" -> Int64/UInt64 LE
//   meta       caller's records
//   leases     id (BE) -> ttl ‖ remaining TTL (LE);  leaseKeys  id (BE) ‖ key -> ""
//   longKeys, longRevs: keys longer than 495 bytes, with ids; see LongKeys.swift
// Latest-only key table (sys "format" = 2, chosen when the store is created:
// MVCCOptions.latestOnlyKeyTable): `keys` holds only the newest version of each short key (put record
// or tombstone, as above), and each revs entry of a short key is a full record (Rec.fullRevValue: the
// version's create, version, lease and value, and a pointer to the key's previous version). A read at
// an older revision follows those pointers back from the key's one entry; history, HashKV and
// compaction read revs. A put then rewrites one small table's leaves instead of a table of every
// version (Benchmarks/RESULTS.md, "A grown store"). Long keys keep their tables as they are.
// Nothing is held in memory about keys: opening a store reads three integers.
//
// Durability: LMDB with MDB_NOMETASYNC: every write{} is one LMDB commit with one fdatasync of the
// data pages; the meta page is synced by the next commit (or sync()). An OS crash can lose the last
// commit but never corrupts the file; the applied Raft index is in the same commit as the data, so
// the server replays the WAL from `appliedIndex` + 1 idempotently. A process crash (SIGKILL) loses
// nothing that was committed. Call `sync()` before releasing WAL entries <= appliedIndex.
// `MVCCOptions.syncEachWrite = false` (MDB_NOSYNC) leaves syncing to `sync()`, with at most the newest
// commit unsynced and dropped at open unless recorded as synced (`db-<gen>.mdb-synced`, SyncRecord.swift).
//
// Concurrency: reads from any thread (each call reads one LMDB snapshot); ONE writer at a time (the
// apply loop; a second concurrent write{} blocks in LMDB until the first ends; write{} must not be
// nested on one thread).

public final class MVCCStore: Sendable {
    /// Keys up to this many bytes (LMDB's 511-byte key limit minus the 16 revision bytes) are stored
    /// inline in the key-major table; longer ones, of any length, in the long-key tables
    /// (LongKeys.swift). Not a limit any more: like etcd, the store takes keys of any length.
    public static let inlineKeySize = Rec.maxUserKey
    /// Old name of `inlineKeySize` (it was the longest key the store took, before long keys).
    @available(*, deprecated, renamed: "inlineKeySize", message: "keys of any length are stored now")
    public static let maxKeySize = Rec.maxUserKey
    public let directory: String
    public let options: MVCCOptions

    struct State: ~Copyable {
        var env: LMDBEnv?
        var lock: DirectoryLock?
        var generation: UInt64
    }
    // Holds the current environment. A mutex, not an actor: reads are synchronous calls from any
    // thread by contract; the critical section is a pointer copy (+retain), and it is what lets
    // `defragment` swap the file while readers finish on the old one.
    private let state: Mutex<State>
    private let cachedRev: Atomic<Int64>
    private let cachedCompact: Atomic<Int64>
    private let cachedApplied: Atomic<UInt64>

    /// Open found the newest commit possibly incomplete (the one after the last recorded sync, see
    /// SyncRecord.swift) and opened the snapshot before it: `appliedIndex` is older than what was
    /// applied before the crash, and the caller replays the rest from its log.
    public let droppedUnsyncedCommit: Bool
    /// Open found commits more than one past the last recorded sync: another writer (without the sync
    /// record, e.g. an older Keel) committed and synced them; opened as it is (SyncRecord.swift).
    public let openedAfterCommitsWithoutRecord: Bool

    private init(directory: String, options: MVCCOptions, env: LMDBEnv, lock: sending DirectoryLock, generation: UInt64,
                 rev: Int64, compact: Int64, applied: UInt64, recovery: SyncRecovery) {
        self.directory = directory
        self.options = options
        self.droppedUnsyncedCommit = recovery == .droppedUnsyncedCommit
        self.openedAfterCommitsWithoutRecord = recovery == .commitsWithoutRecord
        state = Mutex(State(env: env, lock: lock, generation: generation))
        cachedRev = Atomic(rev)
        cachedCompact = Atomic(compact)
        cachedApplied = Atomic(applied)
    }

    static func dbName(_ gen: UInt64) -> String { "db-" + WAL.hex16(gen) + ".mdb" }

    /// Opens (creating if needed) the store in `directory`.
    public static func open(directory: String, options: MVCCOptions = MVCCOptions()) throws(MVCCError) -> MVCCStore {
        let lock: DirectoryLock
        do { lock = try DirectoryLock(directory: directory) } catch { throw .storage("\(error)") }
        let names: [String]
        do { names = try FileIO.listDir(directory) } catch { throw .storage("\(error)") }
        // The newest generation wins; older ones are leftovers of an interrupted defragment.
        var gens: [UInt64] = []
        for n in names where n.hasPrefix("db-") && n.hasSuffix(".mdb") && n.count == 23 {
            if let g = UInt64(n.dropFirst(3).prefix(16), radix: 16) { gens.append(g) }
        }
        gens.sort()
        let gen = gens.last ?? 1
        for g in gens.dropLast() {
            unlink(directory + "/" + dbName(g)); unlink(directory + "/" + dbName(g) + "-lock")
        }
        for n in names where n.hasSuffix(".tmp") { unlink(directory + "/" + n) }
        let file = directory + "/" + dbName(gen)
        // Records of older generations (and of files defragment removed) are stale.
        for n in names where n.hasSuffix(".mdb-synced") && n != dbName(gen) + "-synced" { unlink(directory + "/" + n) }
        let recovery = try dropUnsyncedCommit(file)
        let env = try LMDBEnv(path: file, mapSize: options.effectiveMapSize, latestOnlyIfNew: options.latestOnlyKeyTable)
        try prepareSyncing(env, options: options, directory: directory)
        let (rev, compact, applied) = try env.read { (t) throws(MVCCError) in
            let r = try t.revisions()
            return (r.current, r.compacted, UInt64(bitPattern: try t.sysInt("applied") ?? 0))
        }
        return MVCCStore(directory: directory, options: options, env: env, lock: lock, generation: gen,
                         rev: rev, compact: compact, applied: applied, recovery: recovery)
    }

    /// What open found in the sync record (SyncRecord.swift, rule 3).
    enum SyncRecovery { case none, droppedUnsyncedCommit, commitsWithoutRecord }

    /// SyncRecord.swift, rule 3: if the newest commit of `file` is the one after its recorded sync, its
    /// pages may be missing after a system crash: open the recorded snapshot instead. Newer still: other
    /// writers committed (and synced) without the record; the file is opened as it is.
    static func dropUnsyncedCommit(_ file: String) throws(MVCCError) -> SyncRecovery {
        guard FileIO.exists(file), let synced = SyncRecord.read(path: SyncRecord.path(forDataFile: file)) else {
            return .none
        }
        let newest = try LMDBMetaPages.newestTxnID(path: file)
        if newest <= synced { return .none }
        if newest > synced + 1 { return .commitsWithoutRecord }
        try LMDBMetaPages.revertNewest(path: file)
        // No process uses the file (the directory lock is ours): LMDB re-creates its lock file.
        unlink(file + "-lock")
        return .droppedUnsyncedCommit
    }

    /// After opening `env` (store open, defragment). Commits that fdatasync themselves: a sync record
    /// left by an earlier run without them is removed (it would misjudge later commits). Commits
    /// without fdatasync: the file is synced and recorded before the first of them (SyncRecord.swift).
    static func prepareSyncing(_ env: LMDBEnv, options: MVCCOptions, directory: String) throws(MVCCError) {
        let recordPath = SyncRecord.path(forDataFile: env.path)
        if options.syncEachWrite {
            try sync(env)
            guard FileIO.exists(recordPath) else { return }
            unlink(recordPath)
            do { try FileIO.fsyncDir(directory) } catch { throw .storage("\(error)") }
            return
        }
        let existed = FileIO.exists(recordPath)
        let record = try SyncRecord(path: recordPath)
        env.syncState.withLock { $0.record = record }   // closed with the environment
        try sync(env)                                    // the fdatasync, then the record of it
        if !existed {
            do { try FileIO.fsyncDir(directory) } catch { throw .storage("\(error)") }
        }
        try LMDB.check(mdb_env_set_flags(env.env, UInt32(MDB_NOSYNC), 1), "set MDB_NOSYNC")
        env.noSync.store(true, ordering: .releasing)
    }


    /// Closes the store. Calls after close throw `.storage("mvcc: store is closed")`; reads still
    /// running finish on their snapshot (the environment closes when the last of them ends).
    /// Without fdatasync per commit, the last commit is synced first (else the next open would drop
    /// it: SyncRecord.swift); a failing sync is not reported here, the next open then drops it.
    public func close() {
        let (env, lock) = state.withLock { s in
            let r = (s.env, s.lock)
            s.env = nil; s.lock = nil
            return r
        }
        if let env, env.noSync.load(ordering: .acquiring) { try? Self.sync(env) }
        _ = env
        lock?.release()
    }

    var generation: UInt64 { state.withLock { $0.generation } }

    /// Switches to a new environment (defragment); the old one closes when its last user is done.
    func swap(to env: LMDBEnv, generation: UInt64) {
        state.withLock { s in
            if s.env != nil { s.env = env; s.generation = generation }
        }
    }

    func isCurrent(_ env: LMDBEnv) -> Bool { state.withLock { $0.env === env } }

    func currentEnv() throws(MVCCError) -> LMDBEnv {
        guard let e = state.withLock({ $0.env }) else { throw .storage("mvcc: store is closed") }
        return e
    }

    // MARK: cached counters (updated after each commit)

    /// Current store revision: a new store is at 1, the first change makes 2.
    public var revision: Int64 { cachedRev.load(ordering: .acquiring) }
    /// The store's key-table layout, recorded at creation: "latest-only" (sys "format" 2,
    /// MVCCOptions.latestOnlyKeyTable) or "all-versions".
    public var keyTableLayout: String { ((try? currentEnv().latestOnly) ?? false) ? "latest-only" : "all-versions" }
    /// The last compaction's revision; 0 when never compacted.
    public var compactedRevision: Int64 { cachedCompact.load(ordering: .acquiring) }
    /// The last applied Raft index (written in the same LMDB transaction as the data).
    public var appliedIndex: UInt64 { cachedApplied.load(ordering: .acquiring) }

    // MARK: reads

    /// etcd's Range on one consistent snapshot; header.revision = the snapshot's store revision.
    public func range(_ r: Etcdserverpb.RangeRequest) throws(MVCCError) -> Etcdserverpb.RangeResponse {
        try currentEnv().read { (t) throws(MVCCError) in
            let (cur, compact) = try t.revisions()
            return try t.range(r, curRev: cur, compactRev: compact)
        }
    }

    /// Watch history: events with start <= revision <= end (nil: current) for `key` / [key, rangeEnd)
    /// (etcd's range_end conventions), in revision order, prevKv filled when asked (absent when the
    /// previous version was compacted away, as in etcd). `limit` > 0 stops after that many events at
    /// the end of a revision (a revision is never split). Throws `.compacted` when start < the
    /// compacted revision (etcd's watcher rule `minRev < compactRev`: history at the compacted
    /// revision itself is complete) and `.futureRevision` when `end` is beyond the current revision.
    public func events(from start: Int64, to end: Int64? = nil, key: [UInt8], rangeEnd: [UInt8] = [],
                       prevKV: Bool = false, limit: Int = 0) throws(MVCCError) -> [Mvccpb.Event] {
        try currentEnv().read { (t) throws(MVCCError) in
            let (cur, compact) = try t.revisions()
            if start < compact { throw .compacted(compactRevision: compact) }
            if let end, end > cur { throw .futureRevision }
            return try t.events(from: start, to: end ?? cur, key: key, rangeEnd: rangeEnd, prevKV: prevKV, limit: limit,
                                compactRev: compact)
        }
    }

    public func lease(id: Int64) throws(MVCCError) -> LeaseRecord? {
        try currentEnv().read { (t) throws(MVCCError) in try t.lease(id) }
    }

    public func leases() throws(MVCCError) -> [LeaseRecord] {
        try currentEnv().read { (t) throws(MVCCError) in try t.allLeases() }
    }

    /// Keys attached to a lease, in key order.
    public func leaseKeys(id: Int64) throws(MVCCError) -> [[UInt8]] {
        try currentEnv().read { (t) throws(MVCCError) in try t.leaseKeys(id) }
    }

    /// A record written with `setMeta` (nil when absent).
    public func meta(_ key: String) throws(MVCCError) -> [UInt8]? {
        try currentEnv().read { (t) throws(MVCCError) in try t.get(t.env.meta, Array(key.utf8)) }
    }

    // MARK: writes

    /// One LMDB write transaction: `body` runs the batch's operations; when it returns, everything
    /// commits at once (one fdatasync) with the revision and applied index. If `body` throws, or an
    /// LMDB failure broke the transaction, nothing of the batch is committed and the error is thrown.
    ///
    /// `beforeCommit` runs once the batch is complete and only the commit itself (page writes and
    /// fdatasync) is left: nothing it could still throw depends on the batch's contents except
    /// LMDB's own commit failure (I/O error, no room for the free list). Readers do not see the
    /// batch until `write` returns.
    public func write<T>(_ body: (inout MVCCWriteTxn) throws(MVCCError) -> T,
                         beforeCommit: () -> Void = {}) throws(MVCCError) -> T {
        let w = try beginWrite()
        let result: T
        do throws(MVCCError) {
            result = try w.batch(body)
        } catch {
            w.abort()
            throw error
        }
        beforeCommit()
        try w.commit()
        return result
    }

    /// Opens a write transaction that several batches share before one commit (`MVCCOpenWrite`):
    /// the apply loop's group commit. Blocks while another write transaction is open.
    public func beginWrite() throws(MVCCError) -> MVCCOpenWrite {
        var env = try currentEnv()
        var t: OpaquePointer?
        while true {
            try LMDB.check(mdb_txn_begin(env.env, nil, 0, &t))
            // defragment may have switched files while we waited for LMDB's writer lock
            if isCurrent(env) { break }
            mdb_txn_abort(t)
            env = try currentEnv()
        }
        guard let txn = t else { throw .storage("mdb_txn_begin returned no transaction") }
        let ctx: WriteContext
        do throws(MVCCError) {
            let lt = LMDBTxn(env: env, txn: txn)
            let (cur, compact) = try lt.revisions()
            let applied = UInt64(bitPattern: try lt.sysInt("applied") ?? 0)
            let info = env.info
            ctx = WriteContext(env: env, txn: txn, rev: cur, compactRev: compact, applied: applied,
                               sizeAtBegin: Int64((info.lastPage + 1) * env.pageSize),
                               quota: options.effectiveQuota)
            ctx.compactNext = try lt.get(env.sys, Array("compactNext".utf8))
            ctx.compactBatch = max(1, options.compactionBatch)
            ctx.inlineValueLimit = max(0, options.inlineValueLimit)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        return MVCCOpenWrite(store: self, ctx: ctx)
    }

    /// After a commit: what readers see from now on.
    fileprivate func published(rev: Int64, compact: Int64, applied: UInt64) {
        cachedRev.store(rev, ordering: .releasing)
        cachedCompact.store(compact, ordering: .releasing)
        cachedApplied.store(applied, ordering: .releasing)
    }

    /// True while old versions of the last compaction are still being removed (one bounded step per
    /// write{}; an empty `write { _ in }` advances it).
    public var compactionPending: Bool {
        (try? currentEnv().read { (t) throws(MVCCError) in try t.get(t.env.sys, Array("compactNext".utf8)) != nil }) ?? false
    }

    // MARK: maintenance

    /// Forces everything committed to disk (the meta page too). Call before releasing WAL segments
    /// or Raft log entries covering `appliedIndex`. May run on any thread, also while the writer
    /// commits (it is one fdatasync of the file: what was committed before it started is durable
    /// when it returns); the environment stays open until it returns, even if the store is closed
    /// or defragmented meanwhile.
    ///
    /// Without fdatasync per commit (`MVCCOptions.syncEachWrite = false`) it also records the synced
    /// transaction (SyncRecord.swift), and the next commit waits for it; syncs are serialized.
    public func sync() throws(MVCCError) {
        let env = try currentEnv()
        try Self.sync(env)
    }

    static func sync(_ env: LMDBEnv) throws(MVCCError) {
        try env.syncState.withLock { (s) throws(MVCCError) in
            let txn = env.lastTxnID
            // Without MDB_NOSYNC a sync also forces the last meta page (MDB_NOMETASYNC): always do it.
            if env.syncFailed.load(ordering: .acquiring) { throw Self.syncFailedError }
            if env.noSync.load(ordering: .acquiring), env.syncedTxn.load(ordering: .acquiring) >= txn { return }
            do throws(MVCCError) {
                try LMDB.check(mdb_env_sync(env.env, 1), "sync")
                try s.record?.write(txnID: UInt64(txn))
            } catch {
                env.syncFailed.store(true, ordering: .releasing)
                throw error
            }
            env.syncedTxn.store(txn, ordering: .releasing)
        }
    }

    static let syncFailedError = MVCCError.storage("mvcc: an earlier sync of the backend failed; reopen the store")

    /// SyncRecord.swift, rule 1: before a commit without fdatasync, the previous commit is synced
    /// (normally the server's background sync has done it; otherwise this waits for it or does it).
    static func syncPreviousCommit(_ env: LMDBEnv) throws(MVCCError) {
        if env.syncFailed.load(ordering: .acquiring) { throw syncFailedError }
        guard env.noSync.load(ordering: .acquiring), env.syncedTxn.load(ordering: .acquiring) < env.lastTxnID else {
            return
        }
        try sync(env)
    }
}

/// A write transaction kept open across batches, committed once for all of them (etcd's backend
/// batch transaction, which commits every 100 ms). LMDB copies every page a commit touches, so
/// one commit for N batches writes each touched leaf and branch page once instead of N times.
///
/// Readers see none of its batches until `commit`. Not thread-safe: every call, from
/// `MVCCStore.beginWrite` to `commit` or `abort`, must come from the thread that opened it (an
/// LMDB write transaction belongs to its thread), and the store must not be closed while it is
/// open. After a batch failed, the transaction is broken: only `abort` is left.
public final class MVCCOpenWrite {
    private let store: MVCCStore
    private let ctx: WriteContext
    /// Batches run in it since it was opened.
    public private(set) var batches = 0

    fileprivate init(store: MVCCStore, ctx: WriteContext) {
        self.store = store
        self.ctx = ctx
    }

    /// The store revision inside the transaction (readers still see the last committed one).
    public var revision: Int64 { ctx.rev }
    /// The applied Raft index inside the transaction.
    public var appliedIndex: UInt64 { ctx.applied }
    /// True once `commit` or `abort` ended it.
    public var isFinished: Bool { ctx.finished }
    /// A pending compaction still has old versions to remove (one bounded step per batch).
    public var compactionPending: Bool { ctx.compactNext != nil }

    /// Runs one batch of operations: `body` as in `MVCCStore.write`, then one step of a pending
    /// compaction. `MVCCWriteTxn.events` in `body` are this batch's. If `body` throws or LMDB
    /// failed, the error is thrown and the whole transaction (earlier batches too) can only be
    /// aborted.
    public func batch<T>(_ body: (inout MVCCWriteTxn) throws(MVCCError) -> T) throws(MVCCError) -> T {
        try ctx.usable()
        ctx.events = []
        ctx.eventPrevValues = true
        ctx.compactStepDone = false
        var w = MVCCWriteTxn(ctx)
        do throws(MVCCError) {
            let result = try body(&w)
            if let broken = ctx.broken { throw broken }
            try ctx.compactStep()           // continue a pending compaction (bounded work)
            batches += 1
            return result
        } catch {
            if ctx.broken == nil { ctx.broken = error }
            throw error
        }
    }

    /// Commits every batch at once with the revision and applied index (one fdatasync unless the
    /// store syncs only in `sync()`), and makes them visible to readers.
    public func commit() throws(MVCCError) {
        do throws(MVCCError) {
            try ctx.usable()
            try ctx.persistCounters()
        } catch {
            abort()
            throw error
        }
        do throws(MVCCError) {
            try MVCCStore.syncPreviousCommit(ctx.env)
        } catch {
            abort()
            throw error
        }
        ctx.finished = true     // a copy of the txn that escaped a batch must not touch it
        try LMDB.checkCommit(mdb_txn_commit(ctx.txn), file: ctx.env.path)
        store.published(rev: ctx.rev, compact: ctx.compactRev, applied: ctx.applied)
    }

    /// Drops every batch of the transaction.
    public func abort() {
        guard !ctx.finished else { return }
        ctx.finished = true
        mdb_txn_abort(ctx.txn)
    }
}
