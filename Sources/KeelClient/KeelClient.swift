// KeelClient: an etcd v3 client over Keel's GRPC transport (works against Keel and etcd), following the
// semantics of etcd's Go clientv3. See README.swift for the layout and an example.
//
//     let client = try KeelClient(endpoints: ["127.0.0.1:2379", "127.0.0.1:22379"])
//     try await client.put("k", "v")
//     let r = try await client.get("k")          // Etcdserverpb.RangeResponse
//     await client.close()
//
// Balancer: unary calls go round robin over the endpoints. An endpoint that fails to connect (within
// `dialTimeout`) or answers UNAVAILABLE is marked unhealthy for `unhealthyFor` and skipped (probed again
// afterwards; if all are unhealthy every one is tried). Idempotent calls (reads, status, ...) are retried on
// the next endpoint; a write (put, delete, txn, grant, ...) whose request may have reached a server is never
// resent: it throws `.unknownOutcome`. A write is moved on only when nothing was sent (the dial failed) or
// the member refused it before proposing ("etcdserver: no leader"), as clientv3's safe-retry rule; a
// cluster-wide refusal ("etcdserver: unhealthy cluster", "not capable") is the call's answer (`.server`).
import GRPC
import KeelAPI
import NIOCore
import NIOPosix
import Synchronization

public enum KeelClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server answered with a gRPC status: etcd's code and message (e.g. "etcdserver: mvcc: required
    /// revision has been compacted", OUT_OF_RANGE). `etcdError` names the ones etcd defines.
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

    /// The etcd error this is, when the server sent one of etcd's errors (matched on code and message).
    public var etcdError: EtcdError? {
        guard case .server(let code, let message) = self, let e = EtcdError(rawValue: message), e.code == code
        else { return nil }
        return e
    }

    /// The call ended because its task was cancelled (gRPC CANCELLED raised by this client).
    public var isCancelled: Bool {
        if case .server(let code, _) = self { return code == .cancelled }
        return false
    }

    /// The call's deadline passed (DEADLINE_EXCEEDED, locally or from the server).
    public var isDeadlineExceeded: Bool {
        if case .server(let code, _) = self { return code == .deadlineExceeded }
        return false
    }

    static let cancelled = KeelClientError.server(code: .cancelled, message: "context canceled")
}

/// etcd's server errors (api/v3rpc/rpctypes) with their exact messages; `code` is the gRPC code etcd uses.
public enum EtcdError: String, Sendable, CaseIterable {
    case emptyKey = "etcdserver: key is not provided"
    case keyNotFound = "etcdserver: key not found"
    case valueProvided = "etcdserver: value is provided"
    case leaseProvided = "etcdserver: lease is provided"
    case tooManyOps = "etcdserver: too many operations in txn request"
    case duplicateKey = "etcdserver: duplicate key given in txn request"
    case compacted = "etcdserver: mvcc: required revision has been compacted"
    case futureRevision = "etcdserver: mvcc: required revision is a future revision"
    case noSpace = "etcdserver: mvcc: database space exceeded"
    case leaseNotFound = "etcdserver: requested lease not found"
    case leaseExists = "etcdserver: lease already exists"
    case leaseTTLTooLarge = "etcdserver: too large lease TTL"
    case memberExists = "etcdserver: member ID already exist"
    case peerURLExists = "etcdserver: Peer URLs already exists"
    case memberNotEnoughStarted = "etcdserver: re-configuration failed due to not enough started members"
    case memberBadURLs = "etcdserver: given member URLs are invalid"
    case memberNotFound = "etcdserver: member not found"
    case memberNotLearner = "etcdserver: can only promote a learner member"
    case learnerNotReady = "etcdserver: can only promote a learner member which is in sync with leader"
    case tooManyLearners = "etcdserver: too many learner members in cluster"
    case requestTooLarge = "etcdserver: request is too large"
    case tooManyRequests = "etcdserver: too many requests"
    case noLeader = "etcdserver: no leader"
    case notLeader = "etcdserver: not leader"
    case leaderChanged = "etcdserver: leader changed"
    case notCapable = "etcdserver: not capable"
    case stopped = "etcdserver: server stopped"
    case timeout = "etcdserver: request timed out"
    case timeoutDueToLeaderFail = "etcdserver: request timed out, possibly due to previous leader failure"
    case timeoutDueToConnectionLost = "etcdserver: request timed out, possibly due to connection lost"
    case unhealthy = "etcdserver: unhealthy cluster"
    case corrupt = "etcdserver: corrupt cluster"
    case notSupportedForLearner = "etcdserver: rpc not supported for learner"
    case badLeaderTransferee = "etcdserver: bad leader transferee"
    case authNotEnabled = "etcdserver: authentication is not enabled"
    case permissionDenied = "etcdserver: permission denied"

    public var code: GRPCStatusCode {
        switch self {
        case .emptyKey, .keyNotFound, .valueProvided, .leaseProvided, .tooManyOps, .duplicateKey, .memberBadURLs,
             .requestTooLarge:
            return .invalidArgument
        case .compacted, .futureRevision, .leaseTTLTooLarge: return .outOfRange
        case .noSpace, .tooManyRequests: return .resourceExhausted
        case .leaseNotFound, .memberNotFound: return .notFound
        case .leaseExists, .memberExists, .peerURLExists, .memberNotEnoughStarted, .memberNotLearner, .learnerNotReady,
             .tooManyLearners, .notLeader, .badLeaderTransferee, .authNotEnabled:
            return .failedPrecondition
        case .noLeader, .leaderChanged, .notCapable, .stopped, .timeout, .timeoutDueToLeaderFail,
             .timeoutDueToConnectionLost, .unhealthy, .notSupportedForLearner:
            return .unavailable
        case .corrupt: return .dataLoss
        case .permissionDenied: return .permissionDenied
        }
    }
}

public final class KeelClient: Sendable {
    public struct Endpoint: Sendable {
        public let address: String
        let host: String
        let port: Int
        let client: GRPCClient
    }

    public struct Configuration: Sendable {
        /// "host:port" or "http://host:port".
        public var endpoints: [String]
        /// Default per-call deadline (nil: none).
        public var timeout: Duration? = .seconds(5)
        /// Bound on establishing a TCP connection to an endpoint that is not connected yet (nil: the OS's).
        public var dialTimeout: Duration? = .seconds(5)
        /// How long a failed endpoint is skipped before it is probed again.
        public var unhealthyFor: Duration = .seconds(1)
        /// Send writes (put, delete, txn, compact, lease grant/revoke) to the Raft leader first; the leader is
        /// learnt with Maintenance.Status and forgotten when a call on it fails.
        public var pinWritesToLeader = false
        public init(endpoints: [String]) { self.endpoints = endpoints }
    }

    struct State {
        var next = 0
        var downUntil: [ContinuousClock.Instant?]
        /// True once a call on the endpoint succeeded; false again after a connection failure (dial next time).
        var connected: [Bool]
        /// Endpoint index of the leader, when pinning is on and it is known.
        var leader: Int?
        var closed = false
        var background: [Int: Task<Void, Never>] = [:]
        var nextBackground = 0
    }

    public let endpoints: [Endpoint]
    public let configuration: Configuration
    public var unhealthyFor: Duration { configuration.unhealthyFor }
    public var timeout: Duration? { configuration.timeout }
    let state: Mutex<State>

    public convenience init(endpoints: [String], timeout: Duration? = .seconds(5), dialTimeout: Duration? = .seconds(5),
                            unhealthyFor: Duration = .seconds(1)) throws(KeelClientError) {
        var c = Configuration(endpoints: endpoints)
        c.timeout = timeout
        c.dialTimeout = dialTimeout
        c.unhealthyFor = unhealthyFor
        try self.init(configuration: c)
    }

    public init(configuration: Configuration) throws(KeelClientError) {
        guard !configuration.endpoints.isEmpty else { throw .badEndpoint("") }
        var eps: [Endpoint] = []
        for e in configuration.endpoints {
            var s = Substring(e)
            if s.hasPrefix("http://") { s = s.dropFirst(7) }
            guard let colon = s.lastIndex(of: ":"), colon > s.startIndex,
                  let port = Int(s[s.index(after: colon)...]), port > 0, port < 65536
            else { throw .badEndpoint(e) }
            let host = String(s[..<colon])
            eps.append(Endpoint(address: e, host: host, port: port, client: GRPCClient(host: host, port: port)))
        }
        self.endpoints = eps
        self.configuration = configuration
        self.state = Mutex(State(downUntil: Array(repeating: nil, count: eps.count),
                                 connected: Array(repeating: false, count: eps.count)))
    }

    /// Stops every background task (watches, keep-alives) and closes the connections.
    public func close() async {
        let tasks = state.withLock { st in
            st.closed = true
            let t = Array(st.background.values)
            st.background = [:]
            return t
        }
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        for e in endpoints { await e.client.close() }
    }

    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Runs `body` as a background task owned by the client: `close()` cancels it and waits for it.
    /// Returns nil when the client is closed already.
    func spawn(_ body: @escaping @Sendable () async -> Void) -> Task<Void, Never>? {
        state.withLock { st -> Task<Void, Never>? in
            guard !st.closed else { return nil }
            let key = st.nextBackground
            st.nextBackground += 1
            let task = Task { [weak self] in
                await body()
                _ = self?.state.withLock { $0.background.removeValue(forKey: key) }
            }
            st.background[key] = task
            return task
        }
    }

    // MARK: balancer

    /// Endpoint indices in the order to try: healthy ones round robin from the cursor, then unhealthy ones.
    /// With `leaderFirst`, the known leader goes first.
    func order(leaderFirst: Bool = false) -> [Int] {
        let now = ContinuousClock.now
        return state.withLock { st in
            let n = endpoints.count
            let start = st.next
            st.next = (st.next + 1) % n
            let all = (0..<n).map { (start + $0) % n }
            var healthy = all.filter { st.downUntil[$0].map { $0 <= now } ?? true }
            if leaderFirst, let l = st.leader, let at = healthy.firstIndex(of: l) {
                healthy.remove(at: at)
                healthy.insert(l, at: 0)
            }
            return healthy + all.filter { !healthy.contains($0) }
        }
    }

    func mark(_ i: Int, healthy: Bool) {
        let until = healthy ? nil : ContinuousClock.now + configuration.unhealthyFor
        state.withLock { st in
            st.downUntil[i] = until
            st.connected[i] = healthy
            if !healthy && st.leader == i { st.leader = nil }
        }
    }

    /// Endpoint addresses currently considered healthy.
    public var healthyEndpoints: [String] {
        let now = ContinuousClock.now
        return state.withLock { st in
            endpoints.indices.filter { st.downUntil[$0].map { $0 <= now } ?? true }.map { endpoints[$0].address }
        }
    }

    /// Makes sure endpoint `i` accepts TCP connections within the dial timeout before a call is sent on a
    /// connection that is not known to work (GRPCClient's own connect has no bound of ours). Nothing is sent.
    func dial(_ i: Int) async throws(KeelClientError) {
        guard let limit = configuration.dialTimeout, !state.withLock({ $0.connected[i] }) else { return }
        let ep = endpoints[i]
        let c = limit.components
        let nanos = c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(max(nanos, 1_000_000)))
                .connect(host: ep.host, port: ep.port).get()
            try? await channel.close()
        } catch {
            throw .unavailable("\(ep.address): dial failed: \(error)")
        }
    }

    /// One unary call through the balancer. `idempotent` calls move on to the next endpoint on UNAVAILABLE;
    /// others do so only when nothing was sent (dial/connect failed, or "etcdserver: no leader").
    /// `write` sends it to the leader first when `pinWritesToLeader` is on.
    public func call<Req, Resp>(_ method: MethodDescriptor<Req, Resp>, _ request: Req, idempotent: Bool,
                                timeout: Duration? = nil, write: Bool = false) async throws(KeelClientError) -> Resp {
        if write && configuration.pinWritesToLeader && state.withLock({ $0.leader == nil }) {
            await learnLeader()
        }
        var last = "no endpoint tried"
        for i in order(leaderFirst: write && configuration.pinWritesToLeader) {
            if Task.isCancelled { throw .cancelled }
            do {
                return try await call(on: i, method, request, idempotent: idempotent, timeout: timeout)
            } catch {
                guard case .unavailable(let why) = error else { throw error }
                last = why
            }
        }
        throw .unavailable(last)
    }

    /// One attempt on endpoint `i`: `.unavailable` when another endpoint may be tried.
    func call<Req, Resp>(on i: Int, _ method: MethodDescriptor<Req, Resp>, _ request: Req, idempotent: Bool,
                         timeout: Duration?) async throws(KeelClientError) -> Resp {
        let ep = endpoints[i]
        do {
            try await dial(i)
        } catch {
            mark(i, healthy: false)
            throw error
        }
        do {
            let r = try await ep.client.unary(method, request,
                                              options: CallOptions(timeout: timeout ?? configuration.timeout))
            mark(i, healthy: true)
            return r
        } catch let st as GRPCStatus {
            if st.code == .cancelled && Task.isCancelled { throw .cancelled }
            guard st.code == .unavailable else { throw .server(code: st.code, message: st.message) }
            let refusal = EtcdError(rawValue: st.message)
            switch refusal {
            case .noLeader?, .notSupportedForLearner?:
                // Refused before proposing, by this member only: another one may take it (also a write).
                throw .unavailable("\(ep.address): \(st.message)")
            case .unhealthy?, .notCapable?:
                // The cluster refused it before proposing: a definite answer, not worth another member.
                throw .server(code: st.code, message: st.message)
            default:
                break
            }
            mark(i, healthy: false)
            // GRPCClient reports a failed connect as "connect to ... failed": nothing was sent. Anything else
            // (a lost connection, "request timed out", "leader changed") may have been applied.
            if !idempotent && !st.message.hasPrefix("connect to ") {
                throw .unknownOutcome(endpoint: ep.address, reason: st.message)
            }
            throw .unavailable("\(ep.address): \(st.message)")
        } catch {
            mark(i, healthy: false)
            if !idempotent { throw .unknownOutcome(endpoint: ep.address, reason: "\(error)") }
            throw .unavailable("\(ep.address): \(error)")
        }
    }

    /// One call on a given endpoint (Maintenance calls address members one by one, as etcdctl does).
    public func call<Req, Resp>(endpoint: String, _ method: MethodDescriptor<Req, Resp>, _ request: Req,
                                timeout: Duration? = nil) async throws(KeelClientError) -> Resp {
        guard let i = endpoints.firstIndex(where: { $0.address == endpoint }) else { throw .badEndpoint(endpoint) }
        return try await call(on: i, method, request, idempotent: false, timeout: timeout)
    }

    // MARK: leader

    /// Asks every endpoint for its Status and remembers the one that says it is the leader (its member ID
    /// equals the leader ID it reports). Returns its address, nil if none answered as leader.
    @discardableResult
    public func learnLeader() async -> String? {
        for i in endpoints.indices {
            guard let s = try? await call(on: i, Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest(),
                                          idempotent: true, timeout: nil),
                  let member = s.header?.memberId, member != 0, s.leader == member
            else { continue }
            state.withLock { $0.leader = i }
            return endpoints[i].address
        }
        return nil
    }

    /// The endpoint currently pinned as leader (nil when unknown or pinning is off).
    public var pinnedLeader: String? {
        state.withLock { $0.leader }.map { endpoints[$0].address }
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
