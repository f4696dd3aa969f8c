import Foundation
import KeelTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// python3 with python-etcd3 (pure-Python protobuf, as python-etcd3 0.12 needs).
func python(_ script: String, _ args: [String], timeout: Duration = .seconds(60)) async throws -> RunResult {
    try await Proc.run("/usr/bin/env", ["python3", Paths.root + "/Tests/E2ETests/python/" + script] + args,
                       env: ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"], timeout: timeout)
}

/// One plain HTTP/1.1 GET (KeelTestSupport).
func httpGet(port: Int, path: String) throws -> (status: Int, body: String) {
    let r = try plainHTTPGet(port: port, path: path)
    return (r.status, r.body)
}

@Suite(.serialized) struct ServerE2ETests {
    @Test func flagsVersionAndEnvironment() async throws {
        let keel = try Paths.keel()
        var r = try await Proc.run(keel, ["--bogus-flag"])
        #expect(r.status == .exited(2))
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r)")
        r = try await Proc.run(keel, ["--listen-client-urls", "http://nohost"])
        #expect(r.status == .exited(2))
        #expect(r.stderr == "keel: URL address does not have the form \"host:port\": http://nohost\n", "\(r)")
        r = try await Proc.run(keel, [], env: ["ETCD_LISTEN_CLIENT_URLS": "ftp://a:1"])
        #expect(r.status == .exited(2))
        #expect(r.stderr.contains("URL scheme must be http, https, unix, or unixs: ftp://a:1"), "\(r)")
        r = try await Proc.run(keel, ["--version"])
        #expect(r.status == .exited(0) && r.stdout.contains("keel Version:") && r.stdout.contains("API Version: 3.5"))
        // ETCD_* variables configure a real start (here: the member name).
        let k = try await KeelProcess.start(environment: ["ETCD_NAME": "envname"])
        let m = try await k.ctl(["member", "list"])
        #expect(m.stdout.contains(", started, envname, http://localhost:2380,"), "\(m)")
        #expect(await k.stop() == .exited(0))
    }

    /// etcd creates a data dir whose parents are missing too (fileutil.TouchDirAll, mode 0700),
    /// keel's process runs on jemalloc (its start-up line says which malloc serves it), and a new
    /// data dir's store has the latest-only key table (the start-up line says the layout).
    @Test func dataDirWithMissingParentsAndTheMalloc() async throws {
        let base = try Proc.tempDir("keel-nested")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let k = try await KeelProcess.start(dir: base + "/a/b")
        let put = try await k.ctl(["put", "nested", "yes"])
        #expect(put.stdout == "OK\n", "\(put)")
        for d in ["/a", "/a/b", "/a/b/data"] {
            var st = stat()
            #expect(stat(base + d, &st) == 0 && st.st_mode & 0o777 == 0o700, "\(d): mode \(String(st.st_mode & 0o777, radix: 8))")
        }
        #expect(k.process.stderr.contains("\"malloc\":\"jemalloc "), "\(k.process.stderr.suffix(600))")
        #expect(k.process.stderr.contains("\"key-table\":\"latest-only\""), "\(k.process.stderr.suffix(600))")
        #expect(await k.stop() == .exited(0))
    }

    @Test func maintenanceAndHTTPEndpoints() async throws {
        let keel = try await KeelProcess.start()
        _ = try await keel.ctl(["put", "a", "1"])
        var r = try await keel.ctl(["endpoint", "health"])
        #expect(r.status.succeeded && r.stderr.contains("is healthy: successfully committed proposal"), "\(r)")   // etcdctl prints it on stderr
        r = try await keel.ctl(["endpoint", "status", "-w", "json"])
        #expect(r.stdout.contains("\"leader\":10276657743932975437"), "\(r)")   // 8e9e05c52164694d, etcd's default member ID
        #expect(r.stdout.contains("\"raftAppliedIndex\"") && r.stdout.contains("\"dbSize\""), "\(r)")
        r = try await keel.ctl(["member", "list", "-w", "table"])
        #expect(r.stdout.contains("8e9e05c52164694d | started | default | http://localhost:2380 | http://127.0.0.1:\(keel.port)"), "\(r)")
        r = try await keel.ctl(["defrag"])
        #expect(r.stdout.contains("Finished defragmenting etcd member"), "\(r)")
        r = try await keel.ctl(["alarm", "list"])
        #expect(r.status.succeeded && r.stdout.isEmpty, "\(r)")
        r = try await keel.ctl(["endpoint", "hashkv", "-w", "json"])
        #expect(r.stdout.contains("\"hash\":"), "\(r)")

        var h = try httpGet(port: keel.port, path: "/health")
        #expect(h.status == 200 && h.body == "{\"health\":\"true\"}")
        h = try httpGet(port: keel.port, path: "/version")
        #expect(h.status == 200 && h.body.contains("\"etcdserver\":") && h.body.contains("\"etcdcluster\":"))
        h = try httpGet(port: keel.port, path: "/metrics")
        for name in ["process_resident_memory_bytes", "etcd_server_has_leader 1", "etcd_mvcc_db_total_size_in_bytes",
                     "etcd_disk_wal_fsync_duration_seconds_bucket", "etcd_server_proposals_committed_total"] {
            #expect(h.body.contains(name), "\(name)")
        }
        h = try httpGet(port: keel.port, path: "/nope")
        #expect(h.status == 404)
        // gRPC still works on the same port after the HTTP/1 connections.
        r = try await keel.ctl(["get", "a", "--print-value-only"])
        #expect(r.stdout == "1\n")
        #expect(await keel.stop() == .exited(0))
    }

    @Test func snapshotSaveAndRestore() async throws {
        let keel = try await KeelProcess.start()
        for i in 0..<20 { _ = try await keel.ctl(["put", "snap/\(i)", "v\(i)"]) }
        _ = try await keel.ctl(["del", "snap/0"])
        let file = keel.dir + "/snap.db"
        let r = try await keel.ctl(["snapshot", "save", file])
        #expect(r.status.succeeded && r.stdout.contains("Snapshot saved at"), "\(r)")
        let before = try CtlJSON(try await keel.ctl(["get", "snap/", "--prefix", "-w", "json"]).stdout)
        #expect(await keel.stop() == .exited(0))

        // A second node restored from the file has the same keys, values and revision.
        let dir = try Proc.tempDir("keel-restore")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let restored = try await KeelProcess.start(dir: dir, extraArguments: ["--restore", file])
        let after = try CtlJSON(try await restored.ctl(["get", "snap/", "--prefix", "-w", "json"]).stdout)
        #expect(after.keys == before.keys && after.values == before.values && after.count == 19)
        #expect(after.revision == before.revision && after.revision == 22)
        let put = try CtlJSON(try await restored.ctl(["put", "new", "x", "-w", "json"]).stdout)
        #expect(put.revision == 23)
        #expect(await restored.stop() == .exited(0))

        // A damaged file is refused.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: file + ".bad"))
        let bad = try await Proc.run(try Paths.keel(), ["--restore", file + ".bad", "--data-dir", dir + "/bad",
                                                        "--listen-client-urls", "http://127.0.0.1:\(try freePort())"])
        #expect(bad.status == .exited(1) && bad.stderr.contains("sha256 mismatch"), "\(bad)")
    }

    /// kill -9 during a write load (python-etcd3, 8 threads): after a restart every acknowledged
    /// put is there with its revision, and revisions continue.
    @Test func killNineDuringWritesLosesNothingAcknowledged() async throws {
        let dir = try Proc.tempDir("keel-kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A small --snapshot-count: snapshots, log compaction and WAL release happen during the
        // load, so the restart goes through snapshot marker + WAL tail.
        let keel = try await KeelProcess.start(dir: dir, extraArguments: ["--snapshot-count", "100"])
        let writer = try Proc("/usr/bin/env", ["python3", Paths.root + "/Tests/E2ETests/python/writer.py",
                                               "127.0.0.1", String(keel.port), "8", "1000000"],
                              env: ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"])
        // Let a few hundred writes be acknowledged, then kill the server mid-load.
        let end = ContinuousClock.now + .seconds(20)
        while writer.stdout.split(separator: "\n").count < 500 && ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(50))
        }
        keel.process.kill()
        _ = await keel.process.wait(timeout: .seconds(10))
        _ = await writer.wait(timeout: .seconds(20))
        writer.kill()
        let acked = writer.stdout.split(separator: "\n").compactMap { line -> (String, Int64, Int)? in
            let p = line.split(separator: " ")
            return p.count == 3 ? (String(p[0]), Int64(p[1]) ?? -1, Int(p[2]) ?? -1) : nil
        }
        #expect(acked.count >= 500)
        #expect(keel.process.stderr.contains("snapshot saved; WAL released"))
        let restarted = try await KeelProcess.start(dir: dir, extraArguments: ["--snapshot-count", "100"])
        #expect(restarted.process.stderr.contains("\"snapshot-index\":\"") &&
                !restarted.process.stderr.contains("\"snapshot-index\":\"0\""), "\(restarted.process.stderr)")
        let all = try CtlJSON(try await restarted.ctl(["get", "load/", "--prefix", "-w", "json"]).stdout)
        var modRev: [String: Int64] = [:]
        var length: [String: Int] = [:]
        for kv in all.kvs {
            let key = CtlJSON.b64(kv["key"])
            modRev[key] = (kv["mod_revision"] as? NSNumber)?.int64Value
            length[key] = CtlJSON.b64(kv["value"]).utf8.count
        }
        let lost = acked.filter { modRev[$0.0] != $0.1 || length[$0.0] != $0.2 }
        #expect(lost.isEmpty, "lost acknowledged writes: \(lost.prefix(5))")
        #expect(acked.contains { $0.2 > 64 } && acked.contains { $0.2 <= 64 })
        let maxAcked = acked.map(\.1).max() ?? 0
        let put = try CtlJSON(try await restarted.ctl(["put", "after", "x", "-w", "json"]).stdout)
        #expect(put.revision > maxAcked && put.revision == all.revision + 1)
        #expect(await restarted.stop() == .exited(0))
    }

    /// --auto-compaction-mode=periodic with a 1 s retention compacts old revisions by itself.
    @Test func periodicAutoCompaction() async throws {
        let keel = try await KeelProcess.start(extraArguments: ["--auto-compaction-mode", "periodic",
                                                                "--auto-compaction-retention", "1s"])
        for i in 0..<5 { _ = try await keel.ctl(["put", "ac", "\(i)"]) }
        var compacted = false
        let end = ContinuousClock.now + .seconds(30)
        while !compacted && ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(300))
            let r = try await keel.ctl(["get", "ac", "--rev", "2"])
            compacted = r.stderr.contains("etcdserver: mvcc: required revision has been compacted")
        }
        #expect(compacted)
        let r = try await keel.ctl(["get", "ac", "--print-value-only"])
        #expect(r.stdout == "4\n")
        #expect(await keel.stop() == .exited(0))
    }

    /// python-etcd3 through its public API: the same answers from Keel as from etcd 3.4.
    @Test func pythonEtcd3MatchesEtcd() async throws {
        let keel = try await KeelProcess.start()
        let etcd = try await RefEtcd.start()
        let a = try await python("client_api.py", ["127.0.0.1", String(keel.port)])
        let b = try await python("client_api.py", ["127.0.0.1", String(etcd.port)])
        #expect(a.status.succeeded, "\(a)")
        #expect(a.stdout.split(separator: "\n").count >= 18, "\(a)")
        // Both report their own member; everything else must be equal.
        let strip = { (s: String) in s.split(separator: "\n").filter { !$0.hasPrefix("members ") }.joined(separator: "\n") }
        #expect(strip(a.stdout) == strip(b.stdout))
        await etcd.stop()
        #expect(await keel.stop() == .exited(0))
    }
}
