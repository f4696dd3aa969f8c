import GRPC
import KeelAPI
import Logging
import NIOCore
import Raft
import Storage

#if canImport(Glibc)
import Glibc
#endif

/// The Raft loop: owns the RaftNode and the WAL, confined to one dedicated event loop (a serial
/// executor with a thread of its own, so the WAL's fdatasync never blocks a connection loop or
/// the cooperative pool).
///
/// One turn: every proposal that arrived since the previous turn is already in the node (each
/// `propose` is a job on this loop, and the turn is queued behind them), `ready()` turns them into
/// one append, the WAL writes it with one fdatasync, committed entries go to the apply loop (which
/// applies a whole batch in one LMDB transaction and completes the waiting callers), then
/// `advance()`. While the fsync runs, new proposals queue up as jobs: they form the next batch.
final class RaftHost {
    let loop: any EventLoop
    let shared: SharedState
    let logger: Logger
    var node: RaftNode
    let wal: WAL
    let snapshotter: Snapshotter
    let applier: NIOLoopBound<Applier>
    let applyLoop: any EventLoop
    let snapshotCount: UInt64

    /// Callers waiting for their request to be applied, by request ID. Handed to the apply loop
    /// together with the committed entry that carries the ID.
    private var waiting: [UInt64: EventLoopPromise<ApplyResult>] = [:]
    /// Linearizable reads waiting for the next ReadIndex round.
    private var readsToRequest: [EventLoopPromise<Void>] = []
    /// ReadIndex rounds in flight, by context (round number).
    private var readRounds: [UInt64: [EventLoopPromise<Void>]] = [:]
    private var readRound: UInt64 = 0
    private var turnScheduled = false
    private var lastPersistedHS: Raft.HardState
    private var lastSnapshotIndex: UInt64
    private var snapshotInProgress = false
    private var stopped = false
    var walFsync = Histogram.etcdDisk()

    init(loop: any EventLoop, shared: SharedState, logger: Logger, node: RaftNode, wal: WAL, snapshotter: Snapshotter,
         applier: NIOLoopBound<Applier>, applyLoop: any EventLoop, snapshotCount: UInt64, lastSnapshotIndex: UInt64) {
        self.loop = loop; self.shared = shared; self.logger = logger; self.node = node; self.wal = wal
        self.snapshotter = snapshotter; self.applier = applier; self.applyLoop = applyLoop
        self.snapshotCount = snapshotCount
        self.lastPersistedHS = node.hardState
        self.lastSnapshotIndex = lastSnapshotIndex
    }

    // MARK: requests (each runs as one job on `loop`)

    func propose(id: UInt64, data: [UInt8], promise: EventLoopPromise<ApplyResult>) {
        if stopped { promise.succeed(.failed(EtcdError.stopped)); return }
        // etcd's back-pressure: refuse new proposals while the apply loop is far behind.
        if node.commitIndex > shared.applied + 5000 {
            promise.succeed(.failed(EtcdError.tooManyRequests)); return
        }
        do {
            try node.propose(data)
        } catch {
            switch error {
            case .noLeader: promise.succeed(.failed(EtcdError.noLeader))
            case .tooLarge: promise.succeed(.failed(EtcdError.requestTooLarge))
            default: promise.succeed(.failed(GRPCStatus(.unavailable, "etcdserver: \(error)")))
            }
            return
        }
        waiting[id] = promise
        shared.proposalsPending.add(1, ordering: .relaxed)
        scheduleTurn()
    }

    /// Completes when this node may serve a linearizable read: a ReadIndex round confirmed its
    /// leadership and the apply loop has applied up to the read index.
    func readBarrier(_ promise: EventLoopPromise<Void>) {
        if stopped { promise.fail(EtcdError.stopped); return }
        readsToRequest.append(promise)
        scheduleTurn()
    }

    func tick() {
        guard !stopped else { return }
        node.tick()
        if node.hasReady { scheduleTurn() }
    }

    private func scheduleTurn() {
        guard !turnScheduled else { return }
        turnScheduled = true
        loop.execute { [self] in self.turn() }
    }

    // MARK: the turn

    func turn() {
        turnScheduled = false
        guard !stopped else { return }
        if !readsToRequest.isEmpty {
            readRound += 1
            var ctx = [UInt8](repeating: 0, count: 8)
            for i in 0..<8 { ctx[i] = UInt8(truncatingIfNeeded: readRound >> (8 * UInt64(i))) }
            do {
                try node.readIndex(context: ctx)
                readRounds[readRound] = readsToRequest
            } catch {
                for p in readsToRequest { p.fail(EtcdError.noLeader) }
            }
            readsToRequest = []
        }
        while node.hasReady {
            let rd = node.ready()
            if let ss = rd.softState { noteSoftState(ss) }
            // Persist: entries with the current hard state; a hard state whose only change is the
            // commit index is not worth an fsync of its own (a restarted node re-learns commit;
            // the store's applied index decides what is replayed), it rides with the next append.
            let hs = rd.hardState ?? lastPersistedHS
            let voteChanged = hs.term != lastPersistedHS.term || hs.vote != lastPersistedHS.vote
            if !rd.entries.isEmpty || voteChanged {
                let start = NIODeadline.now()
                do {
                    try wal.append(entries: rd.entries.map { WALEntry(index: $0.index, term: $0.term, data: $0.data) },
                                   hardState: Storage.HardState(term: hs.term, vote: hs.vote, commit: hs.commit))
                } catch {
                    fatal("WAL append failed: \(error)")
                    return
                }
                walFsync.observe(Double((NIODeadline.now() - start).nanoseconds) / 1e9)
                lastPersistedHS = hs
            }
            shared.term.store(node.term, ordering: .relaxed)
            shared.commitIndex.store(node.commitIndex, ordering: .releasing)
            if !rd.committedEntries.isEmpty { handToApplier(rd.committedEntries) }
            for rs in rd.readStates { readIndexAnswered(rs) }
            node.advance()
        }
        shared.commitIndex.store(node.commitIndex, ordering: .releasing)
    }

    private func noteSoftState(_ ss: SoftState) {
        let old = shared.leader.exchange(ss.leader, ordering: .relaxed)
        if old != ss.leader {
            if ss.leader != 0 { shared.leaderChanges.add(1, ordering: .relaxed) }
            logger.info("raft: leader changed", metadata: ["leader": "\(String(ss.leader, radix: 16))",
                                                           "term": "\(node.term)", "role": "\(ss.role)"])
        }
        if ss.role != .leader {
            // Proposals of this node that were not committed may never be: etcd answers
            // "leader changed" / times them out. A single member only loses leadership on stop.
            for (_, p) in waiting { p.succeed(.failed(GRPCStatus(.unavailable, "etcdserver: leader changed"))) }
            shared.proposalsPending.store(0, ordering: .relaxed)
            waiting.removeAll()
        }
    }

    private func handToApplier(_ entries: [Raft.Entry]) {
        var promises: [UInt64: EventLoopPromise<ApplyResult>] = [:]
        if !waiting.isEmpty {
            for e in entries where e.type == .normal && e.data.count >= 2 {
                // Field 1 (id, varint) is encoded first: read it without decoding the whole request.
                if let id = Self.peekID(e.data), let p = waiting.removeValue(forKey: id) { promises[id] = p }
            }
            shared.proposalsPending.store(waiting.count, ordering: .relaxed)
        }
        shared.proposalsCommitted.add(UInt64(entries.count), ordering: .relaxed)
        let applier = self.applier
        applyLoop.execute { applier.value.enqueue(entries, promises) }
        if let last = entries.last, last.index >= lastSnapshotIndex + snapshotCount, !snapshotInProgress {
            requestSnapshot(at: last.index)
        }
    }

    static func peekID(_ data: [UInt8]) -> UInt64? {
        guard data.first == 0x08 else { return nil }
        var v: UInt64 = 0, shift: UInt64 = 0, i = 1
        while i < data.count && i <= 10 {
            let b = data[i]
            v |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return v }
            shift += 7; i += 1
        }
        return nil
    }

    private func readIndexAnswered(_ rs: ReadState) {
        guard rs.context.count == 8 else { return }
        var round: UInt64 = 0
        for i in 0..<8 { round |= UInt64(rs.context[i]) << (8 * UInt64(i)) }
        // An ack of round n confirms every earlier round too.
        for r in readRounds.keys.sorted() where r <= round {
            let ps = readRounds.removeValue(forKey: r)!
            let applier = self.applier
            let index = rs.index
            applyLoop.execute { applier.value.whenApplied(index, ps) }
        }
    }

    // MARK: snapshots

    /// Every --snapshot-count entries: the apply loop syncs the store up to `index`, then this
    /// loop records a snapshot (file + WAL marker), compacts the in-memory log and releases WAL
    /// segments that hold only entries the synced store already covers.
    private func requestSnapshot(at index: UInt64) {
        snapshotInProgress = true
        let applier = self.applier
        let me = NIOLoopBound(self, eventLoop: loop)
        let raftLoop = loop
        applyLoop.execute {
            let result = applier.value.syncForSnapshot(upTo: index)
            raftLoop.execute { me.value.finishSnapshot(result) }
        }
    }

    private func finishSnapshot(_ synced: Result<UInt64, MVCCError>) {
        snapshotInProgress = false
        guard case .success(let index) = synced, index > lastSnapshotIndex else {
            if case .failure(let e) = synced { logger.error("snapshot: store sync failed", metadata: ["error": "\(e)"]) }
            return
        }
        do {
            let snap = try node.createSnapshot(index: index, data: [])
            var conf: [UInt8] = []
            for v in snap.metadata.confState.voters {
                for k in (0..<8).reversed() { conf.append(UInt8(truncatingIfNeeded: v >> (UInt64(k) * 8))) }
            }
            try snapshotter.save(Storage.SnapshotMetadata(index: index, term: snap.metadata.term, confState: conf), data: [])
            try wal.saveSnapshotMarker(WALSnapshotMarker(index: index, term: snap.metadata.term))
            try node.compact(to: index)
            try wal.releaseBefore(index)
            try snapshotter.prune(keep: 5)
            lastSnapshotIndex = index
            logger.info("snapshot saved; WAL released", metadata: ["index": "\(index)", "walSegments": "\(wal.segmentCount)"])
        } catch {
            logger.error("snapshot failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: stop

    func stop() {
        guard !stopped else { return }
        stopped = true
        for (_, p) in waiting { p.succeed(.failed(EtcdError.stopped)) }
        waiting.removeAll()
        for p in readsToRequest { p.fail(EtcdError.stopped) }
        readsToRequest = []
        for (_, ps) in readRounds { for p in ps { p.fail(EtcdError.stopped) } }
        readRounds = [:]
        wal.close()
    }

    private func fatal(_ message: String) {
        logger.critical("\(message); stopping")
        stop()
        shared.stopped.store(true, ordering: .relaxed)
    }
}
