import GRPC
import KeelAPI
import Logging

/// The services and the apply-loop listeners of a running server.
final class ServerExtras: Sendable {
    init() {}

    /// Apply loop -> watchers (must not block).
    func publish(events: [Mvccpb.Event], revision: Int64) {}
    func compacted(revision: Int64) {}

    func setUp(core: KeelCore, logger: Logger) async throws {}

    func services(core: KeelCore) -> [any GRPCService] {
        [KVService(core: core), MaintenanceService(core: core), ClusterService(core: core), AuthService(core: core)]
    }

    func shutdown() async {}
}
