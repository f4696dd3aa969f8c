import Foundation
import KeelTestSupport
import Testing

/// The shared process helpers every end-to-end suite builds on: they must start, observe and stop
/// real processes (here /bin/sh and Debian's etcd 3.4) and leave nothing behind.
@Suite struct KeelTestSupportTests {
    @Test func childProcessRunsInItsWorkingDirectoryWithStdinAndEnvironment() async throws {
        let dir = try makeTempDirectory(prefix: "keel-cp-test")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try await ChildProcess.run("/bin/sh", ["-c", "pwd; cat; echo \"$KEEL_TS_X\"; echo err >&2; exit 3"],
                                           extraEnvironment: ["KEEL_TS_X": "x-value"], workingDirectory: dir,
                                           stdin: "from-stdin\n", timeout: .seconds(20))
        let realDir = URL(fileURLWithPath: dir).resolvingSymlinksInPath().path
        #expect(r.status == .exited(3))
        #expect(r.stdout == "\(realDir)\nfrom-stdin\nx-value\n")
        #expect(r.stderr == "err\n")
    }

    @Test func killedChildReportsTheSignal() async throws {
        let p = try ChildProcess.spawn("/bin/sleep", ["30"])
        p.kill()
        let status = await p.waitOrKill(timeout: .seconds(10))
        #expect(status == .signaled(SIGKILL))
    }

    @Test func referenceEtcdStartsServesAndStops() async throws {
        guard RepoPaths.etcdAvailable else { Issue.record("etcd 3.4 missing: run Tests/install-deps.sh"); return }
        let etcd = try await ReferenceEtcd.start(name: "ts0")
        let put = try await Etcdctl.run(["put", "k", "v"], endpoints: [etcd.endpoint])
        #expect(put.status.succeeded && put.stdout == "OK\n")
        let get = try await Etcdctl.run(["get", "k", "--print-value-only"], endpoints: [etcd.endpoint])
        #expect(get.stdout == "v\n")
        #expect(await Etcdctl.isHealthy(etcd.endpoint))
        await etcd.stop()
        #expect(!FileManager.default.fileExists(atPath: etcd.dataDir))
        #expect(!FreePorts.isListening(etcd.clientPort))
    }
}
