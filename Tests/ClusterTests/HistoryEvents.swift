// A member's MVCC history (every event from revision 1, through Watch), used after healing to check that
// all members hold the same history and every acknowledged write is in it, and to settle the outcome of
// writes whose response never came: with unique values and no compaction, a put / compare-and-set whose
// value is in no member's history never took effect.
import GRPC
import KeelAPI
import KeelTestSupport

struct KeyEvent: Sendable, Hashable {
    var revision: Int64
    var key: [UInt8]
    /// nil: a delete.
    var value: [UInt8]?
}

/// Every event of the whole key space from revision 1 through `revision`, in order (a Watch from revision 1).
func fetchEvents(_ client: GRPCClient, through revision: Int64, timeout: Duration = .seconds(60)) async throws
    -> [KeyEvent] {
    try await client.bidirectionalStreaming(Etcdserverpb.Watch.watch, options: CallOptions(timeout: timeout)) {
        writer, responses in
        var create = Etcdserverpb.WatchCreateRequest()
        create.key = [0]
        create.rangeEnd = [0]   // every key
        create.startRevision = 1
        var req = Etcdserverpb.WatchRequest()
        req.createRequest = create
        try await writer.send(req)
        var events: [KeyEvent] = []
        if revision <= 1 { writer.finish(); return events }
        for try await resp in responses {
            if resp.canceled {
                throw GRPCStatus(.internal, "watch canceled: \(resp.cancelReason) (compacted at \(resp.compactRevision))")
            }
            for e in resp.events {
                events.append(KeyEvent(revision: e.kv?.modRevision ?? 0, key: e.kv?.key ?? [],
                                       value: e.type == .delete ? nil : (e.kv?.value ?? [])))
            }
            if let last = events.last, last.revision >= revision { break }
        }
        writer.finish()
        return events
    }
}

/// Polls every member's Maintenance.Status (200 ms apart, bounded: about 30 s plus the calls) until all report
/// the same positive revision, and returns the revisions last seen (-1: no answer). No timing in any verdict.
func waitForEqualRevisions(_ clients: [GRPCClient]) async throws -> [Int64] {
    var revisions: [Int64] = []
    for _ in 0..<150 {
        revisions = []
        for c in clients {
            let st = try? await c.unary(Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest(),
                                        options: CallOptions(timeout: .seconds(10)))
            revisions.append(st?.header?.revision ?? -1)
        }
        if Set(revisions).count == 1 && revisions[0] > 0 { break }
        try await Task.sleep(for: .milliseconds(200))
    }
    return revisions
}

extension KVWorkload {
    /// Ops with unknown outcome that wrote a value (put, compare-and-set) whose value is not in `history`
    /// never took effect: drop them. Returns the refined ops and how many were dropped.
    func settleUnknownWrites(_ ops: [Linearizability.Op], history: [KeyEvent]) -> (ops: [Linearizability.Op], dropped: Int) {
        var applied = Set<UInt64>()
        for e in history where e.key.starts(with: Array(prefix.utf8)) {
            if let v = e.value.flatMap(Self.decode) { applied.insert(v) }
        }
        var out: [Linearizability.Op] = []
        var dropped = 0
        for op in ops {
            if op.ret == nil {
                switch op.kind {
                case .put(let v) where !applied.contains(v), .cas(_, let v, _) where !applied.contains(v):
                    dropped += 1
                    continue
                default: break
                }
            }
            out.append(op)
        }
        return (out, dropped)
    }
}
