// The LeaseProposer of a running server: lease requests go through KeelCore.propose (Raft, then
// the apply loop), exactly like KV writes. SERVER may use it as is:
//     let lessor = try Lessor(backend: core.store, proposer: RaftLeaseProposer(core: core), options: ...)
import GRPC
import KeelAPI

public struct RaftLeaseProposer: LeaseProposer {
    public let core: KeelCore
    public init(core: KeelCore) { self.core = core }

    public func proposeLeaseGrant(_ r: Etcdserverpb.LeaseGrantRequest) async throws -> Etcdserverpb.LeaseGrantResponse {
        switch try await core.propose(.leaseGrant(r)) {
        case .leaseGrant(let resp): return resp
        case .failed(let status): throw status
        default: throw GRPCStatus(.internal, "etcdserver: unexpected apply result for LeaseGrant")
        }
    }

    public func proposeLeaseRevoke(_ r: Etcdserverpb.LeaseRevokeRequest) async throws -> Etcdserverpb.LeaseRevokeResponse {
        switch try await core.propose(.leaseRevoke(r)) {
        case .leaseRevoke(let resp): return resp
        case .failed(let status): throw status
        default: throw GRPCStatus(.internal, "etcdserver: unexpected apply result for LeaseRevoke")
        }
    }

    public func proposeLeaseCheckpoint(_ r: Etcdserverpb.LeaseCheckpointRequest) async throws -> Etcdserverpb.LeaseCheckpointResponse {
        switch try await core.propose(.leaseCheckpoint(r)) {
        case .leaseCheckpoint(let resp): return resp
        case .failed(let status): throw status
        default: throw GRPCStatus(.internal, "etcdserver: unexpected apply result for LeaseCheckpoint")
        }
    }
}
