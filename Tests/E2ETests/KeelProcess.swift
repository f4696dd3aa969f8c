import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The real `keel` binary (built next to the test bundle) as a child process on a free
/// 127.0.0.1 port with its own temp data dir. Always stopped: `stop()`, or SIGKILL in deinit.
final class KeelProcess: Sendable {
    let process: Proc
    let port: Int
    let dir: String
    let ownsDir: Bool

    var endpoint: String { "127.0.0.1:\(port)" }
    var dataDir: String { dir + "/data" }

    private init(process: Proc, port: Int, dir: String, ownsDir: Bool) {
        self.process = process; self.port = port; self.dir = dir; self.ownsDir = ownsDir
    }

    deinit {
        process.kill()
        if ownsDir { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Starts keel and waits (bounded) for "ready to serve client requests". `dir` nil: a new
    /// temp dir, removed with this object (the data dir is `dir/data`). Retries on a new port.
    static func start(dir: String? = nil, port fixedPort: Int? = nil, extraArguments: [String] = [],
                      environment: [String: String] = [:]) async throws -> KeelProcess {
        let exe = try Paths.keel()
        let base = try dir ?? Proc.tempDir("keel-e2e")
        var last = "keel did not start"
        for _ in 0..<3 {
            let port = try fixedPort ?? freePort()
            let args = ["--data-dir", base + "/data", "--listen-client-urls", "http://127.0.0.1:\(port)",
                        "--advertise-client-urls", "http://127.0.0.1:\(port)"] + extraArguments
            let p = try Proc(exe, args, env: environment)
            if await p.waitFor(stderrContaining: "ready to serve client requests", timeout: .seconds(30)) {
                return KeelProcess(process: p, port: port, dir: base, ownsDir: dir == nil)
            }
            last = p.stderr
            p.kill()
        }
        if dir == nil { try? FileManager.default.removeItem(atPath: base) }
        throw E2EError("keel did not start: \(last.suffix(2000))")
    }

    /// SIGTERM, then waits (bounded); a clean shutdown is exit 0.
    func stop() async -> Exit { await process.stop(grace: .seconds(10)) }

    func ctl(_ args: [String], stdin: String? = nil) async throws -> RunResult {
        try await Ctl.run(args, endpoint: endpoint, stdin: stdin)
    }
}

/// Parsed `etcdctl -w json` output (only what the tests look at).
struct CtlJSON {
    let object: [String: Any]

    init(_ text: String) throws {
        guard let data = text.data(using: .utf8),
              let o = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw E2EError("not a JSON object: \(text)")
        }
        object = o
    }

    var header: [String: Any] { object["header"] as? [String: Any] ?? [:] }
    var revision: Int64 { (header["revision"] as? NSNumber)?.int64Value ?? -1 }
    var kvs: [[String: Any]] { object["kvs"] as? [[String: Any]] ?? [] }
    var count: Int64 { (object["count"] as? NSNumber)?.int64Value ?? 0 }
    var keys: [String] { kvs.map { Self.b64($0["key"]) } }
    var values: [String] { kvs.map { Self.b64($0["value"]) } }

    static func b64(_ v: Any?) -> String {
        guard let s = v as? String, let d = Data(base64Encoded: s) else { return "" }
        return String(decoding: d, as: UTF8.self)
    }
}
