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
        // Fill: up to twice the filesystem's size in values, through the healthy members.
        let run = await writeUntilDown(c, clients: clients, victim: victim, limit: 2 * tmpfsMB * 1024 / 64,
                                       key: { Array("disk/k\($0 % 64)".utf8) }, value: { value + Array(String($0).utf8) })
        print("[disk \(server)] \(run.writes) writes of 64 KB, \(run.acked.count) acknowledged; \(await victimState(c, victim))")
        #expect(run.down, "m\(victim) still serves with a full disk after \(run.writes) writes")
        try await othersGoOnThenCatchUp(c, clients: clients, victim: victim, acked: run.acked, label: "disk \(server)",
                                        expected: { value + Array(String($0.value ?? 0).utf8) }) {
            // Space returns; the member restarts on its data and catches up.
            guard mount("tmpfs", mnt, "tmpfs", UInt(MS_REMOUNT), "size=\(regrowMB)m") == 0 else {
                throw ChildProcessError("remount: \(String(cString: strerror(errno)))")
            }
        }
    }
}
