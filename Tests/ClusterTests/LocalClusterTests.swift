import Foundation
import KeelTestSupport
import Testing

/// The harness itself, proven on a 3-member etcd 3.4: it forms, the peer proxies carry all peer
/// traffic and can isolate a member (the others elect a leader, the isolated one cannot serve a
/// linearizable read), the isolated one rejoins after healing, kill -9 / restart on the same data
/// dir and SIGSTOP / SIGCONT work, and everything is gone afterwards.
@Suite("LocalCluster harness", .serialized)
struct LocalClusterTests {
    @Test("3-member etcd 3.4 through peer proxies: isolate, heal, kill -9, restart, pause", .timeLimit(.minutes(5)),
          .enabled(if: ClusterServer.etcd.isAvailable, "etcd 3.4 missing: run Tests/install-deps.sh"))
    func etcdThroughProxies() async throws {
        let options = LocalCluster.Options(heartbeatMillis: 50, electionMillis: 500, proxiedPeers: true)
        var dirs: [String] = []
        var ports: [Int] = []
        try await LocalCluster.with(.etcd, members: 3, options: options) { c in
            let slots = c.slots
            dirs = slots.map(\.dataDir)
            ports = slots.flatMap { [$0.clientPort, $0.peerPort, $0.advertisedPeerPort] }
            #expect(slots.allSatisfy { $0.advertisedPeerPort != $0.peerPort })
            // Every member was reached through its proxy.
            #expect(await c.proxiedConnectionCounts().allSatisfy { $0 > 0 })

            let eps = c.endpoints
            let put = try await Etcdctl.run(["put", "k1", "v1"], endpoints: [eps[0]])
            #expect(put.status.succeeded)
            let get = try await Etcdctl.run(["get", "k1", "--print-value-only"], endpoints: [eps[2]])
            #expect(get.stdout == "v1\n")

            // Isolate the leader: the other two elect one of themselves; the isolated member cannot
            // serve a linearizable read; writes go on through the majority.
            let leader = try await c.waitForLeader()
            try await c.isolate(leader)
            let others = Set(0..<3).subtracting([leader])
            let newLeader = try await c.waitForLeader(among: others)
            #expect(others.contains(newLeader))
            let cut = try await Etcdctl.run(["get", "k1", "--command-timeout=2s"], endpoints: [eps[leader]])
            #expect(!cut.status.succeeded)
            let during = try await Etcdctl.run(["put", "k2", "during-partition"], endpoints: [eps[newLeader]])
            #expect(during.status.succeeded)

            // Heal: the isolated member catches up and serves the write it missed.
            try await c.healAll()
            try await c.waitServing(leader)
            let caught = try await Etcdctl.run(["get", "k2", "--print-value-only"], endpoints: [eps[leader]])
            #expect(caught.stdout == "during-partition\n")

            // kill -9 a follower, write, restart it on the same data dir: it has the write.
            let l2 = try await c.waitForLeader()
            let follower = (0..<3).first { $0 != l2 }!
            await c.kill(follower)
            #expect(await !c.isRunning(follower))
            let whileDown = try await Etcdctl.run(["put", "k3", "while-down"], endpoints: [eps[l2]])
            #expect(whileDown.status.succeeded)
            try await c.restart(follower)
            let back = try await Etcdctl.run(["get", "k3", "--print-value-only", "--consistency=s"],
                                             endpoints: [eps[follower]])
            #expect(back.stdout == "while-down\n")

            // SIGSTOP a member: still a running process, no status; SIGCONT: serves again.
            await c.pause(follower)
            #expect(await c.isRunning(follower))
            #expect(await c.status(follower) == nil)
            await c.resume(follower)
            try await c.waitServing(follower)

            // Revisions agree once all members applied everything (polled: followers apply a bit later).
            var revisions: Set<Int64?> = []
            for _ in 0..<100 {
                revisions = []
                for i in 0..<3 { revisions.insert(await c.status(i)?.revision) }
                if revisions.count == 1 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(revisions.count == 1 && !revisions.contains(nil))
        }
        #expect(!dirs.isEmpty && dirs.allSatisfy { !FileManager.default.fileExists(atPath: $0) })
        #expect(!ports.isEmpty && ports.allSatisfy { !FreePorts.isListening($0) })
    }

    @Test("member add: a new slot started with what etcdctl member add printed joins the etcd 3.4 cluster",
          .timeLimit(.minutes(5)),
          .enabled(if: ClusterServer.etcd.isAvailable, "etcd 3.4 missing: run Tests/install-deps.sh"))
    func etcdMemberAdd() async throws {
        try await LocalCluster.with(.etcd, members: 3, options: .init(heartbeatMillis: 50, electionMillis: 500)) { c in
            let eps = c.endpoints
            let i = try await c.addSlot()
            let slot = c.slots[i]
            // etcd refuses a member add ("unhealthy cluster") until its peers have been connected for 5 s.
            var add = CommandResult(status: .exited(1), stdout: "", stderr: "")
            for _ in 0..<60 {
                add = try await Etcdctl.run(["member", "add", slot.name, "--peer-urls=\(slot.peerURL)"], endpoints: eps)
                if add.status.succeeded || !add.stderr.contains("unhealthy cluster") { break }
                try await Task.sleep(for: .seconds(1))
            }
            #expect(add.status.succeeded, "\(add)")
            // etcdctl prints ETCD_INITIAL_CLUSTER="m0=...,m3=..." for the new member.
            let line = add.stdout.split(separator: "\n").first { $0.hasPrefix("ETCD_INITIAL_CLUSTER=") }
            let initial = try #require(line).dropFirst("ETCD_INITIAL_CLUSTER=".count).trimmingCharacters(in: ["\""])
            #expect(initial.contains("\(slot.name)=\(slot.peerURL)"))
            try await c.startAdded(i, initialCluster: initial)
            try await c.waitServing(i)
            let put = try await Etcdctl.run(["put", "added", "yes"], endpoints: [slot.endpoint])
            #expect(put.status.succeeded)
            // etcd 3.4 answers MemberList from the member's own applied state, and the new member publishes its
            // name and client URLs through Raft after it starts: m0 can list it as unstarted for a moment. Polled.
            let started = ", started, \(slot.name), \(slot.peerURL), \(slot.clientURL)"
            var list = CommandResult(status: .exited(1), stdout: "", stderr: "")
            for _ in 0..<50 {
                list = try await Etcdctl.run(["member", "list"], endpoints: [eps[0]])
                if list.stdout.contains(started) { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(list.stdout.split(separator: "\n").count == 4, "\(list)")
            #expect(list.stdout.contains(started), "\(list)")
        }
    }

    @Test("a data dir the caller chose starts empty: a cluster never boots on what an earlier one left there",
          .timeLimit(.minutes(3)),
          .enabled(if: ClusterServer.etcd.isAvailable, "etcd 3.4 missing: run Tests/install-deps.sh"))
    func callerDataDirStartsEmpty() async throws {
        // As a start attempt that failed leaves it for the next attempt (same dir, new token and ports).
        let dir = try makeTempDirectory(prefix: "keel-callerdir")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = LocalCluster.Options(heartbeatMillis: 50, electionMillis: 500)
        options.dataDirs = [0: dir + "/data"]
        try await LocalCluster.with(.etcd, members: 1, options: options) { c in
            let put = try await Etcdctl.run(["put", "left-behind", "1"], endpoints: c.endpoints)
            #expect(put.status.succeeded, "\(put)")
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/data/member"), "the first cluster's data stays")
        try await LocalCluster.with(.etcd, members: 1, options: options) { c in
            let get = try await Etcdctl.run(["get", "left-behind", "--print-value-only"], endpoints: c.endpoints)
            #expect(get.status.succeeded && get.stdout.isEmpty, "\(get)")
        }
    }
}
