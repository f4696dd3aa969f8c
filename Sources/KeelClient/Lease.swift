// Leases: grant, revoke, time-to-live, list (unary), and keep-alive in the background.
import GRPC
import KeelAPI

/// How a keep-alive ended.
public enum LeaseKeepAliveEnd: Sendable, Equatable {
    /// `stop()`, the owning task's cancellation or `client.close()`.
    case stopped
    /// The server answered TTL <= 0 (the lease expired or was revoked), or no renewal succeeded before the
    /// last known TTL ran out.
    case expired
}

public enum LeaseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The lease expired or was revoked while being kept alive.
    case expired(id: Int64)
    public var description: String {
        switch self {
        case .expired(let id): return "lease \(String(id, radix: 16)) expired or revoked"
        }
    }
}

/// A lease kept alive in the background (clientv3's KeepAlive): a LeaseKeepAlive stream, one renewal every
/// TTL/3 (as etcd's client), moved to another endpoint when the stream fails. Read `ttl`, iterate the TTL
/// updates (the newest is kept when the reader is slow), or `await ended()`. Iteration ends normally on
/// `stop()` and throws `LeaseError.expired` when the lease is gone.
public final class LeaseKeepAlive: AsyncSequence, Sendable {
    public typealias Element = Int64
    public let id: Int64
    let status: KeepAliveStatus
    let updates: AsyncThrowingStream<Int64, any Error>
    let task: Task<Void, Never>?

    init(client: KeelClient, id: Int64) {
        self.id = id
        let status = KeepAliveStatus()
        self.status = status
        let (stream, continuation) = AsyncThrowingStream<Int64, any Error>.makeStream(bufferingPolicy: .bufferingNewest(1))
        updates = stream
        let loop = KeepAliveLoop(client: client, id: id, status: status, updates: continuation)
        let task = client.spawn { await loop.run() }
        self.task = task
        if task == nil {
            continuation.finish()
            Task { await status.end(.stopped) }
        }
        // A consumer that stops iterating because its task was cancelled stops the keep-alive too.
        continuation.onTermination = { reason in
            if case .cancelled = reason { task?.cancel() }
        }
    }

    deinit { task?.cancel() }

    /// The TTL of the last renewal (seconds; nil before the first one).
    public var ttl: Int64? { get async { await status.ttl } }
    /// Renewals so far.
    public var renewals: Int { get async { await status.renewals } }
    /// The endpoint that answered the last renewal.
    public var endpoint: String? { get async { await status.endpoint } }
    /// nil while it runs.
    public var end: LeaseKeepAliveEnd? { get async { await status.ending } }

    /// Waits until the keep-alive ends and says why.
    public func ended() async -> LeaseKeepAliveEnd { await status.wait() }

    /// Stops renewing (the lease then expires on its own unless revoked).
    public func stop() async {
        task?.cancel()
        await task?.value
    }

    public func makeAsyncIterator() -> AsyncThrowingStream<Int64, any Error>.AsyncIterator { updates.makeAsyncIterator() }
}

actor KeepAliveStatus {
    var ttl: Int64?
    var renewals = 0
    var endpoint: String?
    /// When the last renewal answered (for the next renewal and the expiry deadline).
    var renewedAt: ContinuousClock.Instant?
    var ending: LeaseKeepAliveEnd?
    var waiters: [CheckedContinuation<LeaseKeepAliveEnd, Never>] = []

    func renewed(_ t: Int64, by e: String) {
        ttl = t
        endpoint = e
        renewals += 1
        renewedAt = .now
    }
    /// etcd's client renews a third of the TTL after the last answer.
    var nextRenewal: ContinuousClock.Instant? {
        guard let renewedAt, let ttl else { return nil }
        return renewedAt + .milliseconds(max(ttl * 1000 / 3, 500))
    }
    /// The lease is gone for sure once its TTL has passed since the last renewal.
    var deadlinePassed: Bool {
        guard let renewedAt, let ttl else { return false }
        return ContinuousClock.now >= renewedAt + .seconds(ttl)
    }
    func end(_ e: LeaseKeepAliveEnd) {
        guard ending == nil else { return }
        ending = e
        for w in waiters { w.resume(returning: e) }
        waiters = []
    }
    func wait() async -> LeaseKeepAliveEnd {
        if let ending { return ending }
        return await withCheckedContinuation { waiters.append($0) }
    }
}

/// The background task of a keep-alive: one LeaseKeepAlive stream at a time, with a receiver (answers,
/// expiry) and a sender (renewals) side by side, so a broken stream is noticed at once, not at the next
/// renewal; then the next endpoint.
struct KeepAliveLoop: Sendable {
    let client: KeelClient
    let id: Int64
    let status: KeepAliveStatus
    let updates: AsyncThrowingStream<Int64, any Error>.Continuation

    /// How long a renewal may go unanswered before the stream is given up for another endpoint.
    static let stalled = Duration.seconds(5)

    func run() async {
        var delay = Duration.milliseconds(50)
        var expired = false
        while !Task.isCancelled {
            // Until the first renewal, expiry is judged by the server (it answers TTL 0).
            if await status.deadlinePassed {
                expired = true
                break
            }
            let i = client.order()[0]
            let ep = client.endpoints[i]
            do {
                try await client.dial(i)
                // The body returns true when the lease is gone (an error thrown from it would reach us as the
                // call's CANCELLED status).
                expired = try await ep.client.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) {
                    writer, responses -> Bool in
                    try await withThrowingTaskGroup(of: Bool.self) { group in
                        group.addTask {
                            for try await resp in responses {
                                client.mark(i, healthy: true)
                                guard resp.ttl > 0 else { return true }
                                await status.renewed(resp.ttl, by: ep.address)
                                updates.yield(resp.ttl)
                            }
                            return false   // the server ended the stream: next endpoint
                        }
                        group.addTask {
                            var req = Etcdserverpb.LeaseKeepAliveRequest()
                            req.id = id
                            while true {
                                let sentAt = ContinuousClock.now
                                try await writer.send(req)
                                // Wait for this request's answer, then until a third of its TTL has passed.
                                while true {
                                    try await Task.sleep(for: .milliseconds(100))
                                    if await status.deadlinePassed { return true }
                                    let answered = await status.renewedAt.map { $0 >= sentAt } ?? false
                                    if answered, let next = await status.nextRenewal, ContinuousClock.now >= next { break }
                                    // No answer from this member for a while: try another one.
                                    if !answered && ContinuousClock.now >= sentAt + KeepAliveLoop.stalled {
                                        throw GRPCStatus(.unavailable, "keep-alive: no answer from \(ep.address)")
                                    }
                                }
                            }
                        }
                        defer { group.cancelAll() }
                        return try await group.next() ?? false
                    }
                }
                if expired { break }
                delay = .milliseconds(50)
            } catch let st as GRPCStatus where st.message == EtcdError.leaseNotFound.rawValue {
                expired = true   // a server that answers "lease not found" as a status instead of TTL 0
                break
            } catch {
                if Task.isCancelled { break }
                client.mark(i, healthy: false)
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
        if expired {
            await status.end(.expired)
            updates.finish(throwing: LeaseError.expired(id: id))
        } else {
            await status.end(.stopped)
            updates.finish()
        }
    }
}

extension KeelClient {
    /// Grants a lease of `ttl` seconds (`id` 0: the server picks one). Not retried once it may have been sent.
    public func leaseGrant(ttl: Int64, id: Int64 = 0, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.LeaseGrantResponse {
        var r = Etcdserverpb.LeaseGrantRequest()
        r.ttl = ttl
        r.id = id
        return try await call(Etcdserverpb.Lease.leaseGrant, r, idempotent: false, timeout: timeout, write: true)
    }

    /// Revokes a lease and deletes its keys ("etcdserver: requested lease not found", NOT_FOUND, if unknown).
    @discardableResult
    public func leaseRevoke(_ id: Int64, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.LeaseRevokeResponse {
        var r = Etcdserverpb.LeaseRevokeRequest()
        r.id = id
        return try await call(Etcdserverpb.Lease.leaseRevoke, r, idempotent: false, timeout: timeout, write: true)
    }

    /// Remaining and granted TTL (ttl -1 when the lease does not exist), optionally its keys.
    public func leaseTimeToLive(_ id: Int64, keys: Bool = false, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.LeaseTimeToLiveResponse {
        var r = Etcdserverpb.LeaseTimeToLiveRequest()
        r.id = id
        r.keys = keys
        return try await call(Etcdserverpb.Lease.leaseTimeToLive, r, idempotent: true, timeout: timeout)
    }

    /// IDs of every live lease.
    public func leaseList(timeout: Duration? = nil) async throws(KeelClientError) -> [Int64] {
        try await call(Etcdserverpb.Lease.leaseLeases, Etcdserverpb.LeaseLeasesRequest(), idempotent: true,
                       timeout: timeout).leases.map(\.id)
    }

    /// Keeps lease `id` alive in the background until `stop()`, the lease's expiry, `close()`, or the
    /// cancellation of a task iterating its TTL updates.
    public func keepAlive(_ id: Int64) -> LeaseKeepAlive { LeaseKeepAlive(client: self, id: id) }

    /// Keeps lease `id` alive while `body` runs (also when it throws or its task is cancelled, the keep-alive
    /// stops when it returns).
    public func withKeepAlive<R: Sendable>(_ id: Int64, _ body: (LeaseKeepAlive) async throws -> R) async throws -> R {
        let ka = keepAlive(id)
        do {
            let r = try await body(ka)
            await ka.stop()
            return r
        } catch {
            await ka.stop()
            throw error
        }
    }

    /// One renewal (clientv3's KeepAliveOnce): the new TTL; `LeaseError`-like expiry shows as TTL <= 0.
    public func keepAliveOnce(_ id: Int64, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.LeaseKeepAliveResponse {
        var req = Etcdserverpb.LeaseKeepAliveRequest()
        req.id = id
        var last = "no endpoint tried"
        for i in order() {
            let ep = endpoints[i]
            do {
                try await dial(i)
            } catch {
                mark(i, healthy: false)
                last = "\(error)"
                continue
            }
            do {
                let r = try await ep.client.bidirectionalStreaming(
                    Etcdserverpb.Lease.leaseKeepAlive, options: CallOptions(timeout: timeout ?? configuration.timeout)
                ) { writer, responses -> Etcdserverpb.LeaseKeepAliveResponse? in
                    try await writer.send(req)
                    var it = responses.makeAsyncIterator()
                    return try await it.next()
                }
                mark(i, healthy: true)
                guard let r else { last = "\(ep.address): stream ended"; continue }
                return r
            } catch let st as GRPCStatus {
                if st.code == .cancelled && Task.isCancelled { throw .cancelled }
                guard st.code == .unavailable else { throw .server(code: st.code, message: st.message) }
                mark(i, healthy: false)
                last = "\(ep.address): \(st.message)"
            } catch {
                mark(i, healthy: false)
                last = "\(ep.address): \(error)"
            }
        }
        throw .unavailable(last)
    }
}
