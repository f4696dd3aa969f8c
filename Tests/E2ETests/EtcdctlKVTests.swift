import Foundation
import Testing

/// One etcdctl step of a script, and how its output is compared between Keel and etcd 3.4.
struct Step: Sendable, CustomStringConvertible {
    var args: [String]
    var stdin: String? = nil
    var description: String { "etcdctl " + args.joined(separator: " ") + (stdin.map { " <<< \($0.debugDescription)" } ?? "") }
}

/// What an etcdctl run printed, with the parts that legitimately differ between two servers
/// (cluster/member IDs, raft term, timings, client-side log lines with random ids) masked.
func normalized(_ r: RunResult) -> String {
    var out = r.stdout
    out = out.replacing(try! Regex("memberID:[0-9]+"), with: "memberID:N")
    for field in ["cluster_id", "member_id", "raft_term"] {
        out = out.replacing(try! Regex("\"\(field)\":[0-9]+"), with: "\"\(field)\":N")
    }
    // etcdctl prints errors as "Error: <message>" on stderr after a JSON log line from the
    // retry interceptor; keep only the Error line.
    let err = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }.joined(separator: "\n")
    return "[\(r.status)] \(out)" + (err.isEmpty ? "" : "\n" + err)
}

/// Runs the same etcdctl script against Keel and Debian's etcd 3.4 and expects the same output
/// (revisions, values, errors), step by step.
/// Returns keel's normalized output per step, for checks beyond equality with etcd.
@discardableResult
func compareWithEtcd(_ steps: [Step], serverArguments: [String] = [],
                     sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String] {
    let keel = try await KeelProcess.start(extraArguments: serverArguments)
    let etcd = try await RefEtcd.start(extraArguments: serverArguments)
    var answered = 0
    var keelOutputs: [String] = []
    for step in steps {
        let a = try await keel.ctl(step.args, stdin: step.stdin)
        let b = try await Ctl.run(step.args, endpoint: etcd.endpoint, stdin: step.stdin)
        keelOutputs.append(normalized(a))
        #expect(normalized(a) == normalized(b), "\(step)", sourceLocation: sourceLocation)
        if !a.stdout.isEmpty || a.stderr.contains("Error:") { answered += 1 }
    }
    // Most steps print something (a result or an error): the comparison saw real output.
    #expect(answered >= steps.count * 3 / 4, sourceLocation: sourceLocation)
    await etcd.stop()
    #expect(await keel.stop() == .exited(0), sourceLocation: sourceLocation)
    return keelOutputs
}

/// Debian's etcdctl 3.4 against the real `keel` binary, compared with Debian's etcd 3.4.
@Suite(.serialized) struct EtcdctlKVTests {
    @Test func putGetDeleteWithEtcdctl() async throws {
        let keel = try await KeelProcess.start()
        var r = try await keel.ctl(["put", "foo", "bar"])
        #expect(r.status.succeeded && r.stdout == "OK\n", "\(r)")
        r = try await keel.ctl(["put", "foo2", "baz"])
        #expect(r.stdout == "OK\n")
        r = try await keel.ctl(["get", "foo"])
        #expect(r.stdout == "foo\nbar\n", "\(r)")
        r = try await keel.ctl(["get", "foo", "--prefix", "-w", "json"])
        let j = try CtlJSON(r.stdout)
        #expect(j.revision == 3)
        #expect(j.keys == ["foo", "foo2"] && j.values == ["bar", "baz"] && j.count == 2)
        r = try await keel.ctl(["del", "foo", "--prev-kv"])
        #expect(r.stdout == "1\nfoo\nbar\n", "\(r)")
        r = try await keel.ctl(["get", "foo", "--rev", "2", "--print-value-only"])
        #expect(r.stdout == "bar\n", "\(r)")
        #expect(await keel.stop() == .exited(0))
    }

    @Test func getOptionsMatchEtcd() async throws {
        var steps: [Step] = []
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("a", "1b")] {
            steps.append(Step(args: ["put", k, v]))
        }
        steps += [
            Step(args: ["put", "b", "2b", "--prev-kv"]),
            Step(args: ["put", "c", "3b", "-w", "json"]),
            Step(args: ["get", "foo"]),
            Step(args: ["get", "foo", "--prefix"]),
            Step(args: ["get", "b", "--from-key"]),
            Step(args: ["get", "", "--prefix", "--limit", "2"]),
            Step(args: ["get", "", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]),
            Step(args: ["get", "", "--prefix", "--sort-by=VALUE", "--order=ASCEND"]),
            Step(args: ["get", "", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit", "3"]),
            Step(args: ["get", "a", "--rev", "2"]),
            Step(args: ["get", "a", "--rev", "8"]),
            Step(args: ["get", "foo", "--prefix", "--keys-only"]),
            Step(args: ["get", "foo", "--prefix", "--count-only", "-w", "json"]),
            Step(args: ["get", "foo", "--prefix", "--print-value-only"]),
            Step(args: ["get", "foo", "--prefix", "-w", "json"]),
            Step(args: ["get", "a", "c"]),                       // [a, c)
            Step(args: ["get", "c", "a"]),                       // inverted range: empty
            Step(args: ["get", "nothing"]),
            Step(args: ["get", "a", "--consistency=s", "-w", "json"]),
            Step(args: ["del", "foo", "--prefix", "--prev-kv"]),
            Step(args: ["del", "nothing"]),
            Step(args: ["del", "a", "c", "-w", "json"]),
            Step(args: ["get", "", "--prefix", "-w", "json"]),
        ]
        try await compareWithEtcd(steps)
    }

    @Test func txnAndCompactionMatchEtcd() async throws {
        let steps: [Step] = [
            Step(args: ["put", "k1", "v1"]),
            Step(args: ["put", "k2", "v2"]),
            Step(args: ["txn", "-i"], stdin: "value(\"k1\") = \"v1\"\n\nput k1 new1\nput k3 v3\nget k2\n\nput k1 other\n\n"),
            Step(args: ["txn", "-i", "-w", "json"], stdin: "mod(\"k1\") < \"2\"\n\nput never x\n\ndel k2\nget k1\n\n"),
            Step(args: ["get", "", "--prefix"]),
            Step(args: ["txn", "-i"], stdin: "version(\"k3\") = \"1\"\ncreate(\"k1\") > \"0\"\n\ndel k1 k3\n\n\n"),
            Step(args: ["compaction", "3"]),
            Step(args: ["get", "k1", "--rev", "2"]),             // compacted
            Step(args: ["get", "k1", "--rev", "99"]),            // future
            Step(args: ["compaction", "2"]),                     // already compacted
            Step(args: ["compaction", "99"]),                    // future
            Step(args: ["compaction", "--physical", "5"]),
            Step(args: ["get", "", "--prefix", "-w", "json"]),
        ]
        try await compareWithEtcd(steps)
    }

    @Test func badInputGetsEtcdsErrors() async throws {
        let big = String(repeating: "x", count: 1_600_000)      // > 1.5 MiB, < the 2 MiB gRPC limit
        var manyOps = "\n"
        for i in 0..<129 { manyOps += "put k\(i) v\n" }
        manyOps += "\n\n"
        let steps: [Step] = [
            Step(args: ["put", "keep", "me"]),
            Step(args: ["put", "big"], stdin: big),                // value from stdin (argv is limited to 128 KiB)
            Step(args: ["txn", "-i"], stdin: manyOps),
            Step(args: ["put", "", "v"]),                        // etcdctl's own check
            Step(args: ["txn", "-i"], stdin: "\nput dup 1\nput dup 2\n\n\n"),
            Step(args: ["put", "k", "v", "--lease=1234"]),       // unknown lease
            Step(args: ["put", "missing", "--ignore-value"]),
            Step(args: ["get", "", "--prefix", "-w", "json"]),   // nothing was lost or added
        ]
        try await compareWithEtcd(steps)
    }

    /// --quota-backend-bytes: writes that would pass the quota raise NOSPACE and are refused;
    /// deletes still work; disarm clears the alarm.
    @Test func noSpaceAlarmMatchesEtcd() async throws {
        // The quota check is (backend file size + the put's cost) > quota. The file size after a put
        // is a storage detail that differs between bbolt and LMDB and with page reuse timing, so the
        // steps stay clear of the boundary: a 100 KB put fits in 300,000 bytes on both, a 400 KB put
        // exceeds the quota by its cost alone, whatever the file size.
        let steps = [
            Step(args: ["put", "big1"], stdin: String(repeating: "x", count: 100_000)),
            Step(args: ["put", "big2"], stdin: String(repeating: "y", count: 400_000)),
            Step(args: ["alarm", "list"]),
            Step(args: ["put", "small", "x"]),
            Step(args: ["del", "big", "--prefix"]),
            Step(args: ["alarm", "disarm"]),
            Step(args: ["alarm", "list"]),
        ]
        let out = try await compareWithEtcd(steps, serverArguments: ["--quota-backend-bytes", "300000"])
        try #require(out.count == steps.count)
        #expect(!out[0].contains("Error"), "\(out[0])")
        #expect(out[1].contains("etcdserver: mvcc: database space exceeded"), "\(out[1])")
        #expect(out[2].contains("NOSPACE"), "\(out[2])")
        #expect(out[3].contains("etcdserver: mvcc: database space exceeded"), "\(out[3])")
        #expect(!out[6].contains("NOSPACE"), "\(out[6])")
    }

    @Test func leaseErrorsMatchEtcd() async throws {
        try await compareWithEtcd([
            Step(args: ["lease", "revoke", "1234"]),
            Step(args: ["lease", "timetolive", "1234"]),
            Step(args: ["lease", "keep-alive", "--once", "1234"]),
            Step(args: ["lease", "list"]),
        ])
    }
}
