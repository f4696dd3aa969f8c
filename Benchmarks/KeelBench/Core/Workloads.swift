import GRPC
import KeelAPI
import Synchronization

/// Parameters every workload shares.
public struct CommonParams: Sendable {
    public var endpoints: [String]
    public var conns: Int
    public var clients: Int
    public var total: Int?
    public var durationSeconds: Double?
    public var rate: Double
    public var timeoutSeconds: Double?
    public var progress: Bool
    public var executor: WorkerExecutor

    public init(endpoints: [String], conns: Int, clients: Int, total: Int?, durationSeconds: Double?, rate: Double,
                timeoutSeconds: Double?, progress: Bool, executor: WorkerExecutor = .callback) {
        self.executor = executor
        self.endpoints = endpoints
        self.conns = conns
        self.clients = clients
        self.total = total
        self.durationSeconds = durationSeconds
        self.rate = rate
        self.timeoutSeconds = timeoutSeconds
        self.progress = progress
    }

    func validate() throws(BenchError) {
        guard clients >= 1 else { throw BenchError("--clients must be at least 1") }
        guard conns >= 1 else { throw BenchError("--conns must be at least 1") }
        guard rate >= 0 else { throw BenchError("--rate must not be negative") }
        if let t = total, t < 0 { throw BenchError("--total must not be negative") }
        guard total != nil || durationSeconds != nil else { throw BenchError("give --total or --duration") }
    }

    func runner(_ conns: Connections) -> LoadRunner {
        LoadRunner(total: total, durationSeconds: durationSeconds, rate: rate, placement: { conns.executor($0) })
    }
    func label(_ s: String) -> String? { progress ? s : nil }
}

/// Read consistency of a Range (etcd's benchmark: `l` linearizable, `s` serializable).
public enum Consistency: String, Sendable, CaseIterable {
    case linearizable = "l"
    case serializable = "s"
}

/// The workloads of keel-bench. Each opens its connections, warms them up, runs, closes them and
/// returns its phases (the first is the headline one).
public enum Workloads {
    static func withConnections<R>(_ c: CommonParams, _ body: (Connections) async throws -> R) async throws -> R {
        try c.validate()
        let conns = try Connections(endpoints: c.endpoints, conns: c.conns, timeoutSeconds: c.timeoutSeconds, mode: c.executor)
        do {
            try await conns.warmUp()
            let r = try await body(conns)
            await conns.close()
            return r
        } catch {
            await conns.close()
            throw error
        }
    }

    // MARK: put

    static func putRequest(_ key: [UInt8], _ value: [UInt8]) -> Etcdserverpb.PutRequest {
        var req = Etcdserverpb.PutRequest()
        req.key = key
        req.value = value
        return req
    }

    public static func put(_ c: CommonParams, keys: KeyGenerator, valSize: Int) async throws -> [PhaseResult] {
        let value = Values.filler(size: valSize)
        return try await withConnections(c) { conns in
            try await c.runner(conns).runUnary(names: ["put"], clients: c.clients, progressLabel: c.label("put"), conns: conns,
                                               UnaryOp(Etcdserverpb.KV.put) { i in putRequest(keys.key(keys.index(forRequest: i)), value) })
        }
    }

    /// Puts keys 0 ..< count (not part of the measured phase; reported as phase "prefill").
    static func runPrefill(_ c: CommonParams, _ conns: Connections, keys: KeyGenerator, count: Int, valSize: Int) async throws -> PhaseResult? {
        guard count > 0 else { return nil }
        let value = Values.filler(size: valSize)
        let runner = LoadRunner(total: count, durationSeconds: nil, rate: 0, placement: { conns.executor($0) })
        let r = try await runner.runUnary(names: ["prefill"], clients: c.clients, progressLabel: c.label("prefill"), conns: conns,
                                          UnaryOp(Etcdserverpb.KV.put) { i in putRequest(keys.key(i % keys.space), value) })[0]
        if r.recorder.errorCount > 0 {
            throw BenchError("prefill failed: \(r.recorder.errors.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", "))")
        }
        return r
    }

    // MARK: range

    /// `fixed`: every request reads [key, end) as given (etcd's `benchmark range key [end]`); otherwise
    /// request i reads `rangeSize` consecutive keys starting at the generator's key for i.
    public static func range(_ c: CommonParams, keys: KeyGenerator, fixed: (key: [UInt8], end: [UInt8])?,
                             rangeSize: Int, consistency: Consistency, limit: Int64, prefill: Int,
                             valSize: Int) async throws -> [PhaseResult] {
        guard rangeSize >= 1 else { throw BenchError("--range-size must be at least 1") }
        return try await withConnections(c) { conns in
            var phases: [PhaseResult] = []
            let pre = try await runPrefill(c, conns, keys: keys, count: prefill, valSize: valSize)
            let runner = c.runner(conns)
            let main = try await runner.runUnary(names: ["range"], clients: c.clients, progressLabel: c.label("range"), conns: conns,
                                                 UnaryOp(Etcdserverpb.KV.range) { i in
                rangeRequest(keys: keys, fixed: fixed, i: i, rangeSize: rangeSize, consistency: consistency, limit: limit)
            })
            phases += main
            if let pre { phases.append(pre) }
            return phases
        }
    }

    static func rangeRequest(keys: KeyGenerator, fixed: (key: [UInt8], end: [UInt8])?, i: Int, rangeSize: Int,
                             consistency: Consistency, limit: Int64) -> Etcdserverpb.RangeRequest {
        var req = Etcdserverpb.RangeRequest()
        if let fixed {
            req.key = fixed.key
            req.rangeEnd = fixed.end
        } else {
            let start = keys.index(forRequest: i)
            req.key = keys.key(start)
            if rangeSize > 1 { req.rangeEnd = keys.key(start + rangeSize) }
        }
        req.serializable = consistency == .serializable
        req.limit = limit
        return req
    }

    // MARK: txn-put

    public static func txnPut(_ c: CommonParams, keys: KeyGenerator, valSize: Int, opsPerTxn: Int) async throws -> [PhaseResult] {
        guard opsPerTxn >= 1 else { throw BenchError("--txn-ops must be at least 1") }
        guard opsPerTxn <= keys.space else { throw BenchError("--txn-ops \(opsPerTxn) exceeds the key space \(keys.space) (keys of one txn must differ)") }
        let value = Values.filler(size: valSize)
        return try await withConnections(c) { conns in
            let op = UnaryOp(Etcdserverpb.KV.txn, check: { r in
                guard r.succeeded, r.responses.count == opsPerTxn else {
                    throw BenchError("MISMATCH: txn answered succeeded=\(r.succeeded) with \(r.responses.count) responses")
                }
            }) { i in
                var txn = Etcdserverpb.TxnRequest()
                let base = keys.index(forRequest: i)
                for j in 0..<opsPerTxn {
                    var op = Etcdserverpb.RequestOp()
                    op.request = .requestPut(putRequest(keys.key((base + j) % keys.space), value))
                    txn.success.append(op)
                }
                return txn
            }
            return try await c.runner(conns).runUnary(names: ["txn-put"], clients: c.clients, progressLabel: c.label("txn-put"),
                                                      conns: conns, op)
        }
    }

    // MARK: txn-mixed

    /// Each request is a Txn with one Range (a read) or one Put (a write); `readsPerWrite` reads per
    /// write on average (etcd's --rw-ratio). Two phases: "read" and "write".
    public static func txnMixed(_ c: CommonParams, keys: KeyGenerator, valSize: Int, readsPerWrite: Double,
                                rangeSize: Int, consistency: Consistency, prefill: Int) async throws -> [PhaseResult] {
        guard readsPerWrite >= 0 else { throw BenchError("--rw-ratio must not be negative") }
        guard rangeSize >= 1 else { throw BenchError("--range-size must be at least 1") }
        let value = Values.filler(size: valSize)
        let readsPerMillion = UInt64((readsPerWrite / (1 + readsPerWrite) * 1_000_000).rounded())
        return try await withConnections(c) { conns in
            let pre = try await runPrefill(c, conns, keys: keys, count: prefill, valSize: valSize)
            let isRead = { @Sendable (i: Int) -> Bool in
                KeyGenerator.mix(UInt64(truncatingIfNeeded: i) ^ 0xA5A5_5A5A) % 1_000_000 < readsPerMillion
            }
            let op = UnaryOp(Etcdserverpb.KV.txn, phase: { isRead($0) ? 0 : 1 }) { i in
                var txn = Etcdserverpb.TxnRequest()
                var op = Etcdserverpb.RequestOp()
                if isRead(i) {
                    op.request = .requestRange(rangeRequest(keys: keys, fixed: nil, i: i, rangeSize: rangeSize,
                                                            consistency: consistency, limit: 0))
                } else {
                    op.request = .requestPut(putRequest(keys.key(keys.index(forRequest: i)), value))
                }
                txn.success = [op]
                return txn
            }
            var phases = try await c.runner(conns).runUnary(names: ["read", "write"], clients: c.clients,
                                                            progressLabel: c.label("txn-mixed"), conns: conns, op)
            if let pre { phases.append(pre) }
            return phases
        }
    }

    // MARK: lease-keepalive

    /// Each client grants a lease (TTL `ttl` s) and sends keep-alives for it one at a time over its own
    /// LeaseKeepAlive stream; latency is request sent -> response received. Leases are revoked at the end.
    public static func leaseKeepAlive(_ c: CommonParams, ttl: Int64) async throws -> [PhaseResult] {
        guard ttl >= 1 else { throw BenchError("--ttl must be at least 1") }
        return try await withConnections(c) { conns in
            let runner = c.runner(conns)
            return await runner.run(names: ["lease-keepalive"], clients: c.clients, progressLabel: c.label("lease-keepalive")) { w in
                var rec = Recorder()
                let client = conns.client(w)
                var grant = Etcdserverpb.LeaseGrantRequest()
                grant.ttl = ttl
                let id: Int64
                do {
                    id = try await client.unary(Etcdserverpb.Lease.leaseGrant, grant, options: conns.options).id
                } catch {
                    // Without a lease this client has nothing to keep alive; its share goes to the others.
                    rec.error(error)
                    return [rec]
                }
                var req = Etcdserverpb.LeaseKeepAliveRequest()
                req.id = id
                let request = req
                var finished = false
                var failures = 0
                while !finished && failures < 100 {
                    do {
                        // No per-call timeout on the stream: it lives for the whole run.
                        try await client.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) { writer, responses in
                            var it = responses.makeAsyncIterator()
                            while true {
                                guard await runner.next() != nil else {
                                    finished = true
                                    writer.finish()
                                    return
                                }
                                let t0 = monotonicNanos()
                                do {
                                    try await writer.send(request)
                                    guard let r = try await it.next() else { throw GRPCStatus(.unavailable, "keep-alive stream ended") }
                                    guard r.id == id, r.ttl > 0 else { throw BenchError("MISMATCH: keep-alive for \(id) answered id \(r.id) ttl \(r.ttl)") }
                                    rec.histogram.record(nanos: monotonicNanos() &- t0)
                                    runner.completed.add(1, ordering: .relaxed)
                                } catch {
                                    rec.error(error)
                                    runner.completed.add(1, ordering: .relaxed)
                                    throw error   // open a new stream
                                }
                            }
                        }
                    } catch {
                        failures += 1
                        try? await Task.sleep(nanoseconds: 10_000_000)
                    }
                }
                var revoke = Etcdserverpb.LeaseRevokeRequest()
                revoke.id = id
                _ = try? await client.unary(Etcdserverpb.Lease.leaseRevoke, revoke, options: conns.options)
                return [rec]
            }
        }
    }
}
