import GRPC
import KeelAPI
import NIOCore
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
        // Writes (and Compact) only check, encode and propose, then wait for the apply loop, which
        // builds the response: they are answered by a callback on the connection's loop (no task
        // and no future per call), so a write costs two thread switches (to the Raft loop, back
        // from the apply loop). Range reads the store in the handler (a large range takes long):
        // it stays on the pool.
        [
            .unary(Etcdserverpb.KV.range) { req, _ in try await self.range(req) },
            .unaryResponding(Etcdserverpb.KV.put) { req, _, responder in self.put(req, responder) },
            .unaryResponding(Etcdserverpb.KV.deleteRange) { req, _, responder in self.deleteRange(req, responder) },
            .unaryResponding(Etcdserverpb.KV.txn) { req, _, responder in self.txn(req, responder) },
            .unaryResponding(Etcdserverpb.KV.compact) { req, _, responder in self.compact(req, responder) },
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

    /// A Put, answered once applied.
    public func put(_ r: Etcdserverpb.PutRequest, _ responder: UnaryResponder<Etcdserverpb.PutResponse>) {
        do { try RequestValidation.checkPut(r) } catch { return responder.fail(error) }
        answer(.put(r), cost: Self.cost(r), responder) { result throws(GRPCStatus) in
            guard case .put(var resp) = result else { throw unexpected() }
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        }
    }

    /// A DeleteRange, answered once applied.
    public func deleteRange(_ r: Etcdserverpb.DeleteRangeRequest, _ responder: UnaryResponder<Etcdserverpb.DeleteRangeResponse>) {
        do { try RequestValidation.checkDelete(r) } catch { return responder.fail(error) }
        answer(.deleteRange(r), responder) { result throws(GRPCStatus) in
            guard case .deleteRange(var resp) = result else { throw unexpected() }
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        }
    }

    /// A Txn, answered once applied.
    public func txn(_ r: Etcdserverpb.TxnRequest, _ responder: UnaryResponder<Etcdserverpb.TxnResponse>) {
        do { try RequestValidation.checkTxn(r, maxTxnOps: core.config.maxTxnOps) } catch { return responder.fail(error) }
        answer(.txn(r), cost: Self.cost(r), responder) { result throws(GRPCStatus) in
            guard case .txn(var resp) = result else { throw unexpected() }
            let rev = resp.header?.revision ?? core.currentRevision
            // Only the outer header gets cluster/member/term; nested responses keep just the
            // revision, as etcd's.
            resp.header = core.header(revision: rev)
            return resp
        }
    }
    /// A Compact, answered once applied. The store compacts inside the apply transaction: when
    /// the answer comes, the old revisions are gone from the file, so `physical` needs no extra wait.
    public func compact(_ r: Etcdserverpb.CompactionRequest, _ responder: UnaryResponder<Etcdserverpb.CompactionResponse>) {
        answer(.compaction(r), responder) { result throws(GRPCStatus) in
            guard case .compaction(var resp) = result else { throw unexpected() }
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        }
    }

    /// etcd's backend quota (etcdserver/quota.go): false when a request of `cost` fits; else the
    /// NOSPACE alarm is raised (through Raft) and the request is refused, before it is proposed,
    /// with "database space exceeded" once the alarm is applied.
    private func quotaExceeded<R>(cost: Int, _ responder: UnaryResponder<R>) -> Bool {
        guard cost > 0, core.store.dbSize + Int64(cost) >= core.config.effectiveQuota else { return false }
        var a = Etcdserverpb.AlarmRequest()
        a.action = .activate; a.memberID = core.shared.memberID; a.alarm = .nospace
        do {
            try core.proposal(.alarm(a), answeredOn: responder.eventLoop) { _ in responder.fail(EtcdError.noSpace) }
        } catch {
            responder.fail(EtcdError.noSpace)
        }
        return true
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

    /// Proposes `req` (a request of quota `cost` first passes the quota check) and answers through
    /// `responder` with `body`'s response for its apply result: an apply that failed gives its
    /// status, a server stopping before the apply "server stopped".
    private func answer<R>(_ req: Keelpb.InternalRequest.OneOf_Request, cost: Int = 0, _ responder: UnaryResponder<R>,
                           _ body: @escaping @Sendable (ApplyResult) throws(GRPCStatus) -> R) {
        if quotaExceeded(cost: cost, responder) { return }
        if core.shared.isLearner { return responder.fail(EtcdError.notSupportedForLearner) }
        do {
            try core.proposal(req, answeredOn: responder.eventLoop) { result in
                if case .failed(let status) = result { return responder.fail(status) }
                do throws(GRPCStatus) { responder.succeed(try body(result)) } catch { responder.fail(error) }
            }
        } catch {
            responder.fail(error)
        }
    }

    private func unexpected() -> GRPCStatus { GRPCStatus(.internal, "keel: unexpected apply result") }
}
