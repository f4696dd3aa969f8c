import Raft
import enum KeelTestSupport.Linearizability

/// A deterministic cluster simulator: virtual time (1 step = 1 ms), a seeded PRNG, a lossy
/// network that delays, duplicates and reorders messages, partitions (symmetric and one-way),
/// crashes that lose everything not persisted (also between sending a Ready's immediate
/// messages and writing it), restarts from the simulated disk (snapshot + log tail),
/// snapshots and log compaction, membership changes (learner joins, promotion, removal, also
/// of the leader), leadership transfers, and clients that put/get keys of a KV register store
/// through the cluster (gets are ReadIndex reads, served by any node). Safety properties are
/// checked after every event and the client history is checked for linearizability at the
/// end; `failure` holds the first violation.
struct Simulator {
    struct Options {
        var nodeCount = 3
        var steps = 3000            // virtual milliseconds of faulty operation
        var tickEvery = 10          // ms per Raft tick
        var maxDelay = 25           // ms; random delays reorder messages
        var lossPercent = 5
        var duplicatePercent = 2
        var crashPerMille = 3       // per ms, one random node
        /// Of crashes: per mille that hit between sending a Ready's immediate messages and
        /// its write (the write is lost).
        var crashMidReadyPerMille = 500
        /// Per handled Ready (during the faulty phase): the host crashes right after sending
        /// its immediate messages, before or after the write.
        var crashInReadyPerMille = 3
        var restartPerMille = 15
        var partitionPerMille = 2
        var healPerMille = 4
        var proposePercent = 5      // background proposals (load without a client)
        /// Entry bytes per append; small values split the log across many messages.
        var maxSizePerMsg = 256
        var maxInflightMsgs = 8
        var maxInflightBytes = 1024
        var checkQuorum = true
        var preVote = true
        var livenessBudget = 4000   // ms after healing in which a new proposal must commit everywhere
        var clients = 3
        var keys: UInt8 = 2
        var clientOpPercent = 8     // per ms, an idle client starts an operation
        var opTimeout = 300         // ms; then the outcome is unknown
        var membershipPerMille = 2
        var transferPerMille = 2
        /// Snapshot every this many applied entries (per node), keeping `keepEntries` behind.
        var snapshotEvery = 25
        var keepEntries = 3
    }

    private struct InFlight { var at: Int; var order: UInt64; var msg: Message; var lost = false }
    private struct LogKey: Hashable { var index: UInt64; var term: UInt64 }

    /// The host of one node: the state machine lives in memory (lost on crash, rebuilt from
    /// the disk's snapshot and the log).
    private struct Host {
        var node: RaftNode
        var kv: [UInt8: UInt64] = [:]
        var seenOps: Set<UInt64> = []
        var lastApplied: UInt64 = 0
        var snapshotIndex: UInt64 = 0
    }

    private struct PendingOp {
        var client: Int
        var opID: UInt64
        var key: UInt8
        var put: UInt64?            // nil: a get
        var node: NodeID
        var call: Int
        var readIndex: UInt64?      // a get's confirmed read index
    }

    let seed: UInt64
    let options: Options
    private(set) var ids: [NodeID]
    private var rng: SplitMix64
    private var hosts: [NodeID: Host] = [:]
    private var disks: [NodeID: MemoryStorage] = [:]
    private var initialConf: [NodeID: (peers: [NodeID], learners: [NodeID])] = [:]
    private var removed: Set<NodeID> = []
    private var incarnation: [NodeID: UInt64] = [:]
    private var net: [InFlight] = []
    private var cut: Set<[NodeID]> = []     // [from, to] links that drop everything
    private var now = 0
    private var nextValue: UInt64 = 1
    private var nextOpID: UInt64 = 1
    private var faulty = true

    // Clients.
    private var pending: [UInt64: PendingOp] = [:]
    private var busy: Set<Int> = []
    /// Each client sticks to one node (like a client's connection) until an operation fails or
    /// times out, or the node is down; then it picks another.
    private var clientNode: [Int: NodeID] = [:]
    private(set) var history: [Linearizability.Op] = []

    // Checker state.
    private var leaderOfTerm: [UInt64: NodeID] = [:]
    private var committed: [UInt64: Entry] = [:]
    private var logEntries: [LogKey: (data: [UInt8], prevTerm: UInt64)] = [:]
    private var snapshotAt: [UInt64: [UInt8]] = [:]
    /// Per node: the term in which it was leader at its previous Ready, and its commit then.
    private var leaderCommit: [NodeID: (term: UInt64, commit: UInt64)] = [:]
    private(set) var failure: String?
    private(set) var stats = Stats()

    struct Stats {
        var elections = 0, crashes = 0, committedEntries = 0, messages = 0
        var snapshotsMade = 0, snapshotsInstalled = 0, confChanges = 0, transfers = 0
        var opsOK = 0, opsUnknown = 0, reads = 0, inconclusiveKeys = 0
    }

    init(seed: UInt64, options: Options = Options()) throws {
        self.seed = seed
        self.options = options
        self.rng = SplitMix64(seed: seed)
        self.ids = (1...options.nodeCount).map { NodeID($0) }
        for id in ids {
            disks[id] = MemoryStorage()
            initialConf[id] = (ids, [])
            try start(id)
        }
    }

    private mutating func chance(perMille p: Int) -> Bool { Int(rng.next() % 1000) < p }
    private mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
    private var upIDs: [NodeID] { ids.filter { hosts[$0] != nil } }
    private var leaderID: NodeID? {
        ids.filter { hosts[$0]?.node.role == .leader }.max { hosts[$0]!.node.term < hosts[$1]!.node.term }
    }

    private mutating func start(_ id: NodeID) throws {
        incarnation[id, default: 0] += 1
        var c = Config(id: id, peers: initialConf[id]!.peers, seed: seed &+ id &* 1000 &+ incarnation[id]!)
        c.learners = initialConf[id]!.learners
        c.maxSizePerMsg = options.maxSizePerMsg
        c.maxInflightMsgs = options.maxInflightMsgs
        c.maxInflightBytes = options.maxInflightBytes
        c.checkQuorum = options.checkQuorum
        c.preVote = options.preVote
        let disk = disks[id]!
        var h = Host(node: try RaftNode(config: c, storage: disk))
        if let snap = disk.snapshot {
            // The state machine restarts from the durable snapshot; the log after it is replayed.
            guard let sm = Self.decodeSnapshot(snap.data) else { fail("node \(id): undecodable snapshot"); return }
            (h.kv, h.seenOps) = sm
            h.lastApplied = snap.metadata.index
            h.snapshotIndex = snap.metadata.index
        }
        hosts[id] = h
    }

    private mutating func fail(_ what: String) {
        if failure == nil { failure = "seed \(seed) t=\(now)ms: \(what)" }
    }

    /// Runs the faulty phase, heals everything, checks liveness, then the client history.
    mutating func run() throws {
        for _ in 0..<options.steps where failure == nil { try step(faults: true) }
        if failure == nil { try heal() }
        // Operations still waiting have an unknown outcome.
        for op in pending.values.sorted(by: { $0.opID < $1.opID }) { finishUnknown(op) }
        pending.removeAll()
        let verdicts = Linearizability.verdicts(history)
        stats.inconclusiveKeys += verdicts.filter { $0.value == .inconclusive }.count
        if failure == nil, let key = verdicts.first(where: { $0.value == .violation })?.key {
            let count = history.filter { $0.key == key }.count
            let shown = Linearizability.describe(history, key: key, last: 40)
            fail("linearizability violated on key \(key) (\(count) ops; last 40):\n  "
                 + shown.split(separator: "\n").joined(separator: "\n  "))
        }
    }

    private mutating func heal() throws {
        // Reconnect, restart every node, stop losing messages. Removed nodes run too: until
        // the remaining members have applied the removal they may need their votes (a removed
        // node never campaigns itself).
        cut.removeAll()
        faulty = false
        for id in ids where hosts[id] == nil { try start(id) }
        let value = Self.encodeRaw(UInt64.max - seed)
        let deadline = now + options.livenessBudget
        while now < deadline, failure == nil {
            try step(faults: false)
            guard let l = leaderID else { continue }
            let cs = hosts[l]!.node.confState
            let members = (cs.voters + cs.learners).filter { hosts[$0] != nil }
            let done = members.allSatisfy { appliedData[$0]?.contains(value) ?? false }
            if done && !members.isEmpty { return }
            if now % 50 == 0 { try? hosts[l]!.node.propose(value); try handleReady(l) }
        }
        if failure == nil {
            let state = ids.map { id -> String in
                guard let h = hosts[id] else { return "\(id): down" }
                let n = h.node
                return "\(id): \(n.role) term \(n.term) leader \(n.leader) commit \(n.commitIndex) last \(n.lastIndex) applied \(h.lastApplied) conf \(n.confState.voters)/\(n.confState.learners) transferee \(n.leadTransferee) \(n.status.progress.mapValues { "\($0.state) m\($0.match) n\($0.next)" })"
            }
            fail("liveness: no proposal committed on all members \(options.livenessBudget)ms after healing; removed \(removed.sorted()); nodes:\n  " + state.joined(separator: "\n  "))
        }
    }

    private var appliedData: [NodeID: Set<[UInt8]>] = [:]

    // MARK: - Entry and snapshot encodings

    private static func le(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) } }
    private static func readLE(_ b: ArraySlice<UInt8>) -> UInt64 {
        var v: UInt64 = 0
        for (k, x) in b.prefix(8).enumerated() { v |= UInt64(x) << (k * 8) }
        return v
    }
    private static func encodeRaw(_ v: UInt64) -> [UInt8] { [0] + le(v) }
    private static func encodePut(op: UInt64, key: UInt8, value: UInt64) -> [UInt8] { [1, key] + le(op) + le(value) }

    private static func encodeSnapshot(kv: [UInt8: UInt64], ops: Set<UInt64>) -> [UInt8] {
        var out: [UInt8] = le(UInt64(kv.count))
        for k in kv.keys.sorted() { out.append(k); out += le(kv[k]!) }
        for o in ops.sorted() { out += le(o) }
        return out
    }

    private static func decodeSnapshot(_ b: [UInt8]) -> ([UInt8: UInt64], Set<UInt64>)? {
        guard b.count >= 8 else { return nil }
        let n = Int(readLE(b[0..<8]))
        var p = 8
        var kv: [UInt8: UInt64] = [:]
        for _ in 0..<n {
            guard p + 9 <= b.count else { return nil }
            kv[b[p]] = readLE(b[(p + 1)..<(p + 9)]); p += 9
        }
        var ops: Set<UInt64> = []
        while p + 8 <= b.count { ops.insert(readLE(b[p..<(p + 8)])); p += 8 }
        return p == b.count ? (kv, ops) : nil
    }

    // MARK: - Steps

    private mutating func step(faults: Bool) throws {
        now += 1
        if faults { try injectFaults() }
        try clientStep()
        // Ticks, each node with its own phase.
        for id in ids where hosts[id] != nil && (now + Int(id) * 3) % options.tickEvery == 0 {
            hosts[id]!.node.tick()
            try handleReady(id)
        }
        // Deliveries due now, in random order (order keys are random).
        let due = net.filter { $0.at <= now }.sorted { $0.order < $1.order }
        net.removeAll { $0.at <= now }
        for f in due where failure == nil {
            let m = f.msg
            let delivered = !f.lost && hosts[m.to] != nil && !cut.contains([m.from, m.to])
            if delivered {
                hosts[m.to]!.node.step(m)
                try handleReady(m.to)
            }
            // The transport reports the outcome of a snapshot send to the leader.
            if m.type == .snapshot, hosts[m.from] != nil {
                hosts[m.from]!.node.reportSnapshot(to: m.to, failed: !delivered)
                try handleReady(m.from)
            }
        }
        // Reads whose read index is applied are answered.
        for op in pending.values.sorted(by: { $0.opID < $1.opID }) {
            guard let ri = op.readIndex, let h = hosts[op.node], h.lastApplied >= ri else { continue }
            finish(op, result: h.kv[op.key])
        }
    }

    private mutating func clientStep() throws {
        // Timeouts: the outcome is unknown.
        for op in pending.values.sorted(by: { $0.opID < $1.opID }) where now - op.call > options.opTimeout {
            finishUnknown(op)
        }
        for c in 0..<options.clients where !busy.contains(c) {
            guard Int(rng.next() % 100) < options.clientOpPercent else { continue }
            let up = upIDs
            guard !up.isEmpty else { continue }
            let node: NodeID
            if let n = clientNode[c], hosts[n] != nil { node = n } else { node = pick(up); clientNode[c] = node }
            let key = UInt8(rng.next() % UInt64(options.keys))
            let opID = nextOpID; nextOpID += 1
            let isPut = rng.next() % 2 == 0
            var op = PendingOp(client: c, opID: opID, key: key, put: isPut ? opID : nil, node: node, call: now)
            do {
                if isPut {
                    try hosts[node]!.node.propose(Self.encodePut(op: opID, key: key, value: opID))
                } else {
                    try hosts[node]!.node.readIndex(context: Self.le(opID))
                }
            } catch {
                clientNode[c] = nil   // refused with a typed reason: never happened; try elsewhere
                continue
            }
            op.readIndex = nil
            pending[opID] = op
            busy.insert(c)
            try handleReady(node)
        }
    }

    private mutating func finish(_ op: PendingOp, result: UInt64?) {
        pending[op.opID] = nil
        busy.remove(op.client)
        stats.opsOK += 1
        if let v = op.put {
            history.append(.init(key: op.key, kind: .put(v), call: op.call, ret: now, client: op.client))
        } else {
            stats.reads += 1
            history.append(.init(key: op.key, kind: .get(result), call: op.call, ret: now, client: op.client))
        }
    }

    private mutating func finishUnknown(_ op: PendingOp) {
        pending[op.opID] = nil
        busy.remove(op.client)
        clientNode[op.client] = nil
        stats.opsUnknown += 1
        if let v = op.put {
            history.append(.init(key: op.key, kind: .put(v), call: op.call, ret: nil, client: op.client))
        }
    }

    private mutating func injectFaults() throws {
        if chance(perMille: options.crashPerMille) {
            let up = upIDs
            if !up.isEmpty { crash(pick(up)) }
        }
        if chance(perMille: options.restartPerMille) {
            let down = ids.filter { hosts[$0] == nil && !removed.contains($0) }
            if !down.isEmpty { try start(pick(down)) }
        }
        if chance(perMille: options.partitionPerMille) {
            if rng.next() % 2 == 0 {
                // Symmetric split into two random sides.
                var side: [NodeID: Bool] = [:]
                for id in ids { side[id] = rng.next() % 2 == 0 }
                for a in ids { for b in ids where a != b && side[a] != side[b] { cut.insert([a, b]) } }
            } else {
                // One-way link failure.
                let a = pick(ids), b = pick(ids)
                if a != b { cut.insert([a, b]) }
            }
        }
        if chance(perMille: options.healPerMille) { cut.removeAll() }
        if Int(rng.next() % 100) < options.proposePercent {
            let up = upIDs
            if !up.isEmpty {
                let id = pick(up)
                let v = Self.encodeRaw(nextValue); nextValue += 1
                do { try hosts[id]!.node.propose(v) } catch { /* dropped with a typed reason: fine */ }
                try handleReady(id)
            }
        }
        if chance(perMille: options.membershipPerMille), let l = leaderID { try changeMembership(leader: l) }
        if chance(perMille: options.transferPerMille), let l = leaderID {
            let others = hosts[l]!.node.confState.voters.filter { $0 != l }
            if !others.isEmpty {
                let to = pick(others)
                do { try hosts[l]!.node.transferLeadership(to: to); stats.transfers += 1 } catch {}
                try handleReady(l)
            }
        }
    }

    /// Membership walks between nodeCount and nodeCount + 1 voters: a new node joins as a
    /// learner, is promoted, then a random voter (maybe the leader) is removed. Ids are never reused.
    private mutating func changeMembership(leader l: NodeID) throws {
        let cs = hosts[l]!.node.confState
        let cc: ConfChange
        var joining: NodeID?
        if let learner = cs.learners.first {
            cc = ConfChange(type: .promoteLearner, nodeID: learner)
        } else if cs.voters.count <= options.nodeCount {
            let new = (ids.max() ?? 0) + 1
            cc = ConfChange(type: .addLearner, nodeID: new)
            joining = new
        } else {
            cc = ConfChange(type: .removeNode, nodeID: pick(cs.voters))
        }
        do { try hosts[l]!.node.proposeConfChange(cc) } catch { return }
        stats.confChanges += 1
        if let new = joining {
            // Like etcd's member add: the new member starts knowing the membership with itself.
            ids.append(new)
            disks[new] = MemoryStorage()
            initialConf[new] = (cs.voters, cs.learners + [new])
            try start(new)
        }
        try handleReady(l)
    }

    /// Crash: everything not yet persisted is lost. Sometimes the crash hits after taking a
    /// Ready and sending its immediate messages, before or after writing it.
    private mutating func crash(_ id: NodeID) {
        if var h = hosts[id], h.node.hasReady, chance(perMille: options.crashMidReadyPerMille) {
            let rd = h.node.ready()
            transmit(rd.immediateMessages)
            crash(id, during: rd)
            return
        }
        stats.crashes += 1
        hosts[id] = nil
        appliedData[id] = nil
        leaderCommit[id] = nil
        for op in pending.values.sorted(by: { $0.opID < $1.opID }) where op.node == id { finishUnknown(op) }
    }

    /// A crash after the Ready's immediate messages went out: its write may or may not be durable.
    private mutating func crash(_ id: NodeID, during rd: Ready) {
        if rng.next() % 2 == 0 {
            do {
                if let s = rd.snapshot { try disks[id]!.applySnapshot(s) }
                if let hs = rd.hardState { disks[id]!.setHardState(hs) }
                try disks[id]!.append(rd.entries)
            } catch { fail("storage: \(error)") }
        }
        hosts[id] = nil
        crash(id)
    }

    private mutating func transmit(_ msgs: [Message]) {
        for m in msgs {
            stats.messages += 1
            if Int(rng.next() % 100) < options.lossPercent {
                // A lost snapshot is noticed by its sender's transport (the stream fails).
                if m.type == .snapshot {
                    net.append(InFlight(at: now + 1 + Int(rng.next() % UInt64(options.maxDelay)),
                                        order: rng.next(), msg: m, lost: true))
                }
                continue
            }
            let copies = Int(rng.next() % 100) < options.duplicatePercent ? 2 : 1
            for _ in 0..<copies {
                let delay = 1 + Int(rng.next() % UInt64(options.maxDelay))
                net.append(InFlight(at: now + delay, order: rng.next(), msg: m))
            }
        }
    }

    private mutating func handleReady(_ id: NodeID) throws {
        while failure == nil, var h = hosts[id], h.node.hasReady {
            let rd = h.node.ready()
            // 0. Messages that may go before the write.
            transmit(rd.immediateMessages)
            if faulty && chance(perMille: options.crashInReadyPerMille) {
                crash(id, during: rd)
                return
            }
            // Commit safety of the leader, checked before this Ready's write: an index it
            // newly commits is durably stored on a quorum of voters (its own copy counts only
            // once written: a leader counting a copy that is not durable breaks this), and
            // (§5.4.2) it is of the leader's term: older entries commit only indirectly; a
            // leader that counts replicas of an old-term entry breaks this (Figure 8).
            if h.node.role == .leader {
                let n = h.node
                let c = n.commitIndex
                if let prev = leaderCommit[id], prev.term == n.term, c > prev.commit {
                    let t = n.term(at: c)
                    if let t, t != n.term {
                        fail("§5.4.2: leader \(id) of term \(n.term) advanced its commit index to \(c), an entry of term \(t)")
                    }
                    let voters = n.confState.voters
                    let durable = voters.filter { v in
                        guard let d = disks[v] else { return false }
                        return d.term(at: c) == t || (d.snapshot?.metadata.index ?? 0) >= c
                    }.count
                    if durable < voters.count / 2 + 1 {
                        fail("leader \(id) of term \(n.term) committed \(c) durable on only \(durable) of voters \(voters)")
                    }
                }
                leaderCommit[id] = (n.term, c)
            } else {
                leaderCommit[id] = nil
            }
            // 1. Persist, checking log matching for every entry written.
            if let s = rd.snapshot {
                let i = s.metadata.index
                if i < h.lastApplied { fail("node \(id): installs snapshot \(i) below applied \(h.lastApplied)") }
                if let seen = snapshotAt[i], seen != s.data { fail("snapshot at \(i) differs between nodes") }
                guard let sm = Self.decodeSnapshot(s.data) else { fail("undecodable snapshot"); return }
                do { try disks[id]!.applySnapshot(s) } catch { fail("storage: \(error)") }
                (h.kv, h.seenOps) = sm
                h.lastApplied = i
                h.snapshotIndex = i
                stats.snapshotsInstalled += 1
                if let c = committed[i], s.metadata.term != c.term {
                    fail("snapshot at \(i) has term \(s.metadata.term), committed entry has term \(c.term)")
                }
            }
            for e in rd.entries {
                let prevTerm = e.index == 1 ? 0 : (h.node.term(at: e.index - 1) ?? UInt64.max)
                let key = LogKey(index: e.index, term: e.term)
                if let seen = logEntries[key] {
                    if seen.data != e.data || seen.prevTerm != prevTerm {
                        fail("log matching: two different entries at index \(e.index) term \(e.term)")
                    }
                } else {
                    logEntries[key] = (e.data, prevTerm)
                }
            }
            if let hs = rd.hardState {
                let old = disks[id]!.hardState
                if hs.term < old.term { fail("node \(id): term went back \(old.term) -> \(hs.term)") }
                if hs.term == old.term && old.vote != noNode && hs.vote != old.vote {
                    fail("node \(id): changed its vote in term \(hs.term)")
                }
                disks[id]!.setHardState(hs)
            }
            do { try disks[id]!.append(rd.entries) } catch { fail("storage: \(error)") }
            // 2. Election safety and leader completeness.
            if h.node.role == .leader {
                if let other = leaderOfTerm[h.node.term], other != id {
                    fail("two leaders in term \(h.node.term): \(other) and \(id)")
                }
                if leaderOfTerm[h.node.term] == nil {
                    leaderOfTerm[h.node.term] = id
                    stats.elections += 1
                    let n = h.node
                    for (i, e) in committed where i >= n.firstIndex && n.entry(at: i) != e {
                        fail("leader completeness: leader \(id) of term \(n.term) lacks committed entry \(i)")
                    }
                    for (i, e) in committed where i < n.firstIndex && n.term(at: i) != nil && n.term(at: i) != e.term {
                        fail("leader completeness: leader \(id) of term \(n.term) has another term at \(i)")
                    }
                }
            }
            // 3. Send what had to wait for the write.
            transmit(rd.messages)
            // 4. Apply, checking state-machine safety and that applied indexes grow by one.
            for e in rd.committedEntries {
                if e.index != h.lastApplied + 1 {
                    fail("node \(id) applied index \(e.index) after \(h.lastApplied)")
                }
                h.lastApplied = e.index
                if let c = committed[e.index] {
                    if c != e { fail("state machine safety: index \(e.index) applied as term \(c.term) and term \(e.term)") }
                } else {
                    committed[e.index] = e
                    stats.committedEntries += 1
                }
                apply(e, on: id, host: &h)
            }
            for rs in rd.readStates {
                let opID = Self.readLE(rs.context[...])
                if var op = pending[opID], op.node == id, op.put == nil { op.readIndex = rs.index; pending[opID] = op }
            }
            h.node.advance()
            // 5. Snapshot and compact now and then.
            if h.lastApplied >= h.snapshotIndex + UInt64(options.snapshotEvery) {
                let i = h.lastApplied
                let data = Self.encodeSnapshot(kv: h.kv, ops: h.seenOps)
                if let seen = snapshotAt[i], seen != data { fail("state at \(i) differs between nodes") }
                snapshotAt[i] = data
                do {
                    let snap = try h.node.createSnapshot(index: i, confState: h.node.confState, data: data)
                    try disks[id]!.createSnapshot(snap)
                    let to = i - min(UInt64(options.keepEntries), i - h.snapshotIndex)
                    if to > h.node.firstIndex - 1 {
                        try h.node.compact(to: to)
                        try disks[id]!.compact(to: to)
                    }
                    h.snapshotIndex = i
                    stats.snapshotsMade += 1
                } catch {
                    fail("node \(id): snapshot/compaction at \(i) failed: \(error)")
                }
            }
            hosts[id] = h
        }
    }

    private mutating func apply(_ e: Entry, on id: NodeID, host h: inout Host) {
        appliedData[id, default: []].insert(e.data)
        switch e.type {
        case .confChange:
            guard let cc = try? ConfChange(decoding: e.data) else { fail("undecodable conf change"); return }
            h.node.applyConfChange(cc)
            if cc.type == .removeNode { removed.insert(cc.nodeID) }
        case .normal:
            guard e.data.count == 18, e.data[0] == 1 else { return }
            let opID = Self.readLE(e.data[2..<10])
            let value = Self.readLE(e.data[10..<18])
            // Exactly-once by operation id (the network may duplicate a forwarded proposal).
            if h.seenOps.insert(opID).inserted { h.kv[e.data[1]] = value }
            if let op = pending[opID], op.node == id { finish(op, result: nil) }
        }
    }
}
