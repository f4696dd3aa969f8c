import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft
import Storage

#if canImport(Glibc)
import Glibc
#endif

/// A lease change the apply loop made, for the lessor (in apply order).
public enum LeaseApplied: Sendable, Hashable {
    case granted(id: Int64, ttl: Int64)
    case revoked(id: Int64)
    case checkpointed(id: Int64, remainingTTL: Int64)
}

/// Who hears about applied batches (wired by KeelServer: the watch hub and the lessor). Called on
/// the apply loop; must not block. `events` right after a batch is applied (before the group
/// commit makes it visible to readers: the hub reads history only up to the store's revision),
/// `committed` after each LMDB commit, the others after the commit of their batch.
public struct ApplyHooks: Sendable {
    /// `prevValues`: whether put events carry their prevKv's value (`MVCCWriteTxn.eventPrevValues`).
    public var events: (@Sendable (_ events: [Mvccpb.Event], _ revision: Int64, _ prevValues: Bool) -> Void)?
    /// Whether the next batch's put events must carry their prevKv's value (someone watches with
    /// prev_kv). nil: always. Asked once per batch; `events` says what the batch did.
    public var eventsNeedPrevValues: (@Sendable () -> Bool)?
    public var committed: (@Sendable () -> Void)?
    public var compacted: (@Sendable (_ revision: Int64) -> Void)?
    public var leases: (@Sendable (_ changes: [LeaseApplied]) -> Void)?
    /// The membership after a batch that changed it (peer transport, cluster service).
    var membership: (@Sendable (_ membership: Keelpb.Membership) -> Void)?
    /// The store was replaced by a snapshot from the leader (its revision now).
    var snapshotInstalled: (@Sendable (_ revision: Int64) -> Void)?
    public init() {}
}

/// Meta-table keys of the server's own records.
enum MetaKey {
    static let identity = "keel/identity"
    static let alarms = "keel/alarms"
}

/// The apply loop: confined to its own event loop. Committed entries queue up here; each drain
/// applies everything queued as one batch of an LMDB write transaction (with setAppliedIndex)
/// and answers KV writes at once (their entries are durable in the WAL). The transaction stays
/// open for later drains (group commit, as etcd's backend batch transaction) until something
/// needs it committed: a local read waiting for an answered write (or a watcher for history), a
/// lease, membership, alarm or compaction change (whose callers and lessor only act on committed
/// state), `groupCommitInterval` since it opened, or its size bounds. Watchers get each batch's
/// events at once; after the commit the lessor is fed and the remaining callers completed.
/// Entries at or below the store's applied index were applied before a restart and are skipped
/// (WAL replay is idempotent).
final class Applier {
    private(set) var store: MVCCStore
    /// Where the services read the store (replaced together with `store`).
    var storeSlot: StoreSlot?
    let shared: SharedState
    let logger: Logger
    let loop: any EventLoop
    var hooks: ApplyHooks

    private var queue: [([Raft.Entry], [UInt64: ApplyWaiter])] = []
    /// Raft's ConfState after each conf-change entry handed out (by entry index), from the Raft loop.
    private var confStates: [UInt64: ConfState] = [:]
    /// The applied membership (persisted with the applied index).
    private(set) var membership = Keelpb.Membership()
    private var queuedEntries = 0
    private var drainScheduled = false
    /// Linearizable reads waiting for the applied index, in arrival order.
    private var readWaiters: [(index: UInt64, promises: [EventLoopPromise<Void>])] = []
    private(set) var alarms: [Etcdserverpb.AlarmMember] = []
    var backendCommit = Histogram.etcdDisk()
    private var failedPermanently: MVCCError?
    /// Physical compactions answer only when the store removed the old versions (it does that in
    /// bounded steps, one per write transaction).
    private var physicalWaiters: [(ApplyWaiter, ApplyResult)] = []
    private var compactionStepScheduled = false
    /// With a store opened with `syncEachWrite: false` (MDB_NOSYNC), commits only reach the page
    /// cache; a sync starts right after each commit, on a thread of `NIOThreadPool.singleton`, not
    /// on the apply loop: it is an fdatasync of every page the commit wrote (megabytes when random
    /// keys spread the puts over many leaves), and while the apply loop waited for it no write was
    /// applied or answered. The apply loop goes on applying and answering into the next group
    /// meanwhile. The store lets a commit start only once the previous one is synced (it waits for
    /// this sync if it still runs: SyncRecord.swift), so with the 100 ms group interval and syncs
    /// of tens of ms nothing waits. One sync at a time; before WAL segments are released the
    /// snapshot path syncs synchronously (`syncForSnapshot`).
    /// A sync is scheduled or running.
    private var backendSyncScheduled = false
    /// Commits made so far, and how many of them the last finished sync covers (all that were
    /// made before it started).
    private var backendCommits = 0
    private var backendCommitsSynced = 0
    var backendSync = Histogram.etcdDisk()
    /// The group-commit transaction (nil: everything applied is committed and visible).
    private var group: MVCCOpenWrite?
    private var openSince = NIODeadline.now()
    private var openEntries = 0
    private var openBytes = 0
    /// Its last applied index.
    private var openLastIndex: UInt64 = 0
    private var groupCommitScheduled = false
    /// The longest an applied entry waits to be committed to LMDB (etcd's --backend-batch-interval).
    var groupCommitInterval: TimeAmount = .milliseconds(100)
    /// Bounds of one group commit: entries (etcd's --backend-batch-limit) and entry bytes.
    var groupCommitEntries = 10_000
    static let groupCommitBytes = 16 << 20
    private var stopped = false

    init(store: MVCCStore, shared: SharedState, logger: Logger, loop: any EventLoop, hooks: ApplyHooks) throws(MVCCError) {
        self.store = store; self.shared = shared; self.logger = logger; self.loop = loop; self.hooks = hooks
        if let bytes = try store.meta(MetaKey.alarms), let list = try? Keelpb.AlarmList(serializedBytes: bytes) {
            alarms = list.alarms
        }
        publishAlarms()
        if let bytes = try store.meta(MetaKey.membership), let m = try? Keelpb.Membership(serializedBytes: bytes) {
            membership = m
        }
        shared.learner.store(membership.member(shared.memberID)?.isLearner ?? false, ordering: .relaxed)
        shared.appliedIndex.store(store.appliedIndex, ordering: .releasing)
    }

    func enqueue(_ entries: [Raft.Entry], _ waiters: [UInt64: ApplyWaiter],
                 confStates: [UInt64: ConfState] = [:]) {
        confStates.forEach { self.confStates[$0.key] = $0.value }
        queue.append((entries, waiters))
        queuedEntries += entries.count
        guard !drainScheduled else { return }
        drainScheduled = true
        loop.execute { [self] in self.drain() }
    }

    /// Completes `promises` once the store's committed state includes `index`: at once when it
    /// does, after committing the group-commit transaction when that holds it, else after the
    /// drain that applies it.
    func whenApplied(_ index: UInt64, _ promises: [EventLoopPromise<Void>]) {
        if failedPermanently != nil {
            for p in promises { p.fail(EtcdError.stopped) }
        } else if store.appliedIndex >= index || shared.applied >= index {
            for p in promises { p.succeed(()) }
        } else {
            readWaiters.append((index, promises))
            if group != nil && openLastIndex >= index { flush() }
        }
    }

    /// Forces the store to disk; returns the index the synced state covers.
    func syncForSnapshot(upTo index: UInt64) -> Result<UInt64, MVCCError> {
        do {
            try commitOpen()
            try store.sync()
            return .success(min(index, store.appliedIndex))
        } catch {
            return .failure(error)
        }
    }

    /// A consistent copy of the store for a follower (MsgSnap), fsynced; false on failure.
    func writeSnapshotFile(_ path: String) -> Bool {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { logger.error("snapshot: cannot create \(path)"); return false }
        defer { close(fd) }
        do {
            try commitOpen()
            try store.writeSnapshot(to: fd)
        } catch {
            logger.error("snapshot: copy failed", metadata: ["error": "\(error)"])
            unlink(path)
            return false
        }
        return fsync(fd) == 0
    }

    /// Replaces the store with a snapshot file from the leader (Raft installs the snapshot): the
    /// store is closed, restored from the file, reopened and published; this member's identity is
    /// written back (the file carries the leader's). Reads that arrive while the file is copied
    /// fail with the store's "closed" error. Queued entries apply on top of it (those the snapshot
    /// covers are skipped by index). Returns the store's applied index, nil on failure.
    func installSnapshot(file: String) -> UInt64? {
        // What the group-commit transaction holds is older than the snapshot: committed, then replaced.
        flush()
        guard failedPermanently == nil else { return nil }
        let dir = store.directory, options = store.options
        let identity = (try? store.meta(MetaKey.identity)) ?? nil
        store.close()
        let fresh: MVCCStore
        do throws(MVCCError) {
            try MVCCStore.restore(snapshotFile: file, into: dir)
            fresh = try MVCCStore.open(directory: dir, options: options)
            try fresh.write { (t: inout MVCCWriteTxn) throws(MVCCError) in t.setMeta(MetaKey.identity, identity) }
            try fresh.sync()
        } catch {
            logger.critical("snapshot install failed", metadata: ["error": "\(error)", "file": "\(file)"])
            failedPermanently = error
            shared.stopped.store(true, ordering: .relaxed)
            return nil
        }
        unlink(file)
        store = fresh
        storeSlot?.replace(with: fresh)
        if let bytes = try? fresh.meta(MetaKey.alarms), let list = try? Keelpb.AlarmList(serializedBytes: bytes) {
            alarms = list.alarms
        } else {
            alarms = []
        }
        publishAlarms()
        if let bytes = try? fresh.meta(MetaKey.membership), let m = try? Keelpb.Membership(serializedBytes: bytes) {
            membership = m
        }
        shared.learner.store(membership.member(shared.memberID)?.isLearner ?? false, ordering: .relaxed)
        confStates = confStates.filter { $0.key > fresh.appliedIndex }
        shared.appliedRevision.store(fresh.revision, ordering: .relaxed)
        shared.appliedIndex.store(fresh.appliedIndex, ordering: .releasing)
        logger.info("installed the leader's snapshot", metadata: [
            "applied-index": "\(fresh.appliedIndex)", "revision": "\(fresh.revision)"])
        hooks.membership?(membership)
        if fresh.compactedRevision > 0 { hooks.compacted?(fresh.compactedRevision) }
        hooks.snapshotInstalled?(fresh.revision)
        let ready = readWaiters.filter { $0.index <= fresh.appliedIndex }
        readWaiters.removeAll { $0.index <= fresh.appliedIndex }
        for w in ready { for p in w.promises { p.succeed(()) } }
        return fresh.appliedIndex
    }

    // MARK: applying

    private func drain() {
        drainScheduled = false
        let batch = queue
        queue.removeAll(keepingCapacity: true)
        queuedEntries = 0
        guard !batch.isEmpty else { return }
        var waiters: [UInt64: ApplyWaiter] = [:]
        for (_, ps) in batch { waiters.merge(ps) { a, _ in a } }
        if let err = failedPermanently {
            for (_, p) in waiters { p.complete(.failed(GRPCStatus(.internal, err.message))) }
            return
        }
        var results: [UInt64: ApplyResult] = [:]
        var leaseChanges: [LeaseApplied] = []
        var events: [Mvccpb.Event] = []
        var compactedTo: Int64?
        var physical = Set<UInt64>()
        var newAlarms = alarms
        var newMembership = membership
        var applied = 0, bytes = 0
        var pending = false
        let prevValues = hooks.eventsNeedPrevValues?() ?? true
        let w: MVCCOpenWrite
        do throws(MVCCError) {
            if let o = group {
                w = o
            } else {
                w = try store.beginWrite()
                group = w; openSince = .now(); openEntries = 0; openBytes = 0
                openLastIndex = w.appliedIndex
            }
        } catch {
            failApplying(error, waiters)
            return
        }
        let already = w.appliedIndex
        var lastIndex = already
        do throws(MVCCError) {
            try w.batch { (txn: inout MVCCWriteTxn) throws(MVCCError) in
                txn.eventPrevValues = prevValues
                for (entries, _) in batch {
                    for e in entries where e.index > already {
                        lastIndex = e.index
                        applied += 1
                        bytes += e.data.count
                        if e.type == .confChange {
                            if let id = applyConfChange(e, &newMembership), waiters[id] != nil {
                                results[id] = .membership(newMembership)
                            }
                            continue
                        }
                        guard !e.data.isEmpty else { continue }  // leader no-op
                        guard let req = try? Keelpb.InternalRequest(serializedBytes: e.data) else {
                            logger.error("apply: undecodable entry skipped", metadata: ["index": "\(e.index)"])
                            continue
                        }
                        if let r = Self.applyMemberRequest(req, &newMembership) {
                            if waiters[req.id] != nil { results[req.id] = r }
                            continue
                        }
                        if case .compaction(let c) = req.request, c.physical { physical.insert(req.id) }
                        let r = applyOne(req, &txn, &newAlarms, &leaseChanges, &compactedTo)
                        if waiters[req.id] != nil { results[req.id] = r }
                    }
                }
                if newAlarms != alarms {
                    var list = Keelpb.AlarmList(); list.alarms = newAlarms
                    txn.setMeta(MetaKey.alarms, list.serializedBytes())
                }
                if newMembership != membership {
                    txn.setMeta(MetaKey.membership, newMembership.serializedBytes())
                }
                txn.setAppliedIndex(lastIndex)
                events = txn.events
                pending = txn.compactionPending
            }
        } catch {
            failApplying(error, waiters)
            return
        }
        // The entries are durable in the WAL and their KV results are final: answer those callers
        // now, before LMDB's commit (etcd answers before its backend commits too). `answeredIndex`
        // makes every local read that starts from now on wait for the commit
        // (`KeelCore.visibilityBarrier`, which asks for it through `whenApplied`), so a caller never
        // reads a store older than a write it was told about.
        shared.appliedRevision.store(w.revision, ordering: .relaxed)
        shared.answeredIndex.store(lastIndex, ordering: .releasing)
        shared.proposalsApplied.add(UInt64(applied), ordering: .relaxed)
        var answers = AnswerBatch()
        for (id, r) in results where Self.answersBeforeCommit(r) {
            guard let p = waiters.removeValue(forKey: id) else { continue }
            answer(p, r, via: &answers)
        }
        answers.send()
        openEntries += applied; openBytes += bytes
        openLastIndex = lastIndex
        // Watchers get the batch now; history they read stays bounded by what is committed.
        if !events.isEmpty { hooks.events?(events, w.revision, prevValues) }
        // Callers answered only after the commit, and state others learn only from committed data
        // (alarms, membership, leases, compaction), commit now; plain KV writes wait for the group.
        let afterCommit = waiters.contains { results[$0.key] != nil }
        let mustCommit = afterCommit || newAlarms != alarms || newMembership != membership || compactedTo != nil
            || !leaseChanges.isEmpty || pending || !physical.isEmpty
            || readWaiters.contains { $0.index <= lastIndex }
            || openEntries >= groupCommitEntries || openBytes >= Self.groupCommitBytes
            || NIODeadline.now() - openSince >= groupCommitInterval
        guard mustCommit else {
            for (_, p) in waiters {
                // Committed before this process started applying (replayed) or already applied.
                p.complete(.failed(Self.appliedBeforeRestart))
            }
            scheduleGroupCommit()
            return
        }
        do throws(MVCCError) {
            try commitOpen(publishing: false)
        } catch {
            failApplying(error, waiters)
            return
        }
        alarms = newAlarms
        publishAlarms()
        if newMembership != membership {
            membership = newMembership
            shared.learner.store(newMembership.member(shared.memberID)?.isLearner ?? false, ordering: .relaxed)
            hooks.membership?(newMembership)
        }
        publishCommitted()
        if let c = compactedTo { hooks.compacted?(c) }
        if !leaseChanges.isEmpty { hooks.leases?(leaseChanges) }
        var lateAnswers = AnswerBatch()
        defer { lateAnswers.send() }
        for (id, p) in waiters {
            if let r = results[id] {
                if case .compaction = r, physical.contains(id), pending {
                    physicalWaiters.append((p, r))
                    continue
                }
                answer(p, r, via: &lateAnswers)
            } else {
                // Committed before this process started applying (replayed) or already applied.
                p.complete(.failed(Self.appliedBeforeRestart))
            }
        }
        compactionProgress(pending: pending)
    }

    /// Commits the group-commit transaction, if one is open. `publishing`: then also makes the
    /// commit known (applied index, watchers, read waiters); `drain` publishes itself, after the
    /// membership and alarms of its batch.
    private func commitOpen(publishing: Bool = true) throws(MVCCError) {
        guard let w = group else { return }
        let start = NIODeadline.now()
        do throws(MVCCError) {
            try w.commit()
        } catch {
            group = nil
            throw error
        }
        group = nil
        backendCommit.observe(Double((NIODeadline.now() - start).nanoseconds) / 1e9)
        backendCommits += 1
        if !store.options.syncEachWrite { scheduleBackendSync() }
        if publishing { publishCommitted() }
    }

    /// After a commit: readers may see up to `openLastIndex`; watchers waiting for history go on.
    private func publishCommitted() {
        let lastIndex = openLastIndex
        shared.appliedIndex.store(lastIndex, ordering: .releasing)
        hooks.committed?()
        if !readWaiters.isEmpty {
            var keep: [(index: UInt64, promises: [EventLoopPromise<Void>])] = []
            for w in readWaiters {
                if w.index <= lastIndex { for p in w.promises { p.succeed(()) } } else { keep.append(w) }
            }
            readWaiters = keep
        }
    }

    /// Commits and publishes what the group-commit transaction holds (a reader needs it, the
    /// group's time is up, the store is about to be copied, replaced or closed).
    func flush() {
        do throws(MVCCError) {
            try commitOpen()
        } catch {
            failApplying(error, [:])
        }
    }

    private func scheduleGroupCommit() {
        guard !groupCommitScheduled, !stopped else { return }
        groupCommitScheduled = true
        let me = NIOLoopBound(self, eventLoop: loop)
        loop.scheduleTask(deadline: openSince + groupCommitInterval) { me.value.groupCommitDue() }
    }

    private func groupCommitDue() {
        groupCommitScheduled = false
        guard group != nil, !stopped, failedPermanently == nil else { return }
        if NIODeadline.now() - openSince >= groupCommitInterval { flush() } else { scheduleGroupCommit() }
    }

    /// A batch or a commit broke: nothing uncommitted of the transaction is in the store. The
    /// entries are durable in the WAL; a restart replays them. Stop applying (etcd panics here).
    private func failApplying(_ error: MVCCError, _ waiters: [UInt64: ApplyWaiter]) {
        group?.abort()
        group = nil
        logger.critical("apply: store write failed; refusing further writes", metadata: ["error": "\(error)"])
        failedPermanently = error
        shared.stopped.store(true, ordering: .relaxed)
        for (_, p) in waiters { p.complete(.failed(error == .noSpace ? EtcdError.noSpace : GRPCStatus(.internal, error.message))) }
        // Reads waiting for this batch (or one answered before its commit failed) would wait
        // forever: the store will not reach their index in this process.
        for w in readWaiters { for p in w.promises { p.fail(EtcdError.stopped) } }
        readWaiters = []
    }

    /// Completes a caller's promise with its request's result (failures are counted for /metrics),
    /// through `answers`.
    private func answer(_ p: ApplyWaiter, _ r: ApplyResult, via answers: inout AnswerBatch) {
        if case .failed = r { shared.proposalsFailed.add(1, ordering: .relaxed) }
        answers.add(p, r)
    }

    /// Results whose callers are answered before the batch's LMDB commit: KV writes (and requests
    /// that failed, which changed nothing). The others (leases, membership, compaction, alarms)
    /// change state the lessor, watch hub or cluster service only learn after the commit, so their
    /// callers are answered after it.
    /// The answer to a caller whose entry was applied before this process started applying
    /// (replayed from the WAL) or already applied.
    static let appliedBeforeRestart = GRPCStatus(.unavailable, "etcdserver: request was applied before restart")

    static func answersBeforeCommit(_ r: ApplyResult) -> Bool {
        switch r {
        case .put, .deleteRange, .txn, .failed: true
        default: false
        }
    }

    /// A committed conf-change entry: the membership follows Raft's ConfState for it (handed over
    /// by the Raft loop, which applied it to the node). Returns the proposer's request id.
    private func applyConfChange(_ e: Raft.Entry, _ ms: inout Keelpb.Membership) -> UInt64? {
        guard let cc = try? ConfChange(decoding: e.data) else {
            logger.error("apply: undecodable conf change skipped", metadata: ["index": "\(e.index)"])
            return nil
        }
        let ctx = cc.context.isEmpty ? nil : try? Keelpb.ConfChangeContext(serializedBytes: cc.context)
        // Replayed after a restart (the Raft loop handed it out again): Raft re-applied it too.
        let cs = confStates.removeValue(forKey: e.index) ?? ms.confState
        ms.apply(cc, member: ctx?.member, confState: cs)
        return ctx?.id
    }

    /// Member attribute publishes and MemberUpdate: metadata only.
    static func applyMemberRequest(_ req: Keelpb.InternalRequest, _ ms: inout Keelpb.Membership) -> ApplyResult? {
        switch req.request {
        case .memberAttributes(let a):
            if let i = ms.members.firstIndex(where: { $0.id == a.memberId }) {
                ms.members[i].name = a.name
                ms.members[i].clientUrls = a.clientUrls
            }
            return .membership(ms)
        case .memberUpdate(let u):
            guard let i = ms.members.firstIndex(where: { $0.id == u.memberId }) else { return .failed(EtcdError.memberNotFound) }
            ms.members[i].peerUrls = u.peerUrls
            return .membership(ms)
        default:
            return nil
        }
    }

    /// Applies one request inside the batch's transaction. Store errors are per request (the
    /// store leaves no trace of a failed op); the batch goes on.
    private func applyOne(_ req: Keelpb.InternalRequest, _ txn: inout MVCCWriteTxn,
                          _ alarms: inout [Etcdserverpb.AlarmMember], _ leases: inout [LeaseApplied],
                          _ compactedTo: inout Int64?) -> ApplyResult {
        let noSpace = alarms.contains { $0.alarm == .nospace }
        do throws(MVCCError) {
            switch req.request {
            case .put(let p):
                // etcd's capped applier: with NOSPACE raised, only deletes/reads/compactions pass.
                if noSpace { return .failed(EtcdError.noSpace) }
                return .put(try txn.put(p))
            case .deleteRange(let d):
                return .deleteRange(try txn.deleteRange(d))
            case .txn(let t):
                if noSpace && Self.txnWrites(t) { return .failed(EtcdError.noSpace) }
                return .txn(try txn.txn(t))
            case .compaction(let c):
                try txn.compact(c.revision)
                compactedTo = c.revision
                var resp = Etcdserverpb.CompactionResponse()
                resp.header = Etcdserverpb.ResponseHeader()
                resp.header!.revision = txn.revision
                return .compaction(resp)
            case .leaseGrant(let g):
                if noSpace { return .failed(EtcdError.noSpace) }
                try txn.leaseGrant(id: g.id, ttl: g.ttl)
                leases.append(.granted(id: g.id, ttl: g.ttl))
                var resp = Etcdserverpb.LeaseGrantResponse()
                resp.id = g.id; resp.ttl = g.ttl
                resp.header = Etcdserverpb.ResponseHeader(); resp.header!.revision = txn.revision
                return .leaseGrant(resp)
            case .leaseRevoke(let r):
                try txn.leaseRevoke(id: r.id)
                leases.append(.revoked(id: r.id))
                var resp = Etcdserverpb.LeaseRevokeResponse()
                resp.header = Etcdserverpb.ResponseHeader(); resp.header!.revision = txn.revision
                return .leaseRevoke(resp)
            case .leaseCheckpoint(let c):
                for cp in c.checkpoints {
                    try txn.leaseCheckpoint(id: cp.id, remainingTTL: cp.remainingTTL)
                    leases.append(.checkpointed(id: cp.id, remainingTTL: cp.remainingTTL))
                }
                var resp = Etcdserverpb.LeaseCheckpointResponse()
                resp.header = Etcdserverpb.ResponseHeader(); resp.header!.revision = txn.revision
                return .leaseCheckpoint(resp)
            case .alarm(let a):
                return .alarm(Self.applyAlarm(a, &alarms, revision: txn.revision))
            case nil, .memberAttributes, .memberUpdate:
                return .failed(GRPCStatus(.internal, "etcdserver: empty internal request"))
            }
        } catch {
            if error == .noSpace {
                // The store applied the op but the DB grew beyond the quota: raise NOSPACE (etcd's
                // quota check raises the alarm the same way) and report it.
                if !alarms.contains(where: { $0.alarm == .nospace }) {
                    var m = Etcdserverpb.AlarmMember(); m.memberID = shared.memberID; m.alarm = .nospace
                    alarms.append(m)
                    logger.warning("alarm raised: NOSPACE (backend quota exceeded)")
                }
            }
            return .failed(EtcdError.from(error))
        }
    }

    /// While the store still removes old versions of a compaction, run one more step when the
    /// loop has nothing else to do (an empty write transaction advances it); answer physical
    /// compactions once it is done.
    private func compactionProgress(pending: Bool) {
        if !pending {
            let done = physicalWaiters
            physicalWaiters.removeAll()
            for (p, r) in done { p.complete(r) }
            return
        }
        guard !compactionStepScheduled else { return }
        compactionStepScheduled = true
        loop.execute { [self] in
            self.compactionStepScheduled = false
            // Queued entries will run a step in their own transaction.
            guard self.queue.isEmpty, self.failedPermanently == nil else { return }
            do {
                try self.commitOpen()
                let still = try self.store.write { (t: inout MVCCWriteTxn) throws(MVCCError) -> Bool in t.compactionPending }
                self.compactionProgress(pending: still)
            } catch {
                self.logger.error("compaction step failed", metadata: ["error": "\(error)"])
            }
        }
    }

    static func txnWrites(_ t: Etcdserverpb.TxnRequest) -> Bool {
        for op in t.success + t.failure {
            switch op.request {
            case .requestPut: return true
            case .requestTxn(let inner): if txnWrites(inner) { return true }
            default: continue
            }
        }
        return false
    }

    /// etcd's alarm store: ACTIVATE adds (member, alarm) once, DEACTIVATE removes it; both answer
    /// with the alarm that changed (empty if nothing did).
    static func applyAlarm(_ a: Etcdserverpb.AlarmRequest, _ alarms: inout [Etcdserverpb.AlarmMember],
                           revision: Int64) -> Etcdserverpb.AlarmResponse {
        var resp = Etcdserverpb.AlarmResponse()
        resp.header = Etcdserverpb.ResponseHeader(); resp.header!.revision = revision
        var m = Etcdserverpb.AlarmMember(); m.memberID = a.memberID; m.alarm = a.alarm
        switch a.action {
        case .activate:
            if a.alarm == .none { break }
            if !alarms.contains(m) { alarms.append(m) }
            resp.alarms = [m]
        case .deactivate:
            if let i = alarms.firstIndex(of: m) { alarms.remove(at: i); resp.alarms = [m] }
        default:
            resp.alarms = alarms
        }
        return resp
    }

    private func publishAlarms() {
        var bits: UInt8 = 0
        for a in alarms {
            if a.alarm == .nospace { bits |= 1 }
            if a.alarm == .corrupt { bits |= 2 }
        }
        shared.alarms.store(bits, ordering: .relaxed)
    }

    private func scheduleBackendSync() {
        guard !backendSyncScheduled, !stopped else { return }
        backendSyncScheduled = true
        startBackendSync()
    }

    private func startBackendSync() {
        guard !stopped, failedPermanently == nil else { backendSyncScheduled = false; return }
        let store = self.store, covers = backendCommits, start = NIODeadline.now()
        let me = NIOLoopBound(self, eventLoop: loop)
        NIOThreadPool.singleton.runIfActive(eventLoop: loop) { () throws in try store.sync() }.whenComplete { result in
            me.value.backendSyncDone(result, of: store, covers: covers,
                                     seconds: Double((NIODeadline.now() - start).nanoseconds) / 1e9)
        }
    }

    private func backendSyncDone(_ result: Result<Void, any Error>, of synced: MVCCStore, covers: Int, seconds: Double) {
        backendSyncScheduled = false
        switch result {
        case .success:
            backendCommitsSynced = max(backendCommitsSynced, covers)
            backendSync.observe(seconds)
        case .failure(let error):
            // Acknowledged writes are in the WAL, which is not released before a successful sync.
            // The store refuses commits after a failed sync (MVCCStore.sync): stop applying now, as
            // after a failed commit, and let a restart recover from the WAL.
            // A sync of a store a leader's snapshot has replaced meanwhile fails on the closed store: moot.
            guard synced === store else { break }
            logger.error("backend sync failed", metadata: ["error": "\(error)"])
            if failedPermanently == nil { failApplying(error as? MVCCError ?? .storage("\(error)"), [:]) }
            return
        }
        // Commits made while it ran (or, after a moot failure, on the new store) wait for the next one.
        if backendCommits > backendCommitsSynced { scheduleBackendSync() }
    }

    func stop() {
        // What is applied but not committed would be replayed from the WAL; commit it now instead.
        if failedPermanently == nil { flush() }
        stopped = true
        for (p, _) in physicalWaiters { p.complete(.failed(EtcdError.stopped)) }
        physicalWaiters.removeAll()
        for (_, ps) in queue { for (_, p) in ps { p.complete(.failed(EtcdError.stopped)) } }
        queue.removeAll()
        for w in readWaiters { for p in w.promises { p.fail(EtcdError.stopped) } }
        readWaiters.removeAll()
    }
}

/// The answers of one apply batch, grouped by the loop their waiters belong to (the callers'
/// connection loops, see `KeelCore.answerLoop`): `send` completes each group with ONE job on its
/// loop, where completing each waiter from here would cost one job (a lock, often a wake-up) per
/// caller. Waiters of the apply loop itself are completed at once by `add`.
struct AnswerBatch {
    private var groups: [ObjectIdentifier: (loop: any EventLoop, answers: [(ApplyWaiter, ApplyResult)])] = [:]

    mutating func add(_ w: ApplyWaiter, _ r: ApplyResult) {
        let loop = w.loop
        if loop.inEventLoop {
            w.completeOnLoop(r)
            return
        }
        groups[ObjectIdentifier(loop), default: (loop, [])].answers.append((w, r))
    }

    /// Hands every group to its loop (in the order added within a group).
    mutating func send() {
        for (_, g) in groups {
            let answers = g.answers
            g.loop.execute { for (w, r) in answers { w.completeOnLoop(r) } }
        }
        groups = [:]
    }
}
