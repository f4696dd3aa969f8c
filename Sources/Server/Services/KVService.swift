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
        // builds the response: they are answered through futures on the connection's loop (no task
        // per call), so a write costs two thread switches (to the Raft loop, back from the apply
        // loop). Range reads the store in the handler (a large range takes long): it stays on the pool.
        [
            .unary(Etcdserverpb.KV.range) { req, _ in try await self.range(req) },
            .unaryOnLoop(Etcdserverpb.KV.put) { req, _, loop in self.put(req, on: loop) },
            .unaryOnLoop(Etcdserverpb.KV.deleteRange) { req, _, loop in self.deleteRange(req, on: loop) },
            .unaryOnLoop(Etcdserverpb.KV.txn) { req, _, loop in self.txn(req, on: loop) },
            .unaryOnLoop(Etcdserverpb.KV.compact) { req, _, loop in self.compact(req, on: loop) },
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

    /// A Put, answered on `loop` once applied.
    public func put(_ r: Etcdserverpb.PutRequest, on loop: any EventLoop) -> EventLoopFuture<Etcdserverpb.PutResponse> {
        do { try RequestValidation.checkPut(r) } catch { return loop.makeFailedFuture(error) }
        return answer(.put(r), cost: Self.cost(r), on: loop) { result throws(GRPCStatus) in
            guard case .put(var resp) = result else { throw unexpected() }
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        }
    }

    /// A DeleteRange, answered on `loop` once applied.
    public func deleteRange(_ r: Etcdserverpb.DeleteRangeRequest, on loop: any EventLoop)
        -> EventLoopFuture<Etcdserverpb.DeleteRangeResponse> {
        do { try RequestValidation.checkDelete(r) } catch { return loop.makeFailedFuture(error) }
        return answer(.deleteRange(r), on: loop) { result throws(GRPCStatus) in
            guard case .deleteRange(var resp) = result else { throw unexpected() }
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        }
    }

    /// A Txn, answered on `loop` once applied.
    public func txn(_ r: Etcdserverpb.TxnRequest, on loop: any EventLoop) -> EventLoopFuture<Etcdserverpb.TxnResponse> {
        do { try RequestValidation.checkTxn(r, maxTxnOps: core.config.maxTxnOps) } catch { return loop.makeFailedFuture(error) }
        return answer(.txn(r), cost: Self.cost(r), on: loop) { result throws(GRPCStatus) in
            guard case .txn(var resp) = result else { throw unexpected() }
            let rev = resp.header?.revision ?? core.currentRevision
            // Only the outer header gets cluster/member/term; nested responses keep just the
            // revision, as etcd's.
            resp.header = core.header(revision: rev)
            return resp
        }
    }
    /// A Compact, answered on `loop` once applied. The store compacts inside the apply
    /// transaction: when the answer comes, the old revisions are gone from the file, so `physical`
    /// needs no extra wait.
    public func compact(_ r: Etcdserverpb.CompactionRequest, on loop: any EventLoop)
        -> EventLoopFuture<Etcdserverpb.CompactionResponse> {
        answer(.compaction(r), on: loop) { result throws(GRPCStatus) in
            guard case .compaction(var resp) = result else { throw unexpected() }
            resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
            return resp
        }
    }

    /// etcd's backend quota (etcdserver/quota.go): nil when a request of `cost` fits; else the
    /// NOSPACE alarm is raised (through Raft) and the request is refused, before it is proposed,
    /// with "database space exceeded" once the alarm is applied.
    private func quotaExceeded<R>(cost: Int, on loop: any EventLoop) -> EventLoopFuture<R>? {
        guard cost > 0, core.store.dbSize + Int64(cost) >= core.config.effectiveQuota else { return nil }
        var a = Etcdserverpb.AlarmRequest()
        a.action = .activate; a.memberID = core.shared.memberID; a.alarm = .nospace
        guard let raised = try? core.proposal(.alarm(a), answeredOn: loop) else { return loop.makeFailedFuture(EtcdError.noSpace) }
        let refused = loop.makePromise(of: R.self)
        raised.whenComplete { _ in refused.fail(EtcdError.noSpace) }
        return refused.futureResult
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

    /// Proposes `req` (a request of quota `cost` first passes the quota check) and answers on `loop`
    /// with `body`'s response for its apply result: an apply that failed gives its status, a server
    /// stopping before the apply "server stopped".
    private func answer<R: Sendable>(_ req: Keelpb.InternalRequest.OneOf_Request, cost: Int = 0, on loop: any EventLoop,
                                     _ body: @escaping @Sendable (ApplyResult) throws(GRPCStatus) -> R) -> EventLoopFuture<R> {
        if let full: EventLoopFuture<R> = quotaExceeded(cost: cost, on: loop) { return full }
        if core.shared.isLearner { return loop.makeFailedFuture(EtcdError.notSupportedForLearner) }
        let applied: EventLoopFuture<ApplyResult>
        do { applied = try core.proposal(req, answeredOn: loop) } catch { return loop.makeFailedFuture(error) }
        let promise = loop.makePromise(of: R.self)
        applied.whenComplete { result in
            switch result {
            case .success(.failed(let status)): promise.fail(status)
            case .success(let r):
                do { promise.succeed(try body(r)) } catch { promise.fail(error) }
            case .failure: promise.fail(EtcdError.stopped)
            }
        }
        return promise.futureResult
    }

    private func unexpected() -> GRPCStatus { GRPCStatus(.internal, "keel: unexpected apply result") }
}
