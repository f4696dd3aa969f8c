import Foundation
import KeelTestSupport
import Testing

/// keelctl's output compared with etcdctl 3.4's for the same commands against the same server
/// (the reference etcd 3.4).
@Suite struct KeelctlTests {
    @Test func putGetDelMatchEtcdctlAgainstEtcd() async throws {
        let etcd = try await ReferenceEtcd.start(name: "kctl0")
        do { try await Self.compare(etcd.endpoint) } catch { await etcd.stop(); throw error }
        await etcd.stop()
    }

    /// The same comparison against the built keel (when it is built): both tools talk to keel.
    @Test func putGetDelMatchEtcdctlAgainstKeel() async throws {
        guard let keel = try await BuiltKeel.start() else { return }
        do { try await Self.compare(keel.endpoint) } catch { await keel.stop(); throw error }
        await keel.stop()
    }

    static func compare(_ endpoint: String) async throws {
        let keelctl = try BuildProducts.require("keelctl")
        struct E { let endpoint: String }
        let etcd = E(endpoint: endpoint)
        func both(_ args: [String], prefix: String) async throws -> (CommandResult, CommandResult) {
            // Each tool works on its own key prefix so that both see the same data shape.
            let mine = args.map { $0.replacingOccurrences(of: "P/", with: "k-\(prefix)/") }
            let theirs = args.map { $0.replacingOccurrences(of: "P/", with: "e-\(prefix)/") }
            let k = try await ChildProcess.run(keelctl, ["--endpoints", etcd.endpoint] + mine, timeout: .seconds(30))
            let e = try await Etcdctl.run(theirs, endpoints: [etcd.endpoint])
            return (k, e)
        }
        let script: [[String]] = [
            ["put", "P/a", "1"], ["put", "P/b", "two words"], ["put", "P/c", "3", "--prev-kv"],
            ["put", "P/c", "33", "--prev-kv"],
            ["get", "P/a"], ["get", "P/", "--prefix"], ["get", "P/", "--prefix", "--keys-only"],
            ["get", "P/", "--prefix", "--print-value-only"], ["get", "P/", "--prefix", "--limit", "2"],
            ["get", "P/a", "P/c"], ["get", "P/missing"],
            ["del", "P/a"], ["del", "P/", "--prefix", "--prev-kv"], ["del", "P/none"],
        ]
        for (i, args) in script.enumerated() {
            let (k, e) = try await both(args, prefix: "s")
            let norm = { (s: String) in s.replacingOccurrences(of: "k-s/", with: "X/").replacingOccurrences(of: "e-s/", with: "X/") }
            #expect(k.status == e.status, "step \(i) \(args): \(k) vs \(e)")
            #expect(norm(k.stdout) == norm(e.stdout), "step \(i) \(args)")
            #expect(!k.stdout.isEmpty || args == ["get", "P/missing"], "step \(i) printed nothing")
        }
        // Errors: a revision that was compacted, same message and exit code.
        let c = try await Etcdctl.run(["put", "cmp", "x"], endpoints: [etcd.endpoint])
        #expect(c.status.succeeded)
        let st = try await Etcdctl.run(["endpoint", "status", "-w", "fields"], endpoints: [etcd.endpoint])
        let rev = st.stdout.split(separator: "\n").first { $0.hasPrefix("\"Revision\"") }?
            .split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        #expect(!rev.isEmpty)
        _ = try await Etcdctl.run(["compaction", rev], endpoints: [etcd.endpoint])
        let k = try await ChildProcess.run(keelctl, ["--endpoints", etcd.endpoint, "get", "cmp", "--rev", "2"])
        let e = try await Etcdctl.run(["get", "cmp", "--rev", "2"], endpoints: [etcd.endpoint])
        #expect(k.status == .exited(1) && e.status == .exited(1))
        // etcdctl also logs its client's retry warning (JSON) on stderr; the error line is the contract.
        let errorLine = { (r: CommandResult) in r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") } }
        #expect(errorLine(k) == errorLine(e) && errorLine(k).count == 1, "\(k) vs \(e)")
    }
}
