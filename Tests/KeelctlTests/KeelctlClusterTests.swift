import Foundation
import KeelTestSupport
import Testing

/// The verbs that need several members (member add/update/promote/remove, --cluster, move-leader, a dead
/// endpoint among live ones, a watch whose member dies), keelctl against etcdctl 3.4 on a 3-member etcd 3.4
/// cluster and on a 3-member keel cluster (LocalCluster).
@Suite struct KeelctlClusterTests {
    /// etcdctl dials each member's client URL for Status/Defragment with ":authority: http://127.0.0.1:port";
    /// keel (nghttp2's header validation) resets that stream with PROTOCOL_ERROR, etcd accepts it.
    static let authorityBug = "keel resets streams whose :authority is a URL (etcdctl's per-endpoint dial of http:// client URLs)"

    static let steps: [Step] = [
        Step(["member", "list"], expect: "started", sorted: true),
        Step(["member", "list", "-w", "table"], expect: "IS LEARNER", sorted: true),
        Step(["member", "add", "new1", "--peer-urls", "{U1}", "--learner"], expect: "ETCD_INITIAL_CLUSTER_STATE=\"existing\"",
             sorted: true),
        Step(["member", "list"], expect: "unstarted", sorted: true),
        Step(["member", "promote", "{M1}"], expect: "etcdserver: can only promote a learner member which is in sync with leader"),
        Step(["member", "update", "{M1}", "--peer-urls", "{U2}"], expect: "updated in cluster"),
        // A second member while an unstarted learner is there: etcd 3.4 refuses ("unhealthy cluster").
        Step(["member", "add", "new2", "--peer-urls", "{U2}", "--learner"], expect: "Error: etcdserver: "),
        Step(["member", "remove", "{M1}"], expect: "removed from cluster"),
        Step(["member", "remove", "{M1}"], expect: "etcdserver:"),
        Step(["endpoint", "status", "--cluster"], sorted: true, keelKnownIssue: authorityBug),
        Step(["endpoint", "status", "--cluster", "-w", "json"], expect: "\"Endpoint\"", keelKnownIssue: authorityBug),
        Step(["endpoint", "health", "--cluster"], expect: "is healthy", sorted: true),
        Step(["endpoint", "health", "--cluster", "-w", "table"], expect: "true", sorted: true),
        Step(["defrag", "--cluster"], expect: "Finished defragmenting", sorted: true, keelKnownIssue: authorityBug),
        Step(["--endpoints", "{DEAD},{EP0}", "put", "t/f", "v"], expect: "OK"),
        Step(["--endpoints", "{DEAD},{EP1}", "get", "t/f"], expect: "t/f\nv\n"),
    ]

    @Test(arguments: [ClusterServer.etcd, .keel])
    func membershipMatchesEtcdctl(on server: ClusterServer) async throws {
        let cluster = try await LocalCluster.start(server, members: 3)
        let dir = try makeTempDirectory(prefix: "keelctl-cluster")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let eps = cluster.endpoints
            let runner = try ScriptRunner(endpoint: eps.joined(separator: ","), dir: dir)
            let ports = try FreePorts.allocate(4)
            var vars: [Tool: [String: String]] = [:]
            for (i, tool) in Tool.allCases.enumerated() {
                vars[tool] = ["U1": "http://127.0.0.1:\(ports[2 * i])", "U2": "http://127.0.0.1:\(ports[2 * i + 1])",
                              "EP0": eps[0], "EP1": eps[1]]
            }
            try await Self.waitUntilMembershipChangesAllowed(runner, peerURL: "http://127.0.0.1:\(try FreePorts.allocate())")
            try await runner.compare(Self.steps, label: "\(server) cluster", vars: vars)
            try await Self.moveLeader(runner, eps)
            try await Self.watchFailover(cluster, runner, eps)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// etcd refuses member add with "etcdserver: unhealthy cluster" until every member has been connected for
    /// a few seconds after start: add and remove a probe learner until that works (bounded).
    static func waitUntilMembershipChangesAllowed(_ runner: ScriptRunner, peerURL: String) async throws {
        for _ in 0..<60 {
            let r = try await runner.raw(.etcdctl, ["member", "add", "probe", "--peer-urls", peerURL, "--learner"])
            if r.status.succeeded, let id = r.stdout.split(separator: " ").dropFirst().first {
                let rm = try await runner.raw(.etcdctl, ["member", "remove", String(id)])
                #expect(rm.status.succeeded, "\(rm)")
                return
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        Issue.record("member add kept failing on the new cluster")
    }

    /// move-leader: both tools hand leadership to a follower and print etcdctl's line; the cluster agrees.
    static func moveLeader(_ runner: ScriptRunner, _ eps: [String]) async throws {
        for tool in Tool.allCases {
            let (leader, follower) = try await leaderAndFollower(runner, eps)
            let r = try await runner.raw(tool, ["move-leader", follower])
            #expect(r.status.succeeded && r.stdout == "Leadership transferred from \(leader) to \(follower)\n", "\(tool): \(r)")
            var now: String?
            for _ in 0..<300 {
                now = try? await leaderAndFollower(runner, eps).0
                if now == follower { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(now == follower, "\(tool): leader after move-leader is \(now ?? "none"), not \(follower)")
        }
        // Only followers given: etcdctl's "no leader endpoint given at [...]" (exit 128).
        let (leader, _) = try await leaderAndFollower(runner, eps)
        var followers: [String] = []
        for ep in eps {
            let s = try await runner.raw(.etcdctl, ["--endpoints", ep, "endpoint", "status"])
            if !s.stdout.contains(", \(leader), ") { followers.append(ep) }
        }
        let args = ["--endpoints", followers.joined(separator: ","), "move-leader", leader]
        let k = try await runner.raw(.keelctl, args)
        let e = try await runner.raw(.etcdctl, args)
        #expect(k.status == e.status && k.stderr.hasPrefix("Error: no leader endpoint given at"), "\(k) vs \(e)")
    }

    /// The member serving keelctl's watch (the first endpoint) is killed: the watch goes on on the next
    /// endpoint from the revision after the last event it printed, without a gap or a duplicate (etcdctl,
    /// watching the same way, prints the same).
    static func watchFailover(_ cluster: LocalCluster, _ runner: ScriptRunner, _ eps: [String]) async throws {
        let args = ["--endpoints", "\(eps[0]),\(eps[1])", "watch", "t/wf", "--prefix"]
        let k = try ChildProcess.spawn(runner.keelctl, args)
        let e = try ChildProcess.spawn(RepoPaths.etcdctl, args, extraEnvironment: ["ETCDCTL_API": "3"])
        defer { k.kill(); e.kill() }
        func put(_ value: String) async throws {
            for _ in 0..<50 {
                if try await runner.raw(.etcdctl, ["--endpoints", eps[2], "put", "t/wf", value]).status.succeeded { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            Issue.record("put \(value) kept failing")
        }
        // Both watchers are up once they print the first value (put again until they do: no start-up race).
        var attempts = 0
        while attempts < 100, !(k.stdout.contains("v0") && e.stdout.contains("v0")) {
            if attempts % 10 == 0 { try await put("v0") }
            attempts += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(k.stdout.contains("v0") && e.stdout.contains("v0"), "watchers never started: \(k.stderr) \(e.stderr)")
        for i in 1...3 { try await put("v\(i)") }
        #expect(await k.waitForOutput(containing: "v3\n", timeout: .seconds(60)))
        #expect(await e.waitForOutput(containing: "v3\n", timeout: .seconds(60)))
        await cluster.kill(0)
        for i in 4...6 { try await put("v\(i)") }
        #expect(await k.waitForOutput(containing: "v6\n", timeout: .seconds(60)), "keelctl after the kill: \(k.stdout) \(k.stderr)")
        #expect(await e.waitForOutput(containing: "v6\n", timeout: .seconds(60)), "etcdctl after the kill: \(e.stdout)")
        // Everything after the first v0, once, in order.
        func tail(_ s: String) -> String {
            guard let r = s.range(of: "v1\n") else { return s }
            return String(s[s.index(r.lowerBound, offsetBy: -("PUT\nt/wf\n".count))...])
        }
        let expected = (1...6).map { "PUT\nt/wf\nv\($0)\n" }.joined()
        #expect(tail(k.stdout) == expected, "keelctl: \(k.stdout.debugDescription)")
        #expect(tail(e.stdout) == expected, "etcdctl: \(e.stdout.debugDescription)")
    }

    /// Hex IDs of the leader and of one follower (from `endpoint status`: "ep, id, version, size, isLeader, ...").
    static func leaderAndFollower(_ runner: ScriptRunner, _ eps: [String]) async throws -> (String, String) {
        let r = try await runner.raw(.etcdctl, ["endpoint", "status"])
        var leader: String?, follower: String?
        for line in r.stdout.split(separator: "\n") {
            let f = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count > 4 else { continue }
            if f[4] == "true" { leader = f[1] } else { follower = f[1] }
        }
        guard let leader, let follower else { throw ChildProcessError("no leader/follower in \(r)") }
        return (leader, follower)
    }
}
