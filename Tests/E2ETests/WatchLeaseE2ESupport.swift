// Shared by the watch and lease end-to-end tests: a server under test (Keel or the reference etcd
// 3.4) on free loopback ports (SERVER's KeelProcess / RefEtcd helpers), etcdctl against it, and
// output normalisation for comparing the two.
import Foundation
import Testing

final class WLServer: Sendable {
    let kind: String
    let port: Int
    var endpoint: String { "127.0.0.1:\(port)" }
    private let keel: KeelProcess?
    private let etcd: RefEtcd?

    private init(kind: String, port: Int, keel: KeelProcess?, etcd: RefEtcd?) {
        self.kind = kind
        self.port = port
        self.keel = keel
        self.etcd = etcd
    }

    static func start(_ kind: String) async throws -> WLServer {
        if kind == "etcd" {
            let e = try await RefEtcd.start()
            return WLServer(kind: kind, port: e.port, keel: nil, etcd: e)
        }
        let k = try await KeelProcess.start()
        return WLServer(kind: kind, port: k.port, keel: k, etcd: nil)
    }

    func ctl(_ args: [String], stdin: String? = nil) async throws -> RunResult {
        try await Ctl.run(args, endpoint: endpoint, stdin: stdin)
    }

    /// `etcdctl` as a long-running child (watch), stdout/stderr captured.
    func spawnCtl(_ args: [String]) throws -> Proc {
        try Proc(Paths.etcdctl, ["--endpoints", endpoint] + args, env: ["ETCDCTL_API": "3"])
    }

    func stop() async {
        if let keel { _ = await keel.stop() }
        if let etcd { await etcd.stop() }
    }
}

/// Runs `body` against Keel and against the reference etcd (each on a fresh server) and returns
/// both transcripts; the servers are always stopped.
func onBoth(_ body: (WLServer) async throws -> [String]) async throws -> (keel: [String], etcd: [String]) {
    var results: [String: [String]] = [:]
    for kind in ["keel", "etcd"] {
        let s = try await WLServer.start(kind)
        do {
            results[kind] = try await body(s)
            await s.stop()
        } catch {
            await s.stop()
            throw error
        }
    }
    return (results["keel"]!, results["etcd"]!)
}

/// Runs a python-etcd3 script (argv[1] = the client port) against Keel and etcd; their stdout.
func pythonOnBoth(_ script: String) async throws -> (keel: [String], etcd: [String]) {
    try await onBoth { s in
        let r = try await Proc.run("/usr/bin/env", ["python3", "-c", script, "\(s.port)"],
                                   env: ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"], timeout: .seconds(60))
        #expect(r.status.succeeded, "\(s.kind): \(r)")
        return [r.stdout]
    }
}

/// Waits (bounded, polling) until `p`'s stdout satisfies `predicate` or the process ends.
func waitForStdout(_ p: Proc, timeout: Duration, _ predicate: (String) -> Bool) async -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if predicate(p.stdout) { return true }
        if p.exit != nil { return predicate(p.stdout) }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return predicate(p.stdout)
}

/// Lease IDs differ between servers: replace each distinct 16-hex-digit ID by L1, L2, ... in
/// order of first appearance.
func normalizeLeaseIDs(_ lines: [String]) -> [String] {
    var names: [String: String] = [:]
    let re = try! NSRegularExpression(pattern: "\\b[0-9a-f]{16}\\b")
    return lines.map { line in
        var out = line
        let ns = line as NSString
        for m in re.matches(in: line, range: NSRange(location: 0, length: ns.length)).reversed() {
            let id = ns.substring(with: m.range)
            let name = names[id] ?? "L\(names.count + 1)"
            names[id] = name
            out = (out as NSString).replacingCharacters(in: m.range, with: name)
        }
        return out
    }
}

/// The lease ID etcdctl printed in "lease <hex> granted with TTL(...)".
func grantedLeaseID(_ r: RunResult) throws -> String {
    let parts = r.stdout.split(separator: " ")
    guard parts.count > 2, parts[0] == "lease", parts[2] == "granted" else {
        throw E2EError("unexpected lease grant output: \(r)")
    }
    return String(parts[1])
}

/// etcd keeps a lease's keys in a Go map: "attached keys([b a])" comes in any order; sort them.
func sortAttachedKeys(_ s: String) -> String {
    guard let open = s.range(of: "attached keys(["), let close = s.range(of: "])", range: open.upperBound..<s.endIndex)
    else { return s }
    let keys = s[open.upperBound..<close.lowerBound].split(separator: " ").sorted().joined(separator: " ")
    return String(s[..<open.upperBound]) + keys + String(s[close.lowerBound...])
}

extension RunResult {
    /// The exit status, stdout and etcdctl's own stderr lines (the JSON retry logs, which carry
    /// timestamps and client IDs, are left out).
    var transcript: String {
        let errLines = stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }
        return "[\(status)] \(stdout)" + (errLines.isEmpty ? "" : " | " + errLines.joined(separator: " | "))
    }
}
