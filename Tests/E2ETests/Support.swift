// The names the E2E tests use for processes, ports, paths, etcdctl and the reference etcd, as thin
// adapters over KeelTestSupport (ChildProcess, FreePorts, RepoPaths, BuildProducts, Etcdctl,
// ReferenceEtcd), so every suite here shares one implementation.
import Foundation
import KeelTestSupport

struct E2EError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

typealias Exit = ExitStatus
typealias RunResult = CommandResult

/// A child process in its own process group with captured output; killed when released.
final class Proc: Sendable {
    let child: ChildProcess

    static func tempDir(_ prefix: String) throws -> String { try makeTempDirectory(prefix: prefix) }

    init(_ exe: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) throws {
        child = try ChildProcess.spawn(exe, args, extraEnvironment: env, stdin: stdin)
    }

    var pid: Int32 { child.pid }
    func signal(_ s: Int32) { child.signal(s) }
    func kill() { child.kill() }
    var exit: Exit? { child.exitStatus }
    func wait(timeout: Duration) async -> Exit? { await child.wait(timeout: timeout) }
    /// SIGTERM, then SIGKILL after `grace`.
    func stop(grace: Duration = .seconds(10)) async -> Exit { await child.stop(grace: grace) }
    var stdout: String { child.stdout }
    var stderr: String { child.stderr }

    func waitFor(stderrContaining text: String, timeout: Duration) async -> Bool {
        await child.waitForOutput(containing: text, stderr: true, timeout: timeout)
    }

    static func run(_ exe: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil,
                    timeout: Duration = .seconds(60)) async throws -> RunResult {
        try await ChildProcess.run(exe, args, extraEnvironment: env, stdin: stdin, timeout: timeout)
    }
}

enum Paths {
    static var root: String { RepoPaths.root }
    static var etcd: String { RepoPaths.etcd }
    static var etcdctl: String { RepoPaths.etcdctl }
    /// `keel`, built into the same products directory as this test bundle.
    static func keel() throws -> String { try BuildProducts.require("keel") }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freePort() throws -> Int { try FreePorts.allocate() }

enum Ctl {
    static func run(_ args: [String], endpoint: String, stdin: String? = nil) async throws -> RunResult {
        try await Etcdctl.run(args, endpoints: [endpoint], stdin: stdin)
    }
}

/// Debian's etcd 3.4 on free ports with a temp data dir (the reference server). Launched here and
/// awaited on its "ready to serve client requests" log line: KeelTestSupport's ReferenceEtcd.start
/// did not report a healthy member on this machine at 08:05 UTC (30 s timeouts, empty stderr).
final class RefEtcd: Sendable {
    let proc: Proc
    let port: Int
    let dir: String
    var endpoint: String { "127.0.0.1:\(port)" }

    private init(proc: Proc, port: Int, dir: String) { self.proc = proc; self.port = port; self.dir = dir }

    deinit {
        proc.kill()
        try? FileManager.default.removeItem(atPath: dir)
    }

    static func start(extraArguments: [String] = []) async throws -> RefEtcd {
        var last = ""
        for _ in 0..<3 {
            let dir = try Proc.tempDir("keel-ref-etcd")
            let ports = try FreePorts.allocate(2)
            let proc = try Proc(Paths.etcd, [
                "--data-dir", dir + "/data", "--listen-client-urls", "http://127.0.0.1:\(ports[0])",
                "--advertise-client-urls", "http://127.0.0.1:\(ports[0])", "--listen-peer-urls", "http://127.0.0.1:\(ports[1])",
            ] + extraArguments)
            if await proc.waitFor(stderrContaining: "ready to serve client requests", timeout: .seconds(30)) {
                return RefEtcd(proc: proc, port: ports[0], dir: dir)
            }
            last = proc.stderr
            proc.kill()
            try? FileManager.default.removeItem(atPath: dir)
        }
        throw E2EError("reference etcd did not start: \(last.suffix(1500))")
    }

    func stop() async { _ = await proc.stop(grace: .seconds(5)) }
}
