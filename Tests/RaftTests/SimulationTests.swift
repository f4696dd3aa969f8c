import Testing
import Raft

/// Seeded simulation runs. A failure prints the seed; replay one with
/// `RAFT_SIM_SEED=<seed> swift test --filter SimulationTests`.
@Suite("Raft simulation")
struct SimulationTests {
    static func seeds(_ count: Int, base: UInt64) -> [UInt64] {
        (0..<UInt64(count)).map { base + $0 }
    }

    static func runSeeds(nodes: Int, count: Int, base: UInt64) throws -> (failures: [String], commits: Int, elections: Int) {
        var failures: [String] = []
        var commits = 0, elections = 0
        for seed in seeds(count, base: base) {
            var o = Simulator.Options()
            o.nodeCount = nodes
            var sim = try Simulator(seed: seed, options: o)
            try sim.run()
            if let f = sim.failure { failures.append("\(nodes) nodes, \(f)") }
            commits += sim.stats.committedEntries
            elections += sim.stats.elections
        }
        return (failures, commits, elections)
    }

    @Test("3-node clusters under loss, delay, reordering, duplication, partitions and crashes stay safe and live",
          arguments: [0, 1, 2, 3])
    func threeNodes(shard: Int) throws {
        let r = try Self.runSeeds(nodes: 3, count: 50, base: 1000 + UInt64(shard) * 50)
        for f in r.failures { Issue.record("\(f)") }
        #expect(r.failures.isEmpty)
        #expect(r.commits > 50 * 20)     // the runs made real progress
        #expect(r.elections >= 50)
    }

    @Test("5-node clusters under loss, delay, reordering, duplication, partitions and crashes stay safe and live",
          arguments: [0, 1, 2, 3])
    func fiveNodes(shard: Int) throws {
        let r = try Self.runSeeds(nodes: 5, count: 25, base: 5000 + UInt64(shard) * 25)
        for f in r.failures { Issue.record("\(f)") }
        #expect(r.failures.isEmpty)
        #expect(r.commits > 25 * 20)
        #expect(r.elections >= 25)
    }
}
