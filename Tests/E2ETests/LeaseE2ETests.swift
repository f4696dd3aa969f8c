// Lease end to end: Debian's etcdctl 3.4 and python-etcd3 against `keel`, compared with the same
// steps against the reference etcd 3.4 (lease IDs normalised; remaining TTLs within a second).
import Foundation
import Testing

@Suite(.serialized) struct LeaseE2ETests {
    @Test func grantAttachTimeToLiveKeepAliveListRevoke() async throws {
        let (keel, etcd) = try await onBoth { s in
            var t: [String] = []
            let small = try await s.ctl(["lease", "grant", "1"])                // raised to the minimum TTL
            t.append(small.transcript)
            // the 2 s lease may already be gone when the next etcdctl spawn gets there on a loaded
            // machine: revoked or expired both end it, and both servers must do one of the two
            let revokeSmall = try await s.ctl(["lease", "revoke", try grantedLeaseID(small)])
            let ended = revokeSmall.stdout.hasSuffix(" revoked\n")
                || revokeSmall.stderr.contains("etcdserver: requested lease not found")
            t.append(ended ? "[small lease ended]" : revokeSmall.transcript)
            let g = try await s.ctl(["lease", "grant", "100"])
            t.append(g.transcript)
            let id = try grantedLeaseID(g)
            t.append(try await s.ctl(["put", "--lease=\(id)", "lk1", "v"]).transcript)
            t.append(try await s.ctl(["put", "--lease=\(id)", "lk2", "v"]).transcript)
            let ttl = try await s.ctl(["lease", "timetolive", id, "--keys"])
            // remaining(90s)...remaining(100s) depending on how long the three commands took on a
            // loaded machine (etcdctl spawns each): keep it out of the comparison
            let remaining = ttl.stdout.replacingOccurrences(of: "remaining\\((9[0-9]|100)s\\)", with: "remaining(~100s)",
                                                            options: .regularExpression)
            t.append("[\(ttl.status)] " + sortAttachedKeys(remaining))
            t.append(try await s.ctl(["lease", "keep-alive", "--once", id]).transcript)
            t.append(try await s.ctl(["lease", "timetolive", "1234"]).transcript)
            t.append(try await s.ctl(["lease", "keep-alive", "--once", "1234"]).transcript)
            let list = try await s.ctl(["lease", "list"])
            t.append(list.transcript)
            t.append(try await s.ctl(["lease", "revoke", id]).transcript)
            t.append(try await s.ctl(["get", "--prefix", "lk"]).transcript)       // keys went with it
            t.append(try await s.ctl(["lease", "revoke", id]).transcript)
            t.append(try await s.ctl(["lease", "timetolive", id]).transcript)
            t.append(try await s.ctl(["lease", "grant", "9000000001"]).transcript)
            t.append(try await s.ctl(["put", "--lease=1234", "x", "y"]).transcript)
            return normalizeLeaseIDs(t)
        }
        #expect(keel == etcd)
        #expect(keel.first == "[exit 0] lease L1 granted with TTL(2s)\n")
        #expect(keel.contains("[exit 0] lease L2 granted with TTL(100s), remaining(~100s), attached keys([lk1 lk2])\n"))
        #expect(keel.contains("[exit 0] lease L2 keepalived with TTL(100)\n"))
        #expect(keel.contains("[exit 0] lease L2 revoked\n"))
    }

    @Test func attachedKeysExpireWithTheirLease() async throws {
        let (keel, etcd) = try await onBoth { s in
            var t: [String] = []
            // A short lease can expire between two etcdctl spawns on a loaded machine (CI saw etcd's
            // 2 s lease gone before the put). 5 s, and a fresh lease when the put still finds it
            // expired (bounded): the comparison is about what happens after the put, not spawn speed.
            var id = "", put: RunResult? = nil
            for _ in 0..<3 where put?.status.succeeded != true {
                id = try grantedLeaseID(try await s.ctl(["lease", "grant", "5"]))
                put = try await s.ctl(["put", "--lease=\(id)", "ek", "v"])
            }
            t.append(try #require(put).transcript)
            t.append(try await s.ctl(["get", "ek", "--print-value-only"]).transcript)
            // the leader revokes it through Raft after ~5 s; poll (bounded) until the key is gone
            var gone = false
            for _ in 0..<300 where !gone {
                try await Task.sleep(for: .milliseconds(100))
                let r = try await s.ctl(["get", "ek"])
                gone = r.status.succeeded && r.stdout.isEmpty
            }
            #expect(gone, "\(s.kind): key with a 5 s lease still there after 30 s")
            t.append(try await s.ctl(["get", "ek"]).transcript)
            t.append(try await s.ctl(["lease", "timetolive", id]).transcript)
            t.append(try await s.ctl(["lease", "list"]).transcript)
            return normalizeLeaseIDs(t)
        }
        #expect(keel == etcd)
        #expect(keel.last == "[exit 0] found 0 leases\n")
    }

    @Test func pythonEtcd3LeaseRefresh() async throws {
        let script = """
        import sys, etcd3
        c = etcd3.client(host='127.0.0.1', port=int(sys.argv[1]))
        lease = c.lease(30)
        c.put('l/k', 'v', lease=lease)
        print('granted', lease.granted_ttl)
        r = lease.refresh()
        print('refresh', len(r), r[0].TTL, r[0].ID == lease.id)
        print('remaining ok', 28 <= lease.remaining_ttl <= 30)
        print('keys', sorted(k.decode() for k in lease.keys))
        print('value', c.get('l/k')[0].decode())
        lease.revoke()
        print('after revoke', c.get('l/k')[0], lease.remaining_ttl)
        try:
            c.revoke_lease(lease.id)
        except Exception as e:
            print('revoke again', type(e).__name__)
        """
        let (keel, etcd) = try await pythonOnBoth(script)
        #expect(keel == etcd)
        #expect(keel.first?.hasPrefix("granted 30\nrefresh 1 30 True\nremaining ok True\nkeys ['l/k']\nvalue v\n") == true)
    }

    /// kill -9, restart on the same data dir: the lease and its key are still there, its TTL was not
    /// cut short (etcd's promote gives leases their TTL plus an election timeout again), keep-alive
    /// works, it still expires and takes its key, and watch history from before the crash replays.
    @Test func leaseAndWatchHistorySurviveKillNine() async throws {
        let dir = try Proc.tempDir("keel-wl-restart")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try await KeelProcess.start(dir: dir)
        let g = try await first.ctl(["lease", "grant", "60"])
        let id = try grantedLeaseID(g)
        #expect(try await first.ctl(["put", "--lease=\(id)", "rk", "v1"]).status.succeeded)
        // 6 s: long enough to survive the next etcdctl spawn on a loaded machine
        let short = try grantedLeaseID(try await first.ctl(["lease", "grant", "6"]))
        #expect(try await first.ctl(["put", "--lease=\(short)", "sk", "v2"]).status.succeeded)
        #expect(try await first.ctl(["put", "plain", "v3"]).status.succeeded)
        first.process.kill()
        _ = await first.process.wait(timeout: .seconds(10))

        let second = try await KeelProcess.start(dir: dir)
        let ttl = try await second.ctl(["lease", "timetolive", id, "--keys"])
        let remaining = ttl.stdout.split(separator: "(").dropFirst(2).first.flatMap { Int($0.prefix { $0.isNumber }) } ?? -1
        #expect(ttl.stdout.hasPrefix("lease \(id) granted with TTL(60s), remaining("), "\(ttl)")
        #expect(remaining >= 59 && ttl.stdout.hasSuffix("attached keys([rk])\n"), "\(ttl)")
        #expect(try await second.ctl(["lease", "keep-alive", "--once", id]).stdout == "lease \(id) keepalived with TTL(60)\n")
        #expect(try await second.ctl(["get", "rk", "--print-value-only"]).stdout == "v1\n")
        // the 6 s lease still expires after the restart (6 s + election timeout) and takes its key
        var gone = false
        for _ in 0..<300 where !gone {
            try await Task.sleep(for: .milliseconds(100))
            let r = try await second.ctl(["get", "sk"])
            gone = r.status.succeeded && r.stdout.isEmpty
        }
        #expect(gone)
        #expect(try await second.ctl(["lease", "timetolive", short]).stdout == "lease \(short) already expired\n")
        // history from revision 2 (before the crash) through the expiry's delete
        let w = try Proc(Paths.etcdctl, ["--endpoints", second.endpoint, "watch", "--prefix", "", "--rev", "2", "-w", "json"],
                         env: ["ETCDCTL_API": "3"])
        defer { w.kill() }
        let saw = await waitForStdout(w, timeout: .seconds(20)) { $0.contains("\"type\":1") }
        #expect(saw && w.stdout.contains("\"mod_revision\":2,"), "\(w.stdout) \(w.stderr)")
        #expect(await second.stop() == .exited(0))
    }
}
