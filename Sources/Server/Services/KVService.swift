import GRPC
import KeelAPI
import Storage

/// etcd's gRPC-layer request checks (api/v3rpc/key.go), before anything is proposed.
public enum RequestValidation {
    public static func checkRange(_ r: Etcdserverpb.RangeRequest) throws(GRPCStatus) {
        if r.key.isEmpty { throw EtcdError.emptyKey }
    }

    public static func checkPut(_ r: Etcdserverpb.PutRequest) throws(GRPCStatus) {
        if r.key.isEmpty { throw EtcdError.emptyKey }
        if r.ignoreValue && !r.value.isEmpty { throw EtcdError.valueProvided }
        if r.ignoreLease && r.lease != 0 { throw EtcdError.leaseProvided }
    }

    public static func checkDelete(_ r: Etcdserverpb.DeleteRangeRequest) throws(GRPCStatus) {
        if r.key.isEmpty { throw EtcdError.emptyKey }
    }

    /// etcd's checkTxnRequest: the largest of compare/success/failure counts against the limit,
    /// empty compare keys, then each op (nested txns with what is left of the limit); an op with
    /// no request set is "key not found" as in etcd.
    public static func checkTxn(_ r: Etcdserverpb.TxnRequest, maxTxnOps: Int) throws(GRPCStatus) {
        let opc = max(r.compare.count, r.success.count, r.failure.count)
        if opc > maxTxnOps { throw EtcdError.tooManyOps }
        for c in r.compare where c.key.isEmpty { throw EtcdError.emptyKey }
        for op in r.success { try checkOp(op, maxTxnOps: maxTxnOps - opc) }
        for op in r.failure { try checkOp(op, maxTxnOps: maxTxnOps - opc) }
    }

    static func checkOp(_ op: Etcdserverpb.RequestOp, maxTxnOps: Int) throws(GRPCStatus) {
        switch op.request {
        case .requestRange(let r): try checkRange(r)
        case .requestPut(let p): try checkPut(p)
        case .requestDeleteRange(let d): try checkDelete(d)
        case .requestTxn(let t): try checkTxn(t, maxTxnOps: maxTxnOps)
        case nil: throw EtcdError.keyNotFound
        }
    }
}

/// etcdserverpb.KV: Range served from the local store (linearizable ones after a ReadIndex
/// barrier), writes proposed through Raft and answered once applied.
public struct KVService: GRPCService {
    let core: KeelCore
    public init(core: KeelCore) { self.core = core }

    public var methods: [ServerMethod] {
        // Writes only check, encode and propose, then wait for the apply loop, which builds the
        // response: their tasks run on the connection's loop, so a write costs two thread switches
        // (to the Raft loop, back from the apply loop) instead of four through the cooperative
        // pool. Range reads the store in the handler (a large range takes long): it stays on the pool.
        [
            .unary(Etcdserverpb.KV.range) { req, _ in try await self.range(req) },
            .unary(Etcdserverpb.KV.put) { req, _ in try await self.put(req) }.onConnectionLoop(),
            .unary(Etcdserverpb.KV.deleteRange) { req, _ in try await self.deleteRange(req) }.onConnectionLoop(),
            .unary(Etcdserverpb.KV.txn) { req, _ in try await self.txn(req) }.onConnectionLoop(),
            .unary(Etcdserverpb.KV.compact) { req, _ in try await self.compact(req) }.onConnectionLoop(),
        ]
    }

    public func range(_ r: Etcdserverpb.RangeRequest) async throws(GRPCStatus) -> Etcdserverpb.RangeResponse {
        try RequestValidation.checkRange(r)
        if !r.serializable {
            // etcd: a learner serves serializable reads only.
            if core.shared.isLearner { throw EtcdError.notSupportedForLearner }
            try await core.linearizableBarrier()
        } else {
            try await core.visibilityBarrier()
        }
        do {
            var resp = try core.store.range(r)
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        } catch {
            throw EtcdError.from(error)
        }
    }

    public func put(_ r: Etcdserverpb.PutRequest) async throws(GRPCStatus) -> Etcdserverpb.PutResponse {
        try RequestValidation.checkPut(r)
        try await checkQuota(cost: Self.cost(r))
        guard case .put(var resp) = try await result(.put(r)) else { throw unexpected() }
        resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
        return resp
    }

    public func deleteRange(_ r: Etcdserverpb.DeleteRangeRequest) async throws(GRPCStatus) -> Etcdserverpb.DeleteRangeResponse {
        try RequestValidation.checkDelete(r)
        guard case .deleteRange(var resp) = try await result(.deleteRange(r)) else { throw unexpected() }
        resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
        return resp
    }

    public func txn(_ r: Etcdserverpb.TxnRequest) async throws(GRPCStatus) -> Etcdserverpb.TxnResponse {
        try RequestValidation.checkTxn(r, maxTxnOps: core.config.maxTxnOps)
        try await checkQuota(cost: Self.cost(r))
        guard case .txn(var resp) = try await result(.txn(r)) else { throw unexpected() }
        let rev = resp.header?.revision ?? core.currentRevision
        // Only the outer header gets cluster/member/term; nested responses keep just the
        // revision, as etcd's.
        resp.header = core.header(revision: rev)
        return resp
    }

    public func compact(_ r: Etcdserverpb.CompactionRequest) async throws(GRPCStatus) -> Etcdserverpb.CompactionResponse {
        // The store compacts inside the apply transaction: when the answer comes, the old
        // revisions are gone from the file, so `physical` needs no extra wait.
        guard case .compaction(var resp) = try await result(.compaction(r)) else { throw unexpected() }
        resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
        return resp
    }

    /// etcd's backend quota (etcdserver/quota.go): a request that would take the backend to the
    /// quota raises the NOSPACE alarm (through Raft) and is refused before it is proposed.
    private func checkQuota(cost: Int) async throws(GRPCStatus) {
        guard cost > 0, core.store.dbSize + Int64(cost) >= core.config.effectiveQuota else { return }
        var a = Etcdserverpb.AlarmRequest()
        a.action = .activate; a.memberID = core.shared.memberID; a.alarm = .nospace
        _ = try? await core.propose(.alarm(a))
        throw EtcdError.noSpace
    }

    /// etcd's request costs: 256 bytes of overhead + key + value per put; a txn costs its larger branch.
    static func cost(_ p: Etcdserverpb.PutRequest) -> Int { 256 + p.key.count + p.value.count }

    static func cost(_ t: Etcdserverpb.TxnRequest) -> Int {
        func branch(_ ops: [Etcdserverpb.RequestOp]) -> Int {
            ops.reduce(0) { sum, op in
                if case .requestPut(let p) = op.request { return sum + cost(p) }
                return sum
            }
        }
        return max(branch(t.success), branch(t.failure))
    }

    private func result(_ req: Keelpb.InternalRequest.OneOf_Request) async throws(GRPCStatus) -> ApplyResult {
        if core.shared.isLearner { throw EtcdError.notSupportedForLearner }
        let r = try await core.propose(req)
        if case .failed(let status) = r { throw status }
        return r
    }

    private func unexpected() -> GRPCStatus { GRPCStatus(.internal, "keel: unexpected apply result") }
}
