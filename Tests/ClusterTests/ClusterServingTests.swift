import Foundation
import KeelTestSupport
import Testing

/// A 3-member keel cluster (real processes, LocalCluster): it elects, every member takes writes
/// (followers forward them through Raft) and serves linearizable and serializable reads, headers
/// name the answering member with one term and revision, etcdctl with all three endpoints works,
/// lease keep-alives on followers reach the leader, MoveLeader transfers leadership, and a member
/// restarted (kill -9) keeps its data and catches up.
@Suite("keel cluster: serving", .serialized)
struct ClusterServingTests {
    static func ctl(_ args: [String], _ endpoints: [String]) async throws -> CommandResult {
        try await Etcdctl.run(args + ["--command-timeout=10s"], endpoints: endpoints, timeout: .seconds(60))
    }

    /// `get -w json` header fields: (member_id, raft_term, revision).
    static func header(_ json: String) -> (member: UInt64, term: UInt64, revision: Int64)? {
        guard let d = json.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
              let h = o["header"] as? [String: Any] else { return nil }
        func n(_ k: String) -> NSNumber? { h[k] as? NSNumber }
        guard let m = n("member_id"), let t = n("raft_term"), let r = n("revision") else { return nil }
        return (m.uint64Value, t.uint64Value, r.int64Value)
    }

    @Test("3 members: writes and reads through every member, headers, etcdctl with all endpoints",
          .timeLimit(.minutes(4)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func writesAndReadsEverywhere() async throws {
        try await LocalCluster.with(.keel, members: 3) { c in
            let eps = await c.endpoints
            let leader = try await c.waitForLeader()
            for (i, ep) in eps.enumerated() {
                let r = try await Self.ctl(["put", "key\(i)", "value\(i)"], [ep])
                #expect(r.status.succeeded && r.stdout == "OK\n", "\(r)")
            }
            // Every member has every write: linearizable reads anywhere, serializable after the
            // linearizable one on the same member (it waited for the apply).
            var ids: Set<UInt64> = []
            var terms: Set<UInt64> = []
            for ep in eps {
                let lin = try await Self.ctl(["get", "key", "--prefix", "-w", "json"], [ep])
                #expect(lin.status.succeeded, "\(lin)")
                let h = try #require(Self.header(lin.stdout), "\(lin)")
                #expect(h.revision == 4)   // 1 + three puts
                ids.insert(h.member); terms.insert(h.term)
                let ser = try await Self.ctl(["get", "key", "--prefix", "--print-value-only", "--consistency=s"], [ep])
                #expect(ser.stdout == "value0\nvalue1\nvalue2\n", "\(ser)")
            }
            #expect(ids.count == 3 && terms.count == 1)
            // The IDs in the headers are the members' IDs; one leader, same raft index everywhere.
            let list = try await Self.ctl(["member", "list"], [eps[0]])
            for id in ids { #expect(list.stdout.contains(String(id, radix: 16) + ", started, m"), "\(list)") }
            let st = try await Self.ctl(["endpoint", "status"], eps)
            #expect(st.stdout.split(separator: "\n").count == 3, "\(st)")
            #expect(st.stdout.components(separatedBy: ", true, false, ").count == 2, "\(st)")   // exactly one leader
            // etcdctl with all three endpoints: a txn and a delete.
            let t = try await Etcdctl.run(["txn"], endpoints: eps, stdin: "value(\"key0\") = \"value0\"\n\nput key0 changed\n\nput key0 not\n\n")
            #expect(t.stdout.hasPrefix("SUCCESS\n"), "\(t)")
            let del = try await Self.ctl(["del", "key", "--prefix"], eps)
            #expect(del.stdout == "3\n", "\(del)")
            let after = try await Self.ctl(["get", "key", "--prefix", "-w", "json"], [eps[(leader + 1) % 3]])
            #expect(after.stdout.contains("\"revision\":6"), "\(after)")
        }
    }

    @Test("lease keep-alive and time-to-live on a follower reach the leader; MoveLeader; kill -9 and restart keep data",
          .timeLimit(.minutes(5)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func leasesMoveLeaderRestart() async throws {
        try await LocalCluster.with(.keel, members: 3) { c in
            let eps = await c.endpoints
            let leader = try await c.waitForLeader()
            let follower = (leader + 1) % 3
            // Lease granted through a follower (forwarded proposal), kept alive through another.
            let g = try await Self.ctl(["lease", "grant", "300"], [eps[follower]])
            let id = try #require(g.stdout.split(separator: " ").dropFirst().first.map(String.init), "\(g)")
            let other = (leader + 2) % 3
            let ka = try await Self.ctl(["lease", "keep-alive", "--once", id], [eps[other]])
            #expect(ka.stdout.contains("keepalived with TTL(300)"), "\(ka)")
            let ttl = try await Self.ctl(["lease", "timetolive", id], [eps[follower]])
            #expect(ttl.stdout.contains("granted with TTL(300s), remaining(2"), "\(ttl)")   // 29x s: the leader's clock
            let put = try await Self.ctl(["put", "leased", "x", "--lease", id], [eps[other]])
            #expect(put.status.succeeded, "\(put)")

            // MoveLeader: refused by a follower (etcdctl asks the leader endpoint), done by the leader.
            let st = try await Self.ctl(["endpoint", "status", "-w", "json"], [eps[follower]])
            let target = try #require(MemberStatus(etcdctlJSON: st.stdout)).memberID
            let targetHex = String(UInt64(target)!, radix: 16)
            let refused = try await Self.ctl(["move-leader", targetHex], [eps[follower]])
            #expect(!refused.status.succeeded && refused.stderr.contains("no leader endpoint given"), "\(refused)")
            let moved = try await Self.ctl(["move-leader", targetHex], [eps[leader]])
            #expect(moved.stdout.contains("Leadership transferred from"), "\(moved)")
            #expect(try await c.waitForLeader() == follower)

            // kill -9 a follower, write meanwhile, restart it: it has everything.
            let victim = (follower + 1) % 3
            await c.kill(victim)
            for i in 0..<20 {
                let r = try await Self.ctl(["put", "during\(i)", "\(i)"], [eps[follower]])
                #expect(r.status.succeeded, "\(r)")
            }
            try await c.restart(victim)
            let back = try await Self.ctl(["get", "during", "--prefix", "-w", "json"], [eps[victim]])
            #expect(back.stdout.contains("\"count\":20"), "\(back)")
            let leased = try await Self.ctl(["get", "leased", "--print-value-only"], [eps[victim]])
            #expect(leased.stdout == "x\n", "\(leased)")
            // And the leader too: the others elect, the old leader comes back as a follower with all data.
            let l2 = try await c.waitForLeader()
            await c.kill(l2)
            let l3 = try await c.waitForLeader(among: Set(0..<3).subtracting([l2]))
            let w = try await Self.ctl(["put", "after-leader-kill", "1"], [eps[l3]])
            #expect(w.status.succeeded, "\(w)")
            try await c.restart(l2)
            let seen = try await Self.ctl(["get", "after-leader-kill", "--print-value-only"], [eps[l2]])
            #expect(seen.stdout == "1\n", "\(seen)")
            var revisions: Set<Int64> = []
            for i in 0..<3 { if let s = await c.status(i) { revisions.insert(s.revision) } }
            #expect(revisions.count == 1, "\(revisions)")
        }
    }

    @Test("the leader compacts its log: a restarted follower and a new learner catch up from a snapshot; hashes agree",
          .timeLimit(.minutes(4)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func catchUpFromSnapshot() async throws {
        let options = LocalCluster.Options(extraArguments: ["--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "5"])
        try await LocalCluster.with(.keel, members: 3, options: options) { c in
            let eps = await c.endpoints
            let leader = try await c.waitForLeader()
            let victim = (leader + 1) % 3
            await c.kill(victim)
            let live = [eps[leader], eps[(leader + 2) % 3]]
            for i in 0..<60 {
                let r = try await Self.ctl(["put", "key\(i)", "value\(i)"], live)
                #expect(r.status.succeeded, "\(r)")
            }
            try await c.restart(victim)
            let back = try await Self.ctl(["get", "key", "--prefix", "--keys-only", "--consistency=s"], [eps[victim]])
            #expect(back.stdout.split(separator: "\n").count == 60, "\(back)")
            // The member's stderr is read by the harness as it comes: give the line a bounded while
            // to arrive (on a loaded machine the read above can be answered before it is read).
            var installed = false
            for _ in 0..<150 where !installed {
                installed = await c.log(victim).contains("installed the leader's snapshot")
                if !installed { try await Task.sleep(for: .milliseconds(200)) }
            }
            let victimLog = await c.log(victim)
            #expect(installed, "the restarted follower caught up without a snapshot: \(victimLog.suffix(3000))")
            // A learner added now gets the state as a snapshot too (the log starts after index 1).
            let slot = try await c.addSlot(name: "late")
            let peer = await c.slots[slot].peerURL
            let add = try await MembershipTests.addMember(["late", "--peer-urls", peer, "--learner"], [eps[leader]])
            let initial = try #require(add.stdout.split(separator: "\n").first { $0.hasPrefix("ETCD_INITIAL_CLUSTER=") }
                .map { String($0.dropFirst("ETCD_INITIAL_CLUSTER=\"".count).dropLast()) }, "\(add)")
            try await c.startAdded(slot, initialCluster: initial)
            let lateEP = await c.slots[slot].endpoint
            var count = 0
            for _ in 0..<150 where count != 60 {
                let r = try? await Self.ctl(["get", "key", "--prefix", "--keys-only", "--consistency=s"], [lateEP])
                count = r?.stdout.split(separator: "\n").count ?? 0
                if count != 60 { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(count == 60)
            let hashes = try await Self.ctl(["endpoint", "hashkv"], eps + [lateEP])
            let values = Set(hashes.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").last })
            #expect(hashes.stdout.split(separator: "\n").count == 4 && values.count == 1, "\(hashes)")
        }
    }

    @Test("watches on every member see writes made through the others; a lease outlives a leader kill (the new leader extends it) and then expires through Raft",
          .timeLimit(.minutes(4)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func watchesAndLeaseFailover() async throws {
        try await LocalCluster.with(.keel, members: 3) { c in
            let eps = await c.endpoints
            for (i, ep) in eps.enumerated() {
                let r = try await Self.ctl(["put", "w/\(i)", "from\(i)"], [ep])
                #expect(r.status.succeeded, "\(r)")
            }
            // A watch from revision 1 replays the same history on every member (it keeps running: the
            // process is stopped after a while and its output read).
            var outputs: Set<String> = []
            for ep in eps {
                let w = try await Etcdctl.run(["watch", "w/", "--prefix", "--rev=1"], endpoints: [ep], timeout: .seconds(3))
                outputs.insert(w.stdout)
                #expect(w.stdout.contains("PUT\nw/0\nfrom0\nPUT\nw/1\nfrom1\nPUT\nw/2\nfrom2\n"), "\(w)")
            }
            #expect(outputs.count == 1)

            // Lease: granted on the leader, key attached; the leader dies. The new leader's lessor
            // starts the lease's TTL over (plus an election timeout), so the key is still there; no
            // keep-alive follows, so it expires later (revoked through Raft) on every member.
            let leader = try await c.waitForLeader()
            let g = try await Self.ctl(["lease", "grant", "10"], [eps[leader]])
            let id = try #require(g.stdout.split(separator: " ").dropFirst().first.map(String.init), "\(g)")
            let put = try await Self.ctl(["put", "leased", "v", "--lease", id], [eps[leader]])
            #expect(put.status.succeeded, "\(put)")
            await c.kill(leader)
            let others = Set(0..<3).subtracting([leader])
            let next = try await c.waitForLeader(among: others)
            let still = try await Self.ctl(["get", "leased", "--print-value-only"], [eps[next]])
            #expect(still.stdout == "v\n", "\(still)")
            let ttl = try await Self.ctl(["lease", "timetolive", id], [eps[next]])
            #expect(ttl.stdout.contains("granted with TTL(10s)"), "\(ttl)")
            var gone = false
            for _ in 0..<150 where !gone {
                let r = try await Self.ctl(["get", "leased", "--print-value-only"], [eps[others.first { $0 != next }!]])
                gone = r.status.succeeded && r.stdout.isEmpty
                if !gone { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(gone)
        }
    }
}
