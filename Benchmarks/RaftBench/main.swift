// raft-bench: proposals committed per CPU-second by a 3-node in-memory Raft cluster (no disk,
// no network: each node's "disk" is a MemoryStorage, messages are handed straight to the
// recipient's step), with 1, 16 and 256 proposals per Ready, plus heap allocations per
// committed entry (malloc & co. counted by the interposer in RaftBenchAlloc).
//
// Each round proposes B entries of 64 bytes on the leader, then runs every node's Ready loop
// (persist, send, apply, advance) until the cluster is quiet, i.e. the B entries are committed
// and applied on all three nodes. CPU time (user + system, getrusage) covers all three nodes
// and the host loop. Usage: raft-bench [seconds-per-case, default 3]
import Raft
import RaftBenchAlloc
#if canImport(Glibc)
import Glibc
#endif

func cpuSeconds() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
}

struct Cluster {
    var nodes: [RaftNode]
    var disks: [MemoryStorage]
    var queue: [Message] = []
    var applied = 0        // entries with data applied on the leader

    init() throws {
        let ids: [NodeID] = [1, 2, 3]
        disks = ids.map { _ in MemoryStorage() }
        nodes = try ids.map { id in
            var c = Config(id: id, peers: ids, seed: 42)
            c.maxInflightMsgs = 256
            return try RaftNode(config: c, storage: MemoryStorage())
        }
        while nodes[0].role != .leader {
            nodes[0].tick()
            try quiesce()
        }
    }

    mutating func quiesce() throws {
        var busy = true
        while busy {
            busy = false
            for k in nodes.indices where nodes[k].hasReady {
                busy = true
                let rd = nodes[k].ready()
                queue.append(contentsOf: rd.immediateMessages)
                if let hs = rd.hardState { disks[k].setHardState(hs) }
                try disks[k].append(rd.entries)
                queue.append(contentsOf: rd.messages)
                if k == 0 { for e in rd.committedEntries where !e.data.isEmpty { applied += 1 } }
                nodes[k].advance()
            }
            if !queue.isEmpty {
                busy = true
                let batch = queue
                queue.removeAll(keepingCapacity: true)
                for m in batch { nodes[Int(m.to) - 1].step(m) }
            }
        }
    }
}

let secondsPerCase = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 3 : 3
let payload = [UInt8](repeating: 0x5A, count: 64)
print("raft-bench: 3 nodes in memory, 64-byte proposals, \(secondsPerCase) s CPU per case")
print("batch  committed  cpu_s   proposals/cpu_s  allocs/entry")
for batch in [1, 16, 256] {
    var c = try Cluster()
    // Warm up (capacity growth, first-round effects).
    for _ in 0..<max(1, 2000 / batch) {
        for _ in 0..<batch { try c.nodes[0].propose(payload) }
        try c.quiesce()
    }
    let startApplied = c.applied
    let startAllocs = raft_bench_alloc_count()
    let t0 = cpuSeconds()
    var t = t0
    while t - t0 < secondsPerCase {
        for _ in 0..<20 {
            for _ in 0..<batch { try c.nodes[0].propose(payload) }
            try c.quiesce()
        }
        t = cpuSeconds()
    }
    let committed = c.applied - startApplied
    let allocs = raft_bench_alloc_count() - startAllocs
    let rate = Double(committed) / (t - t0)
    let line = [String(batch).padding(5), String(committed).padding(9), String(format2(t - t0)).padding(6),
                String(Int(rate)).padding(15), format2(Double(allocs) / Double(committed))]
    print(line.joined(separator: "  "))
}

func format2(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < 2 { s += String(repeating: "0", count: 2 - decimals) }
    }
    return s
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
