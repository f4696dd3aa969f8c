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
    private var waiting: [UInt64: (waiter: ApplyWaiter, tick: UInt64)] = [:]
    /// Linearizable reads waiting for the next ReadIndex round (with the tick they arrived at).
    private var readsToRequest: [(promise: EventLoopPromise<Void>, tick: UInt64)] = []
    /// ReadIndex rounds in flight, by context (round number), with the tick they were asked at.
    private var readRounds: [UInt64: (reads: [(promise: EventLoopPromise<Void>, tick: UInt64)], asked: UInt64)] = [:]
    /// Ticks since start (the loop's clock for request timeouts).
    private var ticks: UInt64 = 0
    /// etcd's request timeout (5 s + 2 election timeouts) in ticks: a proposal or read not
    /// answered by then fails with "etcdserver: request timed out".
    var requestTimeoutTicks: UInt64 = 70
    /// A ReadIndex round not answered within this many ticks is asked again (a lost message or a
    /// leader change drops it silently).
    var readRetryTicks: UInt64 = 5
    /// Peer messages go here (nil on a one-member cluster without a peer listener).
    var transport: (any RaftSender)?
    /// Snapshot files received from the leader, by snapshot index, until Raft installs one.
    private var receivedSnapshots: [UInt64: String] = [:]
    /// Where outgoing snapshot files are written (member/snap).
    var snapshotDir = ""
    /// The file being streamed to each follower (removed when the transport reports the outcome).
    private var outgoingSnapshots: [UInt64: String] = [:]

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
        self.persistedIndex = node.lastIndex
    }

    /// The last log index in the WAL. Committed entries up to it may go to the apply loop before
    /// this turn's WAL write (etcd applies in parallel with its WAL save too): they are durable
    /// on a quorum and here, so they need not wait for the fsync of entries behind them.
    private var persistedIndex: UInt64

    // MARK: requests (each runs as one job on `loop`)

    func propose(id: UInt64, data: [UInt8], waiter: ApplyWaiter) {
        if stopped { waiter.complete(.failed(EtcdError.stopped)); return }
        // etcd's back-pressure: refuse new proposals while the apply loop is far behind.
        if node.commitIndex > shared.answeredIndex.load(ordering: .relaxed) + 5000 {
            waiter.complete(.failed(EtcdError.tooManyRequests)); return
        }
        do {
            try node.propose(data)
        } catch {
            waiter.complete(.failed(Self.status(for: error)))
            return
        }
        waiting[id] = (waiter, ticks)
        shared.proposalsPending.add(1, ordering: .relaxed)
        scheduleTurn()
    }

    /// A membership change; the caller waits for its own request id (in the context) at apply.
    func proposeConfChange(id: UInt64, cc: ConfChange, waiter: ApplyWaiter) {
        if stopped { waiter.complete(.failed(EtcdError.stopped)); return }
        do {
            try node.proposeConfChange(cc)
        } catch {
            waiter.complete(.failed(Self.status(for: error)))
            return
        }
        waiting[id] = (waiter, ticks)
        shared.proposalsPending.add(1, ordering: .relaxed)
        scheduleTurn()
    }

    static func status(for error: ProposalError) -> GRPCStatus {
        switch error {
        case .noLeader: EtcdError.noLeader
        case .tooLarge: EtcdError.requestTooLarge
        case .leadershipTransferInProgress: GRPCStatus(.unavailable, "etcdserver: leadership transfer in progress; retry")
        case .confChangePending: GRPCStatus(.unavailable, "etcdserver: an earlier membership change is not applied yet; retry")
        case .invalidConfChange(let why): GRPCStatus(.failedPrecondition, "etcdserver: invalid membership change: \(why)")
        }
    }

    /// Maintenance.MoveLeader: starts a leadership transfer (the caller watches the leader).
    func transferLeadership(to id: UInt64) -> GRPCStatus? {
        if stopped { return EtcdError.stopped }
        do {
            try node.transferLeadership(to: id)
        } catch {
            switch error {
            case .noLeader: return EtcdError.noLeader
            case .notVoter: return EtcdError.badLeaderTransferee
            }
        }
        scheduleTurn()
        return nil
    }

    /// Completes when this node may serve a linearizable read: a ReadIndex round confirmed its
    /// leadership and the apply loop has applied up to the read index.
    func readBarrier(_ promise: EventLoopPromise<Void>) {
        if stopped { promise.fail(EtcdError.stopped); return }
        readsToRequest.append((promise, ticks))
        scheduleTurn()
    }

    func tick() {
        guard !stopped else { return }
        ticks += 1
        node.tick()
        expireRequests()
        if node.hasReady || !readsToRequest.isEmpty { scheduleTurn() }
    }

    /// Proposals and reads that waited longer than the request timeout fail (etcd's ErrTimeout);
    /// ReadIndex rounds unanswered for a few ticks are asked again.
    private func expireRequests() {
        if ticks % 5 == 0 && !waiting.isEmpty {
            for (id, w) in waiting where ticks - w.tick >= requestTimeoutTicks {
                waiting.removeValue(forKey: id)
                w.waiter.complete(.failed(EtcdError.timeout))
            }
            shared.proposalsPending.store(waiting.count, ordering: .relaxed)
        }
        for (round, r) in readRounds where ticks - r.asked >= readRetryTicks {
            readRounds.removeValue(forKey: round)
            for read in r.reads {
                if ticks - read.tick >= requestTimeoutTicks { read.promise.fail(EtcdError.timeout) } else { readsToRequest.append(read) }
            }
        }
    }

    // MARK: peers

    /// Messages from peers (any order); stepped on this loop.
    func receive(_ messages: [Raft.Message]) {
        guard !stopped else { return }
        for m in messages where m.to == shared.memberID { node.step(m) }
        if node.hasReady { scheduleTurn() }
    }

    /// A snapshot the leader streamed (its data file is `file`): kept until Raft installs the
    /// snapshot (Ready.snapshot), then the apply loop replaces the store with it.
    func receiveSnapshot(_ m: Raft.Message, file: String) {
        guard !stopped, let snap = m.snapshot else { unlink(file); return }
        if let old = receivedSnapshots.updateValue(file, forKey: snap.metadata.index), old != file { unlink(old) }
        node.step(m)
        if node.hasReady { scheduleTurn() }
    }

    func reportUnreachable(_ id: UInt64) {
        guard !stopped else { return }
        node.reportUnreachable(id)
    }

    func reportSnapshot(to id: UInt64, failed: Bool) {
        if let f = outgoingSnapshots.removeValue(forKey: id) { unlink(f) }
        guard !stopped else { return }
        node.reportSnapshot(to: id, failed: failed)
        if node.hasReady { scheduleTurn() }
    }

    private func send(_ messages: [Raft.Message]) {
        guard !messages.isEmpty, let transport else { return }
        var plain: [Raft.Message] = []
        plain.reserveCapacity(messages.count)
        for m in messages {
            if m.type == .snapshot { sendSnapshot(m) } else { plain.append(m) }
        }
        if !plain.isEmpty { transport.send(plain) }
    }

    /// MsgSnap: the store's current state (at or after the snapshot's index: the follower skips
    /// entries its store already has) is copied to a file on the apply loop, then streamed.
    private func sendSnapshot(_ m: Raft.Message) {
        guard let transport else { return }
        let path = snapshotDir + "/send-\(String(m.to, radix: 16))-\(m.snapshot?.metadata.index ?? 0).mdb"
        viaApplyLoop({ $0.writeSnapshotFile(path) }, then: { host, ok in
            if ok {
                var msg = m
                msg.snapshot?.data = []
                if let old = host.outgoingSnapshots.updateValue(path, forKey: m.to), old != path { unlink(old) }
                transport.sendSnapshot(msg, file: path)
            } else {
                host.node.reportSnapshot(to: m.to, failed: true)
            }
        })
    }

    private func scheduleTurn() {
        guard !turnScheduled else { return }
        turnScheduled = true
        loop.execute { [self] in self.turn() }
    }

    // MARK: the turn

    func turn() {
        turnScheduled = false
        guard !stopped, installing == nil else { return }
        if !readsToRequest.isEmpty {
            readRound += 1
            var ctx = [UInt8](repeating: 0, count: 8)
            for i in 0..<8 { ctx[i] = UInt8(truncatingIfNeeded: readRound >> (8 * UInt64(i))) }
            do {
                try node.readIndex(context: ctx)
                readRounds[readRound] = (readsToRequest, ticks)
                readsToRequest = []
            } catch {
                // No leader yet: keep them for the next turn until the request timeout.
                let keep = readsToRequest.filter { ticks - $0.tick < requestTimeoutTicks }
                for r in readsToRequest where ticks - r.tick >= requestTimeoutTicks { r.promise.fail(EtcdError.noLeader) }
                readsToRequest = keep
            }
        }
        while node.hasReady {
            let rd = node.ready()
            if let ss = rd.softState { noteSoftState(ss) }
            send(rd.immediateMessages)
            if let snap = rd.snapshot {
                // The store must hold the snapshot before anything after it is persisted or
                // applied: this Ready waits until the apply loop replaced the store.
                installSnapshot(snap, rd)
                return
            }
            if !persistAndApply(rd) { return }
        }
        shared.commitIndex.store(node.commitIndex, ordering: .releasing)
    }

    /// Steps 2-6 of the host loop for one Ready (after its immediate messages went out).
    private func persistAndApply(_ rd: Ready) -> Bool {
            // Persist: entries with the current hard state; a hard state whose only change is the
            // commit index is not worth an fsync of its own (a restarted node re-learns commit;
            // the store's applied index decides what is replayed), it rides with the next append.
            let hs = rd.hardState ?? lastPersistedHS
            let voteChanged = hs.term != lastPersistedHS.term || hs.vote != lastPersistedHS.vote
            // Entries this Ready rewrites (a follower's conflicting tail) do not count as durable.
            let durable = min(persistedIndex, (rd.entries.first?.index ?? UInt64.max) &- 1)
            let applyFirst = (rd.committedEntries.last?.index ?? 0) <= durable
            if applyFirst && !rd.committedEntries.isEmpty { handToApplier(rd.committedEntries) }
            if !rd.entries.isEmpty || voteChanged {
                let start = NIODeadline.now()
                do {
                    try wal.append(entries: rd.entries.map(WALCodec.walEntry),
                                   hardState: Storage.HardState(term: hs.term, vote: hs.vote, commit: hs.commit))
                } catch {
                    fatal("WAL append failed: \(error)")
                    return false
                }
                walFsync.observe(Double((NIODeadline.now() - start).nanoseconds) / 1e9)
                lastPersistedHS = hs
                if let last = rd.entries.last { persistedIndex = last.index }
            }
            send(rd.messages)
            shared.term.store(node.term, ordering: .relaxed)
            shared.commitIndex.store(node.commitIndex, ordering: .releasing)
            if !applyFirst && !rd.committedEntries.isEmpty { handToApplier(rd.committedEntries) }
            for rs in rd.readStates { readIndexAnswered(rs) }
            node.advance()
            return true
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
            for (_, w) in waiting { w.waiter.complete(.failed(EtcdError.leaderChanged)) }
            shared.proposalsPending.store(0, ordering: .relaxed)
            waiting.removeAll()
        }
    }

    private func handToApplier(_ entries: [Raft.Entry]) {
        var waiters: [UInt64: ApplyWaiter] = [:]
        var confStates: [UInt64: ConfState] = [:]
        for e in entries where e.type == .confChange {
            // Raft's membership follows at once (the next conf change waits for this one); the
            // apply loop persists the ConfState with the applied index.
            guard let cc = try? ConfChange(decoding: e.data) else { continue }
            confStates[e.index] = node.applyConfChange(cc)
            if let id = Self.peekID(cc.context), let w = waiting.removeValue(forKey: id) { waiters[id] = w.waiter }
        }
        if !waiting.isEmpty {
            for e in entries where e.type == .normal && e.data.count >= 2 {
                // Field 1 (id, varint) is encoded first: read it without decoding the whole request.
                if let id = Self.peekID(e.data), let w = waiting.removeValue(forKey: id) { waiters[id] = w.waiter }
            }
            shared.proposalsPending.store(waiting.count, ordering: .relaxed)
        }
        shared.proposalsCommitted.add(UInt64(entries.count), ordering: .relaxed)
        let applier = self.applier
        applyLoop.execute { applier.value.enqueue(entries, waiters, confStates: confStates) }
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
            let ps = readRounds.removeValue(forKey: r)!.reads.map(\.promise)
            let applier = self.applier
            let index = rs.index
            applyLoop.execute { applier.value.whenApplied(index, ps) }
        }
    }

    // MARK: snapshots

    /// The Ready whose snapshot the apply loop is installing (turns wait for it).
    private var installing: Ready?

    /// Raft installs a snapshot from the leader (Ready.snapshot): the apply loop replaces the
    /// store with the received file, then this loop records the snapshot (WAL marker + snapshot
    /// metadata: entries up to its index are in the store now) and goes on with the Ready.
    private func installSnapshot(_ snap: Raft.Snapshot, _ rd: Ready) {
        let index = snap.metadata.index
        for (i, f) in receivedSnapshots where i < index {
            unlink(f)
            receivedSnapshots.removeValue(forKey: i)
        }
        guard let file = receivedSnapshots.removeValue(forKey: index) else {
            fatal("raft: the snapshot at \(index) must be installed but its data file was not received")
            return
        }
        installing = rd
        viaApplyLoop({ $0.installSnapshot(file: file) }, then: { $0.finishInstall(snap, applied: $1) })
    }

    /// Runs `work` on the apply loop, then `then` with its result back on this loop.
    private func viaApplyLoop<T: Sendable>(_ work: @escaping @Sendable (Applier) -> T,
                                           then: @escaping @Sendable (RaftHost, T) -> Void) {
        let applier = self.applier
        let me = NIOLoopBound(self, eventLoop: loop)
        let raftLoop = loop
        applyLoop.execute {
            let r = work(applier.value)
            raftLoop.execute { then(me.value, r) }
        }
    }

    private func finishInstall(_ snap: Raft.Snapshot, applied: UInt64?) {
        guard let rd = installing else { return }
        installing = nil
        guard !stopped else { return }
        guard applied != nil else {
            fatal("raft: installing the leader's snapshot failed")
            return
        }
        let md = snap.metadata
        do {
            try snapshotter.save(Storage.SnapshotMetadata(index: md.index, term: md.term, confState: Self.encodeVoters(md.confState)),
                                 data: [])
            try wal.saveSnapshotMarker(WALSnapshotMarker(index: md.index, term: md.term))
        } catch {
            fatal("raft: recording the installed snapshot failed: \(error)")
            return
        }
        lastSnapshotIndex = md.index
        persistedIndex = md.index
        logger.info("raft: installed snapshot from the leader", metadata: ["index": "\(md.index)", "term": "\(md.term)"])
        guard persistAndApply(rd) else { return }
        scheduleTurn()
    }

    /// Every --snapshot-count entries: the apply loop syncs the store up to `index`, then this
    /// loop records a snapshot (file + WAL marker), compacts the in-memory log and releases WAL
    /// segments that hold only entries the synced store already covers.
    private func requestSnapshot(at index: UInt64) {
        snapshotInProgress = true
        viaApplyLoop({ $0.syncForSnapshot(upTo: index) }, then: { $0.finishSnapshot($1) })
    }

    private func finishSnapshot(_ synced: Result<UInt64, MVCCError>) {
        snapshotInProgress = false
        guard case .success(let index) = synced, index > lastSnapshotIndex else {
            if case .failure(let e) = synced { logger.error("snapshot: store sync failed", metadata: ["error": "\(e)"]) }
            return
        }
        do {
            let snap = try node.createSnapshot(index: index, data: [])
            try snapshotter.save(Storage.SnapshotMetadata(index: index, term: snap.metadata.term,
                                                          confState: Self.encodeVoters(snap.metadata.confState)), data: [])
            try wal.saveSnapshotMarker(WALSnapshotMarker(index: index, term: snap.metadata.term))
            // Keep a catch-up window in memory (etcd keeps 5,000 entries) so a follower a little
            // behind gets entries, not a snapshot.
            if index > catchUpEntries { try node.compact(to: index - catchUpEntries) }
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
        for (_, w) in waiting { w.waiter.complete(.failed(EtcdError.stopped)) }
        waiting.removeAll()
        for r in readsToRequest { r.promise.fail(EtcdError.stopped) }
        readsToRequest = []
        for (_, r) in readRounds { for read in r.reads { read.promise.fail(EtcdError.stopped) } }
        for (_, f) in receivedSnapshots { unlink(f) }
        receivedSnapshots = [:]
        readRounds = [:]
        wal.close()
    }

    var catchUpEntries: UInt64 = 5000

    /// The snapshot file's conf state: voter IDs as 8-byte big-endian values (restart takes the
    /// membership from the store, this is a record for tools).
    static func encodeVoters(_ cs: ConfState) -> [UInt8] {
        var conf: [UInt8] = []
        for v in cs.voters {
            for k in (0..<8).reversed() { conf.append(UInt8(truncatingIfNeeded: v >> (UInt64(k) * 8))) }
        }
        return conf
    }

    private func fatal(_ message: String) {
        logger.critical("\(message); stopping")
        stop()
        shared.stopped.store(true, ordering: .relaxed)
    }
}
