// Watch end to end: Debian's etcdctl 3.4 and python-etcd3 against `keel`, compared with the same
// steps against the reference etcd 3.4.
import Foundation
import Testing

@Suite(.serialized) struct WatchE2ETests {
    /// Revisions 2...5: put k1, put k2, put k1 again, delete k2.
    func seed(_ s: WLServer) async throws {
        for args in [["put", "k1", "v1"], ["put", "k2", "v2"], ["put", "k1", "v1b"], ["del", "k2"]] {
            let r = try await s.ctl(args)
            #expect(r.status.succeeded, "\(args): \(r)")
        }
    }

    /// A watch child process until its stdout holds `count` lines containing `marker`, then stopped.
    func watchOutput(_ s: WLServer, _ args: [String], until marker: String, count: Int,
                     whileWaiting: ((WLServer) async throws -> Void)? = nil) async throws -> String {
        let w = try s.spawnCtl(args)
        defer { w.kill() }
        if let whileWaiting {
            // the watch must exist before the writes: wait for its first history line
            _ = await waitForStdout(w, timeout: .seconds(20)) { !$0.isEmpty }
            try await whileWaiting(s)
        }
        let ok = await waitForStdout(w, timeout: .seconds(20)) {
            $0.components(separatedBy: "\n").filter { $0.contains(marker) }.count >= count
        }
        #expect(ok, "\(s.kind): watch \(args) saw: \(w.stdout.debugDescription) stderr: \(w.stderr.suffix(500))")
        w.kill()
        _ = await w.wait(timeout: .seconds(5))
        return w.stdout
    }

    @Test func prefixFromRevisionWithPrevKVThenLive() async throws {
        let (keel, etcd) = try await onBoth { s in
            try await seed(s)
            let out = try await watchOutput(s, ["watch", "--prefix", "k", "--rev", "1", "--prev-kv"],
                                            until: "k3", count: 1) { s in
                let r = try await s.ctl(["put", "k3", "v3"])   // live, revision 6
                #expect(r.status.succeeded)
                _ = try await s.ctl(["put", "other", "x"])      // not in the prefix
            }
            return [out]
        }
        #expect(keel == etcd)
        #expect(keel.first?.hasPrefix("PUT\nk1\nv1\nPUT\nk2\nv2\nPUT\nk1\nv1\nk1\nv1b\nDELETE\nk2\nv2\nk2\n") == true)
    }

    /// Live puts under a synced prev_kv watch: the previous values (stored by revision in Keel, over
    /// 64 bytes) come with the events, as from etcd.
    @Test func liveWatchWithPrevKVGetsPreviousLongValues() async throws {
        let a = String(repeating: "a", count: 300), b = String(repeating: "b", count: 300)
        let (keel, etcd) = try await onBoth { s in
            try await seed(s)
            // from revision 5 (the delete of k2): once that line is out, the watch is live
            let out = try await watchOutput(s, ["watch", "--prefix", "k", "--rev", "5", "--prev-kv"],
                                            until: "PUT", count: 3) { s in
                for v in [a, b, "c"] {
                    let r = try await s.ctl(["put", "kp", v])
                    #expect(r.status.succeeded)
                }
            }
            return [out]
        }
        #expect(keel == etcd)
        #expect(keel.first?.contains("PUT\nkp\n\(a)\nkp\n\(b)\nPUT\nkp\n\(b)\nkp\nc\n") == true, "\(keel)")
    }

    @Test func jsonRevisionsAndEvents() async throws {
        let (keel, etcd) = try await onBoth { s in
            try await seed(s)
            let out = try await watchOutput(s, ["watch", "--prefix", "k", "--rev", "2", "-w", "json"],
                                            until: "\"Events\"", count: 1)
            // drop the member-specific header fields, keep revision and everything else
            let line = out.split(separator: "\n").first.map(String.init) ?? ""
            let data = try #require(line.data(using: .utf8))
            var obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            var header = obj["Header"] as? [String: Any] ?? [:]
            header["cluster_id"] = nil
            header["member_id"] = nil
            header["raft_term"] = nil
            obj["Header"] = header
            let norm = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            return [String(decoding: norm, as: UTF8.self)]
        }
        #expect(keel == etcd)
        #expect(keel.first?.contains("\"revision\":5") == true)
    }

    @Test func compactedRevisionIsReportedAsEtcd() async throws {
        let (keel, etcd) = try await onBoth { s in
            try await seed(s)
            let c = try await s.ctl(["compact", "4"])
            #expect(c.status.succeeded)
            let w = try await s.ctl(["watch", "k1", "--rev", "2"])
            let j = try await s.ctl(["watch", "k1", "--rev", "2", "-w", "json"])
            var jsonLine = j.stdout.replacingOccurrences(of: "\"cluster_id\":[0-9]+,", with: "", options: .regularExpression)
            jsonLine = jsonLine.replacingOccurrences(of: "\"member_id\":[0-9]+,", with: "", options: .regularExpression)
            jsonLine = jsonLine.replacingOccurrences(of: "\"raft_term\":[0-9]+", with: "", options: .regularExpression)
            return [c.stdout, w.transcript, "[\(j.status)] " + jsonLine]
        }
        #expect(keel == etcd)
        #expect(keel[1].contains("watch was canceled (etcdserver: mvcc: required revision has been compacted)"))
        #expect(keel[2].contains("\"CompactRevision\":4,\"Canceled\":true"))
    }

    @Test func interactiveWatchAndProgress() async throws {
        let (keel, etcd) = try await onBoth { s in
            try await seed(s)
            // interactive etcdctl reads commands from stdin; EOF ends it, so feed the lines slowly
            // through a shell pipeline with bounded sleeps
            let script = "(echo 'watch k1 --rev 3'; sleep 1; echo progress; sleep 1) | "
                + "ETCDCTL_API=3 '\(Paths.etcdctl)' --endpoints \(s.endpoint) watch -i"
            let r = try await Proc.run("/bin/sh", ["-c", script], timeout: .seconds(20))
            return [r.stdout]
        }
        #expect(keel == etcd)
        #expect(keel.first == "PUT\nk1\nv1b\nprogress notify: 5\n")
    }

    @Test func pythonEtcd3WatchPrefix() async throws {
        let script = """
        import sys, threading, etcd3
        c = etcd3.client(host='127.0.0.1', port=int(sys.argv[1]))
        c.put('w/a', '1')
        first = c.watch_prefix_once('w/', timeout=10, start_revision=2)
        print('once', type(first).__name__, first.key.decode(), first.value.decode())
        events, cancel = c.watch_prefix('w/')
        got = []
        def reader():
            for ev in events:
                got.append((type(ev).__name__, ev.key.decode(), ev.value.decode()))
                if len(got) == 3:
                    break
        t = threading.Thread(target=reader)
        t.start()
        c.put('w/b', '2')
        c.delete('w/a')
        c.put('x', 'no')
        c.put('w/c', '3')
        t.join(20)
        cancel()
        for g in got:
            print(*g)
        print('alive', t.is_alive())
        """
        let (keel, etcd) = try await pythonOnBoth(script)
        #expect(keel == etcd)
        #expect(keel.first == "once PutEvent w/a 1\nPutEvent w/b 2\nDeleteEvent w/a \nPutEvent w/c 3\nalive False\n")
    }
}
