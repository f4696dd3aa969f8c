// Shared by the disk fault tests: load the healthy members until a faulty one stops, then check that
// the others went on and that the faulty one, once repaired and restarted, caught up exactly.
import Foundation
import GRPC
import KeelAPI
import KeelTestSupport
import Testing

/// Puts through every member but `victim` (key and value by write number) until the victim is down
/// (its process exited, or two probes in a row, 16 writes apart, found it not serving a linearizable
/// read) or `limit` writes were made. Returns the acknowledged writes (`value` = the write number).
func writeUntilDown(_ c: LocalCluster, clients: [GRPCClient], victim: Int, limit: Int,
                    key: (Int) -> [UInt8], value: (Int) -> [UInt8]) async -> (acked: [AckedWrite], writes: Int, down: Bool) {
    let healthy = clients.indices.filter { $0 != victim }
    let opts = CallOptions(timeout: .seconds(10))
    var acked: [AckedWrite] = []
    var down = false
    var failedProbes = 0
    var n = 0
    while n < limit && !down {
        var put = Etcdserverpb.PutRequest()
        put.key = key(n)
        put.value = value(n)
        if let r = try? await clients[healthy[n % healthy.count]].unary(Etcdserverpb.KV.put, put, options: opts) {
            acked.append(AckedWrite(key: n, value: UInt64(n), revision: r.header?.revision ?? 0, client: 0))
        }
        n += 1
        if n % 16 == 0 {
            failedProbes = await serves(c, victim, clients[victim]) ? 0 : failedProbes + 1
            down = !(await c.isRunning(victim)) || failedProbes >= 2
        }
    }
    return (acked, n, down)
}

/// True if member `i`'s process runs and it answers a linearizable read.
func serves(_ c: LocalCluster, _ i: Int, _ client: GRPCClient) async -> Bool {
    guard await c.isRunning(i) else { return false }
    var r = Etcdserverpb.RangeRequest()
    r.key = Array("disk/probe".utf8)
    return (try? await client.unary(Etcdserverpb.KV.range, r, options: CallOptions(timeout: .seconds(3)))) != nil
}

/// "victim m2 exited" / "runs but does not serve", with its log's tail (for the test output).
func victimState(_ c: LocalCluster, _ victim: Int) async -> String {
    "victim m\(victim) \(await c.isRunning(victim) ? "runs but does not serve" : "exited"); "
        + "log tail: \(await c.log(victim).suffix(300).replacingOccurrences(of: "\n", with: " | "))"
}

/// After a fault stopped `victim`: another member still takes a write (retried over an election,
/// bounded); then `repair` undoes the fault, the victim restarts on its data and catches up:
/// revisions, HashKV and the whole history equal on every member, and every acknowledged write in the
/// history at its revision with the value `expected` gives.
func othersGoOnThenCatchUp(_ c: LocalCluster, clients: [GRPCClient], victim: Int, acked: [AckedWrite], label: String,
                           expected: (AckedWrite) -> [UInt8], repair: () throws -> Void) async throws {
    let other = clients.indices.first { $0 != victim }!
    var put = Etcdserverpb.PutRequest()
    put.key = Array("disk/after".utf8)
    put.value = Array("after".utf8)
    // If the victim was the leader, the first tries meet the election: etcd answers "request timed
    // out, possibly due to previous leader failure", keel "leader changed" (both UNAVAILABLE). Bounded.
    var after: Etcdserverpb.PutResponse?
    for attempt in 1...10 where after == nil {
        do {
            after = try await clients[other].unary(Etcdserverpb.KV.put, put, options: CallOptions(timeout: .seconds(30)))
        } catch let e as GRPCStatus where e.code == .unavailable && attempt < 10 {
            try await Task.sleep(for: .seconds(1))
        }
    }
    #expect((after?.header?.revision ?? 0) > 0)

    try repair()
    try await c.restart(victim)
    let revisions = try await waitForEqualRevisions(clients)
    #expect(Set(revisions).count == 1, "revisions differ: \(revisions)")
    var hashes: Set<UInt32> = []
    for cl in clients {
        hashes.insert(try await cl.unary(Etcdserverpb.Maintenance.hashKV, Etcdserverpb.HashKVRequest(),
                                         options: CallOptions(timeout: .seconds(10))).hash_)
    }
    #expect(hashes.count == 1, "HashKV differs after the member caught up")
    var histories: [[KeyEvent]] = []
    for slot in c.slots {
        // The whole history in one watch response can be tens of MB here (64 KB values).
        var config = GRPCClient.Configuration(host: "127.0.0.1", port: slot.clientPort)
        config.http2.maxReceiveMessageSize = 512 << 20
        let big = GRPCClient(configuration: config)
        histories.append(try await fetchEvents(big, through: revisions.max() ?? 0))
        await big.close()
    }
    #expect(histories.allSatisfy { $0 == histories[0] }, "members' histories differ")
    let byRevision = Dictionary(histories[0].map { ($0.revision, $0) }, uniquingKeysWith: { a, _ in a })
    let missing = acked.filter { w in byRevision[w.revision].map { $0.value != expected(w) } ?? true }
    #expect(missing.isEmpty, "\(missing.count) acknowledged writes not in the history at their revision")
    print("[\(label)] after repair + restart: revisions \(revisions), one HashKV, "
          + "\(histories[0].count) events equal on \(clients.count) members, \(acked.count) acknowledged writes present")
}
