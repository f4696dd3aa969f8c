// The nemesis of the fault tests: injects one fault at a time into a LocalCluster, holds it, heals
// it, and logs what it did with times (History clock) so a failing history can be read against it.
import Foundation
import KeelTestSupport

enum Fault: String, Sendable, CaseIterable, CustomStringConvertible {
    /// SIGKILL the leader, restart it on its data dir.
    case killLeader = "kill-leader"
    /// SIGKILL a follower, restart it.
    case killFollower = "kill-follower"
    /// SIGSTOP a member (any, possibly the leader), then SIGCONT.
    case pause
    /// Cut every peer link of a member (the leader or a follower) through the proxies, then heal.
    case partition
    /// Cut only the connections the leader opens to one follower and that follower's to the leader
    /// (the third member still reaches both), then heal.
    case cutLeaderLink = "cut-leader-link"

    var description: String { rawValue }
}

struct Nemesis {
    let cluster: LocalCluster
    let clock: HistoryClock
    var rng: SplitMix64
    /// How long a fault stays before it is healed, and the quiet time after healing.
    var hold: Duration = .seconds(2)
    var quiet: Duration = .seconds(1)
    private(set) var log: [String] = []

    init(cluster: LocalCluster, clock: HistoryClock, seed: UInt64) {
        self.cluster = cluster
        self.clock = clock
        self.rng = SplitMix64(seed: seed)
    }

    private mutating func note(_ s: String) {
        let line = "t=\(String(format: "%.3f", Double(clock.now) / 1e9))s \(s)"
        log.append(line)
        print("[nemesis] \(line)")
    }

    /// Injects `fault`, holds it, heals it; throws if the cluster does not come back.
    mutating func run(_ fault: Fault) async throws {
        let n = cluster.slots.count
        let leader = try await cluster.waitForLeader(timeout: .seconds(60))
        switch fault {
        case .killLeader:
            note("kill -9 leader m\(leader)")
            await cluster.kill(leader)
            try await Task.sleep(for: hold)
            note("restart m\(leader)")
            try await cluster.restart(leader)
        case .killFollower:
            let f = (leader + 1 + rng.below(n - 1)) % n
            note("kill -9 follower m\(f)")
            await cluster.kill(f)
            try await Task.sleep(for: hold)
            note("restart m\(f)")
            try await cluster.restart(f)
        case .pause:
            let v = rng.below(n)
            note("SIGSTOP m\(v)\(v == leader ? " (leader)" : "")")
            await cluster.pause(v)
            try await Task.sleep(for: hold)
            note("SIGCONT m\(v)")
            await cluster.resume(v)
            try await cluster.waitServing(v)
        case .cutLeaderLink:
            let f = (leader + 1 + rng.below(n - 1)) % n
            note("cut the links between leader m\(leader) and m\(f)")
            try await cluster.cut(from: leader, to: f)
            try await cluster.cut(from: f, to: leader)
            try await Task.sleep(for: hold)
            note("heal m\(leader) <-> m\(f)")
            try await cluster.healAll()
            try await cluster.waitServing(f)
        case .partition:
            let v = rng.below(2) == 0 ? leader : (leader + 1 + rng.below(n - 1)) % n
            note("isolate m\(v)\(v == leader ? " (leader)" : "") from its peers")
            try await cluster.isolate(v)
            try await Task.sleep(for: hold)
            note("heal m\(v)")
            try await cluster.healAll()
            try await cluster.waitServing(v)
        }
        note("healed \(fault)")
        try await Task.sleep(for: quiet)
    }

    /// Brings everything back whatever happened: SIGCONT, heal every link, restart members that are down.
    mutating func healEverything() async throws {
        let n = cluster.slots.count
        for i in 0..<n where await cluster.isPaused(i) { await cluster.resume(i) }
        try? await cluster.healAll()
        for i in 0..<n where await !cluster.isRunning(i) {
            note("restart m\(i) (left down)")
            try await cluster.restart(i, wait: false)
        }
        for i in 0..<n { try await cluster.waitServing(i) }
    }
}
