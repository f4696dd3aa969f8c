import Foundation
import Testing

/// Keys longer than the 495 bytes LMDB's key table holds inline: etcd takes keys of any length up to
/// the request size, and so does keel (Sources/Storage/MVCC/LongKeys.swift). The same etcdctl 3.4
/// script against keel and etcd 3.4 must print the same, and both must hash their history alike.
@Suite(.serialized) struct LongKeyE2ETests {
    @Test func longKeysWorkAsInEtcd() async throws {
        let long = String(repeating: "k", count: 2_000)
        let p = String(repeating: "k", count: 495)            // the longest inline key
        let p496 = p + "a"
        let huge = String(repeating: "h", count: 100_000)       // argv holds at most 128 KiB per argument
        let steps = [
            Step(args: ["put", long, "v1"]),
            Step(args: ["get", long]),
            Step(args: ["put", p, "inline"]),
            Step(args: ["put", p496, "first-long"]),
            Step(args: ["put", long, "v2", "--prev-kv"]),
            Step(args: ["get", long, "-w", "json"]),
            Step(args: ["get", p, "--prefix", "--keys-only"]),
            Step(args: ["get", p, "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND", "--limit", "2"]),
            Step(args: ["get", p496, "--from-key", "--keys-only"]),
            Step(args: ["get", "", "--from-key", "--count-only", "-w", "json"]),
            Step(args: ["get", p496, long]),                                        // [p496, long)
            Step(args: ["txn", "-i"], stdin: "value(\"\(long)\") = \"v2\"\n\nput \(p496) from-txn\nget \(long)\n\nput x y\n\n"),
            Step(args: ["put", huge, "huge-key"]),
            Step(args: ["get", huge, "--print-value-only"]),
            Step(args: ["get", long, "--rev", "2"]),
            Step(args: ["del", p, "--prefix", "--prev-kv"]),
            Step(args: ["get", "", "--from-key", "--keys-only"]),
            Step(args: ["compaction", "8"]),
            Step(args: ["get", long, "--rev", "2"]),                                // compacted
        ]
        let keel = try await KeelProcess.start()
        let etcd = try await RefEtcd.start()
        var outputs: [String] = []
        for step in steps {
            let a = normalized(try await keel.ctl(step.args, stdin: step.stdin))
            let b = normalized(try await Ctl.run(step.args, endpoint: etcd.endpoint, stdin: step.stdin))
            outputs.append(a)
            #expect(a == b, "\(step.description.prefix(300))")
        }
        // HashKV over this history (long keys hashed whole, compacted at 8) is etcd's number
        let hk = try await keel.ctl(["endpoint", "hashkv", "-w", "json"])
        let he = try await Ctl.run(["endpoint", "hashkv", "-w", "json"], endpoint: etcd.endpoint)
        let hash = try Regex("\"hash\":([0-9]+),\"compact_revision\":([0-9-]+)")
        let mk = hk.stdout.firstMatch(of: hash).map { "\($0.output[1].substring ?? "") \($0.output[2].substring ?? "")" }
        let me = he.stdout.firstMatch(of: hash).map { "\($0.output[1].substring ?? "") \($0.output[2].substring ?? "")" }
        #expect(mk != nil && mk == me, "keel \(hk.stdout) etcd \(he.stdout)")
        await etcd.stop()
        #expect(await keel.stop() == .exited(0))
        // keel really answered: the 2,000-byte key came back with its value, the 100 KB key too
        #expect(outputs[1] == "[exit 0] \(long)\nv1\n")
        #expect(outputs[13] == "[exit 0] huge-key\n")
        #expect(outputs.last?.contains("required revision has been compacted") == true)
    }
}
