// Minimal process helpers for the end-to-end tests (KeelTestSupport's ChildProcess/ReferenceEtcd
// are not in the repository yet; switch to them when they land): spawn with captured output,
// bounded waits, always killed; free ports; the repository's etcd 3.4 binaries; keel's binary.
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct E2EError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

enum Exit: Sendable, Hashable, CustomStringConvertible {
    case exited(Int32), signaled(Int32)
    var description: String {
        switch self {
        case .exited(let c): "exit \(c)"
        case .signaled(let s): "signal \(s)"
        }
    }
    var succeeded: Bool { self == .exited(0) }
}

struct RunResult: Sendable, CustomStringConvertible {
    var status: Exit
    var stdout: String
    var stderr: String
    var description: String { "[\(status)] stdout: \(stdout.prefix(2000).debugDescription) stderr: \(stderr.suffix(2000).debugDescription)" }
}

/// A child process in its own process group; output goes to files in a private temp dir.
final class Proc: Sendable {
    let pid: pid_t
    let dir: String
    private let reaped = Mutex<Exit?>(nil)

    static func tempDir(_ prefix: String) throws -> String {
        var t = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX").utf8CString)
        guard let p = t.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw E2EError("mkdtemp failed")
        }
        return String(cString: p)
    }

    init(_ exe: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) throws {
        dir = try Proc.tempDir("keel-proc")
        let inPath = dir + "/stdin"
        try (stdin ?? "").write(toFile: inPath, atomically: false, encoding: .utf8)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, dir + "/stdout", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, dir + "/stderr", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        let argv = ([exe] + args).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv { free(p) }; for p in envp { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, exe, &actions, &attr, argv, envp)
        guard rc == 0 else { throw E2EError("posix_spawn \(exe): \(String(cString: strerror(rc)))") }
        pid = child
    }

    deinit {
        kill()
        _ = reap(block: true)
        try? FileManager.default.removeItem(atPath: dir)
    }

    func signal(_ s: Int32) { if reaped.withLock({ $0 }) == nil { Glibc.kill(-pid, s); Glibc.kill(pid, s) } }
    func kill() { signal(SIGKILL) }

    private func reap(block: Bool) -> Exit? {
        reaped.withLock { st in
            if let st { return st }
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, block ? 0 : WNOHANG)
            guard r == pid else { return nil }
            let sig = raw & 0x7f
            st = sig == 0 ? .exited((raw >> 8) & 0xff) : .signaled(sig)
            return st
        }
    }

    var exit: Exit? { reap(block: false) }

    func wait(timeout: Duration) async -> Exit? {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if let e = exit { return e }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return exit
    }

    /// SIGTERM, then SIGKILL after `grace`.
    func stop(grace: Duration = .seconds(10)) async -> Exit {
        signal(SIGTERM)
        if let e = await wait(timeout: grace) { return e }
        kill()
        return await wait(timeout: .seconds(10)) ?? .signaled(SIGKILL)
    }

    var stdout: String { (try? String(contentsOfFile: dir + "/stdout", encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? "" }

    func waitFor(stderrContaining text: String, timeout: Duration) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if stderr.contains(text) { return true }
            if exit != nil { return stderr.contains(text) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    static func run(_ exe: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil,
                    timeout: Duration = .seconds(60)) async throws -> RunResult {
        let p = try Proc(exe, args, env: env, stdin: stdin)
        var st = await p.wait(timeout: timeout)
        if st == nil { p.kill(); st = await p.wait(timeout: .seconds(10)) }
        return RunResult(status: st ?? .signaled(SIGKILL), stdout: p.stdout, stderr: p.stderr)
    }
}

enum Paths {
    /// The repository root (this file is Tests/E2ETests/Support.swift).
    static let root: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static var etcdBin: String {
        ProcessInfo.processInfo.environment["KEEL_ETCD_BIN_DIR"] ?? root + "/.cache/etcd/usr/bin"
    }
    static var etcd: String { etcdBin + "/etcd" }
    static var etcdctl: String { etcdBin + "/etcdctl" }

    /// `keel`, built into the same products directory as this test bundle.
    static func keel() throws -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        var dir = URL(fileURLWithPath: n > 0 ? String(cString: buf) : CommandLine.arguments[0]).deletingLastPathComponent()
        while dir.path != "/" {
            let p = dir.path + "/keel"
            if access(p, X_OK) == 0 { return p }
            dir.deleteLastPathComponent()
        }
        throw E2EError("keel binary not found next to the test bundle")
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw E2EError("socket failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard ok else { throw E2EError("bind failed") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

enum Ctl {
    static func run(_ args: [String], endpoint: String, stdin: String? = nil) async throws -> RunResult {
        try await Proc.run(Paths.etcdctl, ["--endpoints", endpoint] + args, env: ["ETCDCTL_API": "3"], stdin: stdin)
    }
}

/// Debian's etcd 3.4 on free ports with a temp data dir (the reference server).
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

    static func start() async throws -> RefEtcd {
        var last = ""
        for _ in 0..<3 {
            let dir = try Proc.tempDir("keel-ref-etcd")
            let (c, p) = (try freePort(), try freePort())
            let proc = try Proc(Paths.etcd, [
                "--data-dir", dir + "/data", "--listen-client-urls", "http://127.0.0.1:\(c)",
                "--advertise-client-urls", "http://127.0.0.1:\(c)", "--listen-peer-urls", "http://127.0.0.1:\(p)",
            ])
            if await proc.waitFor(stderrContaining: "ready to serve client requests", timeout: .seconds(30)) {
                return RefEtcd(proc: proc, port: c, dir: dir)
            }
            last = proc.stderr
            proc.kill()
            try? FileManager.default.removeItem(atPath: dir)
        }
        throw E2EError("reference etcd did not start: \(last.suffix(1500))")
    }

    func stop() async { _ = await proc.stop(grace: .seconds(5)) }
}
