// LeaseService: etcdserverpb.Lease (etcd's api/v3rpc/lease.go on top of the Lessor).
import GRPC
import KeelAPI

/// On a follower, keep-alives and time-to-live questions go to the leader's lessor (etcd's
/// LeaseRenew / LeaseTimeToLive forwarding over the peer port).
public struct LeaseForwarder: Sendable {
    public var renew: @Sendable (_ id: Int64) async throws(GRPCStatus) -> Int64
    public var timeToLive: @Sendable (Etcdserverpb.LeaseTimeToLiveRequest) async throws(GRPCStatus)
        -> Etcdserverpb.LeaseTimeToLiveResponse
    public init(renew: @escaping @Sendable (_ id: Int64) async throws(GRPCStatus) -> Int64,
                timeToLive: @escaping @Sendable (Etcdserverpb.LeaseTimeToLiveRequest) async throws(GRPCStatus)
                    -> Etcdserverpb.LeaseTimeToLiveResponse) {
        self.renew = renew
        self.timeToLive = timeToLive
    }
}

public struct LeaseService: GRPCService {
    public let lessor: Lessor
    let header: @Sendable () -> Etcdserverpb.ResponseHeader
    let forward: LeaseForwarder?
    let visible: @Sendable () async throws -> Void

    /// - header: a full response header (cluster_id, member_id, current revision, raft_term).
    /// - forward: how a follower reaches the leader's lessor (nil: one member, never forwards).
    /// - visible: waits until every write answered so far is in the store (`KeelCore.visibilityBarrier`),
    ///   before attached keys are read.
    public init(lessor: Lessor, header: @escaping @Sendable () -> Etcdserverpb.ResponseHeader,
                forward: LeaseForwarder? = nil, visible: @escaping @Sendable () async throws -> Void = {}) {
        self.lessor = lessor
        self.header = header
        self.forward = forward
        self.visible = visible
    }

    public var methods: [ServerMethod] {
        [
            .unary(Etcdserverpb.Lease.leaseGrant) { req, _ in try await self.grant(req) },
            .unary(Etcdserverpb.Lease.leaseRevoke) { req, _ in try await self.revoke(req) },
            .bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) { requests, writer, _ in
                try await self.keepAlive(requests) { try await writer.send($0) }
            },
            .unary(Etcdserverpb.Lease.leaseTimeToLive) { req, _ in try await self.timeToLive(req) },
            .unary(Etcdserverpb.Lease.leaseLeases) { req, _ in try await self.leases(req) },
        ]
    }

    public func grant(_ req: Etcdserverpb.LeaseGrantRequest) async throws -> Etcdserverpb.LeaseGrantResponse {
        var r = try await lessor.grant(req)
        if r.header == nil { r.header = header() }
        return r
    }

    public func revoke(_ req: Etcdserverpb.LeaseRevokeRequest) async throws -> Etcdserverpb.LeaseRevokeResponse {
        var r = try await lessor.revoke(req)
        if r.header == nil { r.header = header() }
        return r
    }

    /// One response per request, in order; an unknown (or just expired and revoked) lease answers
    /// TTL 0 as etcd. The header is taken before the renewal (etcd does too, so a keep-alive can
    /// never show a revision after the lease's revocation).
    public func keepAlive<Requests: AsyncSequence>(
        _ requests: Requests, send: (Etcdserverpb.LeaseKeepAliveResponse) async throws -> Void
    ) async throws where Requests.Element == Etcdserverpb.LeaseKeepAliveRequest {
        for try await req in requests {
            var resp = Etcdserverpb.LeaseKeepAliveResponse()
            resp.header = header()
            resp.id = req.id
            var toLeader = false
            do {
                resp.ttl = try await lessor.renew(id: req.id)
            } catch .notFound {
                resp.ttl = 0
            } catch .notPrimary {
                if forward == nil { throw LeaseError.notPrimary.status }
                toLeader = true
            } catch {
                throw error.status
            }
            if toLeader, let forward { resp.ttl = try await Self.forwardRenew(forward, req.id) }
            try await send(resp)
        }
    }

    /// The leader's TTL after renewal; an unknown lease answers 0 as locally.
    static func forwardRenew(_ forward: LeaseForwarder, _ id: Int64) async throws(GRPCStatus) -> Int64 {
        do {
            return try await forward.renew(id)
        } catch {
            if error.code == .notFound { return 0 }
            throw error
        }
    }

    /// Unknown lease: TTL -1 and no error, as etcd's LeaseServer.LeaseTimeToLive.
    public func timeToLive(_ req: Etcdserverpb.LeaseTimeToLiveRequest) async throws -> Etcdserverpb.LeaseTimeToLiveResponse {
        // A follower's lessor has no expiry clock: the leader's answer has the remaining TTL.
        if let forward, await !lessor.isPrimary {
            var r = try await forward.timeToLive(req)
            r.header = header()
            return r
        }
        if req.keys { try await visible() }
        let found: Etcdserverpb.LeaseTimeToLiveResponse?
        do { found = try await lessor.timeToLive(id: req.id, keys: req.keys) } catch { throw error.status }
        var r = found ?? {
            var nf = Etcdserverpb.LeaseTimeToLiveResponse()
            nf.id = req.id
            nf.ttl = -1
            return nf
        }()
        r.header = header()
        return r
    }

    public func leases(_ req: Etcdserverpb.LeaseLeasesRequest) async throws -> Etcdserverpb.LeaseLeasesResponse {
        var r = Etcdserverpb.LeaseLeasesResponse()
        r.leases = await lessor.leaseIDs().map { id in
            var s = Etcdserverpb.LeaseStatus()
            s.id = id
            return s
        }
        r.header = header()
        return r
    }
}
