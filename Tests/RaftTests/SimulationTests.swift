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

/// Seeded simulation runs: 1,020 histories by default (280 one-node, 500 three-node, 240
/// five-node). A failure prints the seed and a replay command:
/// `RAFT_SIM_SEED=<seed> RAFT_SIM_NODES=<1|3|5> swift test --filter SimulationTests.replay`;
/// run more with `RAFT_SIM_SEEDS=<count per shard>` (8 shards; e.g. 1000 runs ~8,000 histories).
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
        // Snapshot frequency varies so that followers often need a snapshot.
        o.snapshotEvery = 10 + Int(seed % 5) * 10
        // A quarter of the seeds run without check-quorum (a partitioned leader then keeps its
        // role until it hears a higher term: reads must still be confirmed by a quorum), half
        // of those also without pre-vote.
        if seed % 4 == 2 {
            o.checkQuorum = false
            if seed % 8 == 6 { o.preVote = false }
            // Long partitions, few crashes: a deposed leader keeps serving clients for a while.
            o.healPerMille = 1
            o.partitionPerMille = 3
            o.crashPerMille = 1
        }
    }

    /// Seeds per shard: `count`, or RAFT_SIM_SEEDS when set.
    static func perShard(_ count: Int) -> Int { env("RAFT_SIM_SEEDS").map(Int.init) ?? count }

    static func options(nodes: Int, seed: UInt64) -> Simulator.Options {
        var o = Simulator.Options()
        o.nodeCount = nodes
        vary(&o, seed: seed)
        return o
    }

    @Test("replay: RAFT_SIM_SEED runs one seed (skipped when unset)",
          .enabled(if: env("RAFT_SIM_SEED") != nil))
    func replay() throws {
        let seed = env("RAFT_SIM_SEED")!
        var sim = try Simulator(seed: seed, options: Self.options(nodes: Int(env("RAFT_SIM_NODES") ?? 3), seed: seed))
        try sim.run()
        print("replay stats: \(sim.stats), \(sim.history.count) client operations")
        if let f = sim.failure { Issue.record("\(f)") }
        #expect(sim.failure == nil)
    }

    struct Totals {
        var failures: [String] = []
        var commits = 0, elections = 0, snapshotsMade = 0, snapshotsInstalled = 0
        var confChanges = 0, transfers = 0, opsOK = 0, opsUnknown = 0, reads = 0, crashes = 0
        var inconclusive = 0
    }

    /// Runs shard `shard` of `count` seeds starting at `start` (shards never overlap).
    static func runSeeds(nodes: Int, count defaultCount: Int, start: UInt64, shard: Int = 0) throws -> Totals {
        let count = perShard(defaultCount)
        let base = start + UInt64(shard * count)
        var t = Totals()
        for seed in base..<(base + UInt64(count)) {
            var sim = try Simulator(seed: seed, options: options(nodes: nodes, seed: seed))
            try sim.run()
            if let f = sim.failure {
                t.failures.append("\(nodes) nodes, \(f)\n-- replay: RAFT_SIM_SEED=\(seed) RAFT_SIM_NODES=\(nodes) swift test --filter SimulationTests.replay")
            }
            let s = sim.stats
            t.commits += s.committedEntries; t.elections += s.elections
            t.snapshotsMade += s.snapshotsMade; t.snapshotsInstalled += s.snapshotsInstalled
            t.confChanges += s.confChanges; t.transfers += s.transfers
            t.opsOK += s.opsOK; t.opsUnknown += s.opsUnknown; t.reads += s.reads; t.crashes += s.crashes
            t.inconclusive += s.inconclusiveKeys
        }
        print("raft sim: \(nodes) nodes, seeds \(base)..<\(base + UInt64(count)): \(t.commits) entries committed, \(t.elections) leaders, \(t.crashes) crashes, \(t.snapshotsMade) snapshots made / \(t.snapshotsInstalled) installed, \(t.confChanges) conf changes, \(t.transfers) transfers, client ops \(t.opsOK) ok (\(t.reads) reads) / \(t.opsUnknown) unknown, \(t.inconclusive) keys inconclusive, \(t.failures.count) failures")
        return t
    }

    static func expectHealthy(_ t: Totals, count: Int) {
        for f in t.failures { Issue.record("\(f)") }
        #expect(t.failures.isEmpty)
        // The runs made real progress and exercised every feature.
        #expect(t.commits > perShard(count) * 20)
        #expect(t.elections >= perShard(count))
        #expect(t.snapshotsInstalled > 0)
        #expect(t.snapshotsMade > perShard(count))
        #expect(t.confChanges > 0)
        #expect(t.transfers > 0)
        #expect(t.reads > perShard(count) * 5)
        #expect(t.opsOK > perShard(count) * 10)
        // The linearizability search finished for (nearly) every key of every history.
        #expect(t.inconclusive * 100 <= perShard(count))
    }

    @Test("1-node clusters (growing to 2 with learners and removals) stay safe, live and linearizable",
          arguments: [0, 1, 2, 3])
    func oneNode(shard: Int) throws {
        Self.expectHealthy(try Self.runSeeds(nodes: 1, count: 70, start: 100, shard: shard), count: 70)
    }

    @Test("3-node clusters under loss, delay, reordering, duplication, partitions, crashes, membership changes and transfers stay safe, live and linearizable",
          arguments: [0, 1, 2, 3])
    func threeNodes(shard: Int) throws {
        Self.expectHealthy(try Self.runSeeds(nodes: 3, count: 125, start: 1_000_000, shard: shard), count: 125)
    }

    @Test("5-node clusters under loss, delay, reordering, duplication, partitions, crashes, membership changes and transfers stay safe, live and linearizable",
          arguments: [0, 1, 2, 3])
    func fiveNodes(shard: Int) throws {
        Self.expectHealthy(try Self.runSeeds(nodes: 5, count: 60, start: 5_000_000, shard: shard), count: 60)
    }
}
