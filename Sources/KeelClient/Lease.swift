// Lease calls (unary): grant, revoke, time-to-live, list. Keep-alive is not landed yet.
import KeelAPI

extension KeelClient {
    /// Grants a lease of `ttl` seconds (`id` 0: the server picks one). Not retried once it may have been sent.
    public func leaseGrant(ttl: Int64, id: Int64 = 0) async throws(KeelClientError) -> Etcdserverpb.LeaseGrantResponse {
        var r = Etcdserverpb.LeaseGrantRequest()
        r.ttl = ttl
        r.id = id
        return try await call(Etcdserverpb.Lease.leaseGrant, r, idempotent: false, timeout: nil)
    }

    /// Revokes a lease and deletes its keys ("etcdserver: requested lease not found", NOT_FOUND, if unknown).
    @discardableResult
    public func leaseRevoke(_ id: Int64) async throws(KeelClientError) -> Etcdserverpb.LeaseRevokeResponse {
        var r = Etcdserverpb.LeaseRevokeRequest()
        r.id = id
        return try await call(Etcdserverpb.Lease.leaseRevoke, r, idempotent: false, timeout: nil)
    }

    /// Remaining and granted TTL (ttl -1 when the lease does not exist), optionally its keys.
    public func leaseTimeToLive(_ id: Int64, keys: Bool = false) async throws(KeelClientError)
        -> Etcdserverpb.LeaseTimeToLiveResponse {
        var r = Etcdserverpb.LeaseTimeToLiveRequest()
        r.id = id
        r.keys = keys
        return try await call(Etcdserverpb.Lease.leaseTimeToLive, r, idempotent: true, timeout: nil)
    }

    /// IDs of every live lease.
    public func leaseList() async throws(KeelClientError) -> [Int64] {
        try await call(Etcdserverpb.Lease.leaseLeases, Etcdserverpb.LeaseLeasesRequest(), idempotent: true,
                       timeout: nil).leases.map(\.id)
    }
}
