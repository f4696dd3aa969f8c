// keel-bench (the built executable) against a reference etcd 3.4: a few hundred requests per workload,
// and the JSON report's counts checked against what was asked and against etcd's own view (etcdctl).
import Foundation
import KeelBenchCore
import KeelTestSupport
import Testing

@Suite(.serialized) struct KeelBenchAgainstEtcdTests {
    /// Runs keel-bench with `args` plus --json against `endpoint`; returns the decoded report.
    func bench(_ args: [String], _ endpoint: String) async throws -> BenchReport {
        let exe = try BuildProducts.require("keel-bench")
        let r = try await ChildProcess.run(exe, args + ["--endpoints", endpoint, "--json", "--timeout", "30"],
                                           timeout: .seconds(90))
        try #require(r.status.succeeded, "keel-bench \(args) failed: \(r)")
        return try BenchReport.decode(r.stdout)
    }

    func phase(_ report: BenchReport, _ name: String) throws -> PhaseSummary {
        try #require(report.phases.first { $0.name == name }, "no phase \(name) in \(report.phases.map(\.name))")
    }

    @Test(.enabled(if: RepoPaths.etcdAvailable, "reference etcd not installed (bash Tests/install-deps.sh)"))
    func workloadsCountWhatTheyDid() async throws {
        let (etcd, endpoint, dir) = try await startEtcd()
        do {
            try await runAll(endpoint)
        } catch {
            _ = await etcd.stop()
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
        _ = await etcd.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// One etcd 3.4 member on free ports, ready once a linearizable Get succeeds (bounded).
    /// (Not `ReferenceEtcd.start`: its health check reads etcdctl 3.4's stdout, where `endpoint
    /// health` prints nothing: that goes to stderr. Switch back once it checks both.)
    func startEtcd() async throws -> (ChildProcess, String, String) {
        let ports = try FreePorts.allocate(2)
        let dir = try makeTempDirectory(prefix: "keel-bench-etcd")
        let peer = "http://127.0.0.1:\(ports[1])"
        let p = try ChildProcess.spawn(RepoPaths.etcd, [
            "--name", "bench0", "--data-dir", dir + "/data",
            "--listen-client-urls", "http://127.0.0.1:\(ports[0])", "--advertise-client-urls", "http://127.0.0.1:\(ports[0])",
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench0=\(peer)",
        ])
        let endpoint = "127.0.0.1:\(ports[0])"
        for _ in 0..<150 {
            if let st = p.exitStatus { throw ChildProcessError("etcd exited (\(st)): \(p.stderr.suffix(2000))") }
            if let r = try? await Etcdctl.run(["get", "ready", "--dial-timeout=1s", "--command-timeout=2s"],
                                              endpoints: [endpoint], timeout: .seconds(5)), r.status.succeeded {
                return (p, endpoint, dir)
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        _ = await p.stop()
        throw ChildProcessError("etcd not ready after 30 s: \(p.stderr.suffix(2000))")
    }

    func runAll(_ ep: String) async throws {
        // put: 300 requests over 2 connections and 10 clients, sequential keys over a space of 50.
        let put = try await bench(["put", "--total", "300", "--clients", "10", "--conns", "2", "--key-space", "50",
                                   "--sequential-keys", "--key-prefix", "kb/", "--key-size", "8", "--val-size", "64"], ep)
        #expect(put.command == "put" && put.conns == 2 && put.clients == 10)
        let p = try phase(put, "put")
        #expect(p.requests == 300 && p.ok == 300 && p.errors.isEmpty)
        #expect(p.latencyMs.min > 0 && p.latencyMs.min <= p.latencyMs.p50 && p.latencyMs.p50 <= p.latencyMs.p99
                && p.latencyMs.p99 <= p.latencyMs.max)
        #expect(p.rps > 0 && p.seconds > 0)
        #expect(p.cdf.count == 105 && p.cdf.first?[0] == 0 && p.cdf.last?[0] == 100)
        // etcd saw exactly those writes: 50 distinct keys of 64 bytes, revision 1 + 300.
        let get = try await Etcdctl.run(["get", "kb/", "--prefix", "-w", "json"], endpoints: [ep])
        try #require(get.status.succeeded, "\(get)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(get.stdout.utf8)) as? [String: Any])
        #expect((json["count"] as? NSNumber)?.intValue == 50)
        let header = try #require(json["header"] as? [String: Any])
        #expect((header["revision"] as? NSNumber)?.intValue == 301)

        // The same puts by task workers (--executor loop; the default is callback chains, above):
        // 100 more requests, the revision follows.
        let tasks = try await bench(["put", "--executor", "loop", "--total", "100", "--clients", "10", "--conns", "2",
                                     "--key-space", "50", "--sequential-keys", "--key-prefix", "kb/", "--val-size", "64"], ep)
        #expect(try phase(tasks, "put").ok == 100)
        let after = try await Etcdctl.run(["get", "kb/00000000", "-w", "json"], endpoints: [ep])
        let afterJSON = try #require(try JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [String: Any])
        #expect(((afterJSON["header"] as? [String: Any])?["revision"] as? NSNumber)?.intValue == 401)

        // range: serializable reads of 5 consecutive keys of the 50.
        let range = try await bench(["range", "--total", "200", "--clients", "8", "--consistency", "s",
                                     "--key-prefix", "kb/", "--key-space", "45", "--range-size", "5"], ep)
        let rp = try phase(range, "range")
        #expect(rp.requests == 200 && rp.ok == 200 && rp.errors.isEmpty)

        // txn-mixed: reads and writes add up to the total.
        let mixed = try await bench(["txn-mixed", "--total", "200", "--clients", "4", "--rw-ratio", "3",
                                     "--key-prefix", "kb/", "--key-space", "50"], ep)
        let reads = try phase(mixed, "read"), writes = try phase(mixed, "write")
        #expect(reads.ok + writes.ok == 200 && reads.errors.isEmpty && writes.errors.isEmpty)
        #expect(reads.ok > writes.ok)   // 3:1 by a fixed hash of the request number

        // txn-put: 100 txns of 3 puts.
        let txn = try await bench(["txn-put", "--total", "100", "--clients", "4", "--txn-ops", "3",
                                   "--key-prefix", "kt/", "--key-space", "30"], ep)
        #expect(try phase(txn, "txn-put").ok == 100)

        // watch: 2 streams x 3 watchers over 3 keys (2 watchers per key); 60 puts -> 120 events.
        let watch = try await bench(["watch", "--total", "60", "--clients", "3", "--streams", "2",
                                     "--watchers-per-stream", "3", "--key-space", "3", "--key-prefix", "kw/"], ep)
        let ev = try phase(watch, "watch-event")
        #expect(ev.expected == 120 && ev.ok == 120 && ev.errors.isEmpty)
        #expect(try phase(watch, "watch-create").ok == 6)
        #expect(try phase(watch, "put").ok == 60)

        // lease-keepalive: 100 round trips over 5 leases/streams.
        let lease = try await bench(["lease-keepalive", "--total", "100", "--clients", "5"], ep)
        let lp = try phase(lease, "lease-keepalive")
        #expect(lp.ok == 100 && lp.errors.isEmpty)
    }

    @Test func unreachableEndpointFailsCleanly() async throws {
        let exe = try BuildProducts.require("keel-bench")
        let port = try FreePorts.allocate()   // nothing listens there
        let r = try await ChildProcess.run(exe, ["put", "--total", "5", "--endpoints", "127.0.0.1:\(port)", "--json"],
                                           timeout: .seconds(60))
        #expect(!r.status.succeeded)
        #expect(r.stderr.contains("UNAVAILABLE"))
    }
}
