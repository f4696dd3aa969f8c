import Foundation
import KeelTestSupport
import Testing

/// Membership changes on a 3-member cluster with etcdctl: the same script runs against etcd 3.4
/// and keel and the (ID/port-normalised) outputs must match: learner add, the errors etcd gives
/// (too many learners, peer URL in use, promote a voter, unknown member, move-leader to a learner
/// or unknown member, promote a learner that is not in sync), remove. Then on keel: the added
/// learner starts with `--initial-cluster-state existing` and the flags `member add` printed,
/// catches up, is promoted, serves writes, and is removed (its process stops).
@Suite("keel cluster: membership", .serialized)
struct MembershipTests {
    static func ctl(_ args: [String], _ endpoints: [String]) async throws -> CommandResult {
        try await Etcdctl.run(args + ["--command-timeout=10s"], endpoints: endpoints, timeout: .seconds(60))
    }

    /// `etcdctl member add`, retried (bounded, ~30 s) while the cluster answers "unhealthy cluster"
    /// (etcd and keel refuse additions until every voter has been heard from recently, e.g. just
    /// after a member restarted).
    static func addMember(_ args: [String], _ endpoints: [String]) async throws -> CommandResult {
        var r = try await ctl(["member", "add"] + args, endpoints)
        for _ in 0..<150 where r.stderr.contains("unhealthy cluster") {
            try await Task.sleep(for: .milliseconds(200))
            r = try await ctl(["member", "add"] + args, endpoints)
        }
        return r
    }

    /// Polls (bounded, ~30 s) until member i's process has exited.
    static func waitUntilExited(_ c: LocalCluster, _ i: Int) async throws -> Bool {
        for _ in 0..<150 {
            if await !c.isRunning(i) { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    /// Replaces member/cluster IDs (16 hex digits) and ports with placeholders; sorts the
    /// ETCD_INITIAL_CLUSTER list (etcd answers members in map order).
    static func normalise(_ s: String, ports: [Int: String], names: [String: String] = [:]) -> String {
        var out: [String] = []
        for var line in s.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("{\"level\"") { continue }   // etcdctl's retry warnings
            for (port, name) in ports { line = line.replacingOccurrences(of: ":\(port)", with: ":<\(name)>") }
            for (name, role) in names {
                line = line.replacingOccurrences(of: ", \(name), ", with: ", \(role), ")
                    .replacingOccurrences(of: "\(name)=", with: "\(role)=")
            }
            // etcd prints IDs with %x (no leading zeros).
            line = line.replacingOccurrences(of: "\\b[0-9a-f]{10,16}\\b", with: "<id>", options: .regularExpression)
            // etcdctl prints "Member %16x ...": a shorter ID is padded with spaces.
            line = line.replacingOccurrences(of: " +<id>", with: " <id>", options: .regularExpression)
            if line.hasPrefix("ETCD_INITIAL_CLUSTER=") {
                let body = line.dropFirst("ETCD_INITIAL_CLUSTER=\"".count).dropLast()
                line = "ETCD_INITIAL_CLUSTER=" + body.split(separator: ",").sorted().joined(separator: ",")
            }
            out.append(line)
        }
        // Member lists come in ID order, and IDs differ between the two servers.
        let members = out.filter { $0.hasPrefix("<id>, ") }.sorted()
        var k = 0
        for i in out.indices where out[i].hasPrefix("<id>, ") { out[i] = members[k]; k += 1 }
        return out.joined(separator: "\n")
    }

    /// The script; returns one normalised transcript line group per step.
    static func script(_ c: LocalCluster) async throws -> [String] {
        let eps = await c.endpoints
        let slots = await c.slots
        // etcd 3.4 refuses member add ("unhealthy cluster") until the peers have been connected for
        // its health interval (5 s).
        try await Task.sleep(for: .seconds(6))
        let leader = try await c.waitForLeader()
        let follower = (leader + 1) % 3
        var ports: [Int: String] = [:]
        var names: [String: String] = [:]
        for (i, s) in slots.enumerated() {
            let role = i == leader ? "L" : i == follower ? "F" : "O"
            ports[s.clientPort] = "client\(role)"
            ports[s.advertisedPeerPort] = "peer\(role)"
            names[s.name] = "member\(role)"
        }
        let learnerSlot = try await c.addSlot(name: "learner")
        let learnerPeer = await c.slots[learnerSlot].peerURL
        ports[await c.slots[learnerSlot].advertisedPeerPort] = "peerNew"
        let spare = try FreePorts.allocate(1)[0]
        ports[spare] = "spare"
        var transcript: [String] = []
        func step(_ args: [String], _ ep: String) async throws -> CommandResult {
            let r = try await ctl(args, [ep])
            transcript.append("$ " + normalise(args.joined(separator: " "), ports: ports) + "\n"
                              + normalise(r.stdout + r.stderr, ports: ports, names: names) + "\nexit: \(r.status.succeeded)")
            return r
        }
        let voterID = try #require(await c.status(follower)).memberID
        let voterHex = String(UInt64(voterID)!, radix: 16)
        _ = try await step(["member", "add", "learner", "--peer-urls", learnerPeer, "--learner"], eps[follower])
        _ = try await step(["member", "add", "second", "--peer-urls", "http://127.0.0.1:\(spare)", "--learner"], eps[follower])
        _ = try await step(["member", "add", "dup", "--peer-urls", slots[leader].peerURL], eps[follower])
        _ = try await step(["member", "promote", voterHex], eps[follower])
        _ = try await step(["member", "remove", "1234"], eps[follower])
        _ = try await step(["member", "update", "1234", "--peer-urls", "http://127.0.0.1:\(spare)"], eps[follower])
        _ = try await step(["move-leader", "1234"], eps[leader])
        let list = try await ctl(["member", "list"], [eps[leader]])
        let learnerHex = try #require(list.stdout.split(separator: "\n").first { $0.contains(learnerPeer) }?
            .split(separator: ",").first.map(String.init), "\(list)\n\(transcript.joined(separator: "\n"))")
        _ = try await step(["move-leader", learnerHex], eps[leader])
        _ = try await step(["member", "promote", learnerHex], eps[leader])
        _ = try await step(["member", "list"], eps[leader])
        _ = try await step(["member", "remove", learnerHex], eps[follower])
        _ = try await step(["member", "remove", learnerHex], eps[follower])
        _ = try await step(["member", "list"], eps[leader])
        return transcript
    }

    @Test("membership errors and outputs as etcd 3.4's", .timeLimit(.minutes(5)),
          .enabled(if: ClusterServer.keel.isAvailable && ClusterServer.etcd.isAvailable, "keel or etcd 3.4 missing"))
    func sameAsEtcd() async throws {
        let etcd = try await LocalCluster.with(.etcd, members: 3) { try await Self.script($0) }
        let keel = try await LocalCluster.with(.keel, members: 3) { try await Self.script($0) }
        #expect(keel.count == etcd.count)
        for (k, e) in zip(keel, etcd) { #expect(k == e) }
    }

    @Test("learner joins with the flags member add printed, catches up, is promoted, serves; removal stops it",
          .timeLimit(.minutes(5)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func learnerJoinsPromotesAndIsRemoved() async throws {
        try await LocalCluster.with(.keel, members: 3) { c in
            let eps = await c.endpoints
            for i in 0..<50 { _ = try await Self.ctl(["put", "before\(i)", "\(i)"], [eps[i % 3]]) }
            let slot = try await c.addSlot(name: "m3")
            let peer = await c.slots[slot].peerURL
            let add = try await Self.addMember(["m3", "--peer-urls", peer, "--learner"], [eps[1]])
            #expect(add.stdout.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "\(add)")
            let initial = try #require(add.stdout.split(separator: "\n").first { $0.hasPrefix("ETCD_INITIAL_CLUSTER=") }
                .map { String($0.dropFirst("ETCD_INITIAL_CLUSTER=\"".count).dropLast()) })
            let id = try #require(add.stdout.split(separator: " ").dropFirst().first.map(String.init))
            try await c.startAdded(slot, initialCluster: initial)
            let newEP = await c.slots[slot].endpoint
            // The learner serves serializable reads once it caught up; linearizable ones and writes are refused.
            var caughtUp = false
            for _ in 0..<150 where !caughtUp {
                let r = try? await Self.ctl(["get", "before", "--prefix", "-w", "json", "--consistency=s"], [newEP])
                caughtUp = r?.stdout.contains("\"count\":50") ?? false
                if !caughtUp { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(caughtUp)
            let lin = try await Self.ctl(["get", "before0"], [newEP])
            #expect(lin.stderr.contains("etcdserver: rpc not supported for learner"), "\(lin)")
            let st = try await Self.ctl(["endpoint", "status"], [newEP])
            #expect(st.stdout.contains(", false, true, "), "\(st)")   // not leader, learner
            // Promote through a follower (it asks the leader whether the learner is in sync; retried
            // while the leader still finds it behind), then it is a voter that takes writes.
            let leader = try await c.waitForLeader(among: [0, 1, 2])
            var promoted = false
            for _ in 0..<50 where !promoted {
                let p = try await Self.ctl(["member", "promote", id], [eps[(leader + 1) % 3]])
                promoted = p.stdout.contains("promoted in cluster")
                if !promoted {
                    #expect(p.stderr.contains("in sync with leader"), "\(p)")
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            #expect(promoted)
            let w = try await Self.ctl(["put", "from-new", "1"], [newEP])
            #expect(w.status.succeeded, "\(w)")
            let list = try await Self.ctl(["member", "list"], [eps[2]])
            let newClientURL = await c.slots[slot].clientURL
            #expect(list.stdout.contains("\(id), started, m3, \(peer), \(newClientURL), false"), "\(list)")
            // Remove it: the others go on with three members; the removed process stops by itself.
            let rm = try await Self.ctl(["member", "remove", id], [eps[0]])
            #expect(rm.stdout.contains("removed from cluster"), "\(rm)")
            let exited = try await Self.waitUntilExited(c, slot)
            let removedLog = await c.log(slot)
            #expect(exited, "\(removedLog.suffix(2000))")
            let after = try await Self.ctl(["member", "list"], [eps[0]])
            #expect(after.stdout.split(separator: "\n").count == 3, "\(after)")
            let put = try await Self.ctl(["put", "after-remove", "1"], eps)
            #expect(put.status.succeeded, "\(put)")
        }
    }

    @Test("a member removed while it was down is refused by its peers when it comes back, and stops",
          .timeLimit(.minutes(3)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func removedWhileDownStops() async throws {
        try await LocalCluster.with(.keel, members: 3) { c in
            let eps = await c.endpoints
            let leader = try await c.waitForLeader()
            let victim = (leader + 1) % 3
            let id = try #require(await c.status(victim)).memberID
            await c.kill(victim)
            let rm = try await Self.ctl(["member", "remove", String(UInt64(id)!, radix: 16)], [eps[leader]])
            #expect(rm.stdout.contains("removed from cluster"), "\(rm)")
            try await c.restart(victim, wait: false)
            let exited = try await Self.waitUntilExited(c, victim)
            let log = await c.log(victim)
            #expect(exited, "\(log.suffix(2000))")
            #expect(log.contains("permanently removed from the cluster"), "\(log.suffix(2000))")
            let put = try await Self.ctl(["put", "two-left", "1"], [eps[leader]])
            #expect(put.status.succeeded, "\(put)")
        }
    }
}
