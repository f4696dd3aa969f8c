import Raft

/// A lossless, in-order, in-memory cluster for unit tests. Each node's "disk" is a
/// MemoryStorage that receives exactly what the node's Readys ask to persist.
struct TestCluster {
    var nodes: [NodeID: RaftNode] = [:]
    var disks: [NodeID: MemoryStorage] = [:]
    var applied: [NodeID: [Entry]] = [:]
    var readStates: [NodeID: [ReadState]] = [:]
    /// Snapshots each node installed from its leader.
    var installed: [NodeID: [Snapshot]] = [:]
    /// Messages sent and not yet delivered, in order.
    var inFlight: [Message] = []
    /// Every message ever sent (for assertions).
    var sent: [Message] = []
    /// Messages for which this returns true are dropped.
    var drop: (Message) -> Bool = { _ in false }
    /// Rewrites (or, returning nil, drops) each message before `drop` is consulted.
    var transform: (Message) -> Message? = { $0 }
    var configure: (inout Config) -> Void

    init(ids: [NodeID] = [1, 2, 3], seed: UInt64 = 1, disks: [NodeID: MemoryStorage] = [:],
         configure: @escaping (inout Config) -> Void = { _ in }) throws {
        self.configure = configure
        for id in ids {
            var c = Config(id: id, peers: ids, seed: seed)
            configure(&c)
            let disk = disks[id] ?? MemoryStorage()
            self.disks[id] = disk
            nodes[id] = try RaftNode(config: c, storage: disk)
            applied[id] = []
        }
    }

    /// Starts node `id` with an empty disk (e.g. joining with `peers: []`).
    mutating func start(_ id: NodeID, peers: [NodeID], seed: UInt64 = 1) throws {
        var c = Config(id: id, peers: peers, seed: seed)
        configure(&c)
        disks[id] = MemoryStorage()
        nodes[id] = try RaftNode(config: c, storage: disks[id]!)
        applied[id] = []
    }

    /// Drains one node's Ready: persist, send, apply, advance.
    mutating func handleReady(_ id: NodeID) throws {
        guard var n = nodes[id], n.hasReady else { return }
        let rd = n.ready()
        if let snap = rd.snapshot {
            try disks[id]!.applySnapshot(snap)
            installed[id, default: []].append(snap)
        }
        if let hs = rd.hardState { disks[id]!.setHardState(hs) }
        try disks[id]!.append(rd.entries)
        for m in rd.immediateMessages + rd.messages {
            sent.append(m)
            if let t = transform(m), !drop(t) {
                inFlight.append(t)
            } else if m.type == .snapshot {
                n.reportSnapshot(to: m.to, failed: true)
            }
        }
        applied[id, default: []].append(contentsOf: rd.committedEntries)
        for e in rd.committedEntries where e.type == .confChange {
            n.applyConfChange(try ConfChange(decoding: e.data))
        }
        readStates[id, default: []].append(contentsOf: rd.readStates)
        n.advance()
        nodes[id] = n
    }

    mutating func handleAllReadies() throws {
        var again = true
        while again {
            again = false
            for id in nodes.keys.sorted() where nodes[id]!.hasReady {
                try handleReady(id); again = true
            }
        }
    }

    /// Delivers messages until the cluster is quiet.
    mutating func stabilize(maxRounds: Int = 10_000) throws {
        var rounds = 0
        try handleAllReadies()
        while !inFlight.isEmpty && rounds < maxRounds {
            let m = inFlight.removeFirst()
            nodes[m.to]?.step(m)
            // The transport reports the outcome of a snapshot send.
            if m.type == .snapshot {
                let failed = nodes[m.to] == nil
                nodes[m.from]?.reportSnapshot(to: m.to, failed: failed)
            }
            try handleAllReadies()
            rounds += 1
        }
    }

    mutating func tick(_ id: NodeID, times: Int = 1) throws {
        for _ in 0..<times { nodes[id]!.tick(); try handleAllReadies() }
    }

    /// Ticks `id` until it starts a (pre-)campaign, then runs the cluster to quiet.
    mutating func elect(_ id: NodeID) throws {
        var guardCount = 0
        while nodes[id]!.role == .follower && guardCount < 1000 {
            nodes[id]!.tick(); guardCount += 1
        }
        try stabilize()
    }

    mutating func propose(_ id: NodeID, _ data: [UInt8]) throws {
        try nodes[id]!.propose(data)
    }

    func log(_ id: NodeID) -> [Entry] {
        let n = nodes[id]!
        return (1...max(n.lastIndex, 1)).compactMap { n.entry(at: $0) }
    }
}

func storage(terms: [UInt64], hardTerm: UInt64, vote: NodeID = noNode, commit: UInt64 = 0) throws -> MemoryStorage {
    var s = MemoryStorage()
    try s.append(terms.enumerated().map { Entry(term: $0.element, index: UInt64($0.offset + 1), data: [UInt8($0.offset)]) })
    s.setHardState(HardState(term: hardTerm, vote: vote, commit: commit))
    return s
}
