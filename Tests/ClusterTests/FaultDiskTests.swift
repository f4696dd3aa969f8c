// Disk fault: one member's data dir sits on a small tmpfs that the test mounts (Linux, needs the right to
// mount: root in the CI container; skipped otherwise). Writes of 64 KB values through the other members fill
// it; that member must stop serving (exit, or refuse) rather than diverge: the others go on taking writes,
// and after the filesystem grows and the member restarts it catches up: revisions, HashKV and the whole
// history equal on every member, every acknowledged write present at its revision.
import Foundation
import GRPC
import KeelAPI
import KeelTestSupport
import Testing

@Suite("Disk faults", .serialized)
struct FaultDiskTests {
    static let canMount: Bool = {
        guard getuid() == 0, let dir = try? makeTempDirectory(prefix: "keel-mount-probe") else { return false }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard mount("tmpfs", dir, "tmpfs", 0, "size=1m") == 0 else { return false }
        umount(dir)
        return true
    }()

    @Test("etcd 3.4: a member whose disk fills stops, the others go on, it catches up after space returns",
          .timeLimit(.minutes(5)),
          .enabled(if: ClusterServer.etcd.isAvailable && canMount, "needs etcd 3.4 and the right to mount a tmpfs"))
    func etcdDiskFull() async throws {
        // Both preallocate 64 MB WAL segments: the second one no longer fits in 100 MB.
        try await DiskFullRun(server: .etcd, tmpfsMB: 100, regrowMB: 400).run()
    }

    @Test("keel: a member whose disk fills stops, the others go on, it catches up after space returns",
          .timeLimit(.minutes(5)),
          .enabled(if: ClusterServer.keel.isAvailable && canMount, "needs keel, etcdctl 3.4 and the right to mount a tmpfs"))
    func keelDiskFull() async throws {
        try await DiskFullRun(server: .keel, tmpfsMB: 100, regrowMB: 400).run()
    }
}

struct DiskFullRun {
    let server: ClusterServer
    let tmpfsMB: Int
    let regrowMB: Int
    let victim = 2

    func run() async throws {
        let mnt = try makeTempDirectory(prefix: "keel-diskfull-\(server)")
        guard mount("tmpfs", mnt, "tmpfs", 0, "size=\(tmpfsMB)m") == 0 else {
            try? FileManager.default.removeItem(atPath: mnt)
            throw ChildProcessError("mount tmpfs on \(mnt): \(String(cString: strerror(errno)))")
        }
        var options = LocalCluster.Options(heartbeatMillis: 100, electionMillis: 1000)
        options.dataDirs = [victim: mnt + "/data"]
        do {
            try await LocalCluster.with(server, members: 3, options: options) { c in try await exercise(c, mnt: mnt) }
        } catch {
            umount2(mnt, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(atPath: mnt)
            throw error
        }
        umount2(mnt, Int32(MNT_DETACH))
        try? FileManager.default.removeItem(atPath: mnt)
    }

    private func exercise(_ c: LocalCluster, mnt: String) async throws {
        let clients = c.slots.map { GRPCClient(host: "127.0.0.1", port: $0.clientPort) }
        defer { let cs = clients; Task { for x in cs { await x.close() } } }
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024)
        let opts = CallOptions(timeout: .seconds(10))
        var acked: [AckedWrite] = []
        var victimDown = false
        var failedProbes = 0
        var n = 0
        // Fill: up to twice the filesystem's size in values, through the healthy members; every 16 writes
        // look whether the victim still serves.
        let limit = 2 * tmpfsMB * 1024 / 64
        while n < limit && !victimDown {
            var put = Etcdserverpb.PutRequest()
            put.key = Array("disk/k\(n % 64)".utf8)
            put.value = value + Array(String(n).utf8)
            if let r = try? await clients[n % 2].unary(Etcdserverpb.KV.put, put, options: opts) {
                acked.append(AckedWrite(key: n % 64, value: UInt64(n), revision: r.header?.revision ?? 0, client: 0))
            }
            n += 1
            if n % 16 == 0 {
                // Down: its process exited, or two probes in a row (16 writes apart) found it not serving.
                failedProbes = await serves(c, clients[victim]) ? 0 : failedProbes + 1
                victimDown = !(await c.isRunning(victim)) || failedProbes >= 2
            }
        }
        print("[disk \(server)] \(n) writes of 64 KB, \(acked.count) acknowledged; victim m\(victim) "
              + "\(await c.isRunning(victim) ? "runs but does not serve" : "exited"); "
              + "log tail: \(await c.log(victim).suffix(300).replacingOccurrences(of: "\n", with: " | "))")
        #expect(victimDown, "m\(victim) still serves with a full disk after \(n) writes")
        // The others go on.
        var put = Etcdserverpb.PutRequest()
        put.key = Array("disk/after".utf8)
        put.value = Array("full".utf8)
        // If the victim was the leader, the first tries meet the election: etcd answers "request timed
        // out, possibly due to previous leader failure", keel "leader changed" (both UNAVAILABLE). Bounded.
        var after: Etcdserverpb.PutResponse?
        for attempt in 1...10 where after == nil {
            do {
                after = try await clients[0].unary(Etcdserverpb.KV.put, put, options: CallOptions(timeout: .seconds(30)))
            } catch let e as GRPCStatus where e.code == .unavailable && attempt < 10 {
                try await Task.sleep(for: .seconds(1))
            }
        }
        #expect((after?.header?.revision ?? 0) > 0)

        // Space returns; the member restarts on its data and catches up.
        guard mount("tmpfs", mnt, "tmpfs", UInt(MS_REMOUNT), "size=\(regrowMB)m") == 0 else {
            throw ChildProcessError("remount: \(String(cString: strerror(errno)))")
        }
        try await c.restart(victim)
        let revisions = try await waitForEqualRevisions(clients)
        #expect(Set(revisions).count == 1, "revisions differ: \(revisions)")
        var hashes: Set<UInt32> = []
        for cl in clients {
            hashes.insert(try await cl.unary(Etcdserverpb.Maintenance.hashKV, Etcdserverpb.HashKVRequest(), options: opts).hash_)
        }
        #expect(hashes.count == 1, "HashKV differs after the member caught up")
        var histories: [[KeyEvent]] = []
        for slot in c.slots {
            // The whole history in one watch response can be tens of MB here (64 KB values).
            var config = GRPCClient.Configuration(host: "127.0.0.1", port: slot.clientPort)
            config.http2.maxReceiveMessageSize = 512 << 20
            let big = GRPCClient(configuration: config)
            histories.append(try await fetchEvents(big, through: revisions.max() ?? 0))
            await big.close()
        }
        #expect(histories.allSatisfy { $0 == histories[0] }, "members' histories differ")
        let byRevision = Dictionary(histories[0].map { ($0.revision, $0) }, uniquingKeysWith: { a, _ in a })
        let missing = acked.filter { w in
            byRevision[w.revision].map { $0.value != value + Array(String(w.value ?? 0).utf8) } ?? true
        }
        #expect(missing.isEmpty, "\(missing.count) acknowledged writes not in the history at their revision")
        print("[disk \(server)] after regrow + restart: revisions \(revisions), one HashKV, "
              + "\(histories[0].count) events equal on 3 members, \(acked.count) acknowledged writes present")
    }

    /// True if member i answers a linearizable read (and its process runs).
    private func serves(_ c: LocalCluster, _ client: GRPCClient) async -> Bool {
        guard await c.isRunning(victim) else { return false }
        var r = Etcdserverpb.RangeRequest()
        r.key = Array("disk/probe".utf8)
        return (try? await client.unary(Etcdserverpb.KV.range, r, options: CallOptions(timeout: .seconds(3)))) != nil
    }
}
