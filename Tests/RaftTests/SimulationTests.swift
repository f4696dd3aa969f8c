import Testing
import Raft
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private func env(_ name: String) -> UInt64? {
    guard let p = getenv(name) else { return nil }
    return UInt64(String(cString: p))
}

/// Seeded simulation runs. A failure prints the seed; replay one with
/// `RAFT_SIM_SEED=<seed> RAFT_SIM_NODES=<3|5> swift test --filter SimulationTests`;
/// run more seeds with `RAFT_SIM_SEEDS=<count per shard>`.
@Suite("Raft simulation")
struct SimulationTests {
    /// Odd seeds send one entry per append with more crashes, which makes the Figure 8
    /// interleavings of the Raft paper (old-term entries on a majority) far more likely.
    static func vary(_ o: inout Simulator.Options, seed: UInt64) {
        if seed % 2 == 1 {
            o.maxSizePerMsg = 1
            o.crashPerMille = 8
            o.restartPerMille = 30
        }
    }

    /// Seeds per shard: `count`, or RAFT_SIM_SEEDS when set.
    static func perShard(_ count: Int) -> Int { env("RAFT_SIM_SEEDS").map(Int.init) ?? count }

    static func seeds(_ count: Int, base: UInt64) -> [UInt64] {
        (0..<UInt64(count)).map { base + $0 }
    }

    @Test("replay: RAFT_SIM_SEED runs one seed (skipped when unset)",
          .enabled(if: env("RAFT_SIM_SEED") != nil))
    func replay() throws {
        var o = Simulator.Options()
        o.nodeCount = Int(env("RAFT_SIM_NODES") ?? 3)
        Self.vary(&o, seed: env("RAFT_SIM_SEED")!)
        var sim = try Simulator(seed: env("RAFT_SIM_SEED")!, options: o)
        try sim.run()
        print("replay stats: \(sim.stats)")
        if let f = sim.failure { Issue.record("\(f)") }
        #expect(sim.failure == nil)
    }

    /// Runs shard `shard` of `count` seeds starting at `start` (shards never overlap).
    static func runSeeds(nodes: Int, count defaultCount: Int, start: UInt64, shard: Int = 0) throws
        -> (failures: [String], commits: Int, elections: Int) {
        let count = perShard(defaultCount)
        let base = start + UInt64(shard * count)
        var failures: [String] = []
        var commits = 0, elections = 0
        for seed in seeds(count, base: base) {
            var o = Simulator.Options()
            o.nodeCount = nodes
            Self.vary(&o, seed: seed)
            var sim = try Simulator(seed: seed, options: o)
            try sim.run()
            if let f = sim.failure {
                failures.append("\(nodes) nodes, \(f) -- replay: RAFT_SIM_SEED=\(seed) RAFT_SIM_NODES=\(nodes) swift test --filter SimulationTests.replay")
            }
            commits += sim.stats.committedEntries
            elections += sim.stats.elections
        }
        print("raft sim: \(nodes) nodes, seeds \(base)..<\(base + UInt64(count)): \(commits) entries committed, \(elections) leaders elected, \(failures.count) failures")
        return (failures, commits, elections)
    }

    @Test("1-node clusters under crashes and restarts stay safe and live")
    func oneNode() throws {
        let r = try Self.runSeeds(nodes: 1, count: 60, start: 100)
        for f in r.failures { Issue.record("\(f)") }
        #expect(r.failures.isEmpty)
        #expect(r.commits > Self.perShard(60) * 20)
        #expect(r.elections >= Self.perShard(60))
    }

    @Test("3-node clusters under loss, delay, reordering, duplication, partitions and crashes stay safe and live",
          arguments: [0, 1, 2, 3])
    func threeNodes(shard: Int) throws {
        let r = try Self.runSeeds(nodes: 3, count: 125, start: 1_000_000, shard: shard)
        for f in r.failures { Issue.record("\(f)") }
        #expect(r.failures.isEmpty)
        #expect(r.commits > Self.perShard(125) * 20)     // the runs made real progress
        #expect(r.elections >= Self.perShard(125))
    }

    @Test("5-node clusters under loss, delay, reordering, duplication, partitions and crashes stay safe and live",
          arguments: [0, 1, 2, 3])
    func fiveNodes(shard: Int) throws {
        let r = try Self.runSeeds(nodes: 5, count: 60, start: 5_000_000, shard: shard)
        for f in r.failures { Issue.record("\(f)") }
        #expect(r.failures.isEmpty)
        #expect(r.commits > Self.perShard(60) * 20)
        #expect(r.elections >= Self.perShard(60))
    }
}
