import Foundation
import KeelTestSupport
import Testing

/// The apply loop's group commit (etcd's --backend-batch-interval / --backend-batch-limit): puts
/// are answered once durable in the WAL and join one LMDB commit, which a reader, a watcher or the
/// interval forces. With a 1 h interval nothing but those forces a commit, so the test can tell.
@Suite("Group commit (e2e)", .timeLimit(.minutes(3)))
struct GroupCommitE2ETests {
    /// `etcd_disk_backend_commit_duration_seconds_count` from /metrics: LMDB commits so far.
    func commits(_ keel: KeelProcess) throws -> Int {
        try counter(keel, "etcd_disk_backend_commit_duration_seconds_count")
    }

    func counter(_ keel: KeelProcess, _ name: String) throws -> Int {
        let body = try httpGet(port: keel.port, path: "/metrics").body
        let line = body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return Int(try #require(line, "\(name) missing from /metrics").split(separator: " ").last ?? "") ?? -1
    }

    /// kill -9, a restart on the same data dir, then the restarted server's keys under `prefix` with
    /// their mod revisions, and its revision.
    func killAndRestart(_ keel: KeelProcess, dir: String, prefix: String) async throws
        -> (KeelProcess, [String: Int64], Int64) {
        keel.process.kill()
        _ = await keel.process.wait(timeout: .seconds(10))
        let restarted = try await KeelProcess.start(dir: dir)
        let all = try CtlJSON(try await restarted.ctl(["get", prefix, "--prefix", "-w", "json"]).stdout)
        var modRev: [String: Int64] = [:]
        for kv in all.kvs { modRev[CtlJSON.b64(kv["key"])] = (kv["mod_revision"] as? NSNumber)?.int64Value }
        return (restarted, modRev, all.revision)
    }

    @Test("puts share one commit; a read forces it; kill -9 before any commit loses no acknowledged put")
    func putsShareACommitAndSurviveKillNine() async throws {
        let dir = try Proc.tempDir("keel-group")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keel = try await KeelProcess.start(dir: dir, extraArguments: ["--backend-batch-interval", "1h"])
        // Anything of the start-up (member attributes) is committed by this read.
        _ = try await keel.ctl(["get", "--consistency=s", "nothing"])
        let before = try commits(keel)
        var revisions: [Int64] = []
        for i in 0..<20 {
            let put = try CtlJSON(try await keel.ctl(["put", "g\(i)", "v\(i)", "-w", "json"]).stdout)
            revisions.append(put.revision)
        }
        #expect(revisions == Array(revisions[0]...(revisions[0] + 19)), "\(revisions)")
        #expect(try commits(keel) == before, "puts without readers or watchers must not commit one by one")
        // Status reports the applied revision, committed or not (etcd's header revision).
        let status = try await keel.ctl(["endpoint", "status", "-w", "json"])
        #expect(status.stdout.contains("\"revision\":\(revisions.last!)"), "\(status)")
        // A serializable read sees every answered put: it makes the apply loop commit first.
        let got = try CtlJSON(try await keel.ctl(["get", "g", "--prefix", "--consistency=s", "-w", "json"]).stdout)
        #expect(got.kvs.count == 20 && got.revision == revisions.last!)
        #expect(try commits(keel) == before + 1)

        // Applied and answered, never committed to LMDB: the WAL has them, replay restores them.
        for i in 20..<30 {
            let put = try CtlJSON(try await keel.ctl(["put", "g\(i)", "v\(i)", "-w", "json"]).stdout)
            revisions.append(put.revision)
        }
        #expect(try commits(keel) == before + 1)
        let (restarted, modRev, revision) = try await killAndRestart(keel, dir: dir, prefix: "g")
        for i in 0..<30 { #expect(modRev["g\(i)"] == revisions[i], "g\(i)") }
        #expect(revision == revisions.last!)
        #expect(await restarted.stop() == .exited(0))
    }

    @Test("a watcher gets each put at once, without waiting for (or forcing) the group commit")
    func aWatcherGetsEventsBeforeTheCommit() async throws {
        let keel = try await KeelProcess.start(extraArguments: ["--backend-batch-interval", "1h"])
        let first = try CtlJSON(try await keel.ctl(["put", "w", "1", "-w", "json"]).stdout)
        // From revision 1: the first event shows the watch is registered.
        let watch = try Proc(Paths.etcdctl, ["--endpoints", keel.endpoint, "watch", "w", "--rev", "1"],
                             env: ["ETCDCTL_API": "3"])
        defer { watch.kill() }
        #expect(await watch.child.waitForOutput(containing: "PUT\nw\n1\n", timeout: .seconds(30)), "\(watch.stdout)")
        let before = try commits(keel)
        _ = try await keel.ctl(["put", "w", "2"])
        // Published as soon as it is applied: no commit (the interval is 1 h) is needed for it.
        #expect(await watch.child.waitForOutput(containing: "PUT\nw\n2\n", timeout: .seconds(30)), "\(watch.stdout)")
        #expect(try commits(keel) == before)
        // A read still sees it (it makes the apply loop commit first).
        let r = try await keel.ctl(["get", "w", "--consistency=s", "--print-value-only"])
        #expect(r.stdout == "2\n", "\(r)")
        #expect(try commits(keel) == before + 1)
        #expect(first.revision > 1)
        #expect(await keel.stop() == .exited(0))
    }

    @Test("commits reach the page cache, a sync off the apply loop follows each; kill -9 loses nothing")
    func commitsAreSyncedInTheBackground() async throws {
        let dir = try Proc.tempDir("keel-nosync")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keel = try await KeelProcess.start(dir: dir)
        var revisions: [String: Int64] = [:]
        for i in 0..<10 {
            let put = try CtlJSON(try await keel.ctl(["put", "n\(i)", "v\(i)", "-w", "json"]).stdout)
            revisions["n\(i)"] = put.revision
            // each serializable read forces a commit, which starts a sync
            _ = try await keel.ctl(["get", "--consistency=s", "n\(i)"])
        }
        let commits = try commits(keel)
        // Bounded wait: the sync runs on a thread pool and reports back to the apply loop.
        var syncs = 0
        for _ in 0..<100 {
            syncs = try counter(keel, "keel_disk_backend_sync_duration_seconds_count")
            if syncs > 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(syncs >= 1, "no background sync after \(commits) commits")
        // A sync covers at least one commit and never runs twice at once: at most one per commit.
        #expect(syncs <= commits, "\(syncs) syncs for \(commits) commits")
        let (restarted, got, _) = try await killAndRestart(keel, dir: dir, prefix: "n")
        #expect(got == revisions)
        #expect(await restarted.stop() == .exited(0))
    }

    @Test("KEEL_BACKEND_SYNC_EACH_COMMIT=1: each commit fdatasyncs itself, no background sync runs")
    func syncEachCommitMode() async throws {
        let keel = try await KeelProcess.start(environment: ["KEEL_BACKEND_SYNC_EACH_COMMIT": "1"])
        for i in 0..<5 {
            _ = try await keel.ctl(["put", "s\(i)", "v"])
            _ = try await keel.ctl(["get", "--consistency=s", "s\(i)"])
        }
        #expect(try commits(keel) >= 5)
        #expect(try counter(keel, "keel_disk_backend_sync_duration_seconds_count") == 0)
        #expect(await keel.stop() == .exited(0))
    }
}
