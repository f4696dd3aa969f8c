// MVCCStore as the lessor's record of leases.
import Storage

extension MVCCStore: LeaseBackend {
    public func storedLeases() throws -> [(id: Int64, ttl: Int64, remainingTTL: Int64)] {
        try leases().map { ($0.id, $0.ttl, $0.remainingTTL) }
    }

    public func storedLeaseKeys(id: Int64) throws -> [[UInt8]] {
        try leaseKeys(id: id)
    }
}
