// KeelClient: an etcd v3 client over Keel's GRPC transport (works against Keel and etcd).
//
//     let client = KeelClient(endpoints: ["127.0.0.1:2379", "127.0.0.1:22379"])
//     try await client.put("k", "v")
//     let r = try await client.get("k")          // Etcdserverpb.RangeResponse
//     await client.close()
//
// Scope as landed (see the session report): unary KV calls (range, put, delete-range, txn, compact)
// over several endpoints with a round-robin balancer. An endpoint that fails to connect or answers
// UNAVAILABLE is marked unhealthy for `unhealthyFor` and skipped (probed again afterwards; if all are
// unhealthy every one is tried). Reads (range) are retried on the next endpoint; a write (put, delete,
// txn) whose request may have reached a server is never resent: it throws `.unknownOutcome`.
import GRPC
import KeelAPI
import Synchronization

public enum KeelClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server answered with a gRPC status: etcd's code and message (e.g. "etcdserver: mvcc: required
    /// revision has been compacted", OUT_OF_RANGE).
    case server(code: GRPCStatusCode, message: String)
    /// A write's connection failed after the request may have been sent: it may or may not have applied.
    case unknownOutcome(endpoint: String, reason: String)
    /// Every endpoint failed (the last failure's text).
    case unavailable(String)
    /// No endpoints configured or an endpoint is not "host:port".
    case badEndpoint(String)

    public var description: String {
        switch self {
        case .server(let code, let message): return "\(code): \(message)"
        case .unknownOutcome(let e, let r): return "outcome unknown (\(e)): \(r)"
        case .unavailable(let r): return "all endpoints unavailable: \(r)"
        case .badEndpoint(let e): return "bad endpoint \(e.debugDescription)"
        }
    }
}

public final class KeelClient: Sendable {
    public struct Endpoint: Sendable {
        public let address: String
        let client: GRPCClient
    }

    public let endpoints: [Endpoint]
    /// How long a failed endpoint is skipped before it is probed again.
    public let unhealthyFor: Duration
    /// Default per-call deadline.
    public let timeout: Duration?
    private let state: Mutex<(next: Int, downUntil: [ContinuousClock.Instant?])>

    public init(endpoints: [String], timeout: Duration? = .seconds(5), unhealthyFor: Duration = .seconds(1)) throws(KeelClientError) {
        guard !endpoints.isEmpty else { throw .badEndpoint("") }
        var eps: [Endpoint] = []
        for e in endpoints {
            var s = Substring(e)
            if s.hasPrefix("http://") { s = s.dropFirst(7) }
            guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), port > 0, port < 65536
            else { throw .badEndpoint(e) }
            eps.append(Endpoint(address: e, client: GRPCClient(host: String(s[..<colon]), port: port)))
        }
        self.endpoints = eps
        self.timeout = timeout
        self.unhealthyFor = unhealthyFor
        self.state = Mutex((0, Array(repeating: nil, count: eps.count)))
    }

    public func close() async {
        for e in endpoints { await e.client.close() }
    }

    /// Endpoint indices in the order to try: healthy ones round robin from the cursor, then unhealthy ones.
    func order() -> [Int] {
        let now = ContinuousClock.now
        return state.withLock { st in
            let n = endpoints.count
            let start = st.next
            st.next = (st.next + 1) % n
            let all = (0..<n).map { (start + $0) % n }
            let healthy = all.filter { st.downUntil[$0].map { $0 <= now } ?? true }
            return healthy + all.filter { !healthy.contains($0) }
        }
    }

    func mark(_ i: Int, healthy: Bool) {
        let until = healthy ? nil : ContinuousClock.now + unhealthyFor
        state.withLock { $0.downUntil[i] = until }
    }

    /// Endpoint indices currently considered healthy.
    public var healthyEndpoints: [String] {
        let now = ContinuousClock.now
        return state.withLock { st in
            endpoints.indices.filter { st.downUntil[$0].map { $0 <= now } ?? true }.map { endpoints[$0].address }
        }
    }

    /// One unary call through the balancer. `idempotent` calls move on to the next endpoint on UNAVAILABLE;
    /// others do so only when the connection could not be made (nothing was sent).
    func call<Req, Resp>(_ method: MethodDescriptor<Req, Resp>, _ request: Req, idempotent: Bool,
                         timeout: Duration?) async throws(KeelClientError) -> Resp {
        var last = "no endpoint tried"
        for i in order() {
            let ep = endpoints[i]
            do {
                let r = try await ep.client.unary(method, request, options: CallOptions(timeout: timeout ?? self.timeout))
                mark(i, healthy: true)
                return r
            } catch let st as GRPCStatus {
                guard st.code == .unavailable else { throw .server(code: st.code, message: st.message) }
                mark(i, healthy: false)
                last = "\(ep.address): \(st.message)"
                // GRPCClient reports a failed connect as "connect to ... failed": nothing was sent.
                if !idempotent && !st.message.hasPrefix("connect to ") {
                    throw .unknownOutcome(endpoint: ep.address, reason: st.message)
                }
            } catch {
                throw .unavailable("\(ep.address): \(error)")
            }
        }
        throw .unavailable(last)
    }

    // MARK: KV

    /// Range with every option of etcd's RangeRequest (set them on the request).
    public func range(_ r: Etcdserverpb.RangeRequest, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.RangeResponse {
        try await call(Etcdserverpb.KV.range, r, idempotent: true, timeout: timeout)
    }

    /// Get one key, or a prefix (`prefix: true`).
    public func get(_ key: String, prefix: Bool = false, revision: Int64 = 0, limit: Int64 = 0,
                    keysOnly: Bool = false) async throws(KeelClientError) -> Etcdserverpb.RangeResponse {
        var r = Etcdserverpb.RangeRequest()
        r.key = Array(key.utf8)
        if prefix { r.rangeEnd = Self.prefixEnd(r.key) }
        r.revision = revision
        r.limit = limit
        r.keysOnly = keysOnly
        return try await range(r)
    }

    @discardableResult
    public func put(_ key: String, _ value: String, lease: Int64 = 0, prevKV: Bool = false)
        async throws(KeelClientError) -> Etcdserverpb.PutResponse {
        var r = Etcdserverpb.PutRequest()
        r.key = Array(key.utf8)
        r.value = Array(value.utf8)
        r.lease = lease
        r.prevKv = prevKV
        return try await call(Etcdserverpb.KV.put, r, idempotent: false, timeout: nil)
    }

    @discardableResult
    public func delete(_ key: String, prefix: Bool = false, prevKV: Bool = false)
        async throws(KeelClientError) -> Etcdserverpb.DeleteRangeResponse {
        var r = Etcdserverpb.DeleteRangeRequest()
        r.key = Array(key.utf8)
        if prefix { r.rangeEnd = Self.prefixEnd(r.key) }
        r.prevKv = prevKV
        return try await call(Etcdserverpb.KV.deleteRange, r, idempotent: false, timeout: nil)
    }

    /// DeleteRange with every option of etcd's request.
    public func deleteRange(_ r: Etcdserverpb.DeleteRangeRequest) async throws(KeelClientError)
        -> Etcdserverpb.DeleteRangeResponse {
        try await call(Etcdserverpb.KV.deleteRange, r, idempotent: false, timeout: nil)
    }

    public func txn(_ r: Etcdserverpb.TxnRequest) async throws(KeelClientError) -> Etcdserverpb.TxnResponse {
        try await call(Etcdserverpb.KV.txn, r, idempotent: false, timeout: nil)
    }

    @discardableResult
    public func compact(_ revision: Int64, physical: Bool = false) async throws(KeelClientError)
        -> Etcdserverpb.CompactionResponse {
        var r = Etcdserverpb.CompactionRequest()
        r.revision = revision
        r.physical = physical
        // Compacting the same revision twice is an error, not a second effect: safe to retry.
        return try await call(Etcdserverpb.KV.compact, r, idempotent: true, timeout: nil)
    }

    /// etcd's prefix range end: the key with its last byte below 0xff incremented, shorter; "\0" for all.
    public static func prefixEnd(_ key: [UInt8]) -> [UInt8] {
        var end = key
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }
}
