import Raft

/// A deterministic cluster simulator: virtual time, a seeded PRNG, a lossy network that
/// delays, duplicates and reorders messages, partitions (symmetric and one-way), crashes that
/// lose everything not persisted, and restarts from the simulated disk. Safety properties are
/// checked after every event; `failure` holds the first violation.
struct Simulator {
    struct Options {
        var nodeCount = 3
        var steps = 3000            // virtual milliseconds of faulty operation
        var tickEvery = 10          // ms per Raft tick
        var maxDelay = 25           // ms; random delays reorder messages
        var lossPercent = 5
        var duplicatePercent = 2
        var crashPerMille = 3       // per ms, one random node
        var restartPerMille = 15
        var partitionPerMille = 2
        var healPerMille = 4
        var proposePercent = 15
        /// Entry bytes per append; small values split the log across many messages.
        var maxSizePerMsg = 256
        var maxInflightMsgs = 8
        var livenessBudget = 4000   // ms after healing in which a new proposal must commit everywhere
    }

    private struct InFlight { var at: Int; var order: UInt64; var msg: Message }
    private struct LogKey: Hashable { var index: UInt64; var term: UInt64 }

    let seed: UInt64
    let options: Options
    let ids: [NodeID]
    private var rng: SplitMix64
    private var nodes: [NodeID: RaftNode] = [:]
    private var disks: [NodeID: MemoryStorage] = [:]
    private var incarnation: [NodeID: UInt64] = [:]
    private var net: [InFlight] = []
    private var cut: Set<[NodeID]> = []     // [from, to] links that drop everything
    private var now = 0
    private var nextValue: UInt64 = 1

    // Checker state.
    private var leaderOfTerm: [UInt64: NodeID] = [:]
    private var committed: [UInt64: Entry] = [:]
    private var lastApplied: [NodeID: UInt64] = [:]
    private var logEntries: [LogKey: (data: [UInt8], prevTerm: UInt64)] = [:]
    private(set) var failure: String?
    private(set) var stats = Stats()

    struct Stats { var elections = 0; var crashes = 0; var committedEntries = 0; var messages = 0 }

    init(seed: UInt64, options: Options = Options()) throws {
        self.seed = seed
        self.options = options
        self.rng = SplitMix64(seed: seed)
        self.ids = (1...options.nodeCount).map { NodeID($0) }
        for id in ids {
            disks[id] = MemoryStorage()
            try start(id)
        }
    }

    private mutating func chance(perMille p: Int) -> Bool { Int(rng.next() % 1000) < p }
    private mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }

    private mutating func start(_ id: NodeID) throws {
        incarnation[id, default: 0] += 1
        var c = Config(id: id, peers: ids, seed: seed &+ id &* 1000 &+ incarnation[id]!)
        c.maxSizePerMsg = options.maxSizePerMsg
        c.maxInflightMsgs = options.maxInflightMsgs
        nodes[id] = try RaftNode(config: c, storage: disks[id]!)
        lastApplied[id] = 0     // the state machine is in memory: replayed from the log
    }

    private mutating func fail(_ what: String) {
        if failure == nil { failure = "seed \(seed) t=\(now)ms: \(what)" }
    }

    /// Runs the faulty phase, heals everything and checks liveness.
    mutating func run() throws {
        for _ in 0..<options.steps where failure == nil { try step(faults: true) }
        guard failure == nil else { return }
        // Heal: reconnect, restart everyone, stop losing messages.
        cut.removeAll()
        for id in ids where nodes[id] == nil { try start(id) }
        let value = encode(UInt64.max - seed)
        let deadline = now + options.livenessBudget
        while now < deadline, failure == nil {
            try step(faults: false)
            if now % 50 == 0, let l = ids.first(where: { nodes[$0]?.role == .leader }),
               !ids.allSatisfy({ appliedValue(on: $0, value) }) {
                try? nodes[l]!.propose(value); try handleReady(l)
            }
            if ids.allSatisfy({ appliedValue(on: $0, value) }) { return }
        }
        if failure == nil { fail("liveness: no proposal committed on all nodes \(options.livenessBudget)ms after healing") }
    }

    private var appliedData: [NodeID: Set<[UInt8]>] = [:]
    private func appliedValue(on id: NodeID, _ v: [UInt8]) -> Bool { appliedData[id]?.contains(v) ?? false }

    private func encode(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) } }

    private mutating func step(faults: Bool) throws {
        now += 1
        if faults { try injectFaults() }
        // Ticks, each node with its own phase.
        for id in ids where nodes[id] != nil && (now + Int(id) * 3) % options.tickEvery == 0 {
            nodes[id]!.tick()
            try handleReady(id)
        }
        // Deliveries due now, in random order (order keys are random).
        let due = net.filter { $0.at <= now }.sorted { $0.order < $1.order }
        net.removeAll { $0.at <= now }
        for f in due where failure == nil {
            let m = f.msg
            guard nodes[m.to] != nil, !cut.contains([m.from, m.to]) else { continue }
            nodes[m.to]!.step(m)
            try handleReady(m.to)
        }
    }

    private mutating func injectFaults() throws {
        if chance(perMille: options.crashPerMille) {
            let upIDs = ids.filter { nodes[$0] != nil }
            if !upIDs.isEmpty { crash(pick(upIDs)) }
        }
        if chance(perMille: options.restartPerMille) {
            let down = ids.filter { nodes[$0] == nil }
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
            let upIDs = ids.filter { nodes[$0] != nil }
            if !upIDs.isEmpty {
                let id = pick(upIDs)
                let v = encode(nextValue); nextValue += 1
                do { try nodes[id]!.propose(v) } catch { /* dropped with a typed reason: fine */ }
                try handleReady(id)
            }
        }
    }

    /// Crash: everything not yet persisted is lost. Sometimes the crash hits between taking a
    /// Ready and writing it, or after writing it but before sending its messages.
    private mutating func crash(_ id: NodeID) {
        stats.crashes += 1
        if var n = nodes[id], n.hasReady, rng.next() % 2 == 0 {
            let rd = n.ready()
            if rng.next() % 2 == 0 {
                if let hs = rd.hardState { disks[id]!.setHardState(hs) }
                do { try disks[id]!.append(rd.entries) } catch { fail("storage: \(error)") }
            }
        }
        nodes[id] = nil
        appliedData[id] = nil
    }

    private mutating func handleReady(_ id: NodeID) throws {
        while failure == nil, var n = nodes[id], n.hasReady {
            let rd = n.ready()
            // 1. Persist, checking log matching for every entry written.
            for e in rd.entries {
                let prevTerm = e.index == 1 ? 0 : (n.term(at: e.index - 1) ?? UInt64.max)
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
            if n.role == .leader {
                if let other = leaderOfTerm[n.term], other != id {
                    fail("two leaders in term \(n.term): \(other) and \(id)")
                }
                if leaderOfTerm[n.term] == nil {
                    leaderOfTerm[n.term] = id
                    stats.elections += 1
                    for (i, e) in committed where n.entry(at: i) != e {
                        fail("leader completeness: leader \(id) of term \(n.term) lacks committed entry \(i)")
                    }
                }
            }
            // 3. Send.
            for m in rd.immediateMessages + rd.messages {
                stats.messages += 1
                if Int(rng.next() % 100) < options.lossPercent { continue }
                let copies = Int(rng.next() % 100) < options.duplicatePercent ? 2 : 1
                for _ in 0..<copies {
                    let delay = 1 + Int(rng.next() % UInt64(options.maxDelay))
                    net.append(InFlight(at: now + delay, order: rng.next(), msg: m))
                }
            }
            // 4. Apply, checking state-machine safety and that applied indexes only grow by one.
            for e in rd.committedEntries {
                if e.index != lastApplied[id]! + 1 {
                    fail("node \(id) applied index \(e.index) after \(lastApplied[id]!)")
                }
                lastApplied[id] = e.index
                if let c = committed[e.index] {
                    if c != e { fail("state machine safety: index \(e.index) applied as term \(c.term) and term \(e.term)") }
                } else {
                    committed[e.index] = e
                    stats.committedEntries += 1
                }
                appliedData[id, default: []].insert(e.data)
            }
            n.advance()
            nodes[id] = n
        }
    }
}
