// LeaseService: etcdserverpb.Lease (etcd's api/v3rpc/lease.go on top of the Lessor).
import GRPC
import KeelAPI

public struct LeaseService: GRPCService {
    public let lessor: Lessor
    let header: @Sendable () -> Etcdserverpb.ResponseHeader

    /// - header: a full response header (cluster_id, member_id, current revision, raft_term).
    public init(lessor: Lessor, header: @escaping @Sendable () -> Etcdserverpb.ResponseHeader) {
        self.lessor = lessor
        self.header = header
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
            do {
                resp.ttl = try await lessor.renew(id: req.id)
            } catch .notFound {
                resp.ttl = 0
            } catch {
                throw error.status
            }
            try await send(resp)
        }
    }

    /// Unknown lease: TTL -1 and no error, as etcd's LeaseServer.LeaseTimeToLive.
    public func timeToLive(_ req: Etcdserverpb.LeaseTimeToLiveRequest) async throws -> Etcdserverpb.LeaseTimeToLiveResponse {
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
