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

/// Errors that stop the server from starting (the executable prints them and exits 1).
public struct StartupError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The request front-end shared by the services: validation limits, proposals through the Raft
/// loop, linearizable read barriers, and the store for local reads. Sendable; the loops' state is
/// reached only through jobs on their event loops.
public final class KeelCore: Sendable {
    public let config: ServerConfig
    public let resolved: ServerConfig.Resolved
    public let shared: SharedState
    /// The current store (replaced when this member installs a snapshot from the leader).
    public var store: MVCCStore { storeSlot.store }
    let storeSlot: StoreSlot
    public let name: String
    let raftLoop: any EventLoop
    let applyLoop: any EventLoop
    let host: NIOLoopBound<RaftHost>
    let applier: NIOLoopBound<Applier>
    let logger: Logger
    public let startTime: Double

    init(config: ServerConfig, resolved: ServerConfig.Resolved, shared: SharedState, storeSlot: StoreSlot,
         raftLoop: any EventLoop, applyLoop: any EventLoop, host: NIOLoopBound<RaftHost>,
         applier: NIOLoopBound<Applier>, logger: Logger) {
        self.config = config; self.resolved = resolved; self.shared = shared; self.storeSlot = storeSlot
        self.name = config.name
        self.raftLoop = raftLoop; self.applyLoop = applyLoop; self.host = host; self.applier = applier
        self.logger = logger
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        startTime = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    public func header(revision: Int64) -> Etcdserverpb.ResponseHeader { shared.header(revision: revision) }
    public func header() -> Etcdserverpb.ResponseHeader { shared.header(revision: currentRevision) }
    /// The store revision as of the last applied write (the group commit may not have made it
    /// visible to readers yet): what etcd's headers and Status report.
    public var currentRevision: Int64 { max(store.revision, shared.appliedRevision.load(ordering: .relaxed)) }

    /// Proposes one request through Raft and waits until it is applied.
    public func propose(_ request: Keelpb.InternalRequest.OneOf_Request) async throws(GRPCStatus) -> ApplyResult {
        let promise = Self.answerLoop(applyLoop).makePromise(of: ApplyResult.self)
        try propose(request, waiter: ApplyWaiter(promise))
        do {
            return try await promise.futureResult.get()
        } catch {
            throw EtcdError.stopped
        }
    }

    /// Proposes one request through Raft; `then` runs on `loop` with its apply result (with
    /// `.failed("server stopped")` when the server stops before the apply). Throws what stops a
    /// request before it is proposed (`then` is not called then). The KV write path: no future.
    public func proposal(_ request: Keelpb.InternalRequest.OneOf_Request, answeredOn loop: any EventLoop,
                         then: @escaping @Sendable (ApplyResult) -> Void) throws(GRPCStatus) {
        try propose(request, waiter: ApplyWaiter(loop: loop, then))
    }

    private func propose(_ request: Keelpb.InternalRequest.OneOf_Request, waiter: ApplyWaiter) throws(GRPCStatus) {
        if shared.stopped.load(ordering: .relaxed) { throw EtcdError.stopped }
        var req = Keelpb.InternalRequest()
        req.id = shared.newID()
        req.request = request
        let data = req.serializedBytes()
        // etcd: the marshalled internal request may not exceed --max-request-bytes.
        if data.count > config.maxRequestBytes { throw EtcdError.requestTooLarge }
        let host = self.host
        let id = req.id
        raftLoop.execute { host.value.propose(id: id, data: data, waiter: waiter) }
    }

    /// The loop the promise of a caller's request is made on: the caller's own event loop when it
    /// runs on one (a handler on its connection's loop: awaiting the future then registers its
    /// callback directly, where a future of another loop costs a job on that loop, and a wake-up of
    /// the apply loop, per request), else the apply loop, which completes these promises (so the
    /// completion resumes the caller at once instead of hopping through the Raft loop, busy in
    /// fdatasync).
    static func answerLoop(_ applyLoop: any EventLoop) -> any EventLoop {
        MultiThreadedEventLoopGroup.currentEventLoop ?? applyLoop
    }

    /// Waits until a linearizable read may be served from the local store: a ReadIndex round
    /// (one per Raft turn, shared by every read that arrived meanwhile) confirmed this member is
    /// still the leader, and the apply loop has applied up to the read index. On a one-member
    /// cluster the round is answered at once; the wait for the applied index is what matters
    /// after a restart, while the WAL tail is being re-applied.
    public func linearizableBarrier() async throws(GRPCStatus) {
        if shared.stopped.load(ordering: .relaxed) { throw EtcdError.stopped }
        let promise = Self.answerLoop(applyLoop).makePromise(of: Void.self)
        let host = self.host
        raftLoop.execute { host.value.readBarrier(promise) }
        try await Self.wait(for: promise)
    }

    /// Waits until every write this member has answered is visible in its store. The apply loop
    /// answers KV writes just before their LMDB commit (in parallel with its fdatasync); a local
    /// read (serializable range, watch from "now", lease keys, hashes) that starts in that window
    /// waits here for the commit, so nobody reads a store older than a write they were told of.
    /// Costs two atomic loads when no commit is in flight.
    public func visibilityBarrier() async throws(GRPCStatus) {
        let answered = shared.answeredIndex.load(ordering: .acquiring)
        guard answered > shared.applied else { return }
        let promise = Self.answerLoop(applyLoop).makePromise(of: Void.self)
        let applier = self.applier
        applyLoop.execute { applier.value.whenApplied(answered, [promise]) }
        try await Self.wait(for: promise)
    }

    /// Awaits a read barrier's promise: its own status when it failed with one, else "server stopped".
    private static func wait(for promise: EventLoopPromise<Void>) async throws(GRPCStatus) {
        do {
            try await promise.futureResult.get()
        } catch let e as GRPCStatus {
            throw e
        } catch {
            throw EtcdError.stopped
        }
    }

    /// Proposes a membership change through Raft and waits until it is applied; returns the
    /// membership after it.
    func proposeConfChange(_ type: ConfChangeType, nodeID: UInt64, member: Keelpb.Member?) async throws(GRPCStatus)
        -> Keelpb.Membership {
        if shared.stopped.load(ordering: .relaxed) { throw EtcdError.stopped }
        var ctx = Keelpb.ConfChangeContext()
        ctx.id = shared.newID()
        ctx.member = member
        let cc = ConfChange(type: type, nodeID: nodeID, context: ctx.serializedBytes())
        let promise = Self.answerLoop(applyLoop).makePromise(of: ApplyResult.self)
        let host = self.host, id = ctx.id
        raftLoop.execute { host.value.proposeConfChange(id: id, cc: cc, waiter: ApplyWaiter(promise)) }
        let r: ApplyResult
        do { r = try await promise.futureResult.get() } catch { throw EtcdError.stopped }
        switch r {
        case .membership(let m): return m
        case .failed(let s): throw s
        default: throw GRPCStatus(.internal, "keel: unexpected apply result for a membership change")
        }
    }

    /// The Raft node's status (on the Raft loop).
    func raftStatus() async -> Raft.Status? {
        let host = self.host
        return try? await raftLoop.submit { host.value.node.status }.get()
    }

    /// Starts a leadership transfer to `id` (nil) or says why not.
    func transferLeadership(to id: UInt64) async -> GRPCStatus? {
        let host = self.host
        do { return try await raftLoop.submit { host.value.transferLeadership(to: id) }.get() } catch { return EtcdError.stopped }
    }

    /// The applied membership (read from the store: consistent with the applied index).
    func membership() -> Keelpb.Membership {
        guard let bytes = try? store.meta(MetaKey.membership), let m = try? Keelpb.Membership(serializedBytes: bytes) else {
            return Keelpb.Membership()
        }
        return m
    }

    /// Raft facts for Maintenance.Status: (commit index, term, leader).
    public var raftIndex: UInt64 { shared.committed }

    /// Histograms owned by the loops, copied on their loops.
    func metricsSnapshot() async -> (walFsync: Histogram, backendCommit: Histogram, backendSync: Histogram) {
        let host = self.host, applier = self.applier
        let w = (try? await raftLoop.submit { host.value.walFsync }.get()) ?? Histogram.etcdDisk()
        let b = (try? await applyLoop.submit { (applier.value.backendCommit, applier.value.backendSync) }.get())
            ?? (Histogram.etcdDisk(), Histogram.etcdDisk())
        return (w, b.0, b.1)
    }

    /// Alarms as the apply loop has them.
    public func alarms() async -> [Etcdserverpb.AlarmMember] {
        let applier = self.applier
        return (try? await applyLoop.submit { applier.value.alarms }.get()) ?? []
    }

    /// Asks the apply loop to commit what it has applied (its group commit) now; does not wait.
    public func commitBackend() {
        let applier = self.applier
        applyLoop.execute { applier.value.flush() }
    }

    /// Runs `body` on the apply loop, where nothing else writes the store meanwhile (defragment),
    /// after committing everything applied so far (no write transaction is open while it runs).
    func onApplyLoop<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let applier = self.applier
        return try await applyLoop.submit { () throws -> T in
            applier.value.flush()
            return try body()
        }.get()
    }
}

/// A running Keel server: bootstrap (data dir, store, WAL replay, Raft), the Raft and apply
/// loops, gRPC + HTTP listeners, and clean shutdown.
public final class KeelServer: Sendable {
    public let core: KeelCore
    let group: MultiThreadedEventLoopGroup
    let tickTask: NIOLoopBound<RepeatedTask>?
    let servers: [GRPCServer]
    let extras: ServerExtras
    let compactor: Task<Void, Never>?
    let peers: PeerLink?
    let logger: Logger

    /// Client ports actually bound (useful with port 0).
    public var clientPorts: [Int] { servers.map(\.port) }

    public static func start(config: ServerConfig, logger: Logger = Logger(label: "keel")) async throws -> KeelServer {
        let resolved: ServerConfig.Resolved
        do { resolved = try config.resolve() } catch { throw StartupError(error.message) }
        let dataDir = config.resolvedDataDir
        let memberDir = dataDir + "/member"
        if let file = config.restoreFile {
            try SnapshotFile.restore(file: file, dataDir: dataDir, logger: logger)
        }
        // etcd (fileutil.TouchDirAll): the data dir and any missing parent, mode 0700.
        do {
            for d in [memberDir + "/wal", memberDir + "/snap", memberDir + "/db"] { try createDirectories(d, mode: 0o700) }
        } catch {
            throw StartupError("cannot create data directory \(error.path): \(String(cString: strerror(error.errno)))")
        }
        var mopts = MVCCOptions()
        mopts.quotaBackendBytes = config.effectiveQuota
        // LMDB commits go to the page cache (MDB_NOSYNC) and a thread syncs each one right after it,
        // off the apply loop; the next commit waits for that sync, and open drops a newest commit whose
        // sync was not recorded (Storage, SyncRecord.swift: safe across an OS crash, the WAL replays
        // what it dropped). Once the store has grown, each commit's fdatasync took tens of ms on the
        // apply loop, and no write was answered meanwhile (Benchmarks/RESULTS.md, "The commit's
        // fdatasync"). KEEL_BACKEND_SYNC_EACH_COMMIT=1: the commit fdatasyncs on the apply loop instead
        // (MDB_NOMETASYNC), as before; for comparisons.
        mopts.syncEachWrite = getenv("KEEL_BACKEND_SYNC_EACH_COMMIT").map { String(cString: $0) == "1" } ?? false
        // KEEL_INLINE_VALUE_LIMIT=N (experiments only): values up to N bytes stay in the key table
        // (MVCCOptions.inlineValueLimit). Every member of a cluster must use the same N (hash()).
        if let v = getenv("KEEL_INLINE_VALUE_LIMIT").flatMap({ Int(String(cString: $0)) }), v >= 0 {
            mopts.inlineValueLimit = v
        }
        // A new data dir's store keeps only the latest version of each key in its key table
        // (MVCCOptions.latestOnlyKeyTable: ~30% more puts/s once keys have many versions,
        // Benchmarks/RESULTS.md "Latest-only key table"); an existing store keeps the layout it was
        // created with, and a member restored from a snapshot takes the snapshot's. Reads, history
        // and HashKV are the same in both; Keel's hash() of the stored bytes is not.
        // KEEL_LATEST_ONLY_KEYS=0 creates new stores in the layout with every version in the key table.
        mopts.latestOnlyKeyTable = getenv("KEEL_LATEST_ONLY_KEYS").map { String(cString: $0) != "0" } ?? true
        let store: MVCCStore
        do { store = try MVCCStore.open(directory: memberDir + "/db", options: mopts) } catch {
            throw StartupError("cannot open the backend in \(memberDir)/db: \(error.message)")
        }
        // Identity: a data dir keeps the IDs it was created with (etcd ignores --initial-cluster* then).
        var identity = Keelpb.ClusterIdentity()
        if let bytes = try store.meta(MetaKey.identity), let id = try? Keelpb.ClusterIdentity(serializedBytes: bytes) {
            identity = id
            // A data dir made for another cluster (other token or members, same name) is refused,
            // as etcd refuses peers whose cluster ID differs ("cluster ID mismatch").
            try Bootstrap.checkDataDir(identity: identity, resolved: resolved, config: config)
        } else {
            let boot = try await Bootstrap.identity(config: config, resolved: resolved, logger: logger)
            identity = boot.identity
            let bytes = identity.serializedBytes()
            let members = boot.membership.serializedBytes()
            let hasMembership = try store.meta(MetaKey.membership) != nil
            try store.write { (t: inout MVCCWriteTxn) throws(MVCCError) in
                t.setMeta(MetaKey.identity, bytes)
                if !hasMembership { t.setMeta(MetaKey.membership, members) }
            }
        }
        if try store.meta(MetaKey.membership) == nil {
            // A data dir from before membership was persisted (one member): this member alone.
            var one = Keelpb.Membership()
            var m = Keelpb.Member(); m.id = identity.memberId; m.name = identity.name; m.peerUrls = identity.peerUrls
            one.members = [m]; one.voters = [m.id]
            let bytes = one.serializedBytes()
            try store.write { (t: inout MVCCWriteTxn) throws(MVCCError) in t.setMeta(MetaKey.membership, bytes) }
        }
        // The identity is in no WAL: durable now (without an fdatasync per commit a crash would drop
        // the commit that wrote it, SyncRecord.swift).
        try store.sync()
        let membership = try Keelpb.Membership(serializedBytes: try store.meta(MetaKey.membership) ?? [])
        if membership.removed.contains(identity.memberId) {
            throw StartupError("the member has been permanently removed from the cluster (member \(String(identity.memberId, radix: 16)))")
        }
        identity.clientUrls = resolved.advertiseClientURLs.map(\.description)
        let storeSlot = StoreSlot(store)
        let shared = SharedState(clusterID: identity.clusterId, memberID: identity.memberId,
                                 nowMillis: UInt64(max(0, Self.nowMillis())))
        logger.info("starting keel", metadata: [
            "name": "\(config.name)", "data-dir": "\(dataDir)",
            "member-id": "\(String(identity.memberId, radix: 16))", "cluster-id": "\(String(identity.clusterId, radix: 16))",
            "revision": "\(store.revision)", "applied-index": "\(store.appliedIndex)",
            "key-table": "\(store.keyTableLayout)"])
        if store.openedAfterCommitsWithoutRecord {
            logger.notice("backend: commits after the last recorded sync were made without the sync record (an older keel?); opened as they are")
        }
        if store.droppedUnsyncedCommit {
            logger.warning("backend: the newest commit was not synced before the last stop; opened the one before it (the WAL replays the rest)", metadata: ["applied-index": "\(store.appliedIndex)"])
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        let raftLoop = loops[0], applyLoop = loops[1]
        let hooksBox: ServerExtras
        do {
            hooksBox = try ServerExtras(store: storeSlot, config: config, memberID: identity.memberId, logger: logger)
        } catch {
            throw StartupError("cannot load leases from the backend: \(error)")
        }
        let hooks = hooksBox.hooks

        let applier = try await applyLoop.submit { () throws -> NIOLoopBound<Applier> in
            let a = try Applier(store: store, shared: shared, logger: logger, loop: applyLoop, hooks: hooks)
            a.storeSlot = storeSlot
            a.groupCommitInterval = .milliseconds(config.backendBatchIntervalMillis)
            a.groupCommitEntries = config.backendBatchEntries
            return NIOLoopBound(a, eventLoop: applyLoop)
        }.get()

        let snapCount = config.snapshotCount
        let memberID = identity.memberId
        let electionTicks = max(2, config.electionTimeoutMs / config.heartbeatIntervalMs)
        let host = try await raftLoop.submit { () throws -> NIOLoopBound<RaftHost> in
            let (wal, replay) = try WAL.open(directory: memberDir + "/wal")
            if let t = replay.truncatedTail {
                logger.warning("WAL: cut a torn tail", metadata: ["file": "\(t.file)", "offset": "\(t.offset)", "bytes": "\(t.bytes)", "reason": "\(t.reason)"])
            }
            let snapshotter = try Snapshotter(directory: memberDir + "/snap")
            var ms = MemoryStorage()
            var snapIndex: UInt64 = 0
            if let marker = replay.snapshot {
                try ms.applySnapshot(Raft.Snapshot(metadata: Raft.SnapshotMetadata(
                    index: marker.index, term: marker.term, confState: membership.confState)))
                snapIndex = marker.index
            }
            if let hs = replay.hardState {
                ms.setHardState(Raft.HardState(term: hs.term, vote: hs.vote, commit: max(hs.commit, snapIndex)))
            }
            try ms.append(replay.entries.map(WALCodec.raftEntry))
            if store.appliedIndex < snapIndex {
                throw StartupError("backend applied index \(store.appliedIndex) is behind the WAL snapshot at \(snapIndex): the data dir is damaged")
            }
            var rc = Raft.Config(id: memberID, peers: membership.voters, seed: UInt64.random(in: 1...UInt64.max))
            rc.learners = membership.learners
            // The membership as of the store's applied index; later conf changes in the WAL are
            // handed out (and applied) again.
            rc.confState = membership.confState
            rc.electionTick = electionTicks
            rc.heartbeatTick = 1
            rc.applied = min(store.appliedIndex, ms.lastIndex)
            rc.maxProposalBytes = config.maxRequestBytes + 4096
            rc.maxSizePerMsg = 1 << 20
            let node = try RaftNode(config: rc, storage: ms)
            logger.info("raft: restored", metadata: ["wal-entries": "\(replay.entries.count)", "snapshot-index": "\(snapIndex)",
                                                     "last-index": "\(node.lastIndex)", "applied": "\(rc.applied)"])
            let h = RaftHost(loop: raftLoop, shared: shared, logger: logger, node: node, wal: wal, snapshotter: snapshotter,
                             applier: applier, applyLoop: applyLoop, snapshotCount: snapCount, lastSnapshotIndex: snapIndex)
            h.snapshotDir = memberDir + "/snap"
            h.catchUpEntries = config.snapshotCatchUpEntries
            h.requestTimeoutTicks = UInt64((5000 + 2 * config.electionTimeoutMs) / config.heartbeatIntervalMs)
            // One member: campaign now instead of waiting an election timeout (etcd fast-forwards
            // the election ticks of a single-member cluster the same way).
            for _ in 0..<(2 * electionTicks + 2) where h.node.role != .leader && membership.voters == [memberID] {
                h.node.tick()
                h.turn()
            }
            h.turn()
            return NIOLoopBound(h, eventLoop: raftLoop)
        }.get()
        let tick = try await raftLoop.submit { () -> NIOLoopBound<RepeatedTask> in
            let interval = TimeAmount.milliseconds(Int64(config.heartbeatIntervalMs))
            let t = raftLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in host.value.tick() }
            return NIOLoopBound(t, eventLoop: raftLoop)
        }.get()

        let core = KeelCore(config: config, resolved: resolved, shared: shared, storeSlot: storeSlot,
                            raftLoop: raftLoop, applyLoop: applyLoop, host: host, applier: applier, logger: logger)
        // Peers: a multi-member cluster (or a member told where to listen for peers) runs the
        // transport and the peer listener. A lone member with the default peer URL does not bind
        // it (so several one-member servers can run side by side, as before).
        var peerLink: PeerLink?
        if membership.members.count > 1 || config.listenPeerURLs != ServerConfig().listenPeerURLs {
            do {
                peerLink = try await PeerLink.start(core: core, runtime: hooksBox.runtime, membership: membership,
                                                    snapshotDir: memberDir + "/snap", logger: logger)
            } catch {
                await hooksBox.shutdown()
                await Self.stopLoops(core: core, tick: tick)
                try? await group.shutdownGracefully()
                throw error
            }
        }
        // Replay: wait until what the WAL says is committed is applied (and committed to the
        // store, which whenApplied forces) before serving.
        let target = shared.committed
        let replayed = applyLoop.makePromise(of: Void.self)
        applyLoop.execute { applier.value.whenApplied(target, [replayed]) }
        try? await replayed.futureResult.get()
        try await hooksBox.setUp(core: core, logger: logger)
        await MemberPublish.publishAttributes(core: core, logger: logger)

        let leaderWatch = WatchService.LeaderWatch(hasLeader: { shared.hasLeader },
                                                   interval: .milliseconds(Int64(config.electionTimeoutMs)))
        let services: [any GRPCService] = hooksBox.services(core: core, leaseForwarder: peerLink?.leaseForwarder(core: core))
            .map { RequireLeaderService(base: $0, leader: leaderWatch) }
        var servers: [GRPCServer] = []
        do {
            for url in resolved.clientURLs {
                var gc = GRPCServer.Configuration()
                gc.host = url.bindHost
                gc.port = url.port
                // etcd's gRPC limit: --max-request-bytes plus 512 KiB of overhead; anything larger
                // than --max-request-bytes that fits gets "etcdserver: request is too large".
                gc.http2.maxReceiveMessageSize = config.maxRequestBytes + 512 * 1024
                let http = HTTPEndpoints.initializer(router: HTTPRoutes(core: core).route)
                servers.append(try await GRPCServer(configuration: gc, services: services, nonHTTP2Initializer: http))
                logger.info("serving client requests", metadata: ["url": "\(url)", "port": "\(servers.last!.port)"])
            }
        } catch {
            for s in servers { await s.shutdown(timeout: .seconds(1)) }
            await peerLink?.shutdown()
            throw StartupError("cannot listen on client URLs \(config.listenClientURLs): \(error)")
        }
        let compactor = resolved.autoCompaction.map { AutoCompactor.start($0, core: core, logger: logger) }
        return KeelServer(core: core, group: group, tickTask: tick, servers: servers, extras: hooksBox,
                          compactor: compactor, peers: peerLink, logger: logger)
    }

    init(core: KeelCore, group: MultiThreadedEventLoopGroup, tickTask: NIOLoopBound<RepeatedTask>?,
         servers: [GRPCServer], extras: ServerExtras, compactor: Task<Void, Never>?, peers: PeerLink?, logger: Logger) {
        self.core = core; self.group = group; self.tickTask = tickTask; self.servers = servers
        self.extras = extras; self.compactor = compactor; self.peers = peers; self.logger = logger
    }

    /// Peer ports actually bound (empty when this member runs no peer listener).
    public var peerPorts: [Int] { peers?.server.ports ?? [] }

    static func stopLoops(core: KeelCore, tick: NIOLoopBound<RepeatedTask>?) async {
        _ = try? await core.raftLoop.submit {
            tick?.value.cancel()
            core.host.value.stop()
        }.get()
        core.shared.stopped.store(true, ordering: .relaxed)
        _ = try? await core.applyLoop.submit { core.applier.value.stop() }.get()
        core.store.close()
    }

    /// Clean shutdown: stop accepting, let in-flight calls finish (GOAWAY), stop the Raft loop
    /// (WAL closed), fail what still waits, sync and close the store.
    public func shutdown() async {
        logger.info("shutting down")
        compactor?.cancel()
        for s in servers { await s.shutdown(timeout: .seconds(5)) }
        await peers?.shutdown()
        await extras.shutdown()
        let core = self.core
        let tick = self.tickTask
        _ = try? await core.raftLoop.submit {
            tick?.value.cancel()
            core.host.value.stop()
        }.get()
        core.shared.stopped.store(true, ordering: .relaxed)
        _ = try? await core.applyLoop.submit {
            core.applier.value.stop()
            try? core.store.sync()
        }.get()
        core.store.close()
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }

    static func nowMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
